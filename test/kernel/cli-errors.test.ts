// The CLI against the project rule: every error a user can cause prints ONE line, `meshlane: <cause and
// fix>`, exits 2, and never shows a stack trace. Runs the real built CLI as a subprocess.
//
// Every scenario that may touch bpffs runs in a private mount namespace (`unshare -m`, propagation
// private) with /sys/fs/bpf unmounted there, so the machine's bpffs is never read or written; cgroup
// attachments go to a cgroup this test creates (and removes) under the cgroup2 mount.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, bpffsMounts } from '../support/harness.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { packageRoot } from '../../src/util/paths.js';
import * as native from '../../src/native/addon.js';
import { BpfError } from '../../src/native/errors.js';
import { BpfLink, BpfObject, type BpfProgram } from '../../src/native/handles.js';
import { AttachType } from '../../src/dataplane/uapi.js';
import { MAPS } from '../../src/dataplane/layouts.js';

const UNPRIVILEGED = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups'];
const TIMEOUT_MS = 12_000;
/** how long a failing agent start may take before the test calls it hung (it must exit at once) */
const AGENT_WAIT_S = 10;

let tmp = '';
let cgroup = '';
/** a second cgroup, for an install on another cgroup */
let cgroupB = '';
let emptyCluster = '';
let badYaml = '';
const strays: number[] = [];

let hostBpffs: string[] = [];

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-cli-errors-'));
  cgroup = join(cgroup2Mount(), `meshlane-cli-errors-${process.pid}`);
  mkdirSync(cgroup);
  cgroupB = join(cgroup2Mount(), `meshlane-cli-errors-b-${process.pid}`);
  mkdirSync(cgroupB);
  emptyCluster = join(tmp, 'empty.yaml');
  writeFileSync(emptyCluster, 'apiVersion: v1\nkind: List\nitems: []\n');
  badYaml = join(tmp, 'bad.yaml');
  writeFileSync(badYaml, 'apiVersion: v1\nkind: List\nitems: [\n  - kind: Pod\n    metadata: {name: x\n');
  hostBpffs = bpffsMounts();
});

after(() => {
  // an agent this test started and could not stop (by pid, and only if it is still that agent)
  for (const pid of strays) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('meshlane-cli-errors')) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const cg of [cgroup, cgroupB]) {
    if (!cg || !existsSync(cg)) continue;
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(cg);
        break;
      } catch {
        spawnSync('sleep', ['0.1']);
      }
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  // the private mount namespaces never touched the machine's bpffs
  assert.deepEqual(bpffsMounts(), hostBpffs);
  for (const cg of [cgroup, cgroupB]) assert.ok(!existsSync(cg), `cgroup ${cg} left behind`);
});

type Run = SpawnSyncReturns<string>;

function run(cmd: string, args: string[], timeout = TIMEOUT_MS): Run {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout, killSignal: 'SIGKILL', cwd: tmp || undefined });
}

/** The CLI as root, in the machine's mount namespace (only for commands that cannot write anything). */
const cli = (...args: string[]): Run => run(process.execPath, [CLI(), ...args]);
/** The CLI as uid/gid 1000 with no groups. */
const cliUnprivileged = (...args: string[]): Run => run(UNPRIVILEGED[0]!, [...UNPRIVILEGED.slice(1), process.execPath, CLI(), ...args]);
/**
 * The CLI as root in a private mount namespace where no bpffs is mounted (the script unmounts every
 * bpffs at /sys/fs/bpf there first), exec'd so that a timeout kills the CLI itself.
 */
const cliNoBpffs = (...args: string[]): Run =>
  run('unshare', [
    '-m',
    '--propagation',
    'private',
    'sh',
    '-c',
    'while umount /sys/fs/bpf 2>/dev/null; do :; done; exec "$@"',
    'sh',
    process.execPath,
    CLI(),
    ...args,
  ]);

function describe(r: Run): string {
  return `exit status ${r.status}, signal ${r.signal}${r.error ? `, ${r.error.message}` : ''}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`;
}

