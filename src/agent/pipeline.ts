// The agent's pipeline, incremental: work proportional to what changed.
//
//   source events ─► Store ─► dirty pods ─► model (decideOne) ─► locator ─► compile ─► planner ─► writer
//                                                                                      (per pod)   (maps)
//
// A source event marks the pods whose inputs changed dirty and schedules one flush (events that arrive
// together are coalesced); a flush handles the dirty pods only, each on its own: a pod's failure (a full
// map, a netns that vanished) is that pod's status, and the others go on. Small pods go first, and a big
// pod's writes are sliced with the event loop let go in between, so a pod with 40,000 CIDRs does not
// hold up the rest.
//
// Timers, all cheap:
// - pending pods (wanted, netns not known yet: no cgroup or process yet) are located again every tick;
// - located pods have their binding checked (the witness process, see pod-locator.ts) every
//   LOCATED_CHECK_MS, and pods that read runtime facts (resolv.conf, interfaces) have them read again;
// - a full resync every FULL_RESYNC_MS re-reads the maps and repairs drift (an entry removed by hand),
//   collects garbage and puts the netns links in line.
// Listener adoption (proxies listening from before meshlane's sockops program saw them) runs once per
// enrolment and once after the programs are attached; never polled: a listener that starts later passes
// sockops' TCP_LISTEN_CB.
//
// Until the source delivered a complete state, nothing is removed from the maps: capture that is pinned
// stays exactly as it is while the API server is unreachable.
import type { PodEntries, PodRuntime } from './desired.js';
import { compilePod } from './desired.js';
import type { CniNetns, Location } from './pod-locator.js';
import { heldMatches as heldMatchesEntries, IpIndex, ipKey, Mirror, planIndex, planPod, podAddresses, type Actual } from './plan.js';
import { collectGarbage, MapFullError, writeIndex, writePod, type MapWriter } from './reconcile.js';
import { ObjectStore } from './store.js';
import type { PodStatus } from './status.js';
import { decideOne, namespaceInfo, type NamespaceInfo } from '../model/pod-model.js';
import type { DesiredPod, PodRef, QosClass, SkippedPod } from '../model/types.js';
import { PodFlags } from '../dataplane/layouts.js';
import type { PodEventSink, SourceEvent } from '../sources/source.js';
import type { Logger } from '../util/log.js';
import { PodWarnings } from '../kube/events.js';
import type { CniPodRef, CniRelease, Enroller, Wanted } from './enroller.js';

/** Where pods' network namespaces come from (PodLocator; a fake in unit tests). */
export interface Locator {
  locate(uid: string, qos: QosClass, pod?: string): Location;
  bind(uid: string, ns: CniNetns): void;
  /** a CNI DEL: the pod's netns with this cookie is being torn down (pod-locator.ts) */
  retire(uid: string, cookie: bigint): void;
  /** the pod's CNI binding, if it has one */
  cniBinding(uid: string): { cookie: bigint; containerId?: string } | undefined;
  retain(uids: ReadonlySet<string>): void;
}

/** What the agent reads from inside a pod (PodRuntimeReader; a fake in unit tests). */
export interface RuntimeReader {
  read(pid: number, want: { dns: boolean; ifaces: boolean }): PodRuntime;
  retain(pids: Set<number>): void;
}

/** The kernel side of the pipeline: maps, netns links, listener adoption (the Dataplane; fakes in tests). */
export interface DataplaneIo {
  writer: MapWriter;
  readActual(): Actual;
  /** attach the per-netns programs (sk_lookup) to a pod's netns */
  attachNetns(nsPath: string, cookie: bigint): void;
  detachNetns(cookie: bigint): void;
  netnsLinkCookies(): bigint[];
  /** put the pod's proxy listeners that predate meshlane into the sockhash; returns how many */
  adoptListeners(cookie: bigint, cgroup: string, port: number): number;
}

/** A pod enrolled in the maps, with its netns links in place (the per-pod hook's argument). */
export interface EnrolledPod {
  ref: PodRef;
  cookie: bigint;
  podId: number;
  nsPath: string;
}

/** The kinds of pod error the pipeline reports (metrics: meshlane_pod_errors_total{kind}). */
export const POD_ERROR_KINDS = [
  'settings', // the pod's settings (annotations) have errors: the model's, or the compiler's
  'unsupported', // an annotation meshlane cannot apply
  'locate', // the pod's netns cannot be found for a reason that waiting does not fix
  'netns_conflict', // another pod already claims the same netns
  'ip_conflict', // another pod claims the pod's IP
  'netns_attach', // the per-netns program could not be attached
  'map_full', // a map had no room for the pod's entries
  'map_write', // writing the maps failed otherwise
] as const;
export type PodErrorKind = (typeof POD_ERROR_KINDS)[number];

/** What the pipeline reports as it works (src/metrics implements it; nothing by default). Durations in seconds. */
export interface PipelineObserver {
  /** one pod handled: decide, locate, compile, write */
  podHandled(seconds: number): void;
  /** one full resync */
  resynced(seconds: number): void;
  /** a source event's change is in the maps for one pod (or the pod is out of them): since the event */
  eventApplied(seconds: number): void;
  /** a pod entered an error of this kind (once per pod until it clears) */
  podError(kind: PodErrorKind): void;
  /** a write refused: the map was full */
  mapFull(map: string): void;
}

export interface PipelineHooks {
  /** after a pod's maps entries and netns links are in place (first enrolment, and a netns change) */
  enrolled?(p: EnrolledPod): void;
  /** after a pod left the maps (its netns links are gone) */
  released?(ref: PodRef, cookie: bigint): void;
}

