// Outbound parity (capture-spec sections 3 and 6): every case runs once under the nat rules that
// istio-iptables writes for the pod's settings (the oracle) and once under meshlane, each in a fresh
// sandbox with the same addresses, and what each connection hit must be the same: which listener,
// the peer address it saw, for the proxy the original destination read with SO_ORIGINAL_DST, and the
// app's own address (getsockname). Sockets bound before connect() (to the wildcard address, with a port
// taken at bind or a fixed one) are cases of their own.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseCaptureSettings } from '../../src/model/annotations.js';
import type { PodLike } from '../../src/model/annotations.js';
import { istioIptablesRules } from '../oracle/istio-iptables.js';
import { applyIstioRules, flushIstioRules } from '../oracle/apply.js';
import {
  APP,
  PROXY,
  POD_V4,
  POD_V6,
  SVC_V4,
  SVC_V6,
  OTHER_V4,
  POD_UID,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCases,
  startAgent,
  cleanupAgent,
  waitForPodSettings,
  type Case,
  type Topology,
  type AgentRun,
  type PodObjectOptions,
} from '../support/harness.js';

const v6 = (a: string, port: number): string => `[${a}]:${port}`;
const app = (name: string, to: string, from?: string): Case => ({ name, uid: APP, gid: APP, to, from });
const proxy = (name: string, to: string, from?: string): Case => ({ name, uid: PROXY, gid: PROXY, to, from });
/** bound before connect() (to the wildcard address `from`, and `fromPort` or a port taken at bind), as
 * dig over TCP, `curl --local-port` and Python's bind(("0.0.0.0", 0)) do */
const bound = (c: Case, from: string, fromPort?: number): Case => ({ ...c, name: `${c.name}, bound to ${from}:${fromPort ?? 0} first`, from, fromPort });

interface Variant {
  name: string;
  pod: PodObjectOptions;
  cases: Case[];
}

