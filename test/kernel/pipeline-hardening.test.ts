// The pipeline against the real kernel and the real agent, where one pod's problem used to be every pod's:
// - a map that fills up (hardening 4): the pod whose entries do not fit stays on its last good entries or is
//   not enrolled, never half-written; every other pod goes on (a new pod is captured, another pod's change
//   applies); status and the log name the full map;
// - a pod with 40,000 CIDRs (hardening 6) does not hold up a change of another pod;
// - two pods with one IP (hardening 10): the pod that held it first keeps it (its inbound still reaches its
//   own proxy), both are told in status.
// Real sandbox pods (netns, cgroups, sandbox processes), real traffic.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import type { SandboxPod } from '../../src/sandbox/sandbox.js';
import { MapLimits } from '../../src/dataplane/layouts.js';
import { PinnedMaps } from '../../src/dataplane/dataplane.js';
import {
  APP,
  POD_UID,
  SVC_V4,
  POD_V4,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  type Topology,
  type AgentRun,
} from '../support/harness.js';

const direct = /^svc:80 peer=10\.244\.0\.10 app-sees=10\.96\.0\.10:80$/;
const EXCLUDE = 'traffic.sidecar.istio.io/excludeOutboundIPRanges';

const BIG = [
  { name: 'big1', uid: 'b1000000-0000-4000-8000-000000000001', ipv4: '10.244.0.41' },
  { name: 'big2', uid: 'b1000000-0000-4000-8000-000000000002', ipv4: '10.244.0.42' },
  { name: 'big3', uid: 'b1000000-0000-4000-8000-000000000003', ipv4: '10.244.0.43' },
];
const TWIN = { name: 'twin', uid: 'c2000000-0000-4000-8000-000000000001', ipv4: '10.244.0.44' };

/** `n` distinct /32s in 172.16.0.0/12 (nothing the tests dial), from `offset` on */
const cidrs = (n: number, offset = 0): string =>
  Array.from({ length: n }, (_, j) => {
    const i = j + offset;
    return `172.${16 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}/32`;
  }).join(',');

const ns = namespaceObject('demo', { 'istio-injection': 'enabled' });
const big = (i: number, n: number, offset = 0): object =>
  podObject({ name: BIG[i]!.name, uid: BIG[i]!.uid, ipv4: BIG[i]!.ipv4, ipv6: '', annotations: { [EXCLUDE]: cidrs(n, offset) } });

let topo: Topology;
let agent: AgentRun | undefined;
const pods: SandboxPod[] = [];

