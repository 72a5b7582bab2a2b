// Every map: its key and value layout (mirroring bpf/meshlane.h), its type, capacity and flags
// (mirroring bpf/maps.h), and the layout version that names its pin. A pinned map outlives the agent
// and can change none of these, so each (map, version) is locked to a fingerprint of all of them in
// layouts.lock (append-only, see layout-lock.ts): change any and test/unit/layouts.test.ts fails until
// the version is bumped and `npm run layouts:lock` has appended the new entry. test/kernel/layouts-btf
// checks all of it against the compiled objects.
import { struct, scalar, u8, u16, u32, u64, be16, ip4, ip6, u32Array, u8Array, cstr, type StructLayout } from './struct.js';
import { MapFlags, MapType } from './uapi.js';

export const MAX_PROXY_IDS = 8;

/** Map capacities, as bpf/meshlane.h defines them (MESHLANE_MAX_*). */
export const MapLimits = {
  PODS: 4096,
  PORT_ENTRIES: 65536,
  CIDR_ENTRIES: 65536,
  INFLIGHT: 65536,
  LISTENERS: 16384,
  PAIRS: 131072,
  SET_ENTRIES: 16384,
} as const;

export const PodFlags = {
  OUT_INCLUDE_ALL: 1 << 0,
  OUT_INCLUDE_LOOPBACK: 1 << 1,
  DNS_CAPTURE: 1 << 2,
  DNS_CAPTURE_ALL: 1 << 3,
  HAS_IP4: 1 << 4,
  HAS_IP6: 1 << 5,
  IN_ENABLED: 1 << 6,
  IN_INCLUDE_ALL: 1 << 7,
} as const;

export const PortKind = { OUT_EXCLUDE: 1, OUT_INCLUDE: 2, IN_INCLUDE: 3, IN_EXCLUDE: 4 } as const;
export const CidrKind = { OUT_EXCLUDE: 1, OUT_INCLUDE: 2 } as const;
export const CaptureKind = { NONE: 0, OUTBOUND: 1, INBOUND: 2, DNS: 3 } as const;
export const IfaceKind = { EXCLUDE: 1, REROUTE: 2 } as const;
export const GlobalFlags = { SPLICE: 1 << 0 } as const;
export const CIDR_KEY_FIXED_BITS = 64;

export const Stat = [
  'connect_seen',
  'captured_outbound',
  'captured_inbound',
  'bypassed',
  'orig_dst_served',
  'proxy_port_uncaptured',
  'handover_full',
  'inbound_captured',
  'inbound_no_listener',
  'dns_captured',
  'spliced',
] as const;

/** bpf/meshlane.h enum bypass_reason, in order: the index in bypass_stats. */
export const BypassReason = [
  'excluded_port',
  'passthrough',
  'proxy_owner',
  'local',
  'loopback',
  'excluded_cidr',
  'not_included',
  'udp_not_dns',
  'dns_not_server',
] as const;
/** bypass_stats' capacity (BYPASS_SLOTS): room for new reasons without a new layout version */
export const BYPASS_SLOTS = 32;

export const PodConfig = struct('pod_config', {
  pod_id: u32,
  flags: u32,
  outbound_port: u16,
  inbound_port: u16,
  tunnel_port: u16,
  dns_port: u16,
  ip4: ip4,
  ip6: ip6,
  n_uids: u32,
  n_gids: u32,
  uids: u32Array(MAX_PROXY_IDS),
  gids: u32Array(MAX_PROXY_IDS),
});
export type PodConfigValue = ReturnType<typeof PodConfig.decode>;

export const PortKey = struct('port_key', { pod_id: u32, port: u16, kind: u8, pad: u8 });
export type PortKeyValue = ReturnType<typeof PortKey.decode>;

export const Cidr4Key = struct('cidr4_key', { prefixlen: u32, pod_id: u32, kind: u32, addr: ip4 });
export const Cidr6Key = struct('cidr6_key', { prefixlen: u32, pod_id: u32, kind: u32, addr: ip6 });

export const OrigDst = struct('orig_dst', { family: u16, port: be16, kind: u32, addr: ip6 });
export const SockState = struct('sock_state', { role: u32, pad: u32, orig: OrigDst });

export const TupleKey = struct('tuple_key', {
  netns_cookie: u64,
  src: ip6,
  dst: ip6,
  src_port: u16,
  dst_port: u16,
  pad: u32,
});

export const PodInfo = struct('pod_info', { namespace_: cstr(64), name: cstr(256), uid: cstr(48) });

export const Ip6Key = struct('ip6_key', { addr: ip6 });
export const ListenerKey = struct('listener_key', { netns_cookie: u64, port: u16, family: u16, pad: u32 });
export const IfaceKey = struct('iface_key', { pod_id: u32, ifindex: u32, kind: u8, pad: u8Array(3) });
export const DnsKey = struct('dns_key', { pod_id: u32, addr: ip6 });
export const PairKey = struct('pair_key', {
  netns_cookie: u64,
  local: ip6,
  remote: ip6,
  local_port: u16,
  remote_port: u16,
  pad: u32,
});
export const GlobalConfig = struct('global_config', { flags: u32, pad: u32 });

export const NetnsCookie = scalar(u64);
export const Ip4Key = scalar(ip4);
export const SocketCookie = scalar(u64);
export const PodId = scalar(u32);
export const Present = scalar(u8);
export const StatIndex = scalar(u32);
export const Counter = scalar(u64);

