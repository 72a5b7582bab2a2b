// Restarts and upgrades with no capture gap, against the real kernel, under continuous load. A captured
// pod's app (uid 1000) opens a new connection every 5 ms to a service VIP and keeps two long byte-exact
// echo streams going, all through an Envoy-like proxy (uid 1337, forwarding to SO_ORIGINAL_DST), for the
// whole of each scenario. Every scenario must end with zero failed connections, zero uncaptured ones (a
// connection the server saw that the proxy did not forward: the proxy's log of what it forwarded, source
// port by source port, against the sources the server saw) and every byte of the streams back intact;
// and connections must have been made while the new agent was starting (the window where programs are
// swapped), or the scenario proved nothing.
//
// Scenarios, in order, on one bpffs: SIGKILL + restart; SIGTERM + restart; five restarts in a row; a
// start refused because a pin has a layout version this build cannot carry (nothing changes, capture goes
// on); an upgrade to a build whose layouts changed (the test builds it: this tree copied, three maps
// changed as a developer would change them, BPF objects and TypeScript built, its lock appended and its
// own layout and migration unit tests run): `stats` gains a counter (carried as counters), `global` its
// capacity (carried by a declared copy), `pod_info` a shorter name field and `pods`, which every connect
// reads, its capacity (both refilled before any program is swapped); and the downgrade back to this
// build, which must work as the upgrade did: `global`'s newer version has this build's key and value
// layout (the newer build's unit test holds a 'state' map's layout change to that or to a size change),
// so it is copied back; the others are refilled or carried as counters. Counters keep counting up
// (exactly, across restarts of one build), the pods and their settings stay the same, the other
// version's pins are gone.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, createWriteStream, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native/addon.js';
import { BpfLink } from '../../src/native/handles.js';
import { readStatus } from '../../src/agent/status.js';
import { listPins, uninstall } from '../../src/dataplane/dataplane.js';
import { MAPS, Stat } from '../../src/dataplane/layouts.js';
import { staticPrograms } from '../../src/dataplane/programs.js';
import { packageRoot } from '../../src/util/paths.js';
import type { ConnResult, LoadResult } from '../support/load.js';
import {
  APP,
  CLI,
  POD_UID,
  SVC_V4,
  clusterList,
  destroyTopology,
  makeTopology,
  namespaceObject,
  podObject,
  startProxy,
  waitFor,
  waitReady,
  type Topology,
} from '../support/harness.js';

const BPFFS = '/sys/fs/bpf/meshlane-test-upgrade';
const LOAD = (): string => join(packageRoot(), 'dist', 'test', 'support', 'load.js');
const TRANSFER = (): string => join(packageRoot(), 'dist', 'test', 'support', 'transfer.js');
const LOAD_PORT = 9100;
const STREAM_PORT = 9000;
const INTERVAL_MS = 5;
/** load before and after the action of a scenario, so that connections straddle it */
const SETTLE_MS = 300;
const START_TIMEOUT_MS = 20_000;

const items = [namespaceObject('demo', { 'istio-injection': 'enabled' }), podObject()];

let topo: Topology | undefined;
let tmp = '';
let newer = '';
let agent: AgentProc | undefined;
/** what the setup took (reported by the first test; CI time, not a check) */
const setupNotes: string[] = [];
/** every line the proxy logged (one per connection it accepted) */
const proxyLines: Array<Record<string, unknown>> = [];

const V = { stats: MAPS.stats.version, global: MAPS.global.version, pod_info: MAPS.pod_info.version, pods: MAPS.pods.version };
const CHANGED = ['stats', 'global', 'pod_info', 'pods'] as const;
const pinOf = (map: string, version: number): string => `${map}_v${version}`;
const OLD_PINS = CHANGED.map((m) => pinOf(m, V[m]));
const NEW_PINS = CHANGED.map((m) => pinOf(m, V[m] + 1));
/** a bit of global[0].flags that no build sets or clears: set by hand, it shows whether global was carried */
const MARK = 1 << 6;
const CAPTURED_OUTBOUND = Stat.indexOf('captured_outbound');

