// meshlane's bpffs directory: who may touch it, and how its pins are opened.
//
//   <bpffs>/maps/<map>_v<layout version>          every map
//   <bpffs>/links/<program>                        one cgroup link per program
//   <bpffs>/links/netns/<program>/<netns cookie>   one netns link per captured pod
//
// Whoever can write to one of these directories can unpin capture, or plant a link that makes the agent
// (or uninstall) detach another installation's link. So:
//  - every directory meshlane makes is 0700 root, whatever the umask; the bpffs meshlane mounts itself is
//    mounted mode=0700 (as systemd mounts /sys/fs/bpf), nosuid, nodev, noexec;
//  - a directory that exists already (the --bpffs directory, maps/, links/, links/netns/...) must be a real
//    directory (never a symbolic link), owned by root, not writable by group or others; every directory
//    above --bpffs must be root's and writable by others only with the sticky bit (else they could swap
//    the tree); otherwise the start is refused with one line, before anything is loaded or pinned;
//  - a pin is opened through an O_PATH|O_NOFOLLOW descriptor of the name itself, after checking what that
//    descriptor is (a regular file on bpffs, root's, one name only): a symbolic link is never followed and
//    a hard link (a second name of another installation's pin) is refused. bpf_obj_get then gets the
//    object through /proc/self/fd/N, the very inode that was checked: no window between check and use.
//
// Names: meshlane makes only names of its layout (MAP_PIN, PROGRAM_PIN, COOKIE_PIN). Anything else in its
// directories is not meshlane's: the agent and uninstall leave it alone and report it.
import { chmodSync, constants as fsc, fstatSync, lstatSync, mkdirSync, readdirSync, realpathSync, type Stats } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import * as native from '../native/addon.js';
import { BpfError } from '../native/errors.js';
import { UserError } from '../util/errors.js';
import { DEFAULT_BPFFS } from '../util/paths.js';

export const mapsDir = (bpffs: string): string => join(bpffs, 'maps');
export const linksDir = (bpffs: string): string => join(bpffs, 'links');
export const netnsLinksDir = (bpffs: string): string => join(linksDir(bpffs), 'netns');
export const netnsProgramDir = (bpffs: string, program: string): string => join(netnsLinksDir(bpffs), program);

/** maps/<map>_v<N>: a map of some layout version (current or not) */
export const MAP_PIN = /^[a-z][a-z0-9_]*_v[0-9]+$/;
/** links/<program>, links/netns/<program>/: every program of meshlane is called meshlane_* */
export const PROGRAM_PIN = /^meshlane_[a-z0-9_]+$/;
/** links/netns/<program>/<netns cookie> */
export const COOKIE_PIN = /^[1-9][0-9]*$/;

export const DIR_MODE = 0o700;
/** mount(2) data of the bpffs meshlane mounts (systemd mounts /sys/fs/bpf the same way) */
export const MOUNT_DATA = 'mode=0700';
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
export const MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC;

const GROUP_OTHER_WRITE = 0o022;
const STICKY = 0o1000;
const O_PATH = 0o10000000; // not in node's fs.constants

const euid = (): number => process.geteuid?.() ?? 0;
const isOurs = (uid: number): boolean => uid === euid() || uid === 0;
const isErrnoCode = (e: unknown, code: string): boolean => (e as NodeJS.ErrnoException | undefined)?.code === code;
const modeOf = (st: Stats): string => (st.mode & 0o7777).toString(8).padStart(4, '0');

/** A UserError about the --bpffs tree: `--bpffs <dir>: <what is wrong>: <fix>`. */
export function refused(bpffs: string, what: string, fix = FIX_TREE): UserError {
  return new UserError(`--bpffs ${bpffs}: ${what}: ${fix}`);
}
const FIX_TREE =
  "only root may make or change anything in meshlane's tree: check what it holds, remove it, and start again (meshlane makes its directories itself, mode 0700)";
const FIX_ROOT = `pass a --bpffs that root owns and only root can write to, or one that does not exist yet (meshlane makes it, mode 0700; default ${DEFAULT_BPFFS})`;
const FIX_PARENT = `others could swap the tree: pass a --bpffs whose parents only root can write to (default ${DEFAULT_BPFFS})`;