const VARIANTS: Variant[] = [
  {
    name: 'default settings',
    pod: {},
    cases: [
      app('app -> service VIP', `${SVC_V4}:80`),
      app('app -> service VIP (v6)', v6(SVC_V6, 80)),
      app('app -> v4-mapped VIP on a v6 socket', v6(`::ffff:${SVC_V4}`, 80)),
      app('app -> 127.0.0.1:8080', '127.0.0.1:8080'),
      app('app -> [::1]:8080', v6('::1', 8080)),
      app('app -> 127.0.0.2:8080', '127.0.0.2:8080'),
      app('app -> own pod IP', `${POD_V4}:8080`),
      app('app -> own pod IPv6', v6(POD_V6, 8080)),
      app('app -> VIP:15008', `${SVC_V4}:15008`),
      app('app -> TCP 53, DNS off', `${OTHER_V4}:53`),
      proxy('proxy -> service VIP', `${SVC_V4}:80`),
      proxy('proxy -> service VIP (v6)', v6(SVC_V6, 80)),
      proxy('proxy -> own pod IP (hairpin)', `${POD_V4}:8080`),
      proxy('proxy -> own pod IPv6 (hairpin)', v6(POD_V6, 8080)),
      proxy('proxy from 127.0.0.6 -> own pod IP', `${POD_V4}:8080`, '127.0.0.6'),
      proxy('proxy from ::6 -> own pod IPv6', v6(POD_V6, 8080), '::6'),
      proxy('proxy -> own pod IP:15008', `${POD_V4}:15008`),
      proxy('proxy -> 127.0.0.1:15020', '127.0.0.1:15020'),
      proxy('proxy -> 127.0.0.2:8080', '127.0.0.2:8080'),
      proxy('proxy -> [::6]:8080', v6('::6', 8080)),
      app('app -> [::6]:8080', v6('::6', 8080)),
      { name: 'gid-1337 process -> VIP', uid: APP, gid: PROXY, to: `${SVC_V4}:80` },
      { name: 'gid-1337 process -> own pod IP', uid: APP, gid: PROXY, to: `${POD_V4}:8080` },
      { name: 'uid-1337 gid-1000 process -> own pod IP', uid: PROXY, gid: APP, to: `${POD_V4}:8080` },
      bound(app('app -> service VIP', `${SVC_V4}:80`), '0.0.0.0'),
      bound(app('app -> service VIP (v6)', v6(SVC_V6, 80)), '::'),
      bound(app('app -> v4-mapped VIP on a v6 socket', v6(`::ffff:${SVC_V4}`, 80)), '::'),
      bound(app('app -> service VIP', `${SVC_V4}:80`), '0.0.0.0', 40001),
      bound(app('app -> service VIP (v6)', v6(SVC_V6, 80)), '::', 40002),
      bound(app('app -> 127.0.0.1:8080', '127.0.0.1:8080'), '0.0.0.0'),
      bound(app('app -> own pod IP', `${POD_V4}:8080`), '0.0.0.0'),
      bound(app('app -> own pod IPv6', v6(POD_V6, 8080)), '::'),
      bound(app('app -> [::6]:8080', v6('::6', 8080)), '::'),
      bound(proxy('proxy -> own pod IP (hairpin)', `${POD_V4}:8080`), '0.0.0.0'),
      bound(proxy('proxy -> own pod IPv6 (hairpin)', v6(POD_V6, 8080)), '::'),
      bound(proxy('proxy -> service VIP', `${SVC_V4}:80`), '0.0.0.0'),
    ],
  },
  {
    name: 'excludeOutboundIPRanges=10.0.0.0/8',
    pod: { annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.0.0.0/8' } },
    cases: [
      app('app -> excluded VIP', `${SVC_V4}:80`),
      app('app -> VIP v6 (not excluded)', v6(SVC_V6, 80)),
      proxy('proxy -> own pod IP still hairpins', `${POD_V4}:8080`),
    ],
  },
  {
    name: 'includeOutboundIPRanges=10.96.0.0/16',
    pod: { annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.96.0.0/16' } },
    cases: [
      app('app -> included VIP', `${SVC_V4}:80`),
      app('app -> address outside the include', `${OTHER_V4}:80`),
      app('app -> v6 VIP (no v6 include)', v6(SVC_V6, 80)),
    ],
  },
  {
    name: 'include 10.0.0.0/8, exclude 10.96.0.0/16',
    pod: {
      annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8', 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/16' },
    },
    cases: [app('app -> excluded inside include', `${SVC_V4}:80`), app('app -> included', `${OTHER_V4}:80`)],
  },
  {
    name: 'include 10.96.0.0/16, exclude 10.0.0.0/8 (exclude wins)',
    pod: {
      annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.96.0.0/16', 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.0.0.0/8' },
    },
    cases: [app('app -> included but excluded', `${SVC_V4}:80`)],
  },
  {
    name: 'includeOutboundIPRanges=127.1.2.3/32 (a loopback include)',
    pod: { annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '127.1.2.3/32' } },
    cases: [
      app('app -> 127.1.2.3', '127.1.2.3:8080'),
      app('app -> own pod IP', `${POD_V4}:8080`),
      app('app -> 127.0.0.1', '127.0.0.1:8080'),
      app('app -> VIP (not included)', `${SVC_V4}:80`),
      proxy('proxy -> 127.0.0.2 hairpins', '127.0.0.2:8080'),
      bound(app('app -> 127.1.2.3', '127.1.2.3:8080'), '0.0.0.0'),
      bound(proxy('proxy -> 127.0.0.2 hairpins', '127.0.0.2:8080'), '0.0.0.0'),
    ],
  },
  {
    name: 'includeOutboundIPRanges="" with includeOutboundPorts=8080',
    pod: { annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '', 'traffic.sidecar.istio.io/includeOutboundPorts': '8080' } },
    cases: [
      app('app -> VIP:8080 (port included)', `${SVC_V4}:8080`),
      app('app -> VIP:80 (nothing included)', `${SVC_V4}:80`),
      proxy('proxy -> own pod IP still hairpins', `${POD_V4}:8080`),
    ],
  },
  {
    name: 'excludeOutboundPorts=80,8080',
    pod: { annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '80,8080' } },
    cases: [
      app('app -> VIP:80 (excluded port)', `${SVC_V4}:80`),
      app('app -> VIP:53 (other port)', `${SVC_V4}:53`),
      proxy('proxy -> own pod IP:8080 (excluded before the hairpin)', `${POD_V4}:8080`),
      proxy('proxy -> own pod IP:9090', `${POD_V4}:9090`),
    ],
  },
  {
    name: 'excludeOutboundIPRanges=fd00:96::/32 (v6)',
    pod: { annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': 'fd00:96::/32' } },
    cases: [app('app -> excluded v6 VIP', v6(SVC_V6, 80)), app('app -> v4 VIP', `${SVC_V4}:80`)],
  },
  {
    name: 'proxy runAsUser 1337, runAsGroup 1338 (uid and gid differ)',
    pod: { proxySecurityContext: { runAsUser: 1337, runAsGroup: 1338 } },
    cases: [
      { name: 'gid 1338 -> VIP', uid: APP, gid: 1338, to: `${SVC_V4}:80` },
      { name: 'gid 1337 -> VIP (no longer the proxy gid)', uid: APP, gid: 1337, to: `${SVC_V4}:80` },
      { name: 'gid 1338 -> own pod IP', uid: APP, gid: 1338, to: `${POD_V4}:8080` },
      { name: 'uid 1337 gid 1000 -> own pod IP', uid: PROXY, gid: APP, to: `${POD_V4}:8080` },
    ],
  },
  {
    name: 'DNS capture on (no resolv.conf servers)',
    pod: { annotations: { 'proxy.istio.io/config': '{"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"}}' } },
    cases: [
      proxy('proxy -> own pod IP:53', `${POD_V4}:53`),
      { name: 'gid-1337 process -> own pod IP:53', uid: APP, gid: PROXY, to: `${POD_V4}:53` },
      app('app -> own pod IP:53', `${POD_V4}:53`),
      app('app -> own pod IP:8080', `${POD_V4}:8080`),
      proxy('proxy -> own pod IP:8080', `${POD_V4}:8080`),
    ],
  },
];

