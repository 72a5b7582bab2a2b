// Kernel test of the native addon (native/src/*.cc) and its TypeScript handles (src/native/) against
// the fixtures in test/fixtures: handles that own their fds, errors that are instances of the classes
// of src/native/errors.ts, map ops checked against the shape cached in the handle.
// Needs root and a BPF-capable kernel. Everything it makes (cgroup, bpffs directory, pins, links,
// netns, child processes) is removed again in t.after, also when an assertion fails.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, readdirSync, readlinkSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from '../../src/native/addon.js';
import { BpfError, LoadError, VerifierError } from '../../src/native/errors.js';
import { BpfLink, BpfObject } from '../../src/native/handles.js';
import { explain } from '../../src/dataplane/dataplane.js';
import { typedMap } from '../../src/dataplane/typed-map.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { UserError } from '../../src/util/errors.js';

// uapi numbers used below
const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_ARRAY = 2;
const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18;
const BPF_CGROUP_INET4_CONNECT = 10;
const BPF_LINK_TYPE_CGROUP = 3;
const BPF_FUNC_get_netns_cookie = 122;
const BPF_NOEXIST = 1;

const root = (() => {
  for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json'))) return d;
    if (dirname(d) === d) throw new Error('no package.json above the test');
  }
})();
const fixtures = join(root, 'test', 'fixtures');
const FIXTURE = join(fixtures, 'fixture.bpf.o');
const BAD = join(fixtures, 'bad.bpf.o');
const unique = `meshlane-addon-test-${process.pid}-${Date.now().toString(36)}`;

if (!existsSync(FIXTURE) || !existsSync(BAD)) execFileSync('make', ['-C', fixtures], { stdio: 'inherit' });

/** Undo steps run last-in first-out; one failing step does not stop the others. */
function cleanup(t: TestContext): (step: () => void) => void {
  const steps: Array<() => void> = [];
  t.after(() => {
    const errors: unknown[] = [];
    for (const s of steps.reverse()) {
      try {
        s();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  });
  return (step) => steps.push(step);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}
function lpmKey(prefixlen: number, a: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(prefixlen, 0);
  Buffer.from(a.split('.').map(Number)).copy(b, 4); // address in network byte order
  return b;
}

/** `fn` throws a BpfError (of the class src/native/errors.ts defines) matching `check`. */
function throwsBpf(fn: () => unknown, check: Partial<Record<keyof LoadError, unknown>> | ((e: BpfError) => void)): BpfError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BpfError, `expected a BpfError, got ${String(caught)}`);
  const e = caught;
  assert.ok(Number.isInteger(e.errno) && e.errno > 0, 'errno is a positive integer');
  assert.equal(typeof e.code, 'string');
  assert.equal(typeof e.syscall, 'string');
  assert.ok(e.message.startsWith(e.syscall) || e instanceof VerifierError, `message names the call: ${e.message}`);
  if (typeof check === 'function') check(e);
  else for (const [k, v] of Object.entries(check)) assert.equal((e as unknown as Record<string, unknown>)[k], v, k);
  return e;
}

function openLoaded(add: (s: () => void) => void, cfg: number, reuseCounts?: native.MapFd): native.BpfObject {
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  obj.setRodata('cfg_value', u32(cfg));
  if (reuseCounts !== undefined) obj.reuseMap('counts', reuseCounts);
  obj.load();
  return obj;
}

/** Handles closed by the cleanup (close is idempotent: a test may close them earlier). */
function owned<H extends { close(): void }>(add: (s: () => void) => void, h: H): H {
  add(() => h.close());
  return h;
}

