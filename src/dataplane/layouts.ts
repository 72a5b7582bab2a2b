// Every map: its key and value layout (mirroring bpf/meshlane.h), its type, capacity and flags
// (mirroring bpf/maps.h), and the layout version that names its pin. A pinned map outlives the agent
// and can change none of these, so each (map, version) is locked to a fingerprint of all of them in
// layouts.lock (append-only, see layout-lock.ts): change any and test/unit/layouts.test.ts fails until
// the version is bumped and `npm run layouts:lock` has appended the new entry. test/kernel/layouts-btf
// checks all of it against the compiled objects.
//
// A map's capacity here is its capacity at the default node limits: the agent sets every map's
// max_entries at run time from --max-pods and --max-connections (capacity.ts), so one layout version
// has many capacities and the lock fingerprints the compiled one. A pinned map of another capacity is
// the same layout version (the loader keeps it, see dataplane.ts and README, Map capacity).
import { struct, scalar, u8, u16, u32, u64, i64, be16, ip4, ip6, u32Array, u8Array, cstr, type StructLayout } from './struct.js';
import { MapFlags, MapType } from './uapi.js';

export const MAX_PROXY_IDS = 8;

/** Map capacities, as bpf/meshlane.h defines them (MESHLANE_MAX_*): the capacities at the default
 * --max-pods (PODS) and --max-connections (INFLIGHT); capacity.ts scales them to the options. */
export const MapLimits = {
  PODS: 4096,
  PORT_ENTRIES: 65536,
  CIDR_ENTRIES: 65536,
  INFLIGHT: 65536,
  LISTENERS: 16384,
  PAIRS: 131072,
  SPLICE_MARKS: 16384,
  SET_ENTRIES: 16384,
  HANDOVER_NETNS: 2 * 4096 + 1,
} as const;

/** The hand-over limits of bpf/meshlane.h (handover.h): the default per pod, the node's headroom, and
 * the key of the node's own count in `handover`. */
export const Handover = {
  DEFAULT_PER_POD: 65536 / 16,
  HEADROOM: 1024,
  NODE_KEY: 0n,
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
  /** the pod's set is empty: the programs skip its lookup (bpf/meshlane.h POD_NO_*) */
  NO_OUT_EXCLUDE_PORTS: 1 << 8,
  NO_OUT_INCLUDE_PORTS: 1 << 9,
  NO_OUT_EXCLUDE_CIDRS: 1 << 10,
  NO_OUT_INCLUDE_CIDRS: 1 << 11,
  NO_EXCLUDE_IFACES: 1 << 12,
} as const;

export const PortKind = { OUT_EXCLUDE: 1, OUT_INCLUDE: 2, IN_INCLUDE: 3, IN_EXCLUDE: 4 } as const;
export const CidrKind = { OUT_EXCLUDE: 1, OUT_INCLUDE: 2 } as const;
export const CaptureKind = { NONE: 0, OUTBOUND: 1, INBOUND: 2, DNS: 3 } as const;
export const IfaceKind = { EXCLUDE: 1, REROUTE: 2 } as const;
export const GlobalFlags = { SPLICE: 1 << 0 } as const;
/** MESHLANE_SOURCE_MARK / MESHLANE_SOURCE_TABLE: the mark connect4/6 give a socket bound to the
 * wildcard address before connect(), and the pod's routing table for it (pod-netns.ts) */
export const SourceRouting = { MARK: 0x4d4c0000, TABLE: 19788 } as const;
export const CIDR_KEY_FIXED_BITS = 64;

/** The stats counters, by index. APPEND-ONLY: index i is the same counter in every stats version (its
 * carry is 'counters': upgrades and downgrades carry the indices both builds have), so a counter is
 * never renumbered, removed or reused; a new one goes at the end (STAT_MAX in bpf/meshlane.h grows, and
 * with it max_entries and the stats version). */
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
  'splice_fallback',
  'splice_fallback_peer',
  'splice_no_peer',
  'splice_switched_off',
  'splice_left',
  'splice_retarget_fail',
  'refused_pod_limit',
  'refused_node_full',
  'splice_table_full',
  'listeners_full',
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
export const GlobalConfig = struct('global_config', { flags: u32, pad: u32, splice_budget: u64, splice_grace_ns: u64 });
/** global v1 (before the splice budget): converted to v2 with the budget and grace 0, which the agent
 * writes before the programs are swapped (writeSpliceConfig) */
