// Who can touch meshlane's pins and its bpffs directory, what a start refuses, and what uninstall removes
// (the real CLI as subprocesses, a real uid-1000 user, the machine's bpffs under directories this test
// makes, /sys/fs/bpf/meshlane-test-pins-*; the agent's own mount of bpffs only in a private mount namespace).
//
//  - A --bpffs tree that is not root's alone (made by uid 1000, a subdirectory of uid 1000, one writable by
//    others, a symbolic link, a pin of uid 1000, a parent of uid 1000) is refused at start with one line,
//    exit 2, before anything is loaded or pinned.
//  - What the agent makes is 0700 root whatever the umask, its own bpffs mount is mode 0700: uid 1000 can
//    neither list, remove, rename nor create anything there.
//  - A symbolic link or a hard link planted in one installation's links/ never makes the agent or
//    uninstall detach another installation's link.
//  - uninstall of a directory not on bpffs says so; uninstall removes only what meshlane made.
//  - Root without the capabilities is told which capabilities are missing (not that the kernel lacks
//    features); a --bpffs or --state-dir that names a file: one line, exit 2, nothing pinned.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as native from '../../src/native/addon.js';
import { CLI, bpffsMounts, waitFor } from '../support/harness.js';
import { cgroup2Mount, cgroupId } from '../../src/util/cgroup.js';
import { staticPrograms } from '../../src/dataplane/programs.js';

const USER = 1000;
const AS_USER = ['setpriv', '--reuid', String(USER), '--regid', String(USER), '--clear-groups'];
const NO_CAPS = ['setpriv', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all'];
const PREFIX = '/sys/fs/bpf/meshlane-test-pins';
const TIMEOUT_MS = 15_000;

let tmp = '';
let emptyCluster = '';
let cgA = '';
let cgB = '';
const cgroups: string[] = [];

let hostBpffs: string[] = [];

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-pins-'));
  emptyCluster = join(tmp, 'empty.yaml');
  writeFileSync(emptyCluster, 'apiVersion: v1\nkind: List\nitems: []\n');
  cgA = join(cgroup2Mount(), 'meshlane-test-pins-a');
  cgB = join(cgroup2Mount(), 'meshlane-test-pins-b');
  for (const c of [cgA, cgB]) {
    mkdirSync(c, { recursive: true });
    cgroups.push(c);
  }
  for (const d of testDirs()) scrub(d); // what an earlier, killed run left
  hostBpffs = bpffsMounts();
});

after(() => {
  for (const d of testDirs()) scrub(d);
  for (const c of cgroups) {
    for (let i = 0; i < 50 && existsSync(c); i++) {
      try {
        rmdirSync(c);
      } catch {
        spawnSync('sleep', ['0.1']);
      }
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(bpffsMounts(), hostBpffs, "the machine's bpffs mounts changed");
  assert.deepEqual(testDirs(), [], 'test directories left under /sys/fs/bpf');
  for (const c of cgroups) assert.ok(!existsSync(c), `cgroup ${c} left behind`);
});

/** Every /sys/fs/bpf/meshlane-test-pins-* entry. */
function testDirs(): string[] {
  return readdirSync('/sys/fs/bpf')
    .filter((f) => f.startsWith('meshlane-test-pins-'))
    .map((f) => join('/sys/fs/bpf', f));
}

/**
 * Remove a test tree whatever state it is in (made by uid 1000, planted links, left by a killed agent):
 * symbolic links and hard links are only unlinked (never followed, never detached: they may name another
 * installation's link), every other link pin is detached, then everything is removed.
 */
function scrub(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (st.isDirectory()) {
    for (const f of readdirSync(path)) scrub(join(path, f));
    rmdirSync(path);
    return;
  }
  if (st.isFile() && st.nlink === 1) {
    try {
      const h = native.objGet(path);
      try {
        native.linkDetach(h);
      } catch {
        /* a map, or already defunct */
      } finally {
        h.close();
      }
    } catch {
      /* not a bpf object */
    }
  }
  unlinkSync(path);
}

type Run = SpawnSyncReturns<string>;

function run(cmd: string, args: string[], timeout = TIMEOUT_MS): Run {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout, killSignal: 'SIGKILL', cwd: tmp });
}

