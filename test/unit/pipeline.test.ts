// The pipeline's steps with fakes: the store's dirty sets, the per-pod planner and the address index, the
// writer's fail-closed rollback on a full map, and the pipeline itself (incremental work, nothing removed
// before the source's complete state, a big pod that does not hold up the others, the enrolment seam)
// over an in-memory dataplane that stores keys and values through the real layouts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ObjectStore } from '../../src/agent/store.js';
import { IdAllocator, IpIndex, Mirror, planPod, ipKey, type Actual, type Op } from '../../src/agent/plan.js';
import { MapFullError, writePod, type MapWriter } from '../../src/agent/reconcile.js';
import { Pipeline, type DataplaneIo, type Locator, type RuntimeReader } from '../../src/agent/pipeline.js';
import { compilePod } from '../../src/agent/desired.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';
import { MAPS } from '../../src/dataplane/layouts.js';
import type { Location } from '../../src/agent/pod-locator.js';
import type { DesiredPod } from '../../src/model/types.js';

const log = pino({ level: 'silent' });

// ---- fixtures ----

const ns = (name: string, labels: Record<string, string> = { 'istio-injection': 'enabled' }, rv?: string): object => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels, ...(rv ? { resourceVersion: rv } : {}) },
});

interface PodOpts {
  ns?: string;
  ip?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  rv?: string;
}

const podObj = (name: string, o: PodOpts = {}): Record<string, unknown> => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name,
    namespace: o.ns ?? 'shop',
    uid: `uid-${name}`,
    labels: o.labels ?? {},
    annotations: { 'sidecar.istio.io/status': '{}', ...(o.annotations ?? {}) },
    ...(o.rv ? { resourceVersion: o.rv } : {}),
  },
  spec: { nodeName: 'n1', containers: [{ name: 'app' }, { name: 'istio-proxy' }] },
  status: { phase: 'Running', podIP: o.ip ?? '10.244.0.10', qosClass: 'BestEffort' },
});

