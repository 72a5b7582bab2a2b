// The loader: opens the BPF objects, gives every object the same pinned maps, loads the programs and
// keeps them attached through pinned bpf_links. Everything it makes is pinned under one bpffs
// directory, so it outlives the agent:
//
//   <bpffs>/maps/<map>_v<layout version>          every map (see layouts.ts)
//   <bpffs>/links/<program>                        one cgroup link per program
//   <bpffs>/links/netns/<program>/<netns cookie>   one netns link per captured pod
//
// Only root can touch that tree, and no pin in it is followed or taken from someone else: see bpffs.ts.
//
// A (re)started agent reuses the pinned maps of the same layout version and swaps the programs behind
// the pinned links with bpf_link_update: capture never stops. A map pinned at another layout version is
// migrated (migrate.ts): a new map, complete before the first program that uses it is swapped in (the
// old entries carried, or refilled by the agent), the old programs' last writes carried after the swap
// (commit), then the new pin made and the old one removed. The start runs:
//   load() (plan, open, first pass) -> agent fills the maps -> attach() -> commit()
//
// Every map it creates gets the capacity the agent derived from its options (capacity.ts). A pinned map
// of the same layout version keeps the capacity it was made with: a pinned map cannot be resized, and a
// new one would lose what the kernel holds (sockets, in-flight hand-overs) or need a migration for what
// is only an option change; the loader reports it (capacities) and the agent warns and shows it in
// status until `meshlane uninstall` (README, Map capacity).
import { existsSync, lstatSync, readdirSync, rmSync, rmdirSync, unlinkSync } from 'node:fs';
import { release } from 'node:os';
import { join, resolve } from 'node:path';
import * as native from '../native/addon.js';
import { BpfError, VerifierError } from '../native/errors.js';
import { BpfLink, BpfObject, type BpfProgram } from '../native/handles.js';
import { MAPS, MAP_NAMES, type MapDef, type MapName } from './layouts.js';
import { capacityOption, type MapCapacity } from './capacity.js';
import { objectsFor, netnsPrograms, staticPrograms, type ObjectDef } from './programs.js';
import { typedMap, type KeyOf, type TypedMap, type ValueOf } from './typed-map.js';
import { AGENT_CAPS, capsMessage, requireFeatures } from './features.js';
import {
  COOKIE_PIN,
  PROGRAM_PIN,
  MOUNT_DATA,
  MOUNT_FLAGS,
  checkBpffs,
  linksDir,
  makeDir,
  mapsDir,
  netnsLinksDir,
  netnsProgramDir,
  openPin,
  prepareBpffs,
  present,
  refused,
  type Prepared,
  type Tree,
} from './bpffs.js';
import { MapType } from './uapi.js';
import { carries, pinsAtCommit, planMaps, startCarry, type Carrier, type CarryReport, type MapStep, type PinnedVersion } from './migrate.js';
import { UserError, isErrno } from '../util/errors.js';
import { cgroupId, checkCgroupDir } from '../util/cgroup.js';
import { packageRoot } from '../util/paths.js';
import type { Logger } from '../util/log.js';

/** Maps `K`, each typed by its layouts: a key or value of the wrong shape is a compile error. */
type MapsOf<K extends MapName> = { [N in K]: TypedMap<KeyOf<N>, ValueOf<N>> };
/** Every map (generic over the names, MapsOf<N>[N] is TypedMap<KeyOf<N>, ValueOf<N>> to TypeScript). */
export type MapsView = MapsOf<MapName>;

const isMapName = (name: string): name is MapName => Object.hasOwn(MAPS, name);

export const mapPinName = (def: MapDef): string => `${def.name}_v${def.version}`;
export { mapsDir, linksDir, onBpffs } from './bpffs.js';

const PRIVILEGE_HINT = 'run meshlane as root (it needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)';
/** what uninstall, dump and status need: bpf() on the pins (CAP_SYS_ADMIN covers CAP_BPF) */
const PIN_CAPS = AGENT_CAPS.filter(([c]) => c === 'CAP_SYS_ADMIN');

