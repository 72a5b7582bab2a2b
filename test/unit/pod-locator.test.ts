// The pure parts of the pod locator: the start time from /proc/<pid>/stat, the oldest-first order, what the
// pins say about each pod's netns, and how status shows it. The locator itself (real processes, real netns)
// is tested in test/kernel/netns-identity.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { oldestFirst, parseStartTime, pinnedNetns } from '../../src/agent/pod-locator.js';
import { netnsLine } from '../../src/inspect/status.js';

const stat = (comm: string, start: number): string =>
  `4242 (${comm}) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 ${start} 5574656 210 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0`;

test('start time is field 22 of /proc/<pid>/stat, counted after the command name', () => {
  assert.equal(parseStartTime(stat('sleep', 209041)), 209041n);
  // a process may name itself anything: spaces and parentheses in comm do not shift the fields
  assert.equal(parseStartTime(stat('a) R 1 2 3 (b', 77)), 77n);
  assert.equal(parseStartTime(stat(') 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0', 5)), 5n);
  assert.equal(parseStartTime('4242 (x) S 1 2'), undefined, 'truncated');
  assert.equal(parseStartTime('garbage'), undefined);
});

test('start time of this process: the kernel agrees with the parser (a later process starts no earlier)', () => {
  const self = parseStartTime(readFileSync('/proc/self/stat', 'utf8'));
  const init = parseStartTime(readFileSync('/proc/1/stat', 'utf8'));
  assert.ok(self !== undefined && init !== undefined);
  assert.ok(init <= self);
});

test('oldest first: by start time, ties by pid', () => {
  const procs = [
    { pid: 30, start: 500n },
    { pid: 12, start: 700n },
    { pid: 40, start: 500n },
    { pid: 7, start: 900n },
  ];
  assert.deepEqual(
    [...procs].sort(oldestFirst).map((p) => p.pid),
    [30, 40, 12, 7],
  );
});

test('pins: each pod uid with the cookie its pods entry has; unknown ids and doubly claimed uids left out', () => {
  const pods: Array<[bigint, { pod_id: number }]> = [
    [4097n, { pod_id: 1 }],
    [8193n, { pod_id: 2 }],
    [12289n, { pod_id: 9 }], // no pod_info: a crash between two writes
    [16385n, { pod_id: 3 }],
    [20481n, { pod_id: 4 }],
  ];
  const info: Array<[number, { uid: string }]> = [
    [1, { uid: 'a' }],
    [2, { uid: 'b' }],
    [3, { uid: 'c' }],
    [4, { uid: 'c' }],
  ];
  assert.deepEqual(
    [...pinnedNetns(pods, info)],
    [
      ['a', 4097n],
      ['b', 8193n],
    ],
  );
  assert.equal(pinnedNetns([], info).size, 0);
});

test('status shows the netns inode and how it was found', () => {
  assert.equal(netnsLine({ inode: '4026532180', how: 'sandbox', pid: 1234 }), 'netns=4026532180 via sandbox process 1234');
  assert.equal(netnsLine({ inode: '4026532180', how: 'pins', pid: 1234 }), 'netns=4026532180 restored from pins, confirmed by sandbox process 1234');
  assert.equal(
    netnsLine({ inode: '4026532180', how: 'sandbox', pid: 1234, heldBy: 1300 }),
    'netns=4026532180 via sandbox process 1234 (gone; held by process 1300)',
  );
  assert.equal(netnsLine({ inode: '4026532180', how: 'cni' }), 'netns=4026532180 via cni');
  assert.equal(netnsLine({ inode: '4026532180', how: 'cni', heldBy: 77 }), 'netns=4026532180 via cni (held by process 77)');
});
