// The agent's metrics and health endpoint, end to end: the real agent (`meshlane agent
// --metrics-address 127.0.0.1:<free port>`) over sandbox pods, scraped while real traffic runs. The
// kernel's per-CPU counters move by exactly what the traffic did (N captured outbound connections: +N;
// inbound ones steered by sk_lookup: +K; each bypass under the rule that decided it); the map entries
// gauge is what `meshlane dump` finds in the maps; a bad annotation is one pod error of kind settings;
// /healthz is 200; /readyz is 503 while the source has not delivered its state (the Kubernetes API
// down at start: deterministic) and 200 after it; relists and watch restarts are counted; a bad
// --metrics-address and a port in use are one line and exit 2, with nothing pinned.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer } from '../support/kube/server.js';
import type { KubeObject } from '../support/kube/resources.js';
import { countedMaps } from '../../src/metrics/metrics.js';
import { BypassReason } from '../../src/dataplane/layouts.js';
import {
  APP,
  PROXY,
  POD_V4,
  SVC_V4,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  startKubeAgent,
  stopAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  cli,
  clusterList,
  type Topology,
  type AgentRun,
} from '../support/harness.js';
import { freePort, scrapeMetrics } from '../support/scrape.js';

const NS = namespaceObject('demo', { 'istio-injection': 'enabled' });
const EXCLUDE_PORTS = 'traffic.sidecar.istio.io/excludeOutboundPorts';
const EXCLUDE_RANGES = 'traffic.sidecar.istio.io/excludeOutboundIPRanges';
const OUTBOUND = 'meshlane_connections_captured_total{direction="outbound",hook="connect"}';
const INBOUND = 'meshlane_connections_captured_total{direction="inbound",hook="sk_lookup"}';
const BYPASSED = 'meshlane_connections_bypassed_total';
const DECISIONS = 'meshlane_connect_decisions_total';
const reason = (r: (typeof BypassReason)[number]): string => `meshlane_bypass_decisions_total{reason="${r}"}`;
const captured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;

let topo: Topology;
let agent: AgentRun | undefined;
let api: KubeApiServer | undefined;
let port = 0;
let tmp = '';

const url = (path: string): string => `http://127.0.0.1:${port}${path}`;

/** One scrape: series (name{labels}) -> value. */
const scrape = (): Promise<Map<string, number>> => scrapeMetrics(port);

