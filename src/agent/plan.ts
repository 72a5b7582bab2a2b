// Step 6 of the pipeline, pure: what one pod's entries in the maps should become, as ordered writes,
// from what the maps hold for it (the Mirror, below).
//
// A pod whose settings change gets a fresh pod id: its set entries (ports, CIDRs, DNS servers,
// interfaces) are written under the new id first, then its `pods` entry flips to the new id in one map
// update, then the old id's entries go. A connect therefore always sees one complete generation of a
// pod's settings, never a mix. Entries whose id no `pods` entry references (a crash between two
// writes) are garbage and removed. The address index (pod_by_ip4/6, used by sk_lookup) is written
// after the pods entry it points to and removed before it; an address that two pods claim stays with
// the pod that held it first (IpIndex).
//
// Cost: linear in the pod's entries. Set entries are compared as Sets of canonical keys without the pod
// id (so two generations compare equal), never by sorting or copying arrays per entry.
import { CIDR_KEY_FIXED_BITS, MAX_PROXY_IDS, PodFlags, type PodConfigValue } from '../dataplane/layouts.js';
import type { KeyOf, ValueOf } from '../dataplane/typed-map.js';
import type { PodEntries } from './desired.js';

/** The maps that hold per-pod sets: key -> present, keys carry the pod id. */
export const SET_MAPS = ['pod_ports', 'pod_cidrs4', 'pod_cidrs6', 'pod_dns', 'pod_ifaces'] as const;
export type SetMap = (typeof SET_MAPS)[number];
/** The keys of each set map (generic over the names, SetKeys<M>[M] is KeyOf<M>[] to TypeScript). */
export type SetKeys<K extends SetMap = SetMap> = { [M in K]: Array<KeyOf<M>> };
/** A write to set map M: the key is M's own (the value is always "present"). */
type SetOps<K extends SetMap = SetMap> = { [M in K]: { map: M; op: 'set' | 'delete'; key: KeyOf<M> } };
export type SetOp<M extends SetMap = SetMap> = SetOps<M>[M];

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
  /** who the pod is (for address conflicts); default: entries.info.uid */
  uid?: string;
}

/** The other maps the planner writes: each key and value is the map's own. */
export type ValueMap = 'pods' | 'pod_info' | 'pod_by_ip4' | 'pod_by_ip6';
type ValueOps<K extends ValueMap = ValueMap> = {
  [M in K]: { map: M; op: 'set'; key: KeyOf<M>; value: ValueOf<M> } | { map: M; op: 'delete'; key: KeyOf<M> };
};
export type ValueOp<M extends ValueMap = ValueMap> = ValueOps<M>[M];

export type Op = ValueOp | SetOp;

const pad = (xs: number[]): number[] => [...xs, ...Array(Math.max(0, MAX_PROXY_IDS - xs.length)).fill(0)];

