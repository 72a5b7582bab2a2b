// The Kubernetes API source (src/sources/kube.ts, src/kube/reflector.ts) against the suite's API server
// (test/support/kube) through the real client-node configuration, over HTTPS on loopback: the initial
// sync, every way a watch breaks (with a pod deleted and a pod added meanwhile: the consumer ends with
// the server's state), the API down at start and later, the staleness watchdog, credentials re-read
// after a 401, and the exact set of requests the source makes (the ClusterRole it needs).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer, type KubeApiServerOptions, type RequestRecord } from '../support/kube/server.js';
import { namespace, pod } from '../support/kube/fixtures.js';
import { kubeconfigYaml } from '../support/kube/kubeconfig.js';
import { notAllowed, unusedGrants, type PolicyRule } from '../support/kube/rbac.js';
import { Consumer, FreezableProxy, serverState } from '../support/kube/source-harness.js';
import { KubeSource } from '../../src/sources/kube.js';
import { sourceFromOptions } from '../../src/sources/select.js';
import { kubeconfigConnection } from '../../src/kube/config.js';
import { backoffDelay, type Tuning } from '../../src/kube/reflector.js';

const T = { timeout: 60_000 };

/** short timings so that recoveries take milliseconds; the logic is the production one */
const FAST: Partial<Tuning> = { watchTimeoutSeconds: 30, staleSlackMs: 5000, requestTimeoutMs: 5000, backoffInitialMs: 20, backoffMaxMs: 250 };

const isPodWatch = (r: RequestRecord): boolean => r.verb === 'watch' && r.resource === 'pods';
const isPodList = (r: RequestRecord): boolean => r.verb === 'list' && r.resource === 'pods';

interface Setup {
  s: KubeApiServer;
  src: KubeSource;
  c: Consumer;
  kubeconfig: string;
  dir: string;
}

async function setup(
  t: TestContext,
  o: { server?: KubeApiServerOptions; tuning?: Partial<Tuning>; start?: boolean; seed?: (s: KubeApiServer) => void; stopped?: boolean } = {},
): Promise<Setup> {
  const s = await KubeApiServer.start(o.server);
  t.after(() => s.close());
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-kube-source-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = s.writeKubeconfig(join(dir, 'kubeconfig'));
  o.seed?.(s);
  if (o.stopped) await s.stop();
  const c = new Consumer();
  const src = await sourceFromOptions({ kubeconfig, nodeName: 'n1' }, {}, { tuning: { ...FAST, ...o.tuning }, onHealth: c.onHealth });
  assert.ok(src instanceof KubeSource);
  t.after(() => src.stop());
  if (o.start !== false) await src.start(c.handlers);
  return { s, src, c, kubeconfig, dir };
}

const seedPods = (s: KubeApiServer): void => {
  s.store.create('pods', pod({ name: 'stays', node: 'n1' }));
  s.store.create('pods', pod({ name: 'goes', node: 'n1' }));
  s.store.create('pods', pod({ name: 'other', node: 'n2' }));
};

/** the changes a test makes while the source is away */
function changeWhileAway(s: KubeApiServer): void {
  s.store.delete('pods', 'default', 'goes');
  s.store.create('pods', pod({ name: 'came', namespace: 'kube-system', node: 'n1' }));
  s.store.patch('pods', 'default', 'stays', 'application/merge-patch+json', { metadata: { labels: { v: '2' } } });
  s.store.create('pods', pod({ name: 'elsewhere', node: 'n2' }));
}

const synced = (x: Setup): Promise<void> => x.c.waitFor('synced and connected', () => x.src.health().synced && x.src.health().connected);

// ---- the first sync ----