export interface PipelineOptions {
  io: DataplaneIo;
  locator: Locator;
  runtime: RuntimeReader;
  log: Logger;
  nodeName?: string;
  events?: PodEventSink;
  hooks?: PipelineHooks;
  observer?: PipelineObserver;
  /** the tick for pending pods (default 250 ms) */
  tickMs?: number;
  now?: () => number;
  /** each map's capacity (default its max_entries; unit tests give smaller ones) */
  capacity?: (map: string) => number;
  /** the source's resourceVersions are the API server's (Source.resourceVersions) */
  resourceVersions?: boolean;
}

const TICK_MS = 250;
/** annotation bytes from which a pod is handled beside the flush (about 2,000 CIDRs) */
const BIG_POD = 32 * 1024;
// 250 pods' witness checks (a stat and a /proc/<pid>/stat read each, then) cost about 11 ms on a busy 2-core
// node: every second that alone was 1% of a core; now one readlink each (pod-locator.ts). A binding goes stale only when the pod's sandbox is recreated
// (kubelet stops every container first, then makes a new netns), which the CNI plugin reports at once.
const LOCATED_CHECK_MS = 5_000;
const RUNTIME_CHECK_MS = 5_000;
const FULL_RESYNC_MS = 10_000;

/** What the pipeline knows of one pod (by key: metadata.uid, or namespace/name). */
interface PodState {
  key: string;
  ref: PodRef;
  decision: DesiredPod | SkippedPod;
  /** where it stands (for status) */
  status?: PodStatus;
  /** in the maps: its netns cookie, the netns path its links were attached through */
  enrolled?: { cookie: bigint; nsPath: string; inboundPort: number; inEnabled: boolean };
  /** compiled entries as last written (or tried) */
  entries?: PodEntries;
  /** the witness pid read runtime facts through */
  pid?: number;
  /** wants runtime facts (DNS servers, interfaces) */
  runtime: boolean;
  /** the runtime facts its entries were compiled from (runtimeKey): re-read on the timer, and the pod is
   * handled again only when they changed */
  runtimeKey?: string;
  /** a problem of this pod's last write (a full map) */
  writeError?: string;
  /** the netns cookie another pod already claims */
  located: boolean;
  /** the kinds of error its status has (metrics) */
  errorKinds?: Set<PodErrorKind>;
}

/** Readiness of the pipeline part (the agent adds the programs and the source). */
export interface PipelineHealth {
  /** the source's complete state was applied to the maps at least once */
  firstSync: boolean;
  /** maps that were full for some pod on its last write */
  fullMaps: string[];
  /** pods whose proxy listeners, older than the programs, are still being adopted at start (until then
   * their inbound connections are refused: sk_lookup has no listener to steer to) */
  startupAdoption: number;
}

type Waiter = { uid: string; resolve: (s: PodStatus | undefined) => void; done: (s: PodState | undefined) => boolean };

/** What a CNI ADD said of a pod the API may not show fully yet (enroller.ts): the IPs of its prevResult. */
interface CniHint {
  uid?: string;
  ips: string[];
  /** the pod's decision was made with this hint */
  applied: boolean;
}

export class Pipeline implements Enroller {
  readonly store: ObjectStore;
  private mirror: Mirror = new Mirror();
  private readonly index = new IpIndex();
  private readonly pods = new Map<string, PodState>();
  private readonly nsInfo = new Map<string, NamespaceInfo>();
  /** netns cookie -> the pod key that holds it in the maps */
  private readonly cookieOwner = new Map<bigint, string>();
  private readonly dirty = new Set<string>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly warnings: PodWarnings | undefined;
  private readonly loggedErrors = new Map<string, string>();
  private readonly waiters = new Set<Waiter>();
  private readonly adoptQueue = new Map<string, { cgroup: string; port: number }>();
  /** namespace/name -> what a CNI ADD said (enroller.ts) */
  private readonly cniHints = new Map<string, CniHint>();
  /** when the oldest source event not yet applied marked a pod dirty (performance.now(); metrics) */
  private readonly eventAt = new Map<string, number>();
  /** adoptAll() ran (the programs are attached): before it, an enrolment leaves adoption to adoptAll */
  private adoptAllDone = false;
  /** the adoption queued by adoptAll() has drained (readiness) */
  private startupAdoptionDone = false;
  private adoptionReported = false;
  private adoptStarted = 0;
  private adopted = 0;
  private flushing: Promise<void> | undefined;
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private lastLocatedCheck = 0;
  private lastRuntimeCheck = 0;
  private lastResync = 0;
  private running = false;
  private synced = false;
  /** the store's complete state was applied once (readiness) */
  private firstSyncDone = false;
  private statusVersion = 0;
  /** writes made (tests, logs) */
  writes = 0;
  /** called after every flush that changed a pod's status (the agent publishes status.json) */
  onChange: (() => void) | undefined;

  private readonly writeOpts: { capacity?: (map: string) => number };

  constructor(private readonly o: PipelineOptions) {
    if (o.events) this.warnings = new PodWarnings(o.events);
    this.writeOpts = o.capacity ? { capacity: o.capacity } : {};
    this.store = new ObjectStore(o.resourceVersions ?? false);
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  // ---- input ----

  /** A source event: the store takes it, the pods it changed are handled in the next flush. */
  onEvent(e: SourceEvent): void {
    if (e.type !== 'upsert' || e.kind !== 'Pod') this.refreshNamespaces(e);
    const dirty = this.store.apply(e);
    if (e.type === 'replace') this.synced = true;
    const t = this.o.observer && this.running ? performance.now() : undefined;
    for (const k of dirty) {
      this.dirty.add(k);
      if (t !== undefined && !this.eventAt.has(k)) this.eventAt.set(k, t);
    }
    this.schedule();
  }

  private refreshNamespaces(e: SourceEvent): void {
    const put = (o: unknown): void => {
      const n = namespaceInfo(o);
      if (n) this.nsInfo.set(n.name, n.info);
    };
    if (e.type === 'replace') {
      this.nsInfo.clear();
      for (const n of e.namespaces) put(n);
    } else if (e.kind === 'Namespace') {
      if (e.type === 'upsert') put(e.object);
      else {
        const n = namespaceInfo(e.object);
        if (n) this.nsInfo.delete(n.name);
      }
    }
  }

  /**
   * Take over what the maps hold (at start, before the programs go live): the mirror, the address holders.
   * When the source has delivered its state, every pod is handled now; else nothing is touched.
   */
  async initialSync(): Promise<void> {
    this.loadMirror();
    const held = new Map<string, bigint>();
    for (const [ip, c] of this.mirror.byIp4) held.set(ipKey(4, ip), c);
    for (const [ip, c] of this.mirror.byIp6) held.set(ipKey(6, ip), c);
    this.index.seed(held);
    this.running = true;
    await this.flush();
    if (this.synced) await this.resync();
  }

  /** Start the timers. */
  startTimers(): void {
    this.timer = setInterval(() => this.tick(), this.o.tickMs ?? TICK_MS);
    this.timer.unref?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const w of [...this.waiters]) w.resolve(undefined);
    this.waiters.clear();
    await this.flushing;
    await Promise.all(this.inflight.values());
  }