/** Turns errors a user can cause into one clear line, by class; anything else passes through. */
export function explain(e: unknown, what: string): unknown {
  if (e instanceof UserError) return e;
  // before EACCES: libbpf reports a verifier refusal as EACCES (or EINVAL, E2BIG...)
  if (e instanceof VerifierError) {
    return new UserError(
      `${what}: the verifier of kernel ${release()} refused program '${e.program}' (${e.message}); the kernel passed meshlane's feature checks, so please report this with the output of MESHLANE_DEBUG=1`,
      { cause: e },
    );
  }
  if (e instanceof BpfError && (e.code === 'EPERM' || e.code === 'EACCES')) {
    // root without its capabilities gets told which ones, not to become root
    const caps = capsMessage(PIN_CAPS);
    return new UserError(`${what}: permission denied (${e.syscall}): ${caps ?? PRIVILEGE_HINT}`, { cause: e });
  }
  return e;
}

/**
 * Make sure the --bpffs tree is on bpffs and root's alone (bpffs.ts), mounting bpffs (mode 0700) at
 * /sys/fs/bpf, or at `dir` outside it, if needed.
 */
export function ensureBpffs(dir: string): Prepared {
  return prepareBpffs(dir, (mountAt) => {
    try {
      native.mountBpffs(mountAt, MOUNT_DATA, MOUNT_FLAGS);
    } catch (e) {
      if (isErrno(e, 'EPERM') || isErrno(e, 'EACCES')) {
        throw new UserError(
          `bpffs is not mounted at ${mountAt} and meshlane may not mount it: ${PRIVILEGE_HINT}, or mount it with 'mount -t bpf -o ${MOUNT_DATA} bpf ${mountAt}'`,
        );
      }
      throw new UserError(
        `bpffs is not mounted at ${mountAt} and mounting it failed (${(e as Error).message}): mount it with 'mount -t bpf -o ${MOUNT_DATA} bpf ${mountAt}'`,
      );
    }
  });
}

/** Entries of meshlane's directories that it did not make, for a log line (they are left alone). */
const foreignLine = (t: Tree): string[] => t.foreign.map((f) => `${f.rel} ${f.why}`);

export interface LoadOptions {
  bpffs: string;
  objDir?: string;
  log?: Logger;
  /** load splice.bpf.o (and attach its programs): only when this kernel can bound the splice backlog
   * (src/dataplane/splice.ts); default false */
  splice?: boolean;
  /** each map's max_entries for the maps this load creates (capacity.ts); default: the compiled ones */
  capacity?: Readonly<Record<MapName, number>>;
}

export class Dataplane {
  private readonly programs = new Map<string, BpfProgram>();
  /** netns link pins already pointing at this load's program */
  private readonly netnsDone = new Map<string, BpfProgram>();
  private view: MapsView | undefined;
  /** the maps, once loaded */
  get maps(): MapsView {
    if (!this.view) throw new Error('the dataplane is not loaded');
    return this.view;
  }
  /** maps this load created (not found pinned at any version): they start empty */
  readonly created: MapName[] = [];
  /** what this load does with each map's pins (migrate.ts), in MAP_NAMES order */
  private migration: MapStep[] = [];
  /** new maps of a migration: pinned by commit(), once complete */
  private readonly unpinned: MapName[] = [];
  /** old maps being carried into new ones (their second pass is in commit()) */
  private readonly carriers: Carrier[] = [];
  /** the old maps they read, closed by commit() */
  private readonly sources: native.MapFd[] = [];
  private committed = false;
  /** every map's capacity: what it has (a pinned map keeps its own), what was wanted, what sets it */
  readonly capacities: MapCapacity[] = [];

  /** the objects this load took (the splice object only when asked for) */
  private readonly objects: ObjectDef[];

  private constructor(
    readonly bpffs: string,
    private readonly log: Logger | undefined,
    splice: boolean,
  ) {
    this.objects = objectsFor(splice);
  }

