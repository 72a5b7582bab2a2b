// The bounded splice backlog against the real kernel, every byte checked (sha256 of the seeded stream).
// The node of splice.test.ts: app A -> proxy A -> proxy B -> server B, six spliced sockets. The agent
// runs as it does by default (the kernel check passes on these machines: splicing on, 4 MiB per
// direction). A reader that stalls behind a fast writer must not pile the transfer up in the kernel:
// the direction falls back to TCP, its peer follows, both leave sock_pairs once nothing of theirs is
// in flight; node TCP memory (/proc/net/sockstat) stays bounded. Also: a reader that stalls and
// resumes, writes larger than the budget (the fallback falls inside one write), many connections with
// some falling back, the agent SIGKILLed and restarted mid-transfer (the new programs take over the old
// sockets' state), the switch turned off live, and a kernel that cannot bound the backlog (a program
// that behaves like one): splicing stays off, status says why, --splice refuses to start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uninstall } from '../../src/dataplane/dataplane.js';
import { packageRoot } from '../../src/util/paths.js';
import { CLI, cleanupAgent, cli, dumpJson, stopAgent } from '../support/harness.js';
import { B_V4, MiB, SpliceWorld, assertAllOk, delta, peakTcpMem } from '../support/splice.js';

const PORT = 9000;
const BPFFS = '/sys/fs/bpf/meshlane-test-splice-bound';
const toB = `${B_V4}:${PORT}`;
/** The default budget (src/dataplane/splice.ts SPLICE_BUDGET_DEFAULT). */
const BUDGET = 4 * MiB;
/** A slow reader's download: what an unbounded splice piles up (the writer runs this far ahead). */
const SLOW_BYTES = 512 * MiB;
/** The bound on the node's TCP memory with the slow reader: a quarter of what it downloads. Three
 * spliced hops may each hold the budget, plus what TCP holds once they fall back (tens of MiB); an
 * unbounded splice holds what the writer ran ahead during the stall, nearly all of it. */
const SLOW_BOUND = SLOW_BYTES / 4;

let w: SpliceWorld;
const tmp = mkdtempSync(join(tmpdir(), 'meshlane-splice-bound-'));

before(async () => {
  w = await SpliceWorld.create('mlsb', BPFFS, { b: ['b', [PORT]] });
  await w.startAgent([]); // the default agent
});

after(async () => {
  await cleanupAgent(w?.agent);
  uninstall(BPFFS);
  await w?.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

test('the default agent: the kernel check passes, splicing is on and bounded (status, dump global)', () => {
  const st = cli(['status', '--bpffs', BPFFS, '--state-dir', w.agent!.stateDir]);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /^splicing: on \(bounded: at most 4 MiB unread per direction, then that connection goes through TCP\)$/m, st.stdout);
  assert.match(st.stdout, /^counters: .* splice_fallback=\d+ splice_fallback_peer=\d+ splice_no_peer=\d+ splice_switched_off=\d+ splice_left=\d+ splice_retarget_fail=0$/m, st.stdout);
  const g = dumpJson(BPFFS).maps.global;
  assert.deepEqual(g, [{ flags: ['SPLICE'], splice: true, splice_budget: '4 MiB', splice_grace_ms: 1000 }]);
  assert.ok(dumpJson(BPFFS).links.includes('meshlane_splice_sockops'), 'the splice sockops program is linked');
});

/** The slow reader of the issue: 512 MiB from B, the reader stalls 3 s first. */
async function slowReader(id: string): Promise<{ peak: number; d: Record<string, number> }> {
  const c0 = w.counters();
  const { value: r, peakGrowth } = await peakTcpMem(() => w.client(toB, ['--mode', 'source', '--bytes', String(SLOW_BYTES), '--stall-ms', '3000', '--seed', '71', '--id', id], 120_000));
  assertAllOk(r, `slow reader ${id}`);
  return { peak: peakGrowth, d: delta(c0, w.counters()) };
}

test('a slow reader behind a fast writer through app, proxy, proxy, app: node TCP memory stays bounded, every byte exact', async (t) => {
  const bounded = await slowReader('slow-bounded');
  t.diagnostic(`bounded (4 MiB): peak node TCP memory +${mib(bounded.peak)}; fallbacks ${bounded.d.splice_fallback}, followed ${bounded.d.splice_fallback_peer}, left ${bounded.d.splice_left}`);
  assert.ok(bounded.d.splice_fallback! >= 1, `the stalled reader made no direction fall back: ${JSON.stringify(bounded.d)}`);
  assert.equal(bounded.d.splice_retarget_fail, 0);
  assert.ok(bounded.peak < SLOW_BOUND, `node TCP memory grew by ${mib(bounded.peak)} with a ${mib(BUDGET)} budget (bound ${mib(SLOW_BOUND)})`);
  // the same with a budget nothing reaches: the writer piles up what it ran ahead (what the bound prevents)
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--splice-budget', '1GiB']);
  const wide = await slowReader('slow-wide');
  t.diagnostic(`budget 1 GiB: peak node TCP memory +${mib(wide.peak)}; fallbacks ${wide.d.splice_fallback}`);
  assert.ok(wide.peak > SLOW_BOUND, `without a reachable budget the stall should pile up more than ${mib(SLOW_BOUND)}, it grew by ${mib(wide.peak)}: this test cannot tell bounded from unbounded`);
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent([]);
});

test('a reader that stalls and resumes: its direction falls back, the sockets leave sock_pairs, every byte exact', async (t) => {
  const c0 = w.counters();
  const r = await w.client(toB, ['--mode', 'source', '--bytes', String(128 * MiB), '--pause-after', String(16 * MiB), '--pause-ms', '2000', '--seed', '72', '--id', 'pause'], 60_000);
  assertAllOk(r, 'stall and resume');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}`);
  assert.ok(d.splice_fallback! >= 1, JSON.stringify(d));
  // the one that fell back and the peer it marked, at least
  assert.ok(d.splice_left! >= 2, `sockets that left sock_pairs after the fallback: ${JSON.stringify(d)}`);
});

test('writes larger than the budget: the fallback falls inside one write (the rest of it goes through TCP), every byte exact', async (t) => {
  const c0 = w.counters();
  // the server writes 6 MiB + 4093 bytes at a time; the stalled reader backs every hop up, so the
  // server's own hop crosses the 4 MiB budget in the middle of a write
  const chunk = 6 * MiB + 4093;
  const r = await w.client(toB, ['--mode', 'source', '--bytes', String(16 * chunk), '--chunk', String(chunk), '--stall-ms', '1500', '--seed', '73', '--id', 'midmsg'], 60_000);
  assertAllOk(r, 'writes larger than the budget');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}`);
  assert.ok(d.splice_fallback! >= 3, `every hop backs up behind the stalled reader and falls back (the server's inside a write): ${JSON.stringify(d)}`);
  assert.equal(d.splice_retarget_fail, 0);
});