// ---- the agents -----------------------------------------------------------------------------------

interface AgentProc {
  proc: ChildProcess;
  cli: string;
  logFile: string;
  log(): string;
}

const stateDir = (): string => join(tmp, 'state');
const clusterFile = (): string => join(tmp, 'cluster.json');

function spawnAgent(cli: string): AgentProc {
  const logFile = join(tmp, `agent-${Date.now()}.log`);
  const out = createWriteStream(logFile);
  const proc = spawn(
    process.execPath,
    [
      cli,
      'agent',
      // no metrics endpoint unless a test asks for one (a later --metrics-address wins): agents never share a port
      '--metrics-address',
      'off',
      '--cluster-file',
      clusterFile(),
      '--cgroup-root',
      topo!.sb.cgroupRoot,
      '--bpffs',
      BPFFS,
      '--state-dir',
      stateDir(),
      '--cni-socket',
      join(tmp, 'cni', 'cni.sock'),
      '--log-level',
      'debug',
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let text = '';
  for (const s of [proc.stdout, proc.stderr]) {
    s?.pipe(out);
    s?.on('data', (d: Buffer) => (text += d.toString()));
  }
  return { proc, cli, logFile, log: () => text };
}

/** Start an agent of the build whose CLI is `cli`; resolves once its start is complete (capture active). */
async function startAgent(cli = CLI()): Promise<AgentProc> {
  const a = spawnAgent(cli);
  try {
    await waitFor(
      () => {
        if (a.proc.exitCode !== null) throw new Error(`agent exited ${a.proc.exitCode}: ${a.log()}`);
        const st = readStatus(stateDir());
        return (
          st !== undefined && st.pid === a.proc.pid && st.pods.some((p) => p.ref.uid === POD_UID && p.state === 'captured') && /capture active/.test(a.log())
        );
      },
      START_TIMEOUT_MS,
      'the agent to complete its start',
    );
  } catch (e) {
    a.proc.kill('SIGKILL');
    throw e;
  }
  return a;
}

async function stopAgent(a: AgentProc | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!a || a.proc.exitCode !== null || a.proc.signalCode !== null) return;
  const exited = new Promise((r) => a.proc.once('exit', r));
  a.proc.kill(signal);
  await exited;
}

/** Stop the running agent with `signal` and start one of `cli`; returns when the new one started (and when it was spawned). */
async function restart(signal: NodeJS.Signals, cli = CLI()): Promise<{ spawned: number; active: number }> {
  await stopAgent(agent, signal);
  agent = undefined;
  const spawned = Date.now();
  agent = await startAgent(cli);
  return { spawned, active: Date.now() };
}

// ---- the load -----------------------------------------------------------------------------------

interface Outcome {
  load: LoadResult;
  /** connections the server saw that the proxy did not forward */
  uncaptured: ConnResult[];
  /** what the proxy logged as a failure (no original destination, upstream refused) */
  proxyErrors: Array<Record<string, unknown>>;
}

/** Run `act` under load; every outcome of the load, checked against what the proxy forwarded. */
async function underLoad(act: () => Promise<void>): Promise<Outcome> {
  const firstLine = proxyLines.length;
  const client = topo!.pod.spawn(
    'node',
    [
      LOAD(),
      'client',
      '--to',
      `${SVC_V4}:${LOAD_PORT}`,
      '--interval',
      String(INTERVAL_MS),
      '--streams',
      '2',
      '--stream-to',
      `${SVC_V4}:${STREAM_PORT}`,
      '--rate',
      String(1 << 20),
    ],
    { uid: APP, gid: APP, container: 'app' },
  );
  let out = '';
  client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  let err = '';
  client.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => client.once('exit', () => r()));
  try {
    await waitFor(() => out.includes('ready') || client.exitCode !== null, 10_000, 'the load client to start');
    await sleep(SETTLE_MS);
    await act();
    await sleep(SETTLE_MS);
  } finally {
    client.stdin?.end('stop\n');
    await exited;
  }
  const last = out.trim().split('\n').pop() ?? '';
  let load: LoadResult;
  try {
    load = JSON.parse(last) as LoadResult;
  } catch {
    throw new Error(`load client: no result (${out.slice(-300)} ${err.slice(-300)})`);
  }
  // the proxy's log of the scenario: wait for a line for every connection the server answered
  const okConns = load.conns.filter((c) => c.ok).length;
  const forwarded = (): Array<Record<string, unknown>> =>
    proxyLines.slice(firstLine).filter((l) => (l.orig as { port?: number } | undefined)?.port === LOAD_PORT);
  await waitFor(() => forwarded().length >= okConns, 5000, 'the proxy to log every connection it forwarded').catch(() => {});
  const sources = new Map<string, number>();
  for (const l of forwarded()) {
    const local = (l.upstream as { local?: string } | undefined)?.local;
    if (local) sources.set(local, (sources.get(local) ?? 0) + 1);
  }
  const uncaptured: ConnResult[] = [];
  for (const c of load.conns) {
    if (!c.ok || !c.peer) continue;
    const n = sources.get(c.peer) ?? 0;
    if (n === 0) uncaptured.push(c);
    else sources.set(c.peer, n - 1);
  }
  const proxyErrors = proxyLines.slice(firstLine).filter((l) => l.error !== undefined);
  return { load, uncaptured, proxyErrors };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Zero failed, zero uncaptured, every stream byte-exact, and connections made in `window`. */
function assertClean(o: Outcome, what: string, window: { from: number; to: number }): string {
  const rel = (c: ConnResult): string => `#${c.id} at ${c.t - window.from} ms of the window: ${c.error ?? c.peer}`;
  const failed = o.load.conns.filter((c) => !c.ok);
  assert.equal(failed.length, 0, `${what}: ${failed.length} of ${o.load.conns.length} connections failed: ${failed.slice(0, 5).map(rel).join('; ')}`);
  assert.equal(
    o.uncaptured.length,
    0,
    `${what}: ${o.uncaptured.length} connections reached the server without the proxy: ${o.uncaptured.slice(0, 5).map(rel).join('; ')}`,
  );
  assert.deepEqual(o.proxyErrors, [], `${what}: the proxy could not forward`);
  for (const s of o.load.streams) {
    assert.ok(s.ok, `${what}: stream ${s.id} broke: ${JSON.stringify(s)}`);
    assert.ok(s.sent > 0, `${what}: stream ${s.id} moved nothing`);
  }
  const during = o.load.conns.filter((c) => c.t >= window.from && c.t <= window.to);
  assert.ok(during.length > 0, `${what}: no connection was made while the agent was starting (${window.to - window.from} ms)`);
  const bytes = o.load.streams.reduce((n, s) => n + s.sent, 0);
  return `${what}: ${o.load.conns.length} connections (${during.length} while the agent started), ${o.load.streams.length} streams, ${bytes} bytes echoed intact, ${o.load.stopped - o.load.started} ms of load`;
}

// ---- the maps, read directly --------------------------------------------------------------------

/** The map pinned at maps/<pin>, read without any layout (it may be another build's). */
function withMap<T>(pin: string, f: (m: native.MapFd) => T): T {
  const m = native.openMap(join(BPFFS, 'maps', pin));
  try {
    return f(m);
  } finally {
    m.close();
  }
}

/** A counter of the stats map pinned as `pin`, summed over the CPUs. */
function counter(pin: string, index: number): bigint {
  return withMap(pin, (m) => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = m.lookup(key);
    assert.ok(v, `${pin}[${index}] missing`);
    let sum = 0n;
    for (let o = 0; o + 8 <= v.length; o += 8) sum += v.readBigUInt64LE(o);
    return sum;
  });
}

