// The agent: starts the source, loads and attaches the programs, and runs the pipeline (pipeline.ts:
// source events -> store -> pod model -> locator -> compile -> planner -> writer, per pod and only for
// what changed). It publishes status.json (with its health, see health.ts) whenever a pod's state changes.
//
// Start-up, in order; any failure exits 2 with one line and leaves nothing pinned that this start made:
//   flags -> source.start (a cluster file that is missing or malformed fails here; an unreachable API
//   server does not: it is retried for ever, and until its first complete state the agent removes nothing
//   from the maps) -> load the objects (adopting the pins) -> fill the maps -> global switches -> attach
//   -> remove stale pins -> afterAttach (hook) -> adopt the listeners that predate the programs -> timers.
//
// Hook points for the work that plugs in here (keep them one line each where they are called):
//   afterAttach()     once, after the programs are attached (probes, budgets)
//   hooks.enrolled    per pod, when its maps entries and netns links are in place (pipeline.ts)
//   statusExtras()    fields added to status.json
//
// Per pod, beside the pipeline: its netns is prepared where its netns programs are attached (::6 on lo,
// source routing for bound sockets: pod-netns.ts), and once a second the hand-over counts are read
// (handover.ts: what each pod holds of orig_by_tuple, the connects refused for it; logged, in status).
//   readiness.add()   a condition of readiness (/readyz, status.json health), e.g. the CNI socket serving
//   opts.metrics      the metrics registry (src/metrics); parts report through its observers (.cni for the CNI server)
import { createHash } from 'node:crypto';
import { Dataplane } from '../dataplane/dataplane.js';
import { wantOf, writeSpliceConfig, type SpliceDecision } from '../dataplane/splice.js';
import { spliceAtStart } from '../dataplane/splice-probe.js';
import type { Source, SourceHealth } from '../sources/source.js';
import { UserError } from '../util/errors.js';
import { checkCgroupDir, pidsUnder } from '../util/cgroup.js';
import type { Logger } from '../util/log.js';
import { adoptListeners } from './listeners.js';
import { agentHealth, ReadinessConditions, type AgentHealth } from './health.js';
import { PodLocator, pinnedNetns } from './pod-locator.js';
import { PodRuntimeReader } from './pod-runtime.js';
import { Pipeline, type DataplaneIo, type PipelineHooks } from './pipeline.js';
import { mapsWriter, readActual } from './reconcile.js';
import { DEFAULT_STATE_DIR, prepareStateDir, statusPieces, StatusWriter, type AgentCapacityMaps, type AgentStatus } from './status.js';
import { preparePodNetns } from '../dataplane/pod-netns.js';
import { HandoverWatch, READ_EVERY_MS, writeHandoverLimit } from '../dataplane/handover.js';
import { KernelFullWatch } from '../dataplane/full-watch.js';
import { DEFAULT_LIMITS, handoverBounds, keptLine, mapCapacities, type MapCapacity, type NodeLimits } from '../dataplane/capacity.js';
import type { MapName } from '../dataplane/layouts.js';
import { checkBpffsFlag, checkStateDirFlag, diagnoseBpffs, pathsUnder, removeNewPaths, runStep, type Step } from './startup.js';
import type { Enroller } from './enroller.js';
import { serveCni, type CniEndpoint } from './cni-endpoint.js';
import type { AgentMetrics } from '../metrics/metrics.js';
import { agentProbe } from '../metrics/agent-probe.js';

