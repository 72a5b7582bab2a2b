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
import { MAPS, MAP_NAMES, type MapDef, type MapName } from './layouts.js';
import { OBJECTS, netnsPrograms, staticPrograms } from './programs.js';
import { TypedMap } from './typed-map.js';
import { requireFeatures } from './features.js';
import { MapType } from './uapi.js';
import { UserError, isErrno } from '../util/errors.js';
import { cgroupId, checkCgroupDir } from '../util/cgroup.js';
import { packageRoot } from '../util/paths.js';
import type { Logger } from '../util/log.js';

export type MapsView = { [K in MapName]: TypedMap<any, any> };

export const mapPinName = (def: MapDef): string => `${def.name}_v${def.version}`;
export const mapsDir = (bpffs: string): string => join(bpffs, 'maps');
export const linksDir = (bpffs: string): string => join(bpffs, 'links');

const PRIVILEGE_HINT = 'run meshlane as root (it needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)';

/** Turns errors a user can cause into one clear line; anything else passes through. */
export function explain(e: unknown, what: string): unknown {
  if (e instanceof UserError) return e;
  const ne = e as native.NativeError;
  // libbpf reports a verifier refusal as EACCES: look for the program first.
  if (ne?.program) {
    return new UserError(
      `${what}: the verifier of kernel ${release()} refused program '${ne.program}' (${ne.message}); the kernel passed meshlane's feature checks, so please report this with the output of MESHLANE_DEBUG=1`,
      { cause: e },
    );
  }
  if (isErrno(e, 'EPERM') || isErrno(e, 'EACCES')) return new UserError(`${what}: permission denied (${ne.syscall ?? ne.message}): ${PRIVILEGE_HINT}`, { cause: e });
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
}

export class Dataplane {
  private readonly objects: native.BpfObject[] = [];
  private readonly progFds = new Map<string, number>();
  /** netns link pins already pointing at this load's program */
  private readonly netnsDone = new Map<string, number>();
  readonly maps: MapsView;
  /** maps this load created (not found pinned): they start empty */
  readonly created: MapName[] = [];

  private constructor(
    readonly bpffs: string,
    private readonly log?: Logger,
    objDir = join(packageRoot(), 'bpf', 'build'),
  ) {
    const fds = new Map<string, number>();
    const pinnedFds: number[] = [];
    try {
      for (const o of OBJECTS) {
        const path = join(objDir, o.file);
        if (!existsSync(path)) throw new UserError(`BPF object ${path} is missing: run the setup command from the README (npm run build)`);
        const obj = new native.BpfObject(path);
        this.objects.push(obj);
        for (const spec of obj.maps()) {
          const def = (MAPS as Record<string, MapDef>)[spec.name];
          if (!def) continue; // .rodata / .bss of the object itself
          if (spec.keySize !== def.key.size || spec.valueSize !== def.value.size) {
            throw new Error(`map ${spec.name} in ${o.file}: key/value ${spec.keySize}/${spec.valueSize} bytes, layouts.ts says ${def.key.size}/${def.value.size}`);
          }
          let fd = fds.get(def.name);
          if (fd === undefined) {
            const pin = join(mapsDir(bpffs), mapPinName(def));
            if (existsSync(pin)) {
              fd = native.objGet(pin);
              pinnedFds.push(fd);
              const info = native.mapInfo(fd);
              if (info.type !== spec.type || info.keySize !== spec.keySize || info.valueSize !== spec.valueSize || (info.maxEntries !== spec.maxEntries && spec.type !== MapType.SK_STORAGE)) {
                throw new UserError(`pinned map ${pin} does not match its layout version: remove it with 'meshlane uninstall --bpffs ${bpffs}'`);
              }
            }
          }
          if (fd !== undefined) obj.reuseMap(def.name, fd);
        }
        obj.load();
        for (const spec of obj.maps()) {
          const def = (MAPS as Record<string, MapDef>)[spec.name];
          if (!def || fds.has(def.name)) continue;
          const fd = obj.mapFd(def.name);
          const pin = join(mapsDir(bpffs), mapPinName(def));
          if (!existsSync(pin)) {
            native.pin(fd, pin);
            this.created.push(def.name as MapName);
          }
          fds.set(def.name, fd);
        }
        for (const p of o.programs) this.progFds.set(p.name, obj.programFd(p.name));
      }
    } catch (e) {
      this.close();
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
    } finally {
      // the objects hold their own fds for reused maps
      for (const fd of pinnedFds) native.close(fd);
    }
    const view: Partial<MapsView> = {};
    for (const name of MAP_NAMES) {
      const fd = fds.get(name);
      if (fd === undefined) throw new Error(`map ${name} is in layouts.ts but in none of the objects`);
      view[name] = new TypedMap(MAPS[name], fd);
    }
    this.maps = view as MapsView;
  }