test('initial sync: nothing until both kinds are listed, then one replace with both (pods of this node only), then upserts and deletes', T, async (t) => {
  const x = await setup(t, {
    start: false,
    tuning: { pageSize: 2 },
    seed: (s) => {
      s.store.create('namespaces', namespace('mesh', { 'istio-injection': 'enabled' }));
      for (const n of ['a', 'b', 'c']) s.store.create('pods', pod({ name: n, namespace: 'mesh', node: 'n1' }));
      s.store.create('pods', pod({ name: 'theirs', node: 'n2' }));
      s.store.create('pods', pod({ name: 'unscheduled' }));
    },
  });
  const { s, src, c } = x;
  // the pod list is held: the namespaces are known first, and nothing may go out yet
  s.delay({ ms: 400, count: 1, match: isPodList });
  await src.start(c.handlers);
  assert.deepEqual(src.health(), { synced: false, connected: false }, 'start() resolves before anything is known');
  await s.waitForRequest(isPodList);
  await s.waitForRequest((r) => r.verb === 'watch' && r.resource === 'namespaces');
  s.store.create('namespaces', namespace('late', { 'istio-injection': 'enabled' }));
  await c.waitFor('the first event', () => c.events.length > 0);
  const first = c.events[0];
  assert.equal(first?.type, 'replace');
  assert.equal(c.events.length, 1, 'one replace, no event before it');
  if (first?.type !== 'replace') return;
  const names = (l: unknown[]): string[] => l.map((o) => (o as { metadata: { name: string } }).metadata.name).sort();
  assert.deepEqual(names(first.pods), ['a', 'b', 'c'], 'only the pods of n1, all pages of the list');
  assert.deepEqual(
    names(first.namespaces),
    ['default', 'kube-node-lease', 'kube-public', 'kube-system', 'late', 'mesh'],
    'the namespace created while the pods were listed is in it',
  );
  for (const o of [...first.pods, ...first.namespaces] as Array<{ kind?: string; apiVersion?: string; metadata: { creationTimestamp: unknown } }>) {
    assert.ok(o.kind === 'Pod' || o.kind === 'Namespace', 'listed objects carry their kind, as watched ones do');
    assert.equal(o.apiVersion, 'v1');
    assert.equal(typeof o.metadata.creationTimestamp, 'string', 'the API JSON, not deserialised objects');
  }
  await synced(x);
  assert.ok(
    s.requests.some((r) => isPodList(r) && r.query.continue),
    'the pod list came in pages',
  );

  s.store.create('pods', pod({ name: 'd', namespace: 'mesh', node: 'n1' }));
  s.store.create('pods', pod({ name: 'not-mine', node: 'n2' }));
  s.store.patch('pods', 'mesh', 'a', 'application/merge-patch+json', { metadata: { annotations: { x: '1' } } });
  s.store.delete('pods', 'mesh', 'b');
  s.store.patch('namespaces', undefined, 'mesh', 'application/merge-patch+json', { metadata: { labels: { 'istio-injection': 'disabled' } } });
  await c.converged(s);
  const rest = c.events
    .slice(1)
    .map((e) => (e.type === 'replace' ? 'replace' : `${e.type} ${e.kind} ${(e.object as { metadata: { name: string } }).metadata.name}`));
  assert.deepEqual(rest, ['upsert Pod d', 'upsert Pod a', 'delete Pod b', 'upsert Namespace mesh']);
  assert.deepEqual(c.errors, []);
});

// ---- a watch breaks: the source converges, health goes not connected and back ----

interface Away {
  /** break the watch; resolves when the source is away (the changes come next) */
  breakIt(x: Setup): Promise<void>;
  /** let it come back (default: it comes back by itself) */
  heal?(x: Setup): Promise<void>;
  /** a relist is expected (the history is gone) rather than a resumed watch */
  relist: boolean;
  /** an error line the source must have reported */
  error?: RegExp;
}

