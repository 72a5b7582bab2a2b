// Kernel test of the native addon (native/src/*.cc) against the fixtures in test/fixtures.
// Needs root and a BPF-capable kernel. Everything it makes (cgroup, bpffs directory, pins, links,
// netns, child processes) is removed again in t.after, also when an assertion fails.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from '../../src/native/addon.js';
import type { NativeError } from '../../src/native/addon.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';

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

function throwsNative(fn: () => unknown, check: Partial<NativeError> | ((e: NativeError) => void)): NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Error, 'expected a throw');
  const e = caught as NativeError;
  assert.equal(typeof e.errno, 'number');
  assert.ok(e.errno > 0, 'errno is positive');
  assert.equal(typeof e.code, 'string');
  assert.equal(typeof e.syscall, 'string');
  assert.ok(e.message.startsWith(e.syscall) || e.program !== undefined, `message names the call: ${e.message}`);
  if (typeof check === 'function') check(e);
  else for (const [k, v] of Object.entries(check)) assert.equal((e as unknown as Record<string, unknown>)[k], v, k);
  return e;
}

function openLoaded(add: (s: () => void) => void, cfg: number, reuseCountsFd?: number): native.BpfObject {
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  obj.setRodata('cfg_value', u32(cfg));
  if (reuseCountsFd !== undefined) obj.reuseMap('counts', reuseCountsFd);
  obj.load();
  return obj;
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

/** bpf(2) info/reuse calls answer a closed fd with EBADFD (77), plain syscalls with EBADF. */
function badFd(code: string): boolean {
  return code === 'EBADF' || code === 'EBADFD';
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
  // fds exist only after load
  throwsNative(() => obj.mapFd('counts'), { syscall: 'BpfObject.mapFd', code: 'ENOENT' });
  obj.close();
  throwsNative(() => obj.maps(), { code: 'EBADF' });
  obj.close(); // idempotent
});

