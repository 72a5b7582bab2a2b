// What each pod holds of orig_by_tuple, the node-wide hand-over map (bpf/handover.h): the agent writes
// the per-pod limit at start, and reads the programs' counts back for status and the log.
//
// The programs count, per pod network namespace (and for the node under key 0), the hand-over entries
// it holds between connect() and accept(), and the TCP connects they refused (EPERM, never a bypass)
// because the pod held its limit or the node was near the map's capacity. A pod that collects
// entries (its proxy stopped accepting) is refused new connects; the others keep their room.
import { Handover, MapLimits, Stat } from './layouts.js';
import type { MapsView } from './dataplane.js';
import type { Logger } from '../util/log.js';

/** in-flight connections one pod may hold when no limit is given (bpf/meshlane.h) */
export const DEFAULT_PER_POD = Handover.DEFAULT_PER_POD;
/** the most a pod may be given: below the node's own refusal threshold */
export const MAX_PER_POD = MapLimits.INFLIGHT - Handover.HEADROOM;
/** how often the counts are read (at most; the agent's pass runs every 250 ms) */
export const READ_EVERY_MS = 1000;

/** Node-wide limits, written before the programs go live. */
export function writeHandoverLimit(maps: Pick<MapsView, 'limits'>, perPod: number | undefined): number {
  const n = perPod ?? DEFAULT_PER_POD;
  if (!Number.isInteger(n) || n < 1 || n > MAX_PER_POD) throw new RangeError(`in-flight connections per pod must be 1..${MAX_PER_POD}, got ${n}`);
  maps.limits.set(0, { handover_per_pod: n, pad: 0 });
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

export interface HandoverReport {
  /** by netns cookie (decimal), for the captured pods that have a count */
  pods: Map<string, PodHandover>;
  node: { inflight: number; capacity: number; handoverFull: number };
}

/** The pods whose status is to show the figures: captured ones, by netns cookie. */
interface PodLike {
  ref: { namespace: string; name: string };
  netnsCookie?: string;
  handover?: PodHandover;
}

const num = (v: bigint): number => Number(v);

/**
 * Read the counts (one batch read of `handover`, two counters of `stats`) and remove the counts of
 * network namespaces that are no longer captured once they hold nothing.
 */
export function readHandover(maps: Pick<MapsView, 'handover' | 'limits' | 'stats' | 'pods'>, captured: Set<bigint>): HandoverReport {
  const limit = maps.limits.get(0)?.handover_per_pod || DEFAULT_PER_POD;
  const pods = new Map<string, PodHandover>();
  let node = 0;
  for (const [cookie, c] of maps.handover.entries()) {
    if (cookie === Handover.NODE_KEY) {
      node = num(c.inflight);
      continue;
    }
    if (!captured.has(cookie)) {
      // released (or never ours): gone once drained; a connect of it still in flight makes a new one
      if (c.inflight <= 0n && maps.pods.get(cookie) === null) maps.handover.delete(cookie);
      continue;
    }
    pods.set(cookie.toString(), { inflight: num(c.inflight), limit, refusedAtLimit: num(c.refused_pod), refusedNodeFull: num(c.refused_node) });
  }
  const handoverFull = num(maps.stats.get(Stat.indexOf('handover_full')) ?? 0n);
  return { pods, node: { inflight: node, capacity: MapLimits.INFLIGHT, handoverFull } };
}

/**
 * The agent's hook, once per pass: at most every READ_EVERY_MS, read the counts, put each captured
 * pod's into its status (the last read in between), and log what changed for the worse: a pod's new
 * refusals, and hand-overs the node could not store. Never throws (a failed read is logged once).
 */
export class HandoverWatch {
  private at = 0;
  private last: HandoverReport | undefined;
  /** per netns cookie: the refusals already logged */
  private readonly refused = new Map<string, { atLimit: number; nodeFull: number }>();
  private full = 0;
  private failed = '';

  constructor(private readonly log: Logger) {}

  annotate(maps: Pick<MapsView, 'handover' | 'limits' | 'stats' | 'pods'>, statuses: PodLike[], now = Date.now()): void {
    if (now - this.at >= READ_EVERY_MS) {
      this.at = now;
      const captured = new Set(statuses.flatMap((p) => (p.netnsCookie ? [BigInt(p.netnsCookie)] : [])));
      try {
        this.last = readHandover(maps, captured);
        this.failed = '';
        this.logChanges(statuses, this.last);
      } catch (e) {
        const msg = (e as Error).message;
        if (msg !== this.failed) this.log.warn({ err: msg }, 'reading the hand-over counts failed; retrying');
        this.failed = msg;
      }
    }
    for (const p of statuses) {
      const h = p.netnsCookie ? this.last?.pods.get(p.netnsCookie) : undefined;
      if (h) p.handover = h;
    }
  }

  private logChanges(statuses: PodLike[], r: HandoverReport): void {
    const live = new Set<string>();
    for (const p of statuses) {
      const h = p.netnsCookie ? r.pods.get(p.netnsCookie) : undefined;
      if (!h) continue;
      live.add(p.netnsCookie!);
      const before = this.refused.get(p.netnsCookie!) ?? { atLimit: 0, nodeFull: 0 };
      const fields = { pod: `${p.ref.namespace}/${p.ref.name}`, inflight: h.inflight, limit: h.limit, nodeInflight: r.node.inflight };
      if (h.refusedAtLimit > before.atLimit) {
        this.log.warn({ ...fields, refused: h.refusedAtLimit - before.atLimit, refusedAtLimit: h.refusedAtLimit }, "new connections refused (EPERM): the pod holds its limit of connections between connect() and its proxy's accept (is its proxy accepting?)");
      }
      if (h.refusedNodeFull > before.nodeFull) {
        this.log.warn({ ...fields, refused: h.refusedNodeFull - before.nodeFull, refusedNodeFull: h.refusedNodeFull, capacity: r.node.capacity }, "new connections refused (EPERM): the node's hand-over map is near its capacity");
      }
      this.refused.set(p.netnsCookie!, { atLimit: h.refusedAtLimit, nodeFull: h.refusedNodeFull });
    }
    for (const k of this.refused.keys()) if (!live.has(k)) this.refused.delete(k);
    if (r.node.handoverFull > this.full) {
      this.log.error({ handoverFull: r.node.handoverFull, nodeInflight: r.node.inflight, capacity: r.node.capacity }, 'hand-overs the node could not store (orig_by_tuple full): those connections reached their proxy without an original destination');
    }
    this.full = r.node.handoverFull;
  }
}
