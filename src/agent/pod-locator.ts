// Which network namespace is a pod's. The BPF programs key pods by netns cookie, so this answer decides
// what is captured: a wrong one takes the pod's real netns out of `pods` (its traffic bypasses the proxy)
// and gives the pod's settings to a netns it does not own. So the answer comes from an authority the
// pod's own processes cannot influence, in this order:
//   1. the CNI plugin, which the runtime hands the netns before any container of the pod runs: bind()
//      (src/cni/handler.ts, on ADD); a DEL retires that netns (retire()): the runtime is tearing it down, so
//      no answer may name it again for the pod (a netns cookie is never reused);
//   2. the pod's sandbox ("pause") process: the OLDEST process in the pod's cgroup subtree (start time,
//      /proc/<pid>/stat field 22, ties by pid). The runtime starts it first and it holds the netns for the
//      pod's whole life; no process of the pod can be older than it. Its netns must not be the node's.
// Once bound, a pod keeps its netns (inode + cookie) until the pod leaves the source (retain()) or no process
// of the pod is in that netns any more: then its sandbox died, kubelet makes a new one in a new netns, and
// the authority is asked again. Any other process of the pod that enters another netns (unshare(CLONE_NEWUSER
// | CLONE_NEWNET), as Chromium and bubblewrap do to sandbox themselves; setns) or starts in one changes
// nothing, however it is placed in the cgroup tree.
//
// No fd to the netns is held (it would keep a dead pod's netns alive). The binding is checked through a
// witness, a process of the pod inside the netns (the sandbox process while it lives), known by pid AND start
// time, since pids are reused. The witness's /proc/<pid> directory is held open (it holds the process's pid,
// not the process or its netns): its ns link read through that fd is the same process's for as long as it
// lives, and fails once it exited, whatever process gets the pid next. A pass is that one readlink (without
// the fd: a readlink of the ns link and a read of /proc/<pid>/stat, whose start time the kernel computes with
// the whole line); the pod's processes are walked only when the witness is gone.
//
// Across an agent restart the pins tell which netns each pod had (restore(), from pinnedNetns()). They are
// checked against the authority like any other answer, and the authority wins when they disagree: an agent
// that predates this rule may have pinned a netns that a process of the pod made.
//
// Limitation: a runtime that runs no sandbox process (CRI-O with drop_infra_ctr) leaves the oldest container
// process as the authority; a pod all of whose processes leave its netns can then move it. The CNI binding
// closes that.
//
// Where pods are, the way kubelet lays them out:
//   systemd driver:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice
//                    (Guaranteed: kubepods.slice/kubepods-pod<uid_>.slice)
//   cgroupfs driver: kubepods/<qos>/pod<uid>   (Guaranteed: kubepods/pod<uid>)
import { closeSync, existsSync, openSync, readSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as native from '../native/addon.js';
import { pidsUnder } from '../util/cgroup.js';
import type { Logger } from '../util/log.js';
import type { QosClass } from '../model/types.js';

export function podCgroupCandidates(root: string, uid: string, qos: QosClass): string[] {
  const q = qos.toLowerCase();
  const u = uid.replace(/-/g, '_');
  return qos === 'Guaranteed'
    ? [join(root, 'kubepods.slice', `kubepods-pod${u}.slice`), join(root, 'kubepods', `pod${uid}`)]
    : [join(root, 'kubepods.slice', `kubepods-${q}.slice`, `kubepods-${q}-pod${u}.slice`), join(root, 'kubepods', q, `pod${uid}`)];
}

/** How the agent knows a netns is the pod's: handed over by the CNI plugin, the netns of the pod's sandbox
 * process, or the one the pins held before a restart (confirmed by the sandbox process). */
export type NetnsHow = 'cni' | 'sandbox' | 'pins';

export type Location =
  | {
      found: true;
      netnsCookie: bigint;
      netnsInode: bigint;
      how: NetnsHow;
      /** the process the netns was found through (the sandbox process), when there was one */
      foundPid: number | undefined;
      /** a process of the pod in the netns now (the witness); undefined: none yet (a CNI netns before the
       * sandbox runs) */
      pid: number | undefined;
      /** a path that opens the netns: /proc/<pid>/ns/net, or the CNI's netns path */
      nsPath: string;
      cgroup: string;
    }
  /** waiting: the pod is not there yet (no cgroup, no process): normal for a pod being created */
  | { found: false; reason: string; waiting?: boolean };

/** A process, known by pid and start time (a pid alone may have been reused). */
export interface ProcId {
  pid: number;
  /** /proc/<pid>/stat field 22: clock ticks after boot */
  start: bigint;
}

interface Proc extends ProcId {
  /** inode of its network namespace */
  ino: bigint;
}

interface Binding {
  ino: bigint;
  cookie: bigint;
  how: NetnsHow;
  cgroup?: string;
  foundPid?: number;
  witness?: ProcId;
  /** an open fd of the witness's /proc/<pid> directory (see the top of the file); undefined: not held */
  witnessDir?: number;
  /** cni: the runtime's path of the netns (a bind mount), which proves it alive while no process is in it */
  nsPath?: string;
  /** cni: the sandbox container the runtime named (CNI_CONTAINERID), which its DEL names again */
  containerId?: string;
}

/** What the CNI plugin hands over: the netns path the runtime made (CNI_NETNS; it proves the netns alive
 * before the sandbox process runs), or the netns itself (then it holds only while a process of the pod is in
 * it, like a binding found through the sandbox process). */
export type CniNetns = ({ nsPath: string; how: 'cni' } | { inode: bigint; cookie: bigint; how: 'cni' }) & { containerId?: string };

/**
 * Field 22 (starttime) of a /proc/<pid>/stat line. The command name (field 2) is in parentheses and may
 * contain anything, spaces and ')' included, so fields are counted after the last ')'.
 */
export function parseStartTime(stat: string): bigint | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  // after ')': field 3 (state) is index 0, so field 22 is index 19
  const f = stat.slice(close + 2).split(' ')[19];
  return f !== undefined && /^\d+$/.test(f) ? BigInt(f) : undefined;
}