const cidrs = (n: number): string => Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`).join(',');

// ---- the store ----

test('store: a pod change dirties that pod; a label change of its namespace dirties all its pods; equal objects dirty nothing', () => {
  const s = new ObjectStore();
  const d0 = s.apply({ type: 'replace', namespaces: [ns('shop'), ns('other')], pods: [podObj('a'), podObj('b'), podObj('c', { ns: 'other' })] });
  assert.deepEqual([...d0].sort(), ['uid-a', 'uid-b', 'uid-c']);
  assert.deepEqual(
    [...s.apply({ type: 'replace', namespaces: [ns('shop'), ns('other')], pods: [podObj('a'), podObj('b'), podObj('c', { ns: 'other' })] })],
    [],
    'the same state again: nothing',
  );
  assert.deepEqual([...s.apply({ type: 'upsert', kind: 'Pod', object: podObj('a', { annotations: { x: '1' } }) })], ['uid-a']);
  assert.deepEqual([...s.apply({ type: 'upsert', kind: 'Namespace', object: ns('shop', { 'istio-injection': 'disabled' }) })].sort(), ['uid-a', 'uid-b']);
  assert.deepEqual(
    [...s.apply({ type: 'upsert', kind: 'Namespace', object: { ...ns('shop', { 'istio-injection': 'disabled' }), spec: { finalizers: ['kubernetes'] } } })],
    [],
    'only labels matter',
  );
  assert.deepEqual([...s.apply({ type: 'delete', kind: 'Pod', object: podObj('b') })], ['uid-b']);
  assert.deepEqual([...s.apply({ type: 'delete', kind: 'Namespace', object: ns('other') })], ['uid-c']);
  // a replace that drops a pod and changes another
  const d = s.apply({ type: 'replace', namespaces: [ns('shop', { 'istio-injection': 'disabled' })], pods: [podObj('a', { annotations: { x: '2' } })] });
  assert.deepEqual([...d].sort(), ['uid-a', 'uid-c']);
  assert.equal(s.pods.size, 1);
});

test("store: with resourceVersions on both sides, they decide when they are the API server's; a file's are not trusted", () => {
  const file = new ObjectStore();
  file.apply({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('a', { rv: '5' })] });
  assert.deepEqual(
    [...file.apply({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('a', { rv: '5', annotations: { edited: 'by hand' } })] })],
    ['uid-a'],
  );
  const s = new ObjectStore(true);
  s.apply({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('a', { rv: '5' })] });
  assert.deepEqual([...s.apply({ type: 'upsert', kind: 'Pod', object: podObj('a', { rv: '5', annotations: { ignored: 'same rv' } }) })], []);
  assert.deepEqual([...s.apply({ type: 'upsert', kind: 'Pod', object: podObj('a', { rv: '6' }) })], ['uid-a']);
});

// ---- planner: ids, per pod, linear ----

test('ids: lowest free first, released ids come back, ids in use are never handed out', () => {
  const ids = new IdAllocator();
  ids.use(2);
  ids.use(5);
  assert.deepEqual([ids.allocate(), ids.allocate(), ids.allocate(), ids.allocate()], [1, 3, 4, 6]);
  ids.release(3);
  ids.release(1);
  assert.deepEqual([ids.allocate(), ids.allocate(), ids.allocate()], [1, 3, 7]);
});

const desired = (name: string, settings: Partial<DesiredPod['settings']> = {}, ips = ['10.244.0.10']): DesiredPod => ({
  ref: { namespace: 'shop', name, uid: `uid-${name}` },
  ips,
  qosClass: 'BestEffort',
  settings: { ...defaultCaptureSettings(), ...settings },
  errors: [],
  unsupported: [],
});

test('planPod: unchanged pod no ops; a changed one a new generation, the flip, then the old one; linear in the entries', () => {
  const m = new Mirror();
  const many = (n: number): DesiredPod['settings']['outboundExclude'] =>
    Array.from({ length: n }, (_, i) => ({ family: 4 as const, addr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, prefix: 32 }));
  const e1 = compilePod(desired('a', { outboundExclude: many(40_000) }));
  const fake = new FakeMaps();
  const p1 = planPod(1n, e1, undefined, m.ids);
  assert.equal(p1.sets.filter((o) => o.map === 'pod_cidrs4').length, 40_000);
  assert.equal(p1.cleanup.length, 0);
  fake.applyAll([...p1.sets, p1.flip!]);
  const mirror = Mirror.from(fake.actual());
  assert.deepEqual(
    planPod(1n, compilePod(desired('a', { outboundExclude: many(40_000) })), mirror.pods.get(1n), mirror.ids).sets,
    [],
    'the same 40,000 entries: no ops',
  );
  const p2 = planPod(1n, compilePod(desired('a', { outboundExclude: many(39_999) })), mirror.pods.get(1n), mirror.ids);
  assert.equal(p2.id, 2);
  assert.equal(p2.sets.filter((o) => o.map === 'pod_cidrs4').length, 39_999);
  assert.equal(p2.cleanup.filter((o) => o.map === 'pod_cidrs4').length, 40_000);
  assert.ok(p2.cleanup.every((o) => o.op === 'delete'));
});

test('address index: the pod that held an address first keeps it; the other is told; the holder letting go hands it on', () => {
  const ix = new IpIndex();
  const k = ipKey(4, '10.244.0.10');
  ix.claim('a', 1n, [k]);
  ix.claim('b', 2n, [k]);
  assert.equal(ix.holder(k)?.uid, 'a');
  assert.deepEqual(ix.conflicts('a'), [{ ip: k, holder: 'a', others: ['b'] }]);
  assert.deepEqual(ix.conflicts('b'), [{ ip: k, holder: 'a', others: ['a'] }]);
  ix.release('a');
  assert.equal(ix.holder(k)?.uid, 'b');
  assert.deepEqual(ix.conflicts('b'), []);
  // after a restart the pins name the holder: it keeps the address whoever is handled first
  const r = new IpIndex();
  r.seed(new Map([[k, 7n]]));
  r.claim('late', 8n, [k]);
  r.claim('pinned', 7n, [k]);
  assert.equal(r.holder(k)?.uid, 'pinned');
});

// ---- the writer ----

/** In-memory maps through the real layouts, with each map's capacity (ENOSPC / E2BIG as the kernel). */
class FakeMaps implements MapWriter {
  readonly m = new Map<string, Map<string, Buffer>>();
  writes = 0;
  capacity: Partial<Record<string, number>> = {};

  private map(name: string): Map<string, Buffer> {
    let x = this.m.get(name);
    if (!x) this.m.set(name, (x = new Map()));
    return x;
  }

  apply(op: Op): void {
    this.writes++;
    const def = MAPS[op.map];
    const k = def.key.encode(op.key as never).toString('hex');
    const m = this.map(op.map);
    if (op.op === 'delete') {
      m.delete(k);
      return;
    }
    const cap = this.capacity[op.map] ?? def.maxEntries;
    if (!m.has(k) && m.size >= cap) throw Object.assign(new Error(`${op.map} full`), { code: def.type === 11 ? 'ENOSPC' : 'E2BIG' });
    m.set(k, def.value.encode(('value' in op ? op.value : 1) as never));
  }

  applyAll(ops: Op[]): void {
    for (const op of ops) this.apply(op);
  }

  size(name: string): number {
    return this.map(name).size;
  }

  private entries(name: keyof typeof MAPS): Array<[any, any]> {
    const def = MAPS[name];
    return [...this.map(name)].map(([k, v]) => [def.key.decode(Buffer.from(k, 'hex')), def.value.decode(v)]);
  }

  actual(): Actual {
    return {
      pods: this.entries('pods'),
      sets: {
        pod_ports: this.entries('pod_ports').map(([k]) => k),
        pod_cidrs4: this.entries('pod_cidrs4').map(([k]) => k),
        pod_cidrs6: this.entries('pod_cidrs6').map(([k]) => k),
        pod_dns: this.entries('pod_dns').map(([k]) => k),
        pod_ifaces: this.entries('pod_ifaces').map(([k]) => k),
      },
      info: this.entries('pod_info'),
      byIp4: this.entries('pod_by_ip4'),
      byIp6: this.entries('pod_by_ip6'),
    };
  }
}

test('writer: a pod whose new generation does not fit keeps its last good entries, never half-written; the map is named', async () => {
  const maps = new FakeMaps();
  maps.capacity.pod_cidrs4 = 100;
  const mirror = Mirror.from(maps.actual());
  const few = compilePod(desired('a', { outboundExclude: [{ family: 4, addr: '10.0.0.0', prefix: 8 }] }));
  assert.equal((await writePod(maps, mirror, planPod(1n, few, undefined, mirror.ids))).ok, true);
  const before = JSON.stringify(maps.actual(), (_k, v) => (typeof v === 'bigint' ? String(v) : v));
  // 99 more do not fit beside the old generation: refused by the count before any write
  const big = compilePod(desired('a', { outboundExclude: Array.from({ length: 100 }, (_, i) => ({ family: 4 as const, addr: `10.1.0.${i}`, prefix: 32 })) }));
  const cap = { capacity: (m: string) => maps.capacity[m] ?? 65536 };
  const r = await writePod(maps, mirror, planPod(1n, big, mirror.pods.get(1n), mirror.ids), cap);
  assert.equal(r.ok, false);
  assert.ok(r.error instanceof MapFullError && r.error.map === 'pod_cidrs4', String(r.error));
  assert.equal(r.writes, 0);
  assert.equal(
    JSON.stringify(maps.actual(), (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
    before,
    'the maps are as they were',
  );
  // the kernel says full when the count did not know (someone else filled the map): rolled back
  maps.capacity.pod_cidrs4 = 50;
  const mid = compilePod(desired('a', { outboundExclude: Array.from({ length: 60 }, (_, i) => ({ family: 4 as const, addr: `10.2.0.${i}`, prefix: 32 })) }));
  const r2 = await writePod(maps, mirror, planPod(1n, mid, mirror.pods.get(1n), mirror.ids)); // the count thinks 65536
  assert.equal(r2.ok, false);
  assert.ok(r2.error instanceof MapFullError && /ENOSPC/.test(r2.error.message), String(r2.error));
  assert.equal(
    JSON.stringify(maps.actual(), (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
    before,
    'the half-written generation is gone',
  );
  assert.equal(mirror.pods.get(1n)?.config.pod_id, 1);
  // a fresh id that failed is free again
  maps.capacity.pod_cidrs4 = 100;
  assert.equal((await writePod(maps, mirror, planPod(1n, compilePod(desired('a')), mirror.pods.get(1n), mirror.ids))).ok, true);
  assert.equal(mirror.pods.get(1n)?.config.pod_id, 2);
});

// ---- the pipeline, with a fake locator, runtime and dataplane ----

class FakeLocator implements Locator {
  /** uid -> cookie of its netns; absent: no cgroup yet */
  readonly netns = new Map<string, bigint>();
  calls = 0;
  bound: Array<[string, unknown]> = [];

  locate(uid: string): Location {
    this.calls++;
    const cookie = this.netns.get(uid);
    if (cookie === undefined) return { found: false, reason: 'no pod cgroup yet', waiting: true };
    return {
      found: true,
      netnsCookie: cookie,
      netnsInode: cookie,
      how: this.cni.has(uid) ? 'cni' : 'sandbox',
      foundPid: 1,
      pid: 1,
      nsPath: `/proc/1/ns/net#${cookie}`,
      cgroup: `/cg/${uid}`,
    };
  }

  /** uid -> the container a CNI ADD named */
  readonly cni = new Map<string, string | undefined>();

  bind(uid: string, ns: { containerId?: string }): void {
    this.bound.push([uid, ns]);
    this.netns.set(uid, 0x9000n);
    this.cni.set(uid, ns.containerId);
  }

  retire(uid: string, cookie: bigint): void {
    if (this.netns.get(uid) === cookie) this.netns.delete(uid);
    this.cni.delete(uid);
  }

  cniBinding(uid: string): { cookie: bigint; containerId?: string } | undefined {
    if (!this.cni.has(uid)) return undefined;
    const containerId = this.cni.get(uid);
    return containerId !== undefined ? { cookie: this.netns.get(uid)!, containerId } : { cookie: this.netns.get(uid)! };
  }

  retain(): void {}
}