async function awayAndBack(t: TestContext, a: Away): Promise<Setup> {
  const x = await setup(t, { seed: seedPods });
  const { s, src, c } = x;
  await synced(x);
  await c.converged(s);
  const lists = src.counts.Pod.lists;
  const healthMark = c.healths.length;
  const eventMark = c.events.length;
  await a.breakIt(x);
  changeWhileAway(s);
  await a.heal?.(x);
  await c.converged(s);
  await c.waitFor('connected again', () => src.health().connected);
  assert.ok(
    c.healths.slice(healthMark).some((h) => !h.connected),
    'health said not connected while the watch was away',
  );
  assert.ok(src.health().synced);
  assert.ok(!c.pods.has('default/goes') && c.pods.has('kube-system/came') && !c.pods.has('default/elsewhere'));
  const replaces = c.events.slice(eventMark).filter((e) => e.type === 'replace');
  if (a.relist) {
    assert.ok(src.counts.Pod.lists > lists, 'relisted');
    assert.ok(replaces.length >= 1, 'a replace after the relist');
  } else {
    assert.equal(src.counts.Pod.lists, lists, 'resumed from the resourceVersion, no relist');
    assert.equal(replaces.length, 0);
  }
  if (a.error)
    assert.ok(
      c.errors.some((e) => a.error!.test(e)),
      `an error like ${a.error}: ${c.errors.join(' | ')}`,
    );
  for (const e of c.errors) assert.match(e, /^Kubernetes API https:\/\/127\.0\.0\.1:\d+ .*: retrying; capture stays as it is$/);
  return x;
}

/** end the pod watch; its re-watch is held a moment so that the changes land while it is away */
async function endPodWatch(x: Setup, mode: 'graceful' | 'abrupt' | 'reset'): Promise<void> {
  const mark = x.s.lastSeq;
  x.s.delay({ ms: 300, count: 1, match: isPodWatch });
  assert.equal(x.s.endWatches(mode, isPodWatch), 1);
  await x.s.waitForRequest(isPodWatch, { since: mark });
}

test('a watch ended gracefully: re-watched from its resourceVersion at once, the gap replayed', T, async (t) => {
  const x = await awayAndBack(t, { relist: false, breakIt: (x) => endPodWatch(x, 'graceful') });
  assert.deepEqual(x.c.errors, [], 'a clean end is no problem');
});

test('a watch closed mid-stream (no terminating chunk): resumed after a backoff, the gap replayed', T, async (t) => {
  await awayAndBack(t, { relist: false, breakIt: (x) => endPodWatch(x, 'abrupt'), error: /cut the connection mid-answer \(ECONNRESET\)/ });
});

test('a TCP reset of the watch: resumed after a backoff, the gap replayed', T, async (t) => {
  await awayAndBack(t, { relist: false, breakIt: (x) => endPodWatch(x, 'reset'), error: /ECONNRESET/ });
});

test('503 on the reconnect (twice): retried with backoff, then resumed', T, async (t) => {
  const x = await awayAndBack(t, {
    relist: false,
    breakIt: async ({ s }) => {
      const mark = s.lastSeq;
      s.fail({ count: 2, match: isPodWatch });
      s.endWatches('graceful', isPodWatch);
      await s.waitForRequest((r) => isPodWatch(r) && r.status === 503, { since: mark });
    },
    error: /answered 503 ServiceUnavailable: service unavailable \(watch pods\)/,
  });
  assert.ok(x.s.requests.filter((r) => isPodWatch(r) && r.status === 503).length === 2);
});

test('410 after compaction: the watch cannot resume, the source relists and the replace drops what was deleted meanwhile', T, async (t) => {
  const x = await awayAndBack(t, {
    relist: true,
    breakIt: async (x) => {
      await endPodWatch(x, 'abrupt');
    },
    heal: async ({ s }) => {
      s.compact(); // the held re-watch is answered after this: from a compacted revision
    },
  });
  const { s, c } = x;
  const after = s.requests.filter((r) => r.resource === 'pods' && r.seq > (s.requests.find((q) => isPodWatch(q) && q.fault === 'delay')?.seq ?? 0) - 1);
  const shape = after.map((r) => `${r.verb} ${r.query.resourceVersion === undefined ? 'latest' : 'rv'}`);
  assert.deepEqual(
    shape.slice(0, 3),
    ['watch rv', 'list latest', 'watch rv'],
    'the expired watch (the ERROR event), a list of the latest state, a watch from it',
  );
  const replace = c.events.filter((e) => e.type === 'replace').at(-1);
  assert.ok(replace?.type === 'replace' && !replace.pods.some((p) => (p as { metadata: { name: string } }).metadata.name === 'goes'));
});