const get = (m: Map<string, number>, series: string): number => {
  const v = m.get(series);
  assert.ok(v !== undefined, `${series} is in the scrape`);
  return v;
};
const delta = (a: Map<string, number>, b: Map<string, number>, series: string): number => get(b, series) - get(a, series);
const status = async (path: string): Promise<{ code: number; body: string }> => {
  const r = await fetch(url(path));
  return { code: r.status, body: await r.text() };
};
const podState = () => agent!.status()?.pods.find((p) => p.ref.name === 'client');

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-metrics-'));
  topo = await makeTopology({ prefix: 'mlmt' });
  port = await freePort();
  agent = await startAgent(topo.sb, [NS, podObject()], 'metrics', undefined, ['--metrics-address', `127.0.0.1:${port}`]);
});
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
  await api?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('/healthz 200, /readyz 200 once synced; the map entries gauge is what the maps hold; one captured pod', async () => {
  await waitFor(() => podState()?.state === 'captured', 10_000, 'the pod captured');
  assert.match(await runCase(topo.pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` }), captured);
  assert.deepEqual(await status('/healthz'), { code: 200, body: 'ok\n' });
  const ready = await status('/readyz');
  assert.deepEqual(ready, { code: 200, body: 'ready\n' });
  const m = await scrape();
  const dump = dumpJson(agent!.bpffs).maps;
  let compared = 0;
  for (const d of countedMaps()) {
    const rows = dump[d.name];
    if (!Array.isArray(rows)) continue;
    assert.equal(get(m, `meshlane_map_entries{map="${d.name}"}`), rows.length, `${d.name}: the gauge is what dump lists`);
    assert.equal(get(m, `meshlane_map_capacity{map="${d.name}"}`), d.maxEntries);
    compared++;
  }
  assert.ok(compared >= 10, `compared ${compared} maps`);
  assert.equal(get(m, 'meshlane_map_entries{map="pods"}'), 1, 'one pod');
  assert.equal(get(m, 'meshlane_map_entries{map="pod_by_ip4"}'), 1);
  assert.ok(get(m, 'meshlane_map_entries{map="listeners"}') >= 1, 'the proxy listener (kernel-written) is counted too');
  assert.equal(get(m, 'meshlane_pods{state="captured"}'), 1);
  assert.equal(get(m, 'meshlane_pods{state="pending"}'), 0);
  assert.equal(get(m, 'meshlane_ready'), 1);
  assert.equal(get(m, 'meshlane_source_connected'), 1);
  assert.ok(get(m, 'meshlane_reconcile_duration_seconds_count{pass="pod"}') >= 1);
  assert.ok(m.has('process_cpu_seconds_total'));
});

test('the counters move by exactly what the traffic did, scraped while it runs', async () => {
  const N = 6; // captured outbound: app -> service VIP
  const K = 4; // inbound from outside the pod: sk_lookup to the proxy
  const L = 2; // app -> 127.0.0.1:9090: local (lo, not the proxy: rule 4b comes before the loopback rule)
  const P = 3; // the proxy's own connection: proxy_owner
  const Q = 2; // app -> its own pod IP: local
  const s0 = await scrape();
  // scrapes all along the traffic: each succeeds, and no counter ever goes back
  let scraping = true;
  let scrapes = 0;
  let last = get(s0, OUTBOUND);
  const scraper = (async () => {
    while (scraping) {
      const m = await scrape();
      const v = get(m, OUTBOUND);
      assert.ok(v >= last, `the outbound counter went back: ${last} -> ${v}`);
      last = v;
      scrapes++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    for (let i = 0; i < N; i++) assert.match(await runCase(topo.pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` }), captured);
    for (let i = 0; i < K; i++) {
      const r = await runCase(topo.pod, { name: 'in', uid: APP, gid: APP, to: `${POD_V4}:8080`, on: topo.svc });
      assert.match(r, /^proxy-inbound:15006 peer=10\.244\.0\.200 orig=10\.244\.0\.10:8080/);
    }
    for (let i = 0; i < L; i++) assert.match(await runCase(topo.pod, { name: 'lo', uid: APP, gid: APP, to: '127.0.0.1:9090' }), /^app:9090 /);
    for (let i = 0; i < P; i++) assert.match(await runCase(topo.pod, { name: 'proxy', uid: PROXY, gid: PROXY, to: `${SVC_V4}:80` }), /^svc:80 /);
    for (let i = 0; i < Q; i++) assert.match(await runCase(topo.pod, { name: 'self', uid: APP, gid: APP, to: `${POD_V4}:8080` }), /^app:8080 /);
  } finally {
    scraping = false;
    await scraper;
  }
  const s1 = await scrape();
  const moved = Object.fromEntries(BypassReason.map((r) => [r, delta(s0, s1, reason(r))]));
  assert.ok(scrapes >= 3, `scraped ${scrapes} times while the traffic ran`);
  assert.equal(delta(s0, s1, OUTBOUND), N, 'captured outbound');
  assert.equal(delta(s0, s1, INBOUND), K, 'captured inbound (sk_lookup)');
  assert.equal(delta(s0, s1, 'meshlane_connections_captured_total{direction="inbound",hook="connect"}'), 0);
  assert.equal(moved.proxy_owner, P, JSON.stringify(moved));
  assert.equal(moved.local, L + Q, JSON.stringify(moved));
  assert.equal(delta(s0, s1, BYPASSED), L + P + Q, 'bypassed: the sum of the reasons');
  assert.equal(
    BypassReason.reduce((n, r) => n + delta(s0, s1, reason(r)), 0),
    L + P + Q,
    'no other reason moved',
  );
  assert.equal(delta(s0, s1, DECISIONS), N + L + P + Q, 'every connect of the pod was decided once (inbound is not a connect of the pod)');
  assert.equal(delta(s0, s1, 'meshlane_dns_redirects_total'), 0);
  assert.equal(delta(s0, s1, 'meshlane_inbound_dropped_total{reason="no_listener"}'), 0);
});