/** The project rule: exit 2, stderr is one line `meshlane: ...`, no stack trace. Returns that line. */
function assertOneLine(r: Run, mentions?: RegExp): string {
  const ctx = describe(r);
  assert.ok(!r.error, `did not finish within ${TIMEOUT_MS} ms (the CLI hangs after the error):\n${ctx}`);
  return assertErrorLine(r.status, r.stderr, ctx, mentions);
}

function assertErrorLine(status: number | null, stderr: string, ctx: string, mentions?: RegExp): string {
  assert.doesNotMatch(stderr, /^\s+at /m, `stack trace on stderr:\n${ctx}`);
  assert.equal(status, 2, `exit code:\n${ctx}`);
  // the agent's structured log (JSON lines, e.g. "mounted bpffs") may come first; the error itself is one line
  const lines = stderr.split('\n').filter((l) => !l.startsWith('{"level":'));
  assert.equal(lines.pop(), '', `stderr does not end in a newline:\n${ctx}`);
  assert.equal(lines.length, 1, `stderr is not one human line:\n${ctx}`);
  const line = lines[0]!;
  assert.match(line, /^meshlane: \S/, `not a 'meshlane: ' line:\n${ctx}`);
  assert.ok(line.length < 400, `the line is ${line.length} characters long:\n${ctx}`);
  if (mentions) assert.match(line, mentions, ctx);
  return line;
}

// ---------------------------------------------------------------------------------------------------
// commander's own errors

test('an unknown flag: a short message naming the flag, exit 2, no stack', () => {
  for (const args of [['--bogus'], ['dump', '--bogus'], ['agent', '--cluster-file', 'x', '--bogus'], ['uninstall', '--bogus']]) {
    const r = cli(...args);
    const ctx = `meshlane ${args.join(' ')}: ${describe(r)}`;
    assert.ok(!r.error, ctx);
    assert.doesNotMatch(r.stderr, /^\s+at /m, ctx);
    assert.equal(r.status, 2, ctx);
    assert.match(r.stderr, /unknown option '--bogus'/, ctx);
    assert.ok(r.stderr.trim().split('\n').length <= 2, `more than a short message:\n${ctx}`);
    assert.equal(r.stdout, '', ctx);
  }
});

test('agent without --cluster-file', () => {
  assertOneLine(cli('agent'), /--cluster-file/);
});

test('a bad value for a choice option (agent --log-level)', () => {
  assertOneLine(cli('agent', '--cluster-file', emptyCluster, '--log-level', 'loud'), /--log-level/);
});

// ---------------------------------------------------------------------------------------------------
// errors of the commands themselves (as root)

const agentArgs = (clusterFile: string, bpffs: string): string[] => [
  'agent',
  '--cluster-file',
  clusterFile,
  '--cgroup-root',
  cgroup,
  '--bpffs',
  bpffs,
  '--state-dir',
  join(tmp, 'state-fail'),
  '--cni-socket',
  join(tmp, 'cni', 'cni.sock'),
];

test('agent --cluster-file /nonexistent', () => {
  assertOneLine(cliNoBpffs(...agentArgs('/nonexistent', '/sys/fs/bpf/meshlane-cli-errors')), /\/nonexistent/);
});

test('agent --cluster-file <invalid YAML>', () => {
  assertOneLine(cliNoBpffs(...agentArgs(badYaml, '/sys/fs/bpf/meshlane-cli-errors')), new RegExp(`cannot read cluster file ${badYaml}`));
});

test('agent --cgroup-root /tmp (not a cgroup2 directory)', () => {
  assertOneLine(
    cliNoBpffs(
      'agent',
      '--cluster-file',
      emptyCluster,
      '--cgroup-root',
      '/tmp',
      '--bpffs',
      '/sys/fs/bpf/meshlane-cli-errors',
      '--state-dir',
      join(tmp, 'state-fail'),
    ),
    /--cgroup-root \/tmp is not a cgroup v2 directory/,
  );
});