  /**
   * Loads the objects (Dataplane.load). Each object's load runs off the event loop (loadAsync): the verifier
   * is most of a start's 0.6-0.9 s here, and the agent's source goes on meanwhile.
   */
  private async init(
    tree: Tree,
    objDir = join(packageRoot(), 'bpf', 'build'),
    /** directories this load made: a failed load takes them away again, and nothing else */
    madeDirs: string[] = [],
    capacity?: Readonly<Record<MapName, number>>,
  ): Promise<void> {
    const bpffs = this.bpffs;
    // The loader keeps handles only: one per map (the pinned map, or the first object's), one per
    // program; every object is closed once its handles are taken.
    const handles = new Map<MapName, native.MapFd>();
    try {
      // Before anything is loaded: what to do with each map's pins. A map this build cannot carry refuses
      // the start here, with nothing changed.
      this.migration = planMigration(bpffs, tree);
      const steps = new Map(this.migration.map((st) => [st.map as MapName, st]));
      for (const o of this.objects) {
        const path = join(objDir, o.file);
        if (!existsSync(path)) throw new UserError(`BPF object ${path} is missing: run the setup command from the README (npm run build)`);
        using obj = new BpfObject(path);
        for (const spec of obj.maps()) {
          if (!isMapName(spec.name)) continue; // .rodata / .bss of the object itself
          const def: MapDef = MAPS[spec.name];
          if (spec.keySize !== def.key.size || spec.valueSize !== def.value.size) {
            throw new Error(
              `map ${spec.name} in ${o.file}: key/value ${spec.keySize}/${spec.valueSize} bytes, layouts.ts says ${def.key.size}/${def.value.size}`,
            );
          }
          let map = handles.get(spec.name);
          if (map === undefined && steps.get(spec.name)?.action === 'reuse') {
            const pin = join(mapsDir(bpffs), mapPinName(def));
            map = openPin(bpffs, pin, native.openMap);
            handles.set(spec.name, map);
            const info = map.info;
            // its capacity may differ: a run-time parameter of the same layout version (capacity.ts)
            if (info.type !== spec.type || info.keySize !== spec.keySize || info.valueSize !== spec.valueSize) {
              throw new UserError(`pinned map ${pin} does not match its layout version: remove it with 'meshlane uninstall --bpffs ${bpffs}'`);
            }
          }
          if (map !== undefined) obj.reuseMap(spec.name, map);
          else if (capacity && spec.type !== MapType.SK_STORAGE && capacity[spec.name] !== spec.maxEntries) obj.setMaxEntries(spec.name, capacity[spec.name]);
        }
        await obj.loadAsync();
        for (const spec of obj.maps()) {
          if (!isMapName(spec.name) || handles.has(spec.name)) continue;
          const map = obj.map(spec.name);
          handles.set(spec.name, map);
          if (pinsAtCommit(steps.get(spec.name)?.action ?? 'create')) {
            this.unpinned.push(spec.name);
          } else {
            native.pin(map, join(mapsDir(bpffs), mapPinName(MAPS[spec.name]))); // bpf_obj_pin never follows or replaces an existing name
            this.created.push(spec.name);
          }
        }
        for (const p of o.programs) this.programs.set(p.name, obj.program(p.name));
      }
      const view: Partial<MapsView> = {};
      for (const name of MAP_NAMES) {
        const map = handles.get(name);
        if (map === undefined) throw new Error(`map ${name} is in layouts.ts but in none of the objects`);
        setView(view, name, map);
      }
      this.view = view as MapsView;
      for (const name of MAP_NAMES) {
        const has = handles.get(name)!.info.maxEntries;
        const option = capacityOption(name);
        this.capacities.push({ map: name, capacity: has, wanted: capacity?.[name] ?? MAPS[name].maxEntries, ...(option ? { option } : {}) });
      }
      // First pass: the old entries into the new maps, which no program uses yet.
      for (const st of this.migration) {
        if (!carries(st.action) || !st.from) continue;
        const source = openPin(bpffs, join(bpffs, st.from.rel), native.openMap);
        this.sources.push(source);
        this.carriers.push(startCarry(st, source, handles.get(st.map as MapName)!));
      }
      this.logMigration();
    } catch (e) {
      for (const map of handles.values()) map.close();
      for (const m of this.sources.splice(0)) m.close();
      this.closePrograms();
      // a failed load leaves nothing of its own behind: the pins and the directories it made
      for (const name of this.created.splice(0)) rmSync(join(mapsDir(bpffs), mapPinName(MAPS[name])), { force: true });
      for (const d of [...madeDirs].reverse()) {
        try {
          rmdirSync(d);
        } catch {
          /* not empty, or the mount point of the bpffs it mounted */
        }
      }
      throw e;
    }
  }

