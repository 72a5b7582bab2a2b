// The agent: a pipeline. A source produces Kubernetes objects -> the pod model turns them into
// desired pods -> the locator finds each pod's netns -> the planner diffs against the maps -> the
// dataplane writes them. It re-runs on every source change and on a short tick (pods whose cgroup
// or processes appear later are picked up when they do).
import { Dataplane } from '../dataplane/dataplane.js';
import { GlobalFlags } from '../dataplane/layouts.js';
import { buildModel } from '../model/pod-model.js';
import type { ModelResult } from '../model/types.js';
import { ClusterFileSource } from '../sources/cluster-file.js';
import { UserError } from '../util/errors.js';
import { checkCgroupDir } from '../util/cgroup.js';
import type { Logger } from '../util/log.js';
import { compilePod } from './desired.js';
import { PodLocator, pinnedNetns } from './pod-locator.js';
import { PodRuntimeReader } from './pod-runtime.js';
import { adoptListeners } from './listeners.js';
import { AF_INET } from '../util/ip.js';
import { pidsUnder } from '../util/cgroup.js';
import { PodFlags } from '../dataplane/layouts.js';
import { reconcileMaps } from './reconcile.js';
import type { Want } from './plan.js';
import { DEFAULT_STATE_DIR, prepareStateDir, StatusWriter, type AgentStatus, type PodStatus } from './status.js';
import { checkBpffsFlag, checkStateDirFlag, diagnoseBpffs, pathsUnder, removeNewPaths, runStep, type Step } from './startup.js';

export interface AgentOptions {
  clusterFile: string;
  cgroupRoot: string;
  bpffs: string;
  stateDir: string;
  nodeName?: string;
  log: Logger;
  /** how often to re-check pods whose netns is not known yet, and the maps (ms) */
  resyncMs?: number;
  /** splice same-node socket pairs with sk_msg (default false: no per-socket backpressure, see
   * README); written to global[0] at start */
  splice?: boolean;
  /** where the BPF objects are (default: bpf/build of the package). Tests only: the CLI sets it from
   * the hidden --test-bpf-objects, to make a start fail in the verifier */
  objDir?: string;
}

const REPORT_HINT = 'MESHLANE_DEBUG=1 shows the cause; if this node is set up as the README says, please report it';

const ADOPT_RETRY_MS = 1000;
const FULL_RESYNC_MS = 10_000;

interface Snapshot {
  namespaces: unknown[];
  pods: unknown[];
}

export class Agent {
  private dataplane?: Dataplane;
  private source?: ClusterFileSource;
  private locator?: PodLocator;
  private readonly runtime = new PodRuntimeReader();
  private timer?: NodeJS.Timeout;
  private snapshot?: Snapshot;
  private sourceError?: string;
  private readonly startedAt = new Date().toISOString();
  private lastStatus = '';
  private loggedErrors = new Map<string, string>();
  private stopped = false;
  private readonly adoptTried = new Map<bigint, number>();
  /** what the last map pass applied: skip the next one while nothing changes */
  private applied: { signature: string; at: number; ids: Map<bigint, number> } = { signature: '', at: 0, ids: new Map() };
  private rejectStart?: (e: Error) => void;
  private cgroupRoot = '';
  private statusWriter?: StatusWriter;

  constructor(private readonly opts: AgentOptions) {}

