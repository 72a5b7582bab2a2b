// Map capacity: every map's max_entries, derived from the node's limits (the agent's --max-pods and
// --max-connections). Pure: the agent derives once at start, the loader sets each map's max_entries
// before load (BpfObject.setMaxEntries), and test/unit/capacity.test.ts holds the derivation.
//
// The capacity in layouts.ts (and bpf/maps.h) is the capacity at the default limits: a map sized by
// pods holds `maxEntries / DEFAULT_LIMITS.maxPods` entries per pod (today 1 for pods and its indexes,
// 16 for the port and CIDR sets, 4 for interfaces, DNS servers and listeners), one sized by connections
// `maxEntries / DEFAULT_LIMITS.maxConnections` per connection (1 in flight, 2 spliced sockets, a quarter
// of a splice mark). At the defaults every map is exactly what layouts.ts says, so an install that
// passes no option runs as before, and the layout lock (layouts.lock) goes on fingerprinting the
// compiled capacity: capacity is a run-time parameter of one layout version, not a new layout.
import { Handover, MAPS, MAP_NAMES, MapLimits, type MapDef, type MapName } from './layouts.js';
import { MapType } from './uapi.js';

/** The node's limits the capacities come from. */
export interface NodeLimits {
  /** pods on the node that meshlane captures (--max-pods) */
  maxPods: number;
  /** connections node-wide between connect() and the proxy's accept() (--max-connections) */
  maxConnections: number;
}

/** The limits bpf/meshlane.h is compiled for: the defaults of the options. */
export const DEFAULT_LIMITS: Readonly<NodeLimits> = { maxPods: MapLimits.PODS, maxConnections: MapLimits.INFLIGHT };

/** What each option accepts. The upper ends keep the preallocated hash maps to a few hundred MiB. */
export const LIMIT_RANGE: Readonly<Record<keyof NodeLimits, readonly [number, number]>> = {
  maxPods: [1, 16384],
  maxConnections: [16, 1 << 20],
};

export const LIMIT_OPTION: Readonly<Record<keyof NodeLimits, string>> = { maxPods: '--max-pods', maxConnections: '--max-connections' };

/** What sets a map's capacity: a limit (times an allowance, plus fixed entries), or nothing (fixed). */
interface Sizing {
  by: keyof NodeLimits;
  /** entries that do not scale (handover: the node's own count) */
  plus?: number;
}

/**
 * The maps whose capacity follows a limit. Every other map is fixed: arrays (global, limits, stats,
 * bypass_stats, splice_gen) hold what their indexes are, socket local storage has no capacity.
 */
const SIZING: Partial<Record<MapName, Sizing>> = {
  pods: { by: 'maxPods' },
  pod_info: { by: 'maxPods' },
  pod_by_ip4: { by: 'maxPods' },
  pod_by_ip6: { by: 'maxPods' },
  pod_ports: { by: 'maxPods' },
  pod_cidrs4: { by: 'maxPods' },
  pod_cidrs6: { by: 'maxPods' },
  pod_ifaces: { by: 'maxPods' },
  pod_dns: { by: 'maxPods' },
  listeners: { by: 'maxPods' },
  // one count per pod netns, twice over (a released pod's count stays until its connections drain),
  // and the node's own under key 0
  handover: { by: 'maxPods', plus: 1 },
  orig_by_tuple: { by: 'maxConnections' },
  sock_pairs: { by: 'maxConnections' },
  splice_marks: { by: 'maxConnections' },
};

/** The limit a map's capacity follows (for status, metrics help and errors), or undefined when fixed. */
export const sizedBy = (map: string): keyof NodeLimits | undefined => SIZING[map as MapName]?.by;

/** The option that sets a map's capacity, or undefined when it is fixed. */
export const capacityOption = (map: string): string | undefined => {
  const by = sizedBy(map);
  return by && LIMIT_OPTION[by];
};

/** Entries a map holds per unit of its limit (from its compiled capacity at the default limits). */
export function allowance(map: MapName): number {
  const s = SIZING[map];
  if (!s) return 0;
  return (MAPS[map].maxEntries - (s.plus ?? 0)) / DEFAULT_LIMITS[s.by];
}

/** One map's max_entries for `limits` (never below 1 for a map that has a capacity). */
export function capacityOf(map: MapName, limits: NodeLimits): number {
  const def = MAPS[map];
  const s = SIZING[map];
  if (!s) return def.maxEntries;
  return Math.max(1, Math.ceil(allowance(map) * limits[s.by])) + (s.plus ?? 0);
}

/** Every map's max_entries for `limits`. */
export function mapCapacities(limits: NodeLimits): Record<MapName, number> {
  return Object.fromEntries(MAP_NAMES.map((n) => [n, capacityOf(n, limits)])) as Record<MapName, number>;
}

/**
 * The hand-over bounds for an orig_by_tuple of `capacity` entries (bpf/handover.h): new redirected
 * connects are refused (every pod) from `refuseFrom` node-wide entries on, which leaves a headroom for
 * connects between their check and their insert (MESHLANE_HANDOVER_HEADROOM at the default, a 16th of
 * a smaller map); a pod may hold `defaultPerPod` unless --max-inflight-per-pod says otherwise, at most
 * `maxPerPod`.
 */
export function handoverBounds(capacity: number): { refuseFrom: number; defaultPerPod: number; maxPerPod: number } {
  const headroom = Math.min(Handover.HEADROOM, Math.floor(capacity / 16));
  const refuseFrom = capacity - headroom;
  return { refuseFrom, defaultPerPod: Math.max(1, Math.floor(capacity / 16)), maxPerPod: refuseFrom };
}

/** A limit from its option's text: a whole number in LIMIT_RANGE, else why not (for the CLI's one line). */
export function parseLimit(which: keyof NodeLimits, text: string): number | string {
  const [lo, hi] = LIMIT_RANGE[which];
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < lo || n > hi)
    return `${LIMIT_OPTION[which]} '${text}' is not a whole number in ${lo}..${hi}: pass e.g. ${LIMIT_OPTION[which]} ${DEFAULT_LIMITS[which]}`;
  return n;
}

/** The maps that fill up (hash, LPM, sockhash, LRU...), in MAPS order: arrays are always full and socket
 * local storage has no capacity. Metrics and status show entries against capacity for these. */
export function fillingMaps(): MapDef[] {
  const arrays = new Set<number>([MapType.ARRAY, MapType.PERCPU_ARRAY]);
  return (Object.values(MAPS) as MapDef[]).filter((d) => !arrays.has(d.type) && d.maxEntries > 0);
}

/** One map's capacity as the loader found it: what it has, what the options want, and what sets it. */
export interface MapCapacity {
  map: MapName;
  /** max_entries of the map in use */
  capacity: number;
  /** what the options ask for (differs from `capacity` when a pinned map of another capacity was kept) */
  wanted: number;
  /** the option that sets it; undefined: fixed */
  option?: string;
}

/** What to tell about a pinned map whose capacity is not the wanted one (kept: see README, Map capacity). */
export const keptLine = (c: Pick<MapCapacity, 'capacity' | 'wanted' | 'option'>): string =>
  `capacity ${c.capacity} (wanted ${c.wanted}${c.option ? ` by ${c.option}` : ''}, takes effect after \`meshlane uninstall\`)`;
