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
// No outcome depends on how fast anything runs: a stalled reader holds until a gate file exists
// (transfer.ts --hold-until), and the test opens the gate once the kernel shows the state it waits for
// (the counters: fallbacks, sockets that left; the node's TCP memory), or once the agent has restarted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uninstall } from '../../src/dataplane/dataplane.js';
import { packageRoot } from '../../src/util/paths.js';
import { CLI, cleanupAgent, cli, dumpJson, stopAgent, waitFor } from '../support/harness.js';
import { B_V4, MiB, SpliceWorld, assertAllOk, delta, peakTcpMem, tcpMemBytes } from '../support/splice.js';

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
  assert.match(
    st.stdout,
    /^counters: .* splice_fallback=\d+ splice_fallback_peer=\d+ splice_no_peer=\d+ splice_switched_off=\d+ splice_left=\d+ splice_retarget_fail=0( |$)/m,
    st.stdout,
  );
  const g = dumpJson(BPFFS).maps.global;
  assert.deepEqual(g, [{ flags: ['SPLICE'], splice: true, splice_budget: '4 MiB', splice_grace_ms: 1000 }]);
  assert.ok(dumpJson(BPFFS).links.includes('meshlane_splice_sockops'), 'the splice sockops program is linked');
});

/**
 * The slow reader of the issue: 512 MiB from B, the reader reads nothing until `stalled` says the
 * writer is as far ahead as it will get (then the gate opens and it reads everything).
 */
async function slowReader(
  id: string,
  stalled: (d: Record<string, number>, growth: number) => boolean,
  what: string,
): Promise<{ peak: number; d: Record<string, number> }> {
  const c0 = w.counters();
  const gate = w.file(`${id}.gate`);
  const { value: r, peakGrowth } = await peakTcpMem(async (base) => {
    const run = w.client(toB, ['--mode', 'source', '--bytes', String(SLOW_BYTES), '--hold-until', gate, '--seed', '71', '--id', id], 120_000);
    try {
      await waitFor(() => stalled(delta(c0, w.counters()), tcpMemBytes() - base), 60_000, what);
    } finally {
      w.open(gate);
    }
    return run;
  });
  assertAllOk(r, `slow reader ${id}`);
  return { peak: peakGrowth, d: delta(c0, w.counters()) };
}

test('a slow reader behind a fast writer through app, proxy, proxy, app: node TCP memory stays bounded, every byte exact', async (t) => {
  // bounded: the reader holds until every hop (proxy A -> app, proxy B -> proxy A, server -> proxy B)
  // has fallen back, i.e. the writer is held back by TCP all along the path
  const bounded = await slowReader('slow-bounded', (d) => d.splice_fallback! >= 3, 'the three hops behind the stalled reader to fall back');
  t.diagnostic(
    `bounded (4 MiB): peak node TCP memory +${mib(bounded.peak)}; fallbacks ${bounded.d.splice_fallback}, followed ${bounded.d.splice_fallback_peer}, left ${bounded.d.splice_left}`,
  );
  assert.ok(bounded.d.splice_fallback! >= 1, `the stalled reader made no direction fall back: ${JSON.stringify(bounded.d)}`);
  assert.equal(bounded.d.splice_retarget_fail, 0);
  assert.ok(bounded.peak < SLOW_BOUND, `node TCP memory grew by ${mib(bounded.peak)} with a ${mib(BUDGET)} budget (bound ${mib(SLOW_BOUND)})`);
  // the same with a budget nothing reaches: the writer piles up what it ran ahead (what the bound prevents)
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--splice-budget', '1GiB']);
  // a budget nothing reaches: the reader holds until the kernel holds more than the bound (what the
  // bound prevents); if that never comes, this test could not tell bounded from unbounded
  const wide = await slowReader(
    'slow-wide',
    (_d, growth) => growth > SLOW_BOUND,
    `node TCP memory to grow past ${mib(SLOW_BOUND)} behind the stalled reader with a 1 GiB budget`,
  );
  t.diagnostic(`budget 1 GiB: peak node TCP memory +${mib(wide.peak)}; fallbacks ${wide.d.splice_fallback}`);
  assert.equal(wide.d.splice_fallback, 0, 'a 1 GiB budget is never reached by a 512 MiB transfer');
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent([]);
});

