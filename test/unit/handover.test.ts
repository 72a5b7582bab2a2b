// The agent's side of the per-pod hand-over bound (src/dataplane/handover.ts) with fake maps: what is read
// back for status, which counts are removed (released pods, once drained), the per-pod limit written, and
// the log rate-limited per pod (never one line per connection). The programs' side is
// test/kernel/handover-limit.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HandoverWatch, LOG_EVERY_MS, DEFAULT_PER_POD, MAX_PER_POD, readHandover, writeHandoverLimit } from '../../src/dataplane/handover.js';
import { Stat } from '../../src/dataplane/layouts.js';
import type { Logger } from '../../src/util/log.js';

type Count = { inflight: bigint; refused_pod: bigint; refused_node: bigint };

/** Just what handover.ts calls of the maps. */
function fakeMaps(counts: Array<[bigint, Count]>, podCookies: bigint[], stats: Partial<Record<(typeof Stat)[number], bigint>> = {}) {
  const handover = new Map(counts);
  let limits: { handover_per_pod: number; handover_node: number } | null = null;
  const maps = {
    handover: { entries: () => [...handover], delete: (k: bigint) => handover.delete(k) },
    pods: { get: (k: bigint) => (podCookies.includes(k) ? {} : null) },
    limits: { get: () => limits, set: (_k: number, v: { handover_per_pod: number; handover_node: number }) => void (limits = v) },
    stats: { get: (i: number) => stats[Stat[i]!] ?? 0n },
  };
  return { handover, maps: maps as unknown as Parameters<typeof readHandover>[0] };
}

const count = (inflight: number, refusedPod = 0, refusedNode = 0): Count => ({
  inflight: BigInt(inflight),
  refused_pod: BigInt(refusedPod),
  refused_node: BigInt(refusedNode),
});

function fakeLog() {
  const lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void lines.push({ level, fields, msg });
  return { lines, log: { warn: at('warn'), error: at('error'), info: at('info'), debug: at('debug') } as unknown as Logger };
}

test('the per-pod limit goes to limits[0]; none given: the default; out of range: refused', () => {
  const { maps } = fakeMaps([], []);
  assert.equal(writeHandoverLimit(maps, 32), 32);
  assert.deepEqual(maps.limits.get(0), { handover_per_pod: 32, handover_node: 65536 - 1024 });
  assert.equal(writeHandoverLimit(maps, undefined), DEFAULT_PER_POD);
  assert.throws(() => writeHandoverLimit(maps, 0), RangeError);
  assert.throws(() => writeHandoverLimit(maps, MAX_PER_POD + 1), RangeError);
  // a smaller orig_by_tuple (--max-connections): its 16th per pod, the node refused a 16th below it
  assert.equal(writeHandoverLimit(maps, undefined, 256), 16);
  assert.deepEqual(maps.limits.get(0), { handover_per_pod: 16, handover_node: 240 });
  assert.equal(writeHandoverLimit(maps, 240, 256), 240);
  assert.throws(() => writeHandoverLimit(maps, 241, 256), /1\.\.240 \(orig_by_tuple holds 256\)/);
});

