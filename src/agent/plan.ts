// Pure: what the maps should become, as an ordered list of writes, from what they hold now.
//
// A pod whose settings change gets a fresh pod id: its set entries (ports, CIDRs, DNS servers,
// interfaces) are written under the new id first, then its `pods` entry flips to the new id in one map
// update, then the old id's entries go. A connect therefore always sees one complete generation of a
// pod's settings, never a mix. Entries whose id no `pods` entry references (a crash between two
// writes) are removed on the next pass. The address index (pod_by_ip4/6, used by sk_lookup) is written
// after the pods entry it points to and removed before it.
import { CIDR_KEY_FIXED_BITS, MAX_PROXY_IDS, PodFlags, type PodConfigValue } from '../dataplane/layouts.js';
import type { KeyOf, ValueOf } from '../dataplane/typed-map.js';
import type { PodEntries } from './desired.js';

/** The maps that hold per-pod sets: key -> present, keys carry the pod id. */
export const SET_MAPS = ['pod_ports', 'pod_cidrs4', 'pod_cidrs6', 'pod_dns', 'pod_ifaces'] as const;
export type SetMap = (typeof SET_MAPS)[number];
type SetKey = KeyOf<SetMap>;
/** The keys of each set map (generic over the names, SetKeys<M>[M] is KeyOf<M>[] to TypeScript). */
export type SetKeys<K extends SetMap = SetMap> = { [M in K]: Array<KeyOf<M>> };
/** A write to set map M: the key is M's own (the value is always "present"). */
type SetOps<K extends SetMap = SetMap> = { [M in K]: { map: M; op: 'set' | 'delete'; key: KeyOf<M> } };
export type SetOp<M extends SetMap = SetMap> = SetOps<M>[M];

const setOp = <M extends SetMap>(map: M, op: 'set' | 'delete', key: KeyOf<M>): SetOp<M> => ({ map, op, key });

/** The keys of `sets` (those `pick` keeps) as writes, map by map in SET_MAPS order. */
function setOps(sets: SetKeys, op: 'set' | 'delete', pick: (key: SetKey) => boolean = () => true): SetOp[] {
  // one generic step per map: each key stays typed as its own map's
  const ofMap = <M extends SetMap>(m: M): Array<SetOp<M>> => sets[m].filter(pick).map((key) => setOp(m, op, key));
  return SET_MAPS.flatMap(ofMap);
}

type Info = ValueOf<'pod_info'>;

export interface Actual {
  pods: Array<[KeyOf<'pods'>, PodConfigValue]>;
  sets: SetKeys;
  info: Array<[KeyOf<'pod_info'>, Info]>;
  byIp4: Array<[KeyOf<'pod_by_ip4'>, ValueOf<'pod_by_ip4'>]>;
  byIp6: Array<[KeyOf<'pod_by_ip6'>, ValueOf<'pod_by_ip6'>]>;
}

export interface Want {
  cookie: bigint;
  entries: PodEntries;
}

/** The other maps the planner writes: each key and value is the map's own. */
export type ValueMap = 'pods' | 'pod_info' | 'pod_by_ip4' | 'pod_by_ip6';
type ValueOps<K extends ValueMap = ValueMap> = {
  [M in K]: { map: M; op: 'set'; key: KeyOf<M>; value: ValueOf<M> } | { map: M; op: 'delete'; key: KeyOf<M> };
};
export type ValueOp<M extends ValueMap = ValueMap> = ValueOps<M>[M];

export type Op = ValueOp | SetOp;

export interface Plan {
  ops: Op[];
  /** the pod id each wanted cookie ends up with */
  ids: Map<bigint, number>;
}

const pad = (xs: number[]): number[] => [...xs, ...Array(Math.max(0, MAX_PROXY_IDS - xs.length)).fill(0)];

function configOf(e: PodEntries, podId: number): PodConfigValue {
  return { pod_id: podId, ...e.config, uids: pad(e.config.uids), gids: pad(e.config.gids) };
}