const runtime: RuntimeReader = { read: () => ({ dnsServers: [], ifindex: () => undefined }), retain: () => undefined };

function fakeIo(maps: FakeMaps): DataplaneIo & { links: Set<bigint>; adopted: bigint[] } {
  const links = new Set<bigint>();
  const adopted: bigint[] = [];
  return {
    links,
    adopted,
    writer: maps,
    readActual: () => maps.actual(),
    attachNetns: (_p, c) => void links.add(c),
    detachNetns: (c) => void links.delete(c),
    netnsLinkCookies: () => [...links],
    adoptListeners: (c) => {
      adopted.push(c);
      return 0;
    },
  };
}

function setup(): { p: Pipeline; maps: FakeMaps; loc: FakeLocator; io: ReturnType<typeof fakeIo>; warned: string[] } {
  const maps = new FakeMaps();
  const loc = new FakeLocator();
  const io = fakeIo(maps);
  const warned: string[] = [];
  const p = new Pipeline({
    io,
    locator: loc,
    runtime,
    log,
    nodeName: 'n1',
    capacity: (m) => maps.capacity[m] ?? MAPS[m as keyof typeof MAPS].maxEntries,
    events: { warn: (pod, reason) => void warned.push(`${pod.name} ${reason}`) },
  });
  return { p, maps, loc, io, warned };
}

