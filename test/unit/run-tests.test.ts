// scripts/run-tests.mjs, the test command itself: it must fail when any test was skipped or left todo
// (on these machines every feature is present, so a skip hides a failure), name what was skipped, and
// pass only a run where every test ran and passed. Runs the runner on the tiny fixture test files in
// test/fixtures/runner/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';

const fixture = (name: string): string => join(packageRoot(), 'test', 'fixtures', 'runner', name);

function runner(...files: string[]): { status: number | null; stdout: string; stderr: string } {
  // this file itself runs under node --test, which marks its children as test workers: the runner
  // must start a test run of its own
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, [join(packageRoot(), 'scripts', 'run-tests.mjs'), ...files], { encoding: 'utf8', env, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ctx = (r: { status: number | null; stdout: string; stderr: string }): string =>
  `exit ${r.status}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;

test('a run where every test passes exits 0 and reports no skip', () => {
  const r = runner(fixture('pass.mjs'));
  assert.equal(r.status, 0, ctx(r));
  assert.match(r.stdout, /fixture: inner passes/, 'the spec report is shown');
  assert.doesNotMatch(r.stderr, /skipped or todo/, ctx(r));
});

test('a skipped test fails the run and is named with its file and reason', () => {
  const r = runner(fixture('pass.mjs'), fixture('skip.mjs'));
  assert.equal(r.status, 1, ctx(r));
  assert.match(r.stderr, /1 test\(s\) skipped or todo/, ctx(r));
  assert.match(r.stderr, /skip {2}test\/fixtures\/runner\/skip\.mjs: fixture: needs a feature \(fixture feature missing\)/, ctx(r));
});

test('a subtest that skips itself at run time fails the run', () => {
  const r = runner(fixture('nested-skip.mjs'));
  assert.equal(r.status, 1, ctx(r));
  assert.match(r.stderr, /skip {2}\S*nested-skip\.mjs: fixture: inner skips itself \(decided at run time\)/, ctx(r));
});

test('a todo test fails the run', () => {
  const r = runner(fixture('todo.mjs'));
  assert.equal(r.status, 1, ctx(r));
  assert.match(r.stderr, /todo {2}\S*todo\.mjs: fixture: not written yet \(later\)/, ctx(r));
});

test('a failing test fails the run (and a skip beside it is still listed)', () => {
  const r = runner(fixture('fail.mjs'), fixture('skip.mjs'));
  assert.notEqual(r.status, 0, ctx(r));
  assert.match(r.stderr, /fixture: needs a feature/, ctx(r));
});

test('no test files: exits non-zero and says to build first', () => {
  const r = runner(join(packageRoot(), 'test', 'fixtures', 'runner', 'no-such-dir'));
  assert.equal(r.status, 1, ctx(r));
  assert.match(r.stderr, /no test files under .*no-such-dir: build first/, ctx(r));
});
