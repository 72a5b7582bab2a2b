// Inbound parity (capture-spec sections 4 and 6): TCP connections to a captured pod from outside its
// network namespace — from a namespace meshlane does not manage (the stand-in for another node), from
// the node itself, from another pod on the node — run once under the istio-iptables rules (the
// oracle) and once under meshlane, each in a fresh sandbox with the same addresses. What each
// connection hit must be the same: the listener, the peer it saw (the real client), and for the proxy
// the original destination from SO_ORIGINAL_DST.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseCaptureSettings, type PodLike } from '../../src/model/annotations.js';
import { istioIptablesRules } from '../oracle/istio-iptables.js';
import { applyIstioRules, flushIstioRules } from '../oracle/apply.js';
import type { SandboxMember, SandboxPod } from '../../src/sandbox/sandbox.js';
import {
  APP,
  POD_V4,
  POD_V6,
  POD_UID,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCases,
  runCase,
  startAgent,
  cleanupAgent,
  waitForPodSettings,
  waitFor,
  type Case,
  type Topology,
  type TopologyOptions,
  type AgentRun,
  type PodObjectOptions,
} from '../support/harness.js';
import { execFile as execFileCb } from 'node:child_process';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

const PEER_V4 = '10.244.0.11';
const PEER_UID = '3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';

interface Clients {
  remote: SandboxMember; // unmanaged netns on the bridge (another node)
  node: SandboxMember; // the node's own netns
  peer: SandboxPod; // another pod on the node, not captured
}

type CaseFn = (c: Clients) => Case[];

const to4 = (port: number): string => `${POD_V4}:${port}`;
const to6 = (port: number): string => `[${POD_V6}]:${port}`;
const from = (on: SandboxMember, name: string, to: string): Case => ({ name, uid: APP, gid: APP, to, on });

interface Variant {
  name: string;
  pod: PodObjectOptions;
  cases: CaseFn;
}