test('dump with nothing pinned under --bpffs', () => {
  assertOneLine(
    cli('dump', '--bpffs', '/sys/fs/bpf/meshlane-nothing-here'),
    /no meshlane maps are pinned under \/sys\/fs\/bpf\/meshlane-nothing-here.*meshlane agent/,
  );
});

test('dump with no bpffs mounted: says nothing is pinned / bpffs is not mounted, and the fix', () => {
  const line = assertOneLine(cliNoBpffs('dump'), /pinned|not mounted/);
  assert.match(line, /meshlane agent|mount -t bpf/);
  assertOneLine(cliNoBpffs('dump', 'pods', '--json'), /pinned|not mounted/);
});

// ---------------------------------------------------------------------------------------------------
// start-up failures: every way `meshlane agent` can fail once its flags and cluster file are good.
// Each must print its one line, exit 2 AT ONCE (a DaemonSet pod must not sit in Running with no
// capture), and leave under --bpffs exactly what was there before: nothing of its own, and an
// earlier install untouched. Each runs in a private mount namespace; the agent is run under
// `timeout -s KILL`, so a process that keeps running after its error shows as status 137.

const BPFFS = '/sys/fs/bpf/meshlane-cli-errors';

interface FailedStart {
  rc: number;
  stderr: string;
  pinsBefore: string;
  pinsAfter: string;
  /** a file the scenario's `after` script wrote to $OUT */
  file(name: string): string;
  ctx: string;
}

/**
 * In a private mount namespace with no bpffs: run `setup`, list everything under the bpffs dir, run
 * the agent with `args` (an empty cluster file, the test's cgroup, its own state dir unless args
 * give them), list again, run `after`. $OUT is a directory for the scripts' files, $CLI the CLI.
 */
function failedStart(name: string, o: { args?: string[]; setup?: string; after?: string; bpffs?: string; logLevel?: string }): FailedStart {
  const bpffs = o.bpffs ?? BPFFS;
  const out = join(tmp, `start-${name}`);
  mkdirSync(out);
  const args = [
    'agent',
    '--cluster-file',
    emptyCluster,
    '--cgroup-root',
    cgroup,
    '--bpffs',
    bpffs,
    '--state-dir',
    join(out, 'state'),
    '--cni-socket',
    join(out, 'cni', 'cni.sock'),
    ...(o.logLevel ? ['--log-level', o.logLevel] : []),
    ...(o.args ?? []),
  ];
  const script = `
while umount /sys/fs/bpf 2>/dev/null; do :; done
export OUT=${out} CLI="$1"
${o.setup ?? ''}
find ${bpffs} 2>/dev/null | sort > $OUT/pins-before
timeout -s KILL ${AGENT_WAIT_S} ${process.execPath} "$@" > $OUT/agent.out 2> $OUT/agent.err
echo $? > $OUT/agent.rc
find ${bpffs} 2>/dev/null | sort > $OUT/pins-after
${o.after ?? ''}
exit 0
`;
  // the last option wins in commander: args given by the scenario override the defaults above
  const r = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', CLI(), ...args], (AGENT_WAIT_S + 40) * 1000);
  const file = (n: string): string => (existsSync(join(out, n)) ? readFileSync(join(out, n), 'utf8') : `(no ${n})`);
  const res: FailedStart = {
    rc: Number(file('agent.rc').trim()),
    stderr: file('agent.err'),
    pinsBefore: file('pins-before'),
    pinsAfter: file('pins-after'),
    file,
    ctx: `meshlane ${args.join(' ')}\nscenario: ${describe(r)}\nagent exit status ${file('agent.rc').trim()}\nagent stderr:\n${file('agent.err')}\npins before:\n${file('pins-before')}\npins after:\n${file('pins-after')}`,
  };
  assert.equal(r.status, 0, res.ctx);
  return res;
}