/** `path` relative to the --bpffs dir, for messages (`links/meshlane_connect4`; `it` for the dir itself). */
function rel(bpffs: string, path: string): string {
  const root = resolve(bpffs);
  return path === root ? 'it' : path.startsWith(root + sep) ? path.slice(root.length + 1) : path;
}

/** What is wrong with a directory of meshlane's tree as lstat sees it, or undefined. */
function dirProblem(st: Stats): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link (never followed)';
  if (!st.isDirectory()) return 'is not a directory';
  if (!isOurs(st.uid)) return `is owned by uid ${st.uid}, not root`;
  if (st.mode & GROUP_OTHER_WRITE) return `is writable by group or others (mode ${modeOf(st)})`;
  return undefined;
}

/** What is wrong with a pin as lstat (or fstat of an O_PATH descriptor) sees it, or undefined. */
export function pinProblem(st: Stats): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link (never followed)';
  if (!st.isFile()) return 'is not a pin';
  if (!isOurs(st.uid)) return `is owned by uid ${st.uid}, not root`;
  if (st.nlink !== 1) return `has ${st.nlink} names (a hard link, maybe to another installation's pin)`;
  return undefined;
}

/** undefined: nothing there (ENOENT; ENOTDIR, a file where a directory of the path should be). Asked without
 * an exception for a missing name: it is the common answer where pods' links are made (makeDir, present), and
 * an exception (its stack trace) made a missing name cost 12 µs against 2 µs here. */
function lstatOrUndefined(path: string): Stats | undefined {
  return lstatSync(path, { throwIfNoEntry: false });
}

/**
 * Every existing directory above `dir` must be root's, and writable by others only with the sticky bit
 * (/tmp, a 1777 /sys/fs/bpf): else someone else could rename the tree away and put their own in its place.
 * A symbolic link on the way must be root's; its target's parents are checked the same way.
 */
function checkParents(bpffs: string, dir: string, seen = new Set<string>()): void {
  const parts = dir.split(sep).filter(Boolean);
  let p: string = sep;
  for (let i = 0; i < parts.length; i++) {
    const st = lstatOrUndefined(p);
    if (st === undefined) return; // made by meshlane below here
    if (st.isSymbolicLink()) {
      if (!isOurs(st.uid)) throw refused(bpffs, `${p} on its way is a symbolic link of uid ${st.uid}`, FIX_PARENT);
      const real = realpathSync(p);
      if (!seen.has(real)) {
        seen.add(real);
        checkParents(bpffs, join(real, 'x'), seen); // real itself and every directory above it
      }
    } else {
      checkParent(bpffs, p, st);
    }
    p = join(p, parts[i]!);
  }
}

function checkParent(bpffs: string, p: string, st: Stats): void {
  if (!st.isDirectory()) throw refused(bpffs, `${p} on its way is not a directory`, FIX_PARENT);
  if (!isOurs(st.uid)) throw refused(bpffs, `its parent ${p} is owned by uid ${st.uid}, not root`, FIX_PARENT);
  if (st.mode & GROUP_OTHER_WRITE && !(st.mode & STICKY)) {
    throw refused(bpffs, `its parent ${p} is writable by group or others without the sticky bit (mode ${modeOf(st)})`, FIX_PARENT);
  }
}

/** A directory of meshlane's tree that may exist: true when it does and is fine, false when absent. */
function checkDir(bpffs: string, dir: string): boolean {
  const st = lstatOrUndefined(dir);
  if (st === undefined) return false;
  const p = dirProblem(st);
  if (p) throw refused(bpffs, `${rel(bpffs, dir)} ${p}`, dir !== resolve(bpffs) ? FIX_TREE : !st.isDirectory() && !st.isSymbolicLink() ? FIX_FILE : FIX_ROOT);
  return true;
}
const FIX_FILE = `pass a directory (on bpffs; meshlane makes it if missing, default ${DEFAULT_BPFFS})`;

/**
 * Make `dir` (0700, whatever the umask) unless it exists; either way it must then pass checkDir (a name
 * someone else made first is refused). Returns true when this call made it.
 */