test('many connections, some falling back: 20 stalled and 20 fast readers, every byte exact; sock_pairs empties as they close', async (t) => {
  const c0 = w.counters();
  const [slow, fast] = await Promise.all([
    w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--concurrency', '20', '--stall-ms', '1500', '--seed', '300', '--id', 'many-slow'], 60_000),
    w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--concurrency', '20', '--seed', '400', '--id', 'many-fast'], 60_000),
  ]);
  assertAllOk(slow, '20 stalled readers');
  assertAllOk(fast, '20 fast readers');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}, spliced ${d.spliced}`);
  assert.ok(d.splice_fallback! >= 20, `each stalled reader's connection falls back: ${JSON.stringify(d)}`);
  await new Promise((r) => setTimeout(r, 200));
  const left = w.pairs();
  assert.equal(left.length, 0, `closed connections are out of sock_pairs: ${JSON.stringify(left.slice(0, 4))}`);
});

test('the agent SIGKILLed and restarted mid-transfer: the new programs take over the old sockets, every byte exact', async (t) => {
  const c0 = w.counters();
  // stalled readers: their directions fall back at once, and their own sockets can leave only once they
  // read again, after the restart, in the new sockops program (the splice state is pinned)
  const running = w.client(toB, ['--mode', 'source', '--bytes', String(48 * MiB), '--concurrency', '4', '--stall-ms', '5000', '--seed', '500', '--id', 'restart'], 60_000);
  await new Promise((r) => setTimeout(r, 300));
  await stopAgent(w.agent, 'SIGKILL');
  await w.startAgent([]);
  const c1 = w.counters();
  assertAllOk(await running, 'transfers across the restart');
  const c2 = w.counters();
  const before = delta(c0, c1);
  const since = delta(c1, c2);
  t.diagnostic(`before the restart was done: fallbacks ${before.splice_fallback}, left ${before.splice_left}; after: fallbacks ${since.splice_fallback}, left ${since.splice_left}`);
  assert.ok(before.splice_fallback! + since.splice_fallback! >= 4, JSON.stringify({ before, since }));
  assert.ok(since.splice_left! >= 4, `the stalled readers' sockets left sock_pairs after the restart: ${JSON.stringify(since)}`);
});

