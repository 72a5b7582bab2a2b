// Kubernetes Events for pod problems (src/kube/events.ts) against the suite's API server: a malformed
// annotation becomes a Warning Event on the pod, deduplicated as kubelet does (count and lastTimestamp
// of the same Event object), recorded when the pod's errors change and not on every pass; a different
// message is another Event; an Event that expired is created again; the spam filter and the LRU bound
// what is sent and kept; failures to post are logged and never reach the caller.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from '../../src/util/log.js';
import { KubeApiServer } from '../support/kube/server.js';
import { namespace } from '../support/kube/fixtures.js';
import type { KubeObject } from '../support/kube/resources.js';
import { Consumer } from '../support/kube/source-harness.js';
import { KubeClient } from '../../src/kube/client.js';
import { kubeconfigConnection } from '../../src/kube/config.js';
import { EventRecorder, PodWarnings, podErrorEvent, type EventRecorderOptions } from '../../src/kube/events.js';
import { KubeSource } from '../../src/sources/kube.js';
import { buildModel } from '../../src/model/pod-model.js';
import { ANNOTATIONS } from '../../src/model/annotations.js';

const T = { timeout: 30_000 };

interface Ev {
  metadata: { name: string; namespace: string };
  involvedObject: Record<string, unknown>;
  reason: string;
  message: string;
  type: string;
  count: number;
  firstTimestamp: string;
  lastTimestamp: string;
  source: Record<string, unknown>;
  reportingComponent: string;
  reportingInstance: string;
}

class Clock {
  t = new Date('2026-12-01T10:00:00Z');
  readonly now = (): Date => this.t;
  advance(ms: number): void {
    this.t = new Date(this.t.getTime() + ms);
  }
}

function capture(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log: Logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

async function server(t: TestContext): Promise<{ s: KubeApiServer; kubeconfig: string }> {
  const s = await KubeApiServer.start();
  t.after(() => s.close());
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-kube-events-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return { s, kubeconfig: s.writeKubeconfig(join(dir, 'kubeconfig')) };
}

async function recorder(
  t: TestContext,
  opts: Partial<EventRecorderOptions> = {},
): Promise<{ s: KubeApiServer; rec: EventRecorder; clock: Clock; lines: Array<Record<string, unknown>> }> {
  const { s, kubeconfig } = await server(t);
  const clock = new Clock();
  const { log, lines } = capture();
  const rec = new EventRecorder({ nodeName: 'n1', now: clock.now, log, retryDelayMs: 10, ...opts });
  rec.attach(new KubeClient(kubeconfigConnection(kubeconfig)));
  t.after(() => rec.stop());
  return { s, rec, clock, lines };
}

const events = (s: KubeApiServer, ns = 'shop'): Ev[] => s.store.list('events', { namespace: ns }).items as unknown as Ev[];

/** a pod with a sidecar, as the injector leaves it, with extra annotations */
function meshPod(name: string, annotations: Record<string, string>): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: 'shop',
      labels: { app: 'web' },
      annotations: { 'sidecar.istio.io/status': '{"initContainers":["istio-init"]}', ...annotations },
    },
    spec: {
      nodeName: 'n1',
      containers: [
        { name: 'web', image: 'nginx' },
        { name: 'istio-proxy', image: 'proxyv2' },
      ],
    },
    status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }] },
  };
}