export function makeDir(bpffs: string, dir: string): boolean {
  if (checkDir(bpffs, dir)) return false; // there already (the common case: no mkdir to fail with EEXIST)
  let made = false;
  try {
    mkdirSync(dir, { mode: DIR_MODE });
    made = true;
  } catch (e) {
    if (!isErrnoCode(e, 'EEXIST')) throw e;
  }
  if (made) chmodSync(dir, DIR_MODE); // the umask does not decide; nobody else can replace it meanwhile (checked parent)
  checkDir(bpffs, dir);
  return made;
}

/** One entry of meshlane's tree. */
export interface TreeEntry {
  /** relative to --bpffs, e.g. links/netns/meshlane_sk_lookup/4097 */
  rel: string;
  path: string;
}

export interface PinEntry extends TreeEntry {
  kind: 'map' | 'link' | 'netns-link';
  /** map pin name, program name */
  name: string;
}

export interface Tree {
  /** entries with meshlane's names that are pins meshlane made */
  pins: PinEntry[];
  /** entries with meshlane's names that are not such pins (a symbolic link, a hard link, another owner's) */
  bad: Array<TreeEntry & { why: string }>;
  /** entries meshlane did not make (names outside its layout): left alone */
  foreign: Array<TreeEntry & { why: string }>;
  /** maps/ or links/ exist: the directory looks like meshlane's */
  meshlane: boolean;
}

function entries(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    if (isErrnoCode(e, 'ENOENT')) return [];
    throw e;
  }
}

/**
 * Every entry of meshlane's tree under `bpffs` (which must exist and be a directory), classified, without
 * following anything. Its directories are checked as they are entered: one that is not root's alone throws.
 */
export function scanTree(bpffs: string): Tree {
  const root = resolve(bpffs);
  const tree: Tree = { pins: [], bad: [], foreign: [], meshlane: false };
  const entry = (path: string, kind: PinEntry['kind'], name: string, st: Stats): void => {
    const why = pinProblem(st);
    if (why) tree.bad.push({ rel: rel(root, path), path, why });
    else tree.pins.push({ rel: rel(root, path), path, kind, name });
  };
  const foreign = (path: string, st: Stats): void => {
    tree.foreign.push({
      rel: rel(root, path),
      path,
      why: st.isSymbolicLink()
        ? 'is a symbolic link (never followed)'
        : st.isDirectory()
          ? 'is a directory meshlane did not make'
          : "has a name outside meshlane's layout",
    });
  };
  if (checkDir(bpffs, mapsDir(root))) {
    tree.meshlane = true;
    for (const f of entries(mapsDir(root))) {
      const path = join(mapsDir(root), f);
      const st = lstatSync(path);
      if (MAP_PIN.test(f)) entry(path, 'map', f, st);
      else foreign(path, st);
    }
  }
  if (checkDir(bpffs, linksDir(root))) {
    tree.meshlane = true;
    for (const f of entries(linksDir(root))) {
      const path = join(linksDir(root), f);
      const st = lstatSync(path);
      if (f === 'netns' && checkDir(bpffs, path)) {
        for (const prog of entries(path)) {
          const pdir = join(path, prog);
          const pst = lstatSync(pdir);
          if (!PROGRAM_PIN.test(prog)) {
            foreign(pdir, pst);
            continue;
          }
          checkDir(bpffs, pdir);
          for (const c of entries(pdir)) {
            const cpath = join(pdir, c);
            const cst = lstatSync(cpath);
            if (COOKIE_PIN.test(c)) entry(cpath, 'netns-link', prog, cst);
            else foreign(cpath, cst);
          }
        }
      } else if (PROGRAM_PIN.test(f)) entry(path, 'link', f, st);
      else foreign(path, st);
    }
  }
  return tree;
}

/**
 * Everything that can refuse the --bpffs tree without writing anything: its parents, the directory itself
 * and, if it exists on bpffs, every directory of meshlane's in it and (unless `bad` is 'keep') every entry
 * with a name of meshlane's that is not a pin it made. Returns the tree when there is one (undefined:
 * nothing there yet, or not on bpffs yet: meshlane mounts bpffs there).
 */