  private logMigration(): void {
    for (const st of this.migration) {
      if (st.action === 'reuse' || st.action === 'create') continue;
      const c = this.carriers.find((x) => x.report.map === st.map)?.report;
      const fields = { map: st.map, action: st.action, from: st.from?.rel, to: `maps/${st.map}_v${st.version}`, carried: c?.first, left: c?.left || undefined };
      if (st.action === 'lose' || st.action === 'drop')
        this.log?.warn({ ...fields, lost: st.note }, `map ${st.map}: layout version ${st.from?.version} -> ${st.version}, nothing carried`);
      else this.log?.info({ ...fields, note: st.note }, `map ${st.map}: layout version ${st.from?.version} -> ${st.version} (${st.action})`);
    }
  }

  /**
   * Everything that can refuse a start without writing anything, for the agent to call before it
   * reads its source: the capabilities, the kernel's features, the --bpffs tree (bpffs.ts), and pins of
   * a layout version this build cannot carry (migrate.ts).
   */
  static preflight(bpffs: string): void {
    try {
      requireFeatures();
      const tree = checkBpffs(bpffs);
      if (tree) planMigration(bpffs, tree);
    } catch (e) {
      throw explain(e, `checking --bpffs ${bpffs}`);
    }
  }

  /** Load the objects, reusing (or creating and pinning) the maps under `bpffs`. */
  static async load(opts: LoadOptions): Promise<Dataplane> {
    try {
      requireFeatures();
      const prepared = ensureBpffs(opts.bpffs);
      const foreign = foreignLine(prepared.tree);
      if (foreign.length) opts.log?.warn({ bpffs: opts.bpffs, entries: foreign }, 'entries meshlane did not make are in its pin directories; left alone');
      if (prepared.mounted) opts.log?.info({ at: prepared.mounted, options: MOUNT_DATA }, 'mounted bpffs');
      const dp = new Dataplane(opts.bpffs, opts.log, opts.splice ?? false);
      await dp.init(prepared.tree, opts.objDir, prepared.made, opts.capacity);
      return dp;
    } catch (e) {
      throw explain(e, 'loading the BPF programs');
    }
  }

  /**
   * The end of a start, after attach(): carry what the old programs wrote to the old maps until their
   * link was swapped (second pass), pin the new maps (from now on a start finds them complete and uses
   * them), then remove the pins of other layout versions and of programs that are gone. Idempotent.
   */
  commit(): { carried: CarryReport[]; pinned: string[]; removed: string[] } {
    const pinned: string[] = [];
    if (!this.committed) {
      for (const c of this.carriers) c.second();
      for (const name of this.unpinned) {
        const pin = join(mapsDir(this.bpffs), mapPinName(MAPS[name]));
        // a pin of the current version that is not the newest (a crash left it before a downgrade
        // removed it): stale, and in the way of the new map's pin
        if (present(pin)) unlinkSync(pin);
        native.pin(this.maps[name].handle, pin);
        pinned.push(`maps/${mapPinName(MAPS[name])}`);
      }
      for (const m of this.sources.splice(0)) m.close();
      this.committed = true;
    }
    return { carried: this.carriers.map((c) => c.report), pinned, removed: this.removeStalePins() };
  }

  private program(name: string): BpfProgram {
    const p = this.programs.get(name);
    if (!p) throw new Error(`program ${name} is in programs.ts but was not loaded`);
    return p;
  }

  /**
   * Attach every static program: cgroup programs to `cgroupRoot` through pinned links (a pinned link
   * for the same cgroup gets the new program atomically with bpf_link_update; otherwise a new link is
   * made and pinned), sockmap programs to their pinned map (a new attach replaces the old program).
   */
  attach(cgroupRoot: string): Array<{ program: string; action: 'attached' | 'updated' }> {
    const dir = checkCgroupDir(cgroupRoot);
    const wantId = cgroupId(dir);
    const report: Array<{ program: string; action: 'attached' | 'updated' }> = [];
    try {
      using cgroup = native.openPath(dir);
      for (const p of staticPrograms(this.objects)) {
        const prog = this.program(p.name);
        if (p.attach.kind === 'sockmap') {
          prog.attachTo(this.maps[p.attach.map].handle, p.attach.type);
          report.push({ program: p.name, action: 'attached' });
          continue;
        }
        const pin = join(linksDir(this.bpffs), p.name);
        if (present(pin)) {
          updatePinnedLink(
            this.bpffs,
            pin,
            prog,
            wantId,
            `the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`,
          );
          report.push({ program: p.name, action: 'updated' });
        } else {
          using link = prog.attachCgroup(cgroup, p.attach.type);
          link.pin(pin);
          report.push({ program: p.name, action: 'attached' });
        }
        this.log?.debug({ program: p.name, cgroup: dir }, 'program attached');
      }
    } catch (e) {
      throw explain(e, `attaching to cgroup ${dir}`);
    }
    return report;
  }