export interface AgentOptions {
  /** where Namespaces and Pods come from (sources/select.ts: cluster file or Kubernetes API) */
  source: Source;
  cgroupRoot: string;
  bpffs: string;
  stateDir: string;
  nodeName?: string;
  log: Logger;
  /** the pipeline's tick for pods whose netns is not known yet (ms, default 250) */
  resyncMs?: number;
  /** splice same-node socket pairs with sk_msg: true (--splice: an error where the kernel cannot bound
   * the backlog), false (--no-splice), undefined (the default: on where the kernel can bound it, see
   * README, Same-node splicing); written to global[0] at start */
  splice?: boolean;
  /** bytes a spliced direction may leave unread before it falls back to TCP (default 4 MiB) */
  spliceBudget?: number;
  /** where the BPF objects are (default: bpf/build of the package). Tests only: the CLI sets it from
   * the hidden --test-bpf-objects, to make a start fail in the verifier */
  objDir?: string;
  hooks?: PipelineHooks;
  /** connections one pod may hold between connect() and its proxy's accept (default: a 16th of the
   * node's hand-over map); written to limits[0] at start */
  maxInflightPerPod?: number;
  /** the node's limits every map's capacity is derived from (--max-pods, --max-connections; capacity.ts);
   * default: the compiled capacities */
  limits?: NodeLimits;
  /** serve meshlane-cni here (cni-endpoint.ts); undefined: no CNI socket */
  cniSocket?: string;
  /** how long a CNI ADD waits for the source to show its pod (ms) */
  cniPodWaitMs?: number;
  /** metrics (the CLI's --metrics-address); none: nothing is counted in userspace */
  metrics?: AgentMetrics;
}

const REPORT_HINT = 'MESHLANE_DEBUG=1 shows the cause; if this node is set up as the README says, please report it';

/** status.json at most this often (a burst of changes is one write) */
const STATUS_MIN_INTERVAL_MS = 100;

export class Agent {
  private dataplane?: Dataplane;
  /** the pod locator of the running capture (it holds the witnesses' /proc/<pid> fds) */
  private locator: PodLocator | undefined;
  private pipeline?: Pipeline;
  private readonly startedAt = new Date().toISOString();
  /** the digest of status.json's text as last written, with updatedAt '' (statusPieces); undefined: to be written */
  private lastStatus: string | undefined;
  private stopped = false;
  private cgroupRoot = '';
  private statusWriter?: StatusWriter;
  private splice?: SpliceDecision;
  private statusTimer?: NodeJS.Timeout;
  private lastPublish = 0;
  private sourceStarted = false;
  private sourceError: string | undefined;
  private attached = false;
  private pinsAdopted = false;
  private readonly source: Source;
  private handover?: HandoverWatch;
  private kernelFull?: KernelFullWatch;
  private handoverTimer?: NodeJS.Timeout;
  private cni?: CniEndpoint;
  /** conditions of readiness other parts add (the CNI server) */
  readonly readiness = new ReadinessConditions();

  /** every map's capacity for the options (the maps this start creates get it) */
  private readonly wanted: Record<MapName, number>;

  constructor(private readonly opts: AgentOptions) {
    this.source = opts.source;
    this.wanted = mapCapacities(opts.limits ?? DEFAULT_LIMITS);
  }

  /** A map's capacity: the loaded map's own (a pinned map keeps its), before the load the wanted one. */
  private capacityOf(map: string): number {
    const has = this.dataplane?.capacities.find((c) => c.map === map)?.capacity;
    return has ?? this.wanted[map as MapName] ?? 0;
  }

  /** The pipeline's enrolment seam for the CNI handler (see enroller.ts); there once start() resolved. */
  get enroller(): Enroller | undefined {
    return this.pipeline;
  }

