// meshlane-cni, the built static executable, run exactly as a container runtime runs a chained plugin
// (CNI_* environment, the config with prevResult on stdin; SPEC.md, Section 2) against a network namespace
// this test made, with a CniServer in this process whose handler is a fake: the agent up, down, slow,
// failing, stopping; the socket's permissions against uid 1000; the server refusing paths it must not use.
//
// Root: `ip netns add` (names mlcni-<pid>-*, removed in after(), also on failure), setpriv.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniServer, type CniHandler } from '../../src/cni/server.js';
import { CniCode, CniError, type CniAddRequest, type CniCheckRequest, type CniDelRequest } from '../../src/cni/protocol.js';
import { builtPlugin } from '../../src/cni/install.js';
import { UserError } from '../../src/util/errors.js';

const NETNS_PREFIX = `mlcni-${process.pid}-`;
const NETNS = `${NETNS_PREFIX}pod`;
const NETNS_PATH = `/var/run/netns/${NETNS}`;
const POD_UID = '6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10';
const CONTAINER_ID = '7c1e5a0e3b2d4f6a8c9b0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a';
const UNPRIVILEGED = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups'];
const PLUGIN_KILL_MS = 60_000; // a plugin run that hangs fails the test instead of hanging it

let tmp = '';
let netnsIno = 0;
const servers: CniServer[] = [];

/** What the bridge plugin returned for this pod (the CNI spec's "Add example" shape), in prevResult. */
const prevResult = (): Record<string, unknown> => ({
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '00:11:22:33:44:55' },
    { name: 'veth3243', mac: '55:44:33:22:11:11' },
    { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: NETNS_PATH },
  ],
  ips: [{ address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: { nameservers: ['10.1.0.1'] },
});

/** The config containerd passes to the plugin after bridge: the list's name and version, our entry, prevResult. */
const config = (socket: string, over: Record<string, unknown> = {}): string =>
  JSON.stringify({ cniVersion: '1.0.0', name: 'containerd-net', type: 'meshlane-cni', socket, prevResult: prevResult(), ...over });

