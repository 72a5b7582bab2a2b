// The loader: opens the BPF objects, gives every object the same pinned maps, loads the programs and
// keeps them attached through pinned bpf_links. Everything it makes is pinned under one bpffs
// directory, so it outlives the agent:
//
//   <bpffs>/maps/<map>_v<layout version>   every map (see layouts.ts)
//   <bpffs>/links/<program>                 one cgroup link per program
//
// A (re)started agent reuses the pinned maps of the same layout version and swaps the programs behind
// the pinned links with bpf_link_update: capture never stops. Maps of another layout version are new
// maps; the agent fills them before it swaps the programs and removes the old pins after.
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, unlinkSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import * as native from '../native/addon.js';
import { BpfError, VerifierError } from '../native/errors.js';
import { BpfLink, BpfObject, type BpfProgram } from '../native/handles.js';
import { MAPS, MAP_NAMES, type MapDef, type MapName } from './layouts.js';
import { objectsFor, netnsPrograms, staticPrograms, type ObjectDef } from './programs.js';
import { typedMap, type KeyOf, type TypedMap, type ValueOf } from './typed-map.js';
import { requireFeatures } from './features.js';
import { MapType } from './uapi.js';
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
export const mapsDir = (bpffs: string): string => join(bpffs, 'maps');
export const linksDir = (bpffs: string): string => join(bpffs, 'links');

const PRIVILEGE_HINT = 'run meshlane as root (it needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)';

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
    return new UserError(`${what}: permission denied (${e.syscall}): ${PRIVILEGE_HINT}`, { cause: e });
  }
  return e;
}


/** Is `dir` (or its nearest existing ancestor) on a bpf filesystem? */
export function onBpffs(dir: string): boolean {
  let probe = dir;
  while (!existsSync(probe)) probe = dirname(probe);
  return native.isBpffs(probe);
}

/** Make sure `dir` is on a bpf filesystem, mounting bpffs at /sys/fs/bpf (or at `dir`) if needed. */
export function ensureBpffs(dir: string): void {
  if (!onBpffs(dir)) {
    const mountAt = dir.startsWith('/sys/fs/bpf/') || dir === '/sys/fs/bpf' ? '/sys/fs/bpf' : dir;
    try {
      mkdirSync(mountAt, { recursive: true });
      native.mountBpffs(mountAt);
    } catch (e) {
      if (isErrno(e, 'EPERM') || isErrno(e, 'EACCES')) {
        throw new UserError(`bpffs is not mounted at ${mountAt} and meshlane may not mount it: ${PRIVILEGE_HINT}, or mount it with 'mount -t bpf bpf ${mountAt}'`);
      }
      throw new UserError(`bpffs is not mounted at ${mountAt} and mounting it failed (${(e as Error).message}): mount it with 'mount -t bpf bpf ${mountAt}'`);
    }
  }
  mkdirSync(mapsDir(dir), { recursive: true });
  mkdirSync(linksDir(dir), { recursive: true });
}

export interface LoadOptions {
  bpffs: string;
  objDir?: string;
  log?: Logger;
  /** load splice.bpf.o (and attach its programs): only when this kernel can bound the splice backlog
   * (src/dataplane/splice.ts); default false */
  splice?: boolean;
}

export class Dataplane {
  private readonly programs = new Map<string, BpfProgram>();
  /** netns link pins already pointing at this load's program */
  private readonly netnsDone = new Map<string, BpfProgram>();
  readonly maps: MapsView;
  /** maps this load created (not found pinned): they start empty */
  readonly created: MapName[] = [];

  /** the objects this load took (the splice object only when asked for) */
  private readonly objects: ObjectDef[];

