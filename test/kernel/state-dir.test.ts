// Who can touch the agent's state dir and status.json, and what happens when status cannot be written.
//  - The state dir must be root's and writable by root only: a file, a symlink, a directory of uid 1000, a
//    group- or world-writable one, or one under a parent others may swap it in, is refused with one line.
//  - status.json is 0644 whatever the umask, and a file or symlink planted where it goes is replaced, never
//    followed or truncated.
//  - Writing status is best effort: while it fails, the running agent goes on following its source (a pod
//    added meanwhile is captured), logs the failure, and writes status again once it can.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareStateDir, statusPath, statusPieces, writeStatus, type AgentStatus } from '../../src/agent/status.js';
import { UserError } from '../../src/util/errors.js';
import {
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  startAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  type Topology,
  type AgentRun,
} from '../support/harness.js';

const USER = 1000;
let work: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), 'meshlane-statedir-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

const refused = (dir: string, why: RegExp): void => {
  assert.throws(
    () => prepareStateDir(dir),
    (e: unknown) => e instanceof UserError && why.test(e.message) && !e.message.includes('\n'),
  );
};

test('a missing state dir is created 0755 whatever the umask', () => {
  const old = process.umask(0o077);
  try {
    const dir = join(work, 'new', 'state');
    prepareStateDir(dir);
    assert.equal(statSync(dir).mode & 0o7777, 0o755);
  } finally {
    process.umask(old);
  }
});

test("a state dir that is a file, a symlink, another user's, or writable by others is refused", () => {
  const file = join(work, 'file');
  writeFileSync(file, '');
  refused(file, /is not a directory/);

  const target = join(work, 'target');
  mkdirSync(target, { mode: 0o755 });
  const link = join(work, 'link');
  symlinkSync(target, link);
  refused(link, /is a symbolic link/);

  const theirs = join(work, 'theirs');
  mkdirSync(theirs, { mode: 0o755 });
  chownSync(theirs, USER, USER);
  refused(theirs, /is owned by uid 1000/);

  const open = join(work, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  refused(open, /writable by group or others/);

  const parent = join(work, 'parent');
  mkdirSync(parent);
  chmodSync(parent, 0o777);
  mkdirSync(join(parent, 'state'), { mode: 0o755 });
  refused(join(parent, 'state'), /parent of --state-dir .* is writable by others/);

  const theirParent = join(work, 'their-parent');
  mkdirSync(theirParent, { mode: 0o755 });
  mkdirSync(join(theirParent, 'state'), { mode: 0o755 });
  chownSync(theirParent, USER, USER);
  refused(join(theirParent, 'state'), /parent of --state-dir .* is owned by uid 1000/);

  // /tmp-like: world-writable but sticky is fine
  const sticky = join(work, 'sticky');
  mkdirSync(sticky);
  chmodSync(sticky, 0o1777);
  assert.equal(prepareStateDir(join(sticky, 'state')), join(sticky, 'state'));
});

function status(): AgentStatus {
  return { pid: process.pid, startedAt: '', updatedAt: '', bpffs: '', cgroupRoot: '', source: 'test', pods: [], skipped: [] };
}

test('status.json is written 0644 under any umask; a planted file or symlink is replaced, not followed', () => {
  const dir = prepareStateDir(join(work, 'plant'));
  const victim = join(work, 'victim');
  writeFileSync(victim, 'keep me');
  symlinkSync(victim, statusPath(dir));
  const old = process.umask(0o077);
  try {
    writeStatus(dir, statusPieces(status()));
  } finally {
    process.umask(old);
  }
  assert.equal(readFileSync(victim, 'utf8'), 'keep me');
  const st = lstatSync(statusPath(dir));
  assert.ok(st.isFile(), 'status.json is a regular file now');
  assert.equal(st.mode & 0o7777, 0o644);
  assert.equal((JSON.parse(readFileSync(statusPath(dir), 'utf8')) as AgentStatus).source, 'test');
});

// ---- the running agent ------------------------------------------------------------------------------

const LATE_UID = '3b0c6d1e-8a2f-4e5d-9c7b-6a5f4e3d2c1b';
let topo: Topology | undefined;
let agent: AgentRun | undefined;

after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

test('while status cannot be written the agent goes on following its source, and writes it again later', async () => {
  topo = await makeTopology({ prefix: 'mlsd' });
  const late = await topo.sb.addPod({ namespace: 'demo', name: 'late', uid: LATE_UID, ipv4: '10.244.0.30' });
  topo.procs.push(late.spawn('sleep', ['600'], { container: 'app' })); // the agent locates a pod by its processes
  const ns = namespaceObject('demo', { 'istio-injection': 'enabled' });
  agent = await startAgent(topo.sb, [ns, podObject()], 'statedir');
  const podIds = (): number => (dumpJson(agent!.bpffs).maps.pods as unknown[]).length;
  await waitFor(() => podIds() === 1, 10_000, 'the first pod in the maps');

  // Break status writing: the state dir is replaced by a regular file.
  rmSync(agent.stateDir, { recursive: true, force: true });
  writeFileSync(agent.stateDir, 'not a directory');
  agent.write([ns, podObject(), podObject({ name: 'late', uid: LATE_UID, ipv4: late.ipv4, ipv6: '' })]);
  await waitFor(() => podIds() === 2, 10_000, 'the late pod captured while status.json cannot be written');
  assert.equal(agent.proc.exitCode, null, 'the agent is still running');
  await waitFor(() => /writing status.json failed/.test(agent!.log()), 10_000, 'the failure logged');

  // Repair: the next change is published again.
  rmSync(agent.stateDir, { force: true });
  mkdirSync(agent.stateDir, { mode: 0o755 });
  agent.write([ns, podObject()]);
  await waitFor(
    () => {
      const st = agent!.status();
      return st !== undefined && st.pods.length === 1 && podIds() === 1;
    },
    10_000,
    'status.json written again after the repair',
  ).catch((e: Error) => {
    throw new Error(
      `${e.message}; status: ${JSON.stringify(agent!.status()?.pods.map((p) => p.ref.name))}; log tail: ${agent!.log().split('\n').slice(-8).join(' | ')}`,
    );
  });
  assert.match(agent.log(), /status.json written again/);
});
