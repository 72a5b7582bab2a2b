// compilePod (src/agent/desired.ts): a DesiredPod's settings become the flags, ports, CIDRs, DNS
// servers and interfaces the programs read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePod, type PodRuntime } from '../../src/agent/desired.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';
import { CidrKind, IfaceKind, MAX_PROXY_IDS, PodFlags, PortKind } from '../../src/dataplane/layouts.js';
import type { CaptureSettings, Cidr, DesiredPod } from '../../src/model/types.js';

function pod(settings: Partial<CaptureSettings> = {}, ips: string[] = ['10.244.0.10']): DesiredPod {
  return {
    ref: { namespace: 'shop', name: 'web-1', uid: 'uid-web-1' },
    ips,
    qosClass: 'Burstable',
    settings: { ...defaultCaptureSettings(), ...settings },
    errors: [],
    unsupported: [],
  };
}

const has = (flags: number, f: number): boolean => (flags & f) === f;
const v4 = (addr: string, prefix: number): Cidr => ({ family: 4, addr, prefix });
const v6 = (addr: string, prefix: number): Cidr => ({ family: 6, addr, prefix });
const byKind = (ports: Array<{ port: number; kind: number }>, kind: number): number[] => ports.filter((p) => p.kind === kind).map((p) => p.port);

test('defaults: include *, inbound * with the fixed excludes, no DNS, proxy uid/gid 1337', () => {
  const e = compilePod(pod());
  const f = e.config.flags;
  const empty =
    PodFlags.NO_OUT_EXCLUDE_PORTS | PodFlags.NO_OUT_INCLUDE_PORTS | PodFlags.NO_OUT_EXCLUDE_CIDRS | PodFlags.NO_OUT_INCLUDE_CIDRS | PodFlags.NO_EXCLUDE_IFACES;
  assert.equal(f, PodFlags.OUT_INCLUDE_ALL | PodFlags.HAS_IP4 | PodFlags.IN_ENABLED | PodFlags.IN_INCLUDE_ALL | empty);
  assert.equal(e.config.outbound_port, 15001);
  assert.equal(e.config.inbound_port, 15006);
  assert.equal(e.config.tunnel_port, 15008);
  assert.equal(e.config.dns_port, 15053);
  assert.deepEqual([e.config.n_uids, e.config.uids], [1, [1337]]);
  assert.deepEqual([e.config.n_gids, e.config.gids], [1, [1337]]);
  assert.equal(e.config.ip4, '10.244.0.10');
  assert.equal(e.config.ip6, '::');
  assert.deepEqual(byKind(e.ports, PortKind.IN_EXCLUDE), [15090, 15021, 15020]);
  assert.equal(e.ports.length, 3);
  assert.deepEqual(e.cidrs4, []);
  assert.deepEqual(e.cidrs6, []);
  assert.deepEqual(e.dns, []);
  assert.deepEqual(e.ifaces, []);
  assert.deepEqual(e.info, { namespace_: 'shop', name: 'web-1', uid: 'uid-web-1' });
  assert.deepEqual(e.errors, []);
  assert.ok(!('pod_id' in e.config));
});

test('flags: include list without and with loopback', () => {
  const plain = compilePod(pod({ outboundInclude: { all: false, cidrs: [v4('10.96.0.0', 12)] } })).config.flags;
  assert.ok(!has(plain, PodFlags.OUT_INCLUDE_ALL));
  assert.ok(!has(plain, PodFlags.OUT_INCLUDE_LOOPBACK));
  const lo4 = compilePod(pod({ outboundInclude: { all: false, cidrs: [v4('10.96.0.0', 12), v4('127.0.0.0', 8)] } })).config.flags;
  assert.ok(has(lo4, PodFlags.OUT_INCLUDE_LOOPBACK));
  assert.ok(!has(lo4, PodFlags.OUT_INCLUDE_ALL));
  const lo6 = compilePod(pod({ outboundInclude: { all: false, cidrs: [v6('::1', 128)] } })).config.flags;
  assert.ok(has(lo6, PodFlags.OUT_INCLUDE_LOOPBACK));
  const none = compilePod(pod({ outboundInclude: { all: false, cidrs: [] } })).config.flags;
  assert.ok(!has(none, PodFlags.OUT_INCLUDE_ALL) && !has(none, PodFlags.OUT_INCLUDE_LOOPBACK));
});

test('flags: DNS capture and capture-all', () => {
  assert.ok(!has(compilePod(pod()).config.flags, PodFlags.DNS_CAPTURE));
  const on = compilePod(pod({ dns: { enabled: true, captureAll: false } })).config.flags;
  assert.ok(has(on, PodFlags.DNS_CAPTURE) && !has(on, PodFlags.DNS_CAPTURE_ALL));
  const all = compilePod(pod({ dns: { enabled: true, captureAll: true } })).config.flags;
  assert.ok(has(all, PodFlags.DNS_CAPTURE) && has(all, PodFlags.DNS_CAPTURE_ALL));
});