before(async () => {
  topo = await makeTopology({ prefix: 'mlph' });
  for (const b of [...BIG, TWIN]) pods.push(await topo.sb.addPod({ namespace: 'demo', name: b.name, uid: b.uid, ipv4: b.ipv4 }));
  agent = await startAgent(topo.sb, [ns, podObject()], 'pipeline-hardening');
  await waitFor(() => podState(POD_UID)?.state === 'captured', 10_000, 'the client pod captured');
});
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const vip = () => runCase(topo.pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` });
const podState = (uid: string) => agent!.status()?.pods.find((p) => p.ref.uid === uid);
/** The pod_cidrs4 entries of pod `name`, read from the pins (`meshlane dump` of 60,000 entries is too big a pipe) */
function cidrsOf(name: string): string[] {
  const pinned = new PinnedMaps(agent!.bpffs);
  try {
    const ids = new Set(
      pinned.maps
        .pod_info!.entries()
        .filter(([, i]) => i.name === name)
        .map(([id]) => id),
    );
    return pinned.maps
      .pod_cidrs4!.entries()
      .filter(([k]) => ids.has(k.pod_id))
      .map(([k]) => k.addr);
  } finally {
    pinned.close();
  }
}
const cidrCount = (name: string): number => cidrsOf(name).length;

test("a pod with 40,000 CIDRs does not hold up another pod's change", async () => {
  agent!.write([ns, podObject(), big(0, 40_000)]);
  // right behind it, another pod's change: it applies while the big pod is still being written
  agent!.write([ns, podObject({ annotations: { [EXCLUDE]: '10.96.0.0/16' } }), big(0, 40_000)]);
  await waitFor(() => podState(POD_UID)?.settings.outboundExclude.length === 1, 10_000, "the small pod's change applied");
  assert.match(await vip(), direct);
  await waitFor(() => podState(BIG[0]!.uid)?.state === 'captured', 30_000, 'the big pod captured');
  assert.equal(cidrCount('big1'), 40_000);
  agent!.write([ns, podObject()]);
  await waitFor(() => podState(BIG[0]!.uid) === undefined && podState(POD_UID)?.settings.outboundExclude.length === 0, 30_000, 'back to the client alone');
  assert.equal(cidrCount('big1'), 0);
});

test('a full map is the error of the pod that does not fit: never half-written, every other pod goes on, status and log name the map', async () => {
  const per = 30_000;
  assert.ok(2 * per <= MapLimits.CIDR_ENTRIES && 2 * per + 10_000 > MapLimits.CIDR_ENTRIES);
  agent!.write([ns, podObject(), big(0, per), big(1, per, per)]);
  await waitFor(() => podState(BIG[0]!.uid)?.state === 'captured' && podState(BIG[1]!.uid)?.state === 'captured', 30_000, 'two pods with 30,000 CIDRs each');
  // a third with 10,000 does not fit: it is not enrolled, and nothing of it is written
  agent!.write([ns, podObject(), big(0, per), big(1, per, per), big(2, 10_000, 2 * per)]);
  await waitFor(() => /map pod_cidrs4 is full/.test(podState(BIG[2]!.uid)?.reason ?? ''), 30_000, 'the third pod refused, naming the map');
  const third = podState(BIG[2]!.uid)!;
  assert.equal(third.state, 'pending');
  assert.equal(cidrCount('big3'), 0, 'nothing of the pod that does not fit is in the map');
  assert.deepEqual(agent!.status()!.health?.fullMaps, ['pod_cidrs4']);
  assert.match(agent!.log(), /map pod_cidrs4 is full/);
  // every other pod goes on: another pod's change applies (real traffic), a new small pod is captured
  agent!.write([
    ns,
    podObject({ annotations: { [EXCLUDE]: '10.96.0.0/16' } }),
    big(0, per),
    big(1, per, per),
    big(2, 10_000, 2 * per),
    podObject({ name: TWIN.name, uid: TWIN.uid, ipv4: TWIN.ipv4, ipv6: '' }),
  ]);
  await waitFor(() => podState(POD_UID)?.settings.outboundExclude.length === 1 && podState(TWIN.uid)?.state === 'captured', 10_000, "the other pods' changes");
  assert.match(await vip(), direct);
  // a re-tune of a big pod that does not fit beside its old generation: it stays on its last good entries
  const before = podState(BIG[0]!.uid)!;
  agent!.write([
    ns,
    podObject({ annotations: { [EXCLUDE]: '10.96.0.0/16' } }),
    big(0, per, 100_000),
    big(1, per, per),
    big(2, 10_000, 2 * per),
    podObject({ name: TWIN.name, uid: TWIN.uid, ipv4: TWIN.ipv4, ipv6: '' }),
  ]);
  await waitFor(() => (podState(BIG[0]!.uid)?.errors ?? []).some((e) => /map pod_cidrs4 is full/.test(e)), 30_000, 'the re-tune refused');
  const kept = podState(BIG[0]!.uid)!;
  assert.equal(kept.state, 'captured', 'still captured, on its last good entries');
  assert.equal(kept.podId, before.podId);
  assert.equal(cidrCount('big1'), per);
  assert.ok(cidrsOf('big1').includes('172.16.0.0'), 'the old entries are the ones in the map');
  // room is made (big2 goes): the pod that did not fit gets in; big1's re-tune still does not fit beside
  // its old generation (30,000 + 30,000 + big3's 10,000), so it stays where it is
  agent!.write([ns, podObject(), big(0, per, 100_000), big(2, 10_000, 2 * per)]);
  await waitFor(() => podState(BIG[2]!.uid)?.state === 'captured', 30_000, 'big3 in once there is room');
  // its entries settle at exactly one generation (a second generation written right after the first one
  // shows both until the flip's cleanup: seen once in CI, left as a note)
  await waitFor(() => cidrCount('big3') === 10_000, 30_000, "big3's one generation of 10,000 CIDRs");
  assert.equal(podState(BIG[0]!.uid)?.state, 'captured');
  assert.ok(cidrsOf('big1').includes('172.16.0.0'));
  // big3 goes: now big1's new generation fits
  agent!.write([ns, podObject(), big(0, per, 100_000)]);
  await waitFor(() => podState(BIG[0]!.uid)?.errors.length === 0 && agent!.status()!.health?.fullMaps.length === 0, 30_000, 'big1 re-tuned once there is room');
  assert.ok(!cidrsOf('big1').includes('172.16.0.0') && cidrCount('big1') === per, 'the new generation is in, the old one gone');
  agent!.write([ns, podObject()]);
  await waitFor(() => podState(BIG[0]!.uid) === undefined && podState(BIG[2]!.uid) === undefined, 30_000, 'back to the client alone');
});

test('two pods with one IP: the pod that held it first keeps it (its inbound reaches its own proxy); both are told', async () => {
  const inbound = (): Promise<string> => runCase(topo.svc, { name: 'in', uid: APP, gid: APP, to: `${POD_V4}:8080`, on: topo.svc });
  assert.match(await inbound(), /^proxy-inbound:15006 peer=10\.244\.0\.200 orig=10\.244\.0\.10:8080/);
  // a second pod object claims the client's address (a stale object, a confused IPAM)
  const twin = podObject({ name: TWIN.name, uid: TWIN.uid, ipv4: POD_V4, ipv6: '' });
  agent!.write([ns, podObject(), twin]);
  await waitFor(
    () => podState(TWIN.uid)?.state === 'captured' && (podState(TWIN.uid)?.errors ?? []).some((e) => e.startsWith('pod IP 10.244.0.10 is held by demo/client')),
    10_000,
    'the twin told',
  );
  assert.ok(
    podState(POD_UID)!.errors.some((e) =>
      e.startsWith(`pod IP 10.244.0.10 is also claimed by demo/twin (uid ${TWIN.uid}): this pod held it first and keeps it`),
    ),
    JSON.stringify(podState(POD_UID)!.errors),
  );
  const index = dumpJson(agent!.bpffs).maps.pod_by_ip4 as Array<{ ip: string; netns_cookie: string | number }>;
  assert.equal(String(index.find((e) => e.ip === POD_V4)?.netns_cookie), podState(POD_UID)!.netnsCookie, 'the index points at the client');
  assert.match(await inbound(), /^proxy-inbound:15006 peer=10\.244\.0\.200 orig=10\.244\.0\.10:8080/, "inbound still reaches the client's proxy");
  // the twin goes: the errors clear
  agent!.write([ns, podObject()]);
  await waitFor(() => podState(TWIN.uid) === undefined && podState(POD_UID)!.errors.length === 0, 10_000, 'the conflict cleared');
});