const globalFlags = (pin: string): number => withMap(pin, (m) => m.lookup(Buffer.alloc(4))!.readUInt32LE(0));

function setGlobalFlags(pin: string, flags: number): void {
  withMap(pin, (m) => {
    const v = m.lookup(Buffer.alloc(4))!;
    v.writeUInt32LE(flags, 0);
    m.update(Buffer.alloc(4), v);
  });
}

interface Ids {
  /** every pinned link (cgroup and sk_lookup) -> the link's own id */
  links: Record<string, number>;
  /** every pinned link -> the id of the program behind it */
  progs: Record<string, number>;
  /** every pinned map -> its id */
  maps: Record<string, number>;
}

/** The ids of every pinned link, of the program behind it, and of every pinned map. */
function ids(): Ids {
  const out: Ids = { links: {}, progs: {}, maps: {} };
  const pinned = listPins(BPFFS);
  for (const name of pinned.links) {
    const l = BpfLink.open(join(BPFFS, 'links', name));
    try {
      const info = l.info();
      out.links[name] = info.id;
      out.progs[name] = info.progId;
    } finally {
      l.close();
    }
  }
  for (const pin of pinned.maps) out.maps[pin] = withMap(pin, (m) => m.info.id);
  return out;
}

/**
 * The same links as `before` (never detached, unpinned or made again: bpf_link_update), each of them
 * with another program behind it (every program was replaced), every cgroup program of the build pinned.
 */
