// status.json's text is written in pieces (statusPieces: a field, or one element of the pods and skipped
// arrays, each on a line), so that the agent never makes one string of a whole node's status. Readers parse
// the same status as before; the fields are indented as before, each pod is one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statusPath, statusPieces, writeStatus, type AgentStatus, type PodStatus } from '../../src/agent/status.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';

const pod = (n: number, extra: Partial<PodStatus> = {}): PodStatus => ({
  ref: { namespace: `ns-${n % 3}`, name: `app-${n}`, uid: `uid-${n}` },
  state: n % 2 ? 'captured' : 'pending',
  ...(n % 2
    ? { netnsCookie: String(4096 + n), podId: n, netns: { inode: String(4026531840 + n), how: 'sandbox', pid: 100 + n } }
    : { reason: 'no pod cgroup yet' }),
  ips: [`10.0.0.${n}`, `fd00::${n}`],
  settings: defaultCaptureSettings(),
  errors: n === 3 ? ['traffic.sidecar.istio.io/excludeOutboundPorts: "x" is not a port: fix it'] : [],
  unsupported: [],
  ...extra,
});

const status = (pods: PodStatus[], over: Partial<AgentStatus> = {}): AgentStatus => ({
  pid: 4242,
  startedAt: '2026-12-01T00:00:00.000Z',
  updatedAt: '',
  bpffs: '/sys/fs/bpf/meshlane',
  cgroupRoot: '/sys/fs/cgroup',
  source: 'cluster file /tmp/x "quoted"\nand a newline',
  sourceError: undefined,
  health: { ready: true, reasons: [] } as unknown as AgentStatus['health'],
  pods,
  skipped: [],
  ...over,
});

test('the pieces parse to the status, its fields indented as before and each pod on one line', () => {
  const cases: AgentStatus[] = [
    status([]),
    status([pod(1)]),
    status(Array.from({ length: 40 }, (_, i) => pod(i))),
    status([pod(2), pod(3, { handover: { inflight: 1, limit: 64, refusedAtLimit: 0, refusedNodeFull: 0 } })], {
      sourceError: 'the API server is unreachable',
      skipped: [{ ref: { namespace: 'a', name: 'b', uid: 'c' }, reason: 'not in a captured namespace' }],
    }),
  ];
  for (const s of cases) {
    const text = statusPieces(s).join('');
    assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(s)));
    assert.ok(text.endsWith('}\n'));
    const lines = text.split('\n');
    // every field as JSON.stringify(s, null, 2) has it, bar the arrays' elements
    const pretty = JSON.stringify({ ...s, pods: [], skipped: [] }, null, 2).split('\n');
    for (const l of pretty.filter((x) => !x.includes('[]'))) assert.ok(lines.includes(l), `line ${JSON.stringify(l)}`);
    for (const p of s.pods)
      assert.ok(
        lines.some((l) => l.startsWith(`    ${JSON.stringify(p)}`)),
        `pod ${p.ref.name} on a line of its own`,
      );
    for (const p of s.skipped) assert.ok(lines.includes(`    ${JSON.stringify(p)}`));
  }
});

test('no piece holds more than one pod', () => {
  const pods = Array.from({ length: 250 }, (_, i) => pod(i));
  const pieces = statusPieces(status(pods));
  const longest = Math.max(...pieces.map((p) => p.length));
  assert.ok(longest <= Math.max(...pods.map((p) => JSON.stringify(p).length)) + 8, `a piece of ${longest} characters`);
  assert.equal(pieces.filter((p) => p.includes('"ref"')).length, 250);
});

test('writeStatus writes the pieces whole, larger than one write', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-status-text-'));
  try {
    const s = status(Array.from({ length: 250 }, (_, i) => pod(i)));
    writeStatus(dir, statusPieces(s));
    const text = readFileSync(statusPath(dir), 'utf8');
    assert.ok(text.length > 64 * 1024, `only ${text.length} characters`);
    assert.equal(text, statusPieces(s).join(''));
    assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(s)));
    writeStatus(dir, statusPieces(status([pod(1)])));
    assert.deepEqual(JSON.parse(readFileSync(statusPath(dir), 'utf8')), JSON.parse(JSON.stringify(status([pod(1)]))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
