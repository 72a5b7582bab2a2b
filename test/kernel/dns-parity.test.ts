// DNS parity (capture-spec section 3 step 5, section 6): DNS queries over UDP (unconnected and connected)
// and TCP run once under the rules istio-iptables writes with DNS capture on (nat table plus the raw-table
// conntrack zones, the oracle) and once under meshlane, each in a fresh sandbox with the same addresses
// and the same resolv.conf. Compared: which listener answered (the proxy's DNS listener on 15053 or the
// server itself), the sender the listener saw, the address the reply came from as the app sees it
// (recvmsg), and for connected sockets the peer the socket reports (getpeername).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseCaptureSettings } from '../../src/model/annotations.js';
import type { PodLike } from '../../src/model/annotations.js';
import type { CaptureSettings } from '../../src/model/types.js';
import { Sandbox } from '../../src/sandbox/sandbox.js';
import { PinnedMaps } from '../../src/dataplane/dataplane.js';
import { PodFlags } from '../../src/dataplane/layouts.js';
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
  ENDPOINT,
  destroyTopology,
  namespaceObject,
  podObject,
  outcomeOf,
  startAgent,
  stopAgent,
  cleanupAgent,
  waitForPodSettings,
  waitReady,
  type Topology,
  type AgentRun,
  type PodObjectOptions,
} from '../support/harness.js';

const SVC_HOST_V4 = '10.244.0.200';
const SVC_HOST_V6 = 'fd00:244::200';
const RESOLV_CONF = `search demo.svc.cluster.local\nnameserver ${SVC_V4}\nnameserver ${SVC_V6}\noptions ndots:5\n`;
const DNS_SERVERS = { dnsServersV4: [SVC_V4], dnsServersV6: [SVC_V6] };
const DNS_ON = '{"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"}}';

interface DnsCase {
  name: string;
  uid: number;
  gid: number;
  proto: 'udp' | 'tcp';
  to: string;
  connected?: boolean;
  /** bind the socket to this address (and a port) first; node binds a UDP socket to the wildcard
   * address before its first send or connect anyway */
  from?: string;
}

const v6 = (a: string, port: number): string => `[${a}]:${port}`;
const udp = (name: string, to: string, uid = APP, gid = uid): DnsCase => ({ name, uid, gid, proto: 'udp', to });
const udpc = (name: string, to: string, uid = APP, gid = uid): DnsCase => ({ name, uid, gid, proto: 'udp', to, connected: true });
const tcp = (name: string, to: string, uid = APP, gid = uid): DnsCase => ({ name, uid, gid, proto: 'tcp', to });
/** bound before connect() / sendmsg() to the wildcard address `from` (dig binds first, UDP and TCP) */
const bound = (c: DnsCase, from: string): DnsCase => ({ ...c, name: `${c.name}, bound to ${from} first`, from });

interface Variant {
  name: string;
  pod: PodObjectOptions;
  /** capture-all: no annotation enables it (istio-cni always does); set in the oracle's settings and,
   * for meshlane, in the pinned pods map after the agent has stopped */
  captureAll?: boolean;
  cases: DnsCase[];
}

const dnsOn = (extra: Record<string, string> = {}): PodObjectOptions => ({ annotations: { 'proxy.istio.io/config': DNS_ON, ...extra } });