function describe(r: Run): string {
  return `exit status ${r.status}, signal ${r.signal}${r.error ? `, ${r.error.message}` : ''}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`;
}

/** The project rule: exit 2, stderr is one line `meshlane: ...`, no stack trace. Returns that line. */
function assertOneLine(r: Run, mentions?: RegExp): string {
  const ctx = describe(r);
  assert.ok(!r.error, `did not finish within ${TIMEOUT_MS} ms (a start failure that does not exit):\n${ctx}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace on stderr:\n${ctx}`);
  assert.equal(r.status, 2, `exit code:\n${ctx}`);
  const lines = r.stderr.split('\n');
  assert.equal(lines.pop(), '', `stderr does not end in a newline:\n${ctx}`);
  assert.equal(lines.length, 1, `stderr is not one line:\n${ctx}`);
  const line = lines[0]!;
  assert.match(line, /^meshlane: \S/, `not a 'meshlane: ' line:\n${ctx}`);
  assert.ok(line.length < 400, `the line is ${line.length} characters long:\n${ctx}`);
  if (mentions) assert.match(line, mentions, ctx);
  return line;
}

const meshlane = (...args: string[]): Run => run(process.execPath, [CLI(), ...args]);
const asUser = (...cmd: string[]): Run => run(AS_USER[0]!, [...AS_USER.slice(1), ...cmd]);
const agentArgs = (bpffs: string, cgroup = cgA, stateDir = join(tmp, 'state')): string[] => [
  'agent',
  '--cluster-file',
  emptyCluster,
  '--cgroup-root',
  cgroup,
  '--bpffs',
  bpffs,
  '--state-dir',
  stateDir,
  '--cni-socket',
  join(stateDir, 'cni.sock'),
];
/** An agent start that must fail: the CLI in the foreground, killed if it does not exit. */
const agentFails = (bpffs: string, ...pre: string[]): Run => {
  const cmd = [...pre, process.execPath, CLI(), ...agentArgs(bpffs)];
  return run(cmd[0]!, cmd.slice(1));
};

/** Every non-directory under `dir` (relative), found without following anything. */
function pinsUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const f of names.sort()) {
      const st = lstatSync(join(d, f));
      if (st.isDirectory()) walk(join(d, f), `${rel}${f}/`);
      else out.push(`${rel}${f}`);
    }
  };
  if (existsSync(dir) && lstatSync(dir).isDirectory()) walk(dir, '');
  return out;
}

