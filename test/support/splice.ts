// What the splicing tests share: a sandbox node with two captured pods, each with an Envoy-like forwarding
// proxy (app A -> proxy A on 15001 over lo -> pod B's IP, steered to proxy B's 15006 -> the server in B from
// 127.0.0.6 over lo: three hops, six sockets, every one a same-node pair), a service host that is not a pod,
// byte-exact transfer servers (test/support/transfer.ts) in B and on the host, the agent with any flags on
// one set of pins, and readers of what the kernel shows (sock_pairs, the counters, lo's bytes, the node's
// TCP memory).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, createWriteStream, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SandboxMember, SandboxPod } from '../../src/sandbox/sandbox.js';
import { readStatus } from '../../src/agent/status.js';
import { PinnedMaps } from '../../src/dataplane/dataplane.js';
import { describeMaps, type Row } from '../../src/dataplane/describe.js';
import type { MapName } from '../../src/dataplane/layouts.js';
import { packageRoot } from '../../src/util/paths.js';
import type { ClientResult } from './transfer.js';
import {
  APP,
  CLI,
  clusterList,
  destroyTopology,
  makeTopology,
  namespaceObject,
  podObject,
  startProxy,
  waitFor,
  waitReady,
  type AgentRun,
  type Topology,
} from './harness.js';

export const MiB = 1 << 20;
export const B_UID = '3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
export const B_V4 = '10.244.0.11';
export const B_V6 = 'fd00:244::11';
const TRANSFER = (): string => join(packageRoot(), 'dist', 'test', 'support', 'transfer.js');

export const clusterItems = (): object[] => [
  namespaceObject('demo', { 'istio-injection': 'enabled' }),
  podObject(),
  podObject({ name: 'server', uid: B_UID, ipv4: B_V4, ipv6: B_V6 }),
];

export interface Run {
  ok: boolean;
  results: ClientResult[];
}

export class SpliceWorld {
  private readonly servers = new Map<string, { proc: ChildProcess; lines: Array<Record<string, unknown>> }>();
  agent: AgentRun | undefined;
  /** gate and mark files of the transfer clients (--hold-until, --mark-file): the app user writes here */
  private readonly files: string;

  private constructor(
    readonly topo: Topology,
    readonly podB: SandboxPod,
    readonly bpffs: string,
  ) {
    this.files = mkdtempSync(join(tmpdir(), 'meshlane-splice-gates-'));
    chmodSync(this.files, 0o777);
  }

  /** The path of a gate or mark file (`name` unique per use); it does not exist yet. */
  file(name: string): string {
    const f = join(this.files, name);
    rmSync(f, { force: true });
    return f;
  }

  /** Open a gate: the clients holding on it (--hold-until) read and write on. */
  open(file: string): void {
    writeFileSync(file, 'open\n');
  }

  /** Wait for a mark file a client writes (--mark-file). */
  async marked(file: string, what: string, timeoutMs = 30_000): Promise<void> {
    await waitFor(() => existsSync(file), timeoutMs, what);
  }

  /**
   * Wait until the counters' growth since `from` satisfies `pred`: the kernel reached the state a test
   * holds its readers for. The timeout only ends a test whose state never comes; nothing depends on it.
   */
  async untilCounters(
    from: Record<string, number>,
    pred: (d: Record<string, number>) => boolean,
    what: string,
    timeoutMs = 30_000,
  ): Promise<Record<string, number>> {
    let d: Record<string, number> = {};
    await waitFor(() => pred((d = delta(from, this.counters()))), timeoutMs, `${what} (counters grew by ${JSON.stringify(d)})`);
    return d;
  }

  /** The node, both proxies, and transfer servers: `servers` maps a name to [member 'b' | 'svc', ports]. */
  static async create(prefix: string, bpffs: string, servers: Record<string, ['b' | 'svc', number[]]>): Promise<SpliceWorld> {
    const topo = await makeTopology({ prefix, forward: true });
    let w: SpliceWorld | undefined;
    try {
      const podB = await topo.sb.addPod({ namespace: 'demo', name: 'server', uid: B_UID, ipv4: B_V4, ipv6: B_V6 });
      w = new SpliceWorld(topo, podB, bpffs);
      const proxyB = startProxy(podB, true);
      topo.procs.push(proxyB);
      const world = w;
      // SPLICE_DEBUG=<file>: the proxies' lines (one per connection they forward) appended there
      const debug = process.env.SPLICE_DEBUG;
      if (debug && debug.startsWith('/'))
        for (const [i, p] of [...topo.procs, proxyB].entries())
          p.stdout?.on('data', (d: Buffer) => appendFileSync(debug, d.toString().replace(/^/gm, `[${i}] `)));
      await Promise.all([
        waitReady(proxyB, 'proxy B'),
        ...Object.entries(servers).map(([name, [on, ports]]) => world.startServer(on === 'b' ? podB : topo.svc, name, ports)),
      ]);
      return w;
    } catch (e) {
      if (w) await w.destroy();
      else await destroyTopology(topo);
      throw e;
    }
  }