test('a malformed annotation: a Warning Event on the pod, recorded when the errors change (not every pass), deduplicated as kubelet does', T, async (t) => {
  const { s, kubeconfig } = await server(t);
  s.store.create('namespaces', namespace('shop', { 'istio-injection': 'enabled' }));
  const port = ANNOTATIONS.includeInboundPorts;
  const created = s.store.create('pods', meshPod('web-1', { [port]: '80,http' }));
  const clock = new Clock();
  const c = new Consumer();
  const src = new KubeSource({ connection: kubeconfigConnection(kubeconfig), nodeName: 'n1', onHealth: c.onHealth, events: { now: clock.now } });
  t.after(() => src.stop());
  await src.start(c.handlers);
  const warnings = new PodWarnings(src.events);
  /** one pass of the agent: the model over what the source delivered, then the warnings */
  const pass = async (): Promise<void> => {
    const model = buildModel({ namespaces: [...c.namespaces.values()], pods: [...c.pods.values()] }, { nodeName: 'n1' });
    warnings.update(model.captured);
    await src.events.flush();
  };
  await c.converged(s);
  await pass();
  let evs = events(s);
  assert.equal(evs.length, 1);
  const ev = evs[0]!;
  assert.equal(ev.type, 'Warning');
  assert.equal(ev.reason, 'InvalidCaptureAnnotation');
  assert.deepEqual(ev.involvedObject, { kind: 'Pod', namespace: 'shop', name: 'web-1', uid: created.metadata.uid, apiVersion: 'v1' });
  assert.ok(ev.message.includes(`annotation '${port}'`), `names the annotation: ${ev.message}`);
  assert.ok(ev.message.includes(`'80,http'`), `names the value: ${ev.message}`);
  assert.match(ev.message, /correct or remove it/, 'names the fix');
  assert.deepEqual(ev.source, { component: 'meshlane', host: 'n1' });
  assert.equal(ev.reportingComponent, 'meshlane');
  assert.equal(ev.reportingInstance, 'n1');
  assert.equal(ev.count, 1);
  assert.equal(ev.firstTimestamp, '2026-12-01T10:00:00Z');
  assert.equal(ev.lastTimestamp, ev.firstTimestamp);
  assert.match(ev.metadata.name, /^web-1\.[0-9a-f]{16}$/);

  // more passes with the same errors: nothing is sent
  const sent = (): number => s.requests.filter((r) => r.resource === 'events').length;
  const before = sent();
  await pass();
  await pass();
  assert.equal(sent(), before, 'the same errors on every pass are not sent again');

  // fixed, then broken the same way again: the same Event, count 2, lastTimestamp moved
  s.store.patch('pods', 'shop', 'web-1', 'application/merge-patch+json', { metadata: { annotations: { [port]: '80' } } });
  await c.converged(s);
  await pass();
  clock.advance(65_000);
  s.store.patch('pods', 'shop', 'web-1', 'application/merge-patch+json', { metadata: { annotations: { [port]: '80,http' } } });
  await c.converged(s);
  await pass();
  evs = events(s);
  assert.equal(evs.length, 1, 'one Event object');
  assert.equal(evs[0]!.metadata.name, ev.metadata.name);
  assert.equal(evs[0]!.count, 2);
  assert.equal(evs[0]!.firstTimestamp, '2026-12-01T10:00:00Z');
  assert.equal(evs[0]!.lastTimestamp, '2026-12-01T10:01:05Z');
  const patch = s.requests.filter((r) => r.resource === 'events').at(-1);
  assert.deepEqual([patch?.verb, patch?.name, patch?.status], ['patch', ev.metadata.name, 200]);

  // another value: another message, another Event
  clock.advance(1000);
  s.store.patch('pods', 'shop', 'web-1', 'application/merge-patch+json', { metadata: { annotations: { [port]: '99999' } } });
  await c.converged(s);
  await pass();
  evs = events(s).sort((a, b) => a.firstTimestamp.localeCompare(b.firstTimestamp));
  assert.equal(evs.length, 2);
  assert.ok(evs[1]!.message.includes(`'99999'`));
  assert.equal(evs[1]!.count, 1);
  assert.deepEqual(
    s.requests.filter((r) => r.resource === 'events').map((r) => r.verb),
    ['create', 'patch', 'create'],
  );
  assert.deepEqual(src.events.counts, { created: 2, patched: 1, dropped: 0, failed: 0 });
});

test('an Event that expired meanwhile (the patch answers 404) is created again under its name, the count carried on', T, async (t) => {
  const { s, rec, clock } = await recorder(t);
  s.store.create('namespaces', namespace('shop'));
  const pod = { namespace: 'shop', name: 'p', uid: 'u-1' };
  rec.warn(pod, 'InvalidCaptureAnnotation', 'm');
  await rec.flush();
  const [first] = events(s);
  s.store.delete('events', 'shop', first!.metadata.name);
  clock.advance(5000);
  rec.warn(pod, 'InvalidCaptureAnnotation', 'm');
  await rec.flush();
  const evs = events(s);
  assert.equal(evs.length, 1);
  assert.deepEqual(
    [evs[0]!.metadata.name, evs[0]!.count, evs[0]!.firstTimestamp, evs[0]!.lastTimestamp],
    [first!.metadata.name, 2, '2026-12-01T10:00:00Z', '2026-12-01T10:00:05Z'],
  );
  assert.deepEqual(
    s.requests.map((r) => `${r.verb} ${r.status}`),
    ['create 201', 'patch 404', 'create 201'],
  );
});

test('spam filter: a burst per pod, then one Event per refill interval; other pods are not affected', T, async (t) => {
  const { s, rec, clock, lines } = await recorder(t, { spamBurst: 2, spamRefillPerSecond: 1 / 60 });
  s.store.create('namespaces', namespace('shop'));
  const a = { namespace: 'shop', name: 'a', uid: 'u-a' };
  for (const m of ['m1', 'm2', 'm3']) rec.warn(a, 'InvalidCaptureAnnotation', m);
  rec.warn({ namespace: 'shop', name: 'b', uid: 'u-b' }, 'InvalidCaptureAnnotation', 'm1');
  await rec.flush();
  assert.deepEqual(
    events(s)
      .map((e) => `${(e.involvedObject as { name: string }).name} ${e.message}`)
      .sort(),
    ['a m1', 'a m2', 'b m1'],
  );
  assert.equal(rec.counts.dropped, 1);
  assert.ok(lines.some((l) => /spam filter/.test(String(l.msg))));
  clock.advance(60_000);
  rec.warn(a, 'InvalidCaptureAnnotation', 'm3');
  await rec.flush();
  assert.equal(events(s).length, 4, 'a token came back after the refill interval');
});