function assertSwapped(before: Ids, after: Ids, what: string): void {
  assert.deepEqual(after.links, before.links, `${what}: a link was detached or made again (the link ids changed)`);
  const kept = Object.keys(after.progs).filter((l) => after.progs[l] === before.progs[l]);
  assert.deepEqual(kept, [], `${what}: the programs behind these links were not replaced`);
  for (const p of staticPrograms()) if (p.attach.kind === 'cgroup') assert.ok(after.links[p.name] !== undefined, `${what}: link ${p.name} is not pinned`);
}

type Row = Record<string, unknown>;

/**
 * `meshlane dump --json` of the build whose CLI is `cli`: the pods and pod_info rows, without the pod
 * ids (a refilled pod_info gives each pod a new id, a new generation of its entries written before its
 * pods entry flips, as a settings change does; plan.ts), which must agree between the two maps.
 */
function podsOf(cli: string): { pods: Row[]; pod_info: Row[] } {
  const r = spawnSync(process.execPath, [cli, 'dump', '--json', '--bpffs', BPFFS], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const d = JSON.parse(r.stdout) as { maps: Record<string, Row[]> };
  const pods = d.maps.pods ?? [];
  const info = d.maps.pod_info ?? [];
  assert.deepEqual(pods.map((p) => p.pod_id).sort(), info.map((i) => i.pod_id).sort(), 'every pods entry has its pod_info, under the same id');
  const noId = ({ pod_id: _id, ...rest }: Row): Row => rest;
  return { pods: pods.map(noId), pod_info: info.map(noId) };
}

// ---- the newer build ------------------------------------------------------------------------------

/** Replace the one match of `re` in `file` (a patch that no longer applies fails loudly). */
function patch(file: string, re: RegExp, replace: (...m: string[]) => string): void {
  const text = readFileSync(file, 'utf8');
  const n = [...text.matchAll(new RegExp(re.source, `${re.flags.replace('g', '')}g`))].length;
  assert.equal(n, 1, `the upgrade test's change of ${file} no longer applies: ${re} matches ${n} times (update the patch in test/kernel/upgrade.test.ts)`);
  writeFileSync(
    file,
    text.replace(re, (...m: unknown[]) => replace(...(m.filter((x) => typeof x === 'string') as string[]))),
  );
}

function run(cmd: string, args: string[], cwd: string, what: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, `building the newer build: ${what} failed:\n${r.stdout}\n${r.stderr}`);
}