/** Oldest first: by start time, ties (same clock tick) by pid. */
export function oldestFirst(a: ProcId, b: ProcId): number {
  if (a.start !== b.start) return a.start < b.start ? -1 : 1;
  return a.pid - b.pid;
}

/** uid -> netns cookie as the pins hold them (pods: cookie -> pod id; pod_info: pod id -> uid). A uid that
 * two cookies claim is left out: the authority decides alone. */
export function pinnedNetns(
  pods: ReadonlyArray<readonly [bigint, { pod_id: number }]>,
  info: ReadonlyArray<readonly [number, { uid: string }]>,
): Map<string, bigint> {
  const uidOf = new Map(info.map(([id, i]) => [id, i.uid]));
  const out = new Map<string, bigint>();
  const twice = new Set<string>();
  for (const [cookie, c] of pods) {
    const uid = uidOf.get(c.pod_id);
    if (uid === undefined || uid === '') continue;
    if (out.has(uid)) twice.add(uid);
    out.set(uid, cookie);
  }
  for (const u of twice) out.delete(u);
  return out;
}

// The binding check reads every located pod's witness every few seconds (pipeline.ts), so these two are
// its cost: one open/read/close into a shared buffer (readFileSync adds an fstat and a buffer per call),
// and a readlink of the ns link (statSync makes a BigIntStats object of 14 fields for the one we need).
/** a /proc/<pid>/stat line is far shorter (the command name is at most 64 bytes) */
const statBuf = Buffer.alloc(4096);

function procStart(pid: number): bigint | undefined {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/stat`, 'r');
  } catch {
    return undefined;
  }
  try {
    // latin1: the fields parsed are ASCII digits after the last ')', which no UTF-8 sequence contains
    return parseStartTime(statBuf.toString('latin1', 0, readSync(fd, statBuf, 0, statBuf.length, 0)));
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** The inode of a netns file: a bind mount (the CNI's netns path) or a process's ns link. */
function nsIno(path: string): bigint | undefined {
  try {
    return statSync(path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

/** The inode of a process's netns, from its ns link ("net:[4026531840]"); undefined when it exited. */
function procNetnsIno(pid: number): bigint | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return m ? BigInt(m[1]!) : undefined;
  } catch {
    return undefined;
  }
}

/** The netns inode of the process whose /proc/<pid> directory `dir` is; undefined once it exited. */
function dirNetnsIno(dir: number): bigint | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${dir}/ns/net`));
    return m ? BigInt(m[1]!) : undefined;
  } catch {
    return undefined;
  }
}

/** Make `w` the binding's witness (undefined: none), holding its /proc/<pid> directory open when it can. */
function setWitness(b: Binding, w: ProcId | undefined): void {
  if (b.witnessDir !== undefined) closeSync(b.witnessDir);
  b.witnessDir = undefined;
  b.witness = w;
  if (!w) return;
  let dir: number;
  try {
    dir = openSync(`/proc/${w.pid}`, 'r');
  } catch {
    return; // gone already: the next pass finds out without the fd
  }
  // opened after the witness was read: the pid must still be that process (same start time)
  if (procStart(w.pid) === w.start) b.witnessDir = dir;
  else closeSync(dir);
}

