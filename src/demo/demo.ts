// `meshlane demo`: meshlane's main job on an embedded default, no cluster needed. A sandbox node (network
// namespaces on a bridge, kubelet-shaped cgroups) gets a service, a captured pod with a forwarding proxy and
// an uncaptured pod; the agent runs in this process on a cluster file; connections show what the app got and
// what the proxy saw; then one annotation flips the service range to direct. Everything is removed at the
// end, also on Ctrl-C, SIGTERM or an error; only the agent's log file stays (its path is printed).
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { ClusterFileSourceAdapter } from '../sources/select.js';
import { readStatus, type AgentStatus, type PodStatus } from '../agent/status.js';
import { renderDump } from '../inspect/dump.js';
import { podStatusLines, settingsLine } from '../inspect/status.js';
import { listPins, PinnedMaps, uninstall } from '../dataplane/dataplane.js';
import { describeMaps } from '../dataplane/describe.js';
import { installCleanupHandlers, Sandbox, type SandboxMember, type SandboxPod, type SpawnOptions } from '../sandbox/sandbox.js';
import { UserError } from '../util/errors.js';
import { packageRoot } from '../util/paths.js';
import {
  APP_UID,
  EXCLUDE_ANNOTATION,
  EXCLUDE_RANGE,
  INBOUND_PORT,
  NODE_NAME,
  OUTBOUND_PORT,
  PRODUCTPAGE,
  PROXY_UID,
  RATINGS,
  SERVICE,
  clusterFile,
} from './objects.js';
import { connectFrom, LineLog, waitReady, type ConnectResult } from './procs.js';
import { onTermination } from '../util/process-hooks.js';

export const DEMO_PREFIX = 'mldemo';
export const DEMO_BPFFS = '/sys/fs/bpf/meshlane-demo';
const LOCK_FILE = '/run/meshlane-demo.pid';
const STEPS = 6;

export interface DemoOptions {
  /** keep the temp dir (cluster file, agent status) besides the agent log */
  keep?: boolean;
}

type Verdict = 'captured' | 'direct';

class Aborted extends Error {}

/** Everything the demo made, and how to undo it. */
class Demo {
  readonly endpoint = join(packageRoot(), 'dist', 'src', 'sandbox', 'endpoint.js');
  readonly work: string;
  readonly logFile: string;
  readonly clusterPath: string;
  readonly stateDir: string;
  sandbox?: Sandbox;
  /** step 1 in flight, settled (never rejects) */
  building?: Promise<void>;
  removeSandboxHandlers?: () => void;
  agent?: Agent;
  proxy?: ChildProcess;
  proxyLog?: LineLog;
  productpage?: SandboxPod;
  ratings?: SandboxPod;
  /** the signal that interrupted the demo */
  abort?: NodeJS.Signals;
  readonly surprises: string[] = [];
  private lockHeld = false;
  private syncDone = false;

  constructor(readonly keep: boolean) {
    this.work = mkdtempSync(join(tmpdir(), 'meshlane-demo-'));
    this.logFile = `${this.work}.log`;
    this.clusterPath = join(this.work, 'cluster.json');
    this.stateDir = join(this.work, 'state');
  }

  say(text = ''): void {
    if (this.abort) return;
    process.stdout.write(`${text}\n`);
  }

  step(n: number, text: string): void {
    this.say(`[${n}/${STEPS}] ${text}`);
  }

  checkpoint(): void {
    if (this.abort) throw new Aborted(this.abort);
  }

  lock(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(LOCK_FILE, 'wx');
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.lockHeld = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const pid = Number(readFileSync(LOCK_FILE, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new UserError(`another meshlane demo is running (pid ${pid}); wait for it or stop it (lock file ${LOCK_FILE})`);
      }
      rmSync(LOCK_FILE, { force: true }); // left by a demo that was killed
    }
    throw new UserError(`cannot take the demo lock ${LOCK_FILE}`);
  }