/**
 * This tree copied to a temp dir and changed as a developer would change three layouts (C header and
 * maps, layouts.ts with the version bumps and the migration declaration, the lock appended by
 * `layouts:lock`), then built: BPF objects, the TypeScript of src/ and of the layout and migration
 * unit tests, which must pass there too. The native addon is this tree's (it has no layouts).
 */
function buildNewer(): string {
  const root = packageRoot();
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-upgrade-build-'));
  for (const p of ['package.json', 'src', 'bpf', 'scripts/layouts-lock.mjs', 'test/unit/layouts.test.ts', 'test/unit/migrate.test.ts', 'native/index.d.ts']) {
    cpSync(join(root, p), join(dir, p), { recursive: true, filter: (src) => !src.startsWith(join(root, 'bpf', 'build')) });
  }
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  mkdirSync(join(dir, 'native'), { recursive: true });
  symlinkSync(join(root, 'native', 'build'), join(dir, 'native', 'build'));
  const tsconfig = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as { include: string[] };
  tsconfig.include = ['src/**/*.ts', 'test/unit/layouts.test.ts', 'test/unit/migrate.test.ts'];
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));

  const h = join(dir, 'bpf', 'meshlane.h');
  const maps = join(dir, 'bpf', 'maps.h');
  const ts = join(dir, 'src', 'dataplane', 'layouts.ts');
  // stats: one more counter at the end (counters are appended, never renumbered)
  patch(h, /STAT_MAX = (\d+),/, (_m, n) => `STAT_UPGRADE_PROBE = ${n}, /* the upgrade test's newer build */\n\tSTAT_MAX = ${Number(n) + 1},`);
  patch(ts, /(export const Stat = \[[\s\S]*?)(\n\] as const;)/, (_m, list, end) => `${list}\n  'upgrade_probe',${end}`);
  // ... and its metric (every stats counter has one: src/metrics/metrics.ts)
  patch(
    join(dir, 'src', 'metrics', 'metrics.ts'),
    /\n {2}refused_node_full: \{/,
    () => "\n  upgrade_probe: { metric: 'meshlane_upgrade_probe_total' },\n  refused_node_full: {",
  );
  // (layouts.ts as prettier formats it: one property a line, `[^}]*?` stays inside one map's entry)
  patch(ts, /(\n {2}stats: \{[^}]*?\n {4}version: )(\d+),/, (_m, head, v) => `${head}${Number(v) + 1},`);
  // global: twice the capacity, carried by a copy (same key and value layout)
  patch(maps, /(__uint\(max_entries, )1(\);\s*__type\(key, __u32\);\s*__type\(value, struct global_config\);)/, (_m, a, b) => `${a}2${b}`);
  let globalVersion = '';
  patch(ts, /(\n {2}global: \{[^}]*?\n {4}maxEntries: )1(,[^}]*?\n {4}version: )(\d+),/, (_m, a, b, v) => {
    globalVersion = v;
    return `${a}2${b}${Number(v) + 1},`;
  });
  // its older versions: this build's by a copy; the earlier ones' converter now says they had 1 entry
  patch(
    ts,
    /(\n {2}global: \{[^}]*?\n {4}from: \{\n)( {6}1: convertFrom\(\{ key: StatIndex, value: GlobalConfigV1) \}/,
    (_m, a, b) => `${a}      ${globalVersion}: copyFrom({ maxEntries: 1 }),\n${b}, maxEntries: 1 }`,
  );
  // pod_info: a name field of Kubernetes' own limit (253), refilled by the agent
  patch(h, /#define POD_INFO_NAME_LEN 256/, () => '#define POD_INFO_NAME_LEN 253');
  patch(ts, /name: cstr\(256\)/, () => 'name: cstr(253)');
  patch(ts, /(\n {2}pod_info: \{[^}]*?\n {4}version: )(\d+),/, (_m, head, v) => `${head}${Number(v) + 1},`);
  // pods: twice the capacity, refilled; every connect reads it, so it must be full before connect4 is swapped
  patch(
    maps,
    /(__uint\(max_entries, MESHLANE_MAX_PODS)(\);\s*__type\(key, __u64\);[^\n]*\s*__type\(value, struct pod_config\);)/,
    (_m, a, b) => `${a} * 2${b}`,
  );
  patch(ts, /(\n {2}pods: \{[^}]*?\n {4}maxEntries: MapLimits\.PODS)(,[^}]*?\n {4}version: )(\d+),/, (_m, a, b, v) => `${a} * 2${b}${Number(v) + 1},`);

  run('make', ['-s', '-C', 'bpf'], dir, 'make -C bpf');
  run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], dir, 'tsc');
  run(process.execPath, ['scripts/layouts-lock.mjs'], dir, 'layouts:lock');
  run(
    process.execPath,
    ['--test', 'dist/test/unit/layouts.test.js', 'dist/test/unit/migrate.test.js'],
    dir,
    "the newer build's layout and migration unit tests",
  );
  return dir;
}