  private constructor(
    readonly bpffs: string,
    private readonly log?: Logger,
    objDir = join(packageRoot(), 'bpf', 'build'),
    splice = false,
  ) {
    this.objects = objectsFor(splice);
    // The loader keeps handles only: one per map (the pinned map, or the first object's), one per
    // program; every object is closed once its handles are taken.
    const handles = new Map<MapName, native.MapFd>();
    try {
      for (const o of this.objects) {
        const path = join(objDir, o.file);
        if (!existsSync(path)) throw new UserError(`BPF object ${path} is missing: run the setup command from the README (npm run build)`);
        using obj = new BpfObject(path);
        for (const spec of obj.maps()) {
          if (!isMapName(spec.name)) continue; // .rodata / .bss of the object itself
          const def: MapDef = MAPS[spec.name];
          if (spec.keySize !== def.key.size || spec.valueSize !== def.value.size) {
            throw new Error(`map ${spec.name} in ${o.file}: key/value ${spec.keySize}/${spec.valueSize} bytes, layouts.ts says ${def.key.size}/${def.value.size}`);
          }
          let map = handles.get(spec.name);
          if (map === undefined) {
            const pin = join(mapsDir(bpffs), mapPinName(def));
            if (existsSync(pin)) {
              map = native.openMap(pin);
              handles.set(spec.name, map);
              const info = map.info;
              if (info.type !== spec.type || info.keySize !== spec.keySize || info.valueSize !== spec.valueSize || (info.maxEntries !== spec.maxEntries && spec.type !== MapType.SK_STORAGE)) {
                throw new UserError(`pinned map ${pin} does not match its layout version: remove it with 'meshlane uninstall --bpffs ${bpffs}'`);
              }
            }
          }
          if (map !== undefined) obj.reuseMap(spec.name, map);
        }
        obj.load();
        for (const spec of obj.maps()) {
          if (!isMapName(spec.name) || handles.has(spec.name)) continue;
          const map = obj.map(spec.name);
          handles.set(spec.name, map);
          const pin = join(mapsDir(bpffs), mapPinName(MAPS[spec.name]));
          if (!existsSync(pin)) {
            native.pin(map, pin);
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
      this.maps = view as MapsView;
    } catch (e) {
      for (const map of handles.values()) map.close();
      this.closePrograms();
      // a failed load leaves nothing of its own behind: the pins it made, and the directories if empty
      for (const name of this.created.splice(0)) rmSync(join(mapsDir(bpffs), mapPinName(MAPS[name])), { force: true });
      for (const d of [mapsDir(bpffs), linksDir(bpffs), bpffs]) {
        try {
          rmdirSync(d);
        } catch {
          /* not empty: pins of an earlier, working install */
        }
      }
      throw e;
    }
  }

  /** Load the objects, reusing (or creating and pinning) the maps under `bpffs`. */
  static load(opts: LoadOptions): Dataplane {
    try {
      requireFeatures();
      ensureBpffs(opts.bpffs);
      return new Dataplane(opts.bpffs, opts.log, opts.objDir, opts.splice ?? false);
    } catch (e) {
      throw explain(e, 'loading the BPF programs');
    }
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
        if (existsSync(pin)) {
          updatePinnedLink(pin, prog, wantId, `the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`);
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
        throw new UserError(`the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`);
      }
    }
  }

  /**
   * Make sure every netns program is attached to the network namespace `nsPath` (a pod's), through a
   * link pinned under links/netns/<program>/<cookie>; an existing pin gets the current program.
   */
  attachNetns(nsPath: string, cookie: bigint): void {
    for (const p of netnsPrograms(this.objects)) {
      const dir = join(linksDir(this.bpffs), 'netns', p.name);
      const pin = join(dir, cookie.toString());
      const prog = this.program(p.name);
      if (existsSync(pin)) {
        if (this.netnsDone.get(pin) === prog) continue;
        updatePinnedLink(pin, prog, undefined, '');
      } else {
        mkdirSync(dir, { recursive: true });
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
    for (const p of netnsPrograms()) for (const f of safeReaddir(join(linksDir(this.bpffs), 'netns', p.name))) out.add(BigInt(f));
    return [...out];
  }

  /** Detach and unpin the netns links of a pod (gone or no longer captured). */
  detachNetns(cookie: bigint): void {
    for (const p of netnsPrograms()) {
      const pin = join(linksDir(this.bpffs), 'netns', p.name, cookie.toString());
      if (existsSync(pin)) detachPinnedLink(pin);
      this.netnsDone.delete(pin);
    }
  }

  /** Remove pins that no longer belong: maps of other layout versions, links of programs that are gone. */
  removeStalePins(): string[] {
    const removed: string[] = [];
    const wantMaps = new Set(MAP_NAMES.map((n) => mapPinName(MAPS[n])));
    for (const f of safeReaddir(mapsDir(this.bpffs))) {
      if (!wantMaps.has(f)) {
        unlinkSync(join(mapsDir(this.bpffs), f));
        removed.push(`maps/${f}`);
      }
    }
    const wantLinks = new Set([...staticPrograms(this.objects).map((p) => p.name), 'netns']);
    for (const f of safeReaddir(linksDir(this.bpffs))) {
      if (!wantLinks.has(f)) {
        detachPinnedLink(join(linksDir(this.bpffs), f));
        removed.push(`links/${f}`);
      }
    }
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

/** Swap the program behind a pinned link (bpf_link_update: no moment without a program). */
function updatePinnedLink(pin: string, prog: BpfProgram, wantCgroupId: bigint | undefined, mismatch: string): void {
  using link = BpfLink.open(pin);
  const info = link.info();
  if (wantCgroupId !== undefined && info.cgroupId !== undefined && BigInt(info.cgroupId) !== wantCgroupId) throw new UserError(mismatch);
  link.update(prog);
}

function detachPinnedLink(pin: string): void {
  {
    using link = BpfLink.open(pin);
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
        if (!existsSync(pin)) {
          this.missing.push(name);
          continue;
        }
        const map = native.openMap(pin);
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

/** What is pinned under `bpffs`: link and map pin names. */
export function listPins(bpffs: string): { links: string[]; maps: string[] } {
  const links: string[] = [];
  for (const f of safeReaddir(linksDir(bpffs))) {
    if (f !== 'netns') links.push(f);
    else for (const prog of safeReaddir(join(linksDir(bpffs), f))) for (const c of safeReaddir(join(linksDir(bpffs), f, prog))) links.push(`netns/${prog}/${c}`);
  }
  return { links, maps: safeReaddir(mapsDir(bpffs)) };
}

/** Detach every pinned link and remove every pin and directory meshlane made under `bpffs`. */
export function uninstall(bpffs: string): string[] {
  const removed: string[] = [];
  if (!existsSync(bpffs)) return removed;
  try {
    for (const f of safeReaddir(linksDir(bpffs))) {
      if (f === 'netns') continue;
      detachPinnedLink(join(linksDir(bpffs), f));
      removed.push(`links/${f}`);
    }
    const netns = join(linksDir(bpffs), 'netns');
    for (const prog of safeReaddir(netns)) {
      for (const c of safeReaddir(join(netns, prog))) {
        detachPinnedLink(join(netns, prog, c));
        removed.push(`links/netns/${prog}/${c}`);
      }
      rmdirSync(join(netns, prog));
    }
    if (existsSync(netns)) rmdirSync(netns);
    for (const f of safeReaddir(mapsDir(bpffs))) {
      unlinkSync(join(mapsDir(bpffs), f));
      removed.push(`maps/${f}`);
    }
    for (const d of [linksDir(bpffs), mapsDir(bpffs), bpffs]) if (existsSync(d)) rmdirSync(d);
  } catch (e) {
    throw explain(e, `removing ${bpffs}`);
  }
  return removed;
}
