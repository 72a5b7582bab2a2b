// Map layout migration, pure (src/dataplane/migrate.ts): which map is reused, created, refilled, copied,
// converted, carried as counters, lost (declared), dropped (a newer version) or refused, given two MAPS
// tables (the build that pinned and the one that starts); the declarations checked against a lock; and
// the two passes of carrying entries, on maps in memory that behave as the kernel's do (arrays always
// hold every index, per-CPU values have one slot per CPU, a full hash refuses). The real maps and the
// real lock are checked too: every older locked version of a map that cannot be refilled has a
// declaration that describes exactly what was locked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAPS, convertFrom, copyFrom, loseFrom, type MapDef } from '../../src/dataplane/layouts.js';
import { LOCK_PATH, lockLine } from '../../src/dataplane/layout-lock.js';
import {
  checkMigrations,
  missingCarry,
  newest,
  planMap,
  planMaps,
  startCarry,
  type MapShape,
  type MapStep,
  type PinnedVersion,
  type RawMap,
} from '../../src/dataplane/migrate.js';
import { scalar, struct, u16, u32, u64, u8 } from '../../src/dataplane/struct.js';
import { MapFlags, MapType, MapUpdate } from '../../src/dataplane/uapi.js';
import { packageRoot } from '../../src/util/paths.js';

const DEFS = Object.values(MAPS) as MapDef[];

test('the real maps: every declaration matches the real lock, every older locked version that needs one has one', () => {
  assert.deepEqual(checkMigrations(DEFS, readFileSync(join(packageRoot(), LOCK_PATH), 'utf8')), []);
});

test('every map in MAPS says what it holds (carry); a map without one fails here, named, with what to declare', () => {
  const missing = DEFS.filter((d) => d.carry === undefined).map(missingCarry);
  assert.deepEqual(missing, [], `\n${missing.join('\n')}`);
  // what a branch that adds a map without a carry sees (it compiles: carry is optional in MapDef)
  const added: MapDef = { name: 'splice_gen', key: Idx, value: Count, type: MapType.ARRAY, maxEntries: 1, flags: 0, version: 1, what: 'a map a branch added' };
  const sock: MapDef = { ...added, name: 'handover', type: MapType.SOCKHASH };
  const problems = checkMigrations([...DEFS, added, sock], readFileSync(join(packageRoot(), LOCK_PATH), 'utf8'));
  assert.equal(problems.length, 2, problems.join('\n'));
  assert.match(problems[0]!, /^map splice_gen declares no carry: say what it holds in layouts\.ts \(MAPS\.splice_gen\.carry\): 'desired' .* or 'state' /);
  assert.match(problems[1]!, /^map handover declares no carry: .*MAPS\.handover\.carry\): 'sockets' \(a SOCKHASH/);
  // and a start never migrates it blind: another pinned version is refused (nothing changed)
  const st = planMap({ ...added, version: 2 }, [pinOf(added)]);
  assert.equal(st.action, 'refuse');
  assert.match(st.note!, /map splice_gen declares no carry/);
  assert.equal(planMap(added, [pinOf(added)]).action, 'reuse');
});

test('the real maps: what each kind of map does on a layout change', () => {
  const kind = (n: keyof typeof MAPS): string | undefined => (MAPS[n] as MapDef).carry;
  for (const n of ['pods', 'pod_ports', 'pod_cidrs4', 'pod_cidrs6', 'pod_info', 'pod_by_ip4', 'pod_by_ip6', 'pod_dns', 'pod_ifaces'] as const)
    assert.equal(kind(n), 'desired', n);
  assert.equal(kind('stats'), 'counters');
  assert.equal(kind('global'), 'state');
  assert.equal(kind('orig_by_tuple'), 'state');
  assert.equal(kind('listeners'), 'sockets');
  assert.equal(kind('sock_pairs'), 'sockets');
  assert.equal(kind('sock_state'), 'socket-storage');
});

// ---- two made-up MAPS tables: the build that pinned (A) and the one that starts (B) -------------

