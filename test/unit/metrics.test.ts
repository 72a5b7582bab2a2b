// The metrics registry without the kernel: every kernel counter has its line in the table and the C
// enums agree with layouts.ts, names follow the Prometheus conventions, a scrape reads what the probe
// says (summed per metric, absent parts left out, a failing part never fails the scrape), the
// observers count, --metrics-address is parsed strictly, and the HTTP endpoint answers /metrics,
// /healthz and /readyz (503 with the reasons, then 200) and refuses a port in use with one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniServer } from '../../src/cni/server.js';
import { CniCode } from '../../src/cni/protocol.js';
import { AgentMetrics, STAT_METRICS, STAT_METRIC_HELP, countedMaps, statMetricPlan, type MetricsProbe } from '../../src/metrics/metrics.js';
import { MetricsServer, parseMetricsAddress, formatAddress } from '../../src/metrics/server.js';
import { agentProbe } from '../../src/metrics/agent-probe.js';
import { BYPASS_SLOTS, BypassReason, MAPS, Stat } from '../../src/dataplane/layouts.js';
import { ReadinessConditions, agentHealth } from '../../src/agent/health.js';
import { POD_ERROR_KINDS } from '../../src/agent/pipeline.js';
import { UserError } from '../../src/util/errors.js';
import { packageRoot } from '../../src/util/paths.js';
import { freePort } from '../support/scrape.js';

/** `enum <name> { PREFIX_X = n, ... }` of bpf/meshlane.h: the names (lower case, without the prefix) in index order. */
function cEnum(name: string, prefix: string): { names: string[]; max: number } {
  const h = readFileSync(join(packageRoot(), 'bpf', 'meshlane.h'), 'utf8');
  const body = new RegExp(`enum ${name} \\{([^}]*)\\}`).exec(h)?.[1];
  assert.ok(body, `enum ${name} in bpf/meshlane.h`);
  const names: string[] = [];
  let max = -1;
  for (const m of body.matchAll(new RegExp(`${prefix}([A-Z0-9_]+) = (\\d+)`, 'g'))) {
    if (m[1] === 'MAX') max = Number(m[2]);
    else {
      assert.equal(Number(m[2]), names.length, `${prefix}${m[1]} is ${names.length}`);
      names.push(m[1]!.toLowerCase());
    }
  }
  return { names, max };
}

test('layouts.ts Stat and BypassReason are the C enums, in order; bypass_stats has room for every reason', () => {
  const stat = cEnum('stat', 'STAT_');
  assert.deepEqual(stat.names, [...Stat]);
  assert.equal(stat.max, Stat.length);
  const bypass = cEnum('bypass_reason', 'BYPASS_');
  assert.deepEqual(bypass.names, [...BypassReason]);
  assert.equal(bypass.max, BypassReason.length);
  const slots = /#define BYPASS_SLOTS (\d+)/.exec(readFileSync(join(packageRoot(), 'bpf', 'meshlane.h'), 'utf8'))?.[1];
  assert.equal(Number(slots), BYPASS_SLOTS);
  assert.equal(MAPS.bypass_stats.maxEntries, BYPASS_SLOTS);
  assert.ok(BypassReason.length <= BYPASS_SLOTS);
});

test('every stats index has a metric line; one metric keeps one set of label names; every metric has help', () => {
  for (const name of Stat) assert.ok(STAT_METRICS[name], `STAT_METRICS has ${name}`);
  const plan = statMetricPlan();
  for (const [metric] of plan) assert.ok(STAT_METRIC_HELP[metric], `help for ${metric}`);
  assert.equal(
    [...plan.values()].reduce((n, p) => n + p.series.length, 0),
    Stat.length,
    'each counter is one series',
  );
  assert.throws(() => statMetricPlan([...Stat, 'new_counter']), new RegExp(`stats index ${Stat.length} \\(new_counter\\) has no line in STAT_METRICS`));
});