test('the switch turned off live: live directions go to the stack and leave sock_pairs, new connections are not spliced, every byte exact', async (t) => {
  // a budget nothing reaches first, so that only the switch moves directions to the stack
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--splice-budget', '1GiB']);
  const c0 = w.counters();
  const running = w.client(toB, ['--mode', 'echo', '--bytes', String(64 * MiB), '--chunk', '65536', '--concurrency', '8', '--seed', '600', '--id', 'switch'], 60_000);
  await new Promise((r) => setTimeout(r, 300));
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--no-splice']);
  assertAllOk(await running, 'transfers across the switch');
  const d = delta(c0, w.counters());
  t.diagnostic(`switched off ${d.splice_switched_off}, followed ${d.splice_fallback_peer}, fallbacks ${d.splice_fallback}, left ${d.splice_left}`);
  assert.equal(d.splice_fallback, 0, 'no direction reached the budget');
  assert.ok(d.splice_switched_off! >= 1 && d.splice_switched_off! + d.splice_fallback_peer! >= 8, `every connection's live directions went to the stack: ${JSON.stringify(d)}`);
  assert.ok(d.splice_left! >= 8, `and their sockets left sock_pairs while open: ${JSON.stringify(d)}`);
  const c1 = w.counters();
  const lo0 = await w.loBytes();
  assertAllOk(await w.client(toB, ['--mode', 'sink', '--bytes', String(2 * MiB), '--seed', '601', '--id', 'after-off']), 'a new connection');
  assert.ok((await w.loBytes()) - lo0 >= 2 * MiB, 'a new connection goes through lo');
  assert.equal(delta(c1, w.counters()).spliced, 0, 'nothing spliced with the switch off');
});

test('--splice-budget out of range, or not a size: one line, exit 2, before anything starts', () => {
  for (const [v, re] of [['512KiB', /^meshlane: --splice-budget 512KiB is out of range: give a size from 1 MiB to 1 GiB/], ['huge', /^meshlane: --splice-budget 'huge' is not a size/]] as const) {
    const r = spawnSync(process.execPath, [CLI(), 'agent', '--cluster-file', '/nonexistent', '--bpffs', BPFFS, '--splice-budget', v], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('a kernel that cannot bound the backlog: splicing stays off and status says why; --splice refuses to start', async () => {
  // the real objects, but a splice.bpf.o that redirects with no charge to the receiver, as such a
  // kernel behaves (test/fixtures/splice-uncharged.bpf.c)
  const objs = join(tmp, 'objects');
  const built = join(packageRoot(), 'bpf', 'build');
  mkdirSync(objs, { recursive: true });
  for (const f of readdirSync(built)) if (f.endsWith('.bpf.o')) copyFileSync(join(built, f), join(objs, f));
  copyFileSync(join(packageRoot(), 'test', 'fixtures', 'splice-uncharged.bpf.o'), join(objs, 'splice.bpf.o'));
  await stopAgent(w.agent, 'SIGTERM');
  const refused = spawnSync(process.execPath, [CLI(), 'agent', '--cluster-file', w.agent!.clusterFile, '--cgroup-root', w.topo.sb.cgroupRoot, '--bpffs', BPFFS, '--state-dir', join(tmp, 'state-refused'), '--test-bpf-objects', objs, '--splice'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(refused.status, 2, refused.stderr);
  assert.match(refused.stderr, /^meshlane: --splice: kernel \S+ cannot bound the splice backlog: redirected bytes are not charged to the receiving socket .*: run without --splice \(splicing stays off\), or on Linux 6\.13 or newer\n$/);
  await w.startAgent([], { objDir: objs });
  const st = cli(['status', '--bpffs', BPFFS, '--state-dir', w.agent!.stateDir]);
  assert.match(st.stdout, /^splicing: off: kernel \S+ cannot bound the splice backlog: redirected bytes are not charged to the receiving socket/m, st.stdout);
  const d = dumpJson(BPFFS);
  assert.equal((d.maps.global as Array<{ splice: boolean }>)[0]!.splice, false);
  assert.ok(!d.links.includes('meshlane_splice_sockops'), `the splice sockops program is not linked: ${d.links.join(', ')}`);
  assert.match(w.agent!.log(), /"level":40,.*"msg":"capture active; splicing off: kernel \S+ cannot bound the splice backlog: /, 'the agent warns');
  const c0 = w.counters();
  const lo0 = await w.loBytes();
  assertAllOk(await w.client(toB, ['--mode', 'sink', '--bytes', String(8 * MiB), '--seed', '700', '--id', 'uncharged']), 'a transfer');
  assert.ok((await w.loBytes()) - lo0 >= 8 * MiB, 'it went through lo');
  assert.equal(delta(c0, w.counters()).spliced, 0);
});