/** Exit 2 at once, one line (when `oneLine`), nothing pinned that was not pinned before. */
function assertFailedStart(f: FailedStart, mentions: RegExp, oneLine = true): string {
  assert.notEqual(f.rc, 137, `the agent was still running ${AGENT_WAIT_S} s after its error:\n${f.ctx}`);
  let line: string;
  if (oneLine) line = assertErrorLine(f.rc, f.stderr, f.ctx, mentions);
  else {
    assert.equal(f.rc, 2, f.ctx);
    assert.doesNotMatch(f.stderr, /^\s+at /m, `stack trace on stderr:\n${f.ctx}`);
    line = f.stderr.trimEnd().split('\n').pop()!;
    assert.match(line, /^meshlane: \S/, f.ctx);
    assert.match(line, mentions, f.ctx);
  }
  assert.equal(f.pinsAfter, f.pinsBefore, `the failed start changed what is under ${BPFFS}:\n${f.ctx}`);
  return line;
}

test('agent --bpffs /dev/null/x (bpffs not usable): one line, exit 2 at once, nothing pinned', () => {
  const f = failedStart('devnull', { bpffs: '/dev/null/x' });
  assertFailedStart(f, /--bpffs \/dev\/null\/x: \/dev\/null is not a directory: give --bpffs a directory/);
});

test('agent --bpffs <a regular file>: one line, exit 2 at once, the file untouched', () => {
  const file = join(tmp, 'not-a-dir');
  writeFileSync(file, 'x');
  const f = failedStart('file', { bpffs: file });
  assertFailedStart(f, /--bpffs \S+not-a-dir is a file, not a directory/);
  assert.equal(readFileSync(file, 'utf8'), 'x');
});

test('agent on a read-only bpffs: one line, exit 2 at once, nothing pinned', () => {
  const f = failedStart('robpffs', { setup: 'mount -t bpf -o ro bpf /sys/fs/bpf' });
  assertFailedStart(f, /--bpffs \/sys\/fs\/bpf\/meshlane-cli-errors: \/sys\/fs\/bpf is on a read-only filesystem: .*remount it read-write/);
});

test('agent --state-dir naming a file, or a path under a file, or on a read-only mount: one line, exit 2 at once, nothing pinned', () => {
  const file = join(tmp, 'state-file');
  writeFileSync(file, 'x');
  assertFailedStart(
    failedStart('state-file', { args: ['--state-dir', file] }),
    /--state-dir \S+state-file is a file, not a directory: give --state-dir a directory/,
  );
  assertFailedStart(
    failedStart('state-under-file', { args: ['--state-dir', join(file, 'sub')] }),
    /--state-dir \S+state-file\/sub: \S+state-file is not a directory/,
  );
  const ro = join(tmp, 'ro');
  mkdirSync(ro);
  assertFailedStart(
    failedStart('state-ro', { setup: `mount -t tmpfs -o ro tmpfs ${ro}`, args: ['--state-dir', join(ro, 'state')] }),
    /--state-dir \S+\/ro\/state: \S+\/ro is on a read-only filesystem/,
  );
  assert.equal(readFileSync(file, 'utf8'), 'x');
});

test('a verifier refusal after an object loaded and pinned its maps: one line, exit 2 at once, nothing pinned', () => {
  // connect.bpf.o loads (and pins the maps it has); the next object is one the verifier refuses
  const objs = join(tmp, 'objects-refused');
  mkdirSync(objs);
  writeFileSync(join(objs, 'connect.bpf.o'), readFileSync(join(packageRoot(), 'bpf', 'build', 'connect.bpf.o')));
  writeFileSync(join(objs, 'sockops.bpf.o'), readFileSync(join(packageRoot(), 'test', 'fixtures', 'bad.bpf.o')));
  const f = failedStart('verifier', { args: ['--test-bpf-objects', objs] });
  assertFailedStart(f, /the verifier of kernel \S+ refused program 'bad_connect4'/);
});

/**
 * Fill one hook of the test's cgroup to the kernel's limit (64 programs per attach type) with links
 * this process holds, so the agent's attach of that hook fails with E2BIG after it attached the
 * programs before it. Returns the program id used and a function that detaches them all.
 */