test('names follow the Prometheus conventions: meshlane_ prefix, snake case, counters _total, histograms in seconds', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  const all = await m.registry.getMetricsAsJSON();
  assert.ok(all.length >= 20);
  for (const x of all) {
    assert.match(x.name, /^meshlane_[a-z0-9_]+$/, x.name);
    assert.ok(x.help.length > 10, `${x.name} has help`);
    const type = String(x.type);
    if (type === 'counter') assert.match(x.name, /_total$/, `${x.name}: a counter ends in _total`);
    else assert.doesNotMatch(x.name, /_total$/, `${x.name}: only counters end in _total`);
    if (type === 'histogram') assert.match(x.name, /_seconds$/, `${x.name}: durations in seconds`);
  }
});

/** The value of one series in Prometheus text, or undefined. */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === series) return Number(line.slice(i + 1));
  }
  return undefined;
}

test('a scrape reads the probe: kernel counters summed into their metrics, reasons, map entries against capacity, pods, source', async () => {
  const m = new AgentMetrics({ defaultMetrics: false, version: '9.9.9' });
  const stats: Array<bigint | null> = Stat.map(() => 0n);
  const idx = (n: (typeof Stat)[number]): number => Stat.indexOf(n);
  const probe: MetricsProbe = {
    stats: () => stats,
    bypass: () => BypassReason.map((r) => (r === 'excluded_port' ? 3n : 0n)),
    mapEntries: () => ({ pods: 2, pod_ports: 5, orig_by_tuple: 1 }),
    pods: () => ({ states: { captured: 2, pending: 1, skipped: 4 }, errors: { map_full: 1 } }),
    kube: () => ({ pods: { listed: 3, opened: 5, failures: 2 }, namespaces: { listed: 1, opened: 1, failures: 0 } }),
    source: () => ({ connected: true, lastContact: 1_700_000_000_000 }),
    ready: () => true,
  };
  m.bind(probe);
  let t = await m.scrape();
  assert.equal(value(t, 'meshlane_connections_captured_total{direction="outbound",hook="connect"}'), 0, 'a zero is a series (rate() needs it)');
  stats[idx('captured_outbound')] = 7n;
  stats[idx('captured_inbound')] = 2n;
  stats[idx('inbound_captured')] = 5n;
  stats[idx('dns_captured')] = 4n;
  stats[idx('bypassed')] = 3n;
  t = await m.scrape();
  assert.equal(value(t, 'meshlane_connections_captured_total{direction="outbound",hook="connect"}'), 7);
  assert.equal(value(t, 'meshlane_connections_captured_total{direction="inbound",hook="connect"}'), 2);
  assert.equal(value(t, 'meshlane_connections_captured_total{direction="inbound",hook="sk_lookup"}'), 5);
  assert.equal(value(t, 'meshlane_dns_redirects_total'), 4);
  assert.equal(value(t, 'meshlane_connections_bypassed_total'), 3);
  assert.equal(value(t, 'meshlane_bypass_decisions_total{reason="excluded_port"}'), 3);
  assert.equal(value(t, 'meshlane_bypass_decisions_total{reason="not_included"}'), 0);
  assert.equal(value(t, 'meshlane_map_entries{map="pods"}'), 2);
  assert.equal(value(t, 'meshlane_map_entries{map="orig_by_tuple"}'), 1);
  assert.equal(value(t, 'meshlane_map_entries{map="stats"}'), undefined, 'arrays are not counted');
  assert.equal(value(t, 'meshlane_map_capacity{map="pods"}'), MAPS.pods.maxEntries);
  assert.equal(value(t, 'meshlane_map_capacity{map="sock_state"}'), undefined, 'socket storage has no capacity');
  assert.equal(value(t, 'meshlane_pods{state="skipped"}'), 4);
  assert.equal(value(t, 'meshlane_pods_with_errors{kind="map_full"}'), 1);
  assert.equal(value(t, 'meshlane_kube_relists_total{resource="pods"}'), 2, 'the first list is not a relist');
  assert.equal(value(t, 'meshlane_kube_watch_restarts_total{resource="pods"}'), 4);
  assert.equal(value(t, 'meshlane_kube_request_failures_total{resource="pods"}'), 2);
  assert.equal(value(t, 'meshlane_kube_relists_total{resource="namespaces"}'), 0);
  assert.equal(value(t, 'meshlane_source_connected'), 1);
  assert.equal(value(t, 'meshlane_source_last_contact_timestamp_seconds'), 1_700_000_000);
  assert.equal(value(t, 'meshlane_ready'), 1);
  assert.equal(value(t, 'meshlane_build_info{version="9.9.9"}'), 1);
  assert.match(t, /# TYPE meshlane_connections_captured_total counter/);
  assert.match(t, /# TYPE meshlane_map_entries gauge/);
});

test('a scrape never fails: parts not there yet are left out; a part that cannot be read keeps its last values (no counter reset)', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  let t = await m.scrape();
  assert.equal(value(t, 'meshlane_connections_captured_total{direction="outbound",hook="connect"}'), undefined, 'no maps loaded: no kernel series');
  assert.equal(value(t, 'meshlane_map_entries{map="pods"}'), undefined);
  assert.equal(value(t, 'meshlane_ready'), 0);
  let fail = false;
  m.bind({
    stats: () => {
      if (fail) throw new Error('EPERM');
      return Stat.map((n) => (n === 'connect_seen' ? 9n : 0n));
    },
    mapEntries: () => undefined,
  });
  t = await m.scrape();
  assert.equal(value(t, 'meshlane_connect_decisions_total'), 9);
  fail = true;
  t = await m.scrape();
  assert.equal(value(t, 'meshlane_connect_decisions_total'), 9, 'kept, not reset to 0');
  assert.equal(value(t, 'meshlane_map_capacity{map="pods"}'), MAPS.pods.maxEntries);
});

test('the observers count: pod errors by kind, full maps by map, reconcile and event-to-map histograms, CNI requests', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  let t = await m.scrape();
  for (const kind of POD_ERROR_KINDS) assert.equal(value(t, `meshlane_pod_errors_total{kind="${kind}"}`), 0, `${kind} from the start`);
  assert.equal(value(t, 'meshlane_cni_requests_total{command="ADD",result="ok"}'), 0);
  m.pipeline.podError('map_full');
  m.pipeline.podError('map_full');
  m.pipeline.mapFull('pod_cidrs4');
  m.pipeline.podHandled(0.002);
  m.pipeline.resynced(0.3);
  m.pipeline.eventApplied(0.004);
  m.cni.served('ADD', true, 0.02);
  m.cni.served('ADD', false, 0.5);
  m.cni.served('DEL', true, 0.001);
  t = await m.scrape();
  assert.equal(value(t, 'meshlane_pod_errors_total{kind="map_full"}'), 2);
  assert.equal(value(t, 'meshlane_map_full_total{map="pod_cidrs4"}'), 1);
  assert.equal(value(t, 'meshlane_reconcile_duration_seconds_count{pass="pod"}'), 1);
  assert.equal(value(t, 'meshlane_reconcile_duration_seconds_count{pass="resync"}'), 1);
  assert.equal(value(t, 'meshlane_reconcile_duration_seconds_bucket{le="0.0025",pass="pod"}'), 1);
  assert.equal(value(t, 'meshlane_event_to_map_seconds_count'), 1);
  assert.equal(value(t, 'meshlane_cni_requests_total{command="ADD",result="ok"}'), 1);
  assert.equal(value(t, 'meshlane_cni_requests_total{command="ADD",result="error"}'), 1);
  assert.equal(value(t, 'meshlane_cni_requests_total{command="DEL",result="ok"}'), 1);
  assert.equal(value(t, 'meshlane_cni_request_duration_seconds_count{command="ADD"}'), 2);
});