test('a reader that stalls and resumes: its direction falls back, the sockets leave sock_pairs, every byte exact', async (t) => {
  const c0 = w.counters();
  const gate = w.file('pause.gate');
  // the reader stops after 16 MiB and holds until its direction fell back and the sender (proxy A) left
  // sock_pairs; its own socket can leave only once it has read what was redirected to it, after the gate
  const run = w.client(
    toB,
    ['--mode', 'source', '--bytes', String(128 * MiB), '--pause-after', String(16 * MiB), '--hold-until', gate, '--seed', '72', '--id', 'pause'],
    60_000,
  );
  try {
    await w.untilCounters(c0, (d) => d.splice_fallback! >= 1 && d.splice_left! >= 1, 'the stalled direction to fall back and its sender to leave sock_pairs');
  } finally {
    w.open(gate);
  }
  assertAllOk(await run, 'stall and resume');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}`);
  assert.ok(d.splice_fallback! >= 1, JSON.stringify(d));
  // the one that fell back and the peer it marked, at least
  assert.ok(d.splice_left! >= 2, `sockets that left sock_pairs after the fallback: ${JSON.stringify(d)}`);
});

test('writes larger than the budget: the fallback falls inside one write (the rest of it goes through TCP), every byte exact', async (t) => {
  const c0 = w.counters();
  // the server writes 6 MiB + 4093 bytes at a time, more than the budget, so its hop crosses the budget
  // inside a write (redirect, then the rest of the write through TCP); the reader holds until every hop
  // has backed up behind it and fallen back. 48 writes (288 MiB) is more than the path's buffers hold.
  const chunk = 6 * MiB + 4093;
  const gate = w.file('midmsg.gate');
  const run = w.client(
    toB,
    ['--mode', 'source', '--bytes', String(48 * chunk), '--chunk', String(chunk), '--hold-until', gate, '--seed', '73', '--id', 'midmsg'],
    90_000,
  );
  try {
    await w.untilCounters(c0, (d) => d.splice_fallback! >= 3, "every hop behind the stalled reader to fall back (the server's inside a write)");
  } finally {
    w.open(gate);
  }
  assertAllOk(await run, 'writes larger than the budget');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}`);
  assert.equal(d.splice_retarget_fail, 0);
});

test('many connections, some falling back: 20 stalled and 20 fast readers, every byte exact; sock_pairs empties as they close', async (t) => {
  const c0 = w.counters();
  const gate = w.file('many.gate');
  // the 20 stalled readers hold until their 20 connections have fallen back (16 MiB each, 4 times the
  // budget: each one must); the fast ones run meanwhile (some of them may fall back too)
  const slow = w.client(
    toB,
    ['--mode', 'source', '--bytes', String(16 * MiB), '--concurrency', '20', '--hold-until', gate, '--seed', '300', '--id', 'many-slow'],
    90_000,
  );
  const fast = w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--concurrency', '20', '--seed', '400', '--id', 'many-fast'], 90_000);
  assertAllOk(await fast, '20 fast readers');
  try {
    await w.untilCounters(c0, (d) => d.splice_fallback! >= 20, "the stalled readers' connections to fall back");
  } finally {
    w.open(gate);
  }
  assertAllOk(await slow, '20 stalled readers');
  const d = delta(c0, w.counters());
  t.diagnostic(`fallbacks ${d.splice_fallback}, followed ${d.splice_fallback_peer}, left ${d.splice_left}, spliced ${d.spliced}`);
  // 40 connections, 6 sockets each, all same-node pairs
  assert.equal(d.spliced, 240, `every socket of the 40 connections went into sock_pairs: ${JSON.stringify(d)}`);
  // the proxies close their sockets once they have seen both ends close: then sock_pairs is empty
  await waitFor(() => w.pairs().length === 0, 15_000, `sock_pairs to empty once the connections closed (${JSON.stringify(w.pairs().slice(0, 4))})`);
});

