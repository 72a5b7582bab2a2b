// Step 7 of the pipeline, the writer: the only step that writes the maps. It applies one pod's plan at a
// time and keeps the Mirror (what the maps hold) in step with every write.
//
// A pod whose new entries do not fit is that pod's problem, never the node's (a full map must not stop
// every other pod's updates): the new generation is written completely before the pods entry flips to
// it, so when a write fails (ENOSPC from an LPM trie, E2BIG from a full hash map) the entries of the new
// generation written so far are removed again and the pod stays on its last good entries, or is not
// enrolled if it had none. It is never half-written. The failure names the map that is full. A plan that
// would not fit by the mirror's count is refused before its first write (no churn of thousands of
// writes and deletes against a full map).
//
// Big plans (a pod with tens of thousands of CIDRs) are written in slices with the event loop let go
// between them, so that the other pods' work goes on meanwhile.
import type { MapsView } from '../dataplane/dataplane.js';
import { MAPS } from '../dataplane/layouts.js';
import { capacityOption } from '../dataplane/capacity.js';
import type { KeyOf, TypedMap } from '../dataplane/typed-map.js';
import {
  canonKey,
  planGrowth,
  SET_MAPS,
  type Actual,
  type HeldPod,
  type HeldSets,
  type Mirror,
  type Op,
  type PodPlan,
  type SetMap,
  type SetOp,
  type ValueMap,
  type ValueOp,
} from './plan.js';

const keysOf = <K, V>(m: TypedMap<K, V>): K[] => m.entries().map(([k]) => k);

export function readActual(maps: MapsView): Actual {
  return {
    pods: maps.pods.entries(),
    sets: {
      pod_ports: keysOf(maps.pod_ports),
      pod_cidrs4: keysOf(maps.pod_cidrs4),
      pod_cidrs6: keysOf(maps.pod_cidrs6),
      pod_dns: keysOf(maps.pod_dns),
      pod_ifaces: keysOf(maps.pod_ifaces),
    },
    info: maps.pod_info.entries(),
    byIp4: maps.pod_by_ip4.entries(),
    byIp6: maps.pod_by_ip6.entries(),
  };
}

const PRESENT = 1;

// Generic over the map, so TypeScript sees each op's key (and value) as its own map's.
function applyValue<M extends ValueMap>(maps: MapsView, op: ValueOp<M>): void {
  const m = maps[op.map];
  if (op.op === 'delete') m.delete(op.key);
  else m.set(op.key, op.value);
}

function applySet<M extends SetMap>(maps: MapsView, op: SetOp<M>): void {
  const m: TypedMap<KeyOf<M>, number> = maps[op.map]; // every set map holds "present" (a u8)
  if (op.op === 'delete') m.delete(op.key);
  else m.set(op.key, PRESENT);
}

const SET_MAP_NAMES: ReadonlySet<string> = new Set(SET_MAPS);
const isSetOp = (op: Op): op is SetOp => SET_MAP_NAMES.has(op.map);

/** Where the writer's writes go: the pinned maps, or a fake in unit tests. */
export interface MapWriter {
  apply(op: Op): void;
}

export function mapsWriter(maps: MapsView): MapWriter {
  return {
    apply(op: Op): void {
      if (isSetOp(op)) applySet(maps, op);
      else applyValue(maps, op);
    },
  };
}

/** A map that holds as many entries as it can (the kernel said so, or the count says it would). */
export class MapFullError extends Error {
  constructor(
    readonly map: string,
    readonly capacity: number,
    detail: string,
  ) {
    const option = capacityOption(map);
    super(`map ${map} is full (${capacity} entries${option ? `, sized by ${option}` : ''}): ${detail}`);
    this.name = 'MapFullError';
  }
}

/** A map's max_entries, as layouts.ts (and bpf/maps.h) declare it (the capacity at the default limits:
 * the agent passes the loaded maps' own, capacity.ts). */
export const mapCapacity = (map: string): number => (MAPS as Record<string, { maxEntries: number }>)[map]?.maxEntries ?? 0;

function isFull(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === 'ENOSPC' || code === 'E2BIG';
}

/** Ops per slice before the writer lets the event loop go (a big pod must not hold up the others). */
export const SLICE_OPS = 2048;

const yieldNow = (): Promise<void> => new Promise((r) => setImmediate(r));

type Countable = keyof Mirror['counts'];
const countable = (m: string): m is Countable => m in { pods: 1, pod_info: 1, pod_ports: 1, pod_cidrs4: 1, pod_cidrs6: 1, pod_dns: 1, pod_ifaces: 1 };

export interface WriteOptions {
  /** ops per slice (default SLICE_OPS) */
  slice?: number;
  /** each map's capacity (default its max_entries; unit tests give smaller ones) */
  capacity?: (map: string) => number;
}

export interface WriteResult {
  ok: boolean;
  writes: number;
  error?: MapFullError | Error;
}

/**
 * Apply one pod's plan: new generation, flip, old generation; the mirror follows. On a failure before the
 * flip the new generation is removed again (the pod keeps what it had). Never throws.
 */
