// Two nodes, one API server: two sandbox nodes (each its own cgroup root, pod subnet and node name), linked
// as two nodes of one routed pod network, and two real agents (`meshlane agent --kubeconfig --node-name`,
// each with its own bpffs dir, state dir and API identity) against the suite's one API server, all on this
// one kernel. On each node a pod of a captured namespace (a forwarding proxy as uid 1337 and an app server)
// and one of an uncaptured namespace (an app server):
// - each agent enrols exactly its node's captured pod, skips its node's other pod, never sees the other
//   node's (status, its own pins, and what it asked the API server for);
// - an app on one node calling the captured pod on the other goes through its own outbound proxy (15001)
//   and the server's inbound proxy (15006), once each, v4 and v6, both ways; each agent counts only its
//   node's half, and splices only its node's own hops: the proxies' connection between the nodes is in
//   neither agent's sockhash (it crosses the link, as between two real nodes);
// - from and to the uncaptured pods, only the captured side's proxy is passed.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { DEFAULT_POD_CIDRS, Sandbox, type PodCIDRs, type SandboxPod } from '../../src/sandbox/sandbox.js';
import type { AgentStatus } from '../../src/agent/status.js';
import { KubeApiServer } from '../support/kube/server.js';
import type { KubeObject } from '../support/kube/resources.js';
import { delta } from '../support/splice.js';
import {
  APP,
  ENDPOINT,
  cleanupAgent,
  dumpJson,
  jsonLines,
  namespaceObject,
  podObject,
  runCase,
  startKubeAgent,
  startProxy,
  waitFor,
  waitReady,
  type AgentRun,
} from '../support/harness.js';

interface Pod {
  sp: SandboxPod;
  uid: string;
  v4: string;
  v6: string;
}

interface Node {
  name: string;
  prefix: string;
  cidrs: PodCIDRs;
  /** what the pods' addresses start with in each family: the host part follows */
  net: [string, string];
  sb?: Sandbox;
  agent?: AgentRun;
  /** demo/<app>: captured, with its proxy */
  app?: Pod;
  /** plain/<legacy>: not captured */
  legacy?: Pod;
  /** the proxy's lines, one per connection it forwarded */
  proxy: Array<Record<string, unknown>>;
}

const NODES: Node[] = [
  { name: 'node-1', prefix: 'mltn1', cidrs: DEFAULT_POD_CIDRS, net: ['10.244.0.', 'fd00:244::'], proxy: [] },
  { name: 'node-2', prefix: 'mltn2', cidrs: { ipv4: '10.244.1.0/24', ipv6: 'fd00:244:1::/64' }, net: ['10.244.1.', 'fd00:244:1::'], proxy: [] },
];
const [N1, N2] = NODES as [Node, Node];
const PORT = 8080;
/** the counters a request moves on the client's and on the server's node */
const WATCHED = ['captured_outbound', 'inbound_captured', 'spliced', 'splice_no_peer'] as const;

let api: KubeApiServer;
let tmp = '';
const procs: ChildProcess[] = [];

const user = (n: Node): string => `agent-${n.name}`;
const other = (n: Node): Node => (n === N1 ? N2 : N1);
const nodePods = (n: Node): Pod[] => [n.app!, n.legacy!];

/** The pod in the API store (scheduled to the node, running) and its sandbox pod with the same uid, running
 * an app server that tags its replies with the pod's name. */
async function addPod(n: Node, namespace: string, name: string, host: number): Promise<Pod> {
  const [v4, v6] = n.net.map((net) => `${net}${host}`) as [string, string];
  const stored = api.store.create('pods', podObject({ namespace, name, ipv4: v4, ipv6: v6, nodeName: n.name }) as KubeObject);
  const uid = stored.metadata.uid;
  const sp = await n.sb!.addPod({ namespace, name, uid, ipv4: v4, ipv6: v6 });
  const server = sp.spawn('node', [ENDPOINT(), 'serve', '--ports', String(PORT), '--tag', name], { uid: APP, gid: APP, container: 'app' });
  procs.push(server);
  await waitReady(server, `app server of ${name}`);
  return { sp, uid, v4, v6 };
}

/** meshlane's counters in the agent's own pins, as `meshlane dump` shows them */
const counters = (n: Node): Record<string, number> =>
  Object.fromEntries((dumpJson(n.agent!.bpffs).maps.stats as Array<Record<string, unknown>>).map((r) => [String(r.counter), Number(r.value)]));
