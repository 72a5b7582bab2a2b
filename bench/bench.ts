// The meshlane benchmark: the same sandbox node, the same real proxy (HAProxy as uid 1337, forwarding to
// SO_ORIGINAL_DST), the same HTTP server and load generator (wrk), measured side by side under
//   none             A's app -> B's app directly (proxies idle, no rules): the physical limit
//   iptables         the nat rules istio-iptables writes, in both pods (REDIRECT to 15001 / 15006)
//   meshlane         the meshlane agent, splicing off
//   meshlane-splice  the meshlane agent, splicing on
// in interleaved rounds (round-robin, the start rotating each round) to spread the noise of a 2-core machine
// evenly over the modes. Every measurement checks, from the proxies' own session counters, that its traffic
// went through the proxies it should have (and, for `none`, through none of them).
//
// Topology (sandbox prefix `mlb`):
//   namespace bench (istio-injection=enabled): pod A (client, 10.244.0.10) and pod B (server, 10.244.0.11)
//   namespace bench-ipt (labelled too):        pods Ai (.20) and Bi (.21), the same, for the iptables mode
//   namespace plain (not labelled):            pod C (.30), never captured, for the cost of the hooks
//   host srv (.40): an HTTP server for C
// The iptables mode has its own pod pair because nat rules, once loaded, leave conntrack hooked into the
// netns even after a flush: the same pods would carry conntrack into the later modes.
//
// Run it with `bash bench/run.sh [--quick]` (as root); `--help` lists the options. BENCH_DEBUG_HOLD=<secs>
// pauses after each mode is set up (agent running, proxies up) so the sandbox can be inspected;
// BENCH_AGENT_CPU_PROF=<dir> runs the agent with node --cpu-prof (the profile is written when it stops).
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, createWriteStream, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Sandbox, type SandboxHost, type SandboxMember, type SandboxPod } from '../src/sandbox/sandbox.js';
import { packageRoot } from '../src/util/paths.js';
import { readStatus } from '../src/agent/status.js';
import { defaultCaptureSettings } from '../src/model/annotations.js';
import { CLI, clusterList, namespaceObject, podObject, waitFor } from '../test/support/harness.js';
import { istioIptablesRules } from '../test/oracle/istio-iptables.js';
import { applyIstioRules } from '../test/oracle/apply.js';

// ---- options ------------------------------------------------------------------------------------------

const MODES = ['none', 'iptables', 'meshlane', 'meshlane-splice'] as const;
/** Not in the default run: meshlane with the agent stopped once capture is set up (programs and maps stay
 * pinned), to tell the cost of the data path from the CPU the agent process takes. */
const EXTRA_MODES = ['meshlane-pinned', 'meshlane-splice-pinned'] as const;
type Mode = (typeof MODES)[number] | (typeof EXTRA_MODES)[number];
const ALL_MODES: readonly string[] = [...MODES, ...EXTRA_MODES];

const HELP = `usage: node dist/bench/bench.js [options]   (or: bash bench/run.sh [options])
  --quick              one round, 2 s per figure, concurrency 16 only (about a minute)
  --rounds N           interleaved rounds per mode (default 3)
  --duration S         seconds per measurement (default 3)
  --conc LIST          keep-alive concurrency levels (default 1,16,64)
  --cps-conc N         connections in flight for the new-connections figures (default 16)
  --quiet-wait S       before each mode's slot, wait up to S seconds for other load on the machine to
                       stop (default 30; 0 = do not wait)
  --modes LIST         which of ${ALL_MODES.join(',')}
                       (default: ${MODES.join(',')}; the -pinned ones stop the agent once capture is set up)
  --meshlane DIR       benchmark the meshlane build in DIR (a built checkout; default: this tree)
  --json FILE          also write every raw measurement as JSON
  --markdown FILE      also write the result tables as Markdown
  --help`;

interface Options {
  rounds: number;
  duration: number;
  conc: number[];
  cpsConc: number;
  quietWait: number;
  modes: Mode[];
  json?: string;
  markdown?: string;
  quick: boolean;
  /** the `meshlane` CLI (dist/src/cli/main.js) to run */
  cli: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      conc: { type: 'string' },
      'cps-conc': { type: 'string' },
      'quiet-wait': { type: 'string' },
      modes: { type: 'string' },
      json: { type: 'string' },
      meshlane: { type: 'string' },
      markdown: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const int = (s: string | undefined, def: number, what: string, min = 1, max = 1000): number => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) fail(`--${what} must be an integer in ${min}..${max}`);
    return n;
  };
  const quick = values.quick === true;
  const conc = (values.conc ?? (quick ? '16' : '1,16,64')).split(',').map((c) => int(c, 0, 'conc', 1, 1000));
  const modes = (values.modes ?? MODES.join(',')).split(',').map((m) => {
    if (!ALL_MODES.includes(m)) fail(`--modes: unknown mode '${m}' (${ALL_MODES.join(', ')})`);
    return m as Mode;
  });
  return {
    quick,
    rounds: int(values.rounds, quick ? 1 : 3, 'rounds', 1, 20),
    duration: int(values.duration, quick ? 2 : 3, 'duration', 1, 60),
    conc,
    cpsConc: int(values['cps-conc'], 16, 'cps-conc', 1, 1000),
    quietWait: int(values['quiet-wait'], quick ? 10 : 30, 'quiet-wait', 0, 600),
    modes,
    json: values.json,
    markdown: values.markdown,
    cli: values.meshlane !== undefined ? join(values.meshlane, 'dist', 'src', 'cli', 'main.js') : CLI(),
  };
}