test('the API server stopped and started again (same port, store and certificate): unreachable meanwhile, then resumed', T, async (t) => {
  const x = await awayAndBack(t, {
    relist: false,
    breakIt: async ({ s, c }) => {
      await s.stop();
      await c.waitFor('the source reports it unreachable', () => c.errors.some((e) => /unreachable \(ECONNREFUSED\)/.test(e)));
    },
    heal: ({ s }) => s.start(),
    error: /^Kubernetes API https:\/\/127\.0\.0\.1:\d+ unreachable \(ECONNREFUSED\): retrying; capture stays as it is$/,
  });
  assert.equal(x.c.errors.filter((e) => /ECONNREFUSED/.test(e)).length, 1, 'reported once, not once per retry');
  assert.equal(x.src.health().error, undefined, 'the problem is gone from health once it is over');
});

test('an ERROR event other than 410 (504 from a server that lost its state) makes it relist, not re-watch in a loop', T, async (t) => {
  const x = await setup(t, {
    seed: (s) => {
      seedPods(s);
      for (let i = 0; i < 10; i++) s.store.create('pods', pod({ name: `filler-${i}`, node: 'n9' }));
    },
  });
  const { s, src, c } = x;
  await synced(x);
  const staleRv = String(s.store.resourceVersion);
  const healthMark = c.healths.length;
  await s.close();
  const fresh = new KubeApiServer({ port: s.port, certs: s.certs, token: s.token });
  t.after(() => fresh.close());
  fresh.store.create('pods', pod({ name: 'new-world', node: 'n1' }));
  assert.ok(fresh.store.resourceVersion < Number(staleRv));
  await fresh.start();
  await c.converged(fresh);
  await c.waitFor('connected', () => src.health().connected);
  assert.ok(c.healths.slice(healthMark).some((h) => !h.connected));
  for (const resource of ['pods', 'namespaces']) {
    const reqs = fresh.requests.filter((r) => r.resource === resource);
    const stale = reqs.filter((r) => r.verb === 'watch' && r.query.resourceVersion === staleRv);
    assert.equal(stale.length, 1, `${resource}: one watch from the lost resourceVersion, then a relist (no hot loop)`);
    const i = reqs.indexOf(stale[0]!);
    assert.deepEqual(
      reqs.slice(i, i + 3).map((r) => `${r.verb} ${r.query.resourceVersion ?? 'latest'}`),
      ['watch ' + staleRv, 'list latest', `watch ${reqs[i + 2]?.query.resourceVersion}`],
    );
    assert.notEqual(reqs[i + 2]?.query.resourceVersion, staleRv);
  }
  assert.ok(
    c.errors.some((e) => /sent an ERROR event 504/.test(e)),
    c.errors.join(' | '),
  );
  assert.deepEqual([...c.pods.keys()], ['default/new-world'], 'the state is the new server’s');
});

// ---- down at start, silent, credentials ----

test('API down at start: start() resolves, nothing is delivered, health says why; the first replace comes when it is up', T, async (t) => {
  const x = await setup(t, { seed: seedPods, stopped: true });
  const { s, src, c } = x;
  await c.waitFor('an error', () => c.errors.length > 0);
  const h = src.health();
  assert.equal(h.synced, false);
  assert.equal(h.connected, false);
  assert.match(h.error ?? '', /^Kubernetes API https:\/\/127\.0\.0\.1:\d+ unreachable \(ECONNREFUSED\): retrying; capture stays as it is$/);
  assert.equal(h.lastContact, undefined);
  assert.equal(c.events.length, 0, 'no event: nothing is known, nothing is released');
  await s.start();
  await c.waitFor('the first replace', () => c.events.length > 0);
  assert.equal(c.events[0]?.type, 'replace');
  await c.converged(s);
  await synced(x);
  assert.ok((src.health().lastContact ?? 0) > 0);
});