/** The set keys of one pod under pod id `id`. */
export function setKeys(e: PodEntries, id: number): SetKeys {
  const cidr = (list: PodEntries['cidrs4']): Array<KeyOf<'pod_cidrs4' | 'pod_cidrs6'>> =>
    list.map((c) => ({ prefixlen: CIDR_KEY_FIXED_BITS + c.prefix, pod_id: id, kind: c.kind, addr: c.addr }));
  return {
    pod_ports: e.ports.map((p) => ({ pod_id: id, port: p.port, kind: p.kind, pad: 0 })),
    pod_cidrs4: cidr(e.cidrs4),
    pod_cidrs6: cidr(e.cidrs6),
    pod_dns: e.dns.map((addr) => ({ pod_id: id, addr })),
    pod_ifaces: e.ifaces.map((i) => ({ pod_id: id, ifindex: i.ifindex, kind: i.kind, pad: [0, 0, 0] })),
  };
}

const canon = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
const sameSet = (a: unknown[], b: unknown[]): boolean => {
  if (a.length !== b.length) return false;
  const sa = a.map(canon).sort();
  const sb = b.map(canon).sort();
  return sa.every((x, i) => x === sb[i]);
};

function groupById(xs: SetKey[]): Map<number, SetKey[]> {
  const m = new Map<number, SetKey[]>();
  for (const x of xs) m.set(x.pod_id, [...(m.get(x.pod_id) ?? []), x]);
  return m;
}

export function plan(want: Want[], actual: Actual): Plan {
  const grouped = Object.fromEntries(SET_MAPS.map((m) => [m, groupById(actual.sets[m])])) as Record<SetMap, Map<number, SetKey[]>>;
  const info = new Map(actual.info);
  const current = new Map(actual.pods);

  const used = new Set<number>([...actual.pods.map(([, v]) => v.pod_id), ...SET_MAPS.flatMap((m) => actual.sets[m].map((k) => k.pod_id)), ...info.keys()]);
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
      const keys = setKeys(w.entries, id);
      const unchanged =
        canon(configOf(w.entries, id)) === canon(cur) &&
        SET_MAPS.every((m) => sameSet(keys[m], grouped[m].get(id) ?? [])) &&
        canon(info.get(id)) === canon(w.entries.info);
      if (unchanged) {
        ids.set(w.cookie, id);
        continue;
      }
    }
    const id = allocate();
    ids.set(w.cookie, id);
    const keys = setKeys(w.entries, id);
    sets.push(...setOps(keys, 'set'));
    sets.push({ map: 'pod_info', op: 'set', key: id, value: w.entries.info });
    flips.push({ map: 'pods', op: 'set', key: w.cookie, value: configOf(w.entries, id) });
  }

  // the address index: pod IP -> cookie, for the pods that stay
  const want4 = new Map<string, bigint>();
  const want6 = new Map<string, bigint>();
  for (const w of want) {
    const c = w.entries.config;
    if (c.flags & PodFlags.HAS_IP4) want4.set(c.ip4, w.cookie);
    if (c.flags & PodFlags.HAS_IP6) want6.set(c.ip6, w.cookie);
  }
  const have4 = new Map(actual.byIp4);
  const have6 = new Map(actual.byIp6.map(([k, v]) => [k.addr, v]));
  const indexSets: Op[] = [];
  const indexDeletes: Op[] = [];
  for (const [ip, cookie] of want4) if (have4.get(ip) !== cookie) indexSets.push({ map: 'pod_by_ip4', op: 'set', key: ip, value: cookie });
  for (const [ip, cookie] of want6) if (have6.get(ip) !== cookie) indexSets.push({ map: 'pod_by_ip6', op: 'set', key: { addr: ip }, value: cookie });
  for (const ip of have4.keys()) if (!want4.has(ip)) indexDeletes.push({ map: 'pod_by_ip4', op: 'delete', key: ip });
  for (const ip of have6.keys()) if (!want6.has(ip)) indexDeletes.push({ map: 'pod_by_ip6', op: 'delete', key: { addr: ip } });

  const wanted = new Set(want.map((w) => w.cookie));
  const removals: Op[] = [];
  for (const [cookie] of actual.pods) if (!wanted.has(cookie)) removals.push({ map: 'pods', op: 'delete', key: cookie });

  const keep = new Set(ids.values());
  const garbage: Op[] = [];
  garbage.push(...setOps(actual.sets, 'delete', (key) => !keep.has(key.pod_id)));
  for (const [id] of actual.info) if (!keep.has(id)) garbage.push({ map: 'pod_info', op: 'delete', key: id });

  return { ops: [...sets, ...flips, ...indexSets, ...indexDeletes, ...removals, ...garbage], ids };
}