const watched = (d: Record<string, number>): Record<string, number> => Object.fromEntries(WATCHED.map((c) => [c, d[c] ?? 0]));
/** one field of every entry of a map in the agent's own pins, sorted */
const pinned = (maps: ReturnType<typeof dumpJson>['maps'], map: string, field: string): string[] =>
  (maps[map] as Array<Record<string, unknown>>).map((r) => String(r[field])).sort();

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-two-node-'));
  api = await KubeApiServer.start();
  api.store.create('namespaces', namespaceObject('demo', { 'istio-injection': 'enabled' }) as KubeObject);
  api.store.create('namespaces', namespaceObject('plain', {}) as KubeObject);
  for (const n of NODES) n.sb = await Sandbox.create({ prefix: n.prefix, podCIDRs: n.cidrs });
  await N1.sb!.link(N2.sb!);
  for (const [i, n] of NODES.entries()) {
    n.app = await addPod(n, 'demo', `app-${i + 1}`, 10);
    n.legacy = await addPod(n, 'plain', `legacy-${i + 1}`, 11);
    const proxy = startProxy(n.app.sp, true);
    procs.push(proxy);
    n.proxy = jsonLines(proxy);
    await waitReady(proxy, `proxy of app-${i + 1}`);
  }
  for (const n of NODES) {
    const token = `token-${n.name}`;
    api.addToken(token, user(n));
    const kubeconfig = api.writeKubeconfig(join(tmp, `kubeconfig-${n.name}`), { token });
    n.agent = await startKubeAgent(n.sb!, kubeconfig, n.name, `two-${n.name}`);
  }
});

