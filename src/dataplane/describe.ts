// Decodes every pinned map into plain rows (addresses, ports, pod names where known), for
// `meshlane dump` and the demo. Reads only; works from the pins with no agent running.
import { CaptureKind, CidrKind, CIDR_KEY_FIXED_BITS, MAPS, PodFlags, PortKind, Stat, type MapName } from './layouts.js';
import { ip4 } from './struct.js';
import { AF_INET, ipToBytes, plainIp } from '../util/ip.js';
import type { MapsView } from './dataplane.js';
import { BypassReason, GlobalFlags, Handover, IfaceKind } from './layouts.js';
import { formatSize } from './splice.js';

const names = (table: Record<string, number>, v: number): string => Object.entries(table).find(([, n]) => n === v)?.[0] ?? String(v);
const flagNames = (v: number): string[] =>
  Object.entries(PodFlags)
    .filter(([, b]) => (v & b) !== 0)
    .map(([n]) => n);

export type Row = Record<string, unknown>;

export function describeMaps(maps: Partial<MapsView>, only?: MapName): Partial<Record<MapName, Row[] | string>> {
  const podName = new Map<number, string>();
  for (const [id, info] of maps.pod_info?.entries() ?? []) podName.set(id, `${info.namespace_}/${info.name}`);
  const pod = (id: number): string => podName.get(id) ?? `#${id}`;
  const out: Partial<Record<MapName, Row[] | string>> = {};
  const want = (n: MapName): boolean => (!only || only === n) && maps[n] !== undefined;

  if (want('pods'))
    out.pods = maps.pods!.entries().map(([cookie, c]) => ({
      netns_cookie: cookie,
      pod: pod(c.pod_id),
      pod_id: c.pod_id,
      ip4: c.flags & PodFlags.HAS_IP4 ? c.ip4 : undefined,
      ip6: c.flags & PodFlags.HAS_IP6 ? c.ip6 : undefined,
      outbound_port: c.outbound_port,
      inbound_port: c.inbound_port,
      tunnel_port: c.tunnel_port,
      dns_port: c.dns_port,
      proxy_uids: c.uids.slice(0, c.n_uids),
      proxy_gids: c.gids.slice(0, c.n_gids),
      flags: flagNames(c.flags),
    }));
  if (want('pod_ports')) out.pod_ports = maps.pod_ports!.entries().map(([k]) => ({ pod: pod(k.pod_id), kind: names(PortKind, k.kind), port: k.port }));
  for (const n of ['pod_cidrs4', 'pod_cidrs6'] as const) {
    if (want(n))
      out[n] = maps[n]!.entries().map(([k]) => ({
        pod: pod(k.pod_id),
        kind: names(CidrKind, k.kind),
        cidr: `${k.addr}/${k.prefixlen - CIDR_KEY_FIXED_BITS}`,
      }));
  }
  if (want('sock_state')) out.sock_state = 'socket local storage: one entry per captured socket, freed with the socket (not listable)';
  if (want('orig_by_tuple'))
    out.orig_by_tuple = maps.orig_by_tuple!.entries().map(([k, v]) => ({
      netns_cookie: k.netns_cookie,
      from: `${k.src}:${k.src_port}`,
      to: `${k.dst}:${k.dst_port}`,
      original_dst: origText(v),
    }));
  if (want('pod_info')) out.pod_info = maps.pod_info!.entries().map(([id, i]) => ({ pod_id: id, namespace: i.namespace_, name: i.name, uid: i.uid }));
  if (want('pod_by_ip4')) out.pod_by_ip4 = maps.pod_by_ip4!.entries().map(([ip, cookie]) => ({ ip, netns_cookie: cookie }));
  if (want('pod_by_ip6')) out.pod_by_ip6 = maps.pod_by_ip6!.entries().map(([k, cookie]) => ({ ip: k.addr, netns_cookie: cookie }));
  if (want('listeners'))
    out.listeners = maps
      .listeners!.entries()
      .map(([k, sock]) => ({ netns_cookie: k.netns_cookie, port: k.port, family: k.family === AF_INET ? 'ipv4' : 'ipv6', socket_cookie: sock }));
  if (want('pod_ifaces'))
    out.pod_ifaces = maps.pod_ifaces!.entries().map(([k]) => ({ pod: pod(k.pod_id), kind: names(IfaceKind, k.kind), ifindex: k.ifindex }));
  if (want('pod_dns')) out.pod_dns = maps.pod_dns!.entries().map(([k]) => ({ pod: pod(k.pod_id), nameserver: plainIp(k.addr) }));
  if (want('sock_pairs'))
    out.sock_pairs = maps.sock_pairs!.entries().map(([k, sock]) => ({
      netns_cookie: k.netns_cookie,
      local: hostPort(k.local, k.local_port),
      remote: hostPort(k.remote, k.remote_port),
      socket_cookie: sock,
    }));
  if (want('global')) {
    const g = maps.global!.get(0);
    const flags = g?.flags ?? 0;
    out.global = [
      {
        flags: Object.entries(GlobalFlags)
          .filter(([, b]) => (flags & b) !== 0)
          .map(([n]) => n),
        splice: (flags & GlobalFlags.SPLICE) !== 0,
        splice_budget: g ? formatSize(Number(g.splice_budget)) : undefined,
        splice_grace_ms: g ? Number(g.splice_grace_ns / 1_000_000n) : undefined,
      },
    ];
  }
  if (want('splice_state'))
    out.splice_state = 'socket local storage: one entry per spliced socket, freed with the socket (not listable); splice_* counters in stats';
  if (want('splice_marks')) {
    // the kernel addresses in the values are not shown; the cookies say which sockets
    const now = monotonicNs();
    out.splice_marks = maps.splice_marks!.entries().map(([k, m]) => ({
      netns_cookie: k.netns_cookie,
      marked: `${hostPort(k.local, k.local_port)} -> ${hostPort(k.remote, k.remote_port)}`,
      marked_cookie: m.target_cookie,
      by_cookie: m.cookie,
      age_ms: now >= m.since_ns ? Number((now - m.since_ns) / 1_000_000n) : 0,
    }));
  }
  if (want('splice_gen')) out.splice_gen = [{ marks_made: maps.splice_gen!.get(0) ?? 0n }];
  if (want('handover')) {
    const podOf = new Map([...(maps.pods?.entries() ?? [])].map(([cookie, c]) => [cookie, pod(c.pod_id)]));
    out.handover = maps.handover!.entries().map(([cookie, c]) => ({
      netns_cookie: cookie,
      pod: cookie === Handover.NODE_KEY ? '(the node)' : (podOf.get(cookie) ?? '(not captured)'),
      inflight: c.inflight,
      refused_at_limit: c.refused_pod,
      refused_node_full: c.refused_node,
    }));
  }
  if (want('limits')) {
    const l = maps.limits!.get(0);
    out.limits = [{ handover_per_pod: l?.handover_per_pod || Handover.DEFAULT_PER_POD }];
  }
  if (want('stats')) out.stats = Stat.map((name, i) => ({ counter: name, value: maps.stats!.get(i) ?? 0n }));
  if (want('bypass_stats')) out.bypass_stats = BypassReason.map((reason, i) => ({ reason, value: maps.bypass_stats!.get(i) ?? 0n }));
  return out;
}

/** CLOCK_MONOTONIC in ns: what bpf_ktime_get_ns() returns. */
const monotonicNs = (): bigint => process.hrtime.bigint();

const hostPort = (a: string, port: number): string => {
  const p = plainIp(a);
  return p.includes(':') ? `[${p}]:${port}` : `${p}:${port}`;
};

/** orig_dst keeps IPv4 in the first 4 bytes of its 16-byte address field. */
export function origText(o: { family: number; port: number; addr: string; kind: number }): string {
  const addr = o.family === AF_INET ? ip4.read(ipToBytes(o.addr, 6), 0) : `[${o.addr}]`;
  return `${addr}:${o.port} (${names(CaptureKind, o.kind)})`;
}

export const MAP_TITLES: Record<MapName, string> = Object.fromEntries(
  Object.entries(MAPS).map(([n, d]) => [n, `${n} (${d.what}) [maps/${d.name}_v${d.version}]`]),
) as Record<MapName, string>;