  async start(): Promise<void> {
    const { log } = this.opts;
    // The flags first: a bad flag fails before anything is loaded.
    this.cgroupRoot = checkCgroupDir(this.opts.cgroupRoot);
    checkBpffsFlag(this.opts.bpffs);
    checkStateDirFlag(this.opts.stateDir, DEFAULT_STATE_DIR);
    this.statusWriter = new StatusWriter(prepareStateDir(this.opts.stateDir), log);
    // capabilities, kernel features, the --bpffs tree: refused before the source runs or anything is pinned
    Dataplane.preflight(this.opts.bpffs);
    // Whether this kernel can bound the splice backlog: a probe on private objects (nothing pinned, nothing
    // attached to a cgroup); --splice where it cannot fails here, before the source starts.
    this.splice = await spliceAtStart({ want: wantOf(this.opts.splice), budget: this.opts.spliceBudget, objDir: this.opts.objDir });
    // the CNI socket before the source and the pins: a path we may not serve fails here, with nothing made
    if (this.opts.cniSocket !== undefined) {
      const cni = await serveCni({ socketPath: this.opts.cniSocket, log, podWaitMs: this.opts.cniPodWaitMs, observer: this.opts.metrics?.cni });
      this.cni = cni;
      this.readiness.add('cni', () => (cni.serving() ? undefined : `the CNI socket ${this.opts.cniSocket} is not serving`));
    }
    // The pipeline exists before the source starts, so that no event is lost; it touches the maps only
    // once they are loaded (initialSync).
    const locatorRef: { locator?: PodLocator } = {};
    const io = this.io();
    const runtime = new PodRuntimeReader();
    const pipeline = new Pipeline({
      io,
      locator: {
        locate: (uid, qos, pod) => locatorRef.locator!.locate(uid, qos, pod),
        bind: (uid, ns) => locatorRef.locator!.bind(uid, ns),
        retire: (uid, cookie) => locatorRef.locator!.retire(uid, cookie),
        cniBinding: (uid) => locatorRef.locator!.cniBinding(uid),
        retain: (uids) => locatorRef.locator!.retain(uids),
      },
      runtime,
      log,
      ...(this.opts.nodeName !== undefined ? { nodeName: this.opts.nodeName } : {}),
      events: this.source.events,
      resourceVersions: this.source.resourceVersions ?? false,
      ...(this.opts.hooks ? { hooks: this.opts.hooks } : {}),
      ...(this.opts.resyncMs !== undefined ? { tickMs: this.opts.resyncMs } : {}),
      ...(this.opts.metrics ? { observer: this.opts.metrics.pipeline } : {}),
      capacity: (map) => this.capacityOf(map),
    });
    this.pipeline = pipeline;
    this.opts.metrics?.bind(
      agentProbe({
        dataplane: () => this.dataplane,
        pipeline: () => this.pipeline,
        source: this.source,
        sourceStarted: () => this.sourceStarted,
        ready: () => this.health().ready,
      }),
    );
    pipeline.onChange = () => this.schedulePublish();
    // From the load on, a failure must leave nothing behind and let the process end: the source and the
    // timers stop, the objects close, and every pin this start made goes (unpinning a link it made
    // detaches it). What was pinned before (an earlier, working install) stays as it was.
    const before = pathsUnder(this.opts.bpffs);
    // The programs load while the source gets its first state: the verifier runs on libuv's pool, and the
    // file is parsed, or the API's lists answered, meanwhile (the load changes nothing in place: maps it
    // makes are new pins, which a failed start removes; programs go live only in startCapture's attach).
    log.info({ source: this.source.description }, 'source: starting');
    const loading = this.loadPrograms();
    loading.catch(() => undefined); // awaited in startCapture, or settled by abandon() when the source fails
    const removeMine = (): void => {
      const removed = removeNewPaths(this.opts.bpffs, before);
      log.debug({ removed }, 'start failed: removed what it had pinned');
    };
    const abandon = async (): Promise<void> => {
      (await loading.catch(() => undefined))?.close();
      removeMine();
    };
    let firstState = true;
    try {
      await this.source.start({
        event: (e) => {
          if (e.type === 'replace') {
            // the first complete state once at info (the start's milestones: source, programs, state, applied)
            log[firstState ? 'info' : 'debug']({ pods: e.pods.length, namespaces: e.namespaces.length }, 'source: complete state');
            firstState = false;
          }
          pipeline.onEvent(e);
        },
        error: (err) => {
          this.sourceError = err.message;
          log.error({ err: err.message }, 'source problem; keeping the last good state');
          this.schedulePublish();
        },
      });
      this.sourceStarted = true;
    } catch (e) {
      await this.source.stop().catch(() => undefined);
      await this.cni?.close();
      await abandon();
      throw e instanceof UserError ? e : new UserError((e as Error).message);
    }
    if (this.stopped) {
      await abandon();
      throw new UserError('the agent was stopped while starting');
    }
    try {
      await this.startCapture(pipeline, loading, (l) => (locatorRef.locator = this.locator = l));
    } catch (e) {
      await this.stop();
      removeMine();
      throw e;
    }
  }