after(async () => {
  for (const n of NODES) await cleanupAgent(n.agent);
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  for (const n of NODES) await n.sb?.destroy();
  await api?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test("each agent enrols exactly its node's captured pod, skips its node's other pod and never sees the other node's", async () => {
  for (const n of NODES) {
    const st = (): AgentStatus | undefined => n.agent!.status();
    await waitFor(
      () => st()?.health?.ready === true && st()!.pods.some((p) => p.ref.uid === n.app!.uid && p.state === 'captured'),
      20_000,
      `${n.name}: its pod captured and the agent ready`,
    );
    const s = st()!;
    assert.equal(s.cgroupRoot, n.sb!.cgroupRoot);
    assert.deepEqual(
      s.pods.map((p) => [p.ref.uid, p.state, p.ips]),
      [[n.app!.uid, 'captured', [n.app!.v4, n.app!.v6]]],
    );
    assert.deepEqual(
      s.skipped.map((p) => p.ref.uid),
      [n.legacy!.uid],
    );
    for (const p of nodePods(other(n))) assert.ok(![...s.pods, ...s.skipped].some((x) => x.ref.uid === p.uid), `${n.name} lists a pod of ${other(n).name}`);
    assert.equal(s.splice?.on, true, `splicing is on: ${s.splice?.reason}`);
    // its own pins hold its node's captured pod and nothing else
    const maps = dumpJson(n.agent!.bpffs).maps;
    assert.deepEqual(pinned(maps, 'pod_info', 'uid'), [n.app!.uid]);
    assert.deepEqual(pinned(maps, 'pods', 'netns_cookie'), [s.pods[0]!.netnsCookie]);
    assert.deepEqual(pinned(maps, 'pod_by_ip4', 'ip'), [n.app!.v4]);
    assert.deepEqual(pinned(maps, 'pod_by_ip6', 'ip'), [n.app!.v6]);
    // and it asked the API server only for its node's pods
    const podReads = api.requests.filter((r) => r.user === user(n) && r.resource === 'pods' && (r.verb === 'list' || r.verb === 'watch'));
    assert.ok(podReads.some((r) => r.verb === 'list'));
    assert.deepEqual([...new Set(podReads.map((r) => r.query.fieldSelector))], [`spec.nodeName=${n.name}`]);
  }
});

const ip = (p: Pod, family: 4 | 6): string => (family === 4 ? p.v4 : p.v6);
const hostPort = (p: Pod, family: 4 | 6): string => (family === 4 ? `${p.v4}:${PORT}` : `[${p.v6}]:${PORT}`);

/** One request from `from` (an app, uid 1000, on `fromNode`) to the other node's pod `to` on `family`: what
 * it reached, the lines the proxies of both nodes printed meanwhile, and how both agents' watched counters
 * moved. */
async function request(fromNode: Node, from: Pod, to: Pod, family: 4 | 6) {
  const before = { proxies: NODES.map((n) => n.proxy.length), counters: NODES.map(counters) };
  const dst = hostPort(to, family);
  const outcome = await runCase(from.sp, { name: dst, uid: APP, gid: APP, to: dst });
  const through = (n: Node, p: Pod): number => (n.app === p ? 1 : 0);
  // a proxy prints its line as it forwards, before the reply: it is there or on its way
  const want = NODES.map((n, i) => before.proxies[i]! + (n === fromNode ? through(n, from) : through(n, to)));
  await waitFor(() => NODES.every((n, i) => n.proxy.length >= want[i]!), 5000, 'the proxies to print their lines');
  const lines = NODES.map((n, i) => n.proxy.slice(before.proxies[i]).map((l) => ({ tag: l.tag, peer: l.peer, orig: l.orig, error: l.error })));
  const moved = NODES.map((n, i) => watched(delta(before.counters[i]!, counters(n))));
  return { outcome, lines, moved };
}

/** the counters that move on one node: its app's outbound capture, its pod's inbound capture, and two spliced
 * sockets for each hop inside the pod (app <-> outbound proxy, inbound proxy <-> app) */
const half = (outbound: boolean, inbound: boolean): Record<string, number> => ({
  captured_outbound: outbound ? 1 : 0,
  inbound_captured: inbound ? 1 : 0,
  spliced: (outbound ? 2 : 0) + (inbound ? 2 : 0),
  splice_no_peer: 0,
});

for (const [fromNode, toNode] of [
  [N1, N2],
  [N2, N1],
] as const) {
  for (const family of [4, 6] as const) {
    test(`IPv${family}: an app on ${fromNode.name} calls the captured pod on ${toNode.name} through its outbound proxy and the server's inbound proxy`, async () => {
      const from = fromNode.app!;
      const to = toNode.app!;
      const r = await request(fromNode, from, to, family);
      // the app in the server pod got it from its proxy's passthrough address; the client saw the address it dialled
      assert.equal(r.outcome, `${to.sp.name}:${PORT} peer=${family === 4 ? '127.0.0.6' : '::6'} app-sees=${hostPort(to, family)}`);
      const orig = { address: ip(to, family), port: PORT };
      const out = { tag: 'proxy-outbound', peer: ip(from, family), orig, error: undefined };
      // the client pod's address reached the server's proxy unchanged: no NAT between the nodes
      const inb = { tag: 'proxy-inbound', peer: ip(from, family), orig, error: undefined };
      assert.deepEqual(
        r.lines,
        NODES.map((n) => (n === fromNode ? [out] : [inb])),
      );
      assert.deepEqual(
        r.moved,
        NODES.map((n) => (n === fromNode ? half(true, false) : half(false, true))),
      );
    });
  }
}

test('an uncaptured pod calls the captured pod on the other node: only the inbound proxy; and the other way only the outbound one', async () => {
  const toCaptured = await request(N1, N1.legacy!, N2.app!, 4);
  assert.equal(toCaptured.outcome, `app-2:${PORT} peer=127.0.0.6 app-sees=${hostPort(N2.app!, 4)}`);
  assert.deepEqual(toCaptured.lines, [[], [{ tag: 'proxy-inbound', peer: N1.legacy!.v4, orig: { address: N2.app!.v4, port: PORT }, error: undefined }]]);
  assert.deepEqual(toCaptured.moved, [half(false, false), half(false, true)]);

  const fromCaptured = await request(N1, N1.app!, N2.legacy!, 6);
  // not captured on arrival: the app sees the client pod itself (its outbound proxy's connection)
  assert.equal(fromCaptured.outcome, `legacy-2:${PORT} peer=${N1.app!.v6} app-sees=${hostPort(N2.legacy!, 6)}`);
  assert.deepEqual(fromCaptured.lines, [[{ tag: 'proxy-outbound', peer: N1.app!.v6, orig: { address: N2.legacy!.v6, port: PORT }, error: undefined }], []]);
  assert.deepEqual(fromCaptured.moved, [half(true, false), half(false, false)]);
});