test('an excluded port: a bypass by reason excluded_port; a bad annotation: one pod error of kind settings until it clears; event-to-map observed', async () => {
  const e0 = await scrape();
  agent!.write([NS, podObject({ annotations: { [EXCLUDE_PORTS]: '8080' } })]);
  await waitFor(() => (podState()?.settings.excludeOutboundPorts ?? []).includes(8080), 10_000, 'the exclusion applied');
  const s0 = await scrape();
  assert.ok(delta(e0, s0, 'meshlane_event_to_map_seconds_count') >= 1, 'the change was timed from the event to the maps');
  for (let i = 0; i < 3; i++) assert.match(await runCase(topo.pod, { name: 'x', uid: APP, gid: APP, to: `${SVC_V4}:8080` }), /^svc:8080 /);
  const s1 = await scrape();
  assert.equal(delta(s0, s1, reason('excluded_port')), 3);
  assert.equal(delta(s0, s1, BYPASSED), 3);
  assert.equal(delta(s0, s1, OUTBOUND), 0);

  const errors0 = get(s1, 'meshlane_pod_errors_total{kind="settings"}');
  agent!.write([NS, podObject({ annotations: { [EXCLUDE_RANGES]: '10.96.0.0/33' } })]);
  await waitFor(() => (podState()?.errors ?? []).length > 0, 10_000, 'the error in status');
  const s2 = await scrape();
  assert.equal(get(s2, 'meshlane_pod_errors_total{kind="settings"}'), errors0 + 1);
  assert.equal(get(s2, 'meshlane_pods_with_errors{kind="settings"}'), 1);
  agent!.write([NS, podObject()]);
  await waitFor(() => podState()?.state === 'captured' && (podState()?.errors ?? []).length === 0, 10_000, 'the error cleared');
  const s3 = await scrape();
  assert.equal(get(s3, 'meshlane_pods_with_errors{kind="settings"}'), 0);
  assert.equal(get(s3, 'meshlane_pod_errors_total{kind="settings"}'), errors0 + 1, 'a counter: it stays');
});

test('a bad --metrics-address and a port in use: one line, exit 2, nothing pinned', async () => {
  const file = join(tmp, 'cluster.json');
  writeFileSync(file, clusterList([NS]));
  const bpffs = '/sys/fs/bpf/meshlane-test-metrics-refused';
  const run = (address: string) =>
    cli([
      'agent',
      '--cluster-file',
      file,
      '--cgroup-root',
      topo.sb.cgroupRoot,
      '--bpffs',
      bpffs,
      '--state-dir',
      join(tmp, 'state'),
      '--metrics-address',
      address,
    ]);
  const bad = run('localhost:9464');
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    'meshlane: --metrics-address "localhost:9464": "localhost" is not an IPv4 address (a name would need a lookup at start): give --metrics-address HOST:PORT (an IP address and a port 1-65535, e.g. 127.0.0.1:9464 or [::1]:9464), or off\n',
  );
  const busy = createServer();
  const taken = await freePort();
  await new Promise<void>((r) => busy.listen(taken, '127.0.0.1', r));
  try {
    const inUse = run(`127.0.0.1:${taken}`);
    assert.equal(inUse.code, 2, inUse.stderr);
    assert.equal(
      inUse.stderr,
      `meshlane: cannot serve metrics on 127.0.0.1:${taken}: 127.0.0.1:${taken} is in use by another process: stop it, or give another --metrics-address HOST:PORT (or off)\n`,
    );
  } finally {
    await new Promise<void>((r) => busy.close(() => r()));
  }
  assert.equal(existsSync(bpffs), false, 'nothing was pinned');
});