function fail(msg: string): never {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const log = (msg: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- topology -----------------------------------------------------------------------------------------

const PREFIX = 'mlb';
const APP_UID = 1000;
const PROXY_UID = 1337;
const HTTP_PORT = 8080;
const BULK_PORT = 9000;
const BPFFS = '/sys/fs/bpf/meshlane-bench';

interface PodDef {
  key: string;
  namespace: string;
  name: string;
  uid: string;
  ipv4: string;
  ipv6: string;
}
const POD_DEFS: PodDef[] = [
  { key: 'A', namespace: 'bench', name: 'client', uid: 'b0000000-0000-4000-8000-00000000000a', ipv4: '10.244.0.10', ipv6: 'fd00:244::10' },
  { key: 'B', namespace: 'bench', name: 'server', uid: 'b0000000-0000-4000-8000-00000000000b', ipv4: '10.244.0.11', ipv6: 'fd00:244::11' },
  { key: 'Ai', namespace: 'bench-ipt', name: 'client', uid: 'b0000000-0000-4000-8000-0000000000a1', ipv4: '10.244.0.20', ipv6: 'fd00:244::20' },
  { key: 'Bi', namespace: 'bench-ipt', name: 'server', uid: 'b0000000-0000-4000-8000-0000000000b1', ipv4: '10.244.0.21', ipv6: 'fd00:244::21' },
  { key: 'C', namespace: 'plain', name: 'other', uid: 'b0000000-0000-4000-8000-00000000000c', ipv4: '10.244.0.30', ipv6: 'fd00:244::30' },
];
const SRV_V4 = '10.244.0.40';

/** A running HAProxy with its admin socket (to read the session counters). */
interface Haproxy {
  proc: ChildProcess;
  sock: string;
  what: string;
}

interface World {
  sb: Sandbox;
  dir: string;
  pods: Record<string, SandboxPod>;
  srv: SandboxHost;
  sidecars: Record<string, Haproxy>;
  procs: ChildProcess[];
  bulk: string;
  report: string;
}

function sidecarConfig(sock: string): string {
  // One thread, like a sidecar on a small node; tcp mode: forward to SO_ORIGINAL_DST (`0.0.0.0:0`),
  // inbound from 127.0.0.6 like Envoy's InboundPassthroughCluster.
  return `global
  nbthread 1
  maxconn 8192
  stats socket ${sock} mode 666 level admin
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend outbound
  bind :15001
  default_backend orig_out
backend orig_out
  server s 0.0.0.0:0
frontend inbound
  bind :15006
  default_backend orig_in
backend orig_in
  server s 0.0.0.0:0 source 127.0.0.6
`;
}

function appConfig(sock: string): string {
  return `global
  nbthread 1
  maxconn 8192
  stats socket ${sock} mode 666 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend app
  bind :${HTTP_PORT}
  http-request return status 200 content-type text/plain string ok
`;
}

/** `show stat` on an HAProxy admin socket: stot (cumulative sessions) per "proxy/server". */
function haproxyStot(sock: string): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    let out = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`${sock}: no answer to show stat`));
    }, 3000);
    s.on('connect', () => s.end('show stat\n'));
    s.setEncoding('utf8').on('data', (d: string) => (out += d));
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      const lines = out.split('\n').filter((l) => l.trim() !== '');
      const header = (lines.shift() ?? '').replace(/^# /, '').split(',');
      const px = header.indexOf('pxname');
      const sv = header.indexOf('svname');
      const stot = header.indexOf('stot');
      if (px < 0 || stot < 0) return reject(new Error(`${sock}: unexpected show stat output: ${out.slice(0, 200)}`));
      const m = new Map<string, number>();
      for (const l of lines) {
        const f = l.split(',');
        m.set(`${f[px]}/${f[sv]}`, Number(f[stot] ?? 0));
      }
      resolve(m);
    });
  });
}

async function startHaproxy(member: SandboxMember, dir: string, name: string, config: (sock: string) => string, uid: number, container: string): Promise<Haproxy> {
  const sock = join(dir, `${name}.sock`);
  const cfg = join(dir, `${name}.cfg`);
  writeFileSync(cfg, config(sock), { mode: 0o644 });
  const proc = member.spawn('haproxy', ['-db', '-f', cfg], { uid, gid: uid, container, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const what = `haproxy ${name}`;
  await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`${what} exited ${proc.exitCode}: ${err}`);
    return existsSync(sock);
  }, 10_000, `${what} to start`);
  await haproxyStot(sock); // answers: config loaded, listeners bound
  return { proc, sock, what };
}

function waitLine(p: ChildProcess, what: string, word = 'ready', timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} not ready after ${timeoutMs} ms: ${buf}`)), timeoutMs);
    p.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes(word)) {
        clearTimeout(t);
        resolve();
      }
    });
    p.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${what} exited (${code}) before it was ready: ${buf}`));
    });
  });
}

/** Compile bench/bulk.c into dist/bench/bulk when it is missing or older than the source. */
function buildBulk(): string {
  const root = packageRoot();
  const src = join(root, 'bench', 'bulk.c');
  const out = join(root, 'dist', 'bench', 'bulk');
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs) {
    execFileSync('cc', ['-O2', '-Wall', '-o', out, src], { stdio: 'inherit' });
  }
  return out;
}

async function sysctls(ns: string): Promise<void> {
  // Same in every netns: the new-connection figures open some 30,000 connections per measurement, more than
  // the ephemeral ports left free by TIME_WAIT; keep ephemeral ports off the service ports and let TIME_WAIT
  // ports be reused (timestamps make it safe). TIME_WAIT itself stays on, as on a real node (checked: five
  // back-to-back measurements with 22,000 TIME_WAIT sockets give the same rate).
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=20000 65000', 'net.ipv4.tcp_tw_reuse=1']);
}

