// Every map's key and value layout, mirroring bpf/meshlane.h, with the layout version that names its
// pin. test/unit/layouts.test.ts checks each struct against the objects' BTF and each version against
// its fingerprint: change a struct in C and here, and the test fails until the version is bumped.
import { struct, scalar, u8, u16, u32, u64, be16, ip4, ip6, u32Array, u8Array, cstr, type StructLayout } from './struct.js';

export const MAX_PROXY_IDS = 8;

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
  /** the layout version, part of the pin name; bump it whenever key, value or capacity changes
   * (a pinned map cannot change any of them) */
  version: number;
  /** fingerprint of key+value at this version (see struct.fingerprint) */
  fingerprint: string;
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
  pods: { name: 'pods', key: NetnsCookie, value: PodConfig, version: 1, fingerprint: 'a6f70fbfa70a', what: 'netns cookie -> pod capture settings' },
  pod_ports: { name: 'pod_ports', key: PortKey, value: Present, version: 1, fingerprint: 'a09cadb35c86', what: 'per-pod port sets' },
  pod_cidrs4: { name: 'pod_cidrs4', key: Cidr4Key, value: Present, version: 1, fingerprint: '32d0a23e85c0', what: 'per-pod IPv4 CIDR sets (LPM)' },
  pod_cidrs6: { name: 'pod_cidrs6', key: Cidr6Key, value: Present, version: 1, fingerprint: '9a5895706b95', what: 'per-pod IPv6 CIDR sets (LPM)' },
  sock_state: { name: 'sock_state', key: scalar(u32), value: SockState, version: 1, fingerprint: '19c4d8655623', skStorage: true, what: 'per-socket original destination (socket local storage)' },
  orig_by_tuple: { name: 'orig_by_tuple', key: TupleKey, value: OrigDst, version: 1, fingerprint: '53bc7e475a87', what: 'original destinations between connect and accept' },
  pod_info: { name: 'pod_info', key: PodId, value: PodInfo, version: 1, fingerprint: '2966b0c26f8e', what: 'pod id -> namespace/name/uid (for dump and status)' },
  pod_by_ip4: { name: 'pod_by_ip4', key: Ip4Key, value: NetnsCookie, version: 1, fingerprint: 'f60b2641f619', what: 'pod IPv4 address -> netns cookie (for sk_lookup)' },
  pod_by_ip6: { name: 'pod_by_ip6', key: Ip6Key, value: NetnsCookie, version: 1, fingerprint: '2b457a27f0c5', what: 'pod IPv6 address -> netns cookie (for sk_lookup)' },
  listeners: { name: 'listeners', key: ListenerKey, value: SocketCookie, version: 1, fingerprint: '5addc35b3ce7', sockets: true, what: 'proxy listening sockets (SOCKHASH)' },
  pod_ifaces: { name: 'pod_ifaces', key: IfaceKey, value: Present, version: 1, fingerprint: '54663de95e8e', what: 'per-pod interface sets (excluded, rerouted)' },
  pod_dns: { name: 'pod_dns', key: DnsKey, value: Present, version: 1, fingerprint: 'fdd4bd7e2474', what: 'per-pod DNS servers (resolv.conf)' },
  sock_pairs: { name: 'sock_pairs', key: PairKey, value: SocketCookie, version: 1, fingerprint: '551cf766c9eb', sockets: true, what: 'spliced local socket pairs (SOCKHASH)' },
  global: { name: 'global', key: StatIndex, value: GlobalConfig, version: 1, fingerprint: '58a9208b2c13', what: 'node-wide switches' },
  stats: { name: 'stats', key: StatIndex, value: Counter, version: 2, fingerprint: '3a92133fbee2', percpu: true, what: 'per-CPU counters' },
} satisfies Record<string, MapDef>;

export type MapName = keyof typeof MAPS;
export const MAP_NAMES = Object.keys(MAPS) as MapName[];
