// What the agent knows that the maps do not (names, errors, why a pod is not captured yet), written
// atomically to <state dir>/status.json for `meshlane status`.
//
// Who can touch it: the state dir is root's (0755, refused at start when another user owns it or others
// may write to it), status.json is written 0644 whatever the umask. World-readable on purpose: it holds
// what `kubectl get pod -o wide` and the pod's own annotations show (names, IPs, capture settings and
// annotation errors), never a credential, so `meshlane status` works for any user on the node. The
// temporary file is created exclusively (O_EXCL) without following symlinks (O_NOFOLLOW), so a file or
// link planted in the state dir can neither be truncated nor redirect the write.
import { chmodSync, closeSync, fchmodSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, constants as fsc, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import type { CaptureSettings, PodRef } from '../model/types.js';
import type { NetnsHow } from './pod-locator.js';
import type { AgentHealth } from './health.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { NodeHandover, PodHandover } from '../dataplane/handover.js';
import type { NodeLimits } from '../dataplane/capacity.js';

export const DEFAULT_STATE_DIR = '/run/meshlane';

export interface PodStatus {
  ref: PodRef;
  /** captured: in the maps; pending: wanted but its netns is not known yet */
  state: 'captured' | 'pending';
  reason?: string;
  netnsCookie?: string;
  /** the pod's network namespace and how the agent knows it is the pod's (see pod-locator.ts) */
  netns?: PodNetnsStatus;
  /** how the pod came in: cni (its netns handed over by meshlane-cni on ADD, before any container ran) or
   * cgroup-tree (found through its sandbox process: running before the agent or the plugin, or restored
   * from the pins after a restart) */
  via?: 'cni' | 'cgroup-tree';
  podId?: number;
  ips: string[];
  settings: CaptureSettings;
  errors: string[];
  unsupported: string[];
  /** captured pods: its connections between connect() and accept(), its limit, and its connects refused for them */
  handover?: PodHandover;
}

export interface PodNetnsStatus {
  /** inode number of the netns (what `ls -iL /proc/<pid>/ns/net` and `lsns -t net` show) */
  inode: string;
  /** cni: handed over by the CNI plugin; sandbox: the netns of the pod's sandbox (oldest) process; pins: what
   * the pins held before a restart, confirmed by the sandbox process */
  how: NetnsHow;
  /** the process it was found through (the sandbox process) */
  pid?: number;
  /** when that process is gone: the process of the pod that is in the netns now */
  heldBy?: number;
}

export interface AgentStatus {
  pid: number;
  startedAt: string;
  updatedAt: string;
  bpffs: string;
  cgroupRoot: string;
  source: string;
  sourceError?: string;
  /** same-node splicing as decided at start: on or off, the budget, and why (src/dataplane/splice.ts) */
  splice?: { on: boolean; budget: number; reason: string };
  /** readiness (health.ts); absent in the status of an agent older than it */
  health?: AgentHealth;
  pods: PodStatus[];
  skipped: Array<{ ref: PodRef; reason: string }>;
  /** the node's hand-over map (orig_by_tuple): its entries, the limits, the connects refused */
  handover?: NodeHandover;
  /** the node's limits (--max-pods, --max-connections) and the capacity of each map they size */
  capacity?: { limits: NodeLimits; maps: AgentCapacityMaps };
}

/** Per map an option sizes: its capacity, the option, and what the options want when a pin kept another. */
export type AgentCapacityMaps = Partial<Record<string, { capacity: number; option: string; wanted?: number }>>;

export const statusPath = (stateDir: string): string => join(stateDir, 'status.json');

const STATE_DIR_MODE = 0o755;
const STATUS_MODE = 0o644;
const GROUP_OTHER_WRITE = 0o022;
const STICKY = 0o1000;

/**
 * Make sure `stateDir` is a directory only root can write to, creating it (0755) if needed. Throws a
 * UserError naming the problem otherwise: a file in its place, a symlink, another owner, group- or
 * world-writable, or a parent others may write to without the sticky bit (they could swap the directory).
 */
export function prepareStateDir(stateDir: string): string {
  const dir = resolve(stateDir);
  const fix = `pass a --state-dir that root owns and only root can write to (default ${DEFAULT_STATE_DIR})`;
  let st;
  try {
    st = lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new UserError(`--state-dir ${stateDir}: ${(e as Error).message}: ${fix}`);
    try {
      mkdirSync(dir, { recursive: true, mode: STATE_DIR_MODE });
      chmodSync(dir, STATE_DIR_MODE); // the umask does not decide
    } catch (e2) {
      throw new UserError(`--state-dir ${stateDir} cannot be created (${(e2 as NodeJS.ErrnoException).code ?? (e2 as Error).message}): ${fix}`);
    }
    st = lstatSync(dir);
  }
  if (st.isSymbolicLink()) throw new UserError(`--state-dir ${stateDir} is a symbolic link: ${fix}`);
  if (!st.isDirectory()) throw new UserError(`--state-dir ${stateDir} is not a directory: ${fix}`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new UserError(`--state-dir ${stateDir} is owned by uid ${st.uid}, not by uid ${uid}: ${fix}`);
  if (st.mode & GROUP_OTHER_WRITE)
    throw new UserError(`--state-dir ${stateDir} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)}): ${fix}`);
  // whoever may rename entries of the parent can swap the directory for their own
  const parent = lstatSync(dirname(dir));
  if (parent.uid !== uid && parent.uid !== 0) throw new UserError(`the parent of --state-dir ${stateDir} is owned by uid ${parent.uid}: ${fix}`);
  if (parent.mode & GROUP_OTHER_WRITE && !(parent.mode & STICKY)) {
    throw new UserError(`the parent of --state-dir ${stateDir} is writable by others: ${fix}`);
  }
  return dir;
}

/**
 * status.json's text in pieces: each field (indented as JSON.stringify(s, null, 2) would), and each element of
 * an array field (the pods, the skipped pods) on a line of its own, compact. A node's status is some 170 KiB at
 * 250 pods, published up to ten times a second while pods change. Made as one string it went to V8's
 * large-object space, which only a full collection frees (the agent's RSS climbed by tens of MiB between them);
 * a pod's line is young garbage. Compact lines take a third of the time of indented ones (1.4 against 4.5 ms
 * for 250 pods here), and `grep` finds a pod's whole line.
 */
export function statusPieces(s: AgentStatus): string[] {
  const out = ['{'];
  const fields = Object.entries(s).filter(([, v]) => v !== undefined);
  fields.forEach(([k, v], i) => {
    const comma = i < fields.length - 1 ? ',' : '';
    if (Array.isArray(v) && v.length > 0) {
      out.push(`\n  ${JSON.stringify(k)}: [`);
      v.forEach((el, j) => out.push(`\n    ${JSON.stringify(el) ?? 'null'}${j < v.length - 1 ? ',' : ''}`));
      out.push(`\n  ]${comma}`);
    } else out.push(`\n  ${JSON.stringify(k)}: ${indented(v, '  ')}${comma}`);
  });
  out.push('\n}\n');
  return out;
}

/** JSON.stringify(v, null, 2) as it is nested at `indent` (a JSON text has newlines only between its tokens) */
const indented = (v: unknown, indent: string): string => (JSON.stringify(v, null, 2) ?? 'null').replace(/\n/g, `\n${indent}`);

/** At most this much text per write(2): pieces are joined up to it. */
const WRITE_CHUNK = 64 * 1024;

/**
 * Write status.json atomically: an exclusive, non-following temp file, mode set explicitly, then rename.
 * Readers see the old file or the new one, whole. Not fsynced: it describes the running agent (its default
 * place, /run, is a tmpfs), so after a crash of the machine it is stale whatever is on disk, while an fsync
 * holds the event loop for the disk's flush on every publish (0.8 ms typical and up to 5 ms for 300 KiB on
 * this project's test machines' disk), up to ten times a second while pods change.
 */
export function writeStatus(stateDir: string, pieces: readonly string[]): void {
  const final = statusPath(stateDir);
  const tmp = `${final}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, STATUS_MODE);
  try {
    fchmodSync(fd, STATUS_MODE); // the umask does not decide who can read it (libuv opens with O_CLOEXEC)
    let text = '';
    for (const piece of pieces) {
      text += piece;
      if (text.length >= WRITE_CHUNK) {
        writeFully(fd, text);
        text = '';
      }
    }
    if (text !== '') writeFully(fd, text);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, final); // replaces a planted file or link at `final` itself, never follows it
  } catch (e) {
    unlinkSync(tmp);
    throw e;
  }
}

/** write(2) may write less than it was given (a full disk on the way): the rest, or its error. The string is
 * written as it is (node encodes it in C++, with no Buffer for the collector to track). */
function writeFully(fd: number, text: string): void {
  const n = writeSync(fd, text);
  if (n === Buffer.byteLength(text)) return;
  let rest = Buffer.from(text).subarray(n);
  while (rest.length > 0) rest = rest.subarray(writeSync(fd, rest));
}

/**
 * Status publishing is best effort: a write that fails (disk full, a directory replaced under the agent, a
 * planted file) is logged once per distinct error and counted, and the next publish tries again. It must never
 * stop the agent from following its source.
 */
export class StatusWriter {
  failures = 0;
  private lastError: string | undefined;

  constructor(
    private readonly stateDir: string,
    private readonly log: Logger,
  ) {}

  /** True when written. pieces: the status's text (statusPieces). */
  write(pieces: readonly string[]): boolean {
    try {
      writeStatus(this.stateDir, pieces);
    } catch (e) {
      this.failures++;
      const msg = (e as Error).message;
      if (msg !== this.lastError)
        this.log.error({ err: msg, failures: this.failures, stateDir: this.stateDir }, 'writing status.json failed; capture is unaffected, retrying');
      this.lastError = msg;
      return false;
    }
    if (this.lastError !== undefined) this.log.info({ failures: this.failures }, 'status.json written again');
    this.lastError = undefined;
    return true;
  }
}

export function readStatus(stateDir: string): AgentStatus | undefined {
  try {
    return JSON.parse(readFileSync(statusPath(stateDir), 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}