const NS = namespaceObject('demo', { 'istio-injection': 'enabled' });
const settingsOf = (v: Variant) => parseCaptureSettings(podObject(v.pod) as PodLike).settings;

let topo: Topology | undefined;
let agent: AgentRun | undefined;
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const oracle = new Map<string, Map<string, string>>();

test('oracle: the cases under the iptables rules of istio-iptables', async () => {
  topo = await makeTopology({ prefix: 'mlpo' });
  // the oracle's sandbox goes whatever happens here: the next test makes its own
  try {
    for (const v of VARIANTS) {
      const s = settingsOf(v);
      assert.deepEqual(parseCaptureSettings(podObject(v.pod) as PodLike).errors, [], `${v.name}: the variant's annotations are valid`);
      // the sandbox already put ::6 on lo, as istio-iptables would
      await applyIstioRules(topo.pod.netns, istioIptablesRules(s, {}), { addIPv6PassthroughAddress: false });
      try {
        oracle.set(v.name, await runCases(topo.pod, v.cases, 4, { appLocal: true }));
      } finally {
        await flushIstioRules(topo.pod.netns);
      }
    }
    // sanity: the oracle really redirected (so a broken rule set cannot pass as "nothing captured")
    assert.match(
      oracle.get('default settings')!.get('app -> service VIP')!,
      /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80 app-local=10\.244\.0\.10$/,
    );
    // and a socket bound to the wildcard address first keeps the pod IP as its source under REDIRECT
    assert.match(
      oracle.get('default settings')!.get('app -> service VIP, bound to 0.0.0.0:40001 first')!,
      /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80 app-local=10\.244\.0\.10$/,
    );
    assert.match(oracle.get('default settings')!.get('proxy -> own pod IP (hairpin)')!, /^proxy-inbound:15006 /);
  } finally {
    await destroyTopology(topo);
    topo = undefined;
  }
});

test('meshlane: the same cases decide the same', async (t) => {
  assert.ok(oracle.size === VARIANTS.length, 'the oracle ran');
  topo = await makeTopology({ prefix: 'mlpm' });
  const first = VARIANTS[0]!;
  agent = await startAgent(topo.sb, [NS, podObject(first.pod)], 'parity');
  for (const v of VARIANTS) {
    await t.test(v.name, async () => {
      agent!.write([NS, podObject(v.pod)]);
      await waitForPodSettings(agent!, POD_UID, settingsOf(v));
      const got = await runCases(topo!.pod, v.cases, 4, { appLocal: true });
      const want = oracle.get(v.name)!;
      const rows = v.cases.map((c) => ({ case: c.name, iptables: want.get(c.name), meshlane: got.get(c.name) }));
      assert.deepEqual(
        rows.filter((r) => r.iptables !== r.meshlane),
        [],
        `cases where meshlane differs from istio-iptables:\n${rows
          .filter((r) => r.iptables !== r.meshlane)
          .map((r) => `  ${r.case}: iptables=${r.iptables} meshlane=${r.meshlane}`)
          .join('\n')}`,
      );
    });
  }
});