test('agentProbe: entries of the maps the pipeline writes from its mirror, the others by a key walk at most every few seconds', () => {
  let clock = 0;
  let walks = 0;
  const walk = (n: number) => ({ handle: { keys: () => (walks++, Array.from({ length: n }, () => Buffer.alloc(1))) } });
  const maps: Record<string, unknown> = { orig_by_tuple: walk(3), listeners: walk(2), sock_pairs: walk(0), pods: walk(99) };
  const dp = { maps } as never;
  const probe = agentProbe(
    {
      dataplane: () => dp,
      pipeline: () => ({ podCounts: () => ({ states: { captured: 0, pending: 0, skipped: 0 }, errors: {} }), mapEntries: () => ({ pods: 1 }) }),
      source: {
        description: 'x',
        start: async () => undefined,
        stop: async () => undefined,
        health: () => ({ synced: true, connected: true }),
        events: { warn: () => undefined },
      },
      sourceStarted: () => true,
      ready: () => true,
    },
    () => clock,
  );
  const e = probe.mapEntries!()!;
  assert.equal(e.pods, 1, 'the mirror, not a walk');
  assert.equal(e.orig_by_tuple, 3);
  assert.equal(e.listeners, 2);
  const after = walks;
  clock += 1000;
  probe.mapEntries!();
  assert.equal(walks, after, 'no walk within the interval');
  clock += 5000;
  probe.mapEntries!();
  assert.ok(walks > after, 'walked again after it');
  assert.ok(countedMaps().some((d) => d.name === 'orig_by_tuple'));
});