/** Start the agent, wait until it attached everything, stop it with SIGTERM (its pins stay). */
async function installWith(bpffs: string, cgroup: string, umask = '022'): Promise<void> {
  const stateDir = join(tmp, `state-${bpffs.split('/').pop()}`);
  rmSync(stateDir, { recursive: true, force: true });
  const logFile = join(tmp, `agent-${bpffs.split('/').pop()}.log`);
  const proc = spawn('sh', ['-c', `umask ${umask}; exec "$@" > ${logFile} 2>&1`, 'sh', process.execPath, CLI(), ...agentArgs(bpffs, cgroup, stateDir)], {
    stdio: 'ignore',
  });
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${readFileSync(logFile, 'utf8')}`);
        // status.json is first written before the programs are attached: wait for the whole start
        return existsSync(join(stateDir, 'status.json')) && /"msg":"capture active/.test(readFileSync(logFile, 'utf8'));
      },
      TIMEOUT_MS,
      `the agent on ${bpffs} to attach and publish its status`,
    );
  } finally {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    await exited;
  }
}

/** For each cgroup link pinned under `bpffs`: the id of the cgroup it is attached to (0: detached). */
function linkCgroups(bpffs: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of staticPrograms()) {
    if (p.attach.kind !== 'cgroup') continue;
    const h = native.objGet(join(bpffs, 'links', p.name));
    try {
      out[p.name] = native.linkInfo(h).cgroupId ?? -1;
    } finally {
      h.close();
    }
  }
  return out;
}

const attachedTo = (cg: string): Record<string, number> => {
  const id = Number(cgroupId(cg));
  return Object.fromEntries(
    staticPrograms()
      .filter((p) => p.attach.kind === 'cgroup')
      .map((p) => [p.name, id]),
  );
};

// ---------------------------------------------------------------------------------------------------

test("a --bpffs tree that is not root's alone is refused at start: one line, exit 2, nothing pinned", () => {
  const dir = `${PREFIX}-pre`;
  const target = `${PREFIX}-target`;
  const parent = `${PREFIX}-parent`;
  const rootDir = (p: string): void => {
    mkdirSync(p);
    chmodSync(p, 0o700);
  };
  const variants: Array<{ name: string; bpffs?: string; make: () => void; says: RegExp }> = [
    {
      name: 'the --bpffs directory made by uid 1000 beforehand',
      make: () => assert.equal(asUser('mkdir', dir).status, 0),
      says: /--bpffs \S+: \S+ is owned by uid 1000/,
    },
    {
      name: 'maps/ of uid 1000',
      make: () => {
        rootDir(dir);
        mkdirSync(join(dir, 'maps'), { mode: 0o700 });
        chownSync(join(dir, 'maps'), USER, USER);
      },
      says: /maps\S* is owned by uid 1000/,
    },
    {
      name: 'links/ mode 0777',
      make: () => {
        rootDir(dir);
        mkdirSync(join(dir, 'links'));
        chmodSync(join(dir, 'links'), 0o777);
      },
      says: /links\S* is writable by (group or )?others/,
    },
    {
      name: "links/ a symbolic link to a directory of root's",
      make: () => {
        rootDir(dir);
        rootDir(target);
        symlinkSync(target, join(dir, 'links'));
      },
      says: /links\S* is a symbolic link/,
    },
    {
      name: "the --bpffs directory a symbolic link of uid 1000 to a directory of root's",
      make: () => {
        rootDir(target);
        assert.equal(asUser('ln', '-s', target, dir).status, 0);
      },
      says: /is a symbolic link/,
    },
    {
      name: 'a map pin of uid 1000',
      make: () => {
        rootDir(dir);
        rootDir(join(dir, 'maps'));
        assert.equal(
          run('bpftool', ['map', 'create', join(dir, 'maps', 'pods_v1'), 'type', 'hash', 'key', '8', 'value', '8', 'entries', '4', 'name', 'pods']).status,
          0,
        );
        chownSync(join(dir, 'maps', 'pods_v1'), USER, USER);
      },
      says: /maps\/pods_v1 is owned by uid 1000/,
    },
    {
      name: 'a parent directory of uid 1000',
      bpffs: join(parent, 'meshlane'),
      make: () => {
        assert.equal(asUser('mkdir', '-m', '0755', parent).status, 0);
        rootDir(join(parent, 'meshlane'));
      },
      says: /owned by uid 1000/,
    },
  ];
  for (const v of variants) {
    const bpffs = v.bpffs ?? dir;
    try {
      v.make();
      const before = [...pinsUnder(bpffs), ...pinsUnder(target)];
      const line = assertOneLine(agentFails(bpffs), v.says);
      assert.ok(line.startsWith(`meshlane: --bpffs ${bpffs}: `), `${v.name}: ${line}`);
      assert.deepEqual([...pinsUnder(bpffs), ...pinsUnder(target)], before, `${v.name}: something was pinned`);
    } catch (e) {
      (e as Error).message = `${v.name}: ${(e as Error).message}`;
      throw e;
    } finally {
      for (const d of [dir, target, parent]) scrub(d);
    }
  }
});

test('what the agent makes is 0700 root whatever the umask: uid 1000 can neither list, remove, rename nor create anything there', async () => {
  const bpffs = `${PREFIX}-own`;
  try {
    await installWith(bpffs, cgA, '000');
    const pins = pinsUnder(bpffs);
    assert.ok(pins.includes('links/meshlane_connect4') && pins.includes('maps/pods_v1'), pins.join(' '));
    for (const d of [bpffs, join(bpffs, 'maps'), join(bpffs, 'links')]) {
      const st = lstatSync(d);
      assert.equal(st.uid, 0, d);
      assert.equal((st.mode & 0o7777).toString(8), '700', `mode of ${d}`);
    }
    const attempts: string[][] = [
      ['ls', bpffs],
      ['ls', join(bpffs, 'links')],
      ['rm', '-f', join(bpffs, 'links', 'meshlane_connect4')],
      ['rm', '-rf', bpffs],
      ['mv', bpffs, `${bpffs}-moved`],
      ['mkdir', join(bpffs, 'links', 'x')],
      ['ln', '-s', `${PREFIX}-other`, join(bpffs, 'links', 'meshlane_evil')],
      ['mkdir', join(bpffs, 'maps', 'x')],
    ];
    for (const a of attempts) assert.notEqual(asUser(...a).status, 0, `uid 1000 could: ${a.join(' ')}`);
    assert.deepEqual(pinsUnder(bpffs), pins, 'the pins changed');
    assert.deepEqual(linkCgroups(bpffs), attachedTo(cgA), 'capture is no longer attached');
    assert.ok(!existsSync(`${bpffs}-moved`));
    const r = meshlane('uninstall', '--bpffs', bpffs);
    assert.equal(r.status, 0, describe(r));
    assert.ok(!existsSync(bpffs), `uninstall left ${bpffs}: ${pinsUnder(bpffs).join(' ')}`);
  } finally {
    scrub(bpffs);
    scrub(`${bpffs}-moved`);
  }
});

test("the agent's own mount of bpffs is mode 0700, nosuid, nodev, noexec", () => {
  const out = join(tmp, 'mount');
  mkdirSync(out, { recursive: true });
  const bpffs = '/sys/fs/bpf/meshlane-test-pins-mount';
  const state = join(tmp, 'state-mount');
  const script = `
while umount /sys/fs/bpf 2>/dev/null; do :; done
umask 000
"$@" agent --cluster-file ${emptyCluster} --cgroup-root ${cgA} --bpffs ${bpffs} --state-dir ${state} --cni-socket ${state}/cni.sock --metrics-address off > ${out}/agent.out 2>&1 &
pid=$!
i=0
while [ ! -s ${state}/status.json ] && [ $i -lt 150 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i+1)); done
stat -c '%a %u' /sys/fs/bpf > ${out}/mode
awk '$5 == "/sys/fs/bpf"' /proc/self/mountinfo > ${out}/mountinfo
kill -KILL $pid 2>/dev/null; wait $pid
"$@" uninstall --bpffs ${bpffs} > ${out}/uninstall.out 2>&1
find ${bpffs} > ${out}/left 2>&1
exit 0
`;
  const r = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', process.execPath, CLI()], 60_000);
  const f = (n: string): string => (existsSync(join(out, n)) ? readFileSync(join(out, n), 'utf8') : `(no ${n})`);
  const ctx = `${describe(r)}\nagent:\n${f('agent.out')}\nmountinfo: ${f('mountinfo')}\nuninstall: ${f('uninstall.out')}`;
  assert.equal(r.status, 0, ctx);
  assert.ok(existsSync(join(state, 'status.json')), `the agent did not start:\n${ctx}`);
  assert.equal(f('mode').trim(), '1700 0', `the agent's bpffs mount root:\n${ctx}`);
  const mi = f('mountinfo').trim();
  assert.equal(mi.split('\n').length, 1, ctx);
  const [pre, post] = mi.split(' - ') as [string, string];
  const opts = pre.split(' ')[5]!.split(',');
  for (const o of ['nosuid', 'nodev', 'noexec']) assert.ok(opts.includes(o), `mount option ${o} missing: ${mi}`);
  assert.ok(post.split(' ')[2]!.split(',').includes('mode=700'), `superblock option mode=700 missing: ${mi}`);
  assert.match(f('left'), /No such file/, `uninstall left:\n${f('left')}`);
});