  /** Load the objects, reusing (or creating and pinning) the maps under `bpffs`. */
  static load(opts: LoadOptions): Dataplane {
    try {
      requireFeatures();
      ensureBpffs(opts.bpffs);
      return new Dataplane(opts.bpffs, opts.log, opts.objDir);
    } catch (e) {
      throw explain(e, 'loading the BPF programs');
    }
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
    let cgFd = -1;
    try {
      cgFd = native.openPath(dir);
      for (const p of staticPrograms()) {
        const progFd = this.progFds.get(p.name)!;
        if (p.attach.kind === 'sockmap') {
          native.progAttach(progFd, this.maps[p.attach.map].fd, p.attach.type);
          report.push({ program: p.name, action: 'attached' });
          continue;
        }
        const pin = join(linksDir(this.bpffs), p.name);
        if (existsSync(pin)) {
          updatePinnedLink(pin, progFd, wantId, `the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`);
          report.push({ program: p.name, action: 'updated' });
        } else {
          const linkFd = native.attachCgroup(progFd, cgFd, p.attach.type);
          try {
            native.pin(linkFd, pin);
          } finally {
            native.close(linkFd);
          }
          report.push({ program: p.name, action: 'attached' });
        }
        this.log?.debug({ program: p.name, cgroup: dir }, 'program attached');
      }
    } catch (e) {
      throw explain(e, `attaching to cgroup ${dir}`);
    } finally {
      if (cgFd >= 0) native.close(cgFd);
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
    for (const p of staticPrograms()) {
      const pin = join(linksDir(this.bpffs), p.name);
      if (p.attach.kind !== 'cgroup' || !existsSync(pin)) continue;
      const fd = native.objGet(pin);
      try {
        const id = native.linkInfo(fd).cgroupId;
        if (id !== undefined && BigInt(id) !== wantId) {
          throw new UserError(`the pinned link ${pin} is attached to another cgroup than ${dir}: run 'meshlane uninstall --bpffs ${this.bpffs}' first, or use the same --cgroup-root`);
        }
      } finally {
        native.close(fd);
      }
    }
  }

  /** Detach a sockmap program (the map stays). */
  detachSockmapPrograms(): void {
    for (const p of staticPrograms()) {
      if (p.attach.kind !== 'sockmap') continue;
      try {
        native.progDetach(this.progFds.get(p.name)!, this.maps[p.attach.map].fd, p.attach.type);
      } catch {
        /* not attached */
      }
    }
  }

  /**
   * Make sure every netns program is attached to the network namespace `nsPath` (a pod's), through a
   * link pinned under links/netns/<program>/<cookie>; an existing pin gets the current program.
   */
  attachNetns(nsPath: string, cookie: bigint): void {
    for (const p of netnsPrograms()) {
      const dir = join(linksDir(this.bpffs), 'netns', p.name);
      const pin = join(dir, cookie.toString());
      const progFd = this.progFds.get(p.name)!;
      if (existsSync(pin)) {
        if (this.netnsDone.get(pin) === progFd) continue;
        updatePinnedLink(pin, progFd, undefined, '');
      } else {
        mkdirSync(dir, { recursive: true });
        const nsFd = native.openPath(nsPath);
        try {
          const linkFd = native.attachNetns(progFd, nsFd, p.attach.type);
          try {
            native.pin(linkFd, pin);
          } finally {
            native.close(linkFd);
          }
        } finally {
          native.close(nsFd);
        }
      }
      this.netnsDone.set(pin, progFd);
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
    const wantLinks = new Set([...staticPrograms().map((p) => p.name), 'netns']);
    for (const f of safeReaddir(linksDir(this.bpffs))) {
      if (!wantLinks.has(f)) {
        detachPinnedLink(join(linksDir(this.bpffs), f));
        removed.push(`links/${f}`);
      }
    }
    return removed;
  }

  close(): void {
    for (const o of this.objects.splice(0)) o.close();
  }
}

function safeReaddir(d: string): string[] {
  try {
    return readdirSync(d).sort();
  } catch {
    return [];
  }
}

/** Swap the program behind a pinned link (bpf_link_update: no moment without a program). */
function updatePinnedLink(pin: string, progFd: number, wantCgroupId: bigint | undefined, mismatch: string): void {
  const linkFd = native.objGet(pin);
  try {
    const info = native.linkInfo(linkFd);
    if (wantCgroupId !== undefined && info.cgroupId !== undefined && BigInt(info.cgroupId) !== wantCgroupId) throw new UserError(mismatch);
    native.linkUpdate(linkFd, progFd);
  } finally {
    native.close(linkFd);
  }
}

function detachPinnedLink(pin: string): void {
  const fd = native.objGet(pin);
  try {
    native.linkDetach(fd);
  } catch (e) {
    // a netns link whose namespace is gone is already defunct: only the pin is left
    if (!isErrno(e, 'ENOLINK') && !isErrno(e, 'EINVAL')) throw e;
  } finally {
    native.close(fd);
  }
  unlinkSync(pin);
}

/** The pinned maps alone (no programs), for dump and status; works with no agent running. */
export class PinnedMaps {
  readonly maps: Partial<MapsView> = {};
  readonly missing: MapName[] = [];
  private readonly fds: number[] = [];

  constructor(readonly bpffs: string) {
    try {
      for (const name of MAP_NAMES) {
        const pin = join(mapsDir(bpffs), mapPinName(MAPS[name]));
        if (!existsSync(pin)) {
          this.missing.push(name);
          continue;
        }
        const fd = native.objGet(pin);
        this.fds.push(fd);
        this.maps[name] = new TypedMap(MAPS[name], fd);
      }
    } catch (e) {
      this.close();
      throw explain(e, `reading the pinned maps under ${bpffs}`);
    }
  }

  close(): void {
    for (const fd of this.fds.splice(0)) native.close(fd);
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
