// What the agent's start-up needs beyond the pipeline: its directory flags checked before anything is
// read or loaded, the pins under bpffs as they were before start, so a failed start removes exactly
// what it made (and nothing of an earlier, working install), and every start-up failure turned into
// the one line `meshlane: <cause>: <fix>` (the CLI exits 2 with it).
import { accessSync, constants, lstatSync, readdirSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { UserError } from '../util/errors.js';
import { DEFAULT_BPFFS } from '../util/paths.js';

/** The path itself if it exists, else its nearest existing ancestor. */
function nearestExisting(path: string): string {
  let p = resolve(path);
  for (;;) {
    try {
      statSync(p);
      return p;
    } catch {
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}

/**
 * A directory flag must name a directory, or a path that can become one: the path, or its nearest
 * existing ancestor, is a directory (and, for `writable`, one this process may write).
 */
function checkDirFlag(flag: string, path: string, fix: string, writable: boolean): void {
  const at = nearestExisting(path);
  if (!statSync(at).isDirectory()) {
    const what = at === resolve(path) ? `${flag} ${path} is a file, not a directory` : `${flag} ${path}: ${at} is not a directory`;
    throw new UserError(`${what}: ${fix}`);
  }
  if (!writable) return;
  try {
    accessSync(at, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EACCES';
    const why = code === 'EROFS' ? 'is on a read-only filesystem' : `is not writable (${code})`;
    throw new UserError(`${flag} ${path}: ${at} ${why}: ${fix}`);
  }
}

const BPFFS_FIX = `give --bpffs a directory on a bpf filesystem (default ${DEFAULT_BPFFS})`;

/** Before start: --bpffs names a directory or a path that can become one (bpffs may not be mounted yet). */
export function checkBpffsFlag(bpffs: string): void {
  checkDirFlag('--bpffs', bpffs, BPFFS_FIX, false);
}

/** After a failed load: is --bpffs (now mounted) writable? The line that says why not, if it is not. */
export function diagnoseBpffs(bpffs: string): string | undefined {
  try {
    checkDirFlag('--bpffs', bpffs, `${BPFFS_FIX}, or remount it read-write`, true);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Before start: --state-dir is, or can become, a directory this process may write. */
export function checkStateDirFlag(stateDir: string, defaultDir: string): void {
  checkDirFlag('--state-dir', stateDir, `give --state-dir a directory meshlane may write (default ${defaultDir})`, true);
}

/** Every path under `dir` (files, pins and directories, `dir` included), as it is now. */
export function pathsUnder(dir: string): Set<string> {
  const out = new Set<string>();
  const walk = (p: string): void => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    out.add(p);
    if (!st.isDirectory()) return;
    for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
  return out;
}

/**
 * Remove what appeared under `dir` since `before` (pathsUnder): pins first (unpinning a link this
 * start made releases it, which detaches its program), then the directories this start made,
 * deepest first. Paths that were there before are left alone. Returns what was removed.
 */
export function removeNewPaths(dir: string, before: Set<string>): string[] {
  const now = [...pathsUnder(dir)].filter((p) => !before.has(p));
  const isDir = (p: string): boolean => {
    try {
      return lstatSync(p).isDirectory();
    } catch {
      return false;
    }
  };
  const removed: string[] = [];
  for (const p of now.filter((x) => !isDir(x))) {
    try {
      unlinkSync(p);
      removed.push(p);
    } catch {
      /* gone already */
    }
  }
  for (const p of now.filter(isDir).sort((a, b) => b.length - a.length)) {
    try {
      rmdirSync(p);
      removed.push(p);
    } catch {
      /* not empty: holds something that was there before */
    }
  }
  return removed;
}

/** Fixes for system errors a start can meet, by errno. */
function hint(code: string | undefined, step: Step): string {
  switch (code) {
    case 'EROFS':
      return `the filesystem is read-only: ${step.where}`;
    case 'ENOTDIR':
    case 'EEXIST':
    case 'ENOENT':
      return `a path is not what meshlane expects: ${step.where}`;
    case 'E2BIG':
      return step.e2big ?? step.fallback;
    default:
      return step.fallback;
  }
}

export interface Step {
  /** what was being done, e.g. `attaching the programs to cgroup X` */
  what: string;
  /** where to look when a path or the filesystem is the problem */
  where: string;
  /** the fix when E2BIG (too many programs on a hook) */
  e2big?: string;
  fallback: string;
  /** a closer look once the step failed with a system error: a more precise line, if it finds one */
  diagnose?: () => string | undefined;
}

/** Any error of a start-up step as one line (UserErrors are already one line and keep theirs). */
export function startupError(e: unknown, step: Step): UserError {
  if (e instanceof UserError) return e;
  const ne = e as { code?: unknown; syscall?: unknown; message?: unknown };
  const code = typeof ne?.code === 'string' && /^E[A-Z0-9]+$/.test(ne.code) ? ne.code : undefined;
  const cause = code ? `${code}${typeof ne.syscall === 'string' ? ` in ${ne.syscall}` : ''}` : String(ne?.message ?? e);
  const precise = code ? step.diagnose?.() : undefined;
  return new UserError(precise ?? `${step.what} failed (${cause}): ${hint(code, step)}`, { cause: e });
}

/** Run one start-up step; whatever it throws comes out as one line (startupError). */
export function runStep<T>(step: Step, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw startupError(e, step);
  }
}