export interface MapDef {
  /** the map's name in the objects */
  name: string;
  key: StructLayout<any>;
  value: StructLayout<any>;
  /** BPF_MAP_TYPE_* (uapi.ts MapType), as bpf/maps.h declares it */
  type: number;
  /** max_entries as bpf/maps.h declares it (0 for socket local storage, which has no capacity) */
  maxEntries: number;
  /** map_flags as bpf/maps.h declares them (uapi.ts MapFlags) */
  flags: number;
  /** the layout version, part of the pin name; bump it whenever key, value, type, capacity or flags
   * change (a pinned map cannot change any of them); layouts.lock holds each version's fingerprint */
  version: number;
  /** per-CPU values: the kernel returns one value per possible CPU */
  percpu?: boolean;
  /** socket local storage: keyed by socket fds, not iterable as a map of values */
  skStorage?: boolean;
  /** a SOCKHASH: values are sockets (userspace reads their cookies) */
  sockets?: boolean;
  /** a short description for `meshlane dump` */
  what: string;
}

export const MAPS = {
  pods: { name: 'pods', key: NetnsCookie, value: PodConfig, type: MapType.HASH, maxEntries: MapLimits.PODS, flags: 0, version: 1, what: 'netns cookie -> pod capture settings' },
  pod_ports: { name: 'pod_ports', key: PortKey, value: Present, type: MapType.HASH, maxEntries: MapLimits.PORT_ENTRIES, flags: 0, version: 1, what: 'per-pod port sets' },
  pod_cidrs4: { name: 'pod_cidrs4', key: Cidr4Key, value: Present, type: MapType.LPM_TRIE, maxEntries: MapLimits.CIDR_ENTRIES, flags: MapFlags.NO_PREALLOC, version: 1, what: 'per-pod IPv4 CIDR sets (LPM)' },
  pod_cidrs6: { name: 'pod_cidrs6', key: Cidr6Key, value: Present, type: MapType.LPM_TRIE, maxEntries: MapLimits.CIDR_ENTRIES, flags: MapFlags.NO_PREALLOC, version: 1, what: 'per-pod IPv6 CIDR sets (LPM)' },
  sock_state: { name: 'sock_state', key: scalar(u32), value: SockState, type: MapType.SK_STORAGE, maxEntries: 0, flags: MapFlags.NO_PREALLOC, version: 1, skStorage: true, what: 'per-socket original destination (socket local storage)' },
  orig_by_tuple: { name: 'orig_by_tuple', key: TupleKey, value: OrigDst, type: MapType.HASH, maxEntries: MapLimits.INFLIGHT, flags: 0, version: 1, what: 'original destinations between connect and accept' },
  pod_info: { name: 'pod_info', key: PodId, value: PodInfo, type: MapType.HASH, maxEntries: MapLimits.PODS, flags: 0, version: 1, what: 'pod id -> namespace/name/uid (for dump and status)' },
  pod_by_ip4: { name: 'pod_by_ip4', key: Ip4Key, value: NetnsCookie, type: MapType.HASH, maxEntries: MapLimits.PODS, flags: 0, version: 1, what: 'pod IPv4 address -> netns cookie (for sk_lookup)' },
  pod_by_ip6: { name: 'pod_by_ip6', key: Ip6Key, value: NetnsCookie, type: MapType.HASH, maxEntries: MapLimits.PODS, flags: 0, version: 1, what: 'pod IPv6 address -> netns cookie (for sk_lookup)' },
  listeners: { name: 'listeners', key: ListenerKey, value: SocketCookie, type: MapType.SOCKHASH, maxEntries: MapLimits.LISTENERS, flags: 0, version: 1, sockets: true, what: 'proxy listening sockets (SOCKHASH)' },
  pod_ifaces: { name: 'pod_ifaces', key: IfaceKey, value: Present, type: MapType.HASH, maxEntries: MapLimits.SET_ENTRIES, flags: 0, version: 1, what: 'per-pod interface sets (excluded, rerouted)' },
  pod_dns: { name: 'pod_dns', key: DnsKey, value: Present, type: MapType.HASH, maxEntries: MapLimits.SET_ENTRIES, flags: 0, version: 1, what: 'per-pod DNS servers (resolv.conf)' },
  sock_pairs: { name: 'sock_pairs', key: PairKey, value: SocketCookie, type: MapType.SOCKHASH, maxEntries: MapLimits.PAIRS, flags: 0, version: 1, sockets: true, what: 'spliced local socket pairs (SOCKHASH)' },
  global: { name: 'global', key: StatIndex, value: GlobalConfig, type: MapType.ARRAY, maxEntries: 1, flags: 0, version: 1, what: 'node-wide switches' },
  bypass_stats: { name: 'bypass_stats', key: StatIndex, value: Counter, type: MapType.PERCPU_ARRAY, maxEntries: BYPASS_SLOTS, flags: 0, version: 1, percpu: true, what: 'per-CPU counters of decisions not to capture, by reason' },
  stats: { name: 'stats', key: StatIndex, value: Counter, type: MapType.PERCPU_ARRAY, maxEntries: Stat.length, flags: 0, version: 2, percpu: true, what: 'per-CPU counters' },
} satisfies Record<string, MapDef>;

export type MapName = keyof typeof MAPS;
export const MAP_NAMES = Object.keys(MAPS) as MapName[];
