// The reconcile planner (src/agent/plan.ts): op order, id allocation, garbage collection, and that a
// plan applied to a model of the maps converges. The model stores every key and value through the real
// layouts (encode, then decode on read), as the kernel would, so text forms that do not survive a
// round trip through the map show up as churn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { plan, SET_MAPS, type Actual, type Op, type Want } from '../../src/agent/plan.js';
import { compilePod, type PodEntries, type PodRuntime } from '../../src/agent/desired.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';
import type { CaptureSettings, DesiredPod } from '../../src/model/types.js';
import { MAPS } from '../../src/dataplane/layouts.js';

// ---------------------------------------------------------------------------------------------------
// helpers

function pod(name: string, opts: { ips?: string[]; settings?: Partial<CaptureSettings> } = {}): DesiredPod {
  return {
    ref: { namespace: 'shop', name, uid: `uid-${name}` },
    ips: opts.ips ?? ['10.244.0.10'],
    qosClass: 'BestEffort',
    settings: { ...defaultCaptureSettings(), ...opts.settings },
    errors: [],
    unsupported: [],
  };
}

const entries = (name: string, opts?: Parameters<typeof pod>[1], rt?: PodRuntime): PodEntries => compilePod(pod(name, opts), rt);

const EMPTY = (): Actual => ({
  pods: [],
  sets: { pod_ports: [], pod_cidrs4: [], pod_cidrs6: [], pod_dns: [], pod_ifaces: [] },
  info: [],
  byIp4: [],
  byIp6: [],
});

/** An in-memory stand-in for the pinned maps: keys and values stored encoded with the real layouts. */
class FakeMaps {
  private readonly m = new Map<string, Map<string, Buffer>>();

  private map(name: keyof typeof MAPS): Map<string, Buffer> {
    let x = this.m.get(name);
    if (!x) this.m.set(name, (x = new Map()));
    return x;
  }

  apply(ops: Op[]): void {
    for (const op of ops) {
      const def = MAPS[op.map];
      const k = def.key.encode(op.key as never).toString('hex');
      if (op.op === 'delete') {
        assert.ok(this.map(op.map).delete(k), `delete of a missing key in ${op.map}: ${JSON.stringify(op.key, big)}`);
      } else {
        this.map(op.map).set(k, def.value.encode(('value' in op ? op.value : 1) as never));
      }
    }
  }

  private entries(name: keyof typeof MAPS): Array<[any, any]> {
    const def = MAPS[name];
    return [...this.map(name)].map(([k, v]) => [def.key.decode(Buffer.from(k, 'hex')), def.value.decode(v)]);
  }

  actual(): Actual {
    return {
      pods: this.entries('pods'),
      sets: Object.fromEntries(SET_MAPS.map((s) => [s, this.entries(s).map(([k]) => k)])) as Actual['sets'],
      info: this.entries('pod_info'),
      byIp4: this.entries('pod_by_ip4'),
      byIp6: this.entries('pod_by_ip6'),
    };
  }

  size(name: keyof typeof MAPS): number {
    return this.map(name).size;
  }
}

const big = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);
const show = (ops: Op[]): string => ops.map((o) => `${o.op} ${o.map} ${JSON.stringify(o.key, big)}`).join('\n');

/** index of the first/last op matching `f` */
const first = (ops: Op[], f: (o: Op) => boolean): number => ops.findIndex(f);
const last = (ops: Op[], f: (o: Op) => boolean): number => ops.length - 1 - [...ops].reverse().findIndex(f);
const idOf = (o: Op): number | undefined =>
  o.map === 'pods'
    ? o.op === 'set'
      ? o.value.pod_id
      : undefined
    : o.map === 'pod_info'
      ? o.key
      : o.map.startsWith('pod_by')
        ? undefined
        : (o.key as { pod_id: number }).pod_id;
const isEntry = (o: Op): boolean => o.map !== 'pods' && !o.map.startsWith('pod_by');

/** Plan, apply, and check that a second plan is empty; returns the first plan. */
function converge(maps: FakeMaps, want: Want[]): ReturnType<typeof plan> {
  const p = plan(want, maps.actual());
  maps.apply(p.ops);
  const again = plan(want, maps.actual());
  assert.deepEqual(again.ops, [], `not converged; second plan:\n${show(again.ops)}`);
  assert.deepEqual(again.ids, p.ids);
  return p;
}

const COOKIE_A = 0x1000n;
const COOKIE_B = 0x2000n;

// ---------------------------------------------------------------------------------------------------

