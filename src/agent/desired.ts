// Pure: a DesiredPod (the model's output) becomes the map entries that describe it to the programs.
import type { Cidr, DesiredPod } from '../model/types.js';
import { ip6Text, ipFamily } from '../util/ip.js';
import { CidrKind, IfaceKind, MAX_PROXY_IDS, PodFlags, PortKind, type PodConfigValue } from '../dataplane/layouts.js';

export interface PodEntries {
  /** pod_id is filled in by the planner */
  config: Omit<PodConfigValue, 'pod_id'>;
  ports: Array<{ port: number; kind: number }>;
  cidrs4: Array<{ prefix: number; kind: number; addr: string }>;
  cidrs6: Array<{ prefix: number; kind: number; addr: string }>;
  /** DNS servers of the pod (resolv.conf), when DNS capture is on without capture-all */
  dns: string[];
  /** excluded / rerouted interfaces, resolved to ifindexes in the pod's netns */
  ifaces: Array<{ ifindex: number; kind: number }>;
  info: { namespace_: string; name: string; uid: string };
  /** problems found while compiling (added to the pod's errors in status) */
  errors: string[];
}

const ZERO6 = '::';

function isLoopbackNet(c: Cidr): boolean {
  return c.family === 4 ? c.addr.startsWith('127.') : c.addr === '::1';
}

/** What the agent learns from inside the pod (its resolv.conf, its interfaces). */
export interface PodRuntime {
  dnsServers: string[];
  ifindex: (name: string) => number | undefined;
}

const NO_RUNTIME: PodRuntime = { dnsServers: [], ifindex: () => undefined };

export function compilePod(pod: DesiredPod, rt: PodRuntime = NO_RUNTIME): PodEntries {
  const s = pod.settings;
  const errors: string[] = [];
  const ip4 = pod.ips.find((ip) => ipFamily(ip) === 4);
  const ip6 = pod.ips.find((ip) => ipFamily(ip) === 6);
  let flags = 0;
  if (s.outboundInclude.all) flags |= PodFlags.OUT_INCLUDE_ALL;
  if (s.outboundInclude.cidrs.some(isLoopbackNet)) flags |= PodFlags.OUT_INCLUDE_LOOPBACK;
  if (s.dns.enabled) flags |= PodFlags.DNS_CAPTURE;
  if (s.dns.captureAll) flags |= PodFlags.DNS_CAPTURE_ALL;
  if (ip4) flags |= PodFlags.HAS_IP4;
  if (ip6) flags |= PodFlags.HAS_IP6;
  if (s.inboundPorts.mode === 'all' || s.inboundPorts.include.length > 0) flags |= PodFlags.IN_ENABLED;
  if (s.inboundPorts.mode === 'all') flags |= PodFlags.IN_INCLUDE_ALL;

  const ids = (list: number[], what: string): number[] => {
    if (list.length > MAX_PROXY_IDS) errors.push(`${what} has ${list.length} entries; meshlane uses the first ${MAX_PROXY_IDS}`);
    return list.slice(0, MAX_PROXY_IDS);
  };
  const uids = ids(s.proxyUids, 'the proxy uid list');
  const gids = ids(s.proxyGids, 'the proxy gid list');

  const ports: PodEntries['ports'] = [];
  const addPorts = (list: number[], kind: number): void => {
    for (const port of new Set(list)) ports.push({ port, kind });
  };
  addPorts(s.excludeOutboundPorts, PortKind.OUT_EXCLUDE);
  addPorts(s.includeOutboundPorts, PortKind.OUT_INCLUDE);
  if (s.inboundPorts.mode === 'all') addPorts(s.inboundPorts.exclude, PortKind.IN_EXCLUDE);
  else addPorts(s.inboundPorts.include, PortKind.IN_INCLUDE);

  const cidrs4: PodEntries['cidrs4'] = [];
  const cidrs6: PodEntries['cidrs6'] = [];
  const addCidrs = (list: Cidr[], kind: number): void => {
    for (const c of list) (c.family === 4 ? cidrs4 : cidrs6).push({ prefix: c.prefix, kind, addr: c.addr });
  };
  addCidrs(s.outboundExclude, CidrKind.OUT_EXCLUDE);
  if (!s.outboundInclude.all) addCidrs(s.outboundInclude.cidrs, CidrKind.OUT_INCLUDE);

  // in the form the pod_dns key reads back as (IPv4 v4-mapped), or the planner sees a change every pass
  const dns = s.dns.enabled && !s.dns.captureAll ? [...new Set(rt.dnsServers.flatMap((a) => ip6Text(a) ?? []))] : [];
  const ifaces: PodEntries['ifaces'] = [];
  const addIfaces = (names: string[], kind: number): void => {
    for (const n of names) {
      const ifindex = rt.ifindex(n);
      if (ifindex !== undefined) ifaces.push({ ifindex, kind });
    }
  };
  addIfaces(s.excludeInterfaces, IfaceKind.EXCLUDE);
  addIfaces(s.rerouteInterfaces, IfaceKind.REROUTE);

  // the sets the maps will hold none of: the programs skip those lookups
  const none = (entries: Array<{ kind: number }>, kind: number, flag: number): number => (entries.some((e) => e.kind === kind) ? 0 : flag);
  flags |= none(ports, PortKind.OUT_EXCLUDE, PodFlags.NO_OUT_EXCLUDE_PORTS);
  flags |= none(ports, PortKind.OUT_INCLUDE, PodFlags.NO_OUT_INCLUDE_PORTS);
  flags |= none([...cidrs4, ...cidrs6], CidrKind.OUT_EXCLUDE, PodFlags.NO_OUT_EXCLUDE_CIDRS);
  flags |= none([...cidrs4, ...cidrs6], CidrKind.OUT_INCLUDE, PodFlags.NO_OUT_INCLUDE_CIDRS);
  flags |= none(ifaces, IfaceKind.EXCLUDE, PodFlags.NO_EXCLUDE_IFACES);

  return {
    config: {
      flags,
      outbound_port: s.outboundPort,
      inbound_port: s.inboundPort,
      tunnel_port: s.inboundTunnelPort,
      dns_port: s.dnsPort,
      ip4: ip4 ?? '0.0.0.0',
      ip6: ip6 ?? ZERO6,
      n_uids: uids.length,
      n_gids: gids.length,
      uids,
      gids,
    },
    ports: dedupe(ports),
    cidrs4: dedupe(cidrs4),
    cidrs6: dedupe(cidrs6),
    dns,
    ifaces: dedupe(ifaces),
    info: { namespace_: pod.ref.namespace, name: pod.ref.name, uid: pod.ref.uid },
    errors,
  };
}

function dedupe<T>(xs: T[]): T[] {
  const seen = new Set<string>();
  return xs.filter((x) => {
    const k = JSON.stringify(x);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