export function configOf(e: PodEntries, podId: number): PodConfigValue {
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

// ---- canonical forms (without the pod id) -----------------------------------------------------------

/** A set key without its pod id, as a string: equal for the same entry in any generation. */
export const canonKey: { [M in SetMap]: (k: KeyOf<M>) => string } = {
  pod_ports: (k) => `${k.port}/${k.kind}`,
  pod_cidrs4: (k) => `${k.prefixlen}/${k.kind}/${k.addr}`,
  pod_cidrs6: (k) => `${k.prefixlen}/${k.kind}/${k.addr}`,
  pod_dns: (k) => k.addr,
  pod_ifaces: (k) => `${k.ifindex}/${k.kind}`,
};

function canonConfig(c: PodConfigValue): string {
  return [c.flags, c.outbound_port, c.inbound_port, c.tunnel_port, c.dns_port, c.ip4, c.ip6, c.n_uids, c.n_gids, c.uids.join(','), c.gids.join(',')].join('|');
}
const canonInfo = (i: Info | undefined): string => (i ? `${i.namespace_}\u0000${i.name}\u0000${i.uid}` : '');

/** The canonical keys of a pod's wanted entries, per set map. */
function wantedKeys(e: PodEntries): { [M in SetMap]: Set<string> } {
  return {
    pod_ports: new Set(e.ports.map((p) => `${p.port}/${p.kind}`)),
    pod_cidrs4: new Set(e.cidrs4.map((c) => `${CIDR_KEY_FIXED_BITS + c.prefix}/${c.kind}/${c.addr}`)),
    pod_cidrs6: new Set(e.cidrs6.map((c) => `${CIDR_KEY_FIXED_BITS + c.prefix}/${c.kind}/${c.addr}`)),
    pod_dns: new Set(e.dns),
    pod_ifaces: new Set(e.ifaces.map((i) => `${i.ifindex}/${i.kind}`)),
  };
}

// ---- what the maps hold -------------------------------------------------------------------------------

/** One generation of a pod's set entries as the maps hold them: canonical key -> the key itself. */
export type HeldSets = { [M in SetMap]: Map<string, KeyOf<M>> };

const emptySets = (): HeldSets => ({ pod_ports: new Map(), pod_cidrs4: new Map(), pod_cidrs6: new Map(), pod_dns: new Map(), pod_ifaces: new Map() });

/** A pod as the maps hold it: its pods entry, and the entries under that entry's pod id. */
export interface HeldPod {
  cookie: bigint;
  config: PodConfigValue;
  sets: HeldSets;
  info: Info | undefined;
}

/** Lowest free id first; an id is used while any map holds an entry under it. */
export class IdAllocator {
  private readonly used = new Set<number>();
  private freed: number[] = []; // a min-heap
  private high = 0;

  use(id: number): void {
    this.used.add(id);
    if (id > this.high) {
      for (let i = this.high + 1; i < id; i++) this.push(i);
      this.high = id;
    }
  }

  allocate(): number {
    while (this.freed.length > 0) {
      const id = this.pop();
      if (!this.used.has(id)) {
        this.used.add(id);
        return id;
      }
    }
    this.high++;
    this.used.add(this.high);
    return this.high;
  }

  release(id: number): void {
    if (this.used.delete(id)) this.push(id);
  }

  has(id: number): boolean {
    return this.used.has(id);
  }

  private push(id: number): void {
    const h = this.freed;
    h.push(id);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]! <= h[i]!) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  private pop(): number {
    const h = this.freed;
    const top = h[0]!;
    const end = h.pop()!;
    if (h.length > 0) {
      h[0] = end;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]! < h[m]!) m = l;
        if (r < h.length && h[r]! < h[m]!) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * What the maps hold, grouped per pod: the writer keeps it in step with every write it makes, and a full
 * resync builds it again from the maps (drift). Entries under ids that no pods entry references are kept
 * apart as garbage.
 */
export class Mirror {
  readonly pods = new Map<bigint, HeldPod>();
  /** entries under ids no pods entry references, per id */
  readonly garbage = new Map<number, { sets: HeldSets; info: Info | undefined }>();
  readonly byIp4 = new Map<string, bigint>();
  readonly byIp6 = new Map<string, bigint>();
  readonly ids = new IdAllocator();
  /** entries per map, as far as this mirror knows (capacity checks before writing) */
  readonly counts: Record<SetMap | 'pods' | 'pod_info', number> = {
    pods: 0,
    pod_info: 0,
    pod_ports: 0,
    pod_cidrs4: 0,
    pod_cidrs6: 0,
    pod_dns: 0,
    pod_ifaces: 0,
  };

  static from(actual: Actual): Mirror {
    const m = new Mirror();
    const byId = new Map<number, { sets: HeldSets; info: Info | undefined }>();
    const slot = (id: number): { sets: HeldSets; info: Info | undefined } => {
      let s = byId.get(id);
      if (!s) byId.set(id, (s = { sets: emptySets(), info: undefined }));
      m.ids.use(id);
      return s;
    };
    const fill = <M extends SetMap>(map: M, keys: Array<KeyOf<M>>): void => {
      const canon = canonKey[map];
      for (const k of keys) (slot(k.pod_id).sets[map] as Map<string, KeyOf<M>>).set(canon(k), k);
      m.counts[map] = keys.length;
    };
    for (const map of SET_MAPS) fill(map, actual.sets[map] as Array<KeyOf<typeof map>>);
    for (const [id, info] of actual.info) slot(id).info = info;
    m.counts.pod_info = actual.info.length;
    const referenced = new Set<number>();
    for (const [cookie, config] of actual.pods) {
      const s = slot(config.pod_id);
      referenced.add(config.pod_id);
      m.pods.set(cookie, { cookie, config, sets: s.sets, info: s.info });
    }
    m.counts.pods = actual.pods.length;
    for (const [id, s] of byId) if (!referenced.has(id)) m.garbage.set(id, s);
    for (const [ip, c] of actual.byIp4) m.byIp4.set(ip, c);
    for (const [k, c] of actual.byIp6) m.byIp6.set(k.addr, c);
    return m;
  }
}

// ---- one pod's plan -----------------------------------------------------------------------------------

/** One pod's writes, in the order they must be applied: `sets` (the new generation), `flip` (the pods
 * entry), then `cleanup` (the old generation). */
export interface PodPlan {
  cookie: bigint;
  /** the pod id the pod has after the plan (undefined: the pod leaves the maps) */
  id: number | undefined;
  /** a fresh id this plan allocated (the writer gives it back if the plan fails) */
  fresh: number | undefined;
  sets: Op[];
  flip: Op | undefined;
  cleanup: Op[];
}

/** Is what the maps hold for the pod exactly `e`? Linear in the entries. */
export function heldMatches(h: HeldPod, e: PodEntries): boolean {
  if (canonConfig(configOf(e, h.config.pod_id)) !== canonConfig(h.config)) return false;
  if (canonInfo(h.info) !== canonInfo(e.info)) return false;
  const want = wantedKeys(e);
  for (const m of SET_MAPS) {
    const held = h.sets[m];
    const w = want[m];
    if (held.size !== w.size) return false;
    for (const k of w) if (!held.has(k)) return false;
  }
  return true;
}

function deleteOps(id: number, sets: HeldSets, info: Info | undefined): Op[] {
  const one = <M extends SetMap>(m: M): Array<SetOp<M>> =>
    [...(sets[m] as Map<string, KeyOf<M>>).values()].map((key) => ({ map: m, op: 'delete', key }) as SetOp<M>);
  const out: Op[] = SET_MAPS.flatMap(one);
  if (info !== undefined) out.push({ map: 'pod_info', op: 'delete', key: id });
  return out;
}

/**
 * The writes that make the maps hold `want` for the pod in netns `cookie` (undefined: the pod leaves
 * them). Allocates a fresh id from `ids` for a new generation. The address index is not part of it
 * (IpIndex).
 */
export function planPod(cookie: bigint, want: PodEntries | undefined, held: HeldPod | undefined, ids: IdAllocator): PodPlan {
  if (want === undefined) {
    if (!held) return { cookie, id: undefined, fresh: undefined, sets: [], flip: undefined, cleanup: [] };
    return {
      cookie,
      id: undefined,
      fresh: undefined,
      sets: [],
      flip: { map: 'pods', op: 'delete', key: cookie },
      cleanup: deleteOps(held.config.pod_id, held.sets, held.info),
    };
  }
  if (held && heldMatches(held, want)) return { cookie, id: held.config.pod_id, fresh: undefined, sets: [], flip: undefined, cleanup: [] };
  const id = ids.allocate();
  const keys = setKeys(want, id);
  const one = <M extends SetMap>(m: M): Array<SetOp<M>> => (keys[m] as Array<KeyOf<M>>).map((key) => ({ map: m, op: 'set', key }) as SetOp<M>);
  const sets: Op[] = SET_MAPS.flatMap(one);
  sets.push({ map: 'pod_info', op: 'set', key: id, value: want.info });
  return {
    cookie,
    id,
    fresh: id,
    sets,
    flip: { map: 'pods', op: 'set', key: cookie, value: configOf(want, id) },
    cleanup: held ? deleteOps(held.config.pod_id, held.sets, held.info) : [],
  };
}

/** How many entries `plan` adds to each map at its peak (the new generation beside the old). */
export function planGrowth(plan: PodPlan): Partial<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const op of plan.sets) if (op.op === 'set') out[op.map] = (out[op.map] ?? 0) + 1;
  if (plan.flip?.op === 'set') out.pods = 1;
  return out;
}

