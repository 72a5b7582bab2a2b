// The agent's Prometheus metrics (prom-client), in one registry. Three kinds of source:
// - the kernel's per-CPU counters (the `stats` and `bypass_stats` maps), read and summed over CPUs at
//   scrape time by collect callbacks: the data path only ever increments its own CPU's slot, and a
//   scrape is a lookup per counter, never a write;
// - what the agent knows at scrape time (map entries, pods by state, the source's list/watch counts),
//   read through a MetricsProbe the agent binds once its parts exist;
// - events the agent's parts report as they happen, through small interfaces that do not know
//   prom-client (PipelineObserver in pipeline.ts, CniObserver in cni/server.ts), so those parts stay
//   testable with fakes.
// Every kernel counter is mapped to a metric by STAT_METRICS, one line per STAT_* index (a new
// counter in bpf/meshlane.h is one line here; test/unit/metrics.test.ts fails until it has one).
// Names follow the Prometheus conventions: meshlane_ prefix, counters end in _total, base units
// (seconds), labels for the dimensions of one quantity (direction, reason, map, kind).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BypassReason, Stat, type MapDef } from '../dataplane/layouts.js';
import { fillingMaps } from '../dataplane/capacity.js';
import { POD_ERROR_KINDS, type PipelineObserver, type PodErrorKind } from '../agent/pipeline.js';
import type { CniObserver } from '../cni/server.js';

/** How one kernel counter (a `stats` index) is exported: the metric and its labels. */
export interface StatMetric {
  metric: string;
  labels?: Record<string, string>;
}

/** Help text of every metric fed from the `stats` map (one metric may take several counters). */
export const STAT_METRIC_HELP: Record<string, string> = {
  meshlane_connect_decisions_total: 'connect() calls of captured pods decided by the connect4/6 programs (TCP, and connected UDP)',
  meshlane_connections_captured_total:
    'connections redirected to the pod proxy, by direction and by the hook that captured them (connect: at connect(); sk_lookup: arriving from outside the pod)',
  meshlane_connections_bypassed_total: 'connect() decisions not to capture (meshlane_bypass_decisions_total has them by reason)',
  meshlane_original_dst_served_total: 'SO_ORIGINAL_DST answers given to proxies',
  meshlane_proxy_port_uncaptured_total: 'connections accepted on a proxy port that were not captured (dialled directly)',
  meshlane_handover_full_total: 'captured connections whose original destination could not be handed over: orig_by_tuple was full',
  meshlane_inbound_dropped_total: 'inbound connections to be captured that were dropped, by reason (no_listener: the pod proxy does not listen)',
  meshlane_dns_redirects_total: 'DNS queries and connections redirected to the proxy DNS port (UDP datagrams, TCP and connected UDP)',
  meshlane_splice_sockets_total: 'sockets of same-node connections put into sock_pairs for splicing (splice hits)',
  meshlane_splice_fallbacks_total: 'spliced directions sent through the TCP/IP stack instead, by reason',
  meshlane_splice_left_total: 'sockets that left sock_pairs after going to the stack',
  meshlane_splice_retarget_failures_total: 'messages for the stack that stayed redirected (must stay 0)',
  meshlane_kernel_map_full_total:
    'inserts by the programs that found a map full (README, Map capacity): sock_pairs (the socket is not spliced: it goes through TCP/IP, captured), listeners (a proxy listener is not steered to: inbound to it is dropped, never delivered around the proxy)',
  meshlane_connections_refused_total:
    'TCP connects refused with EPERM, never bypassed, by reason (pod_inflight_limit: the pod held --max-inflight-per-pod connections its proxy had not accepted; node_handover_full: orig_by_tuple, sized by --max-connections, near its capacity)',
};

/**
 * Every STAT_* index of bpf/meshlane.h (layouts.ts Stat, by name) -> its metric. The splice fallback
 * counters are listed ahead of the objects that have them: a name the objects do not have is not
 * exported (and the type only demands the ones layouts.ts knows).
 */