test('the agent SIGKILLed and restarted mid-transfer: the new programs take over the old sockets, every byte exact', async (t) => {
  const c0 = w.counters();
  // stalled readers: their directions fall back (48 MiB each), and their own sockets can leave only once
  // they read again, after the restart, in the new sockops program (the splice state is pinned)
  const gate = w.file('restart.gate');
  const running = w.client(
    toB,
    ['--mode', 'source', '--bytes', String(48 * MiB), '--concurrency', '4', '--hold-until', gate, '--seed', '500', '--id', 'restart'],
    90_000,
  );
  let c1: Record<string, number>;
  try {
    await w.untilCounters(c0, (d) => d.splice_fallback! >= 4, 'the 4 stalled directions to fall back');
    await stopAgent(w.agent, 'SIGKILL');
    await w.startAgent([]);
    c1 = w.counters();
  } finally {
    w.open(gate);
  }
  assertAllOk(await running, 'transfers across the restart');
  const c2 = w.counters();
  const before = delta(c0, c1);
  const since = delta(c1, c2);
  t.diagnostic(
    `before the restart was done: fallbacks ${before.splice_fallback}, left ${before.splice_left}; after: fallbacks ${since.splice_fallback}, left ${since.splice_left}`,
  );
  assert.ok(before.splice_fallback! + since.splice_fallback! >= 4, JSON.stringify({ before, since }));
  assert.ok(since.splice_left! >= 4, `the stalled readers' sockets left sock_pairs after the restart: ${JSON.stringify(since)}`);
});

test('the switch turned off live: live directions go to the stack and leave sock_pairs, new connections are not spliced, every byte exact', async (t) => {
  // a budget nothing reaches first, so that only the switch moves directions to the stack
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--splice-budget', '1GiB']);
  const c0 = w.counters();
  // 8 echo connections write and read 4 MiB, then hold (neither side sends) until the switch is off; the
  // 28 MiB each sends after it go through TCP
  const gate = w.file('switch.gate');
  const running = w.client(
    toB,
    [
      '--mode',
      'echo',
      '--bytes',
      String(32 * MiB),
      '--chunk',
      '65536',
      '--concurrency',
      '8',
      '--pause-after',
      String(4 * MiB),
      '--hold-until',
      gate,
      '--seed',
      '600',
      '--id',
      'switch',
    ],
    90_000,
  );
  try {
    await w.untilCounters(c0, (d) => d.spliced! >= 48, 'the 8 connections (6 sockets each) in sock_pairs');
    await stopAgent(w.agent, 'SIGTERM');
    await w.startAgent(['--no-splice']);
  } finally {
    w.open(gate);
  }
  assertAllOk(await running, 'transfers across the switch');
  const d = delta(c0, w.counters());
  t.diagnostic(`switched off ${d.splice_switched_off}, followed ${d.splice_fallback_peer}, fallbacks ${d.splice_fallback}, left ${d.splice_left}`);
  assert.equal(d.splice_fallback, 0, 'no direction reached the budget');
  assert.ok(
    d.splice_switched_off! >= 1 && d.splice_switched_off! + d.splice_fallback_peer! >= 8,
    `every connection's live directions went to the stack: ${JSON.stringify(d)}`,
  );
  assert.ok(d.splice_left! >= 8, `and their sockets left sock_pairs while open: ${JSON.stringify(d)}`);
  const c1 = w.counters();
  const lo0 = await w.loBytes();
  assertAllOk(await w.client(toB, ['--mode', 'sink', '--bytes', String(2 * MiB), '--seed', '601', '--id', 'after-off']), 'a new connection');
  assert.ok((await w.loBytes()) - lo0 >= 2 * MiB, 'a new connection goes through lo');
  assert.equal(delta(c1, w.counters()).spliced, 0, 'nothing spliced with the switch off');
});

test('--splice-budget out of range, or not a size: one line, exit 2, before anything starts', () => {
  for (const [v, re] of [
    ['512KiB', /^meshlane: --splice-budget 512KiB is out of range: give a size from 1 MiB to 1 GiB/],
    ['huge', /^meshlane: --splice-budget 'huge' is not a size/],
  ] as const) {
    const r = spawnSync(process.execPath, [CLI(), 'agent', '--cluster-file', '/nonexistent', '--bpffs', BPFFS, '--splice-budget', v], {
      encoding: 'utf8',
      timeout: 30_000,
    });
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
  const refused = spawnSync(
    process.execPath,
    [
      CLI(),
      'agent',
      '--cluster-file',
      w.agent!.clusterFile,
      '--cgroup-root',
      w.topo.sb.cgroupRoot,
      '--bpffs',
      BPFFS,
      '--state-dir',
      join(tmp, 'state-refused'),
      '--test-bpf-objects',
      objs,
      '--splice',
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(refused.status, 2, refused.stderr);
  assert.match(
    refused.stderr,
    /^meshlane: --splice: kernel \S+ cannot bound the splice backlog: redirected bytes are not charged to the receiving socket .*: run without --splice \(splicing stays off\), or on Linux 6\.13 or newer\n$/,
  );
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