test('empty maps + a new pod: set entries and pod_info first, then the pods entry, then the address index', () => {
  const e = entries('a', {
    ips: ['10.244.0.10', 'fd00::10'],
    settings: {
      excludeOutboundPorts: [9000],
      outboundExclude: [
        { family: 4, addr: '10.0.0.0', prefix: 8 },
        { family: 6, addr: 'fd00::', prefix: 8 },
      ],
    },
  });
  const p = plan([{ cookie: COOKIE_A, entries: e }], EMPTY());
  assert.equal(p.ids.get(COOKIE_A), 1);
  const podsSet = first(p.ops, (o) => o.map === 'pods');
  assert.equal(p.ops.filter((o) => o.map === 'pods').length, 1);
  const podsOp = p.ops[podsSet]!;
  assert.ok(podsOp.map === 'pods' && podsOp.op === 'set');
  assert.equal(podsOp.key, COOKIE_A);
  assert.equal(podsOp.value.pod_id, 1);
  assert.equal(podsOp.value.uids.length, 8, 'uids padded to MAX_PROXY_IDS');
  assert.deepEqual(podsOp.value.uids, [1337, 0, 0, 0, 0, 0, 0, 0]);
  // every set entry (ports, cidrs4, cidrs6, info) is written before the pods entry
  for (const m of ['pod_ports', 'pod_cidrs4', 'pod_cidrs6', 'pod_info'] as const) {
    const i = first(p.ops, (o) => o.map === m);
    assert.ok(i >= 0, `no ${m} op:\n${show(p.ops)}`);
    assert.ok(last(p.ops, (o) => o.map === m) < podsSet, `${m} written after pods:\n${show(p.ops)}`);
  }
  assert.ok(p.ops.filter(isEntry).every((o) => o.op === 'set' && idOf(o) === 1));
  // 4 inbound excludes (15090,15021,15020) + 1 outbound exclude port
  assert.equal(p.ops.filter((o) => o.map === 'pod_ports').length, 4);
  // address index after the pods entry it points to
  const ix = first(p.ops, (o) => o.map === 'pod_by_ip4');
  assert.ok(ix > podsSet && first(p.ops, (o) => o.map === 'pod_by_ip6') > podsSet, show(p.ops));
  assert.ok(p.ops.every((o) => o.op === 'set'));
});

test('an unchanged pod gives no ops', () => {
  const maps = new FakeMaps();
  const want = [{ cookie: COOKIE_A, entries: entries('a', { ips: ['10.244.0.10', 'fd00::10'] }) }];
  converge(maps, want);
  const p = plan([{ cookie: COOKIE_A, entries: entries('a', { ips: ['10.244.0.10', 'fd00::10'] }) }], maps.actual());
  assert.deepEqual(p.ops, []);
  assert.equal(p.ids.get(COOKIE_A), 1);
});

test("changed settings: new id, new entries, pods flips, then the old id's entries go", () => {
  const maps = new FakeMaps();
  converge(maps, [{ cookie: COOKIE_A, entries: entries('a', { settings: { excludeOutboundPorts: [9000] } }) }]);
  const p = plan([{ cookie: COOKIE_A, entries: entries('a', { settings: { excludeOutboundPorts: [9001] } }) }], maps.actual());
  const newId = p.ids.get(COOKIE_A);
  assert.equal(newId, 2, 'a changed pod gets a fresh id (1 is still in use)');
  const flip = first(p.ops, (o) => o.map === 'pods');
  assert.equal(p.ops.filter((o) => o.map === 'pods').length, 1);
  const f = p.ops[flip]!;
  assert.ok(f.map === 'pods' && f.op === 'set' && f.value.pod_id === 2);
  const newSets = p.ops.map((o, i) => [o, i] as const).filter(([o]) => isEntry(o) && o.op === 'set');
  const oldDeletes = p.ops.map((o, i) => [o, i] as const).filter(([o]) => isEntry(o) && o.op === 'delete');
  assert.ok(newSets.length > 0 && oldDeletes.length > 0, show(p.ops));
  for (const [o, i] of newSets) {
    assert.equal(idOf(o), 2);
    assert.ok(i < flip, `new entry after the flip:\n${show(p.ops)}`);
  }
  for (const [o, i] of oldDeletes) {
    assert.equal(idOf(o), 1);
    assert.ok(i > flip, `old entry deleted before the flip:\n${show(p.ops)}`);
  }
  // every old entry goes: 3 inbound excludes + 1 outbound port + info
  assert.equal(oldDeletes.length, 5);
  assert.ok(oldDeletes.some(([o]) => o.map === 'pod_info' && o.key === 1));
  // the address did not change: no index writes
  assert.ok(!p.ops.some((o) => o.map === 'pod_by_ip4'));
  maps.apply(p.ops);
  assert.deepEqual(plan([{ cookie: COOKIE_A, entries: entries('a', { settings: { excludeOutboundPorts: [9001] } }) }], maps.actual()).ops, []);
});