export const STAT_METRICS: { [K in (typeof Stat)[number]]: StatMetric } & Record<string, StatMetric> = {
  connect_seen: { metric: 'meshlane_connect_decisions_total' },
  captured_outbound: { metric: 'meshlane_connections_captured_total', labels: { direction: 'outbound', hook: 'connect' } },
  captured_inbound: { metric: 'meshlane_connections_captured_total', labels: { direction: 'inbound', hook: 'connect' } },
  bypassed: { metric: 'meshlane_connections_bypassed_total' },
  orig_dst_served: { metric: 'meshlane_original_dst_served_total' },
  proxy_port_uncaptured: { metric: 'meshlane_proxy_port_uncaptured_total' },
  handover_full: { metric: 'meshlane_handover_full_total' },
  inbound_captured: { metric: 'meshlane_connections_captured_total', labels: { direction: 'inbound', hook: 'sk_lookup' } },
  inbound_no_listener: { metric: 'meshlane_inbound_dropped_total', labels: { reason: 'no_listener' } },
  dns_captured: { metric: 'meshlane_dns_redirects_total' },
  spliced: { metric: 'meshlane_splice_sockets_total' },
  splice_fallback: { metric: 'meshlane_splice_fallbacks_total', labels: { reason: 'budget' } },
  splice_fallback_peer: { metric: 'meshlane_splice_fallbacks_total', labels: { reason: 'peer' } },
  splice_no_peer: { metric: 'meshlane_splice_fallbacks_total', labels: { reason: 'no_peer' } },
  splice_switched_off: { metric: 'meshlane_splice_fallbacks_total', labels: { reason: 'switched_off' } },
  splice_left: { metric: 'meshlane_splice_left_total' },
  splice_retarget_fail: { metric: 'meshlane_splice_retarget_failures_total' },
  refused_pod_limit: { metric: 'meshlane_connections_refused_total', labels: { reason: 'pod_inflight_limit' } },
  refused_node_full: { metric: 'meshlane_connections_refused_total', labels: { reason: 'node_handover_full' } },
  splice_table_full: { metric: 'meshlane_kernel_map_full_total', labels: { map: 'sock_pairs' } },
  listeners_full: { metric: 'meshlane_kernel_map_full_total', labels: { map: 'listeners' } },
};

/** The metrics of the kernel counters the objects have (Stat), each with its label names and series. */
export function statMetricPlan(
  stats: readonly string[] = Stat,
): Map<string, { labelNames: string[]; series: Array<{ index: number; labels: Record<string, string> }> }> {
  const plan = new Map<string, { labelNames: string[]; series: Array<{ index: number; labels: Record<string, string> }> }>();
  stats.forEach((name, index) => {
    const m = STAT_METRICS[name];
    if (!m) throw new Error(`stats index ${index} (${name}) has no line in STAT_METRICS (src/metrics/metrics.ts)`);
    const labels = m.labels ?? {};
    let p = plan.get(m.metric);
    if (!p) plan.set(m.metric, (p = { labelNames: Object.keys(labels).sort(), series: [] }));
    if (Object.keys(labels).sort().join() !== p.labelNames.join())
      throw new Error(`${m.metric}: every counter of one metric has the same label names (${name})`);
    p.series.push({ index, labels });
  });
  return plan;
}

/** The maps that fill up (hash, LPM, sockhash, LRU...): entries against capacity. Arrays are always
 * full and socket local storage has no capacity: neither is counted. */
export const countedMaps = (): MapDef[] => fillingMaps();

export type PodState = 'captured' | 'pending' | 'skipped';

/** What the agent offers at scrape time. Each part may be absent (not loaded yet): that part is skipped. */
export interface MetricsProbe {
  /** the `stats` map, one summed value per index; undefined before the maps are loaded */
  stats?(): Array<bigint | null> | undefined;
  /** the `bypass_stats` map, by enum bypass_reason */
  bypass?(): Array<bigint | null> | undefined;
  /** entries per map: the pipeline's mirror for the maps it writes, a bounded key walk for the others */
  mapEntries?(): Record<string, number> | undefined;
  /** max_entries of each loaded map (the options size them: capacity.ts); undefined before the load */
  mapCapacity?(): Record<string, number> | undefined;
  pods?(): { states: Record<PodState, number>; errors: Record<string, number> } | undefined;
  /** list/watch counts per resource (the Kubernetes API source only) */
  kube?(): Record<string, { listed: number; opened: number; failures: number }> | undefined;
  source?(): { connected: boolean; lastContact?: number } | undefined;
  ready?(): boolean;
}

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const CNI_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25];
/** the event loop lag's sampling period (prom-client's eventLoopMonitoringPrecision; its default is 10 ms) */
export const EVENT_LOOP_SAMPLE_MS = 100;

