// Map layout migration: what a start does with the pins of another layout version of a map, table-driven
// from layouts.ts (each map's `carry` and `from`). The loader (dataplane.ts) runs it; the README section
// "Upgrades" says why it is built this way. Pure except for the RawMaps it is handed,
// so the planning and the carrying are unit-tested on maps in memory (test/unit/migrate.test.ts) and on
// the kernel's by test/kernel/upgrade.test.ts.
//
// A start, in this order (never a moment with nothing attached, and no program ever sees a half-filled
// map, because a new map is complete before the first program that uses it is swapped in):
//   1. plan: for each map, the newest pin of any version is the one in use (pins of a new map are made
//      only once the start is complete, so the newest pin is complete); same version -> reuse it; no
//      pin -> create it; another version -> a new map, whose entries come per `carry`: refill (the agent
//      writes them), copy / convert (declared), counters (the indices both know), lose (declared: nothing
//      can be carried), drop (a newer version this build cannot read), refuse (nothing is changed).
//      A downgrade is planned the same way: refill and counters work in both directions, and a newer
//      version of a 'state' map with this build's key and value sizes is copied back (a newer build may
//      change a 'state' layout only by a copy or by changing a size: checkMigrations holds it to that).
//   2. first pass: the old entries copied or converted into the new maps, before any program uses them.
//   3. the agent refills the 'desired' maps, then attach() swaps the programs link by link.
//   4. second pass (commit): what the old programs wrote to the old maps until their link was swapped
//      (counters, in-flight entries) is carried too, as a three-way merge against the first pass.
//   5. the new maps are pinned, then the pins of other versions are removed.
// A crash at any point leaves a state the next start handles: before 5 the old pins are still the newest
// (their content is what the programs had until the swap) and the migration runs again from them.
import type { Carry, MapDef, Migration } from './layouts.js';
import { mapFingerprint, parseLock } from './layout-lock.js';
import { MapType, MapUpdate } from './uapi.js';
import { sizedBy } from './capacity.js';