test('--metrics-address: HOST:PORT, [v6]:PORT or off; anything else is one line with the fix', () => {
  assert.deepEqual(parseMetricsAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseMetricsAddress('[::1]:9464'), { host: '::1', port: 9464 });
  assert.deepEqual(parseMetricsAddress('0.0.0.0:1'), { host: '0.0.0.0', port: 1 });
  assert.equal(parseMetricsAddress('off'), undefined);
  assert.equal(formatAddress({ host: '::1', port: 80 }), '[::1]:80');
  for (const bad of [
    '',
    '9464',
    ':9464',
    'localhost:9464',
    '127.0.0.1:0',
    '127.0.0.1:65536',
    '127.0.0.1:x',
    '::1:9464',
    '[127.0.0.1]:9464',
    '1.2.3:80',
    'OFF',
  ]) {
    assert.throws(
      () => parseMetricsAddress(bad),
      (e: unknown) =>
        e instanceof UserError && /--metrics-address/.test(e.message) && /give --metrics-address HOST:PORT/.test(e.message) && !e.message.includes('\n'),
      JSON.stringify(bad),
    );
  }
});

test('readiness conditions: each one that is not met is a reason; removed, it is gone', () => {
  const r = new ReadinessConditions();
  let serving = false;
  const remove = r.add('cni', () => (serving ? undefined : 'the CNI socket is not serving yet'));
  assert.deepEqual(r.reasons(), ['the CNI socket is not serving yet']);
  const h = agentHealth({
    programsAttached: true,
    pinsAdopted: true,
    firstSync: true,
    source: { synced: true, connected: true },
    fullMaps: [],
    extra: r.reasons(),
  });
  assert.equal(h.ready, false);
  assert.deepEqual(h.reasons, ['the CNI socket is not serving yet']);
  serving = true;
  assert.deepEqual(r.reasons(), []);
  serving = false;
  remove();
  assert.deepEqual(r.reasons(), []);
  r.add('broken', () => {
    throw new Error('boom');
  });
  assert.deepEqual(r.reasons(), ['broken: boom']);
});