const VARIANTS: Variant[] = [
  {
    name: 'DNS on, resolv.conf servers 10.96.0.10 and fd00:96::10',
    pod: dnsOn(),
    cases: [
      udp('app -> server :53/udp', `${SVC_V4}:53`),
      udpc('app -> server :53/udp connected', `${SVC_V4}:53`),
      udp('app -> v6 server :53/udp', v6(SVC_V6, 53)),
      udpc('app -> v6 server :53/udp connected', v6(SVC_V6, 53)),
      udp('app -> v4-mapped server on a v6 socket :53/udp', v6(`::ffff:${SVC_V4}`, 53)),
      udpc('app -> v4-mapped server on a v6 socket :53/udp connected', v6(`::ffff:${SVC_V4}`, 53)),
      udp('app -> non-resolv.conf address :53/udp', `${OTHER_V4}:53`),
      udpc('app -> non-resolv.conf address :53/udp connected', `${OTHER_V4}:53`),
      udp('app -> non-resolv.conf v6 address :53/udp', v6(SVC_HOST_V6, 53)),
      udp('app -> server :5353/udp (not DNS)', `${SVC_V4}:5353`),
      udp('app -> 127.0.0.1:53/udp', '127.0.0.1:53'),
      udp('proxy -> server :53/udp', `${SVC_V4}:53`, PROXY),
      udpc('proxy -> server :53/udp connected', `${SVC_V4}:53`, PROXY),
      udp('proxy -> v6 server :53/udp', v6(SVC_V6, 53), PROXY),
      udp('gid-1337 process -> server :53/udp', `${SVC_V4}:53`, APP, PROXY),
      tcp('app -> server :53/tcp', `${SVC_V4}:53`),
      tcp('app -> v6 server :53/tcp', v6(SVC_V6, 53)),
      tcp('app -> v4-mapped server :53/tcp', v6(`::ffff:${SVC_V4}`, 53)),
      tcp('app -> non-resolv.conf address :53/tcp', `${OTHER_V4}:53`),
      tcp('app -> 127.0.0.1:53/tcp', '127.0.0.1:53'),
      tcp('proxy -> server :53/tcp', `${SVC_V4}:53`, PROXY),
      tcp('gid-1337 process -> server :53/tcp', `${SVC_V4}:53`, APP, PROXY),
      tcp('app -> server :80/tcp', `${SVC_V4}:80`),
      bound(udp('app -> server :53/udp', `${SVC_V4}:53`), '0.0.0.0'),
      bound(udpc('app -> server :53/udp connected', `${SVC_V4}:53`), '0.0.0.0'),
      bound(udp('app -> v6 server :53/udp', v6(SVC_V6, 53)), '::'),
      bound(udpc('app -> v6 server :53/udp connected', v6(SVC_V6, 53)), '::'),
      bound(udpc('app -> v4-mapped server on a v6 socket :53/udp connected', v6(`::ffff:${SVC_V4}`, 53)), '::'),
      bound(tcp('app -> server :53/tcp', `${SVC_V4}:53`), '0.0.0.0'),
      bound(tcp('app -> v6 server :53/tcp', v6(SVC_V6, 53)), '::'),
      bound(tcp('app -> v4-mapped server :53/tcp', v6(`::ffff:${SVC_V4}`, 53)), '::'),
      bound(udpc('proxy -> server :53/udp connected', `${SVC_V4}:53`, PROXY), '0.0.0.0'),
    ],
  },
  {
    name: 'DNS on, excludeOutboundIPRanges=10.0.0.0/8 (covers the server)',
    pod: dnsOn({ 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.0.0.0/8' }),
    cases: [
      udp('app -> excluded server :53/udp', `${SVC_V4}:53`),
      udpc('app -> excluded server :53/udp connected', `${SVC_V4}:53`),
      tcp('app -> excluded server :53/tcp', `${SVC_V4}:53`),
      tcp('app -> excluded server :80/tcp', `${SVC_V4}:80`),
      udp('app -> excluded non-resolv.conf address :53/udp', `${OTHER_V4}:53`),
      tcp('app -> excluded non-resolv.conf address :53/tcp', `${OTHER_V4}:53`),
    ],
  },
  {
    name: 'DNS on, excludeOutboundPorts=53',
    pod: dnsOn({ 'traffic.sidecar.istio.io/excludeOutboundPorts': '53' }),
    cases: [
      udp('app -> server :53/udp', `${SVC_V4}:53`),
      udpc('app -> server :53/udp connected', `${SVC_V4}:53`),
      udp('app -> v6 server :53/udp', v6(SVC_V6, 53)),
      tcp('app -> server :53/tcp', `${SVC_V4}:53`),
      tcp('app -> v6 server :53/tcp', v6(SVC_V6, 53)),
    ],
  },
  {
    name: 'DNS off',
    pod: {},
    cases: [
      udp('app -> server :53/udp', `${SVC_V4}:53`),
      udpc('app -> server :53/udp connected', `${SVC_V4}:53`),
      udp('app -> v6 server :53/udp', v6(SVC_V6, 53)),
      udp('app -> 127.0.0.1:53/udp', '127.0.0.1:53'),
      tcp('app -> server :53/tcp', `${SVC_V4}:53`),
      tcp('app -> 127.0.0.1:53/tcp', '127.0.0.1:53'),
    ],
  },
  {
    name: 'DNS on, capture-all',
    pod: dnsOn(),
    captureAll: true,
    cases: [
      udp('app -> server :53/udp', `${SVC_V4}:53`),
      udp('app -> non-resolv.conf address :53/udp', `${OTHER_V4}:53`),
      udpc('app -> non-resolv.conf address :53/udp connected', `${OTHER_V4}:53`),
      udp('app -> non-resolv.conf v6 address :53/udp', v6(SVC_HOST_V6, 53)),
      udpc('app -> non-resolv.conf v6 address :53/udp connected', v6(SVC_HOST_V6, 53)),
      udp('app -> 127.0.0.1:53/udp', '127.0.0.1:53'),
      udp('app -> [::1]:53/udp', v6('::1', 53)),
      udp('proxy -> non-resolv.conf address :53/udp', `${OTHER_V4}:53`, PROXY),
      udp('app -> non-resolv.conf address :5353/udp', `${OTHER_V4}:5353`),
      tcp('app -> non-resolv.conf address :53/tcp', `${OTHER_V4}:53`),
      tcp('app -> v6 address :53/tcp', v6(SVC_HOST_V6, 53)),
      tcp('app -> 127.0.0.1:53/tcp', '127.0.0.1:53'),
      tcp('app -> own pod IP :53/tcp', `${POD_V4}:53`),
      tcp('proxy -> non-resolv.conf address :53/tcp', `${OTHER_V4}:53`, PROXY),
    ],
  },
];

/** What a UDP query hit: the listener, the sender it saw, where the reply came from as the app saw it,
 * the socket's own address (getsockname, without its port), and for a connected socket its
 * getpeername(). */
function udpOutcome(json: string, c: DnsCase): string {
  let r: { ok: boolean; error?: string; from?: string; local?: string; peer?: string; reply?: { tag: string; port: number; peer: string } };
  try {
    r = JSON.parse(json);
  } catch {
    return `unparsable: ${json.trim().slice(0, 200)}`;
  }
  if (!r.ok) return `error ${r.error}`;
  // The sender the DNS listener saw: for a connected socket too, which node binds to the wildcard
  // address and a port before it connects (the connect hook marks it for the pod's source routing).
  let s = `${r.reply?.tag}:${r.reply?.port} from=${r.from} sender=${r.reply?.peer} app-local=${(r.local ?? '').replace(/:\d+$/, '')}`;
  if (c.connected) s += ` getpeername=${r.peer}`;
  return s;
}

async function runDnsCase(t: Topology, c: DnsCase): Promise<string> {
  const from = c.from === undefined ? [] : ['--from', c.from];
  const args =
    c.proto === 'udp'
      ? [ENDPOINT(), 'udp-query', '--to', c.to, '--timeout', '1500', ...(c.connected ? ['--connected'] : []), ...from]
      : [ENDPOINT(), 'connect', '--to', c.to, '--timeout', '2000', ...from];
  const r = await t.pod.exec('node', args, { uid: c.uid, gid: c.gid, container: 'app', timeoutMs: 10_000 });
  return c.proto === 'udp' ? udpOutcome(r.stdout, c) : outcomeOf(r.stdout, { appLocal: true });
}

async function runDnsCases(t: Topology, cases: DnsCase[], parallel = 4): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let i = 0;
  const worker = async (): Promise<void> => {
    while (i < cases.length) {
      const c = cases[i++]!;
      out.set(c.name, await runDnsCase(t, c));
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}

/** The sandbox: a pod with the resolv.conf above, an app server, a proxy with a DNS listener (uid 1337),
 * and a host holding the nameservers (TCP and UDP, bound per address). */
async function makeDnsTopology(prefix: string): Promise<Topology> {
  const sb = await Sandbox.create({ prefix, cgroupDriver: 'systemd' });
  const procs: Topology['procs'] = [];
  try {
    const svc = await sb.addHost('svc', { ipv4: SVC_HOST_V4, ipv6: SVC_HOST_V6, extraV4: [SVC_V4, OTHER_V4], extraV6: [SVC_V6] });
    const pod = await sb.addPod({ namespace: 'demo', name: 'client', uid: POD_UID, ipv4: POD_V4, ipv6: POD_V6, resolvConf: RESOLV_CONF });
    const spawned = [
      { what: 'service TCP server', p: svc.spawn('node', [ENDPOINT(), 'serve', '--ports', '53,80', '--tag', 'svc']) },
      {
        what: 'service UDP server',
        p: svc.spawn('node', [
          ENDPOINT(),
          'udp-serve',
          '--ports',
          '53,5353',
          '--tag',
          'svc',
          '--addrs',
          [SVC_V4, OTHER_V4, SVC_HOST_V4, SVC_V6, SVC_HOST_V6].join(','),
        ]),
      },
      { what: 'app TCP server', p: pod.spawn('node', [ENDPOINT(), 'serve', '--ports', '53,8080', '--tag', 'app'], { container: 'app' }) },
      { what: 'app UDP server', p: pod.spawn('node', [ENDPOINT(), 'udp-serve', '--ports', '53', '--tag', 'app'], { container: 'app' }) },
      {
        what: 'proxy',
        p: pod.spawn('node', [ENDPOINT(), 'proxy', '--outbound', '15001', '--inbound', '15006', '--dns', '15053'], {
          uid: PROXY,
          gid: PROXY,
          container: 'istio-proxy',
        }),
      },
    ];
    procs.push(...spawned.map((s) => s.p));
    await Promise.all(spawned.map((s) => waitReady(s.p, s.what)));
    return { sb, pod, svc, procs };
  } catch (e) {
    for (const p of procs) p.kill('SIGKILL');
    await sb.destroy();
    throw e;
  }
}

const NS = namespaceObject('demo', { 'istio-injection': 'enabled' });
const settingsOf = (v: Variant): CaptureSettings => {
  const s = parseCaptureSettings(podObject(v.pod) as PodLike).settings;
  return v.captureAll ? { ...s, dns: { enabled: true, captureAll: true } } : s;
};

let topo: Topology | undefined;
let agent: AgentRun | undefined;
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const oracle = new Map<string, Map<string, string>>();

test('oracle: DNS cases under the iptables rules of istio-iptables', async () => {
  topo = await makeDnsTopology('mldo');
  // the oracle's sandbox goes whatever happens here: the next test makes its own
  try {
    for (const v of VARIANTS) {
      assert.deepEqual(parseCaptureSettings(podObject(v.pod) as PodLike).errors, [], `${v.name}: the variant's annotations are valid`);
      await applyIstioRules(topo.pod.netns, istioIptablesRules(settingsOf(v), { ...DNS_SERVERS, rawTable: true }), { addIPv6PassthroughAddress: false });
      try {
        oracle.set(v.name, await runDnsCases(topo, v.cases));
      } finally {
        await flushIstioRules(topo.pod.netns);
      }
    }
    // sanity: the rules really redirected, and the reply came back un-NATed
    const on = oracle.get(VARIANTS[0]!.name)!;
    assert.equal(on.get('app -> server :53/udp'), `proxy-dns:15053 from=${SVC_V4}:53 sender=${POD_V4} app-local=0.0.0.0`);
    assert.equal(on.get('app -> server :53/udp connected'), `proxy-dns:15053 from=${SVC_V4}:53 sender=${POD_V4} app-local=${POD_V4} getpeername=${SVC_V4}:53`);
    assert.match(
      on.get('app -> server :53/tcp')!,
      /^proxy-dns:15053 peer=10\.244\.0\.10 orig=10\.96\.0\.10:53 app-sees=10\.96\.0\.10:53 app-local=10\.244\.0\.10$/,
    );
    assert.match(
      on.get('app -> server :53/tcp, bound to 0.0.0.0 first')!,
      /^proxy-dns:15053 peer=10\.244\.0\.10 orig=10\.96\.0\.10:53 app-sees=10\.96\.0\.10:53 app-local=10\.244\.0\.10$/,
    );
    assert.equal(oracle.get('DNS off')!.get('app -> server :53/udp'), `svc:53 from=${SVC_V4}:53 sender=${POD_V4} app-local=0.0.0.0`);
  } finally {
    await destroyTopology(topo);
    topo = undefined;
  }
});

test('meshlane: the same DNS cases decide the same', async (t) => {
  assert.ok(oracle.size === VARIANTS.length, 'the oracle ran');
  topo = await makeDnsTopology('mldm');
  const first = VARIANTS[0]!;
  agent = await startAgent(topo.sb, [NS, podObject(first.pod)], 'dnsparity');
  for (const v of VARIANTS) {
    await t.test(v.name, async () => {
      agent!.write([NS, podObject(v.pod)]);
      await waitForPodSettings(agent!, POD_UID, parseCaptureSettings(podObject(v.pod) as PodLike).settings);
      if (v.captureAll) {
        // The agent would undo a hand-written flag: stop it (capture stays: links and maps are pinned).
        await stopAgent(agent);
        const pinned = new PinnedMaps(agent!.bpffs);
        try {
          const pods = pinned.maps.pods!;
          for (const [k, cfg] of pods.entries()) pods.set(k, { ...cfg, flags: cfg.flags | PodFlags.DNS_CAPTURE_ALL });
        } finally {
          pinned.close();
        }
      }
      const got = await runDnsCases(topo!, v.cases);
      const want = oracle.get(v.name)!;
      const rows = v.cases.map((c) => ({ case: c.name, iptables: want.get(c.name), meshlane: got.get(c.name) }));
      if (process.env.DNS_PARITY_VERBOSE) for (const r of rows) console.log(`${v.name} | ${r.case} | ${r.iptables} | ${r.meshlane}`);
      const diff = rows.filter((r) => r.iptables !== r.meshlane);
      assert.deepEqual(
        diff,
        [],
        `cases where meshlane differs from istio-iptables:\n${diff.map((r) => `  ${r.case}: iptables=${r.iptables} meshlane=${r.meshlane}`).join('\n')}`,
      );
    });
  }
});