test('a changed pod name alone (pod_info) is a change too', () => {
  const maps = new FakeMaps();
  converge(maps, [{ cookie: COOKIE_A, entries: entries('a') }]);
  const p = plan([{ cookie: COOKIE_A, entries: entries('a2') }], maps.actual());
  assert.equal(p.ids.get(COOKIE_A), 2);
  assert.ok(p.ops.some((o) => o.map === 'pod_info' && o.op === 'set' && o.key === 2 && o.value.name === 'a2'));
});

test('a removed pod: index delete, then pods delete, then its entries', () => {
  const maps = new FakeMaps();
  converge(maps, [
    { cookie: COOKIE_A, entries: entries('a', { ips: ['10.244.0.10'] }) },
    { cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) },
  ]);
  const p = plan([{ cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) }], maps.actual());
  assert.equal(p.ids.get(COOKIE_B), 2);
  assert.ok(
    p.ops.every((o) => o.op === 'delete'),
    show(p.ops),
  );
  const del = first(p.ops, (o) => o.map === 'pods');
  assert.equal(p.ops.filter((o) => o.map === 'pods').length, 1);
  assert.equal(p.ops[del]!.key, COOKIE_A);
  const ix = first(p.ops, (o) => o.map === 'pod_by_ip4');
  assert.ok(ix >= 0 && ix < del, `the address index must go before the pods entry:\n${show(p.ops)}`);
  assert.equal(p.ops[ix]!.key, '10.244.0.10');
  const entryOps = p.ops.map((o, i) => [o, i] as const).filter(([o]) => isEntry(o));
  assert.equal(entryOps.length, 4); // 3 inbound excludes + info
  for (const [o, i] of entryOps) {
    assert.equal(idOf(o), 1, "only the removed pod's entries go");
    assert.ok(i > del, show(p.ops));
  }
  maps.apply(p.ops);
  assert.equal(maps.size('pods'), 1);
  assert.equal(maps.size('pod_info'), 1);
  assert.equal(maps.size('pod_ports'), 3);
});

test('orphan entries (ids no pods entry references) are removed; referenced ones stay', () => {
  const maps = new FakeMaps();
  converge(maps, [{ cookie: COOKIE_A, entries: entries('a') }]);
  const actual = maps.actual();
  // a crash between writes left id 7's entries with no pods entry pointing at them
  actual.sets.pod_ports.push({ pod_id: 7, port: 80, kind: 1, pad: 0 } as never);
  actual.sets.pod_cidrs4.push({ prefixlen: 72, pod_id: 7, kind: 1, addr: '10.0.0.0' } as never);
  actual.sets.pod_cidrs6.push({ prefixlen: 72, pod_id: 7, kind: 1, addr: 'fd00::' } as never);
  actual.sets.pod_dns.push({ pod_id: 9, addr: '::ffff:a60:a' } as never);
  actual.sets.pod_ifaces.push({ pod_id: 9, ifindex: 2, kind: 1, pad: [0, 0, 0] } as never);
  actual.info.push([7, { namespace_: 'x', name: 'y', uid: 'z' }]);
  const p = plan([{ cookie: COOKIE_A, entries: entries('a') }], actual);
  assert.equal(p.ids.get(COOKIE_A), 1);
  assert.equal(p.ops.length, 6, show(p.ops));
  assert.ok(
    p.ops.every((o) => o.op === 'delete' && (idOf(o) === 7 || idOf(o) === 9)),
    show(p.ops),
  );
  for (const m of [...SET_MAPS, 'pod_info'] as const)
    assert.ok(
      p.ops.some((o) => o.map === m),
      `no delete in ${m}`,
    );
});

test('id allocation: lowest id free everywhere in the maps; freed ids are reused', () => {
  const actual = EMPTY();
  // ids 1..4 are taken, each by a different map only
  actual.pods.push([
    0x9999n,
    { ...(plan([{ cookie: 1n, entries: entries('z') }], EMPTY()).ops.find((o) => o.map === 'pods') as { value: any }).value, pod_id: 1 },
  ]);
  actual.sets.pod_ports.push({ pod_id: 2, port: 80, kind: 1, pad: 0 } as never);
  actual.sets.pod_dns.push({ pod_id: 3, addr: '::' } as never);
  actual.info.push([4, { namespace_: 'x', name: 'y', uid: 'z' }]);
  actual.sets.pod_ifaces.push({ pod_id: 6, ifindex: 2, kind: 1, pad: [0, 0, 0] } as never);
  const p = plan(
    [
      { cookie: COOKIE_A, entries: entries('a') },
      { cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) },
    ],
    actual,
  );
  assert.equal(p.ids.get(COOKIE_A), 5);
  assert.equal(p.ids.get(COOKIE_B), 7);
  // new entries never reuse an id that is still present in this plan's input
  const newIds = new Set(p.ops.filter((o) => isEntry(o) && o.op === 'set').map(idOf));
  assert.deepEqual([...newIds].sort(), [5, 7]);

  // freed ids come back: after pod a is gone and collected, a new pod gets the lowest free id again
  const maps = new FakeMaps();
  converge(maps, [
    { cookie: COOKIE_A, entries: entries('a') },
    { cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) },
  ]);
  converge(maps, [{ cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) }]);
  const p2 = converge(maps, [
    { cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'] }) },
    { cookie: 0x3000n, entries: entries('c', { ips: ['10.244.0.12'] }) },
  ]);
  assert.equal(p2.ids.get(0x3000n), 1);
  assert.equal(p2.ids.get(COOKIE_B), 2);
});