const Key = scalar(u64);
const ValA = struct('val_a', { a: u32, b: u16 });
// a converted layout changes a size (checkMigrations: a downgrade copies same-size newer layouts back)
const ValB = struct('val_b', { a: u32, b: u16, c: u32 });
const Idx = scalar(u32);
const Count = scalar(u64);
const Present = scalar(u8);

const def = (d: Partial<MapDef> & Pick<MapDef, 'name' | 'carry'>): MapDef => ({
  key: Key,
  value: ValA,
  type: MapType.HASH,
  maxEntries: 1024,
  flags: 0,
  version: 1,
  what: `test map ${d.name}`,
  ...d,
});

/** the build that pinned */
const A: MapDef[] = [
  def({ name: 'desired', carry: 'desired', value: Present }),
  def({ name: 'kept', carry: 'state' }),
  def({ name: 'bigger', carry: 'state' }),
  def({ name: 'reshaped', carry: 'state' }),
  def({ name: 'counters', carry: 'counters', key: Idx, value: Count, type: MapType.PERCPU_ARRAY, maxEntries: 7, percpu: true }),
  def({ name: 'socks', carry: 'sockets', value: Count, type: MapType.SOCKHASH }),
  def({ name: 'storage', carry: 'socket-storage', key: Idx, type: MapType.SK_STORAGE, maxEntries: 0, flags: MapFlags.NO_PREALLOC }),
];
/** the build that starts: every map but `kept` got a new version */
const byName = (defs: MapDef[], n: string): MapDef => defs.find((d) => d.name === n)!;
const B: MapDef[] = [
  { ...byName(A, 'desired'), version: 2, maxEntries: 2048 },
  byName(A, 'kept'),
  { ...byName(A, 'bigger'), version: 2, maxEntries: 4096, from: { 1: copyFrom({ maxEntries: 1024 }) } },
  {
    ...byName(A, 'reshaped'),
    value: ValB,
    version: 2,
    from: { 1: convertFrom({ key: Key, value: ValA }, { key: Key, value: ValB }, (k, v) => [k, { ...v, c: v.a + 1 }]) },
  },
  { ...byName(A, 'counters'), version: 2, maxEntries: 9 },
  { ...byName(A, 'socks'), version: 2, maxEntries: 2048, from: { 1: loseFrom('sockets in it are gone: the proxies re-register theirs') } },
  { ...byName(A, 'storage'), value: ValB, version: 2, from: { 1: loseFrom('connections in flight lose their original destination') } },
];

const shapeOf = (d: MapDef): MapShape => ({ type: d.type, keySize: d.key.size, valueSize: d.value.size, maxEntries: d.maxEntries, flags: d.flags });
const pinOf = (d: MapDef, at = 1n): PinnedVersion => ({ version: d.version, rel: `maps/${d.name}_v${d.version}`, pinnedAtNs: at, shape: shapeOf(d) });
const pinsOf = (defs: MapDef[], at = 1n): Map<string, PinnedVersion[]> => new Map(defs.map((d) => [d.name, [pinOf(d, at)]]));
const actions = (steps: MapStep[]): Record<string, string> => Object.fromEntries(steps.map((s) => [s.map, s.action]));

test('upgrade A -> B: reuse, refill, copy, convert, counters, lose; every old pin stale but the reused one', () => {
  const steps = planMaps(B, pinsOf(A));
  assert.deepEqual(actions(steps), {
    desired: 'refill',
    kept: 'reuse',
    bigger: 'copy',
    reshaped: 'convert',
    counters: 'counters',
    socks: 'lose',
    storage: 'lose',
  });
  for (const s of steps) {
    if (s.action === 'reuse') assert.deepEqual(s.stale, []);
    else
      assert.deepEqual(
        s.stale.map((p) => p.rel),
        [`maps/${s.map}_v1`],
        s.map,
      );
  }
  assert.match(steps.find((s) => s.map === 'storage')!.note!, /original destination/);
});