test("a symbolic or hard link planted in one installation's links/ never makes the agent or uninstall touch another's link", async () => {
  const a = `${PREFIX}-a`;
  const b = `${PREFIX}-b`;
  const c = `${PREFIX}-c`;
  try {
    await installWith(b, cgB);
    await installWith(a, cgA);
    assert.deepEqual(linkCgroups(b), attachedTo(cgB));
    assert.deepEqual(linkCgroups(a), attachedTo(cgA));

    // root's own mistake (or a compromised tool): links to B's pins in A's links/, under names an older
    // meshlane's programs could have had (so a restart would take them for stale pins and detach them)
    symlinkSync(join(b, 'links', 'meshlane_connect4'), join(a, 'links', 'meshlane_old_connect'));
    linkSync(join(b, 'links', 'meshlane_sockops'), join(a, 'links', 'meshlane_old_sockops'));
    const startA = assertOneLine(agentFails(a), /links\/meshlane_old_(connect|sockops)/);
    assert.match(startA, /symbolic link|hard link|names/, startA);
    assert.deepEqual(linkCgroups(b), attachedTo(cgB), `B's links after A's start was refused (${startA})`);
    assert.deepEqual(linkCgroups(a), attachedTo(cgA), "A's links after its refused start");

    const u = meshlane('uninstall', '--bpffs', a);
    assert.equal(u.status, 0, describe(u));
    assert.deepEqual(linkCgroups(b), attachedTo(cgB), `B's links after uninstalling A:\n${u.stdout}`);
    assert.match(u.stdout, /meshlane_old_connect/, `uninstall does not report what it left:\n${u.stdout}`);
    assert.match(u.stdout, /meshlane_old_sockops/, `uninstall does not report what it left:\n${u.stdout}`);
    assert.ok(lstatSync(join(a, 'links', 'meshlane_old_connect')).isSymbolicLink(), 'the planted symlink is left alone');
    assert.deepEqual(pinsUnder(a), ['links/meshlane_old_connect', 'links/meshlane_old_sockops'], 'what uninstall left of A');
    scrub(a);

    // uid 1000 (as in the issue): a --bpffs tree made beforehand with a link to B's pin under a current name
    assert.equal(asUser('mkdir', '-p', join(c, 'links')).status, 0);
    assert.equal(asUser('ln', '-s', join(b, 'links', 'meshlane_connect4'), join(c, 'links', 'meshlane_connect4')).status, 0);
    assertOneLine(agentFails(c), /owned by uid 1000/);
    assert.deepEqual(linkCgroups(b), attachedTo(cgB), "B's links after the agent was pointed at uid 1000's tree");
    assertOneLine(meshlane('uninstall', '--bpffs', c), /owned by uid 1000/);
    assert.deepEqual(linkCgroups(b), attachedTo(cgB), "B's links after uninstall was pointed at uid 1000's tree");

    const ub = meshlane('uninstall', '--bpffs', b);
    assert.equal(ub.status, 0, describe(ub));
    assert.ok(!existsSync(b), `uninstall left ${b}`);
  } finally {
    for (const d of [a, b, c]) scrub(d);
  }
});