test("two pods: distinct ids, each pod's entries under its own id", () => {
  const ea = entries('a', { ips: ['10.244.0.10'], settings: { excludeOutboundPorts: [1111] } });
  const eb = entries('b', { ips: ['10.244.0.11'], settings: { excludeOutboundPorts: [2222] } });
  const p = plan(
    [
      { cookie: COOKIE_A, entries: ea },
      { cookie: COOKIE_B, entries: eb },
    ],
    EMPTY(),
  );
  const ia = p.ids.get(COOKIE_A);
  const ib = p.ids.get(COOKIE_B);
  assert.ok(ia !== undefined && ib !== undefined && ia !== ib);
  const portOf = (id: number): number[] =>
    p.ops
      .filter((o) => o.map === 'pod_ports' && idOf(o) === id)
      .map((o) => (o.key as unknown as { port: number }).port)
      .sort((x, y) => x - y);
  assert.deepEqual(portOf(ia), [1111, 15020, 15021, 15090]);
  assert.deepEqual(portOf(ib), [2222, 15020, 15021, 15090]);
  const firstPods = first(p.ops, (o) => o.map === 'pods');
  assert.ok(last(p.ops, isEntry) < firstPods, show(p.ops));
  const ix = p.ops.filter((o) => o.map === 'pod_by_ip4').map((o) => [o.key, 'value' in o ? o.value : undefined]);
  assert.deepEqual(ix, [
    ['10.244.0.10', COOKIE_A],
    ['10.244.0.11', COOKIE_B],
  ]);
});

test('applying plans to the maps converges through adds, changes and removals', () => {
  const maps = new FakeMaps();
  const steps: Want[][] = [
    [],
    [{ cookie: COOKIE_A, entries: entries('a', { ips: ['10.244.0.10', 'fd00::10'] }) }],
    [
      {
        cookie: COOKIE_A,
        entries: entries('a', {
          ips: ['10.244.0.10', 'fd00::10'],
          settings: {
            outboundInclude: {
              all: false,
              cidrs: [
                { family: 4, addr: '10.96.0.0', prefix: 12 },
                { family: 6, addr: 'fd00:96::', prefix: 64 },
              ],
            },
          },
        }),
      },
      { cookie: COOKIE_B, entries: entries('b', { ips: ['fd00::11'], settings: { inboundPorts: { mode: 'list', include: [8080] } } }) },
    ],
    [{ cookie: COOKIE_B, entries: entries('b', { ips: ['10.244.0.11'], settings: { inboundPorts: { mode: 'list', include: [8080, 9090] } } }) }],
    [],
  ];
  for (const want of steps) converge(maps, want);
  for (const m of ['pods', 'pod_info', 'pod_by_ip4', 'pod_by_ip6', ...SET_MAPS] as const) assert.equal(maps.size(m), 0, `${m} not empty at the end`);
});

test('converges for a pod with DNS capture and an IPv4 nameserver (pod_dns keys are IPv6 fields)', () => {
  // resolv.conf in a Kubernetes pod names the cluster DNS by its IPv4 address; the pod_dns key stores
  // it as an IPv4-mapped IPv6 address, which the map gives back as ::ffff:a60:a.
  const rt: PodRuntime = { dnsServers: ['10.96.0.10', 'fd00:96::a'], ifindex: () => undefined };
  const e = entries('a', { settings: { dns: { enabled: true, captureAll: false } } }, rt);
  assert.equal(e.dns.length, 2);
  converge(new FakeMaps(), [{ cookie: COOKIE_A, entries: e }]);
});

test('converges for a pod with excluded and rerouted interfaces', () => {
  const rt: PodRuntime = { dnsServers: [], ifindex: (n) => ({ eth1: 3, net1: 4 })[n] };
  const e = entries('a', { settings: { excludeInterfaces: ['eth1', 'missing0'], rerouteInterfaces: ['net1'] } }, rt);
  assert.deepEqual(
    e.ifaces.map((i) => i.ifindex),
    [3, 4],
  );
  converge(new FakeMaps(), [{ cookie: COOKIE_A, entries: e }]);
});