/** A process with its netns; undefined when it is gone or a zombie (an exited task has no namespaces). */
function readProc(pid: number): Proc | undefined {
  const start = procStart(pid);
  const ino = start === undefined ? undefined : procNetnsIno(pid);
  return start === undefined || ino === undefined ? undefined : { pid, start, ino };
}

/** The cookie of p's netns, read through its ns link; undefined when p exited or moved meanwhile. */
function cookieOf(p: Proc): bigint | undefined {
  let cookie: bigint;
  try {
    cookie = native.netnsCookie(`/proc/${p.pid}/ns/net`);
  } catch {
    return undefined;
  }
  const again = readProc(p.pid);
  return again !== undefined && again.start === p.start && again.ino === p.ino ? cookie : undefined;
}

/** Every process of a cgroup subtree with its netns, oldest first. */
function scan(dir: string): Proc[] {
  const out: Proc[] = [];
  for (const pid of pidsUnder(dir, Number.POSITIVE_INFINITY)) {
    const p = readProc(pid);
    if (p) out.push(p);
  }
  return out.sort(oldestFirst);
}

export class PodLocator {
  private readonly bindings = new Map<string, Binding>();
  /** uid -> cookie from the pins of an earlier agent, until the authority has answered for the pod */
  private readonly restored = new Map<string, bigint>();
  /** uid -> netns cookies a CNI DEL tore down: never the pod's again (until a CNI ADD names one) */
  private readonly retired = new Map<string, Set<bigint>>();
  private readonly hostIno: bigint;
  private readonly hostCookie: bigint;

  constructor(
    private readonly cgroupRoot: string,
    private readonly log?: Logger,
  ) {
    this.hostIno = statSync('/proc/self/ns/net', { bigint: true }).ino;
    this.hostCookie = native.netnsCookie('/proc/self/ns/net');
  }

  /** Seed what the pins say (pinnedNetns()), before the first locate after a restart. */
  restore(pinned: ReadonlyMap<string, bigint>): void {
    for (const [uid, cookie] of pinned) this.restored.set(uid, cookie);
  }

  /**
   * The CNI plugin's answer for a pod (the highest authority): replaces any binding. Throws when the path is
   * not a netns that exists, or is the node's.
   */
  bind(uid: string, ns: CniNetns): void {
    let ino: bigint;
    let cookie: bigint;
    let nsPath: string | undefined;
    if ('nsPath' in ns) {
      nsPath = ns.nsPath;
      ino = statSync(nsPath, { bigint: true }).ino;
      cookie = native.netnsCookie(nsPath);
    } else {
      ino = ns.inode;
      cookie = ns.cookie;
    }
    if (ino === this.hostIno || cookie === this.hostCookie) throw new Error(`pod ${uid}: the CNI netns is the node's network namespace`);
    this.drop(uid);
    this.bindings.set(uid, { ino, cookie, how: 'cni', nsPath, ...(ns.containerId !== undefined ? { containerId: ns.containerId } : {}) });
    this.restored.delete(uid);
    this.retired.get(uid)?.delete(cookie); // a runtime that sets the same netns up again (ADD after DEL)
    this.log?.info({ pod: uid, netns: ino.toString(), how: 'cni' }, 'pod network namespace bound');
  }

  /** The CNI binding of a pod, if it has one: its netns cookie and the container the runtime named. */
  cniBinding(uid: string): { cookie: bigint; containerId?: string } | undefined {
    const b = this.bindings.get(uid);
    if (!b || b.how !== 'cni') return undefined;
    return b.containerId !== undefined ? { cookie: b.cookie, containerId: b.containerId } : { cookie: b.cookie };
  }

  /**
   * A CNI DEL: the runtime tears this netns of the pod down. The binding to it goes, and no later answer
   * (the sandbox process still exiting, the pins) may give it to the pod again. Netns cookies are never
   * reused, so this cannot hit a later netns.
   */
  retire(uid: string, cookie: bigint): void {
    const b = this.bindings.get(uid);
    if (b && b.cookie === cookie) this.drop(uid);
    if (this.restored.get(uid) === cookie) this.restored.delete(uid);
    let set = this.retired.get(uid);
    if (!set) this.retired.set(uid, (set = new Set()));
    set.add(cookie);
    this.log?.info({ pod: uid, cookie: cookie.toString() }, 'pod network namespace released (CNI DEL)');
  }

  /** Forget a pod's binding (its witness's fd closed). */
  private drop(uid: string): void {
    const b = this.bindings.get(uid);
    if (b) setWitness(b, undefined);
    this.bindings.delete(uid);
  }

  /** Every held fd closed, every binding forgotten (the agent's stop). */
  close(): void {
    for (const u of [...this.bindings.keys()]) this.drop(u);
  }

