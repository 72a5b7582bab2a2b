// The agent's start-up helpers (src/agent/startup.ts) on plain directories: the directory flags, the
// removal of exactly what a failed start added, and every failure as one line. The same paths against
// the real kernel and bpffs are test/kernel/cli-errors.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBpffsFlag, checkStateDirFlag, pathsUnder, removeNewPaths, startupError, runStep, type Step } from '../../src/agent/startup.js';
import { UserError } from '../../src/util/errors.js';

function scratch(t: { after: (f: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'meshlane-startup-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const userError = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n');

test('--bpffs: a directory, or a path whose nearest existing ancestor is one', (t) => {
  const d = scratch(t);
  writeFileSync(join(d, 'file'), '');
  checkBpffsFlag(d);
  checkBpffsFlag(join(d, 'not', 'yet'));
  assert.throws(
    () => checkBpffsFlag(join(d, 'file')),
    userError(/^--bpffs \S+file is a file, not a directory: give --bpffs a directory on a bpf filesystem \(default \/sys\/fs\/bpf\/meshlane\)$/),
  );
  assert.throws(() => checkBpffsFlag(join(d, 'file', 'x', 'y')), userError(/^--bpffs \S+file\/x\/y: \S+file is not a directory: /));
  assert.throws(() => checkBpffsFlag('/dev/null/x'), userError(/^--bpffs \/dev\/null\/x: \/dev\/null is not a directory/));
});

test('--state-dir: the same, and it checks without creating anything', (t) => {
  const d = scratch(t);
  writeFileSync(join(d, 'file'), '');
  checkStateDirFlag(join(d, 'state'), '/run/meshlane');
  assert.throws(
    () => checkStateDirFlag(join(d, 'file'), '/run/meshlane'),
    userError(/^--state-dir \S+file is a file, not a directory: give --state-dir a directory meshlane may write \(default \/run\/meshlane\)$/),
  );
  // not writable: a read-only mount, in test/kernel/cli-errors.test.ts (root may write any directory)
  assert.equal(existsSync(join(d, 'state')), false, 'checking creates nothing');
});

test('a failed start removes exactly what appeared, files first, then its own directories', (t) => {
  const d = scratch(t);
  const bpffs = join(d, 'bpffs');
  mkdirSync(join(bpffs, 'maps'), { recursive: true });
  writeFileSync(join(bpffs, 'maps', 'old_v1'), '');
  const before = pathsUnder(bpffs);
  assert.deepEqual([...before].sort(), [bpffs, join(bpffs, 'maps'), join(bpffs, 'maps', 'old_v1')]);
  // what a start makes
  writeFileSync(join(bpffs, 'maps', 'new_v2'), '');
  mkdirSync(join(bpffs, 'links', 'netns', 'prog'), { recursive: true });
  writeFileSync(join(bpffs, 'links', 'netns', 'prog', '42'), '');
  writeFileSync(join(bpffs, 'links', 'connect4'), '');
  const removed = removeNewPaths(bpffs, before);
  assert.deepEqual([...pathsUnder(bpffs)].sort(), [...before].sort(), 'back to what was there');
  assert.deepEqual(
    removed.slice(-3),
    [join(bpffs, 'links', 'netns', 'prog'), join(bpffs, 'links', 'netns'), join(bpffs, 'links')],
    'directories last, deepest first',
  );
  assert.equal(removed.length, 6);
});

test('a failed start on a bpffs that did not exist removes the directory too', (t) => {
  const d = scratch(t);
  const bpffs = join(d, 'bpffs');
  const before = pathsUnder(bpffs);
  assert.equal(before.size, 0);
  mkdirSync(join(bpffs, 'maps'), { recursive: true });
  writeFileSync(join(bpffs, 'maps', 'pods_v1'), '');
  removeNewPaths(bpffs, before);
  assert.equal(existsSync(bpffs), false);
});

const step: Step = {
  what: 'attaching the programs to cgroup /cg',
  where: 'check --cgroup-root /cg',
  e2big: 'the hook of /cg is full: detach some',
  fallback: 'MESHLANE_DEBUG=1 shows the cause',
};
const errno = (code: string, syscall: string, message = `${syscall}: ${code}`): Error => Object.assign(new Error(message), { code, syscall });

test('every start-up failure is one line: UserErrors keep theirs, system errors name the step, the errno and the fix', () => {
  const u = new UserError('already one line: fix it');
  assert.equal(startupError(u, step), u);
  assert.equal(
    startupError(errno('E2BIG', 'bpf_link_create'), step).message,
    'attaching the programs to cgroup /cg failed (E2BIG in bpf_link_create): the hook of /cg is full: detach some',
  );
  assert.equal(
    startupError(errno('EROFS', 'mkdir'), step).message,
    'attaching the programs to cgroup /cg failed (EROFS in mkdir): the filesystem is read-only: check --cgroup-root /cg',
  );
  assert.equal(
    startupError(errno('EBADF', 'close'), step).message,
    'attaching the programs to cgroup /cg failed (EBADF in close): MESHLANE_DEBUG=1 shows the cause',
  );
  assert.equal(
    startupError(new TypeError('x is not a function'), step).message,
    'attaching the programs to cgroup /cg failed (x is not a function): MESHLANE_DEBUG=1 shows the cause',
  );
  const cause = errno('ENOENT', 'mkdir');
  const e = startupError(cause, { ...step, diagnose: () => 'a closer look: the precise line' });
  assert.equal(e.message, 'a closer look: the precise line', 'a diagnosis wins');
  assert.equal(e.cause, cause, 'the cause is kept for MESHLANE_DEBUG');
  assert.equal(
    startupError(cause, { ...step, diagnose: () => undefined }).message,
    'attaching the programs to cgroup /cg failed (ENOENT in mkdir): a path is not what meshlane expects: check --cgroup-root /cg',
  );
  assert.equal(
    runStep(step, () => 7),
    7,
  );
  assert.throws(
    () =>
      runStep(step, () => {
        throw errno('E2BIG', 'bpf_link_create');
      }),
    userError(/hook of \/cg is full/),
  );
});