test('readiness: not ready while the start-up adoption of older proxy listeners runs', () => {
  const base = { programsAttached: true, pinsAdopted: true, firstSync: true, source: { synced: true, connected: true }, fullMaps: [] };
  const busy = agentHealth({ ...base, startupAdoption: 2 });
  assert.equal(busy.ready, false);
  assert.equal(busy.startupAdoption, 2);
  assert.match(busy.reasons.join(), /proxy listeners of 2 pod\(s\)/);
  const done = agentHealth({ ...base, startupAdoption: 0 });
  assert.equal(done.ready, true);
  assert.equal(done.startupAdoption, undefined);
});

test('the endpoint: /metrics in Prometheus text, /healthz, /readyz 503 with the reasons then 200, 404, 405; a port in use is one line', async () => {
  const m = new AgentMetrics();
  const port = await freePort();
  let ready = { ready: false, reasons: ['the programs are not attached yet'] };
  let live = true;
  const srv = await MetricsServer.listen({ host: '127.0.0.1', port }, m, { live: () => live, readiness: () => ready });
  try {
    const base = `http://127.0.0.1:${port}`;
    const r = await fetch(`${base}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const body = await r.text();
    assert.match(body, /# TYPE meshlane_pods gauge/);
    assert.match(body, /process_cpu_seconds_total/, 'the process metrics too');
    assert.match(body, /^nodejs_eventloop_lag_p99_seconds \S+$/m, 'and the event loop lag (sampled every EVENT_LOOP_SAMPLE_MS)');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    const nr = await fetch(`${base}/readyz`);
    assert.equal(nr.status, 503);
    assert.match(await nr.text(), /the programs are not attached yet/);
    ready = { ready: true, reasons: [] };
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
    live = false;
    assert.equal((await fetch(`${base}/healthz`)).status, 503);
    await assert.rejects(
      MetricsServer.listen({ host: '127.0.0.1', port }, m, { live: () => true, readiness: () => ready }),
      (e: unknown) =>
        e instanceof UserError &&
        e.message ===
          `cannot serve metrics on 127.0.0.1:${port}: 127.0.0.1:${port} is in use by another process: stop it, or give another --metrics-address HOST:PORT (or off)`,
    );
  } finally {
    await srv.close();
  }
});

test('the CNI server reports each ADD, CHECK and DEL to its observer: ok or error, and how long', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-metrics-cni-'));
  const socketPath = join(dir, 'cni.sock');
  const m = new AgentMetrics({ defaultMetrics: false });
  const prev = {
    cniVersion: '1.0.0',
    ips: [{ address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 }],
    interfaces: [{ name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' }],
  };
  let failAdd = false;
  const server = await CniServer.listen({
    socketPath,
    observer: m.cni,
    handler: {
      add: async (req) => (failAdd ? { error: { code: CniCode.AgentFailure, msg: 'no' } } : { result: req.prevResult }),
      check: async () => ({ ok: true }),
      del: async () => undefined,
    },
  });
  const send = (command: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const config = JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'meshlane-cni', socket: socketPath, prevResult: prev });
      const line = JSON.stringify({
        v: 1,
        command,
        containerId: 'c1',
        netns: '/var/run/netns/blue',
        ifname: 'eth0',
        args: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web',
        path: '/opt/cni/bin',
        config,
      });
      const s = connect(socketPath, () => s.write(`${line}\n`));
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
  try {
    await send('ADD');
    failAdd = true;
    await send('ADD');
    await send('CHECK');
    await send('DEL');
    const t = await m.scrape();
    assert.equal(value(t, 'meshlane_cni_requests_total{command="ADD",result="ok"}'), 1);
    assert.equal(value(t, 'meshlane_cni_requests_total{command="ADD",result="error"}'), 1);
    assert.equal(value(t, 'meshlane_cni_requests_total{command="CHECK",result="ok"}'), 1);
    assert.equal(value(t, 'meshlane_cni_requests_total{command="DEL",result="ok"}'), 1);
    assert.equal(value(t, 'meshlane_cni_request_duration_seconds_count{command="ADD"}'), 2);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