  /**
   * The synchronous part of the cleanup, safe in a signal handler and on 'exit': stop the agent, unpin the
   * programs and maps, remove the temp dir (unless keep), release the lock. Idempotent. Returns the errors.
   */
  cleanupSync(): string[] {
    if (this.syncDone) return [];
    this.syncDone = true;
    const errors: string[] = [];
    if (this.agent) void this.agent.stop(); // synchronous inside: timers, file watcher, map/program fds
    try {
      uninstall(DEMO_BPFFS);
    } catch (e) {
      errors.push((e as Error).message);
    }
    if (!this.keep) rmSync(this.work, { recursive: true, force: true });
    if (this.lockHeld) {
      try {
        unlinkSync(LOCK_FILE);
      } catch {
        /* gone */
      }
      this.lockHeld = false;
    }
    return errors;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

const hostPort = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

function writeClusterFile(d: Demo, excludeVip: boolean): void {
  const tmp = `${d.clusterPath}.tmp`;
  writeFileSync(tmp, clusterFile({ excludeVip }));
  renameSync(tmp, d.clusterPath); // the agent never sees a half-written file
}

function podStatus(st: AgentStatus | undefined, uid: string): PodStatus | undefined {
  return st?.pods.find((p) => p.ref.uid === uid);
}

// ---- the steps ------------------------------------------------------------------------------------------

async function buildNode(d: Demo): Promise<void> {
  d.step(1, `sandbox node "${DEMO_PREFIX}": network namespaces on a bridge (10.244.0.0/24, fd00:244::/64), kubelet cgroup layout (systemd driver)`);
  const sb = await Sandbox.create({ prefix: DEMO_PREFIX, cgroupDriver: 'systemd' });
  d.sandbox = sb;
  d.checkpoint();

  const svc = await sb.addHost('reviews', { ipv4: SERVICE.ipv4, ipv6: SERVICE.ipv6, extraV4: [SERVICE.vip4], extraV6: [SERVICE.vip6] });
  const server = svc.spawn(process.execPath, [d.endpoint, 'serve', '--ports', String(SERVICE.port), '--tag', SERVICE.name]);
  const serverReady = waitReady(server, new LineLog(server), 'the reviews server');
  d.checkpoint();

  const pp = await sb.addPod({
    namespace: PRODUCTPAGE.namespace,
    name: PRODUCTPAGE.name,
    uid: PRODUCTPAGE.uid,
    ipv4: PRODUCTPAGE.ipv4,
    ipv6: PRODUCTPAGE.ipv6,
  });
  d.productpage = pp;
  const proxy = pp.spawn(process.execPath, [d.endpoint, 'proxy', '--outbound', String(OUTBOUND_PORT), '--inbound', String(INBOUND_PORT), '--forward'], {
    uid: PROXY_UID,
    gid: PROXY_UID,
    container: 'istio-proxy',
  });
  d.proxy = proxy;
  d.proxyLog = new LineLog(proxy);
  const proxyReady = waitReady(proxy, d.proxyLog, 'the productpage proxy');
  d.checkpoint();

  d.ratings = await sb.addPod({ namespace: RATINGS.namespace, name: RATINGS.name, uid: RATINGS.uid, ipv4: RATINGS.ipv4, ipv6: RATINGS.ipv6 });
  await Promise.all([serverReady, proxyReady]);
  d.checkpoint();
  // Only now, with no sandbox command in flight: an interrupt during the build waits for the command that
  // runs (the build stops at its next checkpoint), so teardown never races a netns that is being made.
  d.removeSandboxHandlers = installCleanupHandlers(sb);

  d.say(`      service "${SERVICE.name}": VIP ${SERVICE.vip4} and [${SERVICE.vip6}] port ${SERVICE.port}, on host netns ${svc.netns}`);
  d.say(
    `      pod ${PRODUCTPAGE.namespace}/${PRODUCTPAGE.name} ${PRODUCTPAGE.ipv4} ${PRODUCTPAGE.ipv6} (netns ${pp.netns}): app container (uid ${APP_UID}) + proxy (uid ${PROXY_UID}) on ${OUTBOUND_PORT}/${INBOUND_PORT}, forwarding to SO_ORIGINAL_DST like Envoy`,
  );
  d.say(
    `      pod ${RATINGS.namespace}/${RATINGS.name} ${RATINGS.ipv4} ${RATINGS.ipv6} (netns ${d.ratings.netns}): no sidecar; namespace "${RATINGS.namespace}" is not labelled for injection`,
  );
}

async function startAgent(d: Demo): Promise<void> {
  const sb = d.sandbox!;
  d.step(2, `agent (in this process) on a cluster file: namespace "${PRODUCTPAGE.namespace}" labelled istio-injection=enabled, "${RATINGS.namespace}" not`);
  writeClusterFile(d, false);
  if (existsSync(DEMO_BPFFS)) {
    const removed = uninstall(DEMO_BPFFS);
    d.say(`      removed ${removed.length} pins an earlier demo left under ${DEMO_BPFFS}`);
  }
  const log = pino({ level: 'debug', base: { app: 'meshlane' } }, pino.destination({ dest: d.logFile, sync: true }));
  d.agent = new Agent({
    source: new ClusterFileSourceAdapter(d.clusterPath, NODE_NAME),
    cgroupRoot: sb.cgroupRoot,
    bpffs: DEMO_BPFFS,
    stateDir: d.stateDir,
    nodeName: NODE_NAME,
    log,
  });
  await d.agent.start();
  d.checkpoint();
  const st = await waitFor(`the agent to capture ${PRODUCTPAGE.namespace}/${PRODUCTPAGE.name}`, 10_000, () => {
    const s = readStatus(d.stateDir);
    return podStatus(s, PRODUCTPAGE.uid)?.state === 'captured' ? s : undefined;
  });
  const pins = listPins(DEMO_BPFFS);
  const pp = podStatus(st, PRODUCTPAGE.uid)!;
  d.say(`      programs attached to cgroup ${sb.cgroupRoot} (${pins.links.length} links pinned under ${DEMO_BPFFS})`);
  d.say(`      ${PRODUCTPAGE.namespace}/${PRODUCTPAGE.name}: captured (netns cookie ${pp.netnsCookie}, pod id ${pp.podId})`);
  for (const s of st!.skipped) d.say(`      ${s.ref.namespace}/${s.ref.name}: not captured (${s.reason})`);
  const rules = await natRuleCount(d.productpage!);
  if (rules !== undefined) d.say(`      iptables nat rules in ${PRODUCTPAGE.name}'s netns: ${rules}`);
}

/** Rules (-A lines) in the pod netns's nat table; undefined when iptables-save is not there. */
async function natRuleCount(pod: SandboxPod): Promise<number | undefined> {
  try {
    const r = await pod.exec('iptables-save', ['-t', 'nat'], { timeoutMs: 5000 });
    if (r.code !== 0 && r.stdout.trim() === '') return r.stderr.includes('does not exist') ? 0 : undefined;
    return r.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
  } catch {
    return undefined;
  }
}

interface Probe {
  who: string;
  member: SandboxMember;
  as: SpawnOptions;
  to: { addr: string; port: number };
  expect: Verdict;
  why: string;
}

/** One connection: what the client got, what the proxy saw, captured or direct. */
async function probe(d: Demo, p: Probe): Promise<Verdict> {
  const log = d.proxyLog!;
  const target = hostPort(p.to.addr, p.to.port);
  const from = log.lines.length;
  const r: ConnectResult = await connectFrom(p.member, d.endpoint, target, p.as);
  d.checkpoint();
  const seen = await log.wait(from, (l) => l.startsWith('{') && l.includes('"proxy-outbound"'), r.ok ? 1000 : 300);
  d.checkpoint();
  d.say(`      ${p.who} -> ${target}`);
  if (r.ok && r.reply && typeof r.reply === 'object') {
    d.say(`        client got: a reply from "${r.reply.tag}" (port ${r.reply.port}), which saw the connection come from ${r.reply.peer}`);
  } else {
    d.say(`        client got: ${r.error ?? 'no reply'}`);
  }
  let verdict: Verdict = 'direct';
  if (seen !== undefined) {
    verdict = 'captured';
    const x = JSON.parse(seen) as {
      port: number;
      peer: string;
      orig?: { address?: string; port?: number; error?: string };
      upstream?: { local: string };
      error?: string;
    };
    const orig = x.orig?.address !== undefined ? hostPort(x.orig.address, x.orig.port ?? 0) : `error ${x.orig?.error}`;
    const then = x.upstream ? `forwarded it from ${x.upstream.local}` : `could not forward it: ${x.error}`;
    d.say(`        proxy saw:  listener ${x.port}, peer ${x.peer}, SO_ORIGINAL_DST ${orig}; ${then}`);
    if (x.orig?.address !== p.to.addr || x.orig?.port !== p.to.port) d.surprises.push(`${p.who} -> ${target}: proxy read original destination ${orig}`);
  } else {
    d.say(`        proxy saw:  nothing`);
  }
  d.say(`        => ${verdict === 'captured' ? 'captured into the proxy' : 'direct, not captured'} (${p.why})`);
  if (!r.ok) d.surprises.push(`${p.who} -> ${target}: ${r.error}`);
  if (verdict !== p.expect) d.surprises.push(`${p.who} -> ${target}: ${verdict}, expected ${p.expect}`);
  return verdict;
}

async function connections(d: Demo): Promise<void> {
  const pp = d.productpage!;
  d.step(3, 'connections');
  const app: SpawnOptions = { uid: APP_UID, gid: APP_UID, container: 'app' };
  await probe(d, {
    who: `${PRODUCTPAGE.name} app (uid ${APP_UID})`,
    member: pp,
    as: app,
    to: { addr: SERVICE.vip4, port: SERVICE.port },
    expect: 'captured',
    why: "the app's outbound TCP goes to the proxy's 15001",
  });
  await probe(d, {
    who: `${PRODUCTPAGE.name} app (uid ${APP_UID})`,
    member: pp,
    as: app,
    to: { addr: SERVICE.vip6, port: SERVICE.port },
    expect: 'captured',
    why: 'IPv6 too',
  });
  await probe(d, {
    who: `${PRODUCTPAGE.name} proxy (uid ${PROXY_UID})`,
    member: pp,
    as: { uid: PROXY_UID, gid: PROXY_UID, container: 'istio-proxy' },
    to: { addr: SERVICE.vip4, port: SERVICE.port },
    expect: 'direct',
    why: "the proxy's own traffic is never captured",
  });
  await probe(d, {
    who: `${RATINGS.name} app (uid ${APP_UID}, namespace ${RATINGS.namespace})`,
    member: d.ratings!,
    as: app,
    to: { addr: SERVICE.vip4, port: SERVICE.port },
    expect: 'direct',
    why: 'a pod meshlane does not capture is untouched',
  });
}

function indent(text: string, by: string): string {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => by + l)
    .join('\n');
}

function dumpAndStatus(d: Demo): void {
  d.step(4, `meshlane dump --bpffs ${DEMO_BPFFS}`);
  const pins = listPins(DEMO_BPFFS);
  const pinned = new PinnedMaps(DEMO_BPFFS);
  try {
    d.say(indent(`links: ${pins.links.join(', ') || '(none)'}\n${renderDump(describeMaps(pinned.maps))}`, '      '));
  } finally {
    pinned.close();
  }
  d.say(`      meshlane status:`);
  d.say(indent(statusLines(readStatus(d.stateDir), pins.links.length).join('\n'), '        '));
}

/** A compact `meshlane status`. */
function statusLines(st: AgentStatus | undefined, links: number): string[] {
  const out = [`capture: ${links ? `active (${links} programs linked under ${DEMO_BPFFS})` : 'not installed'}`];
  if (!st) return [...out, 'agent: no status yet'];
  out.push(`agent: running in this process (pid ${st.pid}); source: ${st.source}`);
  return [...out, ...podStatusLines(st)];
}

async function flip(d: Demo): Promise<void> {
  const pp = d.productpage!;
  d.step(5, `flip: annotate ${PRODUCTPAGE.name} with ${EXCLUDE_ANNOTATION}: ${EXCLUDE_RANGE}`);
  writeClusterFile(d, true);
  const [addr, prefix] = EXCLUDE_RANGE.split('/');
  const p = await waitFor('the agent to apply the annotation', 10_000, () => {
    const s = podStatus(readStatus(d.stateDir), PRODUCTPAGE.uid);
    return s?.state === 'captured' && s.settings.outboundExclude.some((c) => c.addr === addr && String(c.prefix) === prefix) ? s : undefined;
  });
  d.say(`      agent applied it: ${settingsLine(p.settings)}`);
  const app: SpawnOptions = { uid: APP_UID, gid: APP_UID, container: 'app' };
  await probe(d, {
    who: `${PRODUCTPAGE.name} app (uid ${APP_UID})`,
    member: pp,
    as: app,
    to: { addr: SERVICE.vip4, port: SERVICE.port },
    expect: 'direct',
    why: `${SERVICE.vip4} is in the excluded ${EXCLUDE_RANGE}`,
  });
  await probe(d, {
    who: `${PRODUCTPAGE.name} app (uid ${APP_UID})`,
    member: pp,
    as: app,
    to: { addr: SERVICE.vip6, port: SERVICE.port },
    expect: 'captured',
    why: 'the excluded range is IPv4 only',
  });
}

// ---- run ------------------------------------------------------------------------------------------------

export async function runDemo(opts: DemoOptions = {}): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UserError('meshlane demo needs root (it makes network namespaces and cgroups and loads BPF programs): run it with sudo');
  }
  const d = new Demo(opts.keep === true);
  if (!existsSync(d.endpoint)) {
    rmSync(d.work, { recursive: true, force: true });
    throw new UserError(`the sandbox endpoint is not built (${d.endpoint}): run 'npx tsc -p tsconfig.json' first`);
  }
  try {
    d.lock();
  } catch (e) {
    rmSync(d.work, { recursive: true, force: true });
    throw e;
  }

  // Ctrl-C / SIGTERM: unpin and stop the agent at once (synchronously), then wait for the sandbox to go and
  // die of the same signal. installCleanupHandlers(sandbox) does the sandbox half once the sandbox exists.
  const onSignal = (sig: NodeJS.Signals): void => {
    if (d.abort) return;
    d.abort = sig;
    process.stdout.write(`\ninterrupted (${sig}): cleaning up${existsSync(d.logFile) ? ` (agent log: ${d.logFile})` : ''}\n`);
    d.cleanupSync();
    void (async () => {
      if (!d.removeSandboxHandlers) await d.building;
      await d.sandbox?.destroy();
      d.removeSandboxHandlers?.();
      removeOwnHandlers();
      process.kill(process.pid, sig);
    })();
  };
  const onExit = (): void => {
    d.cleanupSync();
    if (!d.removeSandboxHandlers) d.sandbox?.destroySync(); // else the sandbox's own exit handler does
  };
  const removeOwnHandlers = onTermination(onSignal, onExit);

  const started = Date.now();
  d.say("meshlane demo: a pod's outbound traffic captured into its sidecar proxy with eBPF, not one iptables rule.");
  let failure: unknown;
  try {
    d.building = buildNode(d).then(
      () => undefined,
      (e: unknown) => {
        failure = e;
      },
    );
    await d.building;
    if (failure !== undefined) throw failure;
    await startAgent(d);
    await connections(d);
    d.checkpoint();
    dumpAndStatus(d);
    await flip(d);
    d.checkpoint();
  } catch (e) {
    failure = e;
  }
  if (d.abort) {
    // the signal path cleans up and re-raises the signal; nothing more to say here
    await new Promise(() => {});
  }

  const errors = d.cleanupSync();
  const destroyErrors = (await d.sandbox?.destroy()) ?? [];
  d.removeSandboxHandlers?.();
  removeOwnHandlers();
  errors.push(...destroyErrors);
  d.step(
    6,
    `cleanup: agent stopped, pins under ${DEMO_BPFFS} removed, sandbox ${DEMO_PREFIX} destroyed${errors.length ? ` (with errors: ${errors.join('; ')})` : ''}`,
  );
  d.say(`agent log: ${d.logFile}${d.keep ? `; cluster file and status kept in ${d.work}` : ''}`);
  if (failure !== undefined) {
    const msg = failure instanceof Error ? failure.message : String(failure);
    throw new UserError(`demo failed: ${msg} (agent log: ${d.logFile})`, { cause: failure });
  }
  if (d.surprises.length > 0) throw new UserError(`demo: not what meshlane promises: ${d.surprises.join('; ')} (agent log: ${d.logFile})`);
  if (errors.length > 0) throw new UserError(`demo: cleanup incomplete: ${errors.join('; ')}`);
  d.say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