/** What fd `n` of this process is (readlink /proc/self/fd/N), or undefined when it is not open. */
function fdTarget(n: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${n}`);
  } catch {
    return undefined;
  }
}

/** A fresh directory on bpffs (mounting bpffs at /sys/fs/bpf first when it is not mounted). */
function bpffsDir(add: (s: () => void) => void): string {
  const mnt = '/sys/fs/bpf';
  if (!native.isBpffs(mnt)) {
    native.mountBpffs(mnt);
    // Unmount only what this test mounted, and only if nobody pinned anything meanwhile.
    add(() => {
      // (a fresh bpffs holds the kernel's preloaded maps.debug / progs.debug iterators)
      const left = readdirSync(mnt).filter((n) => n !== 'maps.debug' && n !== 'progs.debug');
      if (left.length === 0) execFileSync('umount', [mnt]);
    });
  }
  const dir = join(mnt, unique);
  mkdirSync(dir);
  add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A child cgroup made by this test (never the root cgroup itself). */
function testCgroup(add: (s: () => void) => void): string {
  const dir = join(cgroup2Mount(), unique);
  mkdirSync(dir);
  add(() => {
    // the child processes have exited; the kernel may need a moment to see the cgroup empty
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (e) {
        if (i >= 50 || (e as NodeJS.ErrnoException).code !== 'EBUSY') throw e;
        execFileSync('sleep', ['0.1']);
      }
    }
  });
  return dir;
}

async function loopbackServer(add: (s: () => void) => void): Promise<net.Server> {
  const server = net.createServer((s) => s.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  add(() => server.close());
  return server;
}

function portOf(server: net.Server): number {
  const a = server.address();
  assert.ok(a !== null && typeof a === 'object');
  return a.port;
}

/** Run one connect() to 127.0.0.1:port from a child process placed in `cgroup` (bounded to 10 s). */
async function connectFromCgroup(add: (s: () => void) => void, cgroup: string, port: number): Promise<void> {
  const script =
    `process.stdin.once('data', () => { const s = require('net').connect(${port}, '127.0.0.1');` +
    ` s.on('connect', () => s.end()); s.on('close', () => process.exit(0));` +
    ` s.on('error', (e) => { console.error(e.message); process.exit(1); }); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = once(child, 'exit');
  const pid = child.pid;
  assert.ok(pid !== undefined, 'child started');
  add(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
  });
  writeFileSync(join(cgroup, 'cgroup.procs'), `${pid}\n`);
  child.stdin!.end('go\n');
  const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 10_000);
  const [code] = (await exited) as [number | null];
  clearTimeout(timer);
  assert.equal(code, 0, 'the child connected');
}

function socketFd(s: net.Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert.ok(typeof fd === 'number' && fd >= 0, 'socket has an fd');
  return fd;
}

test('opens the fixture and lists its maps and programs', (t) => {
  const add = cleanup(t);
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  assert.equal(obj.path, FIXTURE);
  const maps = obj.maps();
  assert.deepEqual(
    maps.find((m) => m.name === 'counts'),
    { name: 'counts', type: BPF_MAP_TYPE_HASH, keySize: 4, valueSize: 8, maxEntries: 64 },
  );
  assert.deepEqual(
    maps.find((m) => m.name === 'cidrs'),
    { name: 'cidrs', type: BPF_MAP_TYPE_LPM_TRIE, keySize: 8, valueSize: 4, maxEntries: 64 },
  );
  const rodata = maps.find((m) => m.name.endsWith('.rodata'));
  assert.ok(rodata, 'a .rodata map');
  assert.equal(rodata.type, BPF_MAP_TYPE_ARRAY);
  assert.deepEqual(obj.programs(), [
    {
      name: 'fixture_connect4',
      section: 'cgroup/connect4',
      type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
      attachType: BPF_CGROUP_INET4_CONNECT,
    },
  ]);
  // handles exist only after load
  throwsBpf(() => obj.map('counts'), { syscall: 'BpfObject.map', code: 'ENOENT' });
  obj.close();
  throwsBpf(() => obj.maps(), { code: 'EBADF' });
  obj.close(); // idempotent
});