// listener adoption runs one pod per turn of the event loop: enough turns for every pod of a test
const settle = async (p: Pipeline): Promise<void> => {
  for (let i = 0; i < 300; i++) {
    await p.flush();
    await new Promise((r) => setImmediate(r));
  }
};

test("pipeline: before the source's complete state nothing is removed; then the pods are enrolled, work follows changes only", async () => {
  const { p, maps, loc, io } = setup();
  // the maps hold a pod of an earlier agent
  const mirror = Mirror.from(maps.actual());
  await writePod(maps, mirror, planPod(0x77n, compilePod(desired('old')), undefined, mirror.ids));
  await p.initialSync(); // no state from the source yet (an API server that is down)
  p.adoptAll(() => undefined); // the programs are attached (the agent's order): enrolments adopt from now on
  await settle(p);
  assert.equal(maps.size('pods'), 1, 'capture already pinned stays');
  for (let i = 0; i < 250; i++) loc.netns.set(`uid-p${i}`, BigInt(0x1000 + i));
  const pods = Array.from({ length: 250 }, (_, i) => podObj(`p${i}`, { ip: `10.244.${i >> 8}.${i & 255}` }));
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods });
  await settle(p);
  await p.resync();
  assert.equal(maps.size('pods'), 250, 'the old pod is gone, the 250 are in');
  assert.equal(p.health().firstSync, true);
  assert.equal(io.links.size, 250);
  assert.equal(io.adopted.length, 250, 'listener adoption once per enrolment');
  // one annotation change: one pod's work, a handful of writes
  const calls = loc.calls;
  const writes = maps.writes;
  p.onEvent({
    type: 'upsert',
    kind: 'Pod',
    object: podObj('p7', { ip: '10.244.0.7', annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '9000' } }),
  });
  await settle(p);
  assert.equal(loc.calls - calls, 1, 'only the changed pod was located');
  assert.ok(maps.writes - writes <= 12, `writes for one changed pod: ${maps.writes - writes}`);
  assert.equal(io.adopted.length, 250, 'a re-tune with the same inbound port adopts nothing again');
  // the namespace disabled: all 250 released; a pod label opts one out
  p.onEvent({ type: 'upsert', kind: 'Namespace', object: ns('shop', { 'istio-injection': 'disabled' }) });
  await settle(p);
  assert.equal(maps.size('pods'), 0);
  assert.equal(maps.size('pod_by_ip4'), 0);
  assert.equal(io.links.size, 0);
  assert.ok(p.statuses().skipped.every((s) => /istio-injection=disabled/.test(s.reason)));
});

