// Same-node socket splicing (sk_msg on sock_pairs) against the real kernel, byte-exact. Two captured
// pods on one sandbox node, each with an Envoy-like forwarding proxy: the app of pod A sends to pod B's
// IP (app -> proxy A on 15001 over lo, proxy A -> pod B over the bridge, steered to proxy B's 15006,
// proxy B -> the server from 127.0.0.6 over lo: every hop is local) and to a service VIP on a host that
// is not a pod (app -> proxy spliced, proxy -> VIP not). Every scenario runs with splicing ON and then
// OFF (`meshlane agent --no-splice` on the same pins), and checks sha256 of every byte moved: large
// transfers both ways, 60 concurrent connections, a slow reader with odd-sized partial reads, half-close,
// a reset, a server killed mid-stream (the client sees an error or EOF with an exact prefix, never a
// silent corruption), sock_pairs holding entries only when on, and lo carrying the bytes only when off.
// With splicing on, the agent is SIGKILLed and restarted in the middle of transfers: no byte is lost.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SandboxMember, SandboxPod } from '../../src/sandbox/sandbox.js';
import { readStatus } from '../../src/agent/status.js';
import { uninstall } from '../../src/dataplane/dataplane.js';
import { packageRoot } from '../../src/util/paths.js';
import { streamSha, type ClientResult } from '../support/transfer.js';
import {
  APP, CLI, POD_V4, SVC_V4, clusterList, cleanupAgent, destroyTopology, dumpJson, makeTopology, namespaceObject, podObject,
  startProxy, stopAgent, waitFor, waitReady, type AgentRun, type Topology,
} from '../support/harness.js';

const TRANSFER = (): string => join(packageRoot(), 'dist', 'test', 'support', 'transfer.js');
const B_UID = '3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const B_V4 = '10.244.0.11';
const B_V6 = 'fd00:244::11';
const PORT = 9000;
const KILL_PORT = 9001;
const MiB = 1 << 20;
const BPFFS = '/sys/fs/bpf/meshlane-test-splice';

const items = [
  namespaceObject('demo', { 'istio-injection': 'enabled' }),
  podObject(),
  podObject({ name: 'server', uid: B_UID, ipv4: B_V4, ipv6: B_V6 }),
];

let topo: Topology | undefined;
let podB: SandboxPod;
let agent: AgentRun | undefined;
const servers = new Map<string, { proc: ChildProcess; lines: Array<Record<string, unknown>> }>();

