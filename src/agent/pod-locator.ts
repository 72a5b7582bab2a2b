// Finds a pod's network namespace from its cgroup, the way kubelet lays pods out:
//   systemd driver:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice
//                    (Guaranteed: kubepods.slice/kubepods-pod<uid_>.slice)
//   cgroupfs driver: kubepods/<qos>/pod<uid>   (Guaranteed: kubepods/pod<uid>)
// Any process in the pod's cgroup subtree (the pause container at least) lives in the pod's netns;
// its netns cookie is what the BPF programs key pods by.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as native from '../native/addon.js';
import { pidsUnder } from '../util/cgroup.js';
import type { QosClass } from '../model/types.js';

export function podCgroupCandidates(root: string, uid: string, qos: QosClass): string[] {
  const q = qos.toLowerCase();
  const u = uid.replace(/-/g, '_');
  return qos === 'Guaranteed'
    ? [join(root, 'kubepods.slice', `kubepods-pod${u}.slice`), join(root, 'kubepods', `pod${uid}`)]
    : [join(root, 'kubepods.slice', `kubepods-${q}.slice`, `kubepods-${q}-pod${u}.slice`), join(root, 'kubepods', q, `pod${uid}`)];
}

export type Location =
  | { found: true; netnsCookie: bigint; pid: number; cgroup: string }
  | { found: false; reason: string };

interface Cached {
  pid: number;
  nsIno: bigint;
  cookie: bigint;
  cgroup: string;
}

export class PodLocator {
  private readonly cache = new Map<string, Cached>();
  private readonly hostCookie: bigint;

  constructor(private readonly cgroupRoot: string) {
    this.hostCookie = native.netnsCookie('/proc/self/ns/net');
  }

  locate(uid: string, qos: QosClass): Location {
    const c = this.cache.get(uid);
    if (c && nsIno(c.pid) === c.nsIno) return { found: true, netnsCookie: c.cookie, pid: c.pid, cgroup: c.cgroup };
    this.cache.delete(uid);
    const dir = podCgroupCandidates(this.cgroupRoot, uid, qos).find((d) => existsSync(d));
    if (!dir) return { found: false, reason: `no pod cgroup yet under ${this.cgroupRoot}` };
    for (const pid of pidsUnder(dir)) {
      const ino = nsIno(pid);
      if (ino === undefined) continue;
      let cookie: bigint;
      try {
        cookie = native.netnsCookie(`/proc/${pid}/ns/net`);
      } catch {
        continue; // the process just exited
      }
      if (cookie === this.hostCookie) return { found: false, reason: 'the pod shares the node network namespace' };
      this.cache.set(uid, { pid, nsIno: ino, cookie, cgroup: dir });
      return { found: true, netnsCookie: cookie, pid, cgroup: dir };
    }
    return { found: false, reason: `no process in ${dir} yet` };
  }
}

function nsIno(pid: number): bigint | undefined {
  try {
    return statSync(`/proc/${pid}/ns/net`, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}