test('pipeline: two pods with one IP: the first keeps it, both are told; a pod whose entries do not fit is its own error', async () => {
  const { p, maps, loc } = setup();
  maps.capacity.pod_cidrs4 = 10;
  loc.netns.set('uid-a', 1n);
  loc.netns.set('uid-b', 2n);
  loc.netns.set('uid-big', 3n);
  loc.netns.set('uid-c', 4n);
  await p.initialSync();
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('a', { ip: '10.244.0.10' })] });
  await settle(p);
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('b', { ip: '10.244.0.10' }) });
  p.onEvent({
    type: 'upsert',
    kind: 'Pod',
    object: podObj('big', { ip: '10.244.0.30', annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': cidrs(20) } }),
  });
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('c', { ip: '10.244.0.40' }) });
  await settle(p);
  const st = (u: string) => p.status(u)!;
  assert.equal(maps.actual().byIp4.find(([ip]) => ip === '10.244.0.10')?.[1], 1n, 'a keeps its address');
  assert.match(st('uid-a').errors.join('\n'), /pod IP 10\.244\.0\.10 is also claimed by shop\/b \(uid uid-b\): this pod held it first/);
  assert.match(st('uid-b').errors.join('\n'), /pod IP 10\.244\.0\.10 is held by shop\/a \(uid uid-a\), which claimed it first/);
  assert.equal(st('uid-big').state, 'pending');
  assert.match(st('uid-big').reason ?? '', /map pod_cidrs4 is full \(10 entries, sized by --max-pods\)/);
  assert.equal(st('uid-c').state, 'captured', 'the other pods go on');
  assert.deepEqual(p.health().fullMaps, ['pod_cidrs4']);
  assert.equal(maps.size('pod_cidrs4'), 0, 'nothing half-written');
  // a goes: b gets the address and its error clears
  p.onEvent({ type: 'delete', kind: 'Pod', object: podObj('a') });
  await settle(p);
  assert.equal(maps.actual().byIp4.find(([ip]) => ip === '10.244.0.10')?.[1], 2n);
  assert.deepEqual(st('uid-b').errors, []);
});

