// The only step that writes the maps: reads what they hold, asks the planner, applies its writes.
import type { MapsView } from '../dataplane/dataplane.js';
import { plan, type Actual, type Op, type Want } from './plan.js';

export function readActual(maps: MapsView): Actual {
  return {
    pods: maps.pods.entries(),
    ports: maps.pod_ports.entries().map(([k]) => k),
    cidrs4: maps.pod_cidrs4.entries().map(([k]) => k),
    cidrs6: maps.pod_cidrs6.entries().map(([k]) => k),
    info: maps.pod_info.entries(),
  };
}

const PRESENT = 1;

function apply(maps: MapsView, op: Op): void {
  switch (op.map) {
    case 'pods':
      if (op.op === 'set') maps.pods.set(op.key, op.value);
      else maps.pods.delete(op.key);
      return;
    case 'pod_info':
      if (op.op === 'set') maps.pod_info.set(op.key, op.value);
      else maps.pod_info.delete(op.key);
      return;
    default:
      if (op.op === 'set') maps[op.map].set(op.key, PRESENT);
      else maps[op.map].delete(op.key);
  }
}

/** Bring the maps in line with `want`; returns the pod id of every wanted cookie and the writes made. */
export function reconcileMaps(maps: MapsView, want: Want[]): { ids: Map<bigint, number>; writes: number } {
  const p = plan(want, readActual(maps));
  for (const op of p.ops) apply(maps, op);
  return { ids: p.ids, writes: p.ops.length };
}