// ---- the address index ---------------------------------------------------------------------------------

/** One pod's claim on an address. */
export interface IpClaim {
  uid: string;
  cookie: bigint;
}

/**
 * pod IP -> the pod's netns, for sk_lookup. Two pods claiming one address (a stale pod object, a
 * misconfigured IPAM) must not silently steer one pod's inbound to the other: the pod that held the
 * address first keeps it, the others wait (and are told, naming the holder) until it lets go.
 * Holders from before a restart (the pins) come first.
 */
export class IpIndex {
  /** address -> claims, first claim first */
  private readonly claims = new Map<string, IpClaim[]>();
  /** uid -> its addresses */
  private readonly byUid = new Map<string, Set<string>>();
  /** address -> netns cookie that held it in the maps before this agent (restart) */
  private readonly pinned = new Map<string, bigint>();

  /** Seed what the maps held at start: those holders keep their addresses against later claims. */
  seed(held: ReadonlyMap<string, bigint>): void {
    for (const [ip, c] of held) this.pinned.set(ip, c);
  }

  /** Set the addresses of pod `uid` (in netns `cookie`); returns the addresses whose holder may have changed. */
  claim(uid: string, cookie: bigint, ips: readonly string[]): Set<string> {
    const touched = new Set<string>();
    const now = new Set(ips);
    const before = this.byUid.get(uid) ?? new Set<string>();
    for (const ip of before) {
      if (now.has(ip)) {
        const c = this.claims.get(ip)?.find((x) => x.uid === uid);
        if (c && c.cookie !== cookie) {
          c.cookie = cookie;
          touched.add(ip);
        }
        continue;
      }
      this.drop(ip, uid);
      touched.add(ip);
    }
    for (const ip of now) {
      if (before.has(ip)) continue;
      let list = this.claims.get(ip);
      if (!list) this.claims.set(ip, (list = []));
      const claim = { uid, cookie };
      // the pod the pins name as the holder goes first; everyone else in order of arrival
      if (this.pinned.get(ip) === cookie) list.unshift(claim);
      else list.push(claim);
      touched.add(ip);
    }
    if (now.size > 0) this.byUid.set(uid, now);
    else this.byUid.delete(uid);
    return touched;
  }