/** The environment containerd sets for a Kubernetes pod's sandbox. */
const runtimeEnv = (command: string): Record<string, string> => ({
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
  CNI_COMMAND: command,
  CNI_CONTAINERID: CONTAINER_ID,
  CNI_NETNS: NETNS_PATH,
  CNI_IFNAME: 'eth0',
  CNI_ARGS: `K8S_POD_INFRA_CONTAINER_ID=${CONTAINER_ID};K8S_POD_UID=${POD_UID};IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1`,
  CNI_PATH: '/opt/cni/bin',
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the plugin as the runtime does: env, stdin, read stdout and the exit code. Never blocks the loop. */
function plugin(
  env: Record<string, string>,
  stdin: string | Buffer,
  opts: { unprivileged?: boolean; closeStdout?: boolean; started?: (pid: number) => void } = {},
): Promise<Run & { signal: NodeJS.Signals | null }> {
  const [cmd, ...args] = opts.unprivileged ? [...UNPRIVILEGED, builtPlugin()] : [builtPlugin()];
  return new Promise((resolve, reject) => {
    const p = spawn(cmd!, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const kill = setTimeout(() => p.kill('SIGKILL'), PLUGIN_KILL_MS);
    if (opts.closeStdout)
      p.stdout.destroy(); // a runtime that stopped reading
    else p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.stdin.on('error', () => {}); // the plugin may stop reading (input too large) before we are done
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(kill);
      resolve({ code, signal, stdout, stderr });
    });
    p.stdin.end(stdin);
    if (p.pid) opts.started?.(p.pid);
  });
}

const show = (r: Run): string => `exit ${r.code}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;

/** A failed run: non-zero exit, one CNI error result on stdout, the same on one stderr line. */
function cniError(r: Run, code: number, msg: RegExp, details?: RegExp): { cniVersion: string; code: number; msg: string; details: string } {
  assert.notEqual(r.code, 0, show(r));
  let e: { cniVersion: string; code: number; msg: string; details: string };
  try {
    e = JSON.parse(r.stdout) as typeof e;
  } catch {
    assert.fail(`stdout is not one CNI error result:\n${show(r)}`);
  }
  assert.deepEqual(Object.keys(e).sort(), ['cniVersion', 'code', 'details', 'msg'], show(r));
  assert.equal(e.code, code, show(r));
  assert.match(e.msg, msg, show(r));
  if (details) assert.match(e.details, details, show(r));
  assert.match(r.stderr, /^meshlane-cni: /, show(r));
  return e;
}

/** Records what the agent was asked; each test sets the behaviour it needs. */
class FakeHandler implements CniHandler {
  adds: CniAddRequest[] = [];
  checks: CniCheckRequest[] = [];
  dels: CniDelRequest[] = [];
  aborted: string[] = [];
  netnsInos: number[] = [];
  onAdd: (req: CniAddRequest, signal: AbortSignal) => Promise<void> = async () => {};
  onDel: (req: CniDelRequest) => Promise<void> = async () => {};

  async add(req: CniAddRequest, signal: AbortSignal): Promise<{ result: CniAddRequest['prevResult'] }> {
    this.adds.push(req);
    this.netnsInos.push(statSync(req.netns).ino); // the namespace the runtime named, as the agent would open it
    signal.addEventListener('abort', () => this.aborted.push(String((signal.reason as Error)?.message ?? signal.reason)));
    await this.onAdd(req, signal);
    return { result: req.prevResult };
  }
  async check(req: CniCheckRequest): Promise<{ ok: true }> {
    this.checks.push(req);
    return { ok: true };
  }
  async del(req: CniDelRequest): Promise<void> {
    this.dels.push(req);
    await this.onDel(req);
  }
}

async function serve(h: CniHandler, opts: { dir?: string; handlerTimeoutMs?: number } = {}): Promise<{ server: CniServer; socket: string }> {
  const dir = opts.dir ?? mkdtempSync(join(tmp, 'srv-'));
  const socket = join(dir, 'run', 'cni.sock');
  if (opts.dir) mkdirSync(join(dir, 'run'), { recursive: true, mode: 0o755 });
  const server = await CniServer.listen({ socketPath: socket, handler: h, handlerTimeoutMs: opts.handlerTimeoutMs });
  servers.push(server);
  return { server, socket };
}

function removeOurNetns(all: boolean): void {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const l of r.stdout.split('\n')) {
    const name = l.split(' ')[0];
    if (name && (all ? name.startsWith('mlcni-') : name.startsWith(NETNS_PREFIX))) spawnSync('ip', ['netns', 'del', name]);
  }
}

before(() => {
  assert.ok(existsSync(builtPlugin()), `${builtPlugin()} is not built: run scripts/setup.sh`);
  removeOurNetns(true); // left by an earlier run of this file that was killed
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-cni-plugin-'));
  chmodSync(tmp, 0o755); // uid 1000 must reach the socket to be refused by the socket itself
  const r = spawnSync('ip', ['netns', 'add', NETNS], { encoding: 'utf8' });
  assert.equal(r.status, 0, `ip netns add: ${r.stderr}`);
  netnsIno = statSync(NETNS_PATH).ino;
});

after(async () => {
  for (const s of servers) await s.close();
  removeOurNetns(false);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!left.includes(NETNS_PREFIX), `netns left behind:\n${left}`);
});

// ---------------------------------------------------------------------------------------------------

test('the executable is static: no program interpreter, no dynamic section', () => {
  const elf = readFileSync(builtPlugin());
  assert.equal(elf.subarray(0, 4).toString('latin1'), '\x7fELF');
  assert.equal(elf[4], 2, 'ELF64');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const PT_DYNAMIC = 2;
  const PT_INTERP = 3;
  const types = Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * phentsize));
  assert.ok(types.length > 0);
  assert.ok(!types.includes(PT_INTERP), 'has PT_INTERP: dynamically linked');
  assert.ok(!types.includes(PT_DYNAMIC), 'has PT_DYNAMIC: dynamically linked');
});

test('VERSION: answered by the plugin itself, no agent needed, in the version asked', async () => {
  for (const v of ['1.0.0', '0.4.0']) {
    const r = await plugin({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: v }));
    assert.equal(r.code, 0, show(r));
    assert.deepEqual(JSON.parse(r.stdout), { cniVersion: v, supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] });
  }
});

test('ADD, CHECK, DEL with the agent up: ADD returns the prevResult once the agent is done; the agent saw the pod and its netns', async () => {
  const h = new FakeHandler();
  let released = false;
  h.onAdd = async () => {
    await new Promise((r) => setTimeout(r, 200)); // the agent enrolls the netns before it answers
    released = true;
  };
  const { server, socket } = await serve(h);
  // the socket is root's alone: 0600 (its directory, made by the server, is 0755: the socket's mode protects it)
  assert.equal(lstatSync(socket).mode & 0o777, 0o600);
  assert.equal(statSync(join(socket, '..')).mode & 0o777, 0o755);

  const add = await plugin(runtimeEnv('ADD'), config(socket));
  assert.equal(add.code, 0, show(add));
  assert.ok(released, 'the plugin returned before the agent was done');
  assert.deepEqual(JSON.parse(add.stdout), prevResult(), "the prevResult, passed through, in the config's cniVersion");
  assert.equal(h.adds.length, 1);
  const req = h.adds[0]!;
  assert.deepEqual(req.pod, { namespace: 'shop', name: 'web-1', uid: POD_UID, infraContainerId: CONTAINER_ID });
  assert.equal(req.netns, NETNS_PATH);
  assert.deepEqual(h.netnsInos, [netnsIno], 'the agent opened the namespace this test made');
  assert.equal(req.containerId, CONTAINER_ID);
  assert.equal(req.ifname, 'eth0');
  assert.equal(req.cniPath, '/opt/cni/bin');

  const check = await plugin(runtimeEnv('CHECK'), config(socket));
  assert.equal(check.code, 0, show(check));
  assert.equal(check.stdout, '', 'CHECK prints nothing on success');
  assert.equal(h.checks.length, 1);

  const del = await plugin(runtimeEnv('DEL'), config(socket));
  assert.equal(del.code, 0, show(del));
  assert.equal(del.stdout, '');
  assert.equal(h.dels[0]?.pod?.name, 'web-1');

  // the runtime's version: a 0.4.0 chain gets a 0.4.0 result
  const add04 = await plugin(runtimeEnv('ADD'), config(socket, { cniVersion: '0.4.0' }));
  assert.equal(add04.code, 0, show(add04));
  assert.equal((JSON.parse(add04.stdout) as { cniVersion: string }).cniVersion, '0.4.0');
  await server.close();
  assert.ok(!existsSync(socket), 'close removes the socket');
});

test("the agent refuses a pod: ADD fails with the agent's error; DEL succeeds even when the agent fails", async () => {
  const h = new FakeHandler();
  h.onAdd = async () => {
    throw new CniError(CniCode.TryAgainLater, 'pod shop/web-1 not found', 'not in the API after 10 s');
  };
  h.onDel = async () => {
    throw new Error('cannot read the maps');
  };
  const { socket } = await serve(h);
  const add = await plugin(runtimeEnv('ADD'), config(socket));
  cniError(add, CniCode.TryAgainLater, /pod shop\/web-1 not found/, /not in the API/);
  const del = await plugin(runtimeEnv('DEL'), config(socket));
  assert.equal(del.code, 0, show(del));
  assert.equal(h.dels.length, 1);
  // an exception that is not a CniError is the agent's failure, said as such
  h.onAdd = async () => {
    throw new Error('maps full');
  };
  cniError(await plugin(runtimeEnv('ADD'), config(socket)), CniCode.AgentFailure, /meshlane agent failed/, /maps full/);
});

test('the agent checks what a CNI plugin must: unsupported version, not chained, bad CNI_ARGS', async () => {
  const h = new FakeHandler();
  const { socket } = await serve(h);
  const e = cniError(await plugin(runtimeEnv('ADD'), config(socket, { cniVersion: '1.1.0' })), CniCode.IncompatibleVersion, /incompatible CNI versions/);
  assert.equal(e.cniVersion, '1.1.0');
  cniError(await plugin(runtimeEnv('ADD'), config(socket, { prevResult: undefined })), CniCode.InvalidConfig, /chained/);
  cniError(await plugin({ ...runtimeEnv('ADD'), CNI_ARGS: 'K8S_POD_NAME' }, config(socket)), CniCode.InvalidEnvironment, /CNI_ARGS/);
  // cut short: the plugin still finds the socket (and the version for an error of its own), the agent cannot decode it
  const cut = cniError(
    await plugin(runtimeEnv('ADD'), `{"socket": ${JSON.stringify(socket)}, "cniVersion": "0.4.0", "name": `),
    CniCode.DecodingFailure,
    /decode/,
  );
  assert.equal(cut.cniVersion, '1.0.0', 'the agent could not read a version: the fallback');
  assert.equal(h.adds.length, 0, 'none of these reached the handler');
});

test('agent down (no socket): ADD fails closed with a clear message; DEL and GC succeed; STATUS says unavailable', async () => {
  const socket = join(tmp, 'down', 'cni.sock');
  const add = await plugin(runtimeEnv('ADD'), config(socket));
  const e = cniError(add, CniCode.TryAgainLater, /meshlane agent unreachable/, /no such file .*meshlane agent running/);
  assert.equal(e.cniVersion, '1.0.0');
  assert.ok(e.details.includes(socket));
  cniError(await plugin(runtimeEnv('CHECK'), config(socket)), CniCode.TryAgainLater, /unreachable/);
  const del = await plugin(runtimeEnv('DEL'), config(socket));
  assert.equal(del.code, 0, show(del));
  assert.equal(del.stdout, '');
  const gc = await plugin({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, config(socket));
  assert.equal(gc.code, 0, show(gc));
  cniError(await plugin({ CNI_COMMAND: 'STATUS' }, config(socket)), CniCode.PluginUnavailable, /unreachable/);
});

test('agent died leaving its socket: the plugin says connection refused; a new server removes the stale socket and serves', async () => {
  const dir = mkdtempSync(join(tmp, 'stale-'));
  const socket = join(dir, 'cni.sock');
  // a socket nobody listens on, as a SIGKILLed agent leaves it
  const py = spawnSync('python3', ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', socket], { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  assert.ok(lstatSync(socket).isSocket());
  cniError(await plugin(runtimeEnv('ADD'), config(socket)), CniCode.TryAgainLater, /unreachable/, /connection refused/);
  const h = new FakeHandler();
  const server = await CniServer.listen({ socketPath: socket, handler: h });
  servers.push(server);
  const add = await plugin(runtimeEnv('ADD'), config(socket));
  assert.equal(add.code, 0, show(add));
  // a second server on the same path is refused: the first one is alive
  await assert.rejects(
    CniServer.listen({ socketPath: socket, handler: h }),
    (err: unknown) => err instanceof UserError && /another process serves/.test(err.message),
  );
  assert.equal((await plugin(runtimeEnv('ADD'), config(socket))).code, 0, 'the first server still serves');
});

test('a socket path that is not a socket: the plugin says so; the server refuses it and leaves it alone', async () => {
  const dir = mkdtempSync(join(tmp, 'file-'));
  const path = join(dir, 'cni.sock');
  writeFileSync(path, 'not a socket');
  cniError(await plugin(runtimeEnv('ADD'), config(path)), CniCode.TryAgainLater, /unreachable/, /not a socket/);
  await assert.rejects(
    CniServer.listen({ socketPath: path, handler: new FakeHandler() }),
    (e: unknown) => e instanceof UserError && /is not a socket/.test(e.message),
  );
  assert.equal(readFileSync(path, 'utf8'), 'not a socket');
});

test("agent slow: the plugin gives up after its timeout with a clear message, and the agent's handler is told", async () => {
  const h = new FakeHandler();
  let release: () => void = () => {};
  h.onAdd = (_req, signal) =>
    new Promise<void>((resolve) => {
      release = resolve;
      signal.addEventListener('abort', () => resolve());
    });
  const { socket } = await serve(h, { handlerTimeoutMs: 60_000 });
  const add = await plugin(runtimeEnv('ADD'), config(socket, { timeoutSeconds: 1 }));
  cniError(add, CniCode.TryAgainLater, /did not answer in time/, /within 1 s/);
  // the plugin is gone: the server aborts the handler's wait instead of enrolling a pod nobody waits for
  for (let i = 0; i < 100 && h.aborted.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  release();
  assert.equal(h.aborted.length, 1, 'the handler was not told that the plugin went away');
  assert.match(h.aborted[0]!, /closed the connection/);
  // DEL against the same slow agent still succeeds
  h.onDel = () => new Promise<void>(() => {});
  const del = await plugin(runtimeEnv('DEL'), config(socket, { timeoutSeconds: 1 }));
  assert.equal(del.code, 0, show(del));
});

test('agent slow beyond its own bound: the agent answers ADD with a timeout error before the plugin gives up', async () => {
  const h = new FakeHandler();
  h.onAdd = (_req, signal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
  const { socket } = await serve(h, { handlerTimeoutMs: 300 });
  const add = await plugin(runtimeEnv('ADD'), config(socket));
  cniError(add, CniCode.TryAgainLater, /meshlane agent timed out/, /ADD for pod shop\/web-1 did not finish within 0\.3 s/);
  assert.equal(h.aborted.length, 1, 'the handler was told its time is up');
});

test('requests are served concurrently', async () => {
  const h = new FakeHandler();
  const N = 4;
  let arrived = 0;
  let all: () => void = () => {};
  const together = new Promise<void>((r) => (all = r));
  // each ADD waits until all N are in the handler at once: a server that serves one at a time never gets there
  h.onAdd = async () => {
    if (++arrived === N) all();
    await together;
  };
  const { socket } = await serve(h);
  const runs = await Promise.all(
    Array.from({ length: N }, (_, i) => plugin({ ...runtimeEnv('ADD'), CNI_CONTAINERID: `c${i}` }, config(socket, { timeoutSeconds: 20 }))),
  );
  for (const r of runs) assert.equal(r.code, 0, show(r));
  assert.deepEqual(h.adds.map((a) => a.containerId).sort(), ['c0', 'c1', 'c2', 'c3']);
});

test('the agent stopping with ADD in flight: ADD fails (try again), the socket is gone', async () => {
  const h = new FakeHandler();
  let inHandler: () => void = () => {};
  const entered = new Promise<void>((r) => (inHandler = r));
  h.onAdd = (_req, signal) =>
    new Promise<void>((resolve) => {
      inHandler();
      signal.addEventListener('abort', () => resolve());
    });
  const { server, socket } = await serve(h);
  const running = plugin(runtimeEnv('ADD'), config(socket));
  await entered;
  await server.close();
  cniError(await running, CniCode.TryAgainLater, /unreachable|stopping/);
  assert.ok(!existsSync(socket));
});

test('the plugin stopped and continued while it waits (EINTR) still gets the answer; a closed stdout is an error, not SIGPIPE', async () => {
  const h = new FakeHandler();
  let pid = 0;
  let go: () => void = () => {};
  const answer = new Promise<void>((r) => (go = r));
  h.onAdd = () => answer;
  const { socket } = await serve(h);
  const running = plugin(runtimeEnv('ADD'), config(socket), { started: (p) => (pid = p) });
  for (let i = 0; i < 200 && h.adds.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(h.adds.length, 1, 'the request did not arrive');
  // interrupt its poll(): stop and continue it a few times, then let the agent answer
  for (let i = 0; i < 3; i++) {
    process.kill(pid, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 50));
    process.kill(pid, 'SIGCONT');
  }
  go();
  const r = await running;
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(JSON.parse(r.stdout), prevResult());

  // the runtime closed its end of stdout: the write fails with EPIPE, the plugin says so and exits 1
  h.onAdd = async () => {};
  const closed = await plugin(runtimeEnv('ADD'), config(socket), { closeStdout: true });
  assert.equal(closed.signal, null, `killed by ${closed.signal}`);
  assert.equal(closed.code, 1, show(closed));
  assert.match(closed.stderr, /writing the result to stdout: Broken pipe/);
});

test('uid 1000 cannot use the socket: the plugin says permission denied', async () => {
  const dir = mkdtempSync(join(tmp, 'perm-'));
  chmodSync(dir, 0o755);
  const h = new FakeHandler();
  const { socket } = await serve(h, { dir });
  assert.equal(statSync(join(dir, 'run')).mode & 0o777, 0o755, 'an existing directory that is not group/other writable is used as it is');
  const r = await plugin(runtimeEnv('ADD'), config(socket), { unprivileged: true });
  cniError(r, CniCode.TryAgainLater, /unreachable/, /permission denied \(only root may connect\)/);
  assert.equal(h.adds.length, 0);
  // and root can
  assert.equal((await plugin(runtimeEnv('ADD'), config(socket))).code, 0);
});

test('the server refuses a symlink at the socket path, a symlinked or foreign-writable directory', async () => {
  const dir = mkdtempSync(join(tmp, 'link-'));
  const target = join(dir, 'target');
  writeFileSync(target, 'precious');
  const link = join(dir, 'cni.sock');
  symlinkSync(target, link);
  const refused = (socketPath: string, re: RegExp): Promise<void> =>
    assert.rejects(
      CniServer.listen({ socketPath, handler: new FakeHandler() }),
      (e: unknown) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n'),
    );
  await refused(link, /is a symlink; refusing to follow it/);
  assert.ok(lstatSync(link).isSymbolicLink(), 'the symlink is left');
  assert.equal(readFileSync(target, 'utf8'), 'precious', 'its target is untouched');
  // a dangling symlink too (bind would create the socket where it points)
  const dangling = join(dir, 'dangling.sock');
  symlinkSync(join(dir, 'elsewhere.sock'), dangling);
  await refused(dangling, /symlink/);
  assert.ok(!existsSync(join(dir, 'elsewhere.sock')));
  // the directory as a symlink
  mkdirSync(join(dir, 'real'));
  symlinkSync(join(dir, 'real'), join(dir, 'linkdir'));
  await refused(join(dir, 'linkdir', 'cni.sock'), /directory\) is a symlink/);
  // a directory others may write to (they could swap the socket)
  mkdirSync(join(dir, 'open'));
  chmodSync(join(dir, 'open'), 0o777);
  await refused(join(dir, 'open', 'cni.sock'), /writable by others \(mode 0777\)/);
  assert.deepEqual(readdirSync(join(dir, 'open')), []);
  await refused('relative/cni.sock', /not absolute/);
});

test('bad invocations answered by the plugin alone: missing env, unknown command, huge stdin, bad socket/timeout fields', async () => {
  const socket = join(tmp, 'unused', 'cni.sock');
  const env = runtimeEnv('ADD');
  const { CNI_CONTAINERID: _c, CNI_NETNS: _n, ...missing } = env;
  cniError(await plugin(missing, config(socket)), CniCode.InvalidEnvironment, /\[CNI_CONTAINERID,CNI_NETNS\] missing/);
  cniError(await plugin({ ...env, CNI_COMMAND: 'ATTACH' }, config(socket)), CniCode.InvalidEnvironment, /unknown CNI_COMMAND/, /ATTACH/);
  const huge = Buffer.alloc(3 * 1024 * 1024, 0x20);
  cniError(await plugin(env, huge), CniCode.InvalidConfig, /invalid network config/, /larger than 1048576 bytes/);
  cniError(await plugin(env, config('relative.sock')), CniCode.InvalidConfig, /invalid network config/, /absolute path/);
  cniError(await plugin(env, config(socket, { timeoutSeconds: 0 })), CniCode.InvalidConfig, /invalid network config/, /timeoutSeconds/);
  cniError(await plugin(env, config(socket, { timeoutSeconds: '5' })), CniCode.InvalidConfig, /invalid network config/, /timeoutSeconds/);
  // a "socket" inside prevResult is not the config's
  const nested = JSON.stringify({
    cniVersion: '0.4.0',
    name: 'n',
    type: 'meshlane-cni',
    socket,
    prevResult: { ...prevResult(), socket: '/elsewhere', cniVersion: '9.9.9' },
  });
  const e = cniError(await plugin(env, nested), CniCode.TryAgainLater, /unreachable/);
  assert.ok(e.details.includes(socket), e.details);
  assert.equal(e.cniVersion, '0.4.0');
  // run by hand with no CNI_COMMAND: says what it is, like the CNI skel
  const about = await plugin({}, '');
  assert.equal(about.code, 0);
  assert.match(about.stderr, /CNI protocol versions supported: 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0/);
});