  /**
   * Refuse a cgroup root other than the one the pinned cgroup links are attached to, before anything
   * is written: attach() refuses it too, but only after the maps of that install were refilled.
   */
  checkPinnedLinks(cgroupRoot: string): void {
    const dir = checkCgroupDir(cgroupRoot);
    const wantId = cgroupId(dir);
    for (const p of staticPrograms(this.objects)) {
      const pin = join(linksDir(this.bpffs), p.name);
      if (p.attach.kind !== 'cgroup' || !existsSync(pin)) continue;
      using link = BpfLink.open(pin);
      const id = link.info().cgroupId;
      if (id !== undefined && BigInt(id) !== wantId) {
        throw new UserError(
          `the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`,
        );
      }
    }
  }

  /**
   * Make sure every netns program is attached to the network namespace `nsPath` (a pod's), through a
   * link pinned under links/netns/<program>/<cookie>; an existing pin gets the current program.
   */
  attachNetns(nsPath: string, cookie: bigint): void {
    for (const p of netnsPrograms(this.objects)) {
      const dir = netnsProgramDir(this.bpffs, p.name);
      const pin = join(dir, cookie.toString());
      const prog = this.program(p.name);
      if (present(pin)) {
        if (this.netnsDone.get(pin) === prog) continue;
        updatePinnedLink(this.bpffs, pin, prog, undefined, '');
      } else {
        makeDir(this.bpffs, netnsLinksDir(this.bpffs));
        makeDir(this.bpffs, dir);
        using netns = native.openPath(nsPath);
        using link = prog.attachNetns(netns, p.attach.type);
        link.pin(pin);
      }
      this.netnsDone.set(pin, prog);
    }
  }

  /** Netns cookies that have pinned netns links. */
  netnsLinkCookies(): bigint[] {
    const out = new Set<bigint>();
    for (const p of netnsPrograms(this.objects)) for (const f of safeReaddir(netnsProgramDir(this.bpffs, p.name))) if (COOKIE_PIN.test(f)) out.add(BigInt(f));
    return [...out];
  }

  /** Detach and unpin the netns links of a pod (gone or no longer captured). */
  detachNetns(cookie: bigint): void {
    for (const p of netnsPrograms(this.objects)) {
      const pin = join(netnsProgramDir(this.bpffs, p.name), cookie.toString());
      if (present(pin)) detachPinnedLink(this.bpffs, pin);
      this.netnsDone.delete(pin);
    }
  }

  /**
   * Remove pins that no longer belong: maps of other layout versions, links of programs that are gone.
   * Only pins meshlane made (its names, its pins: bpffs.ts); anything else is left alone.
   */
  removeStalePins(): string[] {
    const removed: string[] = [];
    const wantMaps = new Set(MAP_NAMES.map((n) => mapPinName(MAPS[n])));
    const wantLinks = new Set(staticPrograms(this.objects).map((p) => p.name));
    const wantNetns = new Set(netnsPrograms(this.objects).map((p) => p.name));
    const tree = checkBpffs(this.bpffs);
    if (!tree) return removed;
    for (const pin of tree.pins) {
      if (pin.kind === 'map' && !wantMaps.has(pin.name)) unlinkSync(pin.path);
      else if (pin.kind === 'link' && !wantLinks.has(pin.name)) detachPinnedLink(this.bpffs, pin.path);
      else if (pin.kind === 'netns-link' && !wantNetns.has(pin.name)) detachPinnedLink(this.bpffs, pin.path);
      else continue;
      removed.push(pin.rel);
    }
    for (const d of safeReaddir(netnsLinksDir(this.bpffs))) if (PROGRAM_PIN.test(d) && !wantNetns.has(d)) rmdirIfEmpty(netnsProgramDir(this.bpffs, d));
    return removed;
  }

  private closePrograms(): void {
    for (const p of this.programs.values()) p.close();
    this.programs.clear();
    this.netnsDone.clear();
  }

  /** Close every handle (the pins stay: capture goes on). */
  close(): void {
    this.closePrograms();
    for (const m of Object.values(this.maps)) m.close();
  }
}

