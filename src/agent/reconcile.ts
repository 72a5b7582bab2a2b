// The only step that writes the maps: reads what they hold, asks the planner, applies its writes.
import type { MapsView } from '../dataplane/dataplane.js';
import { plan, SET_MAPS, type Actual, type Op, type Want } from './plan.js';

export function readActual(maps: MapsView): Actual {
  return {
    pods: maps.pods.entries(),
    sets: Object.fromEntries(SET_MAPS.map((m) => [m, maps[m].entries().map(([k]) => k)])) as Actual['sets'],
    info: maps.pod_info.entries(),
    byIp4: maps.pod_by_ip4.entries(),
    byIp6: maps.pod_by_ip6.entries(),
  };
}

const PRESENT = 1;

function apply(maps: MapsView, op: Op): void {
  const m = maps[op.map];
  if (op.op === 'delete') {
    m.delete(op.key);
    return;
  }
  m.set(op.key, 'value' in op ? op.value : PRESENT);
}

/** Bring the maps in line with `want`; returns the pod id of every wanted cookie and the writes made. */
export function reconcileMaps(maps: MapsView, want: Want[]): { ids: Map<bigint, number>; writes: number } {
  const p = plan(want, readActual(maps));
  for (const op of p.ops) apply(maps, op);
  return { ids: p.ids, writes: p.ops.length };
}