  private schedule(): void {
    if (!this.running || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  // ---- the CNI seam ----

  /**
   * The pod known by uid when the runtime passed one (a pod of the same name with another uid is another
   * pod: a StatefulSet's pod made anew), else by namespace/name.
   */
  private keyOf(pod: CniPodRef): string | undefined {
    if (pod.uid && this.store.pods.has(pod.uid)) return pod.uid;
    for (const k of this.store.podsOf(pod.namespace)) {
      const s = this.pods.get(k);
      // an object without a uid of its own is keyed by namespace/name: the runtime's uid cannot be checked
      if (s && s.ref.name === pod.name && (!pod.uid || k === `${pod.namespace}/${pod.name}`)) return k;
    }
    return undefined;
  }

  /** Is the pod to be captured? Waits up to `timeoutMs` for the source to show it (see Enroller). */
  async wanted(pod: CniPodRef, timeoutMs: number, signal?: AbortSignal, hints: { ips?: string[] } = {}): Promise<Wanted> {
    const name = `${pod.namespace}/${pod.name}`;
    let hint: CniHint | undefined;
    if (hints.ips && hints.ips.length > 0) {
      hint = { ips: hints.ips, applied: false, ...(pod.uid ? { uid: pod.uid } : {}) };
      this.cniHints.set(name, hint);
      const k = this.keyOf(pod);
      if (k !== undefined) {
        this.dirty.add(k);
        this.schedule();
      }
    }
    const decide = (): Wanted | undefined => {
      const k = this.keyOf(pod);
      const s = k !== undefined ? this.pods.get(k) : undefined;
      if (!s || this.dirty.has(k!) || this.inflight.has(k!)) return undefined;
      if (hint && !hint.applied) return undefined;
      return 'reason' in s.decision ? { capture: false, uid: s.key, reason: s.decision.reason } : { capture: true, uid: s.key };
    };
    const now = decide();
    if (now) return now;
    return new Promise<Wanted>((resolve) => {
      const finish = (w: Wanted): void => {
        clearTimeout(t);
        this.waiters.delete(waiter);
        signal?.removeEventListener('abort', onAbort);
        // a hint for a pod the source never showed is dropped (it would wait for ever)
        if (w.capture === 'unknown' && hint && this.cniHints.get(name) === hint) this.cniHints.delete(name);
        resolve(w);
      };
      const t = setTimeout(() => finish({ capture: 'unknown', reason: `the pod did not show in the source within ${timeoutMs} ms` }), timeoutMs);
      const onAbort = (): void => finish({ capture: 'unknown', reason: 'aborted' });
      signal?.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        uid: pod.uid ?? `${pod.namespace}/${pod.name}`,
        resolve: () => {
          const w = decide();
          if (w) finish(w);
        },
        done: () => decide() !== undefined,
      };
      this.waiters.add(waiter);
    });
  }

  /**
   * Enroll pod `uid` now with the netns the CNI plugin handed over (the highest authority, see
   * pod-locator.ts); resolves once its maps entries and netns links are in place, with its status (state
   * 'captured'), or with the status that says why not (a full map, a netns the pod may not have).
   */
  async enroll(uid: string, ns: CniNetns, signal?: AbortSignal): Promise<PodStatus | undefined> {
    this.o.locator.bind(uid, ns);
    this.dirty.add(uid);
    return new Promise((resolve) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        resolve(this.pods.get(uid)?.status);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        uid,
        resolve: (s) => {
          this.waiters.delete(waiter);
          signal?.removeEventListener('abort', onAbort);
          resolve(s);
        },
        done: () => !this.dirty.has(uid) && !this.inflight.has(uid),
      };
      this.waiters.add(waiter);
      this.schedule();
    });
  }

  /** A CNI DEL (see Enroller): the pod that holds this netns leaves the maps now. */
  async unenroll(r: CniRelease, signal?: AbortSignal): Promise<string | undefined> {
    let uid: string | undefined;
    let cookie: bigint | undefined;
    // the sandbox container's own binding first: the DEL of an old sandbox never touches the new one
    for (const [k] of this.pods) {
      const b = this.o.locator.cniBinding(k);
      if (b && b.containerId === r.containerId) {
        uid = k;
        cookie = b.cookie;
        break;
      }
    }
    if (uid === undefined && r.netnsCookie !== undefined) {
      const owner = this.cookieOwner.get(r.netnsCookie);
      const named = r.pod ? this.keyOf(r.pod) : undefined;
      // the netns is a pod's in the maps (it came in through the cgroup tree, or before a restart)
      if (owner !== undefined && (named === undefined || named === owner)) {
        uid = owner;
        cookie = r.netnsCookie;
      } else if (named !== undefined && this.o.locator.cniBinding(named)?.cookie === r.netnsCookie) {
        uid = named;
        cookie = r.netnsCookie;
      }
    }
    if (uid === undefined || cookie === undefined) return undefined;
    this.o.locator.retire(uid, cookie);
    const key = uid;
    this.dirty.add(key);
    await new Promise<void>((resolve) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        uid: key,
        resolve: () => {
          this.waiters.delete(waiter);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        done: () => !this.dirty.has(key) && !this.inflight.has(key),
      };
      this.waiters.add(waiter);
      this.schedule();
    });
    return uid;
  }

  private wake(): void {
    for (const w of [...this.waiters]) {
      const s = this.pods.get(w.uid);
      if (w.done(s)) w.resolve(s?.status);
    }
  }

  // ---- the flush ----

  /** Handle every dirty pod. One flush at a time; a flush that finds more dirty pods goes on. */
  flush(): Promise<void> {
    if (!this.running) return Promise.resolve();
    if (this.flushing) {
      this.schedule(); // picked up right after the current one
      return this.flushing;
    }
    if (this.dirty.size === 0) {
      this.finishFlush();
      return Promise.resolve();
    }
    this.flushing = (async () => {
      await Promise.resolve(); // so that this.flushing is set before the loop can end
      try {
        while (this.dirty.size > 0 && this.running) {
          const keys = [...this.dirty].filter((k) => !this.inflight.has(k));
          if (keys.length === 0) break;
          for (const k of keys) this.dirty.delete(k);
          // small pods first: a pod with a huge annotation (tens of thousands of CIDRs) goes last
          keys.sort((a, b) => weight(this.store.pods.get(a)) - weight(this.store.pods.get(b)));
          for (const k of keys) {
            if (!this.running) break;
            if (weight(this.store.pods.get(k)) < BIG_POD) {
              await this.handle(k);
              continue;
            }
            // a big pod is its own unit of work: it runs beside the flush (its writes are sliced), so the
            // pods after it and the events that come meanwhile are not held up
            const p = (async () => {
              await new Promise((r) => setImmediate(r));
              await this.handle(k);
            })().finally(() => {
              this.inflight.delete(k);
              if (this.dirty.size > 0) this.schedule();
              else this.finishFlush();
            });
            this.inflight.set(k, p);
          }
        }
      } finally {
        this.flushing = undefined;
      }
      this.finishFlush();
    })();
    return this.flushing;
  }

  private finishFlush(): void {
    if (this.synced && this.inflight.size === 0 && this.dirty.size === 0 && !this.firstSyncDone) {
      this.firstSyncDone = true;
      this.o.log.info(
        { pods: this.pods.size, captured: [...this.pods.values()].filter((p) => p.status?.state === 'captured').length },
        'first complete state applied',
      );
    }
    this.wake();
    this.onChange?.();
  }

  /** One pod: decide, locate, compile, plan, write. Never throws. */
  private async handle(key: string): Promise<void> {
    const t0 = performance.now();
    const stamp = this.eventAt.get(key);
    this.eventAt.delete(key);
    try {
      await this.handleOne(key);
    } catch (e) {
      this.o.log.error({ pod: key, err: (e as Error).message }, 'handling a pod failed; retrying on the next tick');
      const s = this.pods.get(key);
      if (s) {
        s.writeError = (e as Error).message;
        this.noteErrors(s, new Set(['map_write']));
      }
    }
    const obs = this.o.observer;
    if (!obs) return;
    const now = performance.now();
    obs.podHandled((now - t0) / 1000);
    // the event is applied when the maps hold the pod's state: written, released, or not to be captured
    // (a pending pod's maps change when its netns shows, which is not the pipeline's latency)
    const s = this.pods.get(key);
    const applied = !s || 'reason' in s.decision || (s.status?.state === 'captured' && s.writeError === undefined);
    if (stamp !== undefined && applied) obs.eventApplied((now - stamp) / 1000);
  }

  /** The pod's error kinds are now `kinds`: each new one is reported once. */
  private noteErrors(s: PodState, kinds: Set<PodErrorKind>): void {
    for (const k of kinds) if (!s.errorKinds?.has(k)) this.o.observer?.podError(k);
    s.errorKinds = kinds;
  }

  private async handleOne(key: string): Promise<void> {
    const raw = this.store.pods.get(key);
    const prev = this.pods.get(key);
    if (raw === undefined) {
      // gone from the source
      if (!this.synced) return;
      if (prev) await this.release(prev);
      if (prev) {
        const h = this.cniHints.get(`${prev.ref.namespace}/${prev.ref.name}`);
        if (h && (h.uid === undefined || h.uid === prev.ref.uid)) this.cniHints.delete(`${prev.ref.namespace}/${prev.ref.name}`);
      }
      this.pods.delete(key);
      this.loggedErrors.delete(key);
      this.warnings?.forget(key);
      this.statusVersion++;
      return;
    }
    const decision = decideOne(this.withCniIps(raw), this.nsInfo.get(nsOfRef(raw)), this.o.nodeName !== undefined ? { nodeName: this.o.nodeName } : {});
    const s: PodState = prev ?? { key, ref: decision.ref, decision, runtime: false, located: false };
    s.ref = decision.ref;
    s.decision = decision;
    this.pods.set(key, s);
    this.statusVersion++;
    if ('reason' in decision) {
      s.status = undefined;
      s.runtime = false;
      s.errorKinds = undefined;
      if (s.enrolled && this.synced) await this.release(s);
      s.entries = undefined;
      this.reportErrors(s, []);
      return;
    }
    await this.place(s, decision);
  }

  /**
   * The pod as the model is to see it: with the IPs a CNI ADD gave for it while the source shows none
   * (enroller.ts). Marks the hint applied.
   */
  private withCniIps(raw: unknown): unknown {
    const m = (raw as { metadata?: { namespace?: unknown; name?: unknown; uid?: unknown } } | null)?.metadata;
    if (typeof m?.name !== 'string') return raw;
    const h = this.cniHints.get(`${nsOfRef(raw)}/${m.name}`);
    if (!h || (h.uid !== undefined && h.uid !== m.uid)) return raw;
    h.applied = true;
    const status = (raw as { status?: unknown }).status;
    const st = typeof status === 'object' && status !== null ? (status as Record<string, unknown>) : {};
    const shown = (Array.isArray(st.podIPs) && st.podIPs.length > 0) || (typeof st.podIP === 'string' && st.podIP !== '');
    if (shown) return raw;
    return { ...(raw as object), status: { ...st, podIP: h.ips[0], podIPs: h.ips.map((ip) => ({ ip })) } };
  }

  /** A pod that is to be captured: locate, compile, write. */
  private async place(s: PodState, pod: DesiredPod): Promise<void> {
    const name = `${pod.ref.namespace}/${pod.ref.name}`;
    const t0 = performance.now();
    const loc = this.o.locator.locate(pod.ref.uid, pod.qosClass, name);
    const tLocate = performance.now() - t0;
    const st = pod.settings;
    const wants = { dns: st.dns.enabled && !st.dns.captureAll, ifaces: st.excludeInterfaces.length + st.rerouteInterfaces.length > 0 };
    s.runtime = wants.dns || wants.ifaces;
    const status: PodStatus = { ref: pod.ref, state: 'pending', ips: pod.ips, settings: pod.settings, errors: [...pod.errors], unsupported: pod.unsupported };
    // the pod keeps its previous status while it is being written (a big pod's write takes a while)
    if (!s.status || s.status.state !== 'captured') s.status = status;
    const kinds = new Set<PodErrorKind>();
    if (pod.errors.length > 0) kinds.add('settings');
    if (pod.unsupported.length > 0) kinds.add('unsupported');
    const done = (): void => {
      s.status = status;
      if (status.errors.some((e) => e.startsWith('pod IP '))) kinds.add('ip_conflict');
      this.noteErrors(s, kinds);
      this.reportErrors(s, status.errors);
    };
    if (!loc.found) {
      s.located = false;
      status.reason = loc.reason;
      if (!loc.waiting) kinds.add('locate');
      if (s.enrolled) await this.release(s);
      done();
      return;
    }
    s.located = true;
    status.netns = { inode: loc.netnsInode.toString(), how: loc.how, pid: loc.foundPid, heldBy: loc.pid !== loc.foundPid ? loc.pid : undefined };
    status.via = loc.how === 'cni' ? 'cni' : 'cgroup-tree';
    const owner = this.cookieOwner.get(loc.netnsCookie);
    if (owner !== undefined && owner !== s.key && this.pods.get(owner)?.enrolled?.cookie === loc.netnsCookie) {
      status.reason = 'another pod already claims the same network namespace';
      kinds.add('netns_conflict');
      if (s.enrolled) await this.release(s);
      done();
      return;
    }
    s.pid = loc.pid;
    const runtime = loc.pid !== undefined && s.runtime ? this.o.runtime.read(loc.pid, wants) : undefined;
    s.runtimeKey = runtimeKey(runtime, pod);
    const entries = compilePod(pod, runtime);
    status.errors.push(...entries.errors);
    if (entries.errors.length > 0) kinds.add('settings');
    // a pod that moved to another netns leaves the old one first (its entries are keyed by cookie)
    if (s.enrolled && s.enrolled.cookie !== loc.netnsCookie) await this.release(s);
    const held = this.mirror.pods.get(loc.netnsCookie);
    const plan = planPod(loc.netnsCookie, entries, held, this.mirror.ids);
    const r = await writePod(this.o.io.writer, this.mirror, plan, this.writeOpts);
    this.writes += r.writes;
    if (!r.ok) {
      const msg =
        r.error instanceof MapFullError
          ? `not enrolled with these settings: ${r.error.message}; the pod keeps ${held ? 'its last good entries' : 'no entries (not captured)'}`
          : `writing the maps failed: ${r.error?.message}`;
      s.writeError = r.error instanceof MapFullError ? r.error.map : msg;
      status.errors.push(msg);
      if (r.error instanceof MapFullError) {
        kinds.add('map_full');
        this.o.observer?.mapFull(r.error.map);
      } else kinds.add('map_write');
      if (held) {
        // still captured, on its last good entries
        status.state = 'captured';
        status.netnsCookie = loc.netnsCookie.toString();
        status.podId = held.config.pod_id;
        this.cookieOwner.set(loc.netnsCookie, s.key);
      } else status.reason = msg;
      this.o.log.error({ pod: name, err: r.error?.message }, 'a pod could not be written to the maps; it keeps what it had, other pods go on');
      done();
      return;
    }
    s.writeError = undefined;
    s.entries = entries;
    this.cookieOwner.set(loc.netnsCookie, s.key);
    status.state = 'captured';
    status.netnsCookie = loc.netnsCookie.toString();
    status.podId = plan.id;
    // the address index, after the pods entry it points to
    const a = podAddresses(entries);
    const touched = this.index.claim(s.key, loc.netnsCookie, [...(a.v4 ? [ipKey(4, a.v4)] : []), ...(a.v6 ? [ipKey(6, a.v6)] : [])]);
    s.status = status; // written: conflicts are noted on the new status
    this.writeIndexFor(touched);
    this.addConflicts(s);
    const first = !s.enrolled || s.enrolled.nsPath !== loc.nsPath;
    const inEnabled = (entries.config.flags & PodFlags.IN_ENABLED) !== 0;
    const adopt = inEnabled && (!s.enrolled || !s.enrolled.inEnabled || s.enrolled.inboundPort !== st.inboundPort);
    const tWrite = performance.now() - t0 - tLocate;
    if (first) {
      try {
        this.o.io.attachNetns(loc.nsPath, loc.netnsCookie);
      } catch (e) {
        status.errors.push(`attaching the inbound program to the pod's netns failed: ${(e as Error).message}`);
        kinds.add('netns_attach');
      }
    }
    s.enrolled = { cookie: loc.netnsCookie, nsPath: loc.nsPath, inboundPort: st.inboundPort, inEnabled };
    const tLinks = performance.now() - t0 - tLocate - tWrite;
    // before the programs are attached, adoptAll() reads every enrolled pod's listeners once they are: reading
    // them now too would walk the node's TCP table twice per pod at start
    if (adopt && this.adoptAllDone) this.adopt(s, loc.cgroup, st.inboundPort);
    if (r.writes > 0) this.o.log.info({ pod: name, writes: r.writes, podId: plan.id }, 'maps updated');
    this.o.log.debug(
      {
        pod: name,
        ms: {
          locate: round(tLocate),
          compileAndWrite: round(tWrite),
          netnsLinks: round(tLinks),
          adopt: round(performance.now() - t0 - tLocate - tWrite - tLinks),
        },
      },
      'pod handled',
    );
    if (first) this.o.hooks?.enrolled?.({ ref: pod.ref, cookie: loc.netnsCookie, podId: plan.id!, nsPath: loc.nsPath });
    done();
  }

  /**
   * Adoption reads the pod's /proc/<pid>/net/tcp{,6}, which walks the node's whole TCP hash table (about 10 ms
   * on a busy node): queued and done one pod per turn of the event loop, after the pod's entries are in the
   * maps (a listener that starts after the read passes sockops' TCP_LISTEN_CB), so that it never holds up
   * the maps of the other pods.
   */
  private adopt(s: PodState, cgroup: string, port: number): void {
    this.adoptQueue.set(s.key, { cgroup, port });
    if (this.adoptQueue.size === 1) {
      this.adoptStarted = performance.now();
      this.adopted = 0;
      setImmediate(() => this.adoptNext());
    }
  }

  private adoptNext(): void {
    const next = this.adoptQueue.entries().next();
    if (next.done || !this.running) return;
    const [key, a] = next.value;
    this.adoptQueue.delete(key);
    const s = this.pods.get(key);
    if (s?.enrolled?.inEnabled) {
      this.adoptNow(s, a.cgroup, a.port);
      this.adopted++;
    }
    if (this.adoptQueue.size > 0) setImmediate(() => this.adoptNext());
    else this.adoptionDrained();
  }

  private adoptionDrained(): void {
    const startup = this.adoptAllDone && !this.startupAdoptionDone;
    // once at info: the first adoption after the attach (the start-up's, or the first pods' when the source's
    // state came after the attach)
    const first = this.adoptAllDone && !this.adoptionReported;
    if (first) this.adoptionReported = true;
    this.o.log[first ? 'info' : 'debug']({ pods: this.adopted, ms: round(performance.now() - this.adoptStarted) }, 'listener adoption done');
    if (startup) {
      this.startupAdoptionDone = true;
      // readiness changed: the agent publishes status.json
      this.statusVersion++;
      this.onChange?.();
    }
  }

  private adoptNow(s: PodState, cgroup: string, port: number): void {
    if (!s.enrolled) return;
    try {
      const n = this.o.io.adoptListeners(s.enrolled.cookie, cgroup, port);
      if (n > 0) this.o.log.info({ pod: `${s.ref.namespace}/${s.ref.name}`, port, listeners: n }, 'adopted a proxy listener that predates meshlane');
    } catch (e) {
      this.o.log.debug({ pod: s.key, err: (e as Error).message }, 'listener adoption failed');
    }
  }

  /** Once after the programs are attached: listeners of enrolled pods that predate sockops. */
  adoptAll(cgroupOf: (s: { ref: PodRef }) => string | undefined): void {
    this.adoptAllDone = true;
    for (const s of this.pods.values()) {
      if (!s.enrolled?.inEnabled) continue;
      const cg = cgroupOf(s);
      if (cg) this.adopt(s, cg, s.enrolled.inboundPort);
    }
    if (this.adoptQueue.size === 0) this.startupAdoptionDone = true;
  }

  /** Take a pod out of the maps (address index first, then its entries, then its netns links). */
  private async release(s: PodState): Promise<void> {
    const e = s.enrolled;
    this.writeIndexFor(this.index.release(s.key));
    if (!e) return;
    const held = this.mirror.pods.get(e.cookie);
    const r = await writePod(this.o.io.writer, this.mirror, planPod(e.cookie, undefined, held, this.mirror.ids), this.writeOpts);
    this.writes += r.writes;
    try {
      this.o.io.detachNetns(e.cookie);
    } catch (err) {
      this.o.log.warn({ pod: s.key, err: (err as Error).message }, 'detaching the pod netns program failed');
    }
    if (this.cookieOwner.get(e.cookie) === s.key) this.cookieOwner.delete(e.cookie);
    s.enrolled = undefined;
    this.o.log.info({ pod: `${s.ref.namespace}/${s.ref.name}`, writes: r.writes }, 'pod released from the maps');
    this.o.hooks?.released?.(s.ref, e.cookie);
    // a pod waiting for this netns may take it now, and room in the maps may let a pod in that did not fit
    for (const [k, p] of this.pods)
      if (k !== s.key && (p.writeError !== undefined || p.status?.reason === 'another pod already claims the same network namespace')) this.dirty.add(k);
  }

  private writeIndexFor(touched: Set<string>): void {
    if (touched.size === 0) return;
    const ix = planIndex(touched, this.index, this.mirror);
    try {
      this.writes += writeIndex(this.o.io.writer, this.mirror, [...ix.deletes, ...ix.sets], this.writeOpts.capacity);
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'writing the address index failed');
    }
    // every pod with one of these addresses may have a conflict that started or ended
    for (const k of touched) {
      const h = this.index.holder(k);
      if (h) {
        const p = this.pods.get(h.uid);
        if (p?.status) this.addConflicts(p);
      }
    }
  }

  private addConflicts(s: PodState): void {
    const st = s.status;
    if (!st) return;
    st.errors = st.errors.filter((e) => !e.startsWith('pod IP '));
    for (const c of this.index.conflicts(s.key)) {
      const who = (uid: string): string => {
        const p = this.pods.get(uid);
        return p ? `${p.ref.namespace}/${p.ref.name} (uid ${p.ref.uid})` : uid;
      };
      const ip = c.ip.slice(2);
      st.errors.push(
        c.holder === s.key
          ? `pod IP ${ip} is also claimed by ${c.others.map(who).join(', ')}: this pod held it first and keeps it`
          : `pod IP ${ip} is held by ${who(c.holder)}, which claimed it first: inbound to ${ip} goes to that pod, not this one (two pods with one IP: check the pods' status.podIPs)`,
      );
    }
  }

  private reportErrors(s: PodState, errors: string[]): void {
    const st = s.status;
    const unsupported = st?.unsupported ?? [];
    const key = JSON.stringify([errors, unsupported]);
    if (this.loggedErrors.get(s.key) !== key) {
      this.loggedErrors.set(s.key, key);
      const pod = `${s.ref.namespace}/${s.ref.name}`;
      for (const err of errors) this.o.log.warn({ pod }, err);
      for (const u of unsupported) this.o.log.warn({ pod }, `unsupported: ${u}`);
    }
    // Events tell the pod's owner what to fix in the pod: the model's errors (malformed settings), not the
    // node's state (a full map, an address conflict), which is the status's and the log's
    const d = s.decision;
    this.warnings?.updatePod(s.ref, 'reason' in d ? [] : d.errors);
  }

  // ---- timers ----

  private tick(): void {
    if (!this.running) return;
    const now = this.now();
    const checkLocated = now - this.lastLocatedCheck >= LOCATED_CHECK_MS;
    const checkRuntime = now - this.lastRuntimeCheck >= RUNTIME_CHECK_MS;
    if (checkLocated) this.lastLocatedCheck = now;
    if (checkRuntime) this.lastRuntimeCheck = now;
    for (const s of this.pods.values()) {
      if ('reason' in s.decision) continue;
      const d = s.decision;
      if (!s.located) {
        // pending: look again (cheap: a stat of the cgroup candidates, a read of cgroup.procs)
        if (this.o.locator.locate(d.ref.uid, d.qosClass, `${d.ref.namespace}/${d.ref.name}`).found) this.dirty.add(s.key);
        continue;
      }
      // a pod whose entries did not fit is tried again when room is made (a pod released) or on the resync
      if (s.writeError !== undefined || s.status?.state !== 'captured') continue;
      if (checkRuntime && s.runtime) {
        // resolv.conf or the interfaces may have changed: read them (cheap), handle the pod only if they did
        const st = d.settings;
        const wants = { dns: st.dns.enabled && !st.dns.captureAll, ifaces: st.excludeInterfaces.length + st.rerouteInterfaces.length > 0 };
        if (s.pid === undefined || runtimeKey(this.o.runtime.read(s.pid, wants), d) !== s.runtimeKey) {
          this.dirty.add(s.key);
          continue;
        }
      }
      if (checkLocated) {
        const loc = this.o.locator.locate(d.ref.uid, d.qosClass, `${d.ref.namespace}/${d.ref.name}`);
        if (!loc.found || loc.netnsCookie !== s.enrolled?.cookie || loc.nsPath !== s.enrolled?.nsPath) this.dirty.add(s.key);
      }
    }
    if (checkRuntime) {
      const pids = new Set<number>();
      for (const s of this.pods.values()) if (s.pid !== undefined) pids.add(s.pid);
      this.o.runtime.retain(pids);
      this.o.locator.retain(new Set(this.pods.keys()));
    }
    if (this.dirty.size > 0) this.schedule();
    if (now - this.lastResync >= FULL_RESYNC_MS && this.synced && !this.flushing && this.inflight.size === 0) void this.resync();
  }

  private loadMirror(): void {
    this.mirror = Mirror.from(this.o.io.readActual());
  }

  /**
   * The slow full pass: the maps are read again (an entry changed or removed by hand is repaired), every
   * enrolled pod is compared with what they hold, pods entries of no pod go, garbage is collected and the
   * netns links are put in line. Only after the source's complete state (before it, nothing is removed).
   */
  async resync(): Promise<void> {
    if (!this.synced || this.inflight.size > 0) return;
    const t0 = performance.now();
    try {
      await this.resyncNow();
    } finally {
      this.o.observer?.resynced((performance.now() - t0) / 1000);
    }
  }

  private async resyncNow(): Promise<void> {
    this.lastResync = this.now();
    try {
      this.loadMirror();
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'reading the maps failed; retrying on the next resync');
      return;
    }
    const owned = new Set<bigint>();
    for (const s of this.pods.values()) {
      if (!s.enrolled) continue;
      owned.add(s.enrolled.cookie);
      const held = this.mirror.pods.get(s.enrolled.cookie);
      if (!held || !s.entries || held.config.pod_id !== s.status?.podId || !heldMatchesEntries(held, s.entries)) this.dirty.add(s.key);
    }
    for (const s of this.pods.values()) if (s.writeError !== undefined || (s.located && s.status?.state === 'pending')) this.dirty.add(s.key);
    let removed = 0;
    for (const [cookie, held] of [...this.mirror.pods]) {
      if (owned.has(cookie)) continue;
      const r = await writePod(this.o.io.writer, this.mirror, planPod(cookie, undefined, held, this.mirror.ids), this.writeOpts);
      removed += r.writes;
    }
    removed += collectGarbage(this.o.io.writer, this.mirror);
    // the address index: what the claims say, for every address the maps or the claims know
    const ips = new Set<string>();
    for (const ip of this.mirror.byIp4.keys()) ips.add(ipKey(4, ip));
    for (const ip of this.mirror.byIp6.keys()) ips.add(ipKey(6, ip));
    for (const s of this.pods.values()) {
      if (!s.entries || !s.enrolled) continue;
      const a = podAddresses(s.entries);
      if (a.v4) ips.add(ipKey(4, a.v4));
      if (a.v6) ips.add(ipKey(6, a.v6));
    }
    const ix = planIndex(ips, this.index, this.mirror);
    try {
      removed += writeIndex(this.o.io.writer, this.mirror, [...ix.deletes, ...ix.sets], this.writeOpts.capacity);
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'writing the address index failed');
    }
    // netns links: every enrolled pod's netns has them, no other. One read of the links directory; a pod's
    // links are made again only when its pin is gone (the enrolment attached them, with the current program)
    const linked = new Set(this.o.io.netnsLinkCookies());
    for (const s of this.pods.values()) {
      if (!s.enrolled || linked.has(s.enrolled.cookie)) continue;
      try {
        this.o.io.attachNetns(s.enrolled.nsPath, s.enrolled.cookie);
      } catch {
        this.dirty.add(s.key);
      }
    }
    for (const c of linked) {
      if (owned.has(c)) continue;
      try {
        this.o.io.detachNetns(c);
      } catch (e) {
        this.o.log.warn({ cookie: c.toString(), err: (e as Error).message }, 'detaching a netns program failed');
      }
    }
    this.writes += removed;
    if (removed > 0) this.o.log.info({ writes: removed }, 'resync removed entries of no pod');
    if (this.dirty.size > 0) this.schedule();
    else this.finishFlush();
  }

  // ---- output ----

  health(): PipelineHealth {
    const full = new Set<string>();
    for (const s of this.pods.values()) if (s.writeError !== undefined && !s.writeError.includes(' ')) full.add(s.writeError);
    const startupAdoption = this.adoptAllDone && !this.startupAdoptionDone ? this.adoptQueue.size : 0;
    return { firstSync: this.firstSyncDone, fullMaps: [...full].sort(), startupAdoption };
  }

  /** Pods by state, and pods with an error right now by kind (metrics, at scrape: linear in the pods). */
  podCounts(): { states: Record<'captured' | 'pending' | 'skipped', number>; errors: Record<string, number> } {
    const states = { captured: 0, pending: 0, skipped: 0 };
    const errors: Record<string, number> = {};
    for (const k of POD_ERROR_KINDS) errors[k] = 0;
    for (const s of this.pods.values()) {
      if ('reason' in s.decision) states.skipped++;
      else if (s.status?.state === 'captured') states.captured++;
      else states.pending++;
      for (const k of s.errorKinds ?? []) errors[k]!++;
    }
    return { states, errors };
  }

  /** Entries of each map the pipeline writes, as it wrote them (its mirror of the maps; no syscall). */
  mapEntries(): Record<string, number> {
    return { ...this.mirror.counts, pod_by_ip4: this.mirror.byIp4.size, pod_by_ip6: this.mirror.byIp6.size };
  }

  /** A number that changes whenever a pod's status may have (the agent publishes only then). */
  get version(): number {
    return this.statusVersion;
  }

  /** The status of every captured or pending pod, in no order (the hand-over watch, once a second). */
  podStatuses(): PodStatus[] {
    const pods: PodStatus[] = [];
    for (const s of this.pods.values()) if (!('reason' in s.decision) && s.status) pods.push(s.status);
    return pods;
  }

  /** Every pod's status: captured and pending pods, then the pods not captured with the reason. */
  statuses(): { pods: PodStatus[]; skipped: SkippedPod[] } {
    const pods: PodStatus[] = [];
    const skipped: SkippedPod[] = [];
    for (const s of this.pods.values()) {
      if ('reason' in s.decision) skipped.push(s.decision);
      else if (s.status) pods.push(s.status);
    }
    const byName = (a: { ref: PodRef }, b: { ref: PodRef }): number => (a.ref.namespace + '/' + a.ref.name < b.ref.namespace + '/' + b.ref.name ? -1 : 1);
    return { pods: pods.sort(byName), skipped: skipped.sort(byName) };
  }

  /** The status of one pod (tests, the CNI handler). */
  status(uid: string): PodStatus | undefined {
    return this.pods.get(uid)?.status;
  }

  /** The cgroup of an enrolled pod, as the locator found it (listener adoption after attach). */
  locate(uid: string): Location | undefined {
    const s = this.pods.get(uid);
    if (!s || 'reason' in s.decision) return undefined;
    return this.o.locator.locate(uid, s.decision.qosClass, `${s.ref.namespace}/${s.ref.name}`);
  }
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

/** What of a pod's runtime facts its entries depend on: its DNS servers, the ifindexes of its named interfaces. */
function runtimeKey(rt: PodRuntime | undefined, pod: DesiredPod): string {
  if (!rt) return '';
  const st = pod.settings;
  return JSON.stringify([rt.dnsServers, [...st.excludeInterfaces, ...st.rerouteInterfaces].map((n) => rt.ifindex(n) ?? null)]);
}

function nsOfRef(raw: unknown): string {
  const m = (raw as { metadata?: { namespace?: unknown } } | null)?.metadata;
  return typeof m?.namespace === 'string' && m.namespace !== '' ? m.namespace : 'default';
}

/** A cheap size of a pod's inputs, to handle small pods first (annotations hold the big lists). */
function weight(raw: unknown): number {
  const a = (raw as { metadata?: { annotations?: unknown } } | null)?.metadata?.annotations;
  if (typeof a !== 'object' || a === null) return 0;
  let n = 0;
  for (const v of Object.values(a)) if (typeof v === 'string') n += v.length;
  return n;
}
