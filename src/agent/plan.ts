// Pure: what the maps should become, as an ordered list of writes, from what they hold now.
//
// A pod whose settings change gets a fresh pod id: its port and CIDR entries are written under the new
// id first, then its `pods` entry flips to the new id in one map update, then the old id's entries go.
// A connect therefore always sees one complete generation of a pod's settings, never a mix. Entries
// whose id no `pods` entry references (a crash between two writes) are removed on the next pass.
import { CIDR_KEY_FIXED_BITS, MAX_PROXY_IDS, type PodConfigValue } from '../dataplane/layouts.js';
import type { PodEntries } from './desired.js';

export interface PortKeyV { pod_id: number; port: number; kind: number; pad: number }
export interface CidrKeyV { prefixlen: number; pod_id: number; kind: number; addr: string }
export interface InfoV { namespace_: string; name: string; uid: string }

export interface Actual {
  pods: Array<[bigint, PodConfigValue]>;
  ports: PortKeyV[];
  cidrs4: CidrKeyV[];
  cidrs6: CidrKeyV[];
  info: Array<[number, InfoV]>;
}

export interface Want {
  cookie: bigint;
  entries: PodEntries;
}

export type Op =
  | { map: 'pods'; op: 'set'; key: bigint; value: PodConfigValue }
  | { map: 'pods'; op: 'delete'; key: bigint }
  | { map: 'pod_ports'; op: 'set' | 'delete'; key: PortKeyV }
  | { map: 'pod_cidrs4' | 'pod_cidrs6'; op: 'set' | 'delete'; key: CidrKeyV }
  | { map: 'pod_info'; op: 'set'; key: number; value: InfoV }
  | { map: 'pod_info'; op: 'delete'; key: number };

export interface Plan {
  ops: Op[];
  /** the pod id each wanted cookie ends up with */
  ids: Map<bigint, number>;
}

const pad = (xs: number[]): number[] => [...xs, ...Array(Math.max(0, MAX_PROXY_IDS - xs.length)).fill(0)];

function configOf(e: PodEntries, podId: number): PodConfigValue {
  return { pod_id: podId, ...e.config, uids: pad(e.config.uids), gids: pad(e.config.gids) };
}

const portKeys = (e: PodEntries, id: number): PortKeyV[] => e.ports.map((p) => ({ pod_id: id, port: p.port, kind: p.kind, pad: 0 }));
const cidrKeys = (list: PodEntries['cidrs4'], id: number): CidrKeyV[] =>
  list.map((c) => ({ prefixlen: CIDR_KEY_FIXED_BITS + c.prefix, pod_id: id, kind: c.kind, addr: c.addr }));

const canon = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
const sameSet = (a: unknown[], b: unknown[]): boolean => {
  if (a.length !== b.length) return false;
  const sa = a.map(canon).sort();
  const sb = b.map(canon).sort();
  return sa.every((x, i) => x === sb[i]);
};

export function plan(want: Want[], actual: Actual): Plan {
  const byId = <T extends { pod_id: number }>(xs: T[]): Map<number, T[]> => {
    const m = new Map<number, T[]>();
    for (const x of xs) m.set(x.pod_id, [...(m.get(x.pod_id) ?? []), x]);
    return m;
  };
  const ports = byId(actual.ports);
  const c4 = byId(actual.cidrs4);
  const c6 = byId(actual.cidrs6);
  const info = new Map(actual.info);
  const current = new Map(actual.pods);

  const used = new Set<number>([
    ...actual.pods.map(([, v]) => v.pod_id),
    ...actual.ports.map((k) => k.pod_id),
    ...actual.cidrs4.map((k) => k.pod_id),
    ...actual.cidrs6.map((k) => k.pod_id),
    ...actual.info.map(([id]) => id),
  ]);
  let next = 1;
  const allocate = (): number => {
    while (used.has(next)) next++;
    used.add(next);
    return next;
  };

  const sets: Op[] = [];
  const flips: Op[] = [];
  const ids = new Map<bigint, number>();

  for (const w of want) {
    const cur = current.get(w.cookie);
    if (cur) {
      const id = cur.pod_id;
      const unchanged =
        canon(configOf(w.entries, id)) === canon(cur) &&
        sameSet(portKeys(w.entries, id), ports.get(id) ?? []) &&
        sameSet(cidrKeys(w.entries.cidrs4, id), c4.get(id) ?? []) &&
        sameSet(cidrKeys(w.entries.cidrs6, id), c6.get(id) ?? []) &&
        canon(info.get(id)) === canon(w.entries.info);
      if (unchanged) {
        ids.set(w.cookie, id);
        continue;
      }
    }
    const id = allocate();
    ids.set(w.cookie, id);
    for (const key of portKeys(w.entries, id)) sets.push({ map: 'pod_ports', op: 'set', key });
    for (const key of cidrKeys(w.entries.cidrs4, id)) sets.push({ map: 'pod_cidrs4', op: 'set', key });
    for (const key of cidrKeys(w.entries.cidrs6, id)) sets.push({ map: 'pod_cidrs6', op: 'set', key });
    sets.push({ map: 'pod_info', op: 'set', key: id, value: w.entries.info });
    flips.push({ map: 'pods', op: 'set', key: w.cookie, value: configOf(w.entries, id) });
  }

  const wanted = new Set(want.map((w) => w.cookie));
  const removals: Op[] = [];
  for (const [cookie] of actual.pods) if (!wanted.has(cookie)) removals.push({ map: 'pods', op: 'delete', key: cookie });

  const keep = new Set(ids.values());
  const garbage: Op[] = [];
  for (const key of actual.ports) if (!keep.has(key.pod_id)) garbage.push({ map: 'pod_ports', op: 'delete', key });
  for (const key of actual.cidrs4) if (!keep.has(key.pod_id)) garbage.push({ map: 'pod_cidrs4', op: 'delete', key });
  for (const key of actual.cidrs6) if (!keep.has(key.pod_id)) garbage.push({ map: 'pod_cidrs6', op: 'delete', key });
  for (const [id] of actual.info) if (!keep.has(id)) garbage.push({ map: 'pod_info', op: 'delete', key: id });

  return { ops: [...sets, ...flips, ...removals, ...garbage], ids };
}