  async start(): Promise<void> {
    const { log } = this.opts;
    // The flags first, then the source: a bad flag or cluster file fails before anything is loaded.
    this.cgroupRoot = checkCgroupDir(this.opts.cgroupRoot);
    checkBpffsFlag(this.opts.bpffs);
    checkStateDirFlag(this.opts.stateDir, DEFAULT_STATE_DIR);
    this.statusWriter = new StatusWriter(prepareStateDir(this.opts.stateDir), log);
    // capabilities, kernel features, the --bpffs tree: refused before the source runs or anything is pinned
    Dataplane.preflight(this.opts.bpffs);
    try {
      this.snapshot = await this.firstSnapshot();
    } catch (e) {
      this.source?.stop();
      throw e;
    }
    if (this.stopped) throw new UserError('the agent was stopped while starting');
    // From here a failure must leave nothing behind and let the process end: the source and the
    // timer stop, the objects close, and every pin this start made goes (unpinning a link it made
    // detaches it). What was pinned before (an earlier, working install) stays as it was.
    const before = pathsUnder(this.opts.bpffs);
    try {
      this.startCapture();
    } catch (e) {
      await this.stop();
      const removed = removeNewPaths(this.opts.bpffs, before);
      log.debug({ removed }, 'start failed: removed what it had pinned');
      throw e;
    }
  }

  /** Load, fill the maps, attach: each step's failure is one line naming the cause and the fix. */
  private startCapture(): void {
    const { log, bpffs, stateDir } = this.opts;
    const cgroupRoot = this.cgroupRoot;
    const dataplane = runStep(
      {
        what: `loading the BPF programs into ${bpffs}`,
        where: `--bpffs ${bpffs} must be a writable directory on a bpf filesystem`,
        fallback: REPORT_HINT,
        diagnose: () => diagnoseBpffs(bpffs),
      },
      () => Dataplane.load({ bpffs, log, objDir: this.opts.objDir }),
    );
    this.dataplane = dataplane;
    this.locator = new PodLocator(cgroupRoot, log);
    // a restarted agent starts from the netns its pins hold for each pod (the sandbox process confirms them)
    this.locator.restore(pinnedNetns(dataplane.maps.pods.entries(), dataplane.maps.pod_info.entries()));
    const attachStep: Step = {
      what: `attaching the programs to cgroup ${cgroupRoot}`,
      where: `check --cgroup-root ${cgroupRoot} and --bpffs ${bpffs}`,
      e2big: `cgroup ${cgroupRoot} already has as many programs on one hook as the kernel allows: detach some (bpftool cgroup show ${cgroupRoot}) or use another --cgroup-root`,
      fallback: REPORT_HINT,
    };
    // Pinned links of an install on another cgroup: refused before that install's maps are touched.
    runStep(attachStep, () => dataplane.checkPinnedLinks(cgroupRoot));
    // Fill the maps before the programs go live (or are swapped): no window with empty maps.
    const splice = runStep({ what: `filling the maps and writing ${stateDir}/status.json`, where: `check --state-dir ${stateDir}`, fallback: REPORT_HINT }, () => {
      this.reconcile();
      return this.writeGlobalFlags(dataplane);
    });
    const attached = runStep(attachStep, () => dataplane.attach(cgroupRoot));
    // the old programs' last writes carried, the new maps pinned, the old pins removed (dataplane.ts)
    const done = runStep({ what: `completing the start under ${bpffs}`, where: `check --bpffs ${bpffs}`, fallback: REPORT_HINT }, () => dataplane.commit());
    log.info({ attached, carried: done.carried.length ? done.carried : undefined, pinnedMaps: done.pinned.length ? done.pinned : undefined, removedPins: done.removed, cgroupRoot, bpffs, splice }, splice ? 'capture active; splicing same-node connections (sk_msg)' : 'capture active; splicing off (the default; --splice turns it on)');
    this.timer = setInterval(() => this.reconcile(), this.opts.resyncMs ?? 250);
    this.timer.unref?.();
  }

  /** Node-wide switches (global[0]), before the programs go live; other bits are kept. */
  private writeGlobalFlags(dataplane: Dataplane): boolean {
    const cur = dataplane.maps.global.get(0)?.flags ?? 0;
    const splice = this.opts.splice ?? false;
    const flags = splice ? cur | GlobalFlags.SPLICE : cur & ~GlobalFlags.SPLICE;
    dataplane.maps.global.set(0, { flags, pad: 0 });
    return splice;
  }

