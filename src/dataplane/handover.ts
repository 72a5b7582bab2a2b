// What each pod holds of orig_by_tuple, the node-wide hand-over map (bpf/handover.h): the agent writes
// the per-pod limit at start, and reads the programs' counts back for status and the log.
//
// The programs count, per pod network namespace (and for the node under key 0), the hand-over entries
// it holds between connect() and accept(), and the TCP connects they refused (EPERM, never a bypass)
// because the pod held its limit or the node was near the map's capacity. A pod that collects
// entries (its proxy stopped accepting) is refused new connects; the others keep their room.
import { Handover, MapLimits, Stat } from './layouts.js';
import { handoverBounds } from './capacity.js';
import type { MapsView } from './dataplane.js';
import type { Logger } from '../util/log.js';

/** in-flight connections one pod may hold when no limit is given, at the default --max-connections
 * (bpf/meshlane.h); another capacity: handoverBounds (capacity.ts) */
export const DEFAULT_PER_POD = Handover.DEFAULT_PER_POD;
/** the most a pod may be given at the default --max-connections: the node's own refusal threshold */
export const MAX_PER_POD = handoverBounds(MapLimits.INFLIGHT).maxPerPod;
/** how often the agent reads the counts */
export const READ_EVERY_MS = 1000;

/**
 * Node-wide limits, written before the programs go live: the per-pod limit (default: a 16th of the
 * map) and the node's refusal threshold, both for the capacity orig_by_tuple has (`capacity`: its
 * max_entries, which --max-connections set when the map was made).
 */
export function writeHandoverLimit(maps: Pick<MapsView, 'limits'>, perPod: number | undefined, capacity: number = MapLimits.INFLIGHT): number {
  const b = handoverBounds(capacity);
  const n = perPod ?? b.defaultPerPod;
  if (!Number.isInteger(n) || n < 1 || n > b.maxPerPod)
    throw new RangeError(`in-flight connections per pod must be 1..${b.maxPerPod} (orig_by_tuple holds ${capacity}), got ${n}`);
  maps.limits.set(0, { handover_per_pod: n, handover_node: b.refuseFrom });
  return n;
}

/** A pod's hand-over figures, as status shows them. */
export interface PodHandover {
  /** entries in orig_by_tuple: connections between connect() and accept() */
  inflight: number;
  limit: number;
  /** TCP connects refused (EPERM) while the pod held its limit */
  refusedAtLimit: number;
  /** ... while the node's entries were near the map's capacity */
  refusedNodeFull: number;
}

/** The node's figures, as status shows them. */
export interface NodeHandover {
  /** entries in orig_by_tuple, all pods */
  inflight: number;
  /** orig_by_tuple's max_entries */
  capacity: number;
  /** new redirected connects are refused (every pod) from this many entries on */
  refuseFrom: number;
  /** the per-pod limit (limits[0]) */
  perPodLimit: number;
  /** connects refused: a pod at its limit / the node near capacity (stats, since the maps were made) */
  refusedPodLimit: number;
  refusedNodeFull: number;
  /** hand-overs that found orig_by_tuple full (stats): should stay 0 with the limits in place */
  handoverFull: number;
}

export interface HandoverReport {
  /** by netns cookie (decimal), for the captured pods that have a count */
  pods: Map<string, PodHandover>;
  node: NodeHandover;
}

/** What the watch needs of a pod's status. */
interface PodLike {
  ref: { namespace: string; name: string };
  netnsCookie?: string;
}

const num = (v: bigint): number => Number(v);

type HandoverMaps = Pick<MapsView, 'handover' | 'limits' | 'stats' | 'pods'>;

/**
 * Read the counts (one walk of `handover`, three counters of `stats`) and remove the counts of network
 * namespaces that are no longer captured once they hold nothing (a released pod's connections drain
 * first; a connect of it still in flight would make a new one, which the next read removes).
 */
export function readHandover(maps: HandoverMaps, captured: Set<bigint>, capacity: number = MapLimits.INFLIGHT): HandoverReport {
  const l = maps.limits.get(0);
  const limit = l?.handover_per_pod || DEFAULT_PER_POD;
  const pods = new Map<string, PodHandover>();
  let node = 0;
  for (const [cookie, c] of maps.handover.entries()) {
    if (cookie === Handover.NODE_KEY) {
      node = num(c.inflight);
      continue;
    }
    if (!captured.has(cookie)) {
      if (c.inflight <= 0n && maps.pods.get(cookie) === null) maps.handover.delete(cookie);
      continue;
    }
    pods.set(cookie.toString(), { inflight: num(c.inflight), limit, refusedAtLimit: num(c.refused_pod), refusedNodeFull: num(c.refused_node) });
  }
  const stat = (name: (typeof Stat)[number]): number => num(maps.stats.get(Stat.indexOf(name)) ?? 0n);
  return {
    pods,
    node: {
      inflight: node,
      capacity,
      refuseFrom: l?.handover_node || MapLimits.INFLIGHT - Handover.HEADROOM,
      perPodLimit: limit,
      refusedPodLimit: stat('refused_pod_limit'),
      refusedNodeFull: stat('refused_node_full'),
      handoverFull: stat('handover_full'),
    },
  };
}