export function checkBpffs(bpffs: string, bad: 'refuse' | 'keep' = 'refuse'): Tree | undefined {
  const dir = resolve(bpffs);
  checkParents(bpffs, dir);
  if (!checkDir(bpffs, dir)) return undefined;
  if (!native.isBpffs(dir)) return undefined;
  const tree = scanTree(bpffs);
  if (bad === 'keep') return tree;
  return refuseBad(bpffs, tree);
}

function refuseBad(bpffs: string, tree: Tree): Tree {
  const bad = tree.bad[0];
  if (bad) {
    const more = tree.bad.length > 1 ? ` (and ${tree.bad.length - 1} more)` : '';
    throw refused(bpffs, `${bad.rel} ${bad.why}${more}`, `meshlane's directories hold only pins meshlane made: check what it is, remove it, and start again`);
  }
  return tree;
}

/** Is `dir` (or its nearest existing ancestor) on a bpf filesystem? */
export function onBpffs(dir: string): boolean {
  let probe = resolve(dir);
  while (lstatOrUndefined(probe) === undefined) probe = dirname(probe);
  return native.isBpffs(probe);
}

export interface Prepared {
  /** directories this call made (the ones a failed start may take away again), deepest last */
  made: string[];
  /** where this call mounted bpffs, if it did */
  mounted?: string;
  tree: Tree;
}

/**
 * Make sure the --bpffs tree is there and root's alone: checks (checkBpffs), mounts bpffs (mode 0700) at
 * /sys/fs/bpf, or at `bpffs` itself outside /sys/fs/bpf, when it is not on one, and makes the missing
 * directories 0700. `mount` does the mounting (the caller explains its failures).
 */
export function prepareBpffs(bpffs: string, mount: (at: string) => void): Prepared {
  const dir = resolve(bpffs);
  checkBpffs(bpffs);
  const made: string[] = [];
  let mounted: string | undefined;
  const makeDown = (to: string): void => {
    const missing: string[] = [];
    for (let p = to; lstatOrUndefined(p) === undefined; p = dirname(p)) missing.unshift(p);
    for (const p of missing) if (makeDir(bpffs, p)) made.push(p);
  };
  if (!onBpffs(dir)) {
    const mountAt = dir === '/sys/fs/bpf' || dir.startsWith('/sys/fs/bpf/') ? '/sys/fs/bpf' : dir;
    makeDown(mountAt);
    mount(mountAt);
    mounted = mountAt;
  }
  makeDown(dir);
  checkDir(bpffs, dir);
  if (!native.isBpffs(dir)) throw refused(bpffs, 'is not on a bpf filesystem', `pass a directory under a bpffs mount (default ${DEFAULT_BPFFS})`);
  for (const d of [mapsDir(dir), linksDir(dir)]) if (makeDir(bpffs, d)) made.push(d);
  const tree = checkBpffs(bpffs);
  if (!tree) throw new Error(`${dir} vanished while it was prepared`);
  return { made, mounted, tree };
}

/**
 * Open the pin at `path` without following it: an O_PATH|O_NOFOLLOW descriptor of the name itself is
 * checked (pinProblem) and bpf_obj_get opens that very inode through /proc/self/fd. Throws a UserError
 * naming the problem, or the addon's BpfError (ENOENT when there is no pin).
 */
export function openPin<T extends native.Fd>(bpffs: string, path: string, open: (p: string) => T): T {
  let o: native.Fd;
  try {
    o = native.openPath(path, O_PATH | fsc.O_NOFOLLOW);
  } catch (e) {
    if (e instanceof BpfError && e.code === 'ELOOP') throw refused(bpffs, `${rel(bpffs, path)} is a symbolic link (never followed)`);
    throw e;
  }
  try {
    const why = pinProblem(fstatSync(o.fd));
    if (why) throw refused(bpffs, `${rel(bpffs, path)} ${why}`, `meshlane opens only pins it made: check what it is and remove it`);
    const proc = `/proc/self/fd/${o.fd}`;
    try {
      return open(proc);
    } catch (e) {
      if (e instanceof BpfError) {
        throw new BpfError(e.message.replace(proc, path), { errno: e.errno, code: e.code, syscall: e.syscall, path }, { cause: e });
      }
      throw e;
    }
  } finally {
    o.close();
  }
}

/** Is there anything at `path` (not following it)? */
export const present = (path: string): boolean => lstatOrUndefined(path) !== undefined;