export class AgentMetrics {
  readonly registry = new Registry();
  private probe: MetricsProbe = {};
  /** the pipeline's reports */
  readonly pipeline: PipelineObserver;
  /** the CNI server's reports */
  readonly cni: CniObserver;
  private readonly podErrors: Counter<'kind'>;
  private readonly mapFull: Counter<'map'>;
  private readonly reconcile: Histogram<'pass'>;
  private readonly eventToMap: Histogram;
  private readonly cniRequests: Counter<'command' | 'result'>;
  private readonly cniDuration: Histogram<'command'>;

  constructor(opts: { defaultMetrics?: boolean; version?: string } = {}) {
    const registers = [this.registry];
    const safe = <T>(f: () => T): T | undefined => {
      try {
        return f();
      } catch {
        return undefined; // a scrape never fails for one part: that part is left out
      }
    };
    const num = (v: bigint | null | undefined): number => (typeof v === 'bigint' ? Number(v) : 0);

    // ---- the kernel's counters ----
    for (const [metric, p] of statMetricPlan()) {
      new Counter({
        name: metric,
        help: STAT_METRIC_HELP[metric] ?? metric,
        labelNames: p.labelNames,
        registers,
        collect: function (this: Counter) {
          // unreadable (not loaded yet, a failed read): the last values stay, so that a counter never
          // seems to reset (rate() would see a restart)
          const stats = safe(() => probe().stats?.());
          if (!stats) return;
          this.reset();
          for (const s of p.series) this.inc(s.labels, num(stats[s.index]));
        },
      });
    }
    new Counter({
      name: 'meshlane_bypass_decisions_total',
      help: 'connect() decisions not to capture, by the istio-iptables rule that decided (bypass_stats)',
      labelNames: ['reason'],
      registers,
      collect: function (this: Counter<'reason'>) {
        const b = safe(() => probe().bypass?.());
        if (!b) return;
        this.reset();
        BypassReason.forEach((reason, i) => this.inc({ reason }, num(b[i])));
      },
    });

    // ---- maps ----
    const counted = countedMaps();
    new Gauge({
      name: 'meshlane_map_entries',
      help: 'entries in each BPF map (maps the agent writes: as it wrote them; maps the kernel writes: counted at scrape, at most every few seconds)',
      labelNames: ['map'],
      registers,
      collect: function (this: Gauge<'map'>) {
        const e = safe(() => probe().mapEntries?.());
        this.reset();
        if (!e) return;
        for (const d of counted) if (e[d.name] !== undefined) this.set({ map: d.name }, e[d.name]!);
      },
    });
    new Gauge({
      name: 'meshlane_map_capacity',
      help: 'max_entries of each BPF map (set by --max-pods or --max-connections when the map was made; README, Map capacity)',
      labelNames: ['map'],
      registers,
      collect: function (this: Gauge<'map'>) {
        // before the load: what the build declares (the defaults); then the maps' own
        const c = safe(() => probe().mapCapacity?.());
        for (const d of counted) this.set({ map: d.name }, c?.[d.name] ?? d.maxEntries);
      },
    });
    this.mapFull = new Counter({
      name: 'meshlane_map_full_total',
      help: 'map writes refused because the map was full (the pod keeps its last good entries, or is not enrolled)',
      labelNames: ['map'],
      registers,
    });

    // ---- the pipeline ----
    this.reconcile = new Histogram({
      name: 'meshlane_reconcile_duration_seconds',
      help: 'time to reconcile: one pod (decide, locate, compile, write its maps), or a full resync of every pod against the maps',
      labelNames: ['pass'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.eventToMap = new Histogram({
      name: 'meshlane_event_to_map_seconds',
      help: "time from a source event (a pod or namespace change) until the pod's maps hold it",
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.podErrors = new Counter({
      name: 'meshlane_pod_errors_total',
      help: 'pods that entered an error, by kind (each pod once per kind until it clears)',
      labelNames: ['kind'],
      registers,
    });
    new Gauge({
      name: 'meshlane_pods_with_errors',
      help: 'pods with an error right now, by kind',
      labelNames: ['kind'],
      registers,
      collect: function (this: Gauge<'kind'>) {
        const p = safe(() => probe().pods?.());
        this.reset();
        for (const [kind, n] of Object.entries(p?.errors ?? {})) this.set({ kind }, n);
      },
    });
    new Gauge({
      name: 'meshlane_pods',
      help: 'pods of this node the agent knows, by state (captured: in the maps; pending: to be captured, netns not found yet; skipped: not to be captured)',
      labelNames: ['state'],
      registers,
      collect: function (this: Gauge<'state'>) {
        const p = safe(() => probe().pods?.());
        this.reset();
        if (!p) return;
        for (const [state, n] of Object.entries(p.states)) this.set({ state }, n);
      },
    });

    // ---- the source ----
    const kube = (key: 'listed' | 'opened' | 'failures', firstFree: boolean) =>
      function (this: Counter<'resource'>) {
        const k = safe(() => probe().kube?.());
        if (!k) return;
        this.reset();
        for (const [resource, c] of Object.entries(k)) this.inc({ resource }, Math.max(0, c[key] - (firstFree ? 1 : 0)));
      };
    new Counter({
      name: 'meshlane_kube_relists_total',
      help: 'complete lists of a resource after the first (a watch that could not resume: 410 Gone, an ERROR event)',
      labelNames: ['resource'],
      registers,
      collect: kube('listed', true),
    });
    new Counter({
      name: 'meshlane_kube_watch_restarts_total',
      help: 'watches of a resource opened after the first (the server ended one, it broke, or went silent); attempts that failed are in meshlane_kube_request_failures_total',
      labelNames: ['resource'],
      registers,
      collect: kube('opened', true),
    });
    new Counter({
      name: 'meshlane_kube_request_failures_total',
      help: 'lists and watches of a resource that failed (unreachable, an error answer, a broken stream, an ERROR event)',
      labelNames: ['resource'],
      registers,
      collect: kube('failures', false),
    });
    new Gauge({
      name: 'meshlane_source_connected',
      help: '1 while the source follows changes (the Kubernetes API watches are open; a cluster file is always 1)',
      registers,
      collect: function (this: Gauge) {
        const s = safe(() => probe().source?.());
        this.reset();
        if (s) this.set(s.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'meshlane_source_last_contact_timestamp_seconds',
      help: 'when the source last heard from the Kubernetes API (Unix time)',
      registers,
      collect: function (this: Gauge) {
        const s = safe(() => probe().source?.());
        this.reset();
        if (s?.lastContact !== undefined) this.set(s.lastContact / 1000);
      },
    });

    // ---- CNI ----
    this.cniRequests = new Counter({
      name: 'meshlane_cni_requests_total',
      help: 'CNI requests served on the agent socket, by command and result (ok, error)',
      labelNames: ['command', 'result'],
      registers,
    });
    this.cniDuration = new Histogram({
      name: 'meshlane_cni_request_duration_seconds',
      help: 'time to serve a CNI request in the agent, by command',
      labelNames: ['command'],
      buckets: CNI_BUCKETS,
      registers,
    });

    // ---- the agent ----
    new Gauge({
      name: 'meshlane_ready',
      help: '1 when the agent is ready (what /readyz answers 200 for)',
      registers,
      collect: function (this: Gauge) {
        this.set(safe(() => probe().ready?.()) ? 1 : 0);
      },
    });
    new Gauge({ name: 'meshlane_build_info', help: 'the agent build (always 1)', labelNames: ['version'], registers }).set(
      { version: opts.version ?? 'unknown' },
      1,
    );
    // the event loop lag (nodejs_eventloop_lag_*) samples with a timer; prom-client's default of 10 ms wakes the
    // idle agent 100 times a second, each turn of the loop some 0.1 ms of node's own work: most of its idle CPU
    // at node scale (perf, bench/RESULTS.md "Node scale"). A stall longer than the period is still seen whole
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

    const probe = (): MetricsProbe => this.probe;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the observers are plain objects handed to other parts
    const self = this;
    this.pipeline = {
      podHandled: (s) => self.reconcile.observe({ pass: 'pod' }, s),
      resynced: (s) => self.reconcile.observe({ pass: 'resync' }, s),
      eventApplied: (s) => self.eventToMap.observe(s),
      podError: (kind: PodErrorKind) => self.podErrors.inc({ kind }),
      mapFull: (map) => self.mapFull.inc({ map }),
    };
    this.cni = {
      served: (command, ok, seconds) => {
        self.cniRequests.inc({ command, result: ok ? 'ok' : 'error' });
        self.cniDuration.observe({ command }, seconds);
      },
    };
    // the series of every error kind and CNI command exist from the start (rate() needs a 0 before the first)
    for (const kind of POD_ERROR_KINDS) this.podErrors.inc({ kind }, 0);
    for (const command of ['ADD', 'DEL', 'CHECK']) for (const result of ['ok', 'error']) this.cniRequests.inc({ command, result }, 0);
  }

  /** What the agent offers at scrape time (replaces what was bound before). */
  bind(probe: MetricsProbe): void {
    this.probe = probe;
  }

  /** The text a scrape gets. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