test('uninstall --bpffs <a directory not on bpffs> says so and removes nothing', () => {
  const dir = join(tmp, 'not-bpffs');
  mkdirSync(join(dir, 'maps'), { recursive: true });
  mkdirSync(join(dir, 'links'));
  writeFileSync(join(dir, 'maps', 'pods_v1'), '');
  writeFileSync(join(dir, 'links', 'meshlane_connect4'), '');
  const line = assertOneLine(meshlane('uninstall', '--bpffs', dir), /is not on a bpf filesystem/);
  assert.doesNotMatch(line, /permission denied|run .* as root/i, line);
  assert.deepEqual(pinsUnder(dir), ['links/meshlane_connect4', 'maps/pods_v1']);
  const empty = join(tmp, 'empty-not-bpffs');
  mkdirSync(empty);
  assertOneLine(meshlane('uninstall', '--bpffs', empty), /is not on a bpf filesystem/);
  assert.ok(existsSync(empty), "uninstall removed an empty directory that is not meshlane's");
});

test('uninstall removes only what meshlane made: an unrelated directory stays, unknown entries stay and are reported', async () => {
  const unrelated = `${PREFIX}-unrelated`;
  const withData = `${PREFIX}-unrelated-data`;
  const own = `${PREFIX}-unknown`;
  try {
    mkdirSync(unrelated, { mode: 0o700 });
    const r1 = meshlane('uninstall', '--bpffs', unrelated);
    assert.equal(r1.status, 0, describe(r1));
    assert.ok(existsSync(unrelated), `uninstall removed an empty directory that is not meshlane's:\n${r1.stdout}`);
    assert.match(r1.stdout, /nothing of meshlane/, r1.stdout);

    mkdirSync(join(withData, 'data'), { recursive: true, mode: 0o700 });
    const r2 = meshlane('uninstall', '--bpffs', withData);
    assert.equal(r2.status, 0, describe(r2));
    assert.ok(existsSync(join(withData, 'data')), `uninstall removed someone else's directory:\n${r2.stdout}`);

    await installWith(own, cgA);
    mkdirSync(join(own, 'maps', 'notours'), { mode: 0o700 });
    assert.equal(
      run('bpftool', ['map', 'create', join(own, 'links', 'other_pin'), 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', 'other']).status,
      0,
    );
    const r3 = meshlane('uninstall', '--bpffs', own);
    assert.equal(r3.status, 0, describe(r3));
    assert.deepEqual(pinsUnder(own), ['links/other_pin'], `what uninstall left:\n${r3.stdout}`);
    assert.ok(existsSync(join(own, 'maps', 'notours')), 'uninstall removed a directory meshlane did not make');
    assert.match(r3.stdout, /links\/other_pin/, `uninstall does not report what it left:\n${r3.stdout}`);
    assert.match(r3.stdout, /maps\/notours/, `uninstall does not report what it left:\n${r3.stdout}`);
    assert.match(r3.stdout, /removed \d+ pins/, r3.stdout);
  } finally {
    for (const d of [unrelated, withData, own]) scrub(d);
  }
});

test('root without the capabilities: one line naming the missing capabilities, exit 2, nothing pinned', async () => {
  const bpffs = `${PREFIX}-nocaps`;
  try {
    const none = assertOneLine(agentFails(bpffs, ...NO_CAPS), /CAP_SYS_ADMIN/);
    assert.doesNotMatch(none, /kernel .*lacks|CONFIG_|Linux 5\.15/, `blames the kernel: ${none}`);
    assert.ok(!existsSync(bpffs), `${bpffs} was made: ${pinsUnder(bpffs).join(' ')}`);
    const noPtrace = assertOneLine(agentFails(bpffs, 'setpriv', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-sys_ptrace'), /CAP_SYS_PTRACE/);
    assert.doesNotMatch(noPtrace, /CAP_SYS_ADMIN|CAP_NET_ADMIN/, noPtrace);
    assert.ok(!existsSync(bpffs), `${bpffs} was made: ${pinsUnder(bpffs).join(' ')}`);

    // uninstall of a real installation, as root without capabilities: names them too, removes nothing
    await installWith(bpffs, cgA);
    const pins = pinsUnder(bpffs);
    const u = run(NO_CAPS[0]!, [...NO_CAPS.slice(1), process.execPath, CLI(), 'uninstall', '--bpffs', bpffs]);
    const line = assertOneLine(u, /CAP_SYS_ADMIN/);
    assert.doesNotMatch(line, /run .* as root/, line);
    assert.deepEqual(pinsUnder(bpffs), pins);
    assert.deepEqual(linkCgroups(bpffs), attachedTo(cgA));
  } finally {
    scrub(bpffs);
  }
});

test('--bpffs naming a regular file: one line, exit 2, nothing mounted or pinned', () => {
  const file = join(tmp, 'a-file');
  writeFileSync(file, 'mine');
  assertOneLine(agentFails(file), new RegExp(`--bpffs ${file}\\b.*not a directory`));
  assert.equal(readFileSync(file, 'utf8'), 'mine');
  assert.ok(statSync(file).isFile());
  assert.deepEqual(bpffsMounts(), hostBpffs, 'something was mounted');
});

test('--state-dir naming a file: one line, exit 2, no stack, nothing pinned', () => {
  const bpffs = `${PREFIX}-statefile`;
  const file = join(tmp, 'state-file');
  writeFileSync(file, '');
  try {
    const cmd = [process.execPath, CLI(), ...agentArgs(bpffs, cgA, file)];
    assertOneLine(run(cmd[0]!, cmd.slice(1)), /--state-dir .*not a directory/);
    assert.ok(!existsSync(bpffs), `${bpffs} was made: ${pinsUnder(bpffs).join(' ')}`);
  } finally {
    scrub(bpffs);
  }
});