/** What the kernel says a pinned map is. */
export interface MapShape {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** One pinned version of a map, as found under maps/. */
export interface PinnedVersion {
  version: number;
  /** relative to --bpffs: maps/<name>_v<version> */
  rel: string;
  /** when it was pinned (the bpffs inode's mtime, ns): the newest pin of a map is the one in use */
  pinnedAtNs: bigint;
  shape: MapShape;
}

export type Action =
  /** the pin of the current version is the one in use: the programs get it */
  | 'reuse'
  /** nothing pinned: a new, empty map, pinned at once */
  | 'create'
  /** 'desired': a new map that the agent fills before any program is swapped */
  | 'refill'
  /** 'state': a new map, the old entries copied as bytes (declared: same key and value layout; or, on a
   * downgrade, a newer version of the same key and value sizes, which means the same layout) */
  | 'copy'
  /** 'state': a new map, the old entries through the declared converter */
  | 'convert'
  /** 'counters': a new map, the indices both versions have carried */
  | 'counters'
  /** nothing can be carried and the layout change declares what that costs (the escape hatch) */
  | 'lose'
  /** a pinned version newer than this build's (a downgrade) that this build cannot read */
  | 'drop'
  /** a version this build has no way to carry: the start is refused, nothing is changed */
  | 'refuse';

export interface MapStep {
  map: string;
  version: number;
  action: Action;
  /** the pin in use, where the entries come from (all but create) */
  from?: PinnedVersion;
  migration?: Migration;
  /** lose, drop: what is lost; refuse: why */
  note?: string;
  /** pins of this map that go once the start is complete */
  stale: PinnedVersion[];
}

/** Actions whose new map is pinned only when the start is complete (commit), after the second pass. */
export const pinsAtCommit = (a: Action): boolean => a !== 'reuse' && a !== 'create';
/** Actions that carry entries from the old map. */
export const carries = (a: Action): boolean => a === 'copy' || a === 'convert' || a === 'counters';

/** The pin in use: the newest (ties: the higher version). */
export function newest(pins: readonly PinnedVersion[]): PinnedVersion | undefined {
  let best: PinnedVersion | undefined;
  for (const p of pins) {
    if (!best || p.pinnedAtNs > best.pinnedAtNs || (p.pinnedAtNs === best.pinnedAtNs && p.version > best.version)) best = p;
  }
  return best;
}

/** The shape a declared older version must have (copy: the current key and value; convert: its own). */
function expectedShape(def: MapDef, m: Extract<Migration, { how: 'copy' | 'convert' }>): MapShape {
  const w = m.was;
  return {
    type: w.type ?? def.type,
    keySize: m.how === 'convert' ? m.was.key.size : def.key.size,
    valueSize: m.how === 'convert' ? m.was.value.size : def.value.size,
    maxEntries: w.maxEntries ?? def.maxEntries,
    flags: w.flags ?? def.flags,
  };
}

/** What differs between a pinned map and the shape it should have, or undefined. */
export function shapeDiff(got: MapShape, want: MapShape): string | undefined {
  const diffs: string[] = [];
  if (got.type !== want.type) diffs.push(`type ${got.type}, not ${want.type}`);
  if (got.keySize !== want.keySize) diffs.push(`key ${got.keySize} B, not ${want.keySize}`);
  if (got.valueSize !== want.valueSize) diffs.push(`value ${got.valueSize} B, not ${want.valueSize}`);
  // socket local storage has no capacity (the kernel reports 0)
  if (got.type !== MapType.SK_STORAGE && got.maxEntries !== want.maxEntries) diffs.push(`max_entries ${got.maxEntries}, not ${want.maxEntries}`);
  if (got.flags !== want.flags) diffs.push(`flags ${got.flags}, not ${want.flags}`);
  return diffs.length ? diffs.join(', ') : undefined;
}

/** Why counters cannot be carried between these shapes (per-CPU u64 arrays keyed by u32), or undefined. */
function countersDiff(def: MapDef, got: MapShape): string | undefined {
  if (got.type !== MapType.PERCPU_ARRAY || got.keySize !== 4 || got.valueSize !== 8)
    return `it is not an array of per-CPU u64 counters (type ${got.type}, key ${got.keySize} B, value ${got.valueSize} B)`;
  if (def.type !== MapType.PERCPU_ARRAY || def.key.size !== 4 || def.value.size !== 8)
    return `this build's ${def.name} is not an array of per-CPU u64 counters`;
  return undefined;
}

/** What nothing carried means for a map, by what it holds (for drop, and the log). */
export function lossOf(def: MapDef): string {
  switch (def.carry) {
    case undefined:
      return `its entries (${def.what}) start empty`;
    case 'desired':
      return 'nothing: the agent writes every entry';
    case 'counters':
      return 'the counters start from zero';
    case 'state':
      return `its entries (${def.what}) start empty`;
    case 'sockets':
      return `the sockets in it (${def.what}) are not carried`;
    case 'socket-storage':
      return `what existing sockets hold in it (${def.what}) is not carried`;
  }
}

/** What each kind of map is, for the message that asks for a `carry` (the likely one first). */
export function carryChoices(def: Pick<MapDef, 'type' | 'percpu'>): string {
  const all: Record<Carry, string> = {
    desired: "'desired' (the agent writes every entry from desired state: refilled, nothing copied)",
    state: "'state' (written by the agent or the programs and not derivable: carried; each older version needs a `from` declaration)",
    counters: "'counters' (a per-CPU array of u64 counters, carried index by index)",
    sockets: "'sockets' (a SOCKHASH: nothing can be carried)",
    'socket-storage': "'socket-storage' (socket local storage: nothing can be carried)",
  };
  if (def.type === MapType.SOCKHASH) return all.sockets;
  if (def.type === MapType.SK_STORAGE) return all['socket-storage'];
  if (def.percpu) return all.counters;
  return `${all.desired} or ${all.state}`;
}

/** The problem of a map that does not say what it holds. */
export const missingCarry = (def: Pick<MapDef, 'name' | 'type' | 'percpu'>): string =>
  `map ${def.name} declares no carry: say what it holds in layouts.ts (MAPS.${def.name}.carry): ${carryChoices(def)}`;

/**
 * A pinned version NEWER than this build's (a downgrade) of a 'state' map that this build can still carry:
 * one of the same key and value sizes has the same key and value layout (every newer build's unit test
 * holds it to that: a layout change of a 'state' map is a `copy` or changes a size, see checkMigrations),
 * so its entries are copied back as bytes. Undefined when the sizes differ (a converted layout this build
 * cannot read) or one is an array and the other not.
 */
function copyBack(def: MapDef, got: MapShape): Migration | undefined {
  if (got.keySize !== def.key.size || got.valueSize !== def.value.size) return undefined;
  if (isArray(got.type) !== isArray(def.type) || got.type === MapType.PERCPU_ARRAY || def.percpu) return undefined;
  return { how: 'copy', was: { type: got.type, maxEntries: got.maxEntries, flags: got.flags } };
}

/** What to do with the pins of one map. */
export function planMap(def: MapDef, pins: readonly PinnedVersion[]): MapStep {
  const base = { map: def.name, version: def.version };
  const from = newest(pins);
  if (!from) return { ...base, action: 'create', stale: [] };
  if (from.version === def.version) return { ...base, action: 'reuse', from, stale: pins.filter((p) => p !== from) };
  // a new map: every pin there is now goes once the start is complete (also one of the current
  // version that is not the newest: it was left behind by a crash before a downgrade removed it)
  const step = (action: Action, extra: Partial<MapStep> = {}): MapStep => ({ ...base, action, from, stale: [...pins], ...extra });
  const newer = from.version > def.version;
  if (def.carry === undefined) return step('refuse', { note: missingCarry(def) });
  if (def.carry === 'desired') return step('refill');
  if (def.carry === 'counters') {
    const why = countersDiff(def, from.shape);
    if (!why) return step('counters');
    return newer
      ? step('drop', { note: `${from.rel} is layout version ${from.version}, newer than this build's ${def.version}, and ${why}: ${lossOf(def)}` })
      : step('refuse', { note: why });
  }
  if (newer) {
    const back = def.carry === 'state' ? copyBack(def, from.shape) : undefined;
    if (back)
      return step('copy', {
        migration: back,
        note: `${from.rel} is layout version ${from.version}, newer than this build's ${def.version}, with the same key and value layout: copied back`,
      });
    return step('drop', {
      note: `${from.rel} is layout version ${from.version}, newer than this build's ${def.version}, which cannot read it: ${lossOf(def)}`,
    });
  }
  const m = def.from?.[from.version];
  if (!m) return step('refuse', { note: `this build declares no migration of ${def.name} from version ${from.version} (layouts.ts, ${def.name}.from)` });
  if (m.how === 'lose') return step('lose', { migration: m, note: m.cost });
  if (def.carry !== 'state') return step('refuse', { note: `a '${def.carry}' map cannot be carried, but version ${from.version} declares '${m.how}'` });
  const want = expectedShape(def, m);
  // a map sized by the agent's options was made with the capacity they gave it then (capacity.ts): only
  // a capacity the declaration names explicitly is checked; the new map gets today's
  if (sizedBy(def.name) && m.was.maxEntries === undefined) want.maxEntries = from.shape.maxEntries;
  const diff = shapeDiff(from.shape, want);
  if (diff) return step('refuse', { note: `the pinned map is not what the migration from version ${from.version} declares it was: ${diff}` });
  return step(m.how, { migration: m });
}

/** The plan for every map, in `defs` order; pins are grouped by map name. */
export function planMaps(defs: readonly MapDef[], pins: ReadonlyMap<string, readonly PinnedVersion[]>): MapStep[] {
  return defs.map((d) => planMap(d, pins.get(d.name) ?? []));
}

/**
 * Every problem with the migration declarations of `defs` against the lock, empty when there is none:
 * each older locked version of a 'state', 'sockets' or 'socket-storage' map needs a declaration; a
 * 'copy' or 'convert' must describe exactly the locked layout of that version (its fingerprint); a
 * converter must produce the map's own layouts; nothing but 'lose' for maps that cannot be carried;
 * 'carry' must fit the map type. For test/unit/migrate.test.ts.
 */
export function checkMigrations(defs: readonly MapDef[], lockText: string): string[] {
  const { entries } = parseLock(lockText);
  const problems: string[] = [];
  for (const def of defs) {
    const kind = def.carry;
    if (kind === undefined) {
      problems.push(missingCarry(def));
      continue;
    }
    if ((kind === 'sockets') !== (def.type === MapType.SOCKHASH))
      problems.push(`map ${def.name}: carry '${kind}' but type ${def.type} (a SOCKHASH is 'sockets', and only it)`);
    if ((kind === 'socket-storage') !== (def.type === MapType.SK_STORAGE))
      problems.push(`map ${def.name}: carry '${kind}' but type ${def.type} (socket local storage is 'socket-storage', and only it)`);
    if (
      kind === 'counters' &&
      countersDiff(def, { type: def.type, keySize: def.key.size, valueSize: def.value.size, maxEntries: def.maxEntries, flags: def.flags })
    ) {
      problems.push(`map ${def.name}: 'counters' must be a per-CPU array of u64 keyed by u32`);
    }
    if (kind === 'state' && def.percpu) problems.push(`map ${def.name}: a per-CPU map cannot be 'state' (only 'counters' carries per-CPU values)`);
    const older = entries.filter((e) => e.map === def.name && e.version < def.version);
    for (const [v, m] of Object.entries(def.from ?? {})) {
      const version = Number(v);
      const at = `map ${def.name}, migration from version ${version}`;
      if (version >= def.version) problems.push(`${at}: not older than the current version ${def.version}`);
      if (kind === 'desired' || kind === 'counters') problems.push(`${at}: a '${kind}' map needs no declaration (remove it)`);
      if (m.how !== 'lose' && kind !== 'state') problems.push(`${at}: a '${kind}' map cannot be carried: only 'lose' (with its cost)`);
      // a 'state' map can always be carried (a converter that returns undefined leaves an entry behind,
      // and is held to the size rule below, on which a downgrade's copy back relies)
      if (m.how === 'lose' && kind === 'state') problems.push(`${at}: a 'state' map can always be carried: declare a copy or a converter, not 'lose'`);
      if (m.how === 'lose' && m.cost.trim().length < 20) problems.push(`${at}: 'lose' must say what it costs`);
      if (m.how === 'copy' || m.how === 'convert') {
        const locked = older.find((e) => e.version === version);
        const was = expectedShape(def, m);
        const fp = mapFingerprint({
          key: m.how === 'convert' ? m.was.key : def.key,
          value: m.how === 'convert' ? m.was.value : def.value,
          type: was.type,
          maxEntries: was.maxEntries,
          flags: was.flags,
        });
        if (!locked) problems.push(`${at}: version ${version} is not in the lock, so what it was cannot be checked`);
        else if (locked.fingerprint !== fp) {
          problems.push(
            `${at}: declares a version ${version} (fingerprint ${fp}) that is not the locked one (${locked.fingerprint}, lock line ${locked.line})${m.how === 'copy' ? ': the key or value layout changed, so it needs a converter, not a copy' : ''}`,
          );
        }
        if (m.how === 'convert' && mapFingerprint({ ...def, key: m.to.key, value: m.to.value }) !== mapFingerprint(def)) {
          problems.push(`${at}: the converter produces other layouts than the map's own`);
        }
        // a downgrade to the older build copies a newer version of the same key and value sizes back
        // byte for byte (copyBack): a converted layout must differ in a size, or that copy is garbage
        if (m.how === 'convert' && m.was.key.size === def.key.size && m.was.value.size === def.value.size) {
          problems.push(
            `${at}: a converter between layouts of the same sizes (key ${def.key.size} B, value ${def.value.size} B): a downgrade to the older build would copy the new entries back as bytes of its own layout; change a size (a field, or explicit padding) so the older build drops them instead`,
          );
        }
      }
    }
    if (kind === 'state' || kind === 'sockets' || kind === 'socket-storage') {
      for (const e of older)
        if (!def.from?.[e.version])
          problems.push(`map ${def.name}: no migration from locked version ${e.version} (lock line ${e.line}): declare one in layouts.ts (${def.name}.from)`);
    }
  }
  return problems;
}

// ---- carrying entries ----------------------------------------------------------------------------

/** The map operations carrying needs (the addon's MapFd has them; the unit test has maps in memory). */
export interface RawMap {
  readonly info: MapShape;
  /** bytes of one value as lookup returns it (per-CPU maps: one 8-byte-aligned slot per possible CPU) */
  readonly valueBytes: number;
  lookup(key: Buffer): Buffer | null;
  update(key: Buffer, value: Buffer, flags?: number): void;
  delete(key: Buffer): boolean;
  entries(): Array<[Buffer, Buffer]>;
}

/** Entries carried by one map's two passes. */
export interface CarryReport {
  map: string;
  action: Action;
  from: number;
  to: number;
  /** entries written before the programs were swapped */
  first: number;
  /** entries written, changed or removed after (what the old programs did meanwhile) */
  second: number;
  /** old entries the new map could not take (a smaller array; a converter that left them behind) */
  left: number;
}

export interface Carrier {
  readonly report: CarryReport;
  /** what the old programs wrote to the old map since first(), carried: call after every swap */
  second(): void;
}

const u32Key = (i: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(i);
  return b;
};
const isArray = (t: number): boolean => t === MapType.ARRAY || t === MapType.PERCPU_ARRAY;
const U64 = (1n << 64n) - 1n;

/** Carry `from` (the old map) into `to` (the new one): the first pass now, the second on demand. */
export function startCarry(step: MapStep, from: RawMap, to: RawMap): Carrier {
  if (!carries(step.action) || !step.from) throw new Error(`map ${step.map}: '${step.action}' carries nothing`);
  const report: CarryReport = { map: step.map, action: step.action, from: step.from.version, to: step.version, first: 0, second: 0, left: 0 };
  if (step.action === 'counters') return countersCarrier(report, from, to);
  const m = step.migration;
  if (!m || m.how === 'lose') throw new Error(`map ${step.map}: '${step.action}' without a migration`);
  return entriesCarrier(report, from, to, m.how === 'copy' ? (k, v) => [k, v] : m.convert);
}

/**
 * Counters: index i of the old map is added into index i of the new one, per CPU. First pass: the old
 * values (the new map is not used by any program yet). Second pass: what each CPU counted in the old
 * map since, added to the new map's value (one read and one write per counter that moved: an increment
 * a new program makes between the two is lost, nothing is counted twice).
 */
function countersCarrier(report: CarryReport, from: RawMap, to: RawMap): Carrier {
  if (from.valueBytes !== to.valueBytes) throw new Error(`map ${report.map}: per-CPU values of ${from.valueBytes} and ${to.valueBytes} bytes`);
  const n = Math.min(from.info.maxEntries, to.info.maxEntries);
  report.left = Math.max(0, from.info.maxEntries - n);
  const base: Array<Buffer | null> = [];
  for (let i = 0; i < n; i++) {
    const v = from.lookup(u32Key(i));
    base.push(v);
    if (v && v.some((x) => x !== 0)) {
      to.update(u32Key(i), v);
      report.first++;
    }
  }
  return {
    report,
    second() {
      for (let i = 0; i < n; i++) {
        const was = base[i];
        const now = from.lookup(u32Key(i));
        if (!now || !was || now.equals(was)) continue;
        const cur = to.lookup(u32Key(i)) ?? Buffer.alloc(to.valueBytes);
        const out = Buffer.alloc(to.valueBytes);
        for (let o = 0; o + 8 <= out.length; o += 8) {
          const delta = (now.readBigUInt64LE(o) - was.readBigUInt64LE(o)) & U64;
          out.writeBigUInt64LE((cur.readBigUInt64LE(o) + delta) & U64, o);
        }
        to.update(u32Key(i), out);
        base[i] = now;
        report.second++;
      }
    },
  };
}

type Convert = (key: Buffer, value: Buffer) => [Buffer, Buffer] | undefined;

/**
 * Entries of a 'state' map, copied or converted. First pass: every old entry into the new map (no
 * program uses it yet). Second pass, a three-way merge: an entry the old programs added, changed or
 * removed since the first pass is added, changed or removed in the new map too, unless the new side
 * (the new programs, the agent) changed that entry meanwhile: the newer write wins.
 */
function entriesCarrier(report: CarryReport, from: RawMap, to: RawMap, convert: Convert): Carrier {
  const hex = (b: Buffer): string => b.toString('hex');
  const base = new Map<string, [Buffer, Buffer]>();
  const fits = (k: Buffer): boolean => !isArray(to.info.type) || k.readUInt32LE(0) < to.info.maxEntries;
  const put = (k: Buffer, v: Buffer): void => {
    try {
      to.update(k, v, MapUpdate.ANY);
    } catch (e) {
      throw new Error(
        `carrying map ${report.map} from version ${report.from}: the new map takes no more entries (${(e as Error).message}); it holds ${to.info.maxEntries}`,
        { cause: e },
      );
    }
  };
  for (const [k, v] of from.entries()) {
    base.set(hex(k), [k, v]);
    const r = convert(k, v);
    if (!r || !fits(r[0])) {
      report.left++;
      continue;
    }
    put(r[0], r[1]);
    report.first++;
  }
  return {
    report,
    second() {
      const now = new Map(from.entries().map(([k, v]) => [hex(k), [k, v] as [Buffer, Buffer]]));
      for (const id of new Set([...base.keys(), ...now.keys()])) {
        const b = base.get(id);
        const t = now.get(id);
        if (b && t && b[1].equals(t[1])) continue;
        // what the first pass wrote for this entry, and what the old programs made of it since
        const wrote = b ? convert(b[0], b[1]) : undefined;
        const wants = t ? convert(t[0], t[1]) : undefined;
        const unchanged = (r: [Buffer, Buffer]): boolean => to.lookup(r[0])?.equals(r[1]) ?? false;
        if (wrote && fits(wrote[0]) && (!wants || !wants[0].equals(wrote[0])) && unchanged(wrote) && !isArray(to.info.type)) {
          to.delete(wrote[0]);
          report.second++;
        }
        if (wants && fits(wants[0])) {
          const cur = to.lookup(wants[0]);
          const expected = wrote && wrote[0].equals(wants[0]) ? wrote[1] : null;
          const untouched = expected ? (cur?.equals(expected) ?? false) : cur === null;
          if (untouched) {
            put(wants[0], wants[1]);
            report.second++;
          }
        }
      }
      base.clear();
      for (const [id, e] of now) base.set(id, e);
    },
  };
}