test('pipeline: a malformed annotation is a Warning Event once, not on every change', async () => {
  const { p, loc, warned } = setup();
  loc.netns.set('uid-a', 1n);
  await p.initialSync();
  const bad = podObj('a', { annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': 'x' } });
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [bad] });
  await settle(p);
  p.onEvent({ type: 'upsert', kind: 'Pod', object: { ...bad, status: { phase: 'Running', podIP: '10.244.0.11', qosClass: 'BestEffort' } } });
  await settle(p);
  assert.deepEqual(warned, ['a InvalidCaptureAnnotation']);
});

test('pipeline: pods enrolled before the programs are attached have their listeners adopted once, by adoptAll', async () => {
  const { p, loc, io } = setup();
  for (let i = 0; i < 3; i++) loc.netns.set(`uid-s${i}`, BigInt(0x2000 + i));
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [0, 1, 2].map((i) => podObj(`s${i}`, { ip: `10.244.1.${i + 1}` })) });
  await p.initialSync(); // the agent's order: the source's state, the maps filled, then attach, then adoptAll
  await settle(p);
  assert.equal(io.adopted.length, 0, 'no adoption before the programs are attached');
  assert.equal(p.health().startupAdoption, 0, 'nothing queued before the attach');
  let changes = 0;
  p.onChange = () => void changes++;
  p.adoptAll(() => 'cg');
  // not ready until the queue drains: inbound to these pods is refused until their listeners are in
  assert.equal(p.health().startupAdoption, 3);
  await settle(p);
  assert.deepEqual(io.adopted.sort(), [0x2000n, 0x2001n, 0x2002n]);
  assert.equal(p.health().startupAdoption, 0);
  assert.ok(changes > 0, 'the end of the start-up adoption is a status change (readiness)');
  // a pod enrolled afterwards: at its enrolment, and readiness does not wait for it
  loc.netns.set('uid-s3', 0x2003n);
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('s3', { ip: '10.244.1.4' }) });
  assert.equal(p.health().startupAdoption, 0);
  await settle(p);
  assert.equal(io.adopted.length, 4);
});

test('enroller: wanted() waits for the source to show the pod; enroll() resolves once its entries and links are in place', async () => {
  const { p, maps, loc, io } = setup();
  await p.initialSync();
  p.onEvent({ type: 'replace', namespaces: [ns('shop'), ns('plain', {})], pods: [] });
  await settle(p);
  const w = p.wanted({ namespace: 'shop', name: 'a', uid: 'uid-a' }, 5_000);
  const skip = p.wanted({ namespace: 'plain', name: 'z' }, 5_000);
  const never = p.wanted({ namespace: 'shop', name: 'ghost' }, 50);
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('a') });
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('z', { ns: 'plain', ip: '10.244.0.99' }) });
  assert.deepEqual(await w, { capture: true, uid: 'uid-a' });
  const s = await skip;
  assert.equal(s.capture, false);
  assert.equal((await never).capture, 'unknown');
  // no cgroup yet: the CNI netns is the answer
  assert.equal(p.status('uid-a')?.state, 'pending');
  const st = await p.enroll('uid-a', { nsPath: '/run/netns/cni-1', how: 'cni' });
  assert.deepEqual(loc.bound, [['uid-a', { nsPath: '/run/netns/cni-1', how: 'cni' }]]);
  assert.equal(st?.state, 'captured');
  assert.equal(st?.netnsCookie, String(0x9000n));
  assert.ok(maps.actual().pods.some(([c]) => c === 0x9000n));
  assert.ok(io.links.has(0x9000n), 'the netns links are in place when enroll resolves');
  await p.stop();
});