/** Every pinned version of every map of the layout (other names are not meshlane's maps). */
function pinnedVersions(bpffs: string, tree: Tree): Map<string, PinnedVersion[]> {
  const out = new Map<string, PinnedVersion[]>();
  for (const pin of tree.pins) {
    const m = pin.kind === 'map' ? /^(.+)_v([0-9]+)$/.exec(pin.name) : null;
    if (!m || !isMapName(m[1]!)) continue;
    const pinnedAtNs = lstatSync(pin.path, { bigint: true }).mtimeNs;
    using map = openPin(bpffs, pin.path, native.openMap);
    const { type, keySize, valueSize, maxEntries, flags } = map.info;
    const list = out.get(m[1]!) ?? [];
    list.push({ version: Number(m[2]), rel: pin.rel, pinnedAtNs, shape: { type, keySize, valueSize, maxEntries, flags } });
    out.set(m[1]!, list);
  }
  return out;
}

/** The migration plan for the pins under `bpffs`; refuses (UserError) when a map cannot be carried. */
function planMigration(bpffs: string, tree: Tree): MapStep[] {
  const plan = planMaps(
    MAP_NAMES.map((n) => MAPS[n]),
    pinnedVersions(bpffs, tree),
  );
  const refused = plan.filter((st) => st.action === 'refuse');
  const first = refused[0];
  if (first?.from) {
    const more =
      refused.length > 1
        ? ` (and ${refused
            .slice(1)
            .map((r) => r.from?.rel)
            .join(', ')})`
        : '';
    throw new UserError(
      `--bpffs ${bpffs}: ${first.from.rel}${more} holds layout version ${first.from.version} of map ${first.map}, which this build (version ${first.version}) cannot carry: ${first.note}; nothing was changed and the attached programs keep capturing: run the build that pinned it, or one that declares a migration from it, or stop capture with 'meshlane uninstall --bpffs ${bpffs}' and start again`,
    );
  }
  return plan;
}

/** view[name] = the typed view of map `name` over `handle` */
function setView<N extends MapName>(view: Partial<MapsView>, name: N, handle: native.MapFd): void {
  const one: Partial<MapsOf<N>> = view;
  one[name] = typedMap(name, handle);
}

function safeReaddir(d: string): string[] {
  try {
    return readdirSync(d).sort();
  } catch {
    return [];
  }
}

/** The link pinned at `pin`, opened without following anything (bpffs.ts). */
const openLink = (bpffs: string, pin: string): BpfLink => new BpfLink(openPin(bpffs, pin, native.objGet));

/** Swap the program behind a pinned link (bpf_link_update: no moment without a program). */
function updatePinnedLink(bpffs: string, pin: string, prog: BpfProgram, wantCgroupId: bigint | undefined, mismatch: string): void {
  using link = openLink(bpffs, pin);
  const info = link.info();
  if (wantCgroupId !== undefined && info.cgroupId !== undefined && BigInt(info.cgroupId) !== wantCgroupId) throw new UserError(mismatch);
  link.update(prog);
}

function detachPinnedLink(bpffs: string, pin: string): void {
  {
    using link = openLink(bpffs, pin);
    try {
      link.detach();
    } catch (e) {
      // a netns link whose namespace is gone is already defunct: only the pin is left
      if (!isErrno(e, 'ENOLINK') && !isErrno(e, 'EINVAL')) throw e;
    }
  }
  unlinkSync(pin);
}

/** The pinned maps alone (no programs), for dump and status; works with no agent running. */
export class PinnedMaps implements Disposable {
  readonly maps: Partial<MapsView> = {};
  readonly missing: MapName[] = [];