  /** Forget pods that are gone from the source. */
  retain(uids: ReadonlySet<string>): void {
    for (const u of [...this.bindings.keys()]) if (!uids.has(u)) this.drop(u);
    for (const u of this.restored.keys()) if (!uids.has(u)) this.restored.delete(u);
    for (const u of this.retired.keys()) if (!uids.has(u)) this.retired.delete(u);
  }

  /** The pod's netns; `pod` names it in the log. */
  locate(uid: string, qos: QosClass, pod: string = uid): Location {
    const b = this.bindings.get(uid);
    // the common pass: the witness is the same process, still in the bound netns
    if (b?.witness && b.cgroup) {
      const w = b.witness;
      const same = b.witnessDir !== undefined ? dirNetnsIno(b.witnessDir) === b.ino : procNetnsIno(w.pid) === b.ino && procStart(w.pid) === w.start;
      if (same) return located(b, b.cgroup);
    }
    const dir = b?.cgroup ?? podCgroupCandidates(this.cgroupRoot, uid, qos).find((d) => existsSync(d));
    if (!dir) return { found: false, reason: `no pod cgroup yet under ${this.cgroupRoot}`, waiting: true };
    const procs = scan(dir);
    if (b) {
      // The witness exited or left the netns: any other process of the pod still in it keeps the binding
      // (the oldest: most likely the longest to stay). Inode numbers are reused, so the cookie must match too.
      const w = procs.find((p) => p.ino === b.ino && cookieOf(p) === b.cookie);
      if (w) {
        if (b.witness)
          this.log?.info(
            { pod, netns: b.ino.toString(), was: b.witness.pid, now: w.pid },
            'the process holding the pod netns is gone or left it; another process of the pod holds it',
          );
        setWitness(b, { pid: w.pid, start: w.start });
        b.cgroup = dir;
        return located(b, dir);
      }
      if (b.nsPath !== undefined && nsIno(b.nsPath) === b.ino) {
        setWitness(b, undefined); // a CNI netns whose sandbox does not run yet
        b.cgroup = dir;
        return located(b, dir);
      }
      this.drop(uid);
      this.log?.info(
        { pod, netns: b.ino.toString(), how: b.how },
        'no process of the pod is in its netns any more (its sandbox is gone): asking the sandbox process again',
      );
    }
    return this.fromSandbox(uid, pod, dir, procs);
  }

  private fromSandbox(uid: string, pod: string, dir: string, procs: Proc[]): Location {
    const sandbox = procs[0];
    if (!sandbox) return { found: false, reason: `no process in ${dir} yet`, waiting: true };
    if (sandbox.ino === this.hostIno)
      return { found: false, reason: `the pod shares the node network namespace (its sandbox process ${sandbox.pid} is in it)` };
    const cookie = cookieOf(sandbox);
    if (cookie === undefined) return { found: false, reason: `the sandbox process ${sandbox.pid} of the pod exited while it was looked at` };
    if (this.retired.get(uid)?.has(cookie)) return { found: false, reason: `the pod's network namespace was torn down (CNI DEL); waiting for its new sandbox` };
    if (cookie === this.hostCookie) return { found: false, reason: `the pod shares the node network namespace (its sandbox process ${sandbox.pid} is in it)` };
    const pinned = this.restored.get(uid);
    this.restored.delete(uid);
    if (pinned !== undefined && pinned !== cookie) {
      this.log?.warn(
        { pod, pinnedCookie: pinned.toString(), sandboxPid: sandbox.pid, netns: sandbox.ino.toString(), cookie: cookie.toString() },
        'the pinned netns of the pod is not the netns of its sandbox process: following the sandbox process',
      );
    }
    const b: Binding = {
      ino: sandbox.ino,
      cookie,
      how: pinned === cookie ? 'pins' : 'sandbox',
      cgroup: dir,
      foundPid: sandbox.pid,
    };
    setWitness(b, { pid: sandbox.pid, start: sandbox.start });
    this.drop(uid);
    this.bindings.set(uid, b);
    this.log?.info({ pod, netns: b.ino.toString(), cookie: cookie.toString(), how: b.how, sandboxPid: sandbox.pid }, 'pod network namespace bound');
    return located(b, dir);
  }
}

function located(b: Binding, cgroup: string): Location {
  const pid = b.witness?.pid;
  return {
    found: true,
    netnsCookie: b.cookie,
    netnsInode: b.ino,
    how: b.how,
    foundPid: b.foundPid,
    pid,
    nsPath: pid !== undefined ? `/proc/${pid}/ns/net` : b.nsPath!,
    cgroup,
  };
}