async function buildWorld(): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-bench-'));
  chmodSync(dir, 0o1777); // HAProxy as 1337 / 1000 creates its admin socket here
  const sb = await Sandbox.create({ prefix: PREFIX });
  const world: World = { sb, dir, pods: {}, srv: undefined as unknown as SandboxHost, sidecars: {}, procs: [], bulk: buildBulk(), report: join(packageRoot(), 'bench', 'report.lua') };
  current = world;
  for (const d of POD_DEFS) {
    world.pods[d.key] = await sb.addPod({ namespace: d.namespace, name: d.name, uid: d.uid, ipv4: d.ipv4, ipv6: d.ipv6 });
  }
  world.srv = await sb.addHost('srv', { ipv4: SRV_V4 });
  for (const m of [...Object.values(world.pods), world.srv]) await sysctls(m.netns);

  // Sidecars in the four meshed pods; HTTP and bulk servers in B, Bi and srv.
  for (const k of ['A', 'B', 'Ai', 'Bi']) {
    world.sidecars[k] = await startHaproxy(world.pods[k]!, dir, `sidecar-${k}`, sidecarConfig, PROXY_UID, 'istio-proxy');
    world.procs.push(world.sidecars[k]!.proc);
  }
  const servers: Array<[string, SandboxMember]> = [['B', world.pods.B!], ['Bi', world.pods.Bi!], ['srv', world.srv]];
  for (const [k, m] of servers) {
    const app = await startHaproxy(m, dir, `app-${k}`, appConfig, APP_UID, 'app');
    world.procs.push(app.proc);
    if (k !== 'srv') {
      const b = m.spawn(world.bulk, ['serve', String(BULK_PORT)], { uid: APP_UID, gid: APP_UID, container: 'app', stdio: ['ignore', 'pipe', 'pipe'] });
      world.procs.push(b);
      await waitLine(b, `bulk server in ${k}`);
    }
  }

  // The iptables pods get the rules once, for good (see the header comment).
  const rules = istioIptablesRules(defaultCaptureSettings());
  for (const k of ['Ai', 'Bi']) await applyIstioRules(world.pods[k]!.netns, rules, { addIPv6PassthroughAddress: false });
  return world;
}

// ---- the agent ----------------------------------------------------------------------------------------

interface Agent {
  proc: ChildProcess;
  dir: string;
}

let agent: Agent | undefined;
let current: World | undefined;
let cliPath = CLI();