  /** Loads the programs (Dataplane.load), with the info line of how long it took. */
  private async loadPrograms(): Promise<Dataplane> {
    const { log, bpffs } = this.opts;
    const loadStart = performance.now();
    const dataplane = await Dataplane.load({ bpffs, log, objDir: this.opts.objDir, splice: this.splice?.load, capacity: this.wanted });
    log.info({ ms: Math.round(performance.now() - loadStart) }, 'programs loaded');
    return dataplane;
  }

  /** The kernel side of the pipeline, over the loaded dataplane. */
  private io(): DataplaneIo {
    const dp = (): Dataplane => {
      if (!this.dataplane) throw new Error('the dataplane is not loaded');
      return this.dataplane;
    };
    return {
      writer: { apply: (op) => mapsWriter(dp().maps).apply(op) },
      readActual: () => readActual(dp().maps),
      // at enrolment (and on every resync, where it costs one pods lookup): the pod's netns gets ::6
      // on lo and the source routing for bound sockets once (pod-netns.ts; never throws)
      attachNetns: (nsPath, cookie) => {
        dp().attachNetns(nsPath, cookie);
        preparePodNetns(dp().maps.pods, cookie, nsPath, this.opts.log);
      },
      detachNetns: (cookie) => dp().detachNetns(cookie),
      netnsLinkCookies: () => dp().netnsLinkCookies(),
      adoptListeners: (cookie, cgroup, port) => adoptListeners(dp().maps.listeners, cookie, pidsUnder(cgroup), [port]).length,
    };
  }