const newerCli = (): string => join(newer, 'dist', 'src', 'cli', 'main.js');

// ---- setup --------------------------------------------------------------------------------------------

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-upgrade-'));
  const t0 = Date.now();
  newer = buildNewer();
  setupNotes.push(`the newer build: ${Date.now() - t0} ms`);
  uninstall(BPFFS); // a run that died before its cleanup
  topo = await makeTopology({ prefix: 'mlup', proxy: false });
  const proxy = startProxy(topo.pod, true);
  topo.procs.push(proxy);
  let buf = '';
  proxy.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) proxyLines.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  const loadServer = topo.svc.spawn('node', [LOAD(), 'server', '--ports', String(LOAD_PORT)]);
  const streamServer = topo.svc.spawn('node', [TRANSFER(), 'server', '--ports', String(STREAM_PORT)]);
  topo.procs.push(loadServer, streamServer);
  await Promise.all([waitReady(proxy, 'proxy'), waitReady(loadServer, 'load server'), waitReady(streamServer, 'stream server')]);
  writeFileSync(clusterFile(), clusterList(items));
  agent = await startAgent();
  setupNotes.push(`setup with the first agent: ${Date.now() - t0} ms`);
});

after(async () => {
  await stopAgent(agent, 'SIGKILL');
  try {
    uninstall(BPFFS);
  } finally {
    await destroyTopology(topo);
    rmSync(tmp, { recursive: true, force: true });
    if (newer) rmSync(newer, { recursive: true, force: true });
  }
});

/** A restart of this build under load: clean, every pin and map the same, the counters exact. */
async function restartScenario(t: TestContext, what: string, signals: NodeJS.Signals[]): Promise<void> {
  const before = ids();
  const c0 = counter(pinOf('stats', V.stats), CAPTURED_OUTBOUND);
  let window = { from: 0, to: 0 };
  const o = await underLoad(async () => {
    for (const s of signals) {
      const r = await restart(s);
      window = window.from === 0 ? { from: r.spawned, to: r.active } : { from: window.from, to: r.active };
    }
  });
  t.diagnostic(assertClean(o, what, window));
  const after = ids();
  assert.deepEqual(after.maps, before.maps, `${what}: the restarted agent must reuse every pinned map`);
  assertSwapped(before, after, what);
  const c1 = counter(pinOf('stats', V.stats), CAPTURED_OUTBOUND);
  // every connection the app attempted (and the two streams) was redirected and counted exactly once
  assert.equal(
    c1 - c0,
    BigInt(o.load.conns.length + o.load.streams.length),
    `${what}: captured_outbound counted ${c1 - c0}, the app made ${o.load.conns.length} connections and ${o.load.streams.length} streams`,
  );
  assert.match(agent!.log(), /"action":"updated"/, `${what}: the agent swapped the programs behind the pinned links`);
}