const VARIANTS: Variant[] = [
  {
    name: 'default settings',
    pod: {},
    cases: (c) => [
      from(c.remote, 'remote -> :8080', to4(8080)),
      from(c.remote, 'remote -> [v6]:8080', to6(8080)),
      from(c.remote, 'remote -> :9090', to4(9090)),
      from(c.node, 'node -> :8080', to4(8080)),
      from(c.node, 'node -> [v6]:9090', to6(9090)),
      from(c.peer, 'another pod -> :8080', to4(8080)),
      from(c.remote, 'remote -> :15008 (tunnel port)', to4(15008)),
      from(c.remote, 'remote -> [v6]:15008', to6(15008)),
      from(c.remote, 'remote -> :15090', to4(15090)),
      from(c.remote, 'remote -> :15021', to4(15021)),
      from(c.remote, 'remote -> :15020', to4(15020)),
      from(c.remote, 'remote -> [v6]:15021', to6(15021)),
    ],
  },
  {
    name: 'includeInboundPorts=8080',
    pod: { annotations: { 'traffic.sidecar.istio.io/includeInboundPorts': '8080' } },
    cases: (c) => [
      from(c.remote, 'remote -> :8080', to4(8080)),
      from(c.remote, 'remote -> :9090', to4(9090)),
      from(c.remote, 'remote -> [v6]:9090', to6(9090)),
    ],
  },
  {
    name: 'includeInboundPorts="" (no inbound capture)',
    pod: { annotations: { 'traffic.sidecar.istio.io/includeInboundPorts': '' } },
    cases: (c) => [from(c.remote, 'remote -> :8080', to4(8080)), from(c.node, 'node -> [v6]:8080', to6(8080))],
  },
  {
    name: 'excludeInboundPorts=9090',
    pod: { annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': '9090' } },
    cases: (c) => [
      from(c.remote, 'remote -> :9090', to4(9090)),
      from(c.remote, 'remote -> :8080', to4(8080)),
      from(c.remote, 'remote -> [v6]:9090', to6(9090)),
    ],
  },
  {
    name: 'status port 9090',
    pod: { annotations: { 'status.sidecar.istio.io/port': '9090' } },
    cases: (c) => [from(c.remote, 'remote -> :9090', to4(9090)), from(c.remote, 'remote -> :8080', to4(8080))],
  },
  {
    name: 'excludeInterfaces=eth0',
    pod: { annotations: { 'traffic.sidecar.istio.io/excludeInterfaces': 'eth0' } },
    cases: (c) => [from(c.remote, 'remote -> :8080', to4(8080)), from(c.remote, 'remote -> [v6]:8080', to6(8080))],
  },
];

const NS = namespaceObject('demo', { 'istio-injection': 'enabled' });
const LEGACY = namespaceObject('legacy', {});
const peerObject = podObject({ namespace: 'legacy', name: 'peer', uid: PEER_UID, ipv4: PEER_V4, ipv6: '' });
const settingsOf = (v: Variant) => parseCaptureSettings(podObject(v.pod) as PodLike).settings;

let topo: Topology | undefined;
let agent: AgentRun | undefined;
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

async function build(prefix: string, o: Omit<TopologyOptions, 'prefix'> = {}): Promise<{ t: Topology; clients: Clients }> {
  const t = await makeTopology({ prefix, ...o });
  const peer = await t.sb.addPod({ namespace: 'legacy', name: 'peer', uid: PEER_UID, ipv4: PEER_V4 });
  return { t, clients: { remote: t.svc, node: t.sb.node, peer } };
}

const oracle = new Map<string, Map<string, string>>();

test('oracle: inbound cases under the iptables rules of istio-iptables', async () => {
  const b = await build('mlio');
  topo = b.t;
  // the oracle's sandbox goes whatever happens here: the next test makes its own
  try {
    for (const v of VARIANTS) {
      assert.deepEqual(parseCaptureSettings(podObject(v.pod) as PodLike).errors, [], `${v.name}: valid annotations`);
      await applyIstioRules(topo.pod.netns, istioIptablesRules(settingsOf(v), {}), { addIPv6PassthroughAddress: false });
      try {
        oracle.set(v.name, await runCases(topo.pod, v.cases(b.clients)));
      } finally {
        await flushIstioRules(topo.pod.netns);
      }
    }
    assert.match(
      oracle.get('default settings')!.get('remote -> :8080')!,
      /^proxy-inbound:15006 peer=10\.244\.0\.200 orig=10\.244\.0\.10:8080 app-sees=10\.244\.0\.10:8080$/,
      'the oracle captured',
    );
  } finally {
    await destroyTopology(topo);
    topo = undefined;
  }
});

test('meshlane: the same inbound cases decide the same', async (t) => {
  assert.equal(oracle.size, VARIANTS.length, 'the oracle ran');
  const b = await build('mlim');
  topo = b.t;
  agent = await startAgent(topo.sb, [NS, LEGACY, podObject(), peerObject], 'inbound');
  for (const v of VARIANTS) {
    await t.test(v.name, async () => {
      agent!.write([NS, LEGACY, podObject(v.pod), peerObject]);
      await waitForPodSettings(agent!, POD_UID, settingsOf(v));
      const cases = v.cases(b.clients);
      const got = await runCases(topo!.pod, cases);
      const want = oracle.get(v.name)!;
      const diff = cases.map((c) => ({ c: c.name, iptables: want.get(c.name), meshlane: got.get(c.name) })).filter((r) => r.iptables !== r.meshlane);
      assert.deepEqual(
        diff,
        [],
        `meshlane differs from istio-iptables:\n${diff.map((r) => `  ${r.c}: iptables=${r.iptables} meshlane=${r.meshlane}`).join('\n')}`,
      );
    });
  }

  await t.test('proxy not listening: the client is never handed to the app', async () => {
    agent!.write([NS, LEGACY, podObject(), peerObject]);
    await waitForPodSettings(agent!, POD_UID, settingsOf(VARIANTS[0]!));
    const proxy = topo!.procs.find((p) => p.spawnargs.includes('proxy'))!;
    const exited = new Promise((r) => proxy.once('exit', r));
    proxy.kill('SIGKILL');
    await exited;
    // the listener leaves the sockhash with its socket
    await waitFor(() => true, 100, '');
    const r = await runCase(topo!.pod, from(b.clients.remote, 'remote -> :8080, proxy down', to4(8080)));
    // iptables REDIRECT to a closed port answers RST (ECONNREFUSED); sk_lookup can only drop the SYN
    // (the client times out). Either way the app never sees the connection.
    assert.match(r, /^error (ETIMEDOUT|ECONNREFUSED)$/);
  });
});

// A proxy that forwards inbound as Envoy does: to SO_ORIGINAL_DST from 127.0.0.6, or ::6 for IPv6, which
// must be an address of the pod's lo. A pod as the CNI leaves it has no ::6: istio-iptables adds it
// (configureIPv6Addresses; the oracle's applyIstioRules does as it does), meshlane's agent adds it when it
// enrols a pod with IPv6, and a released pod keeps it (it is the pod's own address from then on).
const FORWARDED: CaseFn = (c) => [from(c.remote, 'remote -> [v6]:8080, forwarded', to6(8080)), from(c.remote, 'remote -> :8080, forwarded', to4(8080))];
const hasPassthroughV6 = async (netns: string): Promise<boolean> =>
  /inet6 ::6\/128 /.test((await execFile('ip', ['-n', netns, '-6', 'addr', 'show', 'dev', 'lo'])).stdout);

test('a forwarding proxy in a pod without ::6 on lo: the oracle, then meshlane adds ::6 at enrolment and keeps it at release', async (t) => {
  const forwarded = new Map<string, Map<string, string>>();
  for (const side of ['iptables', 'meshlane'] as const) {
    await cleanupAgent(agent);
    agent = undefined;
    await destroyTopology(topo);
    topo = undefined;
    const b = await build(side === 'iptables' ? 'mlif' : 'mlig', { forward: true, passthroughV6: false });
    topo = b.t;
    assert.equal(await hasPassthroughV6(topo.pod.netns), false, `${side}: no ::6 on lo before capture`);
    if (side === 'iptables') {
      await applyIstioRules(topo.pod.netns, istioIptablesRules(settingsOf(VARIANTS[0]!), {}));
      forwarded.set(side, await runCases(topo.pod, FORWARDED(b.clients)));
      continue;
    }
    agent = await startAgent(topo.sb, [NS, LEGACY, podObject(), peerObject], 'inbound-fwd');
    await waitForPodSettings(agent, POD_UID, settingsOf(VARIANTS[0]!));
    await waitFor(() => agent!.log().includes('pod network namespace prepared'), 10_000, 'the agent to prepare the pod netns');
    assert.equal(await hasPassthroughV6(topo.pod.netns), true, 'meshlane: ::6 on lo once the pod is captured');
    forwarded.set(side, await runCases(topo.pod, FORWARDED(b.clients)));

    await t.test('released: ::6 stays, capture goes', async () => {
      agent!.write([NS, LEGACY, podObject({ labels: { 'sidecar.istio.io/inject': 'false' } }), peerObject]);
      await waitFor(() => agent!.status()?.pods.find((p) => p.ref.uid === POD_UID) === undefined, 10_000, 'the pod to be released');
      const r = await runCase(topo!.pod, from(b.clients.remote, 'remote -> :8080, released', to4(8080)));
      assert.match(r, /^app:8080 peer=10\.244\.0\.200 /, 'no longer captured: the app sees the client');
      assert.equal(await hasPassthroughV6(topo!.pod.netns), true, '::6 stays on lo');
    });
  }
  const want = forwarded.get('iptables')!;
  const got = forwarded.get('meshlane')!;
  assert.match(want.get('remote -> [v6]:8080, forwarded')!, /^app:8080 peer=::6 /, 'the oracle forwarded from ::6');
  assert.match(want.get('remote -> :8080, forwarded')!, /^app:8080 peer=127\.0\.0\.6 /, 'the oracle forwarded from 127.0.0.6');
  assert.deepEqual(Object.fromEntries(got), Object.fromEntries(want));
});
