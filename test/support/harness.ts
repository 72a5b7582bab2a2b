// Shared by the kernel tests and the demo-like scenarios: a sandbox node with one captured-namespace
// client pod (a proxy as uid 1337 and an app server) and a "service" host holding VIPs, the cluster
// file that describes it, an agent subprocess, and a case runner that records what a connection hit.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, renameSync, writeFileSync, createWriteStream, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox, type SandboxHost, type SandboxMember, type SandboxPod } from '../../src/sandbox/sandbox.js';
import { packageRoot } from '../../src/util/paths.js';
import { readStatus, type AgentStatus } from '../../src/agent/status.js';
import { uninstall } from '../../src/dataplane/dataplane.js';

export const ENDPOINT = (): string => join(packageRoot(), 'dist', 'src', 'sandbox', 'endpoint.js');
export const CLI = (): string => join(packageRoot(), 'dist', 'src', 'cli', 'main.js');

export const POD_V4 = '10.244.0.10';
export const POD_V6 = 'fd00:244::10';
export const SVC_V4 = '10.96.0.10';
export const SVC_V6 = 'fd00:96::10';
export const OTHER_V4 = '10.0.0.10';
export const POD_UID = '6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10';
export const APP = 1000;
export const PROXY = 1337;

export interface Topology {
  sb: Sandbox;
  pod: SandboxPod;
  svc: SandboxHost;
  procs: ChildProcess[];
}