  /** Drop every claim of `uid`; returns the addresses touched. */
  release(uid: string): Set<string> {
    return this.claim(uid, 0n, []);
  }

  /** The pod that holds `ip` (the first claim). */
  holder(ip: string): IpClaim | undefined {
    return this.claims.get(ip)?.[0];
  }

  /** The other claims on `uid`'s addresses: ip -> the other uids, the holder first. */
  conflicts(uid: string): Array<{ ip: string; holder: string; others: string[] }> {
    const out: Array<{ ip: string; holder: string; others: string[] }> = [];
    for (const ip of this.byUid.get(uid) ?? []) {
      const list = this.claims.get(ip) ?? [];
      if (list.length < 2) continue;
      out.push({ ip, holder: list[0]!.uid, others: list.map((c) => c.uid).filter((u) => u !== uid) });
    }
    return out;
  }

  private drop(ip: string, uid: string): void {
    const list = this.claims.get(ip);
    if (!list) return;
    const i = list.findIndex((c) => c.uid === uid);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.claims.delete(ip);
    if (i === 0) this.pinned.delete(ip); // the pinned holder let go: order of arrival from now on
  }
}

/** The pod's addresses by family (what the index keys): those its config carries. */
export function podAddresses(e: PodEntries): { v4: string | undefined; v6: string | undefined } {
  const c = e.config;
  return { v4: c.flags & PodFlags.HAS_IP4 ? c.ip4 : undefined, v6: c.flags & PodFlags.HAS_IP6 ? c.ip6 : undefined };
}

/** Index key for an address: `4:<ip>` or `6:<ip>` (the two maps). */
export const ipKey = (family: 4 | 6, ip: string): string => `${family}:${ip}`;