test('setRodata checks name and size, and the loaded .rodata holds the value', (t) => {
  const add = cleanup(t);
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  throwsBpf(() => obj.setRodata('cfg_value', Buffer.alloc(2)), { code: 'EINVAL', syscall: 'setRodata' });
  throwsBpf(() => obj.setRodata('no_such_var', u32(1)), { code: 'ENOENT', syscall: 'setRodata' });
  obj.setRodata('cfg_value', u32(0xabcd));
  obj.load();
  const rodataName = obj.maps().find((m) => m.name.endsWith('.rodata'))!.name;
  const rodata = owned(add, obj.map(rodataName));
  assert.deepEqual(rodata.lookup(u32(0)), u32(0xabcd));
  throwsBpf(() => obj.setRodata('cfg_value', u32(1)), { code: 'EBUSY' });
  throwsBpf(() => obj.load(), { code: 'EBUSY' });
  const prog = owned(add, obj.program('fixture_connect4'));
  const info = native.progInfo(prog);
  assert.equal(info.type, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
  assert.equal(info.name, 'fixture_connect4'.slice(0, 15));
  assert.match(info.tag, /^[0-9a-f]{16}$/);
});

test('handles own their fds: close() closes it, a closed handle throws EBADF, only the addon makes them', (t) => {
  const add = cleanup(t);
  const dir = owned(add, native.openPath('/'));
  assert.ok(dir instanceof native.Fd);
  const n = dir.fd;
  assert.equal(fdTarget(n), '/', 'the handle holds an open fd');
  assert.equal(dir.closed, false);
  dir.close();
  assert.equal(fdTarget(n), undefined, 'close() closed the fd');
  assert.equal(dir.closed, true);
  throwsBpf(() => dir.fd, { code: 'EBADF', errno: 9, syscall: 'Fd.fd' });
  dir.close(); // idempotent

  // a closed handle passed to a function: EBADF naming the function, before any syscall
  throwsBpf(() => native.pin(dir, '/sys/fs/bpf/never'), { code: 'EBADF', syscall: 'pin' });
  // a number where a handle belongs, and a handle made in JS: TypeErrors
  assert.throws(() => native.pin(n as unknown as native.Fd, '/sys/fs/bpf/never'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => new (native.Fd as unknown as new () => native.Fd)(), TypeError);
  assert.throws(() => native.pin(Object.create(native.Fd.prototype) as native.Fd, '/sys/fs/bpf/never'), TypeError);

  // map and program handles outlive their object; `using` closes them
  const obj = openLoaded(add, 3);
  const map = owned(add, obj.map('counts'));
  let progFd = -1;
  {
    using prog = obj.program('fixture_connect4');
    progFd = prog.fd;
    assert.match(fdTarget(progFd) ?? '', /^anon_inode:bpf-prog$/);
    obj.close();
    assert.equal(native.progInfo(prog).type, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, 'the program handle works after the object closed');
  }
  assert.equal(fdTarget(progFd), undefined, '`using` closed the program fd');
  assert.ok(map instanceof native.MapFd && map instanceof native.Fd, 'a MapFd is an Fd');
  assert.match(fdTarget(map.fd) ?? '', /^anon_inode:bpf-map$/);
  map.update(u32(1), u64(10n));
  assert.deepEqual(map.lookup(u32(1)), u64(10n));
});

test('a handle collected while open closes its fd (the finalizer is the safety net)', () => {
  // A child with --expose-gc: drop the only reference, collect, and look at the fd table. The fd
  // number may be reused once closed (Node opens /dev/null...): look for the file, not the number.
  const script = `
    const a = require(${JSON.stringify(native.addonPath)});
    const fs = require('node:fs');
    const file = ${JSON.stringify(FIXTURE)};
    const open = (n) => { try { return fs.readlinkSync('/proc/self/fd/' + n) === file; } catch { return false; } };
    const n = (() => a.openPath(file).fd)();
    const before = open(n);
    (async () => {
      for (let i = 0; i < 50 && open(n); i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
      process.stdout.write(JSON.stringify({ before, after: open(n) }));
    })();`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { before: true, after: false }, 'open before the collection, closed after');
});

test('errors are instances of the classes TypeScript passed in', (t) => {
  const add = cleanup(t);
  const missing = '/nonexistent/meshlane/x.bpf.o';
  // a failed syscall: BpfError
  const e = throwsBpf(() => native.objGet(missing), { code: 'ENOENT', errno: 2, syscall: 'bpf_obj_get', path: missing });
  assert.ok(!(e instanceof LoadError));
  assert.equal(e.name, 'BpfError');
  // a failed open of an object: LoadError with libbpf's log, raw from the addon
  const le = throwsBpf(() => new native.BpfObject(missing), { code: 'ENOENT', syscall: 'bpf_object__open_file', path: missing });
  assert.ok(le instanceof LoadError && !(le instanceof VerifierError));
  assert.match(le.log, /libbpf: elf: failed to open \/nonexistent\/meshlane\/x\.bpf\.o: No such file or directory/);
  // the TS wrapper adds what libbpf said to the message
  const we = throwsBpf(() => new BpfObject(missing), { code: 'ENOENT' });
  assert.ok(we instanceof LoadError && !(we instanceof VerifierError));
  assert.match(we.message, /: elf: failed to open \/nonexistent\/meshlane\/x\.bpf\.o: No such file or directory$/);
  // not an ELF file: libbpf's own errno, named
  const notElf = throwsBpf(() => new BpfObject(join(root, 'package.json')), { code: 'LIBBPF_ERRNO__FORMAT', errno: 4001 });
  assert.match(notElf.message, /is not a proper ELF object$/);
  // argument types stay TypeErrors
  assert.throws(() => native.openPath(42 as unknown as string), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  // a missing program: a BpfError ENOENT, not a load failure (explain() leaves it alone)
  const obj = openLoaded(add, 0);
  const noProg = throwsBpf(() => obj.program('nope'), { code: 'ENOENT', syscall: 'BpfObject.program', program: 'nope' });
  assert.ok(!(noProg instanceof LoadError));
  assert.equal(explain(noProg, 'loading'), noProg, 'an ENOENT is not explained as a verifier refusal');
});

test('map ops: round trip, sizes checked against the shape cached in the handle', (t) => {
  const add = cleanup(t);
  const obj = openLoaded(add, 0);
  const counts = owned(add, obj.map('counts'));
  const cidrs = owned(add, obj.map('cidrs'));

  assert.deepEqual(counts.info, { id: counts.info.id, name: 'counts', type: BPF_MAP_TYPE_HASH, keySize: 4, valueSize: 8, maxEntries: 64, flags: 0 });
  assert.equal(counts.valueBytes, 8);
  assert.equal(counts.lookup(u32(1)), null);
  for (let i = 1; i <= 40; i++) counts.update(u32(i), u64(BigInt(i * 100)));
  assert.deepEqual(counts.lookup(u32(7)), u64(700n));
  throwsBpf(() => counts.update(u32(7), u64(1n), BPF_NOEXIST), { code: 'EEXIST', syscall: 'bpf_map_update_elem', map: 'counts' });
  assert.equal(counts.delete(u32(7)), true);
  assert.equal(counts.delete(u32(7)), false);
  assert.equal(counts.lookup(u32(7)), null);

  const keys = counts
    .keys()
    .map((k) => k.readUInt32LE(0))
    .sort((a, b) => a - b);
  assert.deepEqual(
    keys,
    [...Array(40).keys()].map((i) => i + 1).filter((i) => i !== 7),
  );
  const entries = counts.entries(); // batch lookup on a hash map
  assert.equal(entries.length, 39);
  for (const [k, v] of entries) assert.equal(v.readBigUInt64LE(0), BigInt(k.readUInt32LE(0) * 100));

  // LPM trie: longest prefix wins; entries() falls back to a key walk (no batch ops on LPM)
  cidrs.update(lpmKey(8, '10.0.0.0'), u32(8));
  cidrs.update(lpmKey(24, '10.1.2.0'), u32(24));
  assert.deepEqual(cidrs.lookup(lpmKey(32, '10.1.2.3')), u32(24));
  assert.deepEqual(cidrs.lookup(lpmKey(32, '10.9.9.9')), u32(8));
  assert.equal(cidrs.lookup(lpmKey(32, '192.168.0.1')), null);
  const lpm = cidrs.entries().map(([k, v]) => [k.readUInt32LE(0), v.readUInt32LE(0)]);
  assert.deepEqual(
    lpm.sort((a, b) => a[0]! - b[0]!),
    [
      [8, 8],
      [24, 24],
    ],
  );
  assert.equal(cidrs.keys().length, 2);
  assert.equal(cidrs.delete(lpmKey(24, '10.1.2.0')), true);
  assert.deepEqual(cidrs.lookup(lpmKey(32, '10.1.2.3')), u32(8));
});

test('map ops of the wrong size throw before any syscall, and a right-sized op makes only its own', (t) => {
  const add = cleanup(t);
  const obj = openLoaded(add, 0);
  const counts = obj.map('counts');
  let closedUnder = false;
  add(() => {
    if (!closedUnder) counts.close();
  });
  // Take the fd away under the handle: from here every syscall on it fails with EBADF. A size check
  // that answers EINVAL therefore made no syscall, and an op that fails with EBADF names its own
  // syscall (no bpf_obj_get_info_by_fd before it). All synchronous: nothing can reuse the fd number.
  closeSync(counts.fd);
  closedUnder = true;
  throwsBpf(() => counts.lookup(Buffer.alloc(3)), { code: 'EINVAL', syscall: 'bpf_map_lookup_elem', map: 'counts' });
  throwsBpf(() => counts.update(u32(1), Buffer.alloc(4)), { code: 'EINVAL', syscall: 'bpf_map_update_elem' });
  throwsBpf(() => counts.update(Buffer.alloc(8), u64(1n)), { code: 'EINVAL', syscall: 'bpf_map_update_elem' });
  throwsBpf(() => counts.delete(Buffer.alloc(5)), { code: 'EINVAL', syscall: 'bpf_map_delete_elem' });
  throwsBpf(() => counts.lookup(u32(1)), { code: 'EBADF', syscall: 'bpf_map_lookup_elem' });
  throwsBpf(() => counts.update(u32(1), u64(1n)), { code: 'EBADF', syscall: 'bpf_map_update_elem' });
  throwsBpf(() => counts.keys(), { code: 'EBADF', syscall: 'bpf_map_get_next_key' });
  assert.equal(counts.info.keySize, 4, 'the shape is the cached one');
  // the handle still owns the (now stale) fd number: its close() says so
  throwsBpf(() => counts.close(), { code: 'EBADF', syscall: 'close' });
  assert.equal(counts.closed, true);
  throwsBpf(() => counts.lookup(u32(1)), { code: 'EBADF', syscall: 'bpf_map_lookup_elem' });

  // a TypedMap checks the layout's sizes against the handle once, at creation
  const other = owned(add, obj.map('counts'));
  assert.throws(() => typedMap('pods', other), /map pods: key\/value 4\/8 bytes, layouts.ts says 8\//);
  assert.equal(other.closed, false, 'a refused handle stays with the caller');
});

test("reuseMap makes a second object share the first one's map", (t) => {
  const add = cleanup(t);
  const a = openLoaded(add, 1);
  const aCounts = owned(add, a.map('counts'));
  const b = openLoaded(add, 2, aCounts);
  const bCounts = owned(add, b.map('counts'));
  assert.equal(bCounts.info.id, aCounts.info.id);
  assert.notEqual(owned(add, b.map('cidrs')).info.id, owned(add, a.map('cidrs')).info.id);
  aCounts.update(u32(5), u64(55n));
  assert.deepEqual(bCounts.lookup(u32(5)), u64(55n));

  const c = new native.BpfObject(FIXTURE);
  add(() => c.close());
  throwsBpf(() => c.reuseMap('no_such_map', aCounts), { code: 'ENOENT', map: 'no_such_map' });
  const closed = a.map('counts');
  closed.close();
  throwsBpf(() => c.reuseMap('counts', closed), { code: 'EBADF', syscall: 'BpfObject.reuseMap' });
});

test('pin, objGet and openMap under a fresh bpffs directory', (t) => {
  const add = cleanup(t);
  const dir = bpffsDir(add);
  assert.equal(native.isBpffs(dir), true);
  assert.equal(native.isBpffs('/proc'), false);
  const obj = openLoaded(add, 0);
  const counts = owned(add, obj.map('counts'));
  const pinPath = join(dir, 'counts');
  native.pin(counts, pinPath);
  const pinned = owned(add, native.openMap(pinPath));
  assert.deepEqual(pinned.info, counts.info);
  throwsBpf(() => native.pin(counts, pinPath), { code: 'EEXIST', path: pinPath });
  throwsBpf(() => native.objGet(join(dir, 'missing')), { code: 'ENOENT', syscall: 'bpf_obj_get' });
  throwsBpf(() => native.openMap(join(dir, 'missing')), { code: 'ENOENT', syscall: 'bpf_obj_get' });
  // a pin that is not a map is no MapFd
  const progPin = join(dir, 'prog');
  native.pin(owned(add, obj.program('fixture_connect4')), progPin);
  throwsBpf(
    () => native.openMap(progPin),
    (e) => {
      assert.equal(e.code, 'EINVAL');
      assert.match(e.message, /is not a BPF map \(anon_inode:bpf-prog\)/);
    },
  );
  const prog = owned(add, native.objGet(progPin));
  assert.ok(!(prog instanceof native.MapFd));
  assert.equal(native.progInfo(prog).name, 'fixture_connect');
});

test('attachCgroup / linkInfo / linkUpdate / pin / detach on a test cgroup', async (t) => {
  const add = cleanup(t);
  const server = await loopbackServer(add);
  const port = portOf(server);
  const cgroup = testCgroup(add);
  const pins = bpffsDir(add);

  const a = new BpfObject(FIXTURE);
  add(() => a.close());
  a.setRodata('cfg_value', u32(7));
  a.load();
  const counts = owned(add, a.map('counts'));
  const progA = owned(add, a.program('fixture_connect4'));
  const b = new BpfObject(FIXTURE);
  add(() => b.close());
  b.setRodata('cfg_value', u32(9));
  b.reuseMap('counts', counts);
  b.load();
  const progB = owned(add, b.program('fixture_connect4'));
  a.close();
  b.close(); // the handles are all the test needs from here

  const cg = owned(add, native.openPath(cgroup));
  const link = owned(add, progA.attachCgroup(cg, BPF_CGROUP_INET4_CONNECT));
  assert.ok(link instanceof BpfLink);
  const info = link.info();
  assert.equal(info.type, BPF_LINK_TYPE_CGROUP);
  assert.equal(info.attachType, BPF_CGROUP_INET4_CONNECT);
  assert.equal(info.cgroupId, statSync(cgroup).ino);
  assert.equal(info.progId, progA.info().id);

  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(counts.lookup(u32(7)), u64(1n), 'program A ran (cfg_value 7)');

  link.update(progB);
  assert.equal(link.info().progId, progB.info().id);
  assert.equal(link.info().id, info.id);
  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(counts.lookup(u32(9)), u64(1n), 'program B ran after linkUpdate (cfg_value 9)');
  assert.deepEqual(counts.lookup(u32(7)), u64(1n));

  const linkPin = join(pins, 'link');
  link.pin(linkPin);
  {
    using pinned = BpfLink.open(linkPin);
    assert.equal(pinned.info().id, info.id);
  }
  rmSync(linkPin);

  link.detach();
  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(counts.lookup(u32(9)), u64(1n), 'no program runs after detach');
  link.close();
  throwsBpf(() => link.info(), { code: 'EBADF', syscall: 'linkInfo' });
});

test('a verifier refusal is a VerifierError naming the program, with the log', (t) => {
  const add = cleanup(t);
  // the addon itself hands over the raw log
  const raw = new native.BpfObject(BAD);
  add(() => raw.close());
  const le = throwsBpf(() => raw.load(), { syscall: 'bpf_object__load', code: 'EACCES', errno: 13, path: BAD });
  assert.ok(le instanceof LoadError && !(le instanceof VerifierError));
  assert.equal(le.program, undefined, 'no log parsing in the addon');
  assert.match(le.log, /-- BEGIN PROG LOAD LOG --/);
  throwsBpf(() => raw.load(), { code: 'EBADFD' });

  // the TypeScript object reads it
  const bad = new BpfObject(BAD);
  add(() => bad.close());
  const e = throwsBpf(() => bad.load(), { syscall: 'bpf_object__load', code: 'EACCES', errno: 13 });
  assert.ok(e instanceof VerifierError);
  assert.equal(e.name, 'VerifierError');
  assert.equal(e.program, 'bad_connect4');
  assert.equal(e.reason, 'invalid bpf_context access off=4096 size=4');
  assert.match(e.message, /^verifier refused program 'bad_connect4': invalid bpf_context access/);
  assert.ok(e.log.includes('invalid bpf_context access off=4096'), 'the verifier log is attached');
  const explained = explain(e, 'loading the BPF programs');
  assert.ok(explained instanceof UserError);
  assert.match(explained.message, /^loading the BPF programs: the verifier of kernel \S+ refused program 'bad_connect4'/);
});

test('loadAsync loads on the pool; the object refuses every call until it settles; a refusal rejects with the log', async (t) => {
  const add = cleanup(t);
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  obj.setRodata('cfg_value', u32(0x1234));
  const loading = obj.loadAsync();
  // it returned before the load ran (on libuv's pool), and until it settles nothing else may touch the object
  throwsBpf(() => obj.maps(), { code: 'EBUSY', syscall: 'BpfObject.maps' });
  throwsBpf(() => obj.load(), { code: 'EBUSY' });
  throwsBpf(() => obj.close(), { code: 'EBUSY', syscall: 'BpfObject.close' });
  await loading;
  const rodataName = obj.maps().find((m) => m.name.endsWith('.rodata'))!.name;
  assert.deepEqual(owned(add, obj.map(rodataName)).lookup(u32(0)), u32(0x1234));
  throwsBpf(() => obj.load(), { code: 'EBUSY' }); // already loaded
  throwsBpf(() => obj.loadAsync(), { code: 'EBUSY' }); // a call in the wrong state throws at once, as load()'s

  // a refusal: the same LoadError as load()'s, with libbpf's log captured on the pool thread
  const raw = new native.BpfObject(BAD);
  add(() => raw.close());
  let le: unknown;
  await raw.loadAsync().catch((e: unknown) => (le = e));
  throwsBpf(
    () => {
      throw le;
    },
    { syscall: 'bpf_object__load', code: 'EACCES', errno: 13, path: BAD },
  );
  assert.match((le as LoadError).log, /-- BEGIN PROG LOAD LOG --/);
  throwsBpf(() => raw.load(), { code: 'EBADFD' });
  const bad = new BpfObject(BAD);
  add(() => bad.close());
  const e = await bad.loadAsync().then(
    () => assert.fail('the bad object loaded'),
    (x: unknown) => x,
  );
  assert.ok(e instanceof VerifierError);
  assert.equal(e.program, 'bad_connect4');
});

test('a refusal with another errno is still a VerifierError: the class decides, not the errno', (t) => {
  const add = cleanup(t);
  // counts (u32 -> u64) replaced by cidrs (8-byte keys): the program's 4-byte key on the stack is refused
  const a = openLoaded(add, 0);
  const cidrs = owned(add, a.map('cidrs'));
  const obj = new BpfObject(FIXTURE);
  add(() => obj.close());
  obj.reuseMap('counts', cidrs);
  const e = throwsBpf(() => obj.load(), { code: 'EINVAL', syscall: 'bpf_object__load' });
  assert.ok(e instanceof VerifierError);
  assert.equal(e.program, 'fixture_connect4');
  assert.match(e.reason, /^invalid read from stack/);
  assert.ok(explain(e, 'loading') instanceof UserError);
});

test('netns cookies and SO_ORIGINAL_DST', async (t) => {
  const add = cleanup(t);
  const server = await loopbackServer(add);
  const sock = net.connect(portOf(server), '127.0.0.1');
  add(() => sock.destroy());
  await once(sock, 'connect');
  const fd = socketFd(sock);

  const own = native.netnsCookie('/proc/self/ns/net');
  assert.equal(typeof own, 'bigint');
  assert.equal(native.socketNetnsCookie(fd), own);

  const ns = unique.slice(0, 40);
  execFileSync('ip', ['netns', 'add', ns]);
  add(() => execFileSync('ip', ['netns', 'delete', ns]));
  const other = native.netnsCookie(`/run/netns/${ns}`);
  assert.notEqual(other, own);
  assert.equal(native.netnsCookie(`/run/netns/${ns}`), other, 'stable');
  assert.equal(native.netnsCookie('/proc/self/ns/net'), own, 'this thread never left its netns');

  throwsBpf(
    () => native.originalDst(fd, 4),
    (e) => assert.ok(e.code === 'ENOENT' || e.code === 'ENOPROTOOPT', `got ${e.code}`),
  );
  assert.throws(() => native.originalDst(fd, 5 as 4), TypeError);
  throwsBpf(() => native.socketNetnsCookie(987654), { code: 'EBADF' });
  throwsBpf(() => native.netnsCookie('/nonexistent/ns'), { code: 'ENOENT', syscall: 'open' });
});

test('bad paths fail with ENOENT and say which path', () => {
  const missing = '/nonexistent/meshlane/x.bpf.o';
  const e = throwsBpf(() => new native.BpfObject(missing), {
    code: 'ENOENT',
    errno: 2,
    syscall: 'bpf_object__open_file',
    path: missing,
  });
  assert.ok(e.message.includes(missing));
  throwsBpf(() => native.openPath(missing), { code: 'ENOENT', syscall: 'open', path: missing });
  throwsBpf(() => native.objGet(missing), { code: 'ENOENT', syscall: 'bpf_obj_get' });
  throwsBpf(() => native.isBpffs(missing), { code: 'ENOENT', syscall: 'statfs' });
  throwsBpf(() => native.pidfdGetfd(process.pid, 987654), { code: 'EBADF', syscall: 'pidfd_getfd' });
});

test('kernel feature probes', () => {
  assert.equal(native.probeProgType(BPF_PROG_TYPE_CGROUP_SOCK_ADDR), true);
  assert.equal(native.probeMapType(BPF_MAP_TYPE_LPM_TRIE), true);
  assert.equal(native.probeHelper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_netns_cookie), true);
});