test('setRodata checks name and size, and the loaded .rodata holds the value', (t) => {
  const add = cleanup(t);
  const obj = new native.BpfObject(FIXTURE);
  add(() => obj.close());
  throwsNative(() => obj.setRodata('cfg_value', Buffer.alloc(2)), { code: 'EINVAL', syscall: 'setRodata' });
  throwsNative(() => obj.setRodata('no_such_var', u32(1)), { code: 'ENOENT', syscall: 'setRodata' });
  obj.setRodata('cfg_value', u32(0xabcd));
  obj.load();
  const rodataName = obj.maps().find((m) => m.name.endsWith('.rodata'))!.name;
  const fd = obj.mapFd(rodataName);
  assert.deepEqual(native.mapLookup(fd, u32(0), 4), u32(0xabcd));
  throwsNative(() => obj.setRodata('cfg_value', u32(1)), { code: 'EBUSY' });
  throwsNative(() => obj.load(), { code: 'EBUSY' });
  const info = native.progInfo(obj.programFd('fixture_connect4'));
  assert.equal(info.type, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
  assert.equal(info.name, 'fixture_connect4'.slice(0, 15));
  assert.match(info.tag, /^[0-9a-f]{16}$/);
  throwsNative(() => obj.programFd('nope'), { code: 'ENOENT', program: 'nope' });
});

test('map update / lookup / delete / keys / entries round trip', (t) => {
  const add = cleanup(t);
  const obj = openLoaded(add, 0);
  const counts = obj.mapFd('counts');
  const cidrs = obj.mapFd('cidrs');

  assert.deepEqual(native.mapInfo(counts), {
    id: native.mapInfo(counts).id,
    name: 'counts',
    type: BPF_MAP_TYPE_HASH,
    keySize: 4,
    valueSize: 8,
    maxEntries: 64,
    flags: 0,
  });
  assert.equal(native.mapLookup(counts, u32(1), 8), null);
  for (let i = 1; i <= 40; i++) native.mapUpdate(counts, u32(i), u64(BigInt(i * 100)));
  assert.deepEqual(native.mapLookup(counts, u32(7), 8), u64(700n));
  throwsNative(() => native.mapUpdate(counts, u32(7), u64(1n), BPF_NOEXIST), { code: 'EEXIST' });
  assert.equal(native.mapDelete(counts, u32(7)), true);
  assert.equal(native.mapDelete(counts, u32(7)), false);
  assert.equal(native.mapLookup(counts, u32(7), 8), null);

  const keys = native.mapKeys(counts, 4).map((k) => k.readUInt32LE(0)).sort((a, b) => a - b);
  assert.deepEqual(keys, [...Array(40).keys()].map((i) => i + 1).filter((i) => i !== 7));
  const entries = native.mapEntries(counts, 4, 8); // batch lookup on a hash map
  assert.equal(entries.length, 39);
  for (const [k, v] of entries) assert.equal(v.readBigUInt64LE(0), BigInt(k.readUInt32LE(0) * 100));

  // sizes are checked against the map, not trusted
  throwsNative(() => native.mapLookup(counts, u32(1), 4), { code: 'EINVAL', map: 'counts' });
  throwsNative(() => native.mapUpdate(counts, Buffer.alloc(3), u64(1n)), { code: 'EINVAL' });
  throwsNative(() => native.mapKeys(counts, 8), { code: 'EINVAL' });

  // LPM trie: longest prefix wins; entries() falls back to a key walk (no batch ops on LPM)
  native.mapUpdate(cidrs, lpmKey(8, '10.0.0.0'), u32(8));
  native.mapUpdate(cidrs, lpmKey(24, '10.1.2.0'), u32(24));
  assert.deepEqual(native.mapLookup(cidrs, lpmKey(32, '10.1.2.3'), 4), u32(24));
  assert.deepEqual(native.mapLookup(cidrs, lpmKey(32, '10.9.9.9'), 4), u32(8));
  assert.equal(native.mapLookup(cidrs, lpmKey(32, '192.168.0.1'), 4), null);
  const lpm = native.mapEntries(cidrs, 8, 4).map(([k, v]) => [k.readUInt32LE(0), v.readUInt32LE(0)]);
  assert.deepEqual(lpm.sort((a, b) => a[0]! - b[0]!), [
    [8, 8],
    [24, 24],
  ]);
  assert.equal(native.mapKeys(cidrs, 8).length, 2);
  assert.equal(native.mapDelete(cidrs, lpmKey(24, '10.1.2.0')), true);
  assert.deepEqual(native.mapLookup(cidrs, lpmKey(32, '10.1.2.3'), 4), u32(8));
});

test('reuseMap makes a second object share the first one\'s map', (t) => {
  const add = cleanup(t);
  const a = openLoaded(add, 1);
  const b = openLoaded(add, 2, a.mapFd('counts'));
  assert.equal(native.mapInfo(b.mapFd('counts')).id, native.mapInfo(a.mapFd('counts')).id);
  assert.notEqual(native.mapInfo(b.mapFd('cidrs')).id, native.mapInfo(a.mapFd('cidrs')).id);
  native.mapUpdate(a.mapFd('counts'), u32(5), u64(55n));
  assert.deepEqual(native.mapLookup(b.mapFd('counts'), u32(5), 8), u64(55n));

  const c = new native.BpfObject(FIXTURE);
  add(() => c.close());
  throwsNative(() => c.reuseMap('no_such_map', a.mapFd('counts')), { code: 'ENOENT', map: 'no_such_map' });
  throwsNative(() => c.reuseMap('counts', 987654), (e) => {
    assert.equal(e.syscall, 'bpf_map__reuse_fd');
    assert.ok(badFd(e.code), e.code);
  });
});

test('pin and objGet under a fresh bpffs directory', (t) => {
  const add = cleanup(t);
  const dir = bpffsDir(add);
  assert.equal(native.isBpffs(dir), true);
  assert.equal(native.isBpffs('/proc'), false);
  const obj = openLoaded(add, 0);
  const pinPath = join(dir, 'counts');
  native.pin(obj.mapFd('counts'), pinPath);
  const fd = native.objGet(pinPath);
  add(() => native.close(fd));
  assert.equal(native.mapInfo(fd).id, native.mapInfo(obj.mapFd('counts')).id);
  throwsNative(() => native.pin(obj.mapFd('counts'), pinPath), { code: 'EEXIST', path: pinPath });
  throwsNative(() => native.objGet(join(dir, 'missing')), { code: 'ENOENT', syscall: 'bpf_obj_get' });
});

test('attachCgroup / linkInfo / linkUpdate / pin / detach on a test cgroup', async (t) => {
  const add = cleanup(t);
  const server = await loopbackServer(add);
  const port = portOf(server);
  const cgroup = testCgroup(add);
  const pins = bpffsDir(add);

  const a = openLoaded(add, 7);
  const b = openLoaded(add, 9, a.mapFd('counts'));
  const counts = a.mapFd('counts');
  const cgFd = native.openPath(cgroup);
  add(() => native.close(cgFd));

  const linkFd = native.attachCgroup(a.programFd('fixture_connect4'), cgFd, BPF_CGROUP_INET4_CONNECT);
  let linkOpen = true;
  add(() => {
    if (linkOpen) native.close(linkFd);
  });
  const info = native.linkInfo(linkFd);
  assert.equal(info.type, BPF_LINK_TYPE_CGROUP);
  assert.equal(info.attachType, BPF_CGROUP_INET4_CONNECT);
  assert.equal(info.cgroupId, statSync(cgroup).ino);
  assert.equal(info.progId, native.progInfo(a.programFd('fixture_connect4')).id);

  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(native.mapLookup(counts, u32(7), 8), u64(1n), 'program A ran (cfg_value 7)');

  native.linkUpdate(linkFd, b.programFd('fixture_connect4'));
  assert.equal(native.linkInfo(linkFd).progId, native.progInfo(b.programFd('fixture_connect4')).id);
  assert.equal(native.linkInfo(linkFd).id, info.id);
  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(native.mapLookup(counts, u32(9), 8), u64(1n), 'program B ran after linkUpdate (cfg_value 9)');
  assert.deepEqual(native.mapLookup(counts, u32(7), 8), u64(1n));

  const linkPin = join(pins, 'link');
  native.pin(linkFd, linkPin);
  const pinnedFd = native.objGet(linkPin);
  add(() => native.close(pinnedFd));
  assert.equal(native.linkInfo(pinnedFd).id, info.id);
  rmSync(linkPin);

  native.linkDetach(linkFd);
  await connectFromCgroup(add, cgroup, port);
  assert.deepEqual(native.mapLookup(counts, u32(9), 8), u64(1n), 'no program runs after detach');
  native.close(linkFd);
  linkOpen = false;
  throwsNative(() => native.linkInfo(linkFd), (e) => assert.ok(badFd(e.code), e.code));
});

test('a verifier refusal names the program and carries the log', (t) => {
  const add = cleanup(t);
  const bad = new native.BpfObject(BAD);
  add(() => bad.close());
  const e = throwsNative(() => bad.load(), {
    syscall: 'bpf_object__load',
    program: 'bad_connect4',
    code: 'EACCES',
    errno: 13,
  });
  assert.match(e.message, /^verifier refused program 'bad_connect4': invalid bpf_context access/);
  assert.ok(e.log?.includes('invalid bpf_context access off=4096'), 'the verifier log is attached');
  throwsNative(() => bad.load(), { code: 'EBADFD' });
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

  throwsNative(() => native.originalDst(fd, 4), (e) =>
    assert.ok(e.code === 'ENOENT' || e.code === 'ENOPROTOOPT', `got ${e.code}`),
  );
  assert.throws(() => native.originalDst(fd, 5 as 4), TypeError);
  throwsNative(() => native.socketNetnsCookie(987654), { code: 'EBADF' });
  throwsNative(() => native.netnsCookie('/nonexistent/ns'), { code: 'ENOENT', syscall: 'open' });
});

test('bad paths fail with ENOENT and say which path', () => {
  const missing = '/nonexistent/meshlane/x.bpf.o';
  const e = throwsNative(() => new native.BpfObject(missing), {
    code: 'ENOENT',
    errno: 2,
    syscall: 'bpf_object__open_file',
    path: missing,
  });
  assert.ok(e.message.includes(missing));
  throwsNative(() => native.openPath(missing), { code: 'ENOENT', syscall: 'open', path: missing });
  throwsNative(() => native.objGet(missing), { code: 'ENOENT', syscall: 'bpf_obj_get' });
  throwsNative(() => native.isBpffs(missing), { code: 'ENOENT', syscall: 'statfs' });
  throwsNative(() => native.close(987654), { code: 'EBADF', syscall: 'close' });
  assert.throws(() => native.openPath(42 as unknown as string), TypeError);
});

test('kernel feature probes', () => {
  assert.equal(native.probeProgType(BPF_PROG_TYPE_CGROUP_SOCK_ADDR), true);
  assert.equal(native.probeMapType(BPF_MAP_TYPE_LPM_TRIE), true);
  assert.equal(native.probeHelper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_netns_cookie), true);
});