test('downgrade B -> A: refill and counters go back, state of the same layout is copied back; a converted state, sockets and storage are dropped, never refused', () => {
  const steps = planMaps(A, pinsOf(B));
  assert.deepEqual(actions(steps), {
    desired: 'refill',
    kept: 'reuse',
    bigger: 'copy',
    reshaped: 'drop',
    counters: 'counters',
    socks: 'drop',
    storage: 'drop',
  });
  assert.match(
    steps.find((s) => s.map === 'bigger')!.note!,
    /maps\/bigger_v2 is layout version 2, newer than this build's 1, with the same key and value layout: copied back/,
  );
  assert.deepEqual(
    steps.find((s) => s.map === 'bigger')!.stale.map((p) => p.rel),
    ['maps/bigger_v2'],
  );
  const note = steps.find((s) => s.map === 'reshaped')!.note!;
  assert.match(note, /maps\/reshaped_v2 is layout version 2, newer than this build's 1/);
  assert.match(note, /start empty/);
});

test('nothing pinned: create; the same build again: reuse everything', () => {
  assert.deepEqual(new Set(Object.values(actions(planMaps(B, new Map())))), new Set(['create']));
  assert.deepEqual(new Set(Object.values(actions(planMaps(B, pinsOf(B))))), new Set(['reuse']));
});

test('refused: no declaration for the pinned version, a pin that is not what the declaration says, a copy declared for sockets', () => {
  const noDecl = planMap({ ...byName(A, 'kept'), version: 3 }, [pinOf(byName(A, 'kept'))]);
  assert.equal(noDecl.action, 'refuse');
  assert.match(noDecl.note!, /declares no migration of kept from version 1/);
  // a pinned v1 whose capacity is not the declared one
  const odd = planMap(byName(B, 'bigger'), [{ ...pinOf(byName(A, 'bigger')), shape: { ...shapeOf(byName(A, 'bigger')), maxEntries: 512 } }]);
  assert.equal(odd.action, 'refuse');
  assert.match(odd.note!, /max_entries 512, not 1024/);
  const socks = planMap({ ...byName(B, 'socks'), from: { 1: copyFrom({ maxEntries: 1024 }) } }, [pinOf(byName(A, 'socks'))]);
  assert.equal(socks.action, 'refuse');
  assert.match(socks.note!, /'sockets' map cannot be carried/);
  // counters whose pinned map is no counter array: refused on upgrade, dropped on downgrade
  const notCounters = { ...pinOf(byName(A, 'counters')), shape: { ...shapeOf(byName(A, 'counters')), valueSize: 16 } };
  assert.equal(planMap(byName(B, 'counters'), [notCounters]).action, 'refuse');
  assert.equal(planMap(byName(A, 'counters'), [{ ...notCounters, version: 3 }]).action, 'drop');
});

test('a map the options size (capacity.ts) was pinned with their capacity then: a copy takes it whatever it was, unless the declaration names one', () => {
  // orig_by_tuple is sized by --max-connections: a pin of 16 entries is still the version a copy declares
  const older = def({ name: 'orig_by_tuple', carry: 'state', maxEntries: 65536 });
  const newer: MapDef = { ...older, version: 2, from: { 1: copyFrom() } };
  const small = { ...pinOf(older), shape: { ...shapeOf(older), maxEntries: 16 } };
  assert.equal(planMap(newer, [small]).action, 'copy');
  // a capacity the declaration names is checked, sized or not
  const named = planMap({ ...newer, from: { 1: copyFrom({ maxEntries: 65536 }) } }, [small]);
  assert.equal(named.action, 'refuse');
  assert.match(named.note!, /max_entries 16, not 65536/);
  // so is every other part of the shape
  assert.equal(planMap(newer, [{ ...small, shape: { ...small.shape, valueSize: 99 } }]).action, 'refuse');
});

test('the newest pin is the one in use: a stale pin of the current version (left by a crash before a downgrade) is not reused', () => {
  const v1 = pinOf(byName(A, 'bigger'), 200n); // the downgrade made it last
  const v2 = pinOf(byName(B, 'bigger'), 100n);
  assert.equal(newest([v2, v1]), v1);
  const s = planMap(byName(B, 'bigger'), [v2, v1]);
  assert.equal(s.action, 'copy');
  assert.equal(s.from, v1);
  assert.deepEqual(s.stale.map((p) => p.rel).sort(), ['maps/bigger_v1', 'maps/bigger_v2']);
  // the other way round: v2 is newest and current: reused, v1 stale
  const r = planMap(byName(B, 'bigger'), [{ ...v1, pinnedAtNs: 50n }, v2]);
  assert.equal(r.action, 'reuse');
  assert.deepEqual(
    r.stale.map((p) => p.rel),
    ['maps/bigger_v1'],
  );
});

// ---- declarations against a lock -----------------------------------------------------------------

const lockOf = (...defs: MapDef[]): string => `${defs.map(lockLine).join('\n')}\n`;

test('checkMigrations: the declarations of B against a lock of A and B are fine', () => {
  assert.deepEqual(checkMigrations(B, lockOf(...A, ...B.filter((d) => d.version > 1))), []);
});

test('checkMigrations: a copy that claims a layout that changed, a missing declaration, a bad converter, lose without a cost, a wrong carry', () => {
  const lock = lockOf(...A);
  const problems = (d: MapDef): string[] => checkMigrations([d], lock);
  // the value layout changed, but a copy is declared
  const copyReshaped = { ...byName(B, 'reshaped'), from: { 1: copyFrom() } };
  assert.match(problems(copyReshaped).join('\n'), /not the locked one.*needs a converter, not a copy/);
  // a copy whose declared old capacity is wrong
  assert.match(problems({ ...byName(B, 'bigger'), from: { 1: copyFrom({ maxEntries: 4096 }) } }).join('\n'), /not the locked one/);
  // a state map of a new version without a declaration for the locked older one
  assert.match(problems({ ...byName(B, 'bigger'), from: undefined }).join('\n'), /no migration from locked version 1/);
  // a converter that produces the old value layout
  const bad = { ...byName(B, 'reshaped'), from: { 1: convertFrom({ key: Key, value: ValA }, { key: Key, value: ValA }, (k, v) => [k, v]) } };
  assert.match(problems(bad).join('\n'), /produces other layouts/);
  // a converted layout of the same sizes: the older build would copy it back as bytes of its own layout
  const ValSame = struct('val_same', { b: u16, pad: u16, a: u32 });
  const sameSize = {
    ...byName(B, 'reshaped'),
    value: ValSame,
    from: { 1: convertFrom({ key: Key, value: ValA }, { key: Key, value: ValSame }, (k, v) => [k, { ...v, pad: 0 }]) },
  };
  assert.match(problems(sameSize).join('\n'), /a converter between layouts of the same sizes \(key 8 B, value 8 B\).*change a size/);
  assert.match(problems({ ...byName(B, 'storage'), from: { 1: loseFrom('gone') } }).join('\n'), /must say what it costs/);
  assert.match(
    problems({ ...byName(B, 'bigger'), from: { 1: loseFrom('the entries of version 1 are not carried at all') } }).join('\n'),
    /a 'state' map can always be carried: declare a copy or a converter, not 'lose'/,
  );
  assert.match(problems({ ...byName(B, 'storage'), from: undefined }).join('\n'), /no migration from locked version 1/);
  assert.match(problems({ ...byName(B, 'socks'), carry: 'state' }).join('\n'), /a SOCKHASH is 'sockets'/);
  assert.match(problems({ ...byName(B, 'desired'), from: { 1: copyFrom() } }).join('\n'), /needs no declaration/);
  // refill and counters maps need none
  assert.deepEqual(problems(byName(B, 'desired')), []);
  assert.deepEqual(problems(byName(B, 'counters')), []);
});

// ---- carrying, on maps in memory ---------------------------------------------------------------------

const CPUS = 3;

/** A map in memory with the kernel's behaviour for the types used here. */
class MemMap implements RawMap {
  readonly data = new Map<string, Buffer>();
  readonly valueBytes: number;
  constructor(readonly info: MapShape) {
    this.valueBytes = info.type === MapType.PERCPU_ARRAY ? Math.ceil(info.valueSize / 8) * 8 * CPUS : info.valueSize;
    if (this.isArray()) for (let i = 0; i < info.maxEntries; i++) this.data.set(this.k(i), Buffer.alloc(this.valueBytes));
  }
  static of(d: MapDef): MemMap {
    return new MemMap(shapeOf(d));
  }
  private isArray(): boolean {
    return this.info.type === MapType.ARRAY || this.info.type === MapType.PERCPU_ARRAY;
  }
  private k(i: number): string {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(i);
    return b.toString('hex');
  }
  lookup(key: Buffer): Buffer | null {
    return this.data.get(key.toString('hex')) ?? null;
  }
  update(key: Buffer, value: Buffer, flags: number = MapUpdate.ANY): void {
    assert.equal(key.length, this.info.keySize);
    assert.equal(value.length, this.valueBytes);
    const id = key.toString('hex');
    if (this.isArray() && !this.data.has(id)) throw new Error('E2BIG');
    if (!this.data.has(id) && this.data.size >= this.info.maxEntries) throw new Error('E2BIG');
    if (flags === MapUpdate.NOEXIST && this.data.has(id)) throw new Error('EEXIST');
    this.data.set(id, Buffer.from(value));
  }
  delete(key: Buffer): boolean {
    if (this.isArray()) throw new Error('EINVAL');
    return this.data.delete(key.toString('hex'));
  }
  entries(): Array<[Buffer, Buffer]> {
    return [...this.data].map(([k, v]) => [Buffer.from(k, 'hex'), Buffer.from(v)]);
  }
}

const perCpu = (...xs: number[]): Buffer => {
  const b = Buffer.alloc(8 * CPUS);
  xs.forEach((x, i) => b.writeBigUInt64LE(BigInt(x), 8 * i));
  return b;
};
const cpus = (b: Buffer | null): number[] => Array.from({ length: CPUS }, (_, i) => Number(b!.readBigUInt64LE(8 * i)));
const idx = (i: number): Buffer => Idx.encode(i);

test('counters: the first pass copies every index both have; the second adds what each CPU counted in the old map since, keeping the new counts', () => {
  const old = MemMap.of(byName(A, 'counters')); // 7 counters
  const neu = MemMap.of(byName(B, 'counters')); // 9
  old.update(idx(0), perCpu(5, 0, 2));
  old.update(idx(6), perCpu(1, 1, 1));
  const step = planMap(byName(B, 'counters'), [pinOf(byName(A, 'counters'))]);
  const c = startCarry(step, old, neu);
  assert.deepEqual(cpus(neu.lookup(idx(0))), [5, 0, 2]);
  assert.deepEqual(cpus(neu.lookup(idx(6))), [1, 1, 1]);
  assert.deepEqual(cpus(neu.lookup(idx(8))), [0, 0, 0]);
  assert.equal(c.report.first, 2);
  // meanwhile: old programs still count in the old map, new ones in the new map
  old.update(idx(0), perCpu(7, 1, 2));
  neu.update(idx(0), perCpu(6, 0, 2));
  c.second();
  assert.deepEqual(cpus(neu.lookup(idx(0))), [8, 1, 2], 'new counts kept, old increments added, nothing twice');
  assert.deepEqual(cpus(neu.lookup(idx(6))), [1, 1, 1]);
  assert.equal(c.report.second, 1);
  c.second(); // again: nothing new, nothing added twice
  assert.deepEqual(cpus(neu.lookup(idx(0))), [8, 1, 2]);
  // downgrade: 9 -> 7, the two counters the older build does not know are left behind
  const back = MemMap.of(byName(A, 'counters'));
  const d = startCarry(planMap(byName(A, 'counters'), [pinOf(byName(B, 'counters'))]), neu, back);
  assert.deepEqual(cpus(back.lookup(idx(0))), [8, 1, 2]);
  assert.equal(d.report.left, 2);
});

const K = (n: number): Buffer => Key.encode(BigInt(n));
const VA = (a: number, b = 0): Buffer => ValA.encode({ a, b });

test('copy: the first pass copies every entry; the second carries what the old programs added, changed and removed meanwhile', () => {
  const old = MemMap.of(byName(A, 'bigger'));
  const neu = MemMap.of(byName(B, 'bigger'));
  for (let i = 1; i <= 4; i++) old.update(K(i), VA(i));
  const c = startCarry(planMap(byName(B, 'bigger'), [pinOf(byName(A, 'bigger'))]), old, neu);
  assert.equal(neu.data.size, 4);
  assert.equal(c.report.first, 4);
  // the old programs, until their link is swapped: add 5, change 2, remove 3 (an in-flight hand-over taken)
  old.update(K(5), VA(5));
  old.update(K(2), VA(20));
  old.delete(K(3));
  // the new side meanwhile: took 1 (deleted it) and rewrote 4; both must stay as the new side left them
  neu.delete(K(1));
  neu.update(K(4), VA(44));
  old.update(K(4), VA(40)); // the old side changed 4 too: the newer (new side) write wins
  old.delete(K(1)); // removed on both sides
  c.second();
  const got = new Map([...neu.entries()].map(([k, v]) => [Number(Key.decode(k)), ValA.decode(v).a]));
  assert.deepEqual(
    [...got].sort((x, y) => x[0] - y[0]),
    [
      [2, 20],
      [4, 44],
      [5, 5],
    ],
  );
});

test('convert: old entries through the converter in both passes', () => {
  const old = MemMap.of(byName(A, 'reshaped'));
  const neu = MemMap.of(byName(B, 'reshaped'));
  old.update(K(1), VA(10, 3));
  const c = startCarry(planMap(byName(B, 'reshaped'), [pinOf(byName(A, 'reshaped'))]), old, neu);
  assert.deepEqual(ValB.decode(neu.lookup(K(1))!), { a: 10, b: 3, c: 11 });
  old.update(K(2), VA(20, 1));
  old.update(K(1), VA(12, 3));
  c.second();
  assert.deepEqual(ValB.decode(neu.lookup(K(1))!), { a: 12, b: 3, c: 13 });
  assert.deepEqual(ValB.decode(neu.lookup(K(2))!), { a: 20, b: 1, c: 21 });
});

test("copy back (a downgrade): the newer version's entries into this build's map, both passes", () => {
  const newer = MemMap.of(byName(B, 'bigger'));
  for (let i = 1; i <= 3; i++) newer.update(K(i), VA(i));
  const older = MemMap.of(byName(A, 'bigger'));
  const c = startCarry(planMap(byName(A, 'bigger'), [pinOf(byName(B, 'bigger'))]), newer, older);
  assert.equal(c.report.first, 3);
  newer.update(K(4), VA(4)); // the newer programs, until their link is swapped
  c.second();
  const got = new Map([...older.entries()].map(([k, v]) => [Number(Key.decode(k)), ValA.decode(v).a]));
  assert.deepEqual(
    [...got].sort((x, y) => x[0] - y[0]),
    [
      [1, 1],
      [2, 2],
      [3, 3],
      [4, 4],
    ],
  );
});

test('an array of state (switches): every index carried, a smaller new array leaves the rest behind', () => {
  const Sw = struct('sw', { flags: u32, pad: u32 });
  const a = def({ name: 'sw', carry: 'state', key: Idx, value: Sw, type: MapType.ARRAY, maxEntries: 2 });
  const b = { ...a, version: 2, maxEntries: 1, from: { 1: copyFrom({ maxEntries: 2 }) } };
  const old = MemMap.of(a);
  old.update(idx(0), Sw.encode({ flags: 5, pad: 0 }));
  old.update(idx(1), Sw.encode({ flags: 9, pad: 0 }));
  const neu = MemMap.of(b);
  const c = startCarry(planMap(b, [pinOf(a)]), old, neu);
  assert.deepEqual(Sw.decode(neu.lookup(idx(0))!), { flags: 5, pad: 0 });
  assert.equal(c.report.left, 1);
  c.second();
  assert.equal(neu.data.size, 1);
});

test('a hash that cannot take the old entries fails the start with the map named', () => {
  const small = { ...byName(B, 'bigger'), maxEntries: 2, from: { 1: copyFrom({ maxEntries: 1024 }) } };
  const old = MemMap.of(byName(A, 'bigger'));
  for (let i = 1; i <= 3; i++) old.update(K(i), VA(i));
  assert.throws(
    () => startCarry(planMap(small, [pinOf(byName(A, 'bigger'))]), old, MemMap.of(small)),
    /carrying map bigger from version 1: the new map takes no more entries/,
  );
});