  /** Load, fill the maps, attach: each step's failure is one line naming the cause and the fix. */
  private async startCapture(pipeline: Pipeline, loading: Promise<Dataplane>, setLocator: (l: PodLocator) => void): Promise<void> {
    const { log, bpffs, stateDir } = this.opts;
    const cgroupRoot = this.cgroupRoot;
    let dataplane: Dataplane;
    try {
      dataplane = await loading;
    } catch (e) {
      dataplane = runStep(
        {
          what: `loading the BPF programs into ${bpffs}`,
          where: `--bpffs ${bpffs} must be a writable directory on a bpf filesystem`,
          fallback: REPORT_HINT,
          diagnose: () => diagnoseBpffs(bpffs),
        },
        () => {
          throw e;
        },
      );
    }
    this.dataplane = dataplane;
    // a pinned map keeps its capacity (dataplane.ts): once, in the log; in status until an uninstall
    for (const c of dataplane.capacities.filter((x) => x.capacity !== x.wanted)) {
      log.warn({ map: c.map, capacity: c.capacity, wanted: c.wanted, option: c.option }, `map ${c.map}: pinned with ${keptLine(c)}`);
    }
    // a per-pod limit checked against --max-connections (the CLI) may not fit a pinned map kept smaller
    const perPod = this.opts.maxInflightPerPod;
    const { maxPerPod } = handoverBounds(this.capacityOf('orig_by_tuple'));
    if (perPod !== undefined && perPod > maxPerPod) {
      throw new UserError(
        `--max-inflight-per-pod ${perPod} does not fit the pinned orig_by_tuple of ${this.capacityOf('orig_by_tuple')} entries (at most ${maxPerPod}): pass at most ${maxPerPod}, or run 'meshlane uninstall --bpffs ${bpffs}' first so that the maps are made for the new --max-connections`,
      );
    }
    this.pinsAdopted = true;
    const locator = new PodLocator(cgroupRoot, log);
    setLocator(locator);
    // a restarted agent starts from the netns its pins hold for each pod (the sandbox process confirms them)
    locator.restore(pinnedNetns(dataplane.maps.pods.entries(), dataplane.maps.pod_info.entries()));
    const attachStep: Step = {
      what: `attaching the programs to cgroup ${cgroupRoot}`,
      where: `check --cgroup-root ${cgroupRoot} and --bpffs ${bpffs}`,
      e2big: `cgroup ${cgroupRoot} already has as many programs on one hook as the kernel allows: detach some (bpftool cgroup show ${cgroupRoot}) or use another --cgroup-root`,
      fallback: REPORT_HINT,
    };
    // Pinned links of an install on another cgroup: refused before that install's maps are touched.
    runStep(attachStep, () => dataplane.checkPinnedLinks(cgroupRoot));
    // Fill the maps before the programs go live (or are swapped): no window with empty maps. The
    // locator must be in place for the pipeline's first pass.
    const fillStep: Step = { what: `filling the maps and writing ${stateDir}/status.json`, where: `check --state-dir ${stateDir}`, fallback: REPORT_HINT };
    try {
      await pipeline.initialSync();
    } catch (e) {
      runStep(fillStep, () => {
        throw e;
      });
    }
    runStep(fillStep, () => {
      // the switch and budget first: a status that shows the pods captured has them in place
      if (this.splice) writeSpliceConfig(dataplane.maps.global, this.splice);
      const inflight = this.capacityOf('orig_by_tuple');
      writeHandoverLimit(dataplane.maps, this.opts.maxInflightPerPod, inflight);
      this.handover = new HandoverWatch(log, inflight);
      this.kernelFull = new KernelFullWatch(log);
      this.publish(true);
    });
    const attached = runStep(attachStep, () => dataplane.attach(cgroupRoot));
    this.attached = true;
    // the old programs' last writes carried, the new maps pinned, the old pins removed (dataplane.ts)
    const done = runStep({ what: `completing the start under ${bpffs}`, where: `check --bpffs ${bpffs}`, fallback: REPORT_HINT }, () => dataplane.commit());
    this.afterAttach(dataplane);
    // listeners that were there before the programs: once, now (later ones pass sockops' TCP_LISTEN_CB)
    pipeline.adoptAll((s) => {
      const loc = pipeline.locate(s.ref.uid);
      return loc?.found ? loc.cgroup : undefined;
    });
    // a kernel that cannot bound the splice backlog is worth a warning: splicing is the default
    const level = this.splice && !this.splice.load ? 'warn' : 'info';
    log[level](
      {
        attached,
        carried: done.carried.length ? done.carried : undefined,
        pinnedMaps: done.pinned.length ? done.pinned : undefined,
        removedPins: done.removed,
        cgroupRoot,
        bpffs,
        splice: this.splice?.on ?? false,
        spliceBudget: this.splice?.budget,
      },
      `capture active; splicing ${this.splice?.reason ?? 'off'}`,
    );
    pipeline.startTimers();
    this.handoverTimer = setInterval(() => this.readHandover(), READ_EVERY_MS);
    this.publish(true);
    this.cni?.ready(pipeline); // CNI ADDs that came during the start are answered from here on
  }

  /** The hand-over counts (handover.ts): logged when a pod is refused, in status when they change. */
  private readHandover(): void {
    const dp = this.dataplane;
    if (!dp || !this.handover || !this.pipeline || this.stopped) return;
    if (this.handover.poll(dp.maps, this.pipeline.podStatuses())) this.schedulePublish();
    // inserts the programs could not make into a full sock_pairs or listeners: logged, rate-limited
    this.kernelFull?.poll(dp.maps.stats);
  }

  /** Once, after the programs are attached (start-time probes and budgets plug in here). */
  private afterAttach(_dataplane: Dataplane): void {
    // (no start-time probes yet)
  }

  /** Fields other parts add to status.json (per-pod counts, budgets). */
  private statusExtras(): Pick<AgentStatus, 'handover' | 'splice' | 'capacity'> {
    // splicing as decided at start (the live switch is global[0]: meshlane status reads both)
    const d = this.splice;
    const node = this.handover?.node();
    const caps = this.dataplane?.capacities;
    return {
      ...(d ? { splice: { on: d.on, budget: d.budget, reason: d.reason } } : {}),
      ...(node ? { handover: node } : {}),
      ...(caps ? { capacity: { limits: this.opts.limits ?? DEFAULT_LIMITS, maps: capacityStatus(caps) } } : {}),
    };
  }