test('enroller: a pod beyond the pods map (--max-pods) is not enrolled: enroll() says why, so its CNI ADD fails closed', async () => {
  const { p, maps, loc, io } = setup();
  maps.capacity.pods = 1;
  await p.initialSync();
  loc.netns.set('uid-a', 0x1000n);
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('a'), podObj('b', { ip: '10.244.0.98' })] });
  await settle(p);
  assert.equal(p.status('uid-a')?.state, 'captured');
  const st = await p.enroll('uid-b', { nsPath: '/run/netns/cni-b', how: 'cni' });
  assert.equal(st?.state, 'pending');
  assert.match(
    st?.reason ?? '',
    /^not enrolled with these settings: map pods is full \(1 entries, sized by --max-pods\): .*the pod keeps no entries \(not captured\)$/,
  );
  assert.deepEqual(
    maps.actual().pods.map(([c]) => c),
    [0x1000n],
    'nothing of it is written',
  );
  assert.equal(io.links.has(0x9000n), false, 'no netns links either');
  assert.deepEqual(p.health().fullMaps, ['pods']);
  await p.stop();
});

test("enroller: a pod the API shows without IPs yet is captured with the IPs the CNI ADD gave; the API's IPs win once shown", async () => {
  const { p, maps } = setup();
  await p.initialSync();
  const noIp = (): Record<string, unknown> => {
    const o = podObj('b');
    o.status = { phase: 'Pending', qosClass: 'BestEffort' };
    return o;
  };
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [noIp()] });
  await settle(p);
  assert.equal((await p.wanted({ namespace: 'shop', name: 'b', uid: 'uid-b' }, 50)).capture, false, 'no pod IP yet, without the hint');
  const w = await p.wanted({ namespace: 'shop', name: 'b', uid: 'uid-b' }, 5_000, undefined, { ips: ['10.244.0.77'] });
  assert.deepEqual(w, { capture: true, uid: 'uid-b' });
  const st = await p.enroll('uid-b', { nsPath: '/run/netns/cni-2', how: 'cni', containerId: 'sandbox-b' });
  assert.equal(st?.state, 'captured');
  assert.deepEqual(st?.ips, ['10.244.0.77']);
  assert.equal(st?.via, 'cni');
  p.onEvent({ type: 'upsert', kind: 'Pod', object: podObj('b', { ip: '10.244.0.78' }) });
  await settle(p);
  assert.deepEqual(p.status('uid-b')?.ips, ['10.244.0.78']);
  assert.ok(maps.actual().pods.some(([c]) => c === 0x9000n));
  await p.stop();
});

test("enroller: the runtime's uid picks the pod, never another pod of the same name; unenroll releases by the container, once", async () => {
  const { p, maps, io } = setup();
  await p.initialSync();
  p.onEvent({ type: 'replace', namespaces: [ns('shop')], pods: [podObj('c')] });
  await settle(p);
  // a StatefulSet's pod made anew: same name, another uid the source does not show yet
  assert.equal((await p.wanted({ namespace: 'shop', name: 'c', uid: 'uid-new' }, 50)).capture, 'unknown');
  assert.deepEqual(await p.wanted({ namespace: 'shop', name: 'c' }, 50), { capture: true, uid: 'uid-c' }, 'no uid from the runtime: by name');
  await p.enroll('uid-c', { nsPath: '/run/netns/cni-3', how: 'cni', containerId: 'sandbox-c' });
  assert.ok(io.links.has(0x9000n));
  assert.equal(await p.unenroll({ containerId: 'another-sandbox' }), undefined, 'the DEL of another container touches nothing');
  assert.ok(maps.actual().pods.some(([c]) => c === 0x9000n));
  assert.equal(await p.unenroll({ containerId: 'sandbox-c' }), 'uid-c');
  assert.ok(!maps.actual().pods.some(([c]) => c === 0x9000n), 'the entries are gone when unenroll resolves');
  assert.ok(!io.links.has(0x9000n), 'and the netns links');
  assert.equal(p.status('uid-c')?.state, 'pending');
  assert.equal(await p.unenroll({ containerId: 'sandbox-c' }), undefined, 'a second DEL finds nothing');
  await p.stop();
});