test('SIGKILL and restart under load: nothing refused, nothing uncaptured, every byte intact, every map reused', async (t) => {
  for (const n of setupNotes) t.diagnostic(n);
  await restartScenario(t, 'SIGKILL + restart', ['SIGKILL']);
});

test('SIGTERM and restart under load: SIGTERM never detaches', async (t) => {
  await restartScenario(t, 'SIGTERM + restart', ['SIGTERM']);
});

test('five restarts in a row under load (SIGTERM and SIGKILL in turn)', async (t) => {
  await restartScenario(t, 'five restarts', ['SIGTERM', 'SIGKILL', 'SIGTERM', 'SIGKILL', 'SIGTERM']);
});

test('a pinned layout version this build cannot carry: the start is refused in one line, nothing changes, capture goes on', async (t) => {
  // pins of a global version 0 (older, no migration declared for it): the pinned global renamed
  const cur = join(BPFFS, 'maps', pinOf('global', V.global));
  const odd = join(BPFFS, 'maps', pinOf('global', 0));
  await stopAgent(agent, 'SIGTERM');
  agent = undefined;
  const before = ids();
  let refused = '';
  let code: number | null = null;
  const window = { from: 0, to: 0 };
  renameSync(cur, odd);
  try {
    const o = await underLoad(async () => {
      window.from = Date.now();
      const a = spawnAgent(CLI());
      code = await new Promise<number | null>((r) => a.proc.once('close', (c) => r(c)));
      window.to = Date.now();
      refused = a.log().trim();
    });
    t.diagnostic(assertClean(o, 'a refused start', window));
  } finally {
    renameSync(odd, cur);
  }
  assert.equal(code, 2, refused);
  const lines = refused.split('\n').filter((l) => l.startsWith('meshlane:'));
  assert.equal(lines.length, 1, refused);
  assert.match(
    lines[0]!,
    new RegExp(
      `maps/global_v0 holds layout version 0 of map global, which this build \\(version ${V.global}\\) cannot carry: this build declares no migration of global from version 0`,
    ),
  );
  assert.match(lines[0]!, /nothing was changed/);
  assert.deepEqual(ids(), before, 'the refused start changed a link or a map');
  agent = await startAgent();
});

test('upgrade to a build whose map layouts changed, under load: entries carried, counters keep counting, old pins gone', async (t) => {
  const podsBefore = podsOf(CLI());
  assert.ok(Array.isArray(podsBefore.pods) && podsBefore.pods.length === 1, JSON.stringify(podsBefore));
  setGlobalFlags(pinOf('global', V.global), globalFlags(pinOf('global', V.global)) | MARK);
  const mapsBefore = listPins(BPFFS).maps;
  const idsBefore = ids();
  for (const p of OLD_PINS) assert.ok(mapsBefore.includes(p), `${p} is not pinned: ${mapsBefore.join(' ')}`);
  const c0 = counter(pinOf('stats', V.stats), CAPTURED_OUTBOUND);
  let c1 = 0n;
  let window = { from: 0, to: 0 };
  const o = await underLoad(async () => {
    await stopAgent(agent, 'SIGTERM');
    agent = undefined;
    // what the old programs counted until now (they go on counting until the new ones are swapped in)
    c1 = counter(pinOf('stats', V.stats), CAPTURED_OUTBOUND);
    const from = Date.now();
    agent = await startAgent(newerCli());
    window = { from, to: Date.now() };
  });
  t.diagnostic(assertClean(o, 'upgrade', window));
  const idsAfter = ids();
  assertSwapped(idsBefore, idsAfter, 'upgrade');
  for (const p of mapsBefore.filter((m) => !OLD_PINS.includes(m)))
    assert.equal(idsAfter.maps[p], idsBefore.maps[p], `upgrade: ${p} did not change its layout and must be reused`);
  const mapsAfter = listPins(BPFFS).maps;
  assert.deepEqual(
    mapsAfter.sort(),
    [...mapsBefore.filter((p) => !OLD_PINS.includes(p)), ...NEW_PINS].sort(),
    'the new versions pinned, the old ones gone, every other map kept',
  );
  const c2 = counter(pinOf('stats', V.stats + 1), CAPTURED_OUTBOUND);
  assert.ok(c2 > c1, `captured_outbound did not go on counting in the new map: ${c1} -> ${c2}`);
  assert.ok(c2 - c0 <= BigInt(o.load.conns.length + o.load.streams.length), `captured_outbound counted more than the app connected (${c2 - c0})`);
  assert.equal(
    withMap(pinOf('stats', V.stats + 1), (m) => m.info.maxEntries),
    Stat.length + 1,
    'the new stats map has the new counter',
  );
  assert.equal(globalFlags(pinOf('global', V.global + 1)) & MARK, MARK, 'global was not carried into its new version');
  assert.equal(
    withMap(pinOf('global', V.global + 1), (m) => m.info.maxEntries),
    2,
  );
  assert.deepEqual(podsOf(newerCli()), podsBefore, 'the pods, their settings and names are the same after the upgrade');
  const log = agent!.log();
  assert.match(log, new RegExp(`"map":"stats","action":"counters","from":"maps/${pinOf('stats', V.stats)}"`), log);
  assert.match(log, new RegExp(`"map":"global","action":"copy","from":"maps/${pinOf('global', V.global)}"`));
  assert.match(log, new RegExp(`"map":"pod_info","action":"refill","from":"maps/${pinOf('pod_info', V.pod_info)}"`));
  assert.match(log, new RegExp(`"map":"pods","action":"refill","from":"maps/${pinOf('pods', V.pods)}"`));
});