test('DNS servers: from the runtime only with DNS capture on and capture-all off, deduplicated', () => {
  const rt: PodRuntime = { dnsServers: ['10.96.0.10', 'fd00:96::a', '10.96.0.10'], ifindex: () => undefined };
  // in the pod_dns key's own form (IPv4 v4-mapped), so the planner converges
  assert.deepEqual(compilePod(pod({ dns: { enabled: true, captureAll: false } }), rt).dns, ['::ffff:a60:a', 'fd00:96::a']);
  assert.deepEqual(compilePod(pod({ dns: { enabled: true, captureAll: true } }), rt).dns, []);
  assert.deepEqual(compilePod(pod(), rt).dns, []);
});

test('flags and addresses: has ip4 / ip6', () => {
  const dual = compilePod(pod({}, ['10.244.0.10', 'fd00:244::10']));
  assert.ok(has(dual.config.flags, PodFlags.HAS_IP4 | PodFlags.HAS_IP6));
  assert.equal(dual.config.ip4, '10.244.0.10');
  assert.equal(dual.config.ip6, 'fd00:244::10');
  const only6 = compilePod(pod({}, ['fd00:244::10']));
  assert.ok(!has(only6.config.flags, PodFlags.HAS_IP4) && has(only6.config.flags, PodFlags.HAS_IP6));
  assert.equal(only6.config.ip4, '0.0.0.0');
  assert.equal(only6.config.ip6, 'fd00:244::10');
  const none = compilePod(pod({}, []));
  assert.ok(!has(none.config.flags, PodFlags.HAS_IP4) && !has(none.config.flags, PodFlags.HAS_IP6));
  assert.deepEqual([none.config.ip4, none.config.ip6], ['0.0.0.0', '::']);
});

test('inbound modes: * with excludes, an explicit list, an empty list', () => {
  const all = compilePod(pod({ inboundPorts: { mode: 'all', exclude: [15090, 15021, 15020, 22] } }));
  assert.ok(has(all.config.flags, PodFlags.IN_ENABLED | PodFlags.IN_INCLUDE_ALL));
  assert.deepEqual(byKind(all.ports, PortKind.IN_EXCLUDE), [15090, 15021, 15020, 22]);
  assert.deepEqual(byKind(all.ports, PortKind.IN_INCLUDE), []);

  const list = compilePod(pod({ inboundPorts: { mode: 'list', include: [8080, 9090] } }));
  assert.ok(has(list.config.flags, PodFlags.IN_ENABLED));
  assert.ok(!has(list.config.flags, PodFlags.IN_INCLUDE_ALL));
  assert.deepEqual(byKind(list.ports, PortKind.IN_INCLUDE), [8080, 9090]);
  assert.deepEqual(byKind(list.ports, PortKind.IN_EXCLUDE), []);

  const off = compilePod(pod({ inboundPorts: { mode: 'list', include: [] } }));
  assert.ok(!has(off.config.flags, PodFlags.IN_ENABLED) && !has(off.config.flags, PodFlags.IN_INCLUDE_ALL));
  assert.deepEqual(off.ports, []);
});

test('ports per kind, duplicates dropped, the same port under two kinds kept', () => {
  const e = compilePod(
    pod({
      excludeOutboundPorts: [9000, 9001, 9000],
      includeOutboundPorts: [443, 9000],
      inboundPorts: { mode: 'list', include: [8080, 8080] },
    }),
  );
  assert.deepEqual(byKind(e.ports, PortKind.OUT_EXCLUDE), [9000, 9001]);
  assert.deepEqual(byKind(e.ports, PortKind.OUT_INCLUDE), [443, 9000]);
  assert.deepEqual(byKind(e.ports, PortKind.IN_INCLUDE), [8080]);
  assert.equal(e.ports.length, 5);
});

test('CIDRs split by family; include CIDRs only without include *', () => {
  const e = compilePod(
    pod({
      outboundExclude: [v4('10.0.0.0', 8), v6('fd00::', 8), v4('192.168.0.0', 16)],
      outboundInclude: { all: false, cidrs: [v4('10.96.0.0', 12), v6('fd00:96::', 64)] },
    }),
  );
  assert.deepEqual(e.cidrs4, [
    { prefix: 8, kind: CidrKind.OUT_EXCLUDE, addr: '10.0.0.0' },
    { prefix: 16, kind: CidrKind.OUT_EXCLUDE, addr: '192.168.0.0' },
    { prefix: 12, kind: CidrKind.OUT_INCLUDE, addr: '10.96.0.0' },
  ]);
  assert.deepEqual(e.cidrs6, [
    { prefix: 8, kind: CidrKind.OUT_EXCLUDE, addr: 'fd00::' },
    { prefix: 64, kind: CidrKind.OUT_INCLUDE, addr: 'fd00:96::' },
  ]);
  const star = compilePod(pod({ outboundExclude: [v4('10.0.0.0', 8)], outboundInclude: { all: true, cidrs: [v4('10.96.0.0', 12)] } }));
  assert.deepEqual(star.cidrs4, [{ prefix: 8, kind: CidrKind.OUT_EXCLUDE, addr: '10.0.0.0' }]);
});