/** `meshlane agent` with extra flags (the harness's startAgent takes none), on the same pins as `prior`. */
async function startAgentWith(args: string[], prior?: AgentRun): Promise<AgentRun> {
  const t = topo!;
  const dir = prior?.dir ?? mkdtempSync(join(tmpdir(), 'meshlane-splice-'));
  const clusterFile = join(dir, 'cluster.json');
  const stateDir = join(dir, 'state');
  const bpffs = BPFFS;
  const logFile = join(dir, `agent-${Date.now()}.log`);
  const cniSocket = join(dir, 'cni', 'cni.sock');
  const write = (its: object[]): void => {
    writeFileSync(`${clusterFile}.tmp`, clusterList(its));
    renameSync(`${clusterFile}.tmp`, clusterFile);
  };
  if (!prior) write(items);
  const out = createWriteStream(logFile);
  const proc = spawn(process.execPath, [CLI(), 'agent', '--cluster-file', clusterFile, '--cgroup-root', t.sb.cgroupRoot, '--bpffs', bpffs, '--state-dir', stateDir, '--cni-socket', cniSocket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  const run: AgentRun = { proc, dir, clusterFile, stateDir, bpffs, logFile, cniSocket, write, status: () => readStatus(stateDir), log: () => readFileSync(logFile, 'utf8') };
  await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${run.log()}`);
    const st = run.status();
    return st !== undefined && st.pid === proc.pid && st.pods.filter((p) => p.state === 'captured').length === 2;
  }, 15_000, 'the agent to capture both pods');
  return run;
}

function startServer(on: SandboxMember, name: string, ports: number[]): Promise<void> {
  const proc = on.spawn('node', [TRANSFER(), 'server', '--ports', ports.join(',')], { uid: APP, gid: APP, container: 'app' });
  const entry = { proc, lines: [] as Array<Record<string, unknown>> };
  let buf = '';
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) entry.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  servers.set(name, entry);
  topo!.procs.push(proc);
  return waitReady(proc, `transfer server ${name}`);
}

interface Run {
  ok: boolean;
  results: ClientResult[];
}

/** One `transfer client` in pod A as the app user; resolves to its JSON line. */
async function client(to: string, args: string[], timeoutMs = 30_000): Promise<Run> {
  const r = await topo!.pod.exec('node', [TRANSFER(), 'client', '--to', to, '--timeout', String(timeoutMs), ...args], {
    uid: APP,
    gid: APP,
    container: 'app',
    timeoutMs: timeoutMs + 5000,
  });
  try {
    return JSON.parse(r.stdout) as Run;
  } catch {
    throw new Error(`transfer client ${args.join(' ')}: exit ${r.code}, ${r.stdout} ${r.stderr}`);
  }
}

const assertAllOk = (r: Run, what: string): void => {
  const bad = r.results.filter((x) => !x.ok);
  assert.equal(bad.length, 0, `${what}: ${bad.length} of ${r.results.length} failed: ${JSON.stringify(bad.slice(0, 3))}`);
};

/** Bytes lo has received in pod A's netns (app <-> proxy A crosses lo unless spliced). */
async function loBytes(pod: SandboxPod): Promise<number> {
  const r = await pod.exec('cat', ['/proc/net/dev'], { timeoutMs: 5000 });
  const line = r.stdout.split('\n').find((l) => l.trim().startsWith('lo:'));
  assert.ok(line, `no lo in ${r.stdout}`);
  return Number(line.split(':')[1]!.trim().split(/\s+/)[0]);
}

const pairs = (): Array<Record<string, unknown>> => {
  const rows = dumpJson(agent!.bpffs).maps.sock_pairs;
  assert.ok(Array.isArray(rows), `sock_pairs not in dump: ${JSON.stringify(rows)}`);
  return rows;
};

async function serverLine(name: string, id: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const s = servers.get(name)!;
  await waitFor(() => s.lines.some((l) => l.id === id), timeoutMs, `server ${name} to log connection ${id}`);
  return s.lines.find((l) => l.id === id)!;
}

/** The bytes seen are exactly the first `n` bytes of the stream: a loss or corruption shows here. */
function assertPrefix(seed: number, n: number, sha: unknown, what: string): void {
  assert.equal(sha, streamSha(seed, n), `${what}: the ${n} bytes seen are not the stream's first ${n} bytes`);
}

before(async () => {
  topo = await makeTopology({ prefix: 'mlsp', forward: true });
  podB = await topo.sb.addPod({ namespace: 'demo', name: 'server', uid: B_UID, ipv4: B_V4, ipv6: B_V6 });
  const proxyB = startProxy(podB, true);
  topo.procs.push(proxyB);
  await Promise.all([waitReady(proxyB, 'proxy B'), startServer(podB, 'b', [PORT]), startServer(podB, 'kill', [KILL_PORT]), startServer(topo.svc, 'svc', [PORT])]);
  agent = await startAgentWith(['--splice']);
});

after(async () => {
  await cleanupAgent(agent);
  uninstall(BPFFS); // also when the agent never started
  await destroyTopology(topo);
});

const toB = `${B_V4}:${PORT}`;

function scenarios(mode: 'on' | 'off'): void {
  const on = mode === 'on';

  test(`splice ${mode}: 32 MiB each way to a pod on the node, 16 MiB to a VIP, IPv6; lo carries the bytes only when off`, async () => {
    const lo0 = await loBytes(topo!.pod);
    const [up, down, vip, v6] = await Promise.all([
      client(toB, ['--mode', 'sink', '--bytes', String(32 * MiB), '--seed', '11', '--id', `${mode}-up`]),
      client(toB, ['--mode', 'source', '--bytes', String(32 * MiB), '--seed', '12', '--id', `${mode}-down`]),
      client(`${SVC_V4}:${PORT}`, ['--mode', 'echo', '--bytes', String(16 * MiB), '--seed', '13', '--id', `${mode}-vip`]),
      client(`[${B_V6}]:${PORT}`, ['--mode', 'sink', '--bytes', String(8 * MiB), '--seed', '14', '--id', `${mode}-v6`]),
    ]);
    assertAllOk(up, 'upload');
    assertAllOk(down, 'download');
    assertAllOk(vip, 'echo through the VIP');
    assertAllOk(v6, 'IPv6 upload');
    const lo = (await loBytes(topo!.pod)) - lo0;
    const moved = 32 * MiB * 2 + 16 * MiB * 2 + 8 * MiB;
    // off: every byte crosses lo between the app and proxy A (and back for the echo)
    if (on) assert.ok(lo < moved / 20, `splice on: lo still carried ${lo} bytes of ${moved}`);
    else assert.ok(lo >= moved, `splice off: lo carried only ${lo} bytes of ${moved}`);
  });

  test(`splice ${mode}: 60 concurrent connections (50 to a pod, 10 to a VIP)`, async () => {
    const [a, b] = await Promise.all([
      client(toB, ['--mode', 'echo', '--bytes', String(256 * 1024), '--concurrency', '50', '--chunk', '7001', '--seed', '100', '--id', `${mode}-conc`]),
      client(`${SVC_V4}:${PORT}`, ['--mode', 'sink', '--bytes', String(512 * 1024), '--concurrency', '10', '--seed', '200', '--id', `${mode}-concv`]),
    ]);
    assertAllOk(a, '50 echo connections to pod B');
    assertAllOk(b, '10 sink connections to the VIP');
  });

  test(`splice ${mode}: slow readers with odd partial reads; sock_pairs holds the open pairs only when on`, async (t) => {
    const slowDown = client(toB, ['--mode', 'source', '--bytes', String(4 * MiB), '--read-size', '4093', '--slow-ms', '1', '--seed', '21', '--id', `${mode}-slowdown`]);
    const slowUp = client(toB, ['--mode', 'sink', '--bytes', String(16 * MiB), '--chunk', '1000', '--server-slow-ms', '2', '--seed', '22', '--id', `${mode}-slowup`]);
    // sock_pairs looked at all through the transfers (every 50 ms; the second connection may be set up after
    // the first one's pairs are there, and finish before or after it): every socket seen in the map counts.
    let done = false;
    const both = Promise.all([slowDown, slowUp]).finally(() => (done = true));
    const seen = new Map<string, Record<string, unknown>>();
    const look = (): void => {
      for (const r of pairs()) seen.set(String(r.socket_cookie), r);
    };
    look();
    while (!done) {
      look();
      await new Promise((r) => setTimeout(r, 50));
    }
    const rows = [...seen.values()];
    t.diagnostic(`sockets seen in sock_pairs during the 2 transfers: ${rows.length}`);
    if (process.env.SPLICE_DEBUG) t.diagnostic(JSON.stringify(rows));
    const [d, u] = await both;
    assertAllOk(d, 'slow reader (client)');
    assertAllOk(u, 'slow reader (server)');
    if (!on) {
      assert.equal(rows.length, 0, `splice off: sock_pairs must stay empty: ${JSON.stringify(rows)}`);
      return;
    }
    // each connection: app<->proxy A over lo (netns cookie), proxy A<->pod B (pod IPs, cookie 0),
    // and inside pod B whatever is local there
    const loop = rows.filter((r) => r.netns_cookie !== '0' && r.netns_cookie !== 0 && String(r.remote).startsWith('127.0.0.1:15001'));
    const podToPod = rows.filter((r) => String(r.netns_cookie) === '0' && String(r.local).startsWith(`${POD_V4}:`) && r.remote === toB);
    assert.ok(loop.length >= 2, `app -> proxy A pairs in sock_pairs: ${JSON.stringify(rows)}`);
    assert.ok(podToPod.length >= 2, `proxy A -> pod B pairs in sock_pairs: ${JSON.stringify(rows)}`);
  });

  test(`splice ${mode}: half-close: the client shuts its write side and keeps reading`, async () => {
    const [src, echo, vip] = await Promise.all([
      client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--half-close', '--seed', '31', '--id', `${mode}-hc-src`]),
      client(toB, ['--mode', 'echo', '--bytes', String(4 * MiB), '--half-close', '--seed', '32', '--id', `${mode}-hc-echo`]),
      client(`${SVC_V4}:${PORT}`, ['--mode', 'source', '--bytes', String(4 * MiB), '--half-close', '--seed', '33', '--id', `${mode}-hc-vip`]),
    ]);
    assertAllOk(src, 'half-closed download');
    assertAllOk(echo, 'half-closed echo');
    assertAllOk(vip, 'half-closed download through the VIP');
  });

  test(`splice ${mode}: a reset mid-upload reaches the server as an error or EOF with an exact prefix`, async (t) => {
    const r = await client(toB, ['--mode', 'sink', '--bytes', String(32 * MiB), '--reset-after', String(4 * MiB), '--seed', '41', '--id', `${mode}-rst`]);
    const c = r.results[0]!;
    assert.equal(c.reset, true, JSON.stringify(c));
    const s = await serverLine('b', `${mode}-rst-0`);
    t.diagnostic(`client sent ${c.sent} then RST; server: ${JSON.stringify({ received: s.received, end: s.end, error: s.error })}`);
    assert.ok(typeof s.received === 'number' && s.received <= c.sent, `server got ${String(s.received)} bytes, the client sent ${c.sent}: ${JSON.stringify(s)}`);
    assertPrefix(41, s.received as number, s.receivedSha, 'reset upload');
  });

  test(`splice ${mode}: the server killed mid-stream: the client sees an error or EOF, never a silent corruption`, async (t) => {
    const down = client(`${B_V4}:${KILL_PORT}`, ['--mode', 'source', '--bytes', String(256 * MiB), '--slow-ms', '1', '--seed', '51', '--id', `${mode}-kill-down`]);
    const up = client(`${B_V4}:${KILL_PORT}`, ['--mode', 'sink', '--bytes', String(256 * MiB), '--server-slow-ms', '1', '--seed', '52', '--id', `${mode}-kill-up`]);
    await new Promise((r) => setTimeout(r, 700));
    servers.get('kill')!.proc.kill('SIGKILL');
    const [d, u] = [(await down).results[0]!, (await up).results[0]!];
    t.diagnostic(`download: ${d.received} bytes, ${d.error}; upload: sent ${u.sent}, ${u.error}`);
    assert.equal(d.ok, false, `download from a killed server cannot succeed: ${JSON.stringify(d)}`);
    assert.ok(d.error, JSON.stringify(d));
    assert.ok(d.received > 0 && d.received < 256 * MiB, JSON.stringify(d));
    assertPrefix(51, d.received, d.receivedSha, 'download cut by the kill');
    assert.equal(u.ok, false, `upload to a killed server cannot succeed: ${JSON.stringify(u)}`);
    assert.equal(u.reply, undefined, `no checksum reply from a killed server: ${JSON.stringify(u)}`);
    await startServer(podB, 'kill', [KILL_PORT]);
  });
}

scenarios('on');

test('splice on: the agent SIGKILLed and restarted during transfers loses no byte; new connections are spliced', async () => {
  const running = Promise.all([
    client(toB, ['--mode', 'sink', '--bytes', String(48 * MiB), '--server-slow-ms', '1', '--seed', '61', '--id', 'restart-up']),
    client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--read-size', '65521', '--slow-ms', '1', '--seed', '62', '--id', 'restart-down']),
    client(toB, ['--mode', 'echo', '--bytes', String(MiB), '--concurrency', '20', '--seed', '63', '--id', 'restart-echo']),
  ]);
  await new Promise((r) => setTimeout(r, 300));
  await stopAgent(agent, 'SIGKILL');
  agent = await startAgentWith(['--splice'], agent);
  for (const [i, r] of (await running).entries()) assertAllOk(r, `transfer ${i} across the restart`);
  const lo0 = await loBytes(topo!.pod);
  assertAllOk(await client(toB, ['--mode', 'sink', '--bytes', String(16 * MiB), '--seed', '64', '--id', 'after-restart']), 'after the restart');
  const lo = (await loBytes(topo!.pod)) - lo0;
  assert.ok(lo < MiB, `a connection made after the restart is spliced (lo carried ${lo} bytes)`);
});

test('meshlane agent --no-splice: global flag off, live pairs drain back to the stack', async () => {
  await stopAgent(agent, 'SIGTERM');
  agent = await startAgentWith(['--no-splice'], agent);
  const g = dumpJson(agent.bpffs).maps.global;
  assert.ok(Array.isArray(g) && g[0]?.splice === false, `global: ${JSON.stringify(g)}`);
});

scenarios('off');