export async function writePod(w: MapWriter, mirror: Mirror, plan: PodPlan, opts: WriteOptions = {}): Promise<WriteResult> {
  const slice = opts.slice ?? SLICE_OPS;
  const capacityOf = opts.capacity ?? mapCapacity;
  let writes = 0;
  const held = mirror.pods.get(plan.cookie);
  // capacity first, by count: the new generation sits beside the old until the flip
  // the pods map first: a pod that does not fit the node is told so by its name (the companion maps
  // pod_info and pod_by_ip* are as full, at the same --max-pods)
  const growth = Object.entries(planGrowth(plan)).sort(([a], [b]) => Number(b === 'pods') - Number(a === 'pods'));
  for (const [map, add] of growth) {
    if (!countable(map) || !add) continue;
    const cap = capacityOf(map);
    if (map === 'pods' && held) continue; // a flip of a pod already there adds no entry
    if (mirror.counts[map] + add > cap) {
      if (plan.fresh !== undefined) mirror.ids.release(plan.fresh);
      return { ok: false, writes: 0, error: new MapFullError(map, cap, `the pod needs ${add} more entries, ${mirror.counts[map]} are in use`) };
    }
  }
  const fresh: HeldSets = { pod_ports: new Map(), pod_cidrs4: new Map(), pod_cidrs6: new Map(), pod_dns: new Map(), pod_ifaces: new Map() };
  let freshInfo = false;
  const written: Op[] = [];
  try {
    for (const op of plan.sets) {
      w.apply(op);
      writes++;
      written.push(op);
      if (countable(op.map)) mirror.counts[op.map]++;
      if (isSetOp(op)) (fresh[op.map] as Map<string, KeyOf<SetMap>>).set((canonKey[op.map] as (k: KeyOf<SetMap>) => string)(op.key), op.key);
      else if (op.map === 'pod_info') freshInfo = true;
      if (writes % slice === 0) await yieldNow();
    }
    if (plan.flip) {
      w.apply(plan.flip);
      writes++;
    }
  } catch (e) {
    // roll the new generation back: the pods entry still points at the old one (or there is none)
    for (const op of written.reverse()) {
      try {
        w.apply(op.map === 'pod_info' ? { map: 'pod_info', op: 'delete', key: op.key as number } : ({ ...op, op: 'delete' } as Op));
        if (countable(op.map)) mirror.counts[op.map]--;
      } catch {
        /* left as garbage: collected by the next full resync */
      }
    }
    if (plan.fresh !== undefined) mirror.ids.release(plan.fresh);
    const failed = (written.length < plan.sets.length ? plan.sets[written.length] : plan.flip)?.map ?? 'pods';
    const error = isFull(e) ? new MapFullError(failed, capacityOf(failed), `the kernel refused the write (${(e as { code?: string }).code})`) : (e as Error);
    return { ok: false, writes, error };
  }
  // flipped: the mirror holds the new generation (or no pod)
  if (plan.flip?.op === 'set' && plan.flip.map === 'pods') {
    const config = plan.flip.value;
    const info = freshInfo ? plan.sets.find((o): o is Extract<Op, { map: 'pod_info'; op: 'set' }> => o.map === 'pod_info' && o.op === 'set')?.value : undefined;
    const next: HeldPod = { cookie: plan.cookie, config, sets: fresh, info };
    if (!held) mirror.counts.pods++;
    mirror.pods.set(plan.cookie, next);
  } else if (plan.flip?.op === 'delete') {
    if (held) mirror.counts.pods--;
    mirror.pods.delete(plan.cookie);
  }
  // the old generation: a delete that fails leaves garbage for the next full resync
  const oldId = held?.config.pod_id;
  let left = false;
  for (const op of plan.cleanup) {
    try {
      w.apply(op);
      writes++;
      if (countable(op.map)) mirror.counts[op.map]--;
    } catch {
      left = true;
    }
    if (writes % slice === 0) await yieldNow();
  }
  if (oldId !== undefined && oldId !== plan.id) {
    if (left) mirror.garbage.set(oldId, { sets: held!.sets, info: held!.info });
    else mirror.ids.release(oldId);
  }
  return { ok: true, writes };
}

/** Index writes (pod_by_ip4/6); the mirror follows. Throws MapFullError when an index map is full. */
export function writeIndex(w: MapWriter, mirror: Mirror, ops: Op[], capacity: (map: string) => number = mapCapacity): number {
  let n = 0;
  for (const op of ops) {
    try {
      w.apply(op);
    } catch (e) {
      if (isFull(e)) throw new MapFullError(op.map, capacity(op.map), `the kernel refused the write (${(e as { code?: string }).code})`);
      throw e;
    }
    n++;
    if (op.map === 'pod_by_ip4') {
      if (op.op === 'set') mirror.byIp4.set(op.key, op.value);
      else mirror.byIp4.delete(op.key);
    } else if (op.map === 'pod_by_ip6') {
      if (op.op === 'set') mirror.byIp6.set(op.key.addr, op.value);
      else mirror.byIp6.delete(op.key.addr);
    }
  }
  return n;
}

/** Remove entries under ids no pods entry references (after a crash between writes, a failed cleanup). */
export function collectGarbage(w: MapWriter, mirror: Mirror): number {
  let n = 0;
  for (const [id, g] of [...mirror.garbage]) {
    const one = <M extends SetMap>(m: M): Array<SetOp<M>> =>
      [...(g.sets[m] as Map<string, KeyOf<M>>).values()].map((key) => ({ map: m, op: 'delete', key }) as SetOp<M>);
    const ops: SetOp[] = SET_MAPS.flatMap(one);
    for (const op of ops) {
      try {
        w.apply(op);
        mirror.counts[op.map]--;
        n++;
      } catch {
        /* tried again next time */
      }
    }
    if (g.info !== undefined) {
      try {
        w.apply({ map: 'pod_info', op: 'delete', key: id });
        mirror.counts.pod_info--;
        n++;
      } catch {
        /* next time */
      }
    }
    mirror.garbage.delete(id);
    mirror.ids.release(id);
  }
  return n;
}