function meshlane(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Detach every program and remove every pin under the bench's bpffs dir (what `meshlane uninstall` does). */
function uninstall(): void {
  if (!existsSync(BPFFS)) return;
  const r = meshlane(['uninstall', '--bpffs', BPFFS]);
  if (r.code !== 0) throw new Error(`meshlane uninstall --bpffs ${BPFFS} failed: ${r.stderr}`);
}

function clusterItems(): object[] {
  const items: object[] = [
    namespaceObject('bench', { 'istio-injection': 'enabled' }),
    namespaceObject('plain', {}),
  ];
  for (const d of POD_DEFS) {
    if (d.key !== 'A' && d.key !== 'B' && d.key !== 'C') continue;
    items.push(podObject({ namespace: d.namespace, name: d.name, uid: d.uid, ipv4: d.ipv4, ipv6: d.ipv6 }));
  }
  return items;
}

interface SpliceFlags {
  off: string[];
  on: string[];
  note?: string;
}

/** How this build of the agent switches splicing, from `meshlane agent --help`. */
function spliceFlags(): SpliceFlags {
  const help = meshlane(['agent', '--help']).stdout;
  const hasOn = /(^|\s)--splice\b/m.test(help);
  const hasOff = help.includes('--no-splice');
  if (hasOn || hasOff) return { off: hasOff ? ['--no-splice'] : [], on: hasOn ? ['--splice'] : [] };
  return { off: [], on: [], note: '`meshlane agent` has no splice switch in this build: both meshlane modes ran the default agent' };
}

async function startAgentWith(world: World, extra: string[]): Promise<Agent> {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-bench-agent-'));
  const clusterFile = join(dir, 'cluster.json');
  writeFileSync(`${clusterFile}.tmp`, clusterList(clusterItems()));
  renameSync(`${clusterFile}.tmp`, clusterFile);
  const stateDir = join(dir, 'state');
  const logFile = join(dir, 'agent.log');
  const out = createWriteStream(logFile);
  const profile = process.env.BENCH_AGENT_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_AGENT_CPU_PROF] : [];
  const proc = spawn(process.execPath, [...profile, cliPath, 'agent', '--cluster-file', clusterFile, '--cgroup-root', world.sb.cgroupRoot, '--bpffs', BPFFS, '--state-dir', stateDir, '--log-level', 'info', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  agent = { proc, dir };
  const want = [POD_DEFS[0]!.uid, POD_DEFS[1]!.uid];
  await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${readFileSync(logFile, 'utf8').slice(-3000)}`);
    const st = readStatus(stateDir);
    if (st === undefined || st.pid !== proc.pid) return false;
    return want.every((u) => st.pods.some((p) => p.ref.uid === u && p.state === 'captured'));
  }, 20_000, 'the agent to capture pods A and B');
  return agent;
}

/** Stop the agent; its programs and maps stay pinned (by design: capture goes on without it). */
async function killAgentKeepPins(): Promise<void> {
  const a = agent;
  if (!a || a.proc.exitCode !== null || a.proc.signalCode !== null) return;
  const exited = new Promise((r) => a.proc.once('exit', r));
  // SIGTERM: the agent stops and leaves capture in place, as after SIGKILL (and a --cpu-prof gets written)
  a.proc.kill('SIGTERM');
  const t = setTimeout(() => a.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

async function stopAgent(): Promise<void> {
  const a = agent;
  if (!a) return;
  await killAgentKeepPins();
  agent = undefined;
  uninstall(); // pins survive the agent by design: detach every program
  rmSync(a.dir, { recursive: true, force: true });
}

/** Start the agent; one retry after a failed start (noted in the results, never hidden). */
async function startAgentRetry(world: World, extra: string[]): Promise<void> {
  try {
    await startAgentWith(world, extra);
  } catch (e) {
    const first = (e as Error).message.split('\n')[0]!.slice(0, 400);
    notes.push(`the agent failed to start once and was restarted: ${first}`);
    log(`agent start failed, retrying: ${first}`);
    await stopAgent();
    await sleep(1000);
    await startAgentWith(world, extra);
  }
}

function meshlaneCounters(): Record<string, number> {
  try {
    const r = meshlane(['dump', 'stats', '--json', '--bpffs', BPFFS]);
    const stats = (JSON.parse(r.stdout) as { maps?: Record<string, unknown> }).maps?.stats as Array<{ counter: string; value: unknown }> | undefined;
    if (!Array.isArray(stats)) return {};
    return Object.fromEntries(stats.map((s) => [String(s.counter), Number(s.value)]));
  } catch {
    return {};
  }
}

// ---- measurements -------------------------------------------------------------------------------------

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) a process has used so far, or undefined when it is gone. */
function procCpu(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of proc(5), counted after the comm
  } catch {
    return undefined;
  }
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/** CPU seconds used by everything in a cgroup subtree (cpu.stat exists in every cgroup v2 directory). */
function cgroupCpu(dir: string): number {
  try {
    const m = /usage_usec (\d+)/.exec(readFileSync(join(dir, 'cpu.stat'), 'utf8'));
    return m ? Number(m[1]) / 1e6 : 0;
  } catch {
    return 0;
  }
}

/** All the CPU the benchmark itself accounts for: the sandbox's processes, the agent, this process. */
function ownCpu(): number {
  const self = process.cpuUsage();
  return (current ? cgroupCpu(current.sb.cgroupRoot) : 0) + (procCpu(agent?.proc.pid) ?? 0) + (self.user + self.system) / 1e6;
}

interface CpuReport {
  agentCores?: number;
  machineBusy: number;
  /** CPU (in cores) used by processes that are not part of the benchmark: other users of the machine */
  otherCores: number;
}

/** Runs fn() and reports the agent's CPU use (in cores), the machine's busy share and the CPU of others. */
async function withCpu<T>(fn: () => Promise<T>): Promise<{ value: T } & CpuReport> {
  const pid = agent?.proc.pid;
  const a0 = procCpu(pid);
  const m0 = machineCpu();
  const o0 = ownCpu();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const a1 = procCpu(pid);
  const m1 = machineCpu();
  const o1 = ownCpu();
  const busySecs = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * cpus().length * secs;
  return {
    value,
    agentCores: a0 !== undefined && a1 !== undefined ? (a1 - a0) / secs : undefined,
    machineBusy: (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total),
    // softirq work is charged to whichever task it interrupts, so this is an estimate; it is near 0 on a quiet machine
    otherCores: Math.max(0, (busySecs - (o1 - o0)) / secs),
  };
}

/**
 * Before each slot: wait (at most maxSecs) until the machine is quiet (others use < 0.15 cores over 1 s).
 * The machine is shared (other people's test suites); a slot that had to start on a busy machine is noted.
 */
async function waitQuiet(maxSecs: number): Promise<{ waited: number; busy: boolean }> {
  const t0 = Date.now();
  for (;;) {
    const r = await withCpu(() => sleep(1000));
    if (r.otherCores < 0.15) return { waited: (Date.now() - t0) / 1000, busy: false };
    if (Date.now() - t0 > maxSecs * 1000) return { waited: (Date.now() - t0) / 1000, busy: true };
  }
}

interface WrkResult {
  requests: number;
  duration_us: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  mean_us: number;
  max_us: number;
  err_connect: number;
  err_read: number;
  err_write: number;
  err_status: number;
  err_timeout: number;
}

async function wrk(from: SandboxMember, url: string, conns: number, secs: number, close: boolean, report: string): Promise<WrkResult & { rps: number; errors: number }> {
  const args = ['-t1', `-c${conns}`, `-d${secs}s`, '--latency', '-s', report, ...(close ? ['-H', 'Connection: close'] : []), url];
  const r = await from.exec('wrk', args, { uid: APP_UID, gid: APP_UID, container: 'app', timeoutMs: secs * 1000 + 20_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (r.code !== 0 || line === undefined) throw new Error(`wrk ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
  const w = JSON.parse(line.slice(8)) as WrkResult;
  const errors = w.err_connect + w.err_read + w.err_write + w.err_status + w.err_timeout;
  return { ...w, rps: w.requests / (w.duration_us / 1e6), errors };
}

async function bulk(world: World, from: SandboxPod, to: string, secs: number): Promise<number> {
  const r = await from.exec(world.bulk, ['recv', to, String(BULK_PORT), String(secs)], { uid: APP_UID, gid: APP_UID, container: 'app', timeoutMs: secs * 1000 + 20_000 });
  if (r.code !== 0) throw new Error(`bulk recv ${to} failed (${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim()) as { bytes: number; seconds: number };
  if (j.seconds < secs * 0.9) throw new Error(`bulk recv ${to}: stream ended after ${j.seconds}s: ${r.stderr}`);
  return j.bytes / j.seconds;
}

/** Sessions the client's outbound listener and the server's inbound listener took during fn(). */
async function viaProxies<T>(world: World, client: string, server: string, fn: () => Promise<T>): Promise<{ value: T; out: number; in: number } & CpuReport> {
  const get = async (k: string, fe: string): Promise<number> => (await haproxyStot(world.sidecars[k]!.sock)).get(`${fe}/FRONTEND`) ?? 0;
  const out0 = await get(client, 'outbound');
  const in0 = await get(server, 'inbound');
  const r = await withCpu(fn);
  return { ...r, out: (await get(client, 'outbound')) - out0, in: (await get(server, 'inbound')) - in0 };
}

interface Sample {
  round: number;
  mode: Mode;
  figure: string;
  value: number;
  /** keep-alive figures */
  p50_us?: number;
  p99_us?: number;
  errors?: number;
  /** sessions through the client pod's outbound proxy listener / the server pod's inbound listener */
  out?: number;
  in?: number;
  /** connections the load generator opened (expected through each proxy when captured) */
  conns?: number;
  /** the agent's CPU use during the measurement, in cores */
  agentCores?: number;
  /** share of the machine's CPU time that was busy (all processes, also other users of the machine) */
  machineBusy?: number;
  /** CPU used by processes outside the benchmark during the measurement, in cores (an estimate) */
  otherCores?: number;
}

const samples: Sample[] = [];
const problems: string[] = [];
const notes: string[] = [];
const counters: Partial<Record<Mode, Record<string, number>[]>> = {};

function check(mode: Mode, s: Sample, inboundCaptured: boolean): void {
  if (s.out === undefined || s.conns === undefined) return;
  const label = `${mode} round ${s.round} ${s.figure}`;
  if (mode === 'none') {
    if (s.out !== 0 || (s.in ?? 0) !== 0) problems.push(`${label}: went through a proxy (out ${s.out}, in ${s.in}) in the no-proxy mode`);
    return;
  }
  // wrk may open a few more connections than -c (reconnects after errors), never fewer when captured
  if (s.out < s.conns) problems.push(`${label}: only ${s.out} of ${s.conns} connections went through A's outbound proxy: the benchmark bypassed the proxy`);
  if (inboundCaptured && (s.in ?? 0) < s.conns) problems.push(`${label}: only ${s.in} of ${s.conns} connections went through B's inbound proxy`);
}

async function measureMode(world: World, mode: Mode, round: number, o: Options, splice: SpliceFlags): Promise<void> {
  const ipt = mode === 'iptables';
  const client = ipt ? 'Ai' : 'A';
  const server = ipt ? 'Bi' : 'B';
  const from = world.pods[client]!;
  const target = world.pods[server]!.ipv4;
  const url = `http://${target}:${HTTP_PORT}/`;
  const meshMode = mode.startsWith('meshlane');
  const pinnedMode = mode.endsWith('-pinned');
  if (meshMode) {
    await startAgentRetry(world, mode.startsWith('meshlane-splice') ? splice.on : splice.off);
    if (pinnedMode) await killAgentKeepPins();
  }
  try {
    const hold = Number(process.env.BENCH_DEBUG_HOLD ?? 0);
    if (hold > 0) {
      log(`BENCH_DEBUG_HOLD: ${mode} is set up; holding ${hold}s`);
      await sleep(hold * 1000);
    }
    // warm-up (not recorded); also tells whether the server pod's inbound is captured in this mode
    const warm = await viaProxies(world, client, server, () => wrk(from, url, 4, 1, false, world.report));
    const inboundCaptured = warm.in > 0;
    if (mode !== 'none' && !inboundCaptured) {
      const n = `${mode}: the server pod's inbound was not captured (B's proxy on 15006 took no connection): only the client side went through a proxy`;
      if (!notes.includes(n)) notes.push(n);
    }
    const add = (s: Sample): void => {
      samples.push(s);
      check(mode, s, mode === 'iptables' || inboundCaptured);
    };
    for (const c of o.conc) {
      const r = await viaProxies(world, client, server, () => wrk(from, url, c, o.duration, false, world.report));
      add({ round, mode, figure: `ka-c${c}`, value: r.value.rps, p50_us: r.value.p50_us, p99_us: r.value.p99_us, errors: r.value.errors, out: r.out, in: r.in, conns: c, agentCores: r.agentCores, machineBusy: r.machineBusy, otherCores: r.otherCores });
    }
    const cps = await viaProxies(world, client, server, () => wrk(from, url, o.cpsConc, o.duration, true, world.report));
    add({ round, mode, figure: 'cps', value: cps.value.rps, p50_us: cps.value.p50_us, p99_us: cps.value.p99_us, errors: cps.value.errors, out: cps.out, in: cps.in, conns: Math.floor(cps.value.requests * 0.99), agentCores: cps.agentCores, machineBusy: cps.machineBusy, otherCores: cps.otherCores });
    // A bulk transfer that breaks is a result, not a crash of the benchmark: record it and go on.
    try {
      const bb = await viaProxies(world, client, server, () => bulk(world, from, target, o.duration));
      add({ round, mode, figure: 'bulk', value: bb.value, out: bb.out, in: bb.in, conns: 1, agentCores: bb.agentCores, machineBusy: bb.machineBusy, otherCores: bb.otherCores });
    } catch (e) {
      notes.push(`${mode}, round ${round}: the bulk transfer broke: ${(e as Error).message.split('\n')[0]}`);
    }
    // the non-captured pod C: new connections to srv, no proxy anywhere; only whether meshlane is loaded differs
    const hookUrl = `http://${SRV_V4}:${HTTP_PORT}/`;
    const hook = await withCpu(() => wrk(world.pods.C!, hookUrl, o.cpsConc, o.duration, true, world.report));
    samples.push({ round, mode, figure: 'hook-cps', value: hook.value.rps, p50_us: hook.value.p50_us, p99_us: hook.value.p99_us, errors: hook.value.errors, agentCores: hook.agentCores, machineBusy: hook.machineBusy, otherCores: hook.otherCores });
    if (meshMode) {
      (counters[mode] ??= []).push(meshlaneCounters());
      if (!pinnedMode) {
        // the same with the agent stopped: its programs stay attached (pinned links), so this separates the
        // cost of the BPF hooks from the CPU the agent process takes from a 2-core machine
        await killAgentKeepPins();
        const pinned = await withCpu(() => wrk(world.pods.C!, hookUrl, o.cpsConc, o.duration, true, world.report));
        samples.push({ round, mode, figure: 'hook-cps-pinned', value: pinned.value.rps, p50_us: pinned.value.p50_us, p99_us: pinned.value.p99_us, errors: pinned.value.errors, machineBusy: pinned.machineBusy, otherCores: pinned.otherCores });
      }
      // and right after, with meshlane gone: a baseline adjacent in time, so that the ratio of this pair is
      // not moved by whatever else the machine did minutes apart
      await stopAgent();
      const bare = await withCpu(() => wrk(world.pods.C!, hookUrl, o.cpsConc, o.duration, true, world.report));
      samples.push({ round, mode, figure: 'hook-cps-unloaded', value: bare.value.rps, p50_us: bare.value.p50_us, p99_us: bare.value.p99_us, errors: bare.value.errors, machineBusy: bare.machineBusy, otherCores: bare.otherCores });
    }
  } finally {
    if (meshMode) await stopAgent();
  }
}

// ---- report -------------------------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function pick(mode: Mode, figure: string, field: 'value' | 'p50_us' | 'p99_us' = 'value'): number[] {
  return samples.filter((s) => s.mode === mode && s.figure === figure && s[field] !== undefined).map((s) => s[field]!);
}

/** median, and the spread (max-min) relative to it */
function stat(xs: number[]): { med: number; spread: number } | undefined {
  if (xs.length === 0) return undefined;
  const med = median(xs);
  return { med, spread: med === 0 ? 0 : (Math.max(...xs) - Math.min(...xs)) / med };
}

/** Per round: figure / hook-cps-unloaded of the same mode and round (measured seconds apart). */
function pairedRatios(mode: Mode, figure: string): number[] {
  const out: number[] = [];
  for (const s of samples.filter((x) => x.mode === mode && x.figure === figure)) {
    const base = samples.find((x) => x.mode === mode && x.round === s.round && x.figure === 'hook-cps-unloaded');
    if (base && base.value > 0) out.push(s.value / base.value);
  }
  return out;
}

function fmt(n: number, unit: string): string {
  if (unit === 'ms') return n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n.toFixed(1);
  if (unit === 'Gbit/s') return n.toFixed(2);
  return n >= 1000 ? Math.round(n).toLocaleString('en-US') : n.toFixed(0);
}

interface Row {
  label: string;
  figure: string;
  field: 'value' | 'p50_us' | 'p99_us';
  unit: string;
  scale: number;
  /** higher is better */
  higher: boolean;
}

function tables(o: Options): string {
  const rows: Row[] = [];
  for (const c of o.conc) {
    rows.push({ label: `keep-alive c=${c}: requests/s`, figure: `ka-c${c}`, field: 'value', unit: 'req/s', scale: 1, higher: true });
    rows.push({ label: `keep-alive c=${c}: p50 ms`, figure: `ka-c${c}`, field: 'p50_us', unit: 'ms', scale: 1e-3, higher: false });
    rows.push({ label: `keep-alive c=${c}: p99 ms`, figure: `ka-c${c}`, field: 'p99_us', unit: 'ms', scale: 1e-3, higher: false });
  }
  rows.push({ label: `new connections/s (c=${o.cpsConc}, Connection: close)`, figure: 'cps', field: 'value', unit: 'conn/s', scale: 1, higher: true });
  rows.push({ label: `new connections p99 ms`, figure: 'cps', field: 'p99_us', unit: 'ms', scale: 1e-3, higher: false });
  rows.push({ label: 'bulk, one connection: Gbit/s', figure: 'bulk', field: 'value', unit: 'Gbit/s', scale: 8e-9, higher: true });
  const modes = o.modes;
  const ratioModes = modes.filter((m) => m.startsWith('meshlane') || m === 'none');
  let md = `| figure (median of ${o.rounds} round${o.rounds > 1 ? 's' : ''}, spread) | ${modes.join(' | ')} | ${modes.includes('iptables') ? ratioModes.map((m) => `${m} / iptables`).join(' | ') : ''} |\n`;
  md += `|---|${modes.map(() => '---:').join('|')}|${modes.includes('iptables') ? ratioModes.map(() => '---:').join('|') : ''}|\n`;
  for (const r of rows) {
    const st = Object.fromEntries(modes.map((m) => [m, stat(pick(m, r.figure, r.field))]));
    const cells = modes.map((m) => {
      const s = st[m];
      return s ? `${fmt(s.med * r.scale, r.unit)} ±${Math.round((s.spread * 100) / 2)}%` : '-';
    });
    const base = st.iptables?.med;
    const ratios = modes.includes('iptables') ? ratioModes.map((m) => (base && st[m] ? `${(st[m]!.med / base).toFixed(2)}x` : '-')) : [];
    md += `| ${r.label} | ${cells.join(' | ')} | ${ratios.join(' | ')} |\n`;
  }

  // the hook cost: pod C is never captured; compare its connect rate with meshlane loaded vs not
  md += `\nNon-captured pod C, new connections/s to a server on the node (c=${o.cpsConc}), no proxy in the path; ratio to \`none\` (meshlane not loaded). \`iptables\` changes nothing for C either, so its ratio shows the noise.\n\n`;
  md += `| mode | meshlane loaded | conn/s (median, spread) | ratio to none |\n|---|---|---:|---:|\n`;
  const hookBase = stat(pick('none', 'hook-cps'))?.med;
  const hookRow = (label: string, loaded: string, xs: number[]): void => {
    const s = stat(xs);
    if (!s) return;
    md += `| ${label} | ${loaded} | ${fmt(s.med, 'conn/s')} ±${Math.round((s.spread * 100) / 2)}% | ${hookBase ? `${(s.med / hookBase).toFixed(3)}x` : '-'} |\n`;
  };
  for (const m of modes) {
    hookRow(m, !m.startsWith('meshlane') ? 'no' : m.endsWith('-pinned') ? 'programs attached, agent stopped' : 'yes, agent running', pick(m, 'hook-cps'));
    if (m.startsWith('meshlane') && !m.endsWith('-pinned')) hookRow(`${m}, agent stopped`, 'programs attached, agent stopped', pick(m, 'hook-cps-pinned'));
  }
  const paired = modes.filter((m) => m.startsWith('meshlane') && pick(m, 'hook-cps-unloaded').length > 0);
  if (paired.length > 0) {
    md += `\nThe same, paired: in each meshlane slot C was measured three times back to back (agent running, then only the programs attached, then meshlane uninstalled); ratios within each slot, median over rounds (min..max):\n\n| mode | agent running / uninstalled | programs only / uninstalled |\n|---|---:|---:|\n`;
    for (const m of paired) {
      const r = (f: string): string => {
        const xs = pairedRatios(m, f);
        return xs.length ? `${median(xs).toFixed(3)}x (${Math.min(...xs).toFixed(3)}..${Math.max(...xs).toFixed(3)})` : '-';
      };
      md += m.endsWith('-pinned') ? `| ${m} | - | ${r('hook-cps')} |\n` : `| ${m} | ${r('hook-cps')} | ${r('hook-cps-pinned')} |\n`;
    }
  }

  // CPU: the agent's own use, and how busy the machine was
  md += `\nCPU during the measurements (median over all measurements of the mode; max in brackets): the agent process in cores; the whole machine's busy share (${cpus().length} CPUs); CPU taken by processes outside the benchmark (other users of the machine; an estimate), in cores.\n\n| mode | agent CPU (cores) | machine busy | others (cores) |\n|---|---:|---:|---:|\n`;
  for (const m of modes) {
    const ss = samples.filter((x) => x.mode === m);
    const ag = ss.filter((x) => x.agentCores !== undefined).map((x) => x.agentCores!);
    const mb = ss.filter((x) => x.machineBusy !== undefined).map((x) => x.machineBusy!);
    const ot = ss.filter((x) => x.otherCores !== undefined).map((x) => x.otherCores!);
    md += `| ${m} | ${ag.length ? `${median(ag).toFixed(2)} (${Math.max(...ag).toFixed(2)})` : '-'} | ${mb.length ? `${Math.round(median(mb) * 100)}%` : '-'} | ${ot.length ? `${median(ot).toFixed(2)} (${Math.max(...ot).toFixed(2)})` : '-'} |\n`;
  }

  // proof that the traffic went where it should
  md += `\nSessions through the proxies (sum over all rounds; "expected" is what wrk/bulk opened):\n\n| mode | client outbound (15001) | server inbound (15006) | expected | wrk errors |\n|---|---:|---:|---:|---:|\n`;
  for (const m of modes) {
    const ss = samples.filter((s) => s.mode === m && s.out !== undefined);
    const sum = (f: (s: Sample) => number): number => ss.reduce((a, s) => a + f(s), 0);
    md += `| ${m} | ${sum((s) => s.out!)} | ${sum((s) => s.in ?? 0)} | ${m === 'none' ? '0' : `>= ${sum((s) => s.conns ?? 0)}`} | ${sum((s) => s.errors ?? 0)} |\n`;
  }
  const cm = Object.entries(counters);
  if (cm.length > 0) {
    const names = ['captured_outbound', 'inbound_captured', 'orig_dst_served', 'spliced'];
    md += `\nmeshlane's own counters (per-CPU stats map, summed over the agent runs of each mode):\n\n| mode | ${names.join(' | ')} |\n|---|${names.map(() => '---:').join('|')}|\n`;
    for (const [m, list] of cm) md += `| ${m} | ${names.map((n) => String(list!.reduce((a, c) => a + (c[n] ?? 0), 0))).join(' | ')} |\n`;
  }
  return md;
}

function targets(o: Options): string[] {
  const out: string[] = [];
  if (!o.modes.includes('iptables')) return out;
  const med = (m: Mode, f: string, field: 'value' | 'p50_us' | 'p99_us' = 'value'): number | undefined => stat(pick(m, f, field))?.med;
  for (const m of o.modes.filter((x) => x.startsWith('meshlane'))) {
    for (const c of o.conc) {
      const rps = (med(m, `ka-c${c}`) ?? NaN) / (med('iptables', `ka-c${c}`) ?? NaN);
      const p99 = (med(m, `ka-c${c}`, 'p99_us') ?? NaN) / (med('iptables', `ka-c${c}`, 'p99_us') ?? NaN);
      out.push(`${m} keep-alive c=${c}: ${rps.toFixed(2)}x iptables req/s (target >= 1.30: ${rps >= 1.3 ? 'met' : 'NOT met'}), p99 ${p99.toFixed(2)}x (target <= 0.80: ${p99 <= 0.8 ? 'met' : 'NOT met'})`);
    }
    const cps = (med(m, 'cps') ?? NaN) / (med('iptables', 'cps') ?? NaN);
    out.push(`${m} new connections/s: ${cps.toFixed(2)}x iptables (target >= 1.20: ${cps >= 1.2 ? 'met' : 'NOT met'})`);
    if (o.modes.includes('none')) {
      const pr = (f: string): number => {
        const xs = pairedRatios(m, f);
        return xs.length ? median(xs) : (med(m, f) ?? NaN) / (med('none', 'hook-cps') ?? NaN);
      };
      const h = pr('hook-cps');
      const hp = m.endsWith('-pinned') ? h : pr('hook-cps-pinned');
      if (m.endsWith('-pinned')) out.push(`${m} non-captured pod (paired): ${hp.toFixed(3)}x of no meshlane, programs attached, agent stopped (target >= 0.970: ${hp >= 0.97 ? 'met' : 'NOT met'})`);
      else out.push(`${m} non-captured pod (paired): ${h.toFixed(3)}x of no meshlane with the agent running, ${hp.toFixed(3)}x with only the programs attached (target >= 0.970: ${h >= 0.97 ? 'met' : 'NOT met'} / ${hp >= 0.97 ? 'met' : 'NOT met'})`);
    }
  }
  return out;
}

// ---- main ---------------------------------------------------------------------------------------------

async function cleanup(): Promise<void> {
  await stopAgent().catch((e) => log(`stopping the agent: ${(e as Error).message}`));
  try {
    uninstall();
  } catch (e) {
    log((e as Error).message);
  }
  const w = current;
  current = undefined;
  if (w) {
    await w.sb.destroy();
    rmSync(w.dir, { recursive: true, force: true });
  }
}

function cleanupSync(): void {
  if (agent && agent.proc.exitCode === null) {
    try {
      process.kill(agent.proc.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  try {
    uninstall();
  } catch {
    /* best effort */
  }
  if (agent) rmSync(agent.dir, { recursive: true, force: true });
  if (current) {
    current.sb.destroySync();
    rmSync(current.dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  cliPath = o.cli;
  if (!existsSync(cliPath)) fail(`${cliPath} does not exist: build meshlane first (bash scripts/setup.sh)`);
  if (process.getuid?.() !== 0) fail('run as root (network namespaces, cgroups, iptables, BPF)');
  for (const tool of ['haproxy', 'wrk', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) fail(`${tool} is not installed (bash bench/run.sh installs it)`);
  }
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', cleanupSync);

  const started = new Date();
  const loadAtStart = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const splice = spliceFlags();
  if (splice.note && o.modes.includes('meshlane-splice')) notes.push(splice.note);
  log(`modes ${o.modes.join(', ')}; ${o.rounds} round(s) of ${o.duration}s per figure; keep-alive c=${o.conc.join(',')}; new connections c=${o.cpsConc}`);
  try {
    log('building the sandbox: pods A, B (bench), Ai, Bi (bench-ipt, iptables rules), C (plain), host srv');
    const world = await buildWorld();
    for (let r = 1; r <= o.rounds; r++) {
      // rotate the order so that no mode always runs first (or right after the same neighbour)
      const order = o.modes.map((_m, i) => o.modes[(i + r - 1) % o.modes.length]!);
      for (const mode of order) {
        const q = await waitQuiet(o.quietWait);
        if (q.busy) notes.push(`round ${r} ${mode} started on a busy machine (others used >= 0.15 cores after waiting ${Math.round(q.waited)}s)`);
        else if (q.waited > 1.5) log(`waited ${q.waited.toFixed(0)}s for the machine to be quiet`);
        const t0 = Date.now();
        await measureMode(world, mode, r, o, splice);
        log(`round ${r}/${o.rounds} ${mode}: ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      }
    }
  } finally {
    await cleanup();
  }
  const kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const haproxyVersion = (spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout ?? '').split('\n')[0] ?? '';
  const wrkVersion = ((spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout ?? '') + '').split('\n')[0] ?? '';
  const mlRoot = join(cliPath, '..', '..', '..', '..');
  const rev = spawnSync('git', ['-C', mlRoot, 'describe', '--always', '--dirty', '--exclude', '*'], { encoding: 'utf8' });
  const revFile = join(mlRoot, 'REVISION'); // written by run.sh --commit into its clean export
  const mlRev = existsSync(revFile) ? `commit ${readFileSync(revFile, 'utf8').trim()}` : rev.status === 0 ? rev.stdout.trim() : 'not a git checkout';
  let md = `Run ${started.toISOString()} - ${new Date().toISOString()}: \`${process.env.BENCH_COMMAND ?? ['node dist/bench/bench.js', ...process.argv.slice(2)].join(' ')}\`\n`;
  md += `meshlane: ${mlRoot} (${mlRev}); load average at the start: ${loadAtStart}\n`;
  md += `Machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), kernel ${kernel}, ${haproxyVersion}, ${wrkVersion.trim()}, node ${process.version}\n\n`;
  md += tables(o);
  const t = targets(o);
  if (t.length > 0) md += `\nTargets:\n${t.map((l) => `- ${l}`).join('\n')}\n`;
  if (notes.length > 0) md += `\nNotes:\n${notes.map((l) => `- ${l}`).join('\n')}\n`;
  if (problems.length > 0) md += `\nPROBLEMS (these figures are not valid):\n${problems.map((l) => `- ${l}`).join('\n')}\n`;
  console.log(md);
  if (o.markdown) writeFileSync(o.markdown, md);
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, started, kernel, samples, counters, notes, problems }, null, 2));
  process.exitCode = problems.length > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
});