test('pipeline observer (metrics): event-to-map latency once per applied pod, pod errors once per kind until they clear, entries per map from the mirror', async () => {
  const maps = new FakeMaps();
  const loc = new FakeLocator();
  const seen = { handled: 0, resyncs: 0, applied: 0, errors: [] as string[], full: [] as string[] };
  const p = new Pipeline({
    io: fakeIo(maps),
    locator: loc,
    runtime,
    log,
    nodeName: 'n1',
    capacity: (m) => maps.capacity[m] ?? MAPS[m as keyof typeof MAPS].maxEntries,
    observer: {
      podHandled: () => void seen.handled++,
      resynced: () => void seen.resyncs++,
      eventApplied: (s) => {
        assert.ok(s >= 0);
        seen.applied++;
      },
      podError: (k) => void seen.errors.push(k),
      mapFull: (m) => void seen.full.push(m),
    },
  });
  maps.capacity.pod_cidrs4 = 10;
  loc.netns.set('uid-a', 1n);
  loc.netns.set('uid-big', 3n);
  await p.initialSync();
  p.onEvent({
    type: 'replace',
    namespaces: [ns('shop')],
    pods: [
      podObj('a', { ip: '10.244.0.10', annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '80,notaport' } }),
      podObj('big', { ip: '10.244.0.30', annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': cidrs(20) } }),
      podObj('waiting', { ip: '10.244.0.40' }),
    ],
  });
  await settle(p);
  await p.resync();
  assert.equal(seen.applied, 1, 'a is in the maps; big did not fit, waiting has no netns yet: not applied');
  assert.ok(seen.handled >= 3);
  assert.ok(seen.resyncs >= 1);
  assert.deepEqual(seen.errors.sort(), ['map_full', 'settings'], 'a: a malformed port; big: a full map; waiting: no error (its sandbox is not there yet)');
  assert.ok(seen.full.length >= 1 && seen.full.every((m) => m === 'pod_cidrs4'), 'every refused write names its map');
  const c = p.podCounts();
  assert.deepEqual(c.states, { captured: 1, pending: 2, skipped: 0 });
  assert.equal(c.errors.map_full, 1);
  assert.equal(c.errors.settings, 1);
  const e = p.mapEntries();
  assert.equal(e.pods, maps.size('pods'));
  assert.equal(e.pod_ports, maps.size('pod_ports'));
  assert.equal(e.pod_by_ip4, 1);
  assert.equal(e.pod_cidrs4, 0);
  // the same errors again (a resync, another event for a): not counted again
  p.onEvent({
    type: 'upsert',
    kind: 'Pod',
    object: podObj('a', { ip: '10.244.0.10', annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '81,notaport' } }),
  });
  await settle(p);
  await p.resync();
  assert.deepEqual(seen.errors.sort(), ['map_full', 'settings']);
  assert.equal(seen.applied, 2);
  // big fits once room is made: its error clears, and comes back counted once more if it recurs
  maps.capacity.pod_cidrs4 = 100;
  await p.resync();
  await settle(p);
  assert.equal(p.status('uid-big')?.state, 'captured');
  assert.equal(p.podCounts().errors.map_full, 0);
  assert.equal(p.mapEntries().pod_cidrs4, 20);
  await p.stop();
});