test('more than 8 uids or gids: truncated to the first 8, with an error naming the count', () => {
  const uids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const gids = [11, 12, 13, 14, 15, 16, 17, 18, 19];
  const e = compilePod(pod({ proxyUids: uids, proxyGids: gids }));
  assert.equal(MAX_PROXY_IDS, 8);
  assert.deepEqual(e.config.uids, uids.slice(0, 8));
  assert.equal(e.config.n_uids, 8);
  assert.deepEqual(e.config.gids, gids.slice(0, 8));
  assert.equal(e.config.n_gids, 8);
  assert.deepEqual(e.errors, ['the proxy uid list has 10 entries; meshlane uses the first 8', 'the proxy gid list has 9 entries; meshlane uses the first 8']);
  const eight = compilePod(pod({ proxyUids: uids.slice(0, 8) }));
  assert.deepEqual(eight.errors, []);
  assert.equal(eight.config.n_uids, 8);
});

test('interfaces: resolved to ifindexes in the pod, unknown names skipped', () => {
  const rt: PodRuntime = { dnsServers: [], ifindex: (n) => ({ eth1: 3, net1: 4 })[n] };
  const e = compilePod(pod({ excludeInterfaces: ['eth1', 'nope0'], rerouteInterfaces: ['net1'] }), rt);
  assert.deepEqual(e.ifaces, [
    { ifindex: 3, kind: IfaceKind.EXCLUDE },
    { ifindex: 4, kind: IfaceKind.REROUTE },
  ]);
  assert.deepEqual(compilePod(pod({ excludeInterfaces: ['eth1'] })).ifaces, [], 'no runtime: no interfaces');
});

test('the NO_* flags say exactly which sets the maps hold nothing of (an include * keeps no include CIDRs)', () => {
  const none = (e: ReturnType<typeof compilePod>): string[] =>
    (['NO_OUT_EXCLUDE_PORTS', 'NO_OUT_INCLUDE_PORTS', 'NO_OUT_EXCLUDE_CIDRS', 'NO_OUT_INCLUDE_CIDRS', 'NO_EXCLUDE_IFACES'] as const).filter((f) =>
      has(e.config.flags, PodFlags[f]),
    );
  assert.deepEqual(none(compilePod(pod({ excludeOutboundPorts: [9000] }))), [
    'NO_OUT_INCLUDE_PORTS',
    'NO_OUT_EXCLUDE_CIDRS',
    'NO_OUT_INCLUDE_CIDRS',
    'NO_EXCLUDE_IFACES',
  ]);
  assert.deepEqual(none(compilePod(pod({ includeOutboundPorts: [443] }))), [
    'NO_OUT_EXCLUDE_PORTS',
    'NO_OUT_EXCLUDE_CIDRS',
    'NO_OUT_INCLUDE_CIDRS',
    'NO_EXCLUDE_IFACES',
  ]);
  assert.deepEqual(none(compilePod(pod({ outboundExclude: [v6('fd00::', 8)] }))), [
    'NO_OUT_EXCLUDE_PORTS',
    'NO_OUT_INCLUDE_PORTS',
    'NO_OUT_INCLUDE_CIDRS',
    'NO_EXCLUDE_IFACES',
  ]);
  assert.deepEqual(none(compilePod(pod({ outboundInclude: { all: false, cidrs: [v4('10.96.0.0', 12)] } }))), [
    'NO_OUT_EXCLUDE_PORTS',
    'NO_OUT_INCLUDE_PORTS',
    'NO_OUT_EXCLUDE_CIDRS',
    'NO_EXCLUDE_IFACES',
  ]);
  assert.ok(
    none(compilePod(pod({ outboundInclude: { all: true, cidrs: [v4('10.96.0.0', 12)] } }))).includes('NO_OUT_INCLUDE_CIDRS'),
    'include *: no CIDR is written',
  );
  const rt: PodRuntime = { dnsServers: [], ifindex: (n) => ({ eth1: 3, net1: 4 })[n] };
  assert.deepEqual(none(compilePod(pod({ excludeInterfaces: ['eth1'] }), rt)), [
    'NO_OUT_EXCLUDE_PORTS',
    'NO_OUT_INCLUDE_PORTS',
    'NO_OUT_EXCLUDE_CIDRS',
    'NO_OUT_INCLUDE_CIDRS',
  ]);
  assert.ok(has(compilePod(pod({ excludeInterfaces: ['eth1'] })).config.flags, PodFlags.NO_EXCLUDE_IFACES), 'an interface not found in the pod is no entry');
  assert.ok(has(compilePod(pod({ rerouteInterfaces: ['net1'] }), rt).config.flags, PodFlags.NO_EXCLUDE_IFACES), 'reroute entries are not excludes');
});

test('compilePod does not change its input', () => {
  const p = pod({ proxyUids: [1, 2, 3, 4, 5, 6, 7, 8, 9], excludeOutboundPorts: [1, 1] });
  const before = JSON.stringify(p);
  compilePod(p);
  assert.equal(JSON.stringify(p), before);
});