test('/readyz is 503 while the Kubernetes API has not delivered its state, 200 after; relists and watch restarts are counted', async () => {
  api = await KubeApiServer.start();
  const kubeconfig = api.writeKubeconfig(join(tmp, 'kubeconfig'));
  api.store.create('namespaces', NS as KubeObject);
  await api.stop({ watches: 'abrupt' });
  await stopAgent(agent, 'SIGTERM');
  // the same pins (the prior run's directory and bpffs), now on the Kubernetes API, which is down
  agent = await startKubeAgent(topo.sb, kubeconfig, 'sandbox-node', 'metrics', agent, { args: ['--metrics-address', `127.0.0.1:${port}`] });
  const nr = await status('/readyz');
  assert.equal(nr.code, 503);
  assert.match(nr.body, /^not ready:\n/);
  assert.match(nr.body, /- the source has not delivered a complete state yet\n/);
  assert.equal((await status('/healthz')).code, 200, 'alive while not ready');
  let m = await scrape();
  for (const end = Date.now() + 20_000; get(m, 'meshlane_kube_request_failures_total{resource="pods"}') < 1; m = await scrape()) {
    assert.ok(Date.now() < end, 'a failed list of pods counted within 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(get(m, 'meshlane_ready'), 0, 'not ready');
  assert.equal(get(m, 'meshlane_source_connected'), 0, 'not connected');
  assert.equal(get(m, 'meshlane_kube_relists_total{resource="pods"}'), 0, 'nothing listed yet');
  assert.equal(get(m, 'meshlane_kube_watch_restarts_total{resource="pods"}'), 0, 'no watch opened yet');
  assert.equal(get(m, 'meshlane_map_entries{map="pods"}'), 1, 'the pinned pod stays in the maps while the API is down');

  await api.start();
  const end = Date.now() + 30_000;
  while ((await status('/readyz')).code !== 200) {
    assert.ok(Date.now() < end, 'ready within 30 s of the API server coming back');
    await new Promise((r) => setTimeout(r, 100));
  }
  m = await scrape();
  assert.equal(get(m, 'meshlane_ready'), 1);
  assert.equal(get(m, 'meshlane_source_connected'), 1);
  assert.equal(get(m, 'meshlane_pods{state="captured"}'), 0, 'the API has no pods');
  // the pinned pod of no pod in the API goes with the next full resync (every 10 s)
  for (const end = Date.now() + 15_000; get(m, 'meshlane_map_entries{map="pods"}') !== 0; m = await scrape()) {
    assert.ok(Date.now() < end, 'the pinned pod released within 15 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(get(m, 'meshlane_reconcile_duration_seconds_count{pass="resync"}') >= 1);

  const watchesPods = (r: { verb: string; resource: string }): boolean => r.verb === 'watch' && r.resource === 'pods';
  const series = (what: string): string => `meshlane_kube_${what}_total{resource="pods"}`;
  // a watch the server ends: re-watched from its resourceVersion, no relist
  await api.waitForWatches(1, watchesPods);
  const r0 = get(m, series('watch_restarts'));
  const l0 = get(m, series('relists'));
  const w0 = api.requests.filter(watchesPods).length;
  assert.equal(api.endWatches('graceful', watchesPods), 1);
  await waitFor(() => api!.requests.filter(watchesPods).length >= w0 + 1, 10_000, 'the re-watch');
  const afterEnd = await scrape();
  assert.equal(get(afterEnd, series('watch_restarts')), r0 + 1);
  assert.equal(get(afterEnd, series('relists')), l0);
  // history compacted while the watch was cut: 410 on the re-watch, one relist
  const fault = api.fail({ count: Infinity, match: watchesPods, answer: 'hangup' });
  api.endWatches('abrupt', watchesPods);
  api.store.create('namespaces', namespaceObject('moved', {}) as KubeObject);
  api.compact();
  await waitFor(() => fault.hits >= 1, 15_000, 'the re-watch refused');
  fault.clear();
  const end2 = Date.now() + 20_000;
  let relisted: Map<string, number>;
  for (;;) {
    relisted = await scrape();
    if (get(relisted, series('relists')) >= l0 + 1 && (await status('/readyz')).code === 200) break;
    assert.ok(Date.now() < end2, 'relisted within 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(get(relisted, series('relists')), l0 + 1, 'exactly one relist');
  assert.ok(get(relisted, series('request_failures')) >= 1);
});