  /** `meshlane agent` with extra flags, on the pins of the agent before it (if any); waits for both pods captured. */
  async startAgent(args: string[], opts: { objDir?: string } = {}): Promise<AgentRun> {
    const prior = this.agent;
    const dir = prior?.dir ?? mkdtempSync(join(tmpdir(), 'meshlane-splice-'));
    const clusterFile = join(dir, 'cluster.json');
    const stateDir = join(dir, 'state');
    const logFile = join(dir, `agent-${Date.now()}.log`);
    const write = (its: object[]): void => {
      writeFileSync(`${clusterFile}.tmp`, clusterList(its));
      renameSync(`${clusterFile}.tmp`, clusterFile);
    };
    if (!prior) write(clusterItems());
    const out = createWriteStream(logFile);
    const extra = opts.objDir ? ['--test-bpf-objects', opts.objDir] : [];
    const cniSocket = join(dir, 'cni', 'cni.sock');
    const proc = spawn(
      process.execPath,
      [
        CLI(),
        'agent',
        // no metrics endpoint unless a test asks for one (a later --metrics-address wins): agents never share a port
        '--metrics-address',
        'off',
        '--cluster-file',
        clusterFile,
        '--cgroup-root',
        this.topo.sb.cgroupRoot,
        '--bpffs',
        this.bpffs,
        '--state-dir',
        stateDir,
        '--cni-socket',
        cniSocket,
        ...extra,
        ...args,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    proc.stdout?.pipe(out);
    proc.stderr?.pipe(out);
    const run: AgentRun = {
      proc,
      dir,
      clusterFile,
      stateDir,
      bpffs: this.bpffs,
      logFile,
      cniSocket,
      write,
      status: () => readStatus(stateDir),
      log: () => readFileSync(logFile, 'utf8'),
    };
    this.agent = run;
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${run.log()}`);
        // both pods captured, and the whole start done (programs attached: its last log line at start)
        const st = run.status();
        return st !== undefined && st.pid === proc.pid && st.pods.filter((p) => p.state === 'captured').length === 2 && /"msg":"capture active/.test(run.log());
      },
      15_000,
      'the agent to capture both pods and finish starting',
    );
    return run;
  }

  startServer(on: SandboxMember, name: string, ports: number[]): Promise<void> {
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
    this.servers.set(name, entry);
    this.topo.procs.push(proc);
    return waitReady(proc, `transfer server ${name}`);
  }

  /** What a transfer server has logged so far (one line per closed connection). */
  serverLines(name: string): Array<Record<string, unknown>> {
    return this.servers.get(name)?.lines ?? [];
  }

  killServer(name: string): void {
    this.servers.get(name)!.proc.kill('SIGKILL');
  }

  /** One `transfer client` in pod A as the app user; resolves to its JSON line. */
  async client(to: string, args: string[], timeoutMs = 30_000): Promise<Run> {
    const r = await this.topo.pod.exec('node', [TRANSFER(), 'client', '--to', to, '--timeout', String(timeoutMs), ...args], {
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

  async serverLine(name: string, id: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const s = this.servers.get(name)!;
    await waitFor(() => s.lines.some((l) => l.id === id), timeoutMs, `server ${name} to log connection ${id}`);
    return s.lines.find((l) => l.id === id)!;
  }

  /** One map decoded as `meshlane dump` does, read in this process (the CLI takes a second to start). */
  rows(map: MapName): Row[] {
    using pinned = new PinnedMaps(this.bpffs);
    const rows = describeMaps(pinned.maps, map)[map];
    if (!Array.isArray(rows)) throw new Error(`${map} not pinned under ${this.bpffs}`);
    // as the JSON of `meshlane dump` has them: bigints as strings
    return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'bigint' ? v.toString() : v])));
  }

  /** sock_pairs as `meshlane dump` shows it. */
  pairs(): Row[] {
    return this.rows('sock_pairs');
  }

  /** meshlane's counters (stats, summed over CPUs) as `meshlane dump` shows them. */
  counters(): Record<string, number> {
    return Object.fromEntries(this.rows('stats').map((r) => [String(r.counter), Number(r.value)]));
  }

  /** Bytes lo has received in pod A's netns (app <-> proxy A crosses lo unless spliced). */
  async loBytes(): Promise<number> {
    const r = await this.topo.pod.exec('cat', ['/proc/net/dev'], { timeoutMs: 5000 });
    const line = r.stdout.split('\n').find((l) => l.trim().startsWith('lo:'));
    assert.ok(line, `no lo in ${r.stdout}`);
    return Number(line.split(':')[1]!.trim().split(/\s+/)[0]);
  }

  async destroy(): Promise<void> {
    await destroyTopology(this.topo);
    rmSync(this.files, { recursive: true, force: true });
  }
}

export const assertAllOk = (r: Run, what: string): void => {
  const bad = r.results.filter((x) => !x.ok);
  assert.equal(bad.length, 0, `${what}: ${bad.length} of ${r.results.length} failed: ${JSON.stringify(bad.slice(0, 3))}`);
};

/** The counters' growth from `before` to `after`. */
export const delta = (before: Record<string, number>, after: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.keys(after).map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));

const PAGE = 4096;

/** The node's TCP memory (/proc/net/sockstat, `TCP: ... mem N`, pages), in bytes. */
export function tcpMemBytes(): number {
  const line = readFileSync('/proc/net/sockstat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('TCP:'));
  const f = line?.split(/\s+/) ?? [];
  const i = f.indexOf('mem');
  return i < 0 ? 0 : Number(f[i + 1]) * PAGE;
}

/** Samples tcpMemBytes() every few ms while `fn` runs: its peak above the value at the start (`fn` gets that value). */
export async function peakTcpMem<T>(fn: (base: number) => Promise<T>): Promise<{ value: T; peakGrowth: number; base: number }> {
  const base = tcpMemBytes();
  let peak = base;
  const t = setInterval(() => {
    const m = tcpMemBytes();
    if (m > peak) peak = m;
  }, 5);
  try {
    const value = await fn(base);
    return { value, peakGrowth: peak - base, base };
  } finally {
    clearInterval(t);
  }
}