test('the correlation cache is bounded (LRU): a forgotten Event is created anew, memory does not grow', T, async (t) => {
  const { s, rec } = await recorder(t, { cacheSize: 2 });
  s.store.create('namespaces', namespace('shop'));
  const p = { namespace: 'shop', name: 'p', uid: 'u' };
  for (const m of ['m1', 'm2', 'm3', 'm1']) rec.warn(p, 'R', m);
  await rec.flush();
  assert.equal(events(s).length, 4, 'm1 fell out of the cache of 2: its repeat is a new Event');
  rec.warn(p, 'R', 'm1');
  await rec.flush();
  assert.equal(events(s).length, 4, 'the last m1 is remembered: patched');
  assert.equal(rec.counts.patched, 1);
});

test('failures to post are logged and never reach the caller: 5xx retried a few times, 403 not', T, async (t) => {
  const { s, rec, lines } = await recorder(t, { maxTries: 3 });
  s.store.create('namespaces', namespace('shop'));
  const f = s.fail({ answer: 500, count: Infinity, match: (r) => r.resource === 'events' });
  assert.doesNotThrow(() => rec.warn({ namespace: 'shop', name: 'p', uid: 'u' }, 'R', 'm'));
  await rec.flush();
  assert.equal(f.hits, 3, 'three tries');
  assert.equal(rec.counts.failed, 1);
  f.clear();
  const forbidden = s.fail({ answer: 403, count: Infinity, match: (r) => r.resource === 'events' });
  rec.warn({ namespace: 'shop', name: 'p', uid: 'u' }, 'R', 'other');
  await rec.flush();
  assert.equal(forbidden.hits, 1, 'a 403 is final');
  assert.equal(rec.counts.failed, 2);
  const warned = lines.filter((l) => l.msg === 'could not post a Kubernetes Event');
  assert.equal(warned.length, 2);
  assert.match(String(warned[0]!.err), /answered 500/);
  assert.match(String(warned[1]!.err), /answered 403/);
  forbidden.clear();
  rec.warn({ namespace: 'shop', name: 'p', uid: 'u' }, 'R', 'works again');
  await rec.flush();
  assert.equal(events(s).length, 1);
});

test('Event shapes: long messages cut to 1024 characters, names of long pods within 253, a pod model uid (<ns>/<name>) left out', T, async (t) => {
  const { s, rec } = await recorder(t);
  s.store.create('namespaces', namespace('shop'));
  const long = 'x'.repeat(250);
  rec.warn({ namespace: 'shop', name: long, uid: 'shop/' + long }, 'R', 'y'.repeat(5000));
  await rec.flush();
  const [e] = events(s);
  assert.equal(e!.message.length, 1024);
  assert.ok(e!.message.endsWith('...'));
  assert.ok(e!.metadata.name.length <= 253);
  assert.equal((e!.involvedObject as { uid?: string }).uid, undefined);
});

test('podErrorEvent: annotation errors and other setting errors, each with the fix', () => {
  const a = podErrorEvent(`invalid value 'x' for annotation 'traffic.sidecar.istio.io/includeInboundPorts': "x" is not a valid port`);
  assert.equal(a.reason, 'InvalidCaptureAnnotation');
  assert.match(
    a.message,
    /^invalid value 'x' for annotation 'traffic\.sidecar\.istio\.io\/includeInboundPorts': "x" is not a valid port: .*correct or remove it/,
  );
  const b = podErrorEvent(`invalid value 'maybe' for label 'sidecar.istio.io/inject': must be "true" or "false"`);
  assert.equal(b.reason, 'InvalidCaptureSetting');
  assert.match(b.message, /fixed in the pod's template/);
});

test('PodWarnings: new errors only; an error that goes and comes back is recorded again; pods that go are forgotten', () => {
  const sent: string[] = [];
  const w = new PodWarnings({ warn: (p, _r, m) => void sent.push(`${p.name}: ${m.split(':')[0]}`) });
  const ref = { namespace: 'ns', name: 'p', uid: 'u' };
  w.update([{ ref, errors: ['e1', 'e2'] }]);
  w.update([{ ref, errors: ['e1', 'e2'] }]);
  w.update([{ ref, errors: ['e2'] }]);
  w.update([{ ref, errors: ['e1', 'e2'] }]);
  w.update([]);
  w.update([{ ref, errors: ['e2'] }]);
  assert.deepEqual(sent, ['p: e1', 'p: e2', 'p: e1', 'p: e2']);
});