test('downgrade back to this build, under load: the newer global copied back, counters carried back, the pods refilled, the newer pins gone', async (t) => {
  const podsBefore = podsOf(newerCli());
  const mapsBefore = listPins(BPFFS).maps;
  const idsBefore = ids();
  let c1 = 0n;
  let window = { from: 0, to: 0 };
  const o = await underLoad(async () => {
    await stopAgent(agent, 'SIGTERM');
    agent = undefined;
    c1 = counter(pinOf('stats', V.stats + 1), CAPTURED_OUTBOUND);
    const from = Date.now();
    agent = await startAgent();
    window = { from, to: Date.now() };
  });
  t.diagnostic(assertClean(o, 'downgrade', window));
  assertSwapped(idsBefore, ids(), 'downgrade');
  assert.deepEqual(
    listPins(BPFFS).maps.sort(),
    [...mapsBefore.filter((p) => !NEW_PINS.includes(p)), ...OLD_PINS].sort(),
    "this build's versions pinned, the newer ones gone",
  );
  const c2 = counter(pinOf('stats', V.stats), CAPTURED_OUTBOUND);
  assert.ok(c2 > c1, `captured_outbound was not carried back: ${c1} -> ${c2}`);
  assert.deepEqual(podsOf(CLI()), podsBefore, 'the pods, their settings and names are the same after the downgrade');
  const log = agent!.log();
  assert.match(log, new RegExp(`"map":"stats","action":"counters","from":"maps/${pinOf('stats', V.stats + 1)}"`));
  assert.match(log, new RegExp(`"map":"pods","action":"refill","from":"maps/${pinOf('pods', V.pods + 1)}"`));
  assert.match(log, new RegExp(`"map":"global","action":"copy","from":"maps/${pinOf('global', V.global + 1)}"`), 'the newer global is copied back');
  assert.doesNotMatch(log, /"action":"drop"/, 'a downgrade to the previous build drops nothing');
  // the hand-set bit went up with the upgrade and comes back down with the downgrade
  assert.equal(globalFlags(pinOf('global', V.global)) & MARK, MARK, 'global was not carried back');
  assert.equal(
    withMap(pinOf('global', V.global), (m) => m.info.maxEntries),
    MAPS.global.maxEntries,
  );
});