const GlobalConfigV1 = struct('global_config', { flags: u32, pad: u32 });

export const SpliceDir = { NEW: 0, REDIR: 1, STACK: 2 } as const;
export const SpliceSkFlags = { KEYS: 1 << 0, LEFT: 1 << 1 } as const;
export const SpliceState = struct('splice_state', {
  state: u32,
  flags: u32,
  seen_gen: u64,
  peer_sk: u64,
  peer_cookie: u64,
  self: PairKey,
  peer: PairKey,
});
export const SpliceMark = struct('splice_mark', { sk: u64, cookie: u64, since_ns: u64, target_cookie: u64 });
export const HandoverCount = struct('handover_count', { inflight: i64, refused_pod: u64, refused_node: u64 });
/** limits v2: handover_node took v1's pad (the node's refusal threshold follows orig_by_tuple's capacity,
 * a run-time parameter now); a 'desired' map, so a v1 pin is refilled, nothing converted */
export const LimitsConfig = struct('limits_config', { handover_per_pod: u32, handover_node: u32 });

export const NetnsCookie = scalar(u64);
export const Ip4Key = scalar(ip4);
export const SocketCookie = scalar(u64);
export const PodId = scalar(u32);
export const Present = scalar(u8);
export const StatIndex = scalar(u32);
export const Counter = scalar(u64);

/**
 * What a map holds, which decides what a new layout version of it costs and how its entries get to the
 * new map (src/dataplane/migrate.ts; README, Upgrades):
 *  - 'desired': derived from desired state; the agent writes every entry before any program is swapped:
 *    a new version is refilled, nothing is copied, in either direction.
 *  - 'state': written by the agent or by the programs and not derivable (switches, in-flight
 *    hand-overs): carried entry by entry, by a copy or a converter declared in `from`, once before the
 *    programs are swapped and again (what the old programs wrote meanwhile) after.
 *  - 'counters': per-CPU counters. Index i means the same counter in every version (counters are
 *    appended, never renumbered or reused), so the indices both versions have are carried, upgrade and
 *    downgrade, without a declaration.
 *  - 'sockets': a SOCKHASH. Its sockets cannot be read out from userspace: nothing can be carried.
 *  - 'socket-storage': socket local storage. It cannot be enumerated from userspace (it is keyed by
 *    socket fds the agent does not have): nothing can be carried.
 */
export type Carry = 'desired' | 'state' | 'counters' | 'sockets' | 'socket-storage';

/** What an older version of a map was, where it differs from the current one. */
export interface WasDef {
  type?: number;
  maxEntries?: number;
  flags?: number;
}

/**
 * How entries of an older layout version get into the current one (MapDef.from). The unit test checks
 * every declaration against the lock: the fingerprint of what it says the version was must be the
 * fingerprint locked for that version, so a `copy` cannot claim a layout that changed.
 */
export type Migration =
  /** key and value layout unchanged (only type, capacity or flags differ): entries are copied as bytes */
  | { how: 'copy'; was: WasDef }
  /** old key and value layout -> new ones; `convert` returns undefined to leave an entry behind */
  | {
      how: 'convert';
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a map's layouts, erased here: MAPS keeps each map's own types (KeyOf/ValueOf)
      was: WasDef & { key: StructLayout<any>; value: StructLayout<any> };
      /** the layouts `convert` produces: the map's own key and value (checked by the unit test) */
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a map's layouts, erased here: MAPS keeps each map's own types (KeyOf/ValueOf)
      to: { key: StructLayout<any>; value: StructLayout<any> };
      convert(key: Buffer, value: Buffer): [Buffer, Buffer] | undefined;
    }
  /** nothing can be carried ('sockets', 'socket-storage'): the escape hatch, which says what it costs;
   * the agent logs `cost` when it takes it */
  | { how: 'lose'; cost: string };

/** A copy from a version whose key and value layout were the current ones. */
export const copyFrom = (was: WasDef = {}): Migration => ({ how: 'copy', was });

/** A converter from an older layout to the current one, typed by both (declared next to the layout). */
export function convertFrom<OK, OV, NK, NV>(
  was: WasDef & { key: StructLayout<OK>; value: StructLayout<OV> },
  to: { key: StructLayout<NK>; value: StructLayout<NV> },
  convert: (key: OK, value: OV) => [NK, NV] | undefined,
): Migration {
  return {
    how: 'convert',
    was,
    to,
    convert: (k, v) => {
      const r = convert(was.key.decode(k), was.value.decode(v));
      return r && [to.key.encode(r[0]), to.value.encode(r[1])];
    },
  };
}