  private firstSnapshot(): Promise<Snapshot> {
    const source = new ClusterFileSource(this.opts.clusterFile);
    this.source = source;
    return new Promise((resolve, reject) => {
      let first = true;
      this.rejectStart = (e) => {
        if (first) {
          first = false;
          reject(e);
        }
      };
      source.on('snapshot', (s: Snapshot) => {
        this.sourceError = undefined;
        if (first) {
          first = false;
          resolve(s);
          return;
        }
        this.snapshot = s;
        this.opts.log.info({ pods: s.pods.length, namespaces: s.namespaces.length }, 'cluster file changed');
        this.reconcile();
      });
      source.on('error', (e: Error) => {
        if (first) {
          first = false;
          reject(e instanceof UserError ? e : new UserError(e.message));
          return;
        }
        this.sourceError = e.message;
        this.opts.log.error({ err: e.message }, 'cluster file unreadable; keeping the last good state');
      });
      source.start();
    });
  }

  /** One pass of the pipeline. Safe to call at any time. */
  reconcile(): void {
    if (!this.dataplane || !this.locator || !this.snapshot) return;
    const { log } = this.opts;
    let model: ModelResult;
    try {
      model = buildModel(this.snapshot, { nodeName: this.opts.nodeName });
    } catch (e) {
      log.error({ err: (e as Error).message }, 'pod model failed');
      return;
    }
    const want: Want[] = [];
    const pods: PodStatus[] = [];
    const seen = new Set<bigint>();
    const pids = new Set<number>();
    const adoptable: Array<{ cookie: bigint; cgroup: string; port: number; pod: string }> = [];
    const nsPaths = new Map<bigint, string>();
    for (const pod of model.captured) {
      const loc = this.locator.locate(pod.ref.uid, pod.qosClass, `${pod.ref.namespace}/${pod.ref.name}`);
      const s = pod.settings;
      const runtime = loc.found && loc.pid !== undefined
        ? this.runtime.read(loc.pid, { dns: s.dns.enabled && !s.dns.captureAll, ifaces: s.excludeInterfaces.length + s.rerouteInterfaces.length > 0 })
        : undefined;
      if (loc.found && loc.pid !== undefined) pids.add(loc.pid);
      const entries = compilePod(pod, runtime);
      const status: PodStatus = {
        ref: pod.ref,
        state: 'pending',
        ips: pod.ips,
        settings: pod.settings,
        errors: [...pod.errors, ...entries.errors],
        unsupported: pod.unsupported,
      };
      if (loc.found) status.netns = { inode: loc.netnsInode.toString(), how: loc.how, pid: loc.foundPid, heldBy: loc.pid !== loc.foundPid ? loc.pid : undefined };
      if (!loc.found) status.reason = loc.reason;
      else if (seen.has(loc.netnsCookie)) status.reason = 'another pod already claims the same network namespace';
      else {
        seen.add(loc.netnsCookie);
        want.push({ cookie: loc.netnsCookie, entries });
        nsPaths.set(loc.netnsCookie, loc.nsPath);
        if (entries.config.flags & PodFlags.IN_ENABLED) adoptable.push({ cookie: loc.netnsCookie, cgroup: loc.cgroup, port: s.inboundPort, pod: `${pod.ref.namespace}/${pod.ref.name}` });
        status.netnsCookie = loc.netnsCookie.toString();
        status.state = 'captured';
      }
      pods.push(status);
    }
    this.runtime.retain(pids);
    this.locator.retain(new Set([...model.captured.map((p) => p.ref.uid), ...model.skipped.map((p) => p.ref.uid)]));
    let writes = 0;
    try {
      // The maps (and netns links) are read and diffed only when the desired state changed, and every
      // FULL_RESYNC_MS in any case (drift, e.g. a map edited by hand): an idle pass costs no syscalls
      // beyond locating the pods, which matters for tail latency on small nodes.
      const signature = JSON.stringify([...want.map((w) => [w.cookie, w.entries]), ...nsPaths], (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
      const now = Date.now();
      if (signature !== this.applied.signature || now - this.applied.at >= FULL_RESYNC_MS) {
        const r = reconcileMaps(this.dataplane.maps, want);
        writes = r.writes;
        this.applied = { signature, at: now, ids: r.ids };
        this.reconcileNetnsLinks(nsPaths);
      }
      for (const p of pods) if (p.netnsCookie) p.podId = this.applied.ids.get(BigInt(p.netnsCookie));
      const live = new Set(adoptable.map((a) => a.cookie));
      for (const c of this.adoptTried.keys()) if (!live.has(c)) this.adoptTried.delete(c);
      for (const a of adoptable) {
        // a pod whose proxy is not listening yet is looked at again at most once a second
        if ((this.adoptTried.get(a.cookie) ?? 0) > now - ADOPT_RETRY_MS) continue;
        this.adoptTried.set(a.cookie, now);
        for (const l of adoptListeners(this.dataplane.maps.listeners, a.cookie, pidsUnder(a.cgroup), [a.port])) {
          log.info({ pod: a.pod, port: l.port, family: l.family === AF_INET ? 4 : 6 }, 'adopted a proxy listener that predates meshlane');
        }
      }
    } catch (e) {
      log.error({ err: (e as Error).message }, 'writing the maps failed; retrying on the next pass');
      return;
    }
    if (writes > 0) {
      log.info({ writes, captured: pods.filter((p) => p.state === 'captured').map((p) => `${p.ref.namespace}/${p.ref.name}`) }, 'maps updated');
    }
    this.logErrorChanges(pods);
    this.publish(pods, model);
  }

  /** Per-pod netns programs (sk_lookup): attached to every captured pod's netns, detached from the rest. */
  private reconcileNetnsLinks(nsPaths: Map<bigint, string>): void {
    const dp = this.dataplane!;
    for (const [cookie, path] of nsPaths) dp.attachNetns(path, cookie);
    for (const cookie of dp.netnsLinkCookies()) if (!nsPaths.has(cookie)) dp.detachNetns(cookie);
  }

  /** Log a pod's errors and unsupported annotations once, when they change (not on every pass). */
  private logErrorChanges(pods: PodStatus[]): void {
    const now = new Map<string, string>();
    for (const p of pods) {
      const key = JSON.stringify([p.errors, p.unsupported]);
      now.set(p.ref.uid, key);
      if (this.loggedErrors.get(p.ref.uid) === key) continue;
      const pod = `${p.ref.namespace}/${p.ref.name}`;
      for (const err of p.errors) this.opts.log.warn({ pod }, err);
      for (const u of p.unsupported) this.opts.log.warn({ pod }, `unsupported: ${u}`);
    }
    this.loggedErrors = now;
  }

  private publish(pods: PodStatus[], model: ModelResult): void {
    const status: AgentStatus = {
      pid: process.pid,
      startedAt: this.startedAt,
      updatedAt: '',
      bpffs: this.opts.bpffs,
      cgroupRoot: this.cgroupRoot,
      source: `cluster file ${this.opts.clusterFile}`,
      sourceError: this.sourceError,
      pods,
      skipped: model.skipped,
    };
    const key = JSON.stringify(status);
    if (key === this.lastStatus) return;
    status.updatedAt = new Date().toISOString();
    // a failed write is retried on every pass until one succeeds, even if nothing changes meanwhile
    this.lastStatus = this.statusWriter?.write(status) ? key : '';
  }

  /** Stop following the source. Links and maps stay pinned: capture goes on without the agent. Also
   * what a failed start calls: afterwards nothing of the agent keeps the process alive. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.rejectStart?.(new UserError('the agent was stopped while starting'));
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.source?.stop();
    this.dataplane?.close();
    this.dataplane = undefined;
  }
}