  /** The agent's readiness: programs attached, pins adopted, first sync done, source connected. */
  health(): AgentHealth {
    const src: SourceHealth = this.sourceStarted ? this.source.health() : { synced: false, connected: false };
    const p = this.pipeline?.health() ?? { firstSync: false, fullMaps: [], startupAdoption: 0 };
    return agentHealth({
      programsAttached: this.attached,
      pinsAdopted: this.pinsAdopted,
      firstSync: p.firstSync,
      source: src,
      fullMaps: p.fullMaps,
      startupAdoption: p.startupAdoption,
      extra: this.readiness.reasons(),
    });
  }

  /** Liveness: the agent has not stopped (the process answering at all is the rest of it). */
  live(): boolean {
    return !this.stopped;
  }

  private schedulePublish(): void {
    if (this.statusTimer || this.stopped) return;
    const wait = Math.max(0, this.lastPublish + STATUS_MIN_INTERVAL_MS - Date.now());
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.publish(false);
    }, wait);
  }

  private publish(force: boolean): void {
    const pipeline = this.pipeline;
    if (!pipeline || !this.statusWriter) return;
    this.lastPublish = Date.now();
    const { pods: piped, skipped } = pipeline.statuses();
    const pods = this.handover ? piped.map((p) => this.handover!.annotate(p)) : piped;
    const src = this.sourceStarted ? this.source.health() : undefined;
    const status: AgentStatus = {
      pid: process.pid,
      startedAt: this.startedAt,
      updatedAt: '',
      bpffs: this.opts.bpffs,
      cgroupRoot: this.cgroupRoot,
      source: this.source.description,
      sourceError: src?.error ?? (src?.connected === false ? this.sourceError : undefined),
      health: this.health(),
      pods,
      skipped,
      ...this.statusExtras(),
    };
    // made, compared (by a digest) and written in pieces, a pod each: no string of the whole node's status,
    // and nothing of it kept to the next publish, where it would be old garbage (status.ts)
    const pieces = statusPieces(status);
    const digest = piecesDigest(pieces);
    if (!force && digest === this.lastStatus) return;
    const at = pieces.indexOf(UNDATED);
    pieces[at] = pieces[at]!.replace('""', JSON.stringify(new Date().toISOString()));
    // a failed write is retried on the next change, or by the timer below
    this.lastStatus = this.statusWriter.write(pieces) ? digest : undefined;
    if (this.lastStatus === undefined && !this.stopped) this.schedulePublish();
  }

  /** Stop following the source. Links and maps stay pinned: capture goes on without the agent. Also
   * what a failed start calls: afterwards nothing of the agent keeps the process alive. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.cni?.close();
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.statusTimer = undefined;
    if (this.handoverTimer) clearInterval(this.handoverTimer);
    this.handoverTimer = undefined;
    await this.pipeline?.stop();
    await this.source.stop().catch(() => undefined);
    this.locator?.close();
    this.locator = undefined;
    this.dataplane?.close();
    this.dataplane = undefined;
  }
}

/** The piece of statusPieces() that holds updatedAt before it is set (it is never the last field). */
const UNDATED = '\n  "updatedAt": "",';

function piecesDigest(pieces: readonly string[]): string {
  const h = createHash('sha256');
  for (const p of pieces) h.update(p);
  return h.digest('base64');
}

/** The maps an option sizes, for status.json: their capacity, and the wanted one when a pin kept another. */
function capacityStatus(caps: readonly MapCapacity[]): AgentCapacityMaps {
  const out: AgentCapacityMaps = {};
  for (const c of caps) if (c.option) out[c.map] = { capacity: c.capacity, option: c.option, ...(c.wanted !== c.capacity ? { wanted: c.wanted } : {}) };
  return out;
}
