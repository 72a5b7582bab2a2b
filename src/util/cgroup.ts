import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { UserError } from './errors.js';

/**
 * The cgroup2 mount point, from /proc/self/mountinfo (it is /sys/fs/cgroup on most nodes, but not all).
 * Prefers a mount of the hierarchy's root; mountinfo escapes spaces and the like as octal.
 */
export function cgroup2Mount(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string {
  let fallback: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    if (line.slice(sep + 3).split(' ')[0] !== 'cgroup2') continue;
    const mountPoint = pre[4];
    if (mountPoint === undefined) continue;
    const unescaped = mountPoint.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (pre[3] === '/') return unescaped;
    fallback ??= unescaped;
  }
  if (fallback !== undefined) return fallback;
  throw new UserError('no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup) or boot with cgroup v2');
}

/** The cgroup id of a cgroup2 directory (its inode number). */
export function cgroupId(dir: string): bigint {
  return statSync(dir, { bigint: true }).ino;
}

/** Checks that `dir` is a cgroup2 directory; returns it absolute. */
export function checkCgroupDir(dir: string, mount = cgroup2Mount()): string {
  const abs = resolve(dir);
  if (!existsSync(`${abs}/cgroup.procs`) || !(abs === mount || abs.startsWith(`${mount}/`))) {
    throw new UserError(`--cgroup-root ${dir} is not a cgroup v2 directory (cgroup2 is mounted at ${mount}): pass a directory under it`);
  }
  return abs;
}

/** Every pid in a cgroup subtree (cgroup.procs of the directory and all descendants). */
export function pidsUnder(dir: string, limit = 64): number[] {
  const out: number[] = [];
  const walk = (d: string): void => {
    if (out.length >= limit) return;
    try {
      for (const l of readFileSync(`${d}/cgroup.procs`, 'utf8').split('\n')) if (l) out.push(Number(l));
    } catch {
      return;
    }
    let names: string[] = [];
    try {
      names = readdirSyncDirs(d);
    } catch {
      return;
    }
    for (const n of names) walk(`${d}/${n}`);
  };
  walk(dir);
  return out;
}

function readdirSyncDirs(d: string): string[] {
  return readdirSync(d, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}