  constructor(readonly bpffs: string) {
    try {
      for (const name of MAP_NAMES) {
        const pin = join(mapsDir(bpffs), mapPinName(MAPS[name]));
        if (!present(pin)) {
          this.missing.push(name);
          continue;
        }
        const map = openPin(bpffs, pin, native.openMap);
        try {
          setView(this.maps, name, map);
        } catch (e) {
          map.close();
          throw e;
        }
      }
    } catch (e) {
      this.close();
      throw explain(e, `reading the pinned maps under ${bpffs}`);
    }
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** What is pinned under `bpffs`: link and map pin names (only pins: no symbolic link, nothing followed). */
export function listPins(bpffs: string): { links: string[]; maps: string[] } {
  const pins = (d: string): string[] => safeReaddir(d).filter((f) => isPin(join(d, f)));
  const links: string[] = pins(linksDir(bpffs));
  if (isDir(netnsLinksDir(bpffs))) {
    for (const prog of safeReaddir(netnsLinksDir(bpffs)))
      if (isDir(netnsProgramDir(bpffs, prog))) for (const c of pins(netnsProgramDir(bpffs, prog))) links.push(`netns/${prog}/${c}`);
  }
  return { links, maps: isDir(mapsDir(bpffs)) ? pins(mapsDir(bpffs)) : [] };
}

const lstatOf = (p: string): ReturnType<typeof lstatSync> | undefined => {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
};
const isPin = (p: string): boolean => lstatOf(p)?.isFile() ?? false;
const isDir = (p: string): boolean => lstatOf(p)?.isDirectory() ?? false;

function rmdirIfEmpty(d: string): boolean {
  try {
    rmdirSync(d);
    return true;
  } catch (e) {
    // not empty (entries meshlane did not make), gone already, or the root of a bpffs mount
    if (isErrno(e, 'ENOTEMPTY') || isErrno(e, 'EEXIST') || isErrno(e, 'ENOENT') || isErrno(e, 'EBUSY')) return false;
    throw e;
  }
}

export interface UninstallReport {
  /** pins detached and removed, relative to --bpffs */
  removed: string[];
  /** entries left alone: not made by meshlane, or not pins it made (a symbolic link, a hard link...) */
  kept: Array<{ rel: string; why: string }>;
  /** the directory held meshlane's maps/ or links/ */
  meshlane: boolean;
  /** --bpffs did not exist */
  absent: boolean;
  /** the --bpffs directory itself was removed (it was meshlane's and is empty now) */
  removedDir: boolean;
}

/**
 * Detach every link and remove every pin and directory that meshlane made under `bpffs`, and nothing
 * else: names outside meshlane's layout, symbolic links and hard links are left alone (and reported), and
 * the --bpffs directory itself goes only if it held meshlane's maps/ or links/ and is empty then. A tree
 * that is not root's alone is refused (someone could swap entries under uninstall), as at start.
 */
export function removePins(bpffs: string): UninstallReport {
  const report: UninstallReport = { removed: [], kept: [], meshlane: false, absent: false, removedDir: false };
  const dir = resolve(bpffs);
  const st = lstatOf(dir);
  if (st === undefined) return { ...report, absent: true };
  const fix = 'pass the --bpffs the agent uses';
  if (st.isSymbolicLink()) throw refused(bpffs, 'is a symbolic link (never followed)', fix);
  if (!st.isDirectory()) throw refused(bpffs, 'is not a directory', fix);
  if (!native.isBpffs(dir)) throw new UserError(`${bpffs} is not on a bpf filesystem: nothing of meshlane can be pinned there; ${fix}`);
  try {
    const tree = checkBpffs(bpffs, 'keep');
    if (!tree) return { ...report, absent: true };
    report.meshlane = tree.meshlane;
    report.kept = [...tree.bad, ...tree.foreign].map(({ rel, why }) => ({ rel, why })).sort((a, b) => a.rel.localeCompare(b.rel));
    if (tree.pins.length) {
      const caps = capsMessage(PIN_CAPS);
      if (caps) throw new UserError(`removing the pins under ${bpffs}: ${caps}`);
    }
    // links first (capture stops), then the maps they used
    for (const pin of [...tree.pins].sort((a, b) => (a.kind === 'map' ? 1 : 0) - (b.kind === 'map' ? 1 : 0))) {
      if (pin.kind === 'map') unlinkSync(pin.path);
      else detachPinnedLink(bpffs, pin.path);
      report.removed.push(pin.rel);
    }
    for (const prog of safeReaddir(netnsLinksDir(dir)))
      if (PROGRAM_PIN.test(prog) && isDir(netnsProgramDir(dir, prog))) rmdirIfEmpty(netnsProgramDir(dir, prog));
    for (const d of [netnsLinksDir(dir), linksDir(dir), mapsDir(dir)]) if (isDir(d)) rmdirIfEmpty(d);
    if (tree.meshlane) report.removedDir = rmdirIfEmpty(dir);
  } catch (e) {
    throw explain(e, `removing ${bpffs}`);
  }
  return report;
}

/** removePins, for callers that only want what was removed. */
export function uninstall(bpffs: string): string[] {
  return removePins(bpffs).removed;
}
