// The only step that writes the maps: reads what they hold, asks the planner, applies its writes.
import type { MapsView } from '../dataplane/dataplane.js';
import type { KeyOf, TypedMap } from '../dataplane/typed-map.js';
import { plan, SET_MAPS, type Actual, type Op, type SetMap, type SetOp, type ValueMap, type ValueOp, type Want } from './plan.js';

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

function apply(maps: MapsView, op: Op): void {
  if (isSetOp(op)) applySet(maps, op);
  else applyValue(maps, op);
}

/** Bring the maps in line with `want`; returns the pod id of every wanted cookie and the writes made. */
export function reconcileMaps(maps: MapsView, want: Want[]): { ids: Map<bigint, number>; writes: number } {
  const p = plan(want, readActual(maps));
  for (const op of p.ops) apply(maps, op);
  return { ids: p.ids, writes: p.ops.length };
}