/** Wait for a child to print `ready` (the endpoint does once it listens). */
export function waitReady(p: ChildProcess, what: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} not ready after ${timeoutMs} ms: ${buf}`)), timeoutMs);
    p.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('ready')) {
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

export interface TopologyOptions {
  prefix: string;
  cgroupDriver?: 'systemd' | 'cgroupfs';
  /** start the proxy (default true) */
  proxy?: boolean;
  /** the proxy forwards to SO_ORIGINAL_DST like Envoy instead of answering itself */
  forward?: boolean;
  /** servers and proxy keep connections open and echo (for session-mode clients) */
  echo?: boolean;
  qos?: 'Guaranteed' | 'Burstable' | 'BestEffort';
  /** the sandbox puts ::6 on the pod's lo (default true; false: left to whoever captures it) */
  passthroughV6?: boolean;
}

export async function makeTopology(o: TopologyOptions): Promise<Topology> {
  const sb = await Sandbox.create({ prefix: o.prefix, cgroupDriver: o.cgroupDriver ?? 'systemd' });
  const procs: ChildProcess[] = [];
  try {
    const svc = await sb.addHost('svc', { ipv4: '10.244.0.200', ipv6: 'fd00:244::200', extraV4: [SVC_V4, OTHER_V4], extraV6: [SVC_V6] });
    const pod = await sb.addPod({ namespace: 'demo', name: 'client', uid: POD_UID, ipv4: POD_V4, ipv6: POD_V6, qos: o.qos, passthroughV6: o.passthroughV6 });
    const echo = o.echo ? ['--echo'] : [];
    const svcServer = svc.spawn('node', [ENDPOINT(), 'serve', '--ports', '80,8080,53,15008', '--tag', 'svc', ...echo]);
    procs.push(svcServer);
    const appServer = pod.spawn('node', [ENDPOINT(), 'serve', '--ports', '8080,9090,15008,53', '--tag', 'app', ...echo], { container: 'app' });
    procs.push(appServer);
    const waits = [waitReady(svcServer, 'service server'), waitReady(appServer, 'app server')];
    if (o.proxy !== false) {
      const proxy = startProxy(pod, o.forward, o.echo);
      procs.push(proxy);
      waits.push(waitReady(proxy, 'proxy'));
    }
    await Promise.all(waits);
    return { sb, pod, svc, procs };
  } catch (e) {
    for (const p of procs) p.kill('SIGKILL');
    await sb.destroy();
    throw e;
  }
}

export function startProxy(pod: SandboxPod, forward = false, echo = false): ChildProcess {
  const args = [ENDPOINT(), 'proxy', '--outbound', '15001', '--inbound', '15006', ...(forward ? ['--forward'] : []), ...(echo ? ['--echo'] : [])];
  return pod.spawn('node', args, { uid: PROXY, gid: PROXY, container: 'istio-proxy' });
}

/** The JSON lines a child prints on stdout (a forwarding proxy: one per connection), as they come. */
export function jsonLines(p: ChildProcess): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  p.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  return lines;
}

export async function destroyTopology(t: Topology | undefined): Promise<void> {
  if (!t) return;
  for (const p of t.procs) if (p.exitCode === null) p.kill('SIGKILL');
  await t.sb.destroy();
}

/** Kubernetes objects for the cluster file. */
export function namespaceObject(name: string, labels: Record<string, string>): object {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export interface PodObjectOptions {
  namespace?: string;
  name?: string;
  uid?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  proxySecurityContext?: { runAsUser?: number; runAsGroup?: number };
  ipv4?: string;
  ipv6?: string;
  qos?: 'Guaranteed' | 'Burstable' | 'BestEffort';
  /** spec.nodeName (default sandbox-node) */
  nodeName?: string;
}

export function podObject(o: PodObjectOptions = {}): object {
  const ips = [o.ipv4 ?? POD_V4, o.ipv6 ?? POD_V6].filter(Boolean);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: o.name ?? 'client',
      namespace: o.namespace ?? 'demo',
      uid: o.uid ?? POD_UID,
      labels: o.labels ?? {},
      annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}', ...(o.annotations ?? {}) },
    },
    spec: {
      nodeName: o.nodeName ?? 'sandbox-node',
      containers: [{ name: 'app' }, { name: 'istio-proxy', securityContext: o.proxySecurityContext ?? { runAsUser: 1337, runAsGroup: 1337 } }],
    },
    status: { phase: 'Running', qosClass: o.qos ?? 'BestEffort', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  };
}

export function clusterList(items: object[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2);
}

export interface AgentRun {
  proc: ChildProcess;
  dir: string;
  clusterFile: string;
  stateDir: string;
  bpffs: string;
  logFile: string;
  /** where the agent serves meshlane-cni (--cni-socket, inside the run's temp dir) */
  cniSocket: string;
  write(items: object[]): void;
  status(): AgentStatus | undefined;
  log(): string;
}

/** Start `meshlane agent` as a real subprocess on a cluster file, with its own bpffs dir and state dir
 * (`extraArgs`: more agent flags, e.g. --max-inflight-per-pod, --metrics-address). */
export async function startAgent(sb: Sandbox, items: object[], name: string, prior?: AgentRun, extraArgs: string[] = []): Promise<AgentRun> {
  const dir = prior?.dir ?? mkdtempSync(join(tmpdir(), `meshlane-${name}-`));
  const clusterFile = join(dir, 'cluster.json');
  const write = (its: object[]): void => {
    const tmp = `${clusterFile}.tmp`;
    writeFileSync(tmp, clusterList(its));
    // rename: the agent never sees a half-written file
    renameSync(tmp, clusterFile);
  };
  if (!prior) write(items);
  return spawnAgent(sb, name, dir, ['--cluster-file', clusterFile, ...extraArgs], { clusterFile, write });
}

/** Start `meshlane agent --kubeconfig FILE --node-name NODE` (the Kubernetes API source) the same way. */
export async function startKubeAgent(
  sb: Sandbox,
  kubeconfig: string,
  nodeName: string,
  name: string,
  prior?: AgentRun,
  opts: { waitForStatus?: boolean; args?: string[] } = {},
): Promise<AgentRun> {
  const dir = prior?.dir ?? mkdtempSync(join(tmpdir(), `meshlane-${name}-`));
  const noFile = (): void => {
    throw new Error('an agent on the Kubernetes API has no cluster file');
  };
  return spawnAgent(
    sb,
    name,
    dir,
    ['--kubeconfig', kubeconfig, '--node-name', nodeName, ...(opts.args ?? [])],
    { clusterFile: '', write: noFile },
    opts.waitForStatus ?? true,
  );
}

async function spawnAgent(
  sb: Sandbox,
  name: string,
  dir: string,
  sourceArgs: string[],
  file: { clusterFile: string; write: (items: object[]) => void },
  waitForStatus = true,
): Promise<AgentRun> {
  const stateDir = join(dir, 'state');
  const bpffs = `/sys/fs/bpf/meshlane-test-${name}`;
  const logFile = join(dir, `agent-${Date.now()}.log`);
  // the run's own CNI socket: never the node's default /var/run/meshlane/cni.sock
  const cniSocket = join(dir, 'cni', 'cni.sock');
  const out = createWriteStream(logFile);
  const proc = spawn(
    process.execPath,
    [
      CLI(),
      'agent',
      // no metrics endpoint unless a test asks for one (a later --metrics-address wins): agents never share a port
      '--metrics-address',
      'off',
      ...sourceArgs,
      '--cgroup-root',
      sb.cgroupRoot,
      '--bpffs',
      bpffs,
      '--state-dir',
      stateDir,
      '--cni-socket',
      cniSocket,
      '--log-level',
      'debug',
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
    clusterFile: file.clusterFile,
    stateDir,
    bpffs,
    logFile,
    cniSocket,
    write: file.write,
    status: () => readStatus(stateDir),
    log: () => readFileSync(logFile, 'utf8'),
  };
  if (!waitForStatus) return run;
  try {
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${run.log()}`);
        const st = run.status();
        // the first status.json precedes the attach (it proves the state dir): wait for the one after it
        return st !== undefined && st.pid === proc.pid && st.health?.programsAttached === true;
      },
      15_000,
      'the agent to publish its status',
    );
  } catch (e) {
    // the caller never gets the run to clean up: no agent, pins or temp dir may outlive the test
    const exited = proc.exitCode !== null; // then the message has the log already
    const log = run.log();
    await cleanupAgent(run);
    throw exited ? e : new Error(`${(e as Error).message}; agent log:\n${log}`);
  }
  return run;
}