test("the captured pods' counts and the node's are read; a released pod's count goes once drained and its pods entry is gone", () => {
  const { maps, handover } = fakeMaps(
    [
      [0n, count(40)],
      [11n, count(32, 7, 1)], // captured
      [12n, count(0)], // released, drained, no pods entry: removed
      [13n, count(3)], // released, still in flight: kept
      [14n, count(0)], // not in status yet, but its pods entry is written (being enrolled): kept
    ],
    [11n, 14n],
    { refused_pod_limit: 7n, refused_node_full: 1n, handover_full: 0n },
  );
  writeHandoverLimit(maps, 32);
  const r = readHandover(maps, new Set([11n]));
  const small = fakeMaps([[0n, count(3)]], []);
  writeHandoverLimit(small.maps, undefined, 64);
  assert.deepEqual(
    (({ capacity, refuseFrom, perPodLimit }) => ({ capacity, refuseFrom, perPodLimit }))(readHandover(small.maps, new Set(), 64).node),
    { capacity: 64, refuseFrom: 60, perPodLimit: 4 },
    'the figures of a map sized by --max-connections',
  );
  assert.deepEqual([...r.pods], [['11', { inflight: 32, limit: 32, refusedAtLimit: 7, refusedNodeFull: 1 }]]);
  assert.deepEqual(r.node, {
    inflight: 40,
    capacity: 65536,
    refuseFrom: 65536 - 1024,
    perPodLimit: 32,
    refusedPodLimit: 7,
    refusedNodeFull: 1,
    handoverFull: 0,
  });
  assert.deepEqual([...handover.keys()], [0n, 11n, 13n, 14n]);
});

test('refusals are logged at once, then at most every LOG_EVERY_MS per pod with the number since; poll says when status changes', () => {
  const { lines, log } = fakeLog();
  const w = new HandoverWatch(log);
  const pods = [
    { ref: { namespace: 'demo', name: 'a' }, netnsCookie: '11' },
    { ref: { namespace: 'demo', name: 'b' }, netnsCookie: '12' },
  ];
  const at = (a: Count, t: number): boolean =>
    w.poll(
      fakeMaps(
        [
          [0n, count(Number(a.inflight))],
          [11n, a],
          [12n, count(0)],
        ],
        [11n, 12n],
      ).maps,
      pods,
      t,
    );

  assert.equal(at(count(32, 5), 1_000), true);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.level, 'warn');
  assert.deepEqual({ pod: lines[0]!.fields.pod, refused: lines[0]!.fields.refused }, { pod: 'demo/a', refused: 5 });
  // a thousand more within the interval: no line; status changes
  assert.equal(at(count(32, 1_005), 2_000), true);
  assert.equal(at(count(32, 1_005), 3_000), false); // nothing changed
  assert.equal(lines.length, 1);
  // after the interval: one line with the refusals since the last one
  at(count(32, 1_010), 1_000 + LOG_EVERY_MS);
  assert.equal(lines.length, 2);
  assert.equal(lines[1]!.fields.refused, 1_005);
  // no new refusals: nothing logged however long it holds its limit
  at(count(32, 1_010), 1_000 + 3 * LOG_EVERY_MS);
  assert.equal(lines.length, 2);

  // figures in status: a copy with the pod's figures; the other pod has its own (zeros); the node's
  const a = w.annotate(pods[0]!);
  assert.deepEqual(a.handover, { inflight: 32, limit: DEFAULT_PER_POD, refusedAtLimit: 1_010, refusedNodeFull: 0 });
  assert.equal('handover' in pods[0]!, false);
  assert.equal(w.annotate(pods[1]!).handover?.refusedAtLimit, 0);
  assert.equal(w.node()?.inflight, 32);
});

test('hand-overs the node could not store are logged (error), rate-limited too; a failed read is logged once', () => {
  const { lines, log } = fakeLog();
  const w = new HandoverWatch(log);
  w.poll(fakeMaps([[0n, count(0)]], [], { handover_full: 3n }).maps, [], 0);
  w.poll(fakeMaps([[0n, count(0)]], [], { handover_full: 9n }).maps, [], 1_000);
  assert.deepEqual(
    lines.map((l) => [l.level, l.fields.handoverFull]),
    [['error', 3]],
  );
  const broken = {
    handover: {
      entries: () => {
        throw new Error('EPERM');
      },
    },
    limits: { get: () => null },
  } as unknown as Parameters<typeof readHandover>[0];
  assert.equal(w.poll(broken, [], 2_000), false);
  assert.equal(w.poll(broken, [], 3_000), false);
  assert.equal(lines.filter((l) => l.msg.startsWith('reading the hand-over counts failed')).length, 1);
});