/** The index writes that make the maps agree with `index` for the addresses `ips` (index keys). */
export function planIndex(ips: Iterable<string>, index: IpIndex, mirror: Mirror): { sets: Op[]; deletes: Op[] } {
  const sets: Op[] = [];
  const deletes: Op[] = [];
  for (const k of ips) {
    const v6 = k.startsWith('6:');
    const ip = k.slice(2);
    const want = index.holder(k)?.cookie;
    const have = v6 ? mirror.byIp6.get(ip) : mirror.byIp4.get(ip);
    if (want === have) continue;
    if (want === undefined) deletes.push(v6 ? { map: 'pod_by_ip6', op: 'delete', key: { addr: ip } } : { map: 'pod_by_ip4', op: 'delete', key: ip });
    else sets.push(v6 ? { map: 'pod_by_ip6', op: 'set', key: { addr: ip }, value: want } : { map: 'pod_by_ip4', op: 'set', key: ip, value: want });
  }
  return { sets, deletes };
}

// ---- the whole state at once --------------------------------------------------------------------------

export interface Plan {
  ops: Op[];
  /** the pod id each wanted cookie ends up with */
  ids: Map<bigint, number>;
  /** addresses claimed by more than one wanted pod: the holder keeps it */
  conflicts: Array<{ ip: string; holder: bigint; others: bigint[] }>;
}

/**
 * Every pod at once (tests; the same steps the agent runs per pod): all new generations, then all flips,
 * then the address index, then the pods that go, then old generations and garbage.
 */
export function plan(want: Want[], actual: Actual): Plan {
  const mirror = Mirror.from(actual);
  const ids = new Map<bigint, number>();
  const sets: Op[] = [];
  const flips: Op[] = [];
  const cleanup: Op[] = [];
  const removals: Op[] = [];
  const index = new IpIndex();
  const held4 = new Map<string, bigint>();
  for (const [ip, c] of mirror.byIp4) held4.set(ipKey(4, ip), c);
  for (const [ip, c] of mirror.byIp6) held4.set(ipKey(6, ip), c);
  index.seed(held4);
  const wanted = new Set<bigint>();
  for (const w of want) {
    wanted.add(w.cookie);
    const p = planPod(w.cookie, w.entries, mirror.pods.get(w.cookie), mirror.ids);
    ids.set(w.cookie, p.id!);
    sets.push(...p.sets);
    if (p.flip) flips.push(p.flip);
    cleanup.push(...p.cleanup);
    const a = podAddresses(w.entries);
    index.claim(w.uid ?? w.entries.info.uid ?? String(w.cookie), w.cookie, [...(a.v4 ? [ipKey(4, a.v4)] : []), ...(a.v6 ? [ipKey(6, a.v6)] : [])]);
  }
  for (const [cookie, held] of mirror.pods) {
    if (wanted.has(cookie)) continue;
    const p = planPod(cookie, undefined, held, mirror.ids);
    if (p.flip) removals.push(p.flip);
    cleanup.push(...p.cleanup);
  }
  for (const [id, g] of mirror.garbage) cleanup.push(...deleteOps(id, g.sets, g.info));
  const ips = new Set<string>([...held4.keys()]);
  for (const w of want) {
    const a = podAddresses(w.entries);
    if (a.v4) ips.add(ipKey(4, a.v4));
    if (a.v6) ips.add(ipKey(6, a.v6));
  }
  const ix = planIndex(ips, index, mirror);
  const conflicts: Plan['conflicts'] = [];
  const cookieOf = new Map(want.map((w) => [w.uid ?? w.entries.info.uid ?? String(w.cookie), w.cookie]));
  const seen = new Set<string>();
  for (const w of want) {
    for (const c of index.conflicts(w.uid ?? w.entries.info.uid ?? String(w.cookie))) {
      if (seen.has(c.ip)) continue;
      seen.add(c.ip);
      const holder = cookieOf.get(c.holder)!;
      conflicts.push({ ip: c.ip.slice(2), holder, others: [w.cookie, ...c.others.map((u) => cookieOf.get(u)!)].filter((x) => x !== holder) });
    }
  }
  return { ops: [...sets, ...flips, ...ix.sets, ...ix.deletes, ...removals, ...cleanup], ids, conflicts };
}