/** The mount points of every bpffs this process sees (/proc/self/mountinfo): a test compares them before and
 * after, so that nothing of it mounts or leaves a bpffs on the machine. */
export const bpffsMounts = (): string[] =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' - ')[1]?.startsWith('bpf '))
    .map((l) => l.split(' ')[4]!);

export async function stopAgent(a: AgentRun | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!a || a.proc.exitCode !== null || a.proc.signalCode !== null) return;
  const exited = new Promise((r) => a.proc.once('exit', r));
  a.proc.kill(signal);
  await exited;
}

/** Stop the agent, remove its pins and temp files. Safe on partial state. */
export async function cleanupAgent(a: AgentRun | undefined): Promise<void> {
  if (!a) return;
  await stopAgent(a, 'SIGKILL');
  try {
    uninstall(a.bpffs);
  } catch {
    /* reported by the before-stop check if anything remains */
  }
  rmSync(a.dir, { recursive: true, force: true });
}

/** `meshlane <args>` as a subprocess; returns exit code and output. */
export function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI(), ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The decoded maps, as `meshlane dump --json` prints them. */
export function dumpJson(bpffs: string): { links: string[]; maps: Record<string, Array<Record<string, unknown>> | string> } {
  const r = cli(['dump', '--json', '--bpffs', bpffs]);
  if (r.code !== 0) throw new Error(`meshlane dump failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (pred()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Wait until the agent has applied a snapshot in which the pod has exactly `settings`. */
export async function waitForPodSettings(a: AgentRun, uid: string, settings: unknown): Promise<void> {
  const want = JSON.stringify(settings);
  await waitFor(
    () => {
      const p = a.status()?.pods.find((x) => x.ref.uid === uid);
      return p?.state === 'captured' && JSON.stringify(p.settings) === want;
    },
    10_000,
    `pod ${uid} captured with the new settings`,
  );
}

// ---- connection cases ------------------------------------------------------------------------

export interface Case {
  name: string;
  uid: number;
  gid: number;
  to: string;
  /** bind before connect(): to this address (see fromPort) */
  from?: string;
  /** bind before connect() to this port (with `from`, or the wildcard address) */
  fromPort?: number;
  /** where the client runs (default: the pod given to runCase / runCases) */
  on?: SandboxMember;
}

/** The endpoint already writes plain addresses (v4-mapped ones as IPv4). */
const plain = (a: string | undefined): string => a ?? '';

export interface OutcomeOptions {
  /** also the app's own address (getsockname, without the port), as ` app-local=<addr>` */
  appLocal?: boolean;
}

/** What a connection hit, as a comparable string: the listener, the peer the listener saw, and for a
 * proxy listener the original destination it read with SO_ORIGINAL_DST. */
export function outcomeOf(json: string, o: OutcomeOptions = {}): string {
  let r: {
    ok: boolean;
    error?: string;
    remote?: string;
    local?: string;
    reply?: { tag: string; listen?: number; port: number; peer: string; orig?: { address?: string; port?: number; error?: string } };
  };
  try {
    r = JSON.parse(json);
  } catch {
    return `unparsable: ${json.trim().slice(0, 200)}`;
  }
  if (!r.ok) return `error ${r.error}`;
  const rep = r.reply!;
  // the listener that took the connection (not the accepted socket's local port, which is the dialled
  // port when a connection is steered without rewriting, as sk_lookup does)
  const listen = rep.listen ?? rep.port;
  let s = `${rep.tag}:${listen} peer=${plain(rep.peer)}`;
  if (rep.tag.startsWith('proxy-') && rep.tag !== 'proxy-status') {
    s += ` orig=${rep.orig?.address ? `${plain(rep.orig.address)}:${rep.orig.port}` : rep.orig?.error}`;
  }
  if (r.remote) s += ` app-sees=${r.remote}`;
  // the app's own address (getsockname), without its port (ephemeral unless bound)
  if (o.appLocal && r.local) s += ` app-local=${r.local.replace(/:\d+$/, '')}`;
  return s;
}

export async function runCase(pod: SandboxMember, c: Case, o: OutcomeOptions = {}): Promise<string> {
  const args = [
    ENDPOINT(),
    'connect',
    '--to',
    c.to,
    '--timeout',
    '2000',
    ...(c.from ? ['--from', c.from] : []),
    ...(c.fromPort ? ['--from-port', String(c.fromPort)] : []),
  ];
  const r = await (c.on ?? pod).exec('node', args, { uid: c.uid, gid: c.gid, container: 'app', timeoutMs: 10_000 });
  return outcomeOf(r.stdout, o);
}

/** Start a long-lived session client in the pod (see endpoint.ts session); resolves to its outcome line. */
export function startSession(
  pod: SandboxPod,
  to: string,
  rounds: number,
  intervalMs: number,
  uid = APP,
): Promise<{ ok: boolean; error?: string; reply?: { tag: string; port: number } }> {
  const p = pod.spawn('node', [ENDPOINT(), 'session', '--to', to, '--rounds', String(rounds), '--interval', String(intervalMs)], {
    uid,
    gid: uid,
    container: 'app',
  });
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => p.once('exit', () => resolve(JSON.parse(out.trim() || '{"ok":false,"error":"no output"}'))));
}

/** Run cases a few at a time (they are independent connections). */
export async function runCases(pod: SandboxMember, cases: Case[], parallel = 4, o: OutcomeOptions = {}): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let i = 0;
  const worker = async (): Promise<void> => {
    while (i < cases.length) {
      const c = cases[i++]!;
      out.set(c.name, await runCase(pod, c, o));
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}