test('staleness watchdog: a watch that stays open but silent (a frozen path) is given up and re-established', T, async (t) => {
  const s = await KubeApiServer.start();
  t.after(() => s.close());
  seedPods(s);
  const proxy = await FreezableProxy.start({ host: s.host, port: s.port });
  t.after(() => proxy.close());
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-kube-source-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigYaml({ server: `https://127.0.0.1:${proxy.port}`, token: s.token, caPem: s.certs.caPem }));
  const c = new Consumer();
  // watches end after 1 s (server side), so the watchdog gives up after 1 s + 1 s of silence
  const src = new KubeSource({
    connection: kubeconfigConnection(kubeconfig),
    nodeName: 'n1',
    tuning: { ...FAST, watchTimeoutSeconds: 1, staleSlackMs: 1000 },
    onHealth: c.onHealth,
  });
  t.after(() => src.stop());
  await src.start(c.handlers);
  await c.waitFor('synced and connected', () => src.health().synced && src.health().connected);
  await c.converged(s);
  proxy.freeze();
  await c.waitFor('the watchdog gave up', () => c.errors.some((e) => /sent nothing on the watch of (pods|namespaces) for 2 s \(a dead connection\?\)/.test(e)));
  assert.equal(src.health().connected, false);
  changeWhileAway(s);
  proxy.thaw();
  await c.converged(s);
  await c.waitFor('connected', () => src.health().connected);
  assert.equal(src.counts.Pod.lists, 1, 'resumed, not relisted');
});

test('a 401 re-reads the credentials at once: a rotated token in a rewritten kubeconfig is picked up', T, async (t) => {
  const x = await setup(t, { seed: seedPods });
  const { s, src, c, kubeconfig } = x;
  await synced(x);
  // the old token stops working (a new server process that knows only the new one, same store)
  await s.close();
  const rotated = new KubeApiServer({ port: s.port, certs: s.certs, token: 'rotated-token', store: s.store });
  t.after(() => rotated.close());
  await rotated.start();
  await c.waitFor('a 401 reported', () => c.errors.some((e) => /refused the credentials \(401 Unauthorized\)/.test(e)));
  assert.ok(rotated.requests.some((r) => r.status === 401));
  rotated.writeKubeconfig(kubeconfig);
  changeWhileAway(s);
  await c.converged(rotated);
  await c.waitFor('connected', () => src.health().connected);
  const afterRotation = rotated.requests.filter((r) => r.status !== 401);
  assert.ok(afterRotation.length > 0 && afterRotation.every((r) => r.user === 'meshlane-test'));
});

// ---- what it asks the API server: the ClusterRole ----