function fillGetpeername4(): { progId: number; release: () => void } {
  const obj = new BpfObject(join(packageRoot(), 'bpf', 'build', 'peername.bpf.o'));
  const links: BpfLink[] = [];
  let cg: native.Fd | undefined;
  let prog: BpfProgram | undefined;
  const release = (): void => {
    for (const l of links.splice(0)) l.close();
    cg?.close();
    prog?.close();
    obj.close();
  };
  try {
    obj.load();
    prog = obj.program('meshlane_getpeername4');
    cg = native.openPath(cgroup);
    for (;;) {
      try {
        links.push(prog.attachCgroup(cg, AttachType.CGROUP_INET4_GETPEERNAME));
      } catch (e) {
        if (!(e instanceof BpfError) || e.code !== 'E2BIG') throw e;
        break;
      }
      assert.ok(links.length <= 1024, 'the kernel took more than 1024 programs on one hook');
    }
    return { progId: prog.info().id, release };
  } catch (e) {
    release();
    throw e;
  }
}

/** What is attached to the test's cgroup itself (bpftool), as [attach type, program id]. */
function attachedTo(cg: string): Array<[string, number]> {
  const out = spawnSync('bpftool', ['-j', 'cgroup', 'show', cg], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  return (JSON.parse(out.stdout || '[]') as Array<{ id: number; attach_type: string }>).map((x) => [x.attach_type, x.id]);
}

test('a failed agent start leaves nothing pinned: it fails after every object loaded, the maps were pinned and filled and links attached', (t) => {
  // the getpeername4 hook is full: the agent gets as far as attaching connect4 ... recvmsg6 (each
  // through a pinned link) and fails on getpeername4. Debug logs show what it had pinned and removed.
  const full = fillGetpeername4();
  t.after(full.release);
  const mine = attachedTo(cgroup);
  const f = failedStart('attach-debug', { logLevel: 'debug' });
  const line = assertFailedStart(
    f,
    /attaching the programs to cgroup \S+ failed \(E2BIG in bpf_link_create\): cgroup \S+ already has as many programs on one hook as the kernel allows/,
    false,
  );
  assert.equal(f.pinsBefore, '', 'nothing was pinned before');
  const logs = f.stderr
    .trimEnd()
    .split('\n')
    .filter((l) => l !== line)
    .map((l) => JSON.parse(l) as { msg: string; program?: string; removed?: string[] });
  const attachedBefore = logs.filter((l) => l.msg === 'program attached').map((l) => l.program);
  assert.deepEqual(attachedBefore.slice(0, 2), ['meshlane_connect4', 'meshlane_connect6'], `it attached programs before failing:\n${f.ctx}`);
  const removed = logs.find((l) => l.msg === 'start failed: removed what it had pinned')?.removed ?? [];
  for (const pin of ['maps/pods_v1', `maps/stats_v${MAPS.stats.version}`, 'links/meshlane_connect4', 'links/meshlane_sockops']) {
    assert.ok(removed.includes(`${BPFFS}/${pin}`), `${pin} was pinned by the failed start and removed:\n${removed.join('\n')}`);
  }
  assert.deepEqual(attachedTo(cgroup), mine, 'no program of the failed start is still attached to the cgroup');
});

test('attaching to the cgroup fails (a full hook): one line, exit 2 at once, nothing pinned, nothing attached', (t) => {
  const full = fillGetpeername4();
  t.after(full.release);
  const mine = attachedTo(cgroup);
  assert.ok(mine.length >= 64 && mine.every(([, id]) => id === full.progId), JSON.stringify(mine));
  const f = failedStart('attach', {});
  assertFailedStart(f, /attaching the programs to cgroup \S+ failed \(E2BIG in bpf_link_create\): .*bpftool cgroup show/);
  assert.deepEqual(attachedTo(cgroup), mine);
});

test('an earlier install on another cgroup: the start fails before touching it (pins, links, maps as they were)', () => {
  // install A (with splicing on, so the global switch is set) on the test's cgroup, stop it; then a
  // start on cgroup B with the same --bpffs (and splicing off) must refuse before it writes a map
  const stateA = '$OUT/state-a';
  const setup = `
"$CLI" agent --cluster-file ${emptyCluster} --cgroup-root ${cgroup} --bpffs ${BPFFS} --state-dir ${stateA} --cni-socket ${stateA}/cni.sock --splice > $OUT/a.out 2> $OUT/a.err &
pid=$!
i=0
while [ ! -s ${stateA}/status.json ] && [ $i -lt 200 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -TERM $pid; wait $pid; echo $? > $OUT/a.rc
"$CLI" dump --json --bpffs ${BPFFS} > $OUT/dump-before
for l in $(find ${BPFFS}/links -type f | sort); do bpftool link show pinned $l | head -1; done > $OUT/links-before`;
  const after = `
"$CLI" dump --json --bpffs ${BPFFS} > $OUT/dump-after
for l in $(find ${BPFFS}/links -type f | sort); do bpftool link show pinned $l | head -1; done > $OUT/links-after
bpftool cgroup show ${cgroupB} > $OUT/b-attached 2>&1
"$CLI" uninstall --bpffs ${BPFFS} > $OUT/uninstall.out 2>&1; echo $? > $OUT/uninstall.rc
find ${BPFFS} 2>/dev/null > $OUT/pins-end`;
  const f = failedStart('other-cgroup', { setup, after, args: ['--cgroup-root', cgroupB] });
  const ctx = `${f.ctx}\ninstall A:\n${f.file('a.err')}`;
  assert.equal(f.file('a.rc').trim(), '0', ctx);
  assert.match(f.pinsBefore, /\/links\/meshlane_connect4\n/, ctx);
  assertFailedStart(
    f,
    /the pinned link \S+ is attached to another cgroup than \S+meshlane-cli-errors-b-\d+: run 'meshlane uninstall --bpffs \S+' first, or use the same --cgroup-root/,
  );
  assert.match(f.file('dump-before'), /"global"/, ctx);
  assert.equal(f.file('dump-after'), f.file('dump-before'), 'the maps of install A are as they were (the splicing switch included)');
  assert.match(f.file('links-before'), /^\d+: cgroup /m, ctx);
  assert.equal(f.file('links-after'), f.file('links-before'), 'the links of install A are the same links, same programs');
  assert.equal(f.file('b-attached').trim(), '', 'nothing is attached to cgroup B');
  assert.equal(f.file('uninstall.rc').trim(), '0', f.file('uninstall.out'));
  assert.equal(f.file('pins-end'), '', f.file('uninstall.out'));
});

// ---------------------------------------------------------------------------------------------------
// no privilege

test('every command that needs root, run as an unprivileged user, says so', () => {
  const cases: string[][] = [['agent', '--cluster-file', 'X'], ['dump'], ['dump', '--bpffs', '/sys/fs/bpf/meshlane-nothing-here'], ['uninstall'], ['demo']];
  for (const args of cases) {
    const line = assertOneLine(cliUnprivileged(...args), /root/);
    assert.match(line, /sudo|privileged/, line);
  }
});

// ---------------------------------------------------------------------------------------------------
// bpffs not mounted: the agent mounts it itself

test('agent with no bpffs mounted mounts it, starts, stops on SIGTERM; uninstall removes everything', () => {
  const bpffs = '/sys/fs/bpf/meshlane-cli-errors';
  const state = join(tmp, 'state');
  const out = join(tmp, 'ns');
  mkdirSync(out);
  const script = `
while umount /sys/fs/bpf 2>/dev/null; do :; done
awk '$5 == "/sys/fs/bpf"' /proc/self/mountinfo > ${out}/mounts-before
"$@" agent --cluster-file ${emptyCluster} --cgroup-root ${cgroup} --bpffs ${bpffs} --state-dir ${state} --cni-socket ${state}/cni.sock > ${out}/agent.out 2> ${out}/agent.err &
pid=$!
echo $pid > ${out}/agent.pid
i=0
while [ ! -s ${state}/status.json ] && [ $i -lt 200 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i+1)); done
awk '$5 == "/sys/fs/bpf" { print $9 }' /proc/self/mountinfo > ${out}/mounts-running
find ${bpffs} -mindepth 1 ! -type d 2>/dev/null | sort > ${out}/pins-running
kill -TERM $pid 2>/dev/null
i=0
while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if kill -0 $pid 2>/dev/null; then echo still-running > ${out}/agent.rc; kill -KILL $pid; fi
wait $pid; echo $? >> ${out}/agent.rc
"$@" uninstall --bpffs ${bpffs} > ${out}/uninstall.out 2> ${out}/uninstall.err; echo $? > ${out}/uninstall.rc
find ${bpffs} 2>/dev/null > ${out}/pins-after
exit 0
`;
  let r: Run;
  try {
    r = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', process.execPath, CLI()], 60_000);
  } finally {
    const pidFile = join(out, 'agent.pid');
    if (existsSync(pidFile)) strays.push(Number(readFileSync(pidFile, 'utf8')));
  }
  const f = (n: string): string => (existsSync(join(out, n)) ? readFileSync(join(out, n), 'utf8') : `(no ${n})`);
  const ctx = `${describe(r)}\nagent stderr:\n${f('agent.err')}\nuninstall:\n${f('uninstall.out')}${f('uninstall.err')}`;
  assert.equal(r.status, 0, ctx);
  assert.equal(f('mounts-before'), '', 'the namespace still had a bpffs at /sys/fs/bpf');
  assert.ok(existsSync(join(state, 'status.json')), `the agent did not publish status.json:\n${ctx}`);
  const status = JSON.parse(readFileSync(join(state, 'status.json'), 'utf8')) as { pods: unknown[]; cgroupRoot: string; bpffs: string };
  assert.deepEqual(status.pods, []);
  assert.equal(status.cgroupRoot, cgroup);
  assert.equal(status.bpffs, bpffs);
  assert.equal(f('mounts-running').trim(), 'bpf', `the agent did not mount bpffs at /sys/fs/bpf:\n${ctx}`);
  assert.match(f('pins-running'), /\/maps\/pods_v\d+\n/, ctx);
  assert.match(f('pins-running'), /\/links\//, ctx);
  assert.equal(f('agent.rc').trim(), '0', `the agent did not exit 0 on SIGTERM:\n${ctx}`);
  assert.doesNotMatch(f('agent.err'), /^\s+at /m, ctx);
  assert.equal(f('uninstall.rc').trim(), '0', ctx);
  assert.match(f('uninstall.out'), /removed \d+ pins/, ctx);
  assert.equal(f('pins-after'), '', `left under ${bpffs} after uninstall:\n${f('pins-after')}`);
});

// ---------------------------------------------------------------------------------------------------
// help

test('--help of meshlane and of every command exits 0 and lists the options', () => {
  const top = cli('--help');
  assert.equal(top.status, 0, describe(top));
  for (const c of ['agent', 'dump', 'status', 'uninstall', 'demo']) assert.match(top.stdout, new RegExp(`^\\s+${c}\\b`, 'm'), top.stdout);
  const want: Record<string, string[]> = {
    agent: ['--cluster-file', '--cgroup-root', '--bpffs', '--state-dir', '--node-name', '--log-level'],
    dump: ['--bpffs', '--json'],
    status: ['--bpffs', '--state-dir', '--json'],
    uninstall: ['--bpffs'],
    demo: ['--keep'],
  };
  for (const [cmd, opts] of Object.entries(want)) {
    const r = cli(cmd, '--help');
    assert.equal(r.status, 0, `${cmd} --help: ${describe(r)}`);
    assert.equal(r.stderr, '', `${cmd} --help`);
    assert.match(r.stdout, new RegExp(`^Usage: meshlane ${cmd}`, 'm'), r.stdout);
    for (const o of opts) assert.match(r.stdout, new RegExp(`^\\s+${o}\\b`, 'm'), `${cmd} --help lacks ${o}:\n${r.stdout}`);
  }
});
