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
import { CLI } from '../support/harness.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';

const UNPRIVILEGED = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups'];
const TIMEOUT_MS = 12_000;

let tmp = '';
let cgroup = '';
let emptyCluster = '';
let badYaml = '';
const strays: number[] = [];

const bpffsMounts = (): string[] =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' - ')[1]?.startsWith('bpf '))
    .map((l) => l.split(' ')[4]!);
let hostBpffs: string[] = [];

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-cli-errors-'));
  cgroup = join(cgroup2Mount(), `meshlane-cli-errors-${process.pid}`);
  mkdirSync(cgroup);
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
  if (cgroup && existsSync(cgroup)) {
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(cgroup);
        break;
      } catch {
        spawnSync('sleep', ['0.1']);
      }
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  // the private mount namespaces never touched the machine's bpffs
  assert.deepEqual(bpffsMounts(), hostBpffs);
  assert.ok(!existsSync(cgroup), `cgroup ${cgroup} left behind`);
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
  run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'while umount /sys/fs/bpf 2>/dev/null; do :; done; exec "$@"', 'sh', process.execPath, CLI(), ...args]);

function describe(r: Run): string {
  return `exit status ${r.status}, signal ${r.signal}${r.error ? `, ${r.error.message}` : ''}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`;
}

/** The project rule: exit 2, stderr is one line `meshlane: ...`, no stack trace. Returns that line. */
function assertOneLine(r: Run, mentions?: RegExp): string {
  const ctx = describe(r);
  assert.ok(!r.error, `did not finish within ${TIMEOUT_MS} ms (the CLI hangs after the error):\n${ctx}`);
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
  'agent', '--cluster-file', clusterFile, '--cgroup-root', cgroup, '--bpffs', bpffs, '--state-dir', join(tmp, 'state-fail'),
];

test('agent --cluster-file /nonexistent', () => {
  assertOneLine(cliNoBpffs(...agentArgs('/nonexistent', '/sys/fs/bpf/meshlane-cli-errors')), /\/nonexistent/);
});

test('agent --cluster-file <invalid YAML>', () => {
  assertOneLine(cliNoBpffs(...agentArgs(badYaml, '/sys/fs/bpf/meshlane-cli-errors')), new RegExp(`cannot read cluster file ${badYaml}`));
});

test('a failed agent start leaves nothing pinned', () => {
  // the cluster file is read after the maps are loaded: a bad one must not leave pinned maps behind
  const bpffs = '/sys/fs/bpf/meshlane-cli-errors';
  const script = `while umount /sys/fs/bpf 2>/dev/null; do :; done
timeout -s KILL 10 "$@" >/dev/null 2>&1
find ${bpffs} -mindepth 1 ! -type d 2>/dev/null | sort`;
  const r = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', process.execPath, CLI(), ...agentArgs('/nonexistent', bpffs)], 30_000);
  assert.equal(r.status, 0, describe(r));
  assert.equal(r.stdout, '', `pins left by a failed start:\n${r.stdout}`);
});

test('agent --cgroup-root /tmp (not a cgroup2 directory)', () => {
  assertOneLine(
    cliNoBpffs('agent', '--cluster-file', emptyCluster, '--cgroup-root', '/tmp', '--bpffs', '/sys/fs/bpf/meshlane-cli-errors', '--state-dir', join(tmp, 'state-fail')),
    /--cgroup-root \/tmp is not a cgroup v2 directory/,
  );
});

test('dump with nothing pinned under --bpffs', () => {
  assertOneLine(cli('dump', '--bpffs', '/sys/fs/bpf/meshlane-nothing-here'), /no meshlane maps are pinned under \/sys\/fs\/bpf\/meshlane-nothing-here.*meshlane agent/);
});

test('dump with no bpffs mounted: says nothing is pinned / bpffs is not mounted, and the fix', () => {
  const line = assertOneLine(cliNoBpffs('dump'), /pinned|not mounted/);
  assert.match(line, /meshlane agent|mount -t bpf/);
  assertOneLine(cliNoBpffs('dump', 'pods', '--json'), /pinned|not mounted/);
});

// ---------------------------------------------------------------------------------------------------
// no privilege

test('every command that needs root, run as an unprivileged user, says so', () => {
  const cases: string[][] = [
    ['agent', '--cluster-file', 'X'],
    ['dump'],
    ['dump', '--bpffs', '/sys/fs/bpf/meshlane-nothing-here'],
    ['uninstall'],
    ['demo'],
  ];
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
"$@" agent --cluster-file ${emptyCluster} --cgroup-root ${cgroup} --bpffs ${bpffs} --state-dir ${state} > ${out}/agent.out 2> ${out}/agent.err &
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