/** The explicit escape hatch for a map nothing can be carried from: `cost` says what is lost. */
export const loseFrom = (cost: string): Migration => ({ how: 'lose', cost });

export interface MapDef {
  /** the map's name in the objects */
  name: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a map's layouts, erased here: MAPS keeps each map's own types (KeyOf/ValueOf)
  key: StructLayout<any>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a map's layouts, erased here: MAPS keeps each map's own types (KeyOf/ValueOf)
  value: StructLayout<any>;
  /** BPF_MAP_TYPE_* (uapi.ts MapType), as bpf/maps.h declares it */
  type: number;
  /** max_entries as bpf/maps.h declares it (0 for socket local storage, which has no capacity): the
   * capacity at the default node limits, which the agent scales at run time (capacity.ts); the lock
   * fingerprints this one */
  maxEntries: number;
  /** map_flags as bpf/maps.h declares them (uapi.ts MapFlags) */
  flags: number;
  /** the layout version, part of the pin name; bump it whenever key, value, type, capacity or flags
   * change (a pinned map cannot change any of them); layouts.lock holds each version's fingerprint */
  version: number;
  /** what the map holds: how a new version gets its entries (see Carry). Every map must say it: it is
   * optional here only so that a branch adding a map still compiles, and test/unit/migrate.test.ts fails,
   * naming the map and the choices, until it is declared; a start refuses to migrate a map without one */
  carry?: Carry;
  /** for 'state', 'sockets' and 'socket-storage' maps: how to get from each older locked version to this
   * one (the unit test fails while one is missing); 'desired' and 'counters' maps need none */
  from?: Readonly<Record<number, Migration>>;
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
  pods: {
    name: 'pods',
    key: NetnsCookie,
    value: PodConfig,
    type: MapType.HASH,
    maxEntries: MapLimits.PODS,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'netns cookie -> pod capture settings',
  },
  pod_ports: {
    name: 'pod_ports',
    key: PortKey,
    value: Present,
    type: MapType.HASH,
    maxEntries: MapLimits.PORT_ENTRIES,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'per-pod port sets',
  },
  pod_cidrs4: {
    name: 'pod_cidrs4',
    key: Cidr4Key,
    value: Present,
    type: MapType.LPM_TRIE,
    maxEntries: MapLimits.CIDR_ENTRIES,
    flags: MapFlags.NO_PREALLOC,
    version: 1,
    carry: 'desired',
    what: 'per-pod IPv4 CIDR sets (LPM)',
  },
  pod_cidrs6: {
    name: 'pod_cidrs6',
    key: Cidr6Key,
    value: Present,
    type: MapType.LPM_TRIE,
    maxEntries: MapLimits.CIDR_ENTRIES,
    flags: MapFlags.NO_PREALLOC,
    version: 1,
    carry: 'desired',
    what: 'per-pod IPv6 CIDR sets (LPM)',
  },
  sock_state: {
    name: 'sock_state',
    key: scalar(u32),
    value: SockState,
    type: MapType.SK_STORAGE,
    maxEntries: 0,
    flags: MapFlags.NO_PREALLOC,
    version: 1,
    carry: 'socket-storage',
    skStorage: true,
    what: 'per-socket original destination (socket local storage)',
  },
  orig_by_tuple: {
    name: 'orig_by_tuple',
    key: TupleKey,
    value: OrigDst,
    type: MapType.HASH,
    maxEntries: MapLimits.INFLIGHT,
    flags: 0,
    version: 1,
    carry: 'state',
    what: 'original destinations between connect and accept',
  },
  pod_info: {
    name: 'pod_info',
    key: PodId,
    value: PodInfo,
    type: MapType.HASH,
    maxEntries: MapLimits.PODS,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'pod id -> namespace/name/uid (for dump and status)',
  },
  pod_by_ip4: {
    name: 'pod_by_ip4',
    key: Ip4Key,
    value: NetnsCookie,
    type: MapType.HASH,
    maxEntries: MapLimits.PODS,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'pod IPv4 address -> netns cookie (for sk_lookup)',
  },
  pod_by_ip6: {
    name: 'pod_by_ip6',
    key: Ip6Key,
    value: NetnsCookie,
    type: MapType.HASH,
    maxEntries: MapLimits.PODS,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'pod IPv6 address -> netns cookie (for sk_lookup)',
  },
  listeners: {
    name: 'listeners',
    key: ListenerKey,
    value: SocketCookie,
    type: MapType.SOCKHASH,
    maxEntries: MapLimits.LISTENERS,
    flags: 0,
    version: 1,
    carry: 'sockets',
    sockets: true,
    what: 'proxy listening sockets (SOCKHASH)',
  },
  pod_ifaces: {
    name: 'pod_ifaces',
    key: IfaceKey,
    value: Present,
    type: MapType.HASH,
    maxEntries: MapLimits.SET_ENTRIES,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'per-pod interface sets (excluded, rerouted)',
  },
  pod_dns: {
    name: 'pod_dns',
    key: DnsKey,
    value: Present,
    type: MapType.HASH,
    maxEntries: MapLimits.SET_ENTRIES,
    flags: 0,
    version: 1,
    carry: 'desired',
    what: 'per-pod DNS servers (resolv.conf)',
  },
  sock_pairs: {
    name: 'sock_pairs',
    key: PairKey,
    value: SocketCookie,
    type: MapType.SOCKHASH,
    maxEntries: MapLimits.PAIRS,
    flags: 0,
    version: 1,
    carry: 'sockets',
    sockets: true,
    what: 'spliced local socket pairs (SOCKHASH)',
  },
  global: {
    name: 'global',
    key: StatIndex,
    value: GlobalConfig,
    type: MapType.ARRAY,
    maxEntries: 1,
    flags: 0,
    version: 2,
    carry: 'state',
    from: {
      1: convertFrom({ key: StatIndex, value: GlobalConfigV1 }, { key: StatIndex, value: GlobalConfig }, (k, v) => [
        k,
        { ...v, splice_budget: 0n, splice_grace_ns: 0n },
      ]),
    },
    what: 'node-wide switches (splicing, its budget)',
  },
  splice_state: {
    name: 'splice_state',
    key: scalar(u32),
    value: SpliceState,
    type: MapType.SK_STORAGE,
    maxEntries: 0,
    flags: MapFlags.NO_PREALLOC,
    version: 1,
    carry: 'socket-storage',
    skStorage: true,
    what: 'per spliced socket: direction state, keys, peer (socket local storage)',
  },
  splice_marks: {
    name: 'splice_marks',
    key: PairKey,
    value: SpliceMark,
    type: MapType.LRU_HASH,
    maxEntries: MapLimits.SPLICE_MARKS,
    flags: 0,
    version: 1,
    carry: 'state',
    what: 'spliced sockets whose peer fell back to the stack (they follow, then both leave sock_pairs)',
  },
  splice_gen: {
    name: 'splice_gen',
    key: StatIndex,
    value: Counter,
    type: MapType.ARRAY,
    maxEntries: 1,
    flags: 0,
    version: 1,
    carry: 'state',
    what: 'marks made so far (spliced sockets look for a mark when it moves)',
  },
  stats: {
    name: 'stats',
    key: StatIndex,
    value: Counter,
    type: MapType.PERCPU_ARRAY,
    maxEntries: Stat.length,
    flags: 0,
    version: 5,
    carry: 'counters',
    percpu: true,
    what: 'per-CPU counters',
  },
  handover: {
    name: 'handover',
    key: NetnsCookie,
    value: HandoverCount,
    type: MapType.HASH,
    maxEntries: MapLimits.HANDOVER_NETNS,
    flags: 0,
    version: 1,
    carry: 'state',
    what: 'per pod netns (0: the node): entries in orig_by_tuple, refused connects',
  },
  limits: {
    name: 'limits',
    key: StatIndex,
    value: LimitsConfig,
    type: MapType.ARRAY,
    maxEntries: 1,
    flags: 0,
    version: 2,
    carry: 'desired',
    what: 'node-wide limits (in-flight connections per pod, and node-wide before new ones are refused)',
  },
  bypass_stats: {
    name: 'bypass_stats',
    key: StatIndex,
    value: Counter,
    type: MapType.PERCPU_ARRAY,
    maxEntries: BYPASS_SLOTS,
    flags: 0,
    version: 1,
    carry: 'counters',
    percpu: true,
    what: 'per-CPU counters of decisions not to capture, by reason',
  },
} satisfies Record<string, MapDef>;

export type MapName = keyof typeof MAPS;
export const MAP_NAMES = Object.keys(MAPS) as MapName[];