test('the requests: list+watch pods (this node) and namespaces, create+patch events; the ClusterRole that allows exactly these', T, async (t) => {
  const x = await setup(t, { seed: seedPods });
  const { s, src } = x;
  await synced(x);
  const p = s.store.get('pods', 'default', 'stays');
  src.events.warn({ namespace: 'default', name: 'stays', uid: p.metadata.uid }, 'InvalidCaptureAnnotation', 'm1');
  await src.events.flush();
  src.events.warn({ namespace: 'default', name: 'stays', uid: p.metadata.uid }, 'InvalidCaptureAnnotation', 'm1');
  await src.events.flush();
  assert.deepEqual(src.events.counts, { created: 1, patched: 1, dropped: 0, failed: 0 });
  const role: PolicyRule[] = [
    { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['list', 'watch'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  ];
  assert.deepEqual(notAllowed(role, s.requests), []);
  assert.deepEqual(unusedGrants(role, s.requests), []);
  const kinds = [...new Set(s.requests.map((r) => `${r.verb} ${r.resource}${r.namespace ? ` in ${r.namespace}` : ''}`))].sort();
  assert.deepEqual(kinds, ['create events in default', 'list namespaces', 'list pods', 'patch events in default', 'watch namespaces', 'watch pods']);
  for (const r of s.requests.filter((q) => q.resource === 'pods')) assert.equal(r.query.fieldSelector, 'spec.nodeName=n1', 'pods of this node only, never all');
  for (const r of s.requests.filter((q) => q.verb === 'watch')) {
    assert.equal(r.query.allowWatchBookmarks, 'true');
    assert.match(r.query.timeoutSeconds ?? '', /^\d+$/);
    assert.ok(Number(r.query.timeoutSeconds) >= 30 && Number(r.query.timeoutSeconds) < 60, 'timeoutSeconds in [T, 2T)');
    assert.match(r.query.resourceVersion ?? '', /^\d+$/, 'a watch always starts from a resourceVersion');
  }
  for (const r of s.requests.filter((q) => q.verb === 'list')) {
    assert.equal(r.query.limit, '500');
    assert.equal(r.query.resourceVersion, '0', 'the first list comes from the watch cache');
  }
  assert.ok(s.requests.every((r) => r.user === 'meshlane-test' && r.status !== undefined && r.status < 300));
  assert.deepEqual(serverState(s), x.c.state());
});

test('stop(): the watches are closed, no event after it resolves', T, async (t) => {
  const x = await setup(t, { seed: seedPods });
  await synced(x);
  await x.s.waitForWatches(2);
  await x.src.stop();
  const n = x.c.events.length;
  x.s.store.create('pods', pod({ name: 'after-stop', node: 'n1' }));
  await until('the server has no open watch', () => x.s.watches().length === 0);
  assert.equal(x.c.events.length, n);
});

/** a bounded wait for a condition nobody signals */
async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a complete list ends a run of failures: the first watch failure after an outage backs off from the start', T, async (t) => {
  // six failed lists in a row (the API down at start), then a list that works, then a watch cut and a failed
  // re-watch: the wait after that is the third step of the backoff (100-200 ms), not the eighth (3.2-6.4 s) of
  // an outage that is over; the wait after the sixth failed list was 800-1600 ms
  const x = await setup(t, { tuning: { backoffInitialMs: 50, backoffMaxMs: 60_000 }, start: false, seed: seedPods });
  x.s.fail({ count: 6, match: isPodList });
  await x.src.start(x.c.handlers);
  await until('the pods listed and watched', () => x.c.events.some((e) => e.type === 'replace') && x.s.requests.some((r) => isPodWatch(r) && r.status === 200));
  const mark = x.s.lastSeq;
  x.s.fail({ count: 1, match: isPodWatch });
  x.s.endWatches('abrupt', isPodWatch);
  await x.s.waitForRequest((r) => isPodWatch(r) && r.status === 200, { since: mark });
  const lists = x.s.requests.filter(isPodList);
  assert.deepEqual(
    lists.slice(0, 7).map((r) => r.status),
    [503, 503, 503, 503, 503, 503, 200],
  );
  const beforeList = lists[6]!.at - lists[5]!.at; // the wait after the sixth failure in a row
  const watches = x.s.requests.filter((r) => isPodWatch(r) && r.seq > mark);
  const afterList = watches[1]!.at - watches[0]!.at; // the wait after the failed re-watch
  assert.equal(watches[0]!.status, 503);
  assert.ok(afterList < beforeList / 2, `the wait after the list (${afterList.toFixed(0)} ms) restarted below the outage's last (${beforeList.toFixed(0)} ms)`);
});

test('backoff: doubles per failure from the initial wait, never above the maximum, jittered between half and all', () => {
  const t = { backoffInitialMs: 500, backoffMaxMs: 30_000 };
  assert.equal(
    backoffDelay(1, t, () => 0),
    250,
  );
  assert.equal(
    backoffDelay(1, t, () => 1),
    500,
  );
  assert.equal(
    backoffDelay(2, t, () => 1),
    1000,
  );
  assert.equal(
    backoffDelay(4, t, () => 1),
    4000,
  );
  assert.equal(
    backoffDelay(7, t, () => 1),
    30_000,
  );
  assert.equal(
    backoffDelay(1000, t, () => 0.999999),
    30_000 / 2 + (0.999999 * 30_000) / 2,
  );
  assert.equal(
    backoffDelay(0, t, () => 1),
    500,
    'no failure counts as the first',
  );
});