/** a pod that goes on being refused is logged again at most this often (with the count since) */
export const LOG_EVERY_MS = 30_000;

interface Logged {
  /** refusals counted in the last line logged */
  atLimit: number;
  nodeFull: number;
  at: number;
}

/**
 * The agent's watch, once a second (READ_EVERY_MS): read the counts, keep the last read for status, and
 * log what changed for the worse, rate-limited per pod (never per connection): the first refusals of a
 * pod at once, further ones at most every LOG_EVERY_MS with the number since; hand-overs the node could
 * not store likewise. Never throws (a failed read is logged once per distinct error).
 */
export class HandoverWatch {
  private last: HandoverReport | undefined;
  private readonly logged = new Map<string, Logged>();
  private full: Logged = { atLimit: 0, nodeFull: 0, at: -Infinity };
  private failed = '';
  private shown = '';

  /** `capacity`: orig_by_tuple's max_entries */
  constructor(
    private readonly log: Logger,
    private readonly capacity: number = MapLimits.INFLIGHT,
  ) {}

  /** Read and log; true when what status shows changed. */
  poll(maps: HandoverMaps, statuses: PodLike[], now = Date.now()): boolean {
    const captured = new Set(statuses.flatMap((p) => (p.netnsCookie ? [BigInt(p.netnsCookie)] : [])));
    try {
      this.last = readHandover(maps, captured, this.capacity);
      this.failed = '';
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.failed) this.log.warn({ err: msg }, 'reading the hand-over counts failed; retrying');
      this.failed = msg;
      return false;
    }
    this.logChanges(statuses, this.last, now);
    const shown = JSON.stringify([[...this.last.pods], this.last.node]);
    if (shown === this.shown) return false;
    this.shown = shown;
    return true;
  }

  /** The pod's status with its figures of the last read (a copy; the pod's own when there are none). */
  annotate<P extends PodLike>(p: P): P & { handover?: PodHandover } {
    const h = p.netnsCookie ? this.last?.pods.get(p.netnsCookie) : undefined;
    return h ? { ...p, handover: h } : p;
  }

  /** The node's figures of the last read. */
  node(): NodeHandover | undefined {
    return this.last?.node;
  }

  private logChanges(statuses: PodLike[], r: HandoverReport, now: number): void {
    const live = new Set<string>();
    for (const p of statuses) {
      const h = p.netnsCookie ? r.pods.get(p.netnsCookie) : undefined;
      if (!h) continue;
      const key = p.netnsCookie!;
      live.add(key);
      // a pod seen for the first time (or after an agent restart): what it has so far, logged once
      const b = this.logged.get(key) ?? { atLimit: 0, nodeFull: 0, at: -Infinity };
      const newAtLimit = h.refusedAtLimit - b.atLimit;
      const newNodeFull = h.refusedNodeFull - b.nodeFull;
      if (newAtLimit + newNodeFull <= 0 || now - b.at < LOG_EVERY_MS) continue;
      const fields = { pod: `${p.ref.namespace}/${p.ref.name}`, inflight: h.inflight, limit: h.limit, nodeInflight: r.node.inflight };
      if (newAtLimit > 0) {
        this.log.warn(
          { ...fields, refused: newAtLimit, refusedAtLimit: h.refusedAtLimit },
          "new connections refused (EPERM): the pod holds its limit of connections between connect() and its proxy's accept (is its proxy accepting?); other pods are not affected",
        );
      }
      if (newNodeFull > 0) {
        this.log.warn(
          { ...fields, refused: newNodeFull, refusedNodeFull: h.refusedNodeFull, capacity: r.node.capacity },
          "new connections refused (EPERM): the node's hand-over map is near its capacity",
        );
      }
      this.logged.set(key, { atLimit: h.refusedAtLimit, nodeFull: h.refusedNodeFull, at: now });
    }
    for (const k of this.logged.keys()) if (!live.has(k)) this.logged.delete(k);
    if (r.node.handoverFull > this.full.atLimit && now - this.full.at >= LOG_EVERY_MS) {
      this.log.error(
        { handoverFull: r.node.handoverFull, nodeInflight: r.node.inflight, capacity: r.node.capacity },
        'hand-overs the node could not store (orig_by_tuple full): those connections reached their proxy without an original destination',
      );
      this.full = { atLimit: r.node.handoverFull, nodeFull: 0, at: now };
    }
  }
}
