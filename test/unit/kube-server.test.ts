// The suite's Kubernetes API server (test/support/kube) against the real, unmodified
// @kubernetes/client-node 1.4 over HTTPS with a kubeconfig, and what that client does on each fault.
//
// client-node 1.4.0 as the tests below measure it (the agent's Kubernetes source relies on this):
//
// The informer (ListWatch; makeInformer is the same without a field selector)
// - start(): a 'connect' callback, a list without resourceVersion, then `watch=true&resourceVersion=<the
//   list's>` with the label/field selector. It never sends allowWatchBookmarks or timeoutSeconds, so it
//   gets no BOOKMARKs. 'connect' fires before every list or watch attempt, failed ones included.
// - A watch that ends with the terminating chunk (the server ending it, as at its request timeout, or
//   stopping):
//   an immediate re-watch from its last resourceVersion; no relist, no error; the gap is replayed.
// - A watch closed without the terminating chunk: error callback, code ERR_STREAM_PREMATURE_CLOSE.
//   A TCP reset: error ECONNRESET. A 503 on the re-watch: error with statusCode 503 (its source does the
//   same for any status but 200 and 410). A 503
//   on the list: error (an ApiException, code 503), no watch. Server down: error ECONNREFUSED.
//   After each of these the informer stays stopped: no request until start() is called again.
// - start() after such an error keeps the cache and resourceVersion: it re-watches from there (no
//   relist) and gets the missed changes replayed, if the history still has them.
// - A watch from a compacted resourceVersion: HTTP 200, one ERROR event with Status code 410, the end.
//   The informer clears its resourceVersion and relists: 'delete' for objects gone meanwhile, 'add' for
//   new ones, 'update' for changed ones, nothing for unchanged ones; then watches from the new list. No
//   error callback. A plain HTTP 410 answer to the watch request relists the same way.
// - An ERROR event with another code (504 "Too large resource version", from a server that lost its
//   state) is ignored: the stream ends and the informer re-watches the same resourceVersion at once,
//   without backoff, again and again (a real server paces this with its 3 s wait). Never relists.
// - stop() aborts the watch and fires the error callback with an AbortError.
// - The cache holds two shapes: listed objects are deserialised (V1Pod, Date timestamps), objects from
//   watch events are the plain JSON (string timestamps), and replace the listed ones when they change.
// Watch (the raw one)
// - done(null) after the terminating chunk or after an ERROR event; done(err) for a premature close or
//   a reset; the callback gets every line, BOOKMARK and ERROR included (the ERROR object is the Status).
// The API clients
// - patch*: JSON patch (a list of operations) by default; setHeaderOptions('Content-Type',
//   PatchStrategy.MergePatch | StrategicMergePatch) switches the body type.
// - Errors are ApiException with .code (the HTTP status) and .body the response text (a Status in JSON,
//   not parsed; a 401 has none). A dropped connection is a FetchError with code ECONNRESET.
// - The kubeconfig's certificate-authority-data is what verifies the server; without it the self-signed
//   CA is refused; insecure-skip-tls-verify: true skips the check.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { KubeApiServer, type KubeApiServerOptions, type RequestRecord } from '../support/kube/server.js';
import { namespace, pod } from '../support/kube/fixtures.js';
import { parseFieldSelector, parseLabelSelector } from '../support/kube/selectors.js';
import { jsonPatch, mergePatch } from '../support/kube/patch.js';
import { requestInfo } from '../support/kube/requestinfo.js';
import { notAllowed, unusedGrants, type PolicyRule } from '../support/kube/rbac.js';
import { PODS } from '../support/kube/resources.js';
import { StatusError } from '../support/kube/status.js';
import { Store } from '../support/kube/store.js';

// ---- helpers ----

/** a server test that hangs (a watch that never ends because the server is wrong) fails instead */
const T = { timeout: 20_000 };

async function startServer(t: TestContext, opts: KubeApiServerOptions = {}): Promise<{ s: KubeApiServer; kc: k8s.KubeConfig; api: k8s.CoreV1Api }> {
  const s = await KubeApiServer.start(opts);
  t.after(() => s.close());
  const kc = new k8s.KubeConfig();
  kc.loadFromString(s.kubeconfig());
  return { s, kc, api: kc.makeApiClient(k8s.CoreV1Api) };
}

const settle = (ms = 300): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** what an error from client-node carries: a Node error code, a watch's statusCode, an ApiException's code */
function errorCode(e: unknown): string {
  const o = e as { code?: unknown; statusCode?: unknown; name?: unknown; message?: unknown };
  return String(o.statusCode ?? o.code ?? (o.name && o.name !== 'Error' ? o.name : o.message));
}

/** an append-only log of informer (or watch) callbacks, with a wait for a condition on it */
class Seen {
  readonly log: string[] = [];
  private readonly waiters = new Set<() => void>();
  push(entry: string): void {
    this.log.push(entry);
    for (const w of [...this.waiters]) w();
  }
  has(entry: string): boolean {
    return this.log.includes(entry);
  }
  count(prefix: string): number {
    return this.log.filter((e) => e.startsWith(prefix)).length;
  }
  waitFor(entry: string | ((log: readonly string[]) => boolean), timeoutMs = 5000): Promise<void> {
    const ok = typeof entry === 'string' ? (l: readonly string[]) => l.includes(entry) : entry;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`not seen within ${timeoutMs} ms: ${String(entry)}; log: ${this.log.join(' | ')}`));
      }, timeoutMs);
      const check = (): void => {
        if (!ok(this.log)) return;
        clearTimeout(t);
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
      check();
    });
  }
}

type PodInformer = k8s.ListWatch<k8s.V1Pod>;

/** the agent's shape: a ListWatch of the pods on one node (makeInformer takes no field selector) */
function nodeInformer(t: TestContext, kc: k8s.KubeConfig, api: k8s.CoreV1Api, node: string): { inf: PodInformer; seen: Seen } {
  const fieldSelector = `spec.nodeName=${node}`;
  const inf = new k8s.ListWatch<k8s.V1Pod>(
    '/api/v1/pods',
    new k8s.Watch(kc),
    () => api.listPodForAllNamespaces({ fieldSelector }),
    false,
    undefined,
    fieldSelector,
  );
  const seen = new Seen();
  inf.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
  inf.on('update', (p) => seen.push(`update ${p.metadata?.name}`));
  inf.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
  inf.on('connect', () => seen.push('connect'));
  inf.on('error', (e) => seen.push(`error ${errorCode(e)}`));
  t.after(() => inf.stop());
  return { inf, seen };
}

interface WatchRun {
  seen: Seen;
  events: { type: string; object: k8s.KubernetesObject & { code?: number; reason?: string } }[];
  done: Promise<unknown>;
  ctl: AbortController;
}

async function rawWatch(t: TestContext, kc: k8s.KubeConfig, path: string, params: Record<string, string | number | boolean | undefined>): Promise<WatchRun> {
  const seen = new Seen();
  const events: WatchRun['events'] = [];
  let finish: (e: unknown) => void = () => undefined;
  const done = new Promise<unknown>((r) => (finish = r));
  const ctl = await new k8s.Watch(kc).watch(
    path,
    params,
    (type, object: WatchRun['events'][number]['object']) => {
      events.push({ type, object });
      seen.push(`${type} ${object.metadata?.name ?? object.metadata?.resourceVersion ?? ''}`);
    },
    (err: unknown) => {
      seen.push(`done ${err ? errorCode(err) : 'null'}`);
      finish(err);
    },
  );
  t.after(() => ctl.abort());
  return { seen, events, done, ctl };
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** one request without client-node: the protocol itself */
function raw(
  s: KubeApiServer,
  path: string,
  opts: { method?: string; token?: string | null; body?: unknown; contentType?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? s.token}`;
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    if (body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
    const req = httpsRequest({ host: s.host, port: s.port, path, method: opts.method ?? 'GET', ca: s.certs.caPem, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const names = (items: readonly k8s.KubernetesObject[]): string[] => items.map((o) => o.metadata?.name ?? '').sort();

async function apiError(p: Promise<unknown>): Promise<{ code: number; body: { reason?: string; message?: string; code?: number } }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof k8s.ApiException) {
      if (e.code === 401) {
        assert.equal(e.body, undefined, 'a 401 ApiException has no body');
        return { code: e.code, body: {} };
      }
      assert.equal(typeof e.body, 'string', 'an ApiException carries the response text');
      const body = JSON.parse(e.body as string) as { reason?: string; message?: string; code?: number };
      return { code: e.code, body };
    }
    throw e;
  }
  throw new Error('expected an API error');
}

const mergeOpts = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const strategicOpts = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch);

// ---- the pieces on their own ----

test('certificates: a CA that signs a server certificate for 127.0.0.1, ::1 and localhost', () => {
  const { caPem, certPem } = new KubeApiServer().certs;
  const ca = new X509Certificate(caPem);
  const cert = new X509Certificate(certPem);
  assert.equal(ca.ca, true);
  assert.equal(cert.ca, false);
  assert.ok(ca.verify(ca.publicKey), 'the CA is self-signed');
  assert.ok(cert.verify(ca.publicKey), 'the server certificate is signed by the CA');
  assert.ok(!cert.verify(new X509Certificate(new KubeApiServer().certs.caPem).publicKey), 'and by no other CA');
  assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
  assert.equal(cert.checkIP('::1'), '::1');
  assert.equal(cert.checkHost('localhost'), 'localhost');
  assert.equal(cert.checkIP('10.0.0.1'), undefined);
});

test('label selectors: the real grammar and meaning', () => {
  const l = { app: 'web', tier: 'front', n: '5' };
  const m = (sel: string): boolean => parseLabelSelector(sel).matches(l);
  assert.ok(m(''));
  assert.ok(m('app=web') && m('app==web') && m('app = web'));
  assert.ok(!m('app=db') && m('app!=db') && !m('app!=web'));
  assert.ok(m('missing!=x'), '!= is true when the label is absent');
  assert.ok(m('app in (db, web)') && !m('app in (db)'));
  assert.ok(m('app notin (db)') && !m('app notin (web,db)') && m('missing notin (x)'));
  assert.ok(m('app') && !m('missing') && m('!missing') && !m('!app'));
  assert.ok(m('app=web,tier in (front),!canary'));
  assert.ok(m('n>4') && !m('n>5') && m('n<6'));
  assert.ok(parseLabelSelector('a=').matches({ a: '' }) && !parseLabelSelector('a=').matches({}));
  assert.ok(parseLabelSelector('example.com/role=x').matches({ 'example.com/role': 'x' }));
  for (const bad of ['app=(', 'app in ()', 'app in (a', '=x', 'a=b=c', 'a b', 'Bad_Prefix/x=y', 'a=-x', 'n>x']) {
    assert.throws(
      () => parseLabelSelector(bad),
      (e: unknown) => e instanceof StatusError && e.code === 400,
      bad,
    );
  }
});

test('field selectors: =, ==, != on the supported labels; escapes; an unsupported label is a 400', () => {
  const f = { 'metadata.name': 'a,b', 'spec.nodeName': 'n1', 'status.phase': 'Running' };
  const m = (sel: string): boolean => parseFieldSelector(sel, PODS.fieldLabels).matches(f);
  assert.ok(m('spec.nodeName=n1') && m('spec.nodeName==n1') && !m('spec.nodeName!=n1'));
  assert.ok(m('spec.nodeName=n1,status.phase!=Pending'));
  assert.ok(m('metadata.name=a\\,b'), 'an escaped comma is part of the value');
  assert.ok(m('status.podIP='), 'an absent field is the empty string');
  assert.equal(parseFieldSelector('metadata.name=x,spec.nodeName=n', PODS.fieldLabels).exact('metadata.name'), 'x');
  assert.throws(() => parseFieldSelector('spec.node=n1', PODS.fieldLabels), /field label not supported: spec.node/);
  assert.throws(
    () => parseFieldSelector('spec.nodeName', PODS.fieldLabels),
    (e: unknown) => e instanceof StatusError && e.code === 400,
  );
});

test('patches: RFC 7386 merge and RFC 6902 JSON patch', () => {
  assert.deepEqual(mergePatch({ a: { b: 1, c: 2 }, l: [1, 2] }, { a: { b: null, d: 3 }, l: [3] }), { a: { c: 2, d: 3 }, l: [3] });
  const doc = { metadata: { labels: { a: '1' } }, list: [1, 2, 3] };
  assert.deepEqual(
    jsonPatch(doc, [
      { op: 'add', path: '/metadata/labels/b~1c', value: '2' },
      { op: 'replace', path: '/metadata/labels/a', value: '9' },
      { op: 'remove', path: '/list/0' },
      { op: 'add', path: '/list/-', value: 4 },
      { op: 'copy', from: '/list/0', path: '/first' },
      { op: 'move', from: '/first', path: '/moved' },
      { op: 'test', path: '/moved', value: 2 },
    ]),
    { metadata: { labels: { a: '9', 'b/c': '2' } }, list: [2, 3, 4], moved: 2 },
  );
  assert.deepEqual(doc.list, [1, 2, 3], 'the input is not changed');
  assert.throws(
    () => jsonPatch(doc, [{ op: 'test', path: '/list/0', value: 7 }]),
    (e: unknown) => e instanceof StatusError && e.code === 422,
  );
  assert.throws(
    () => jsonPatch(doc, [{ op: 'replace', path: '/nope', value: 1 }]),
    (e: unknown) => e instanceof StatusError && e.code === 422,
  );
});

test('request decoding: verb, resource, subresource, namespace and name as RBAC sees them', () => {
  const ri = (method: string, url: string) => {
    const i = requestInfo(method, new URL(url, 'https://x'));
    return [i.isResourceRequest, i.verb, i.apiGroup, i.resource, i.subresource, i.namespace, i.name];
  };
  assert.deepEqual(ri('GET', '/api/v1/pods'), [true, 'list', '', 'pods', '', '', '']);
  assert.deepEqual(ri('GET', '/api/v1/pods?watch=true'), [true, 'watch', '', 'pods', '', '', '']);
  assert.deepEqual(ri('GET', '/api/v1/namespaces/ns/pods?watch=1&fieldSelector=metadata.name%3Dp'), [true, 'watch', '', 'pods', '', 'ns', 'p']);
  assert.deepEqual(ri('GET', '/api/v1/watch/namespaces/ns/pods/p'), [true, 'watch', '', 'pods', '', 'ns', 'p']);
  assert.deepEqual(ri('GET', '/api/v1/namespaces/ns/pods/p'), [true, 'get', '', 'pods', '', 'ns', 'p']);
  assert.deepEqual(ri('PATCH', '/api/v1/namespaces/ns/pods/p/status'), [true, 'patch', '', 'pods', 'status', 'ns', 'p']);
  assert.deepEqual(ri('POST', '/api/v1/namespaces/ns/events'), [true, 'create', '', 'events', '', 'ns', '']);
  assert.deepEqual(ri('DELETE', '/api/v1/namespaces/ns/pods'), [true, 'deletecollection', '', 'pods', '', 'ns', '']);
  assert.deepEqual(ri('GET', '/api/v1/namespaces/ns'), [true, 'get', '', 'namespaces', '', 'ns', 'ns']);
  assert.deepEqual(ri('PUT', '/api/v1/namespaces/ns/finalize'), [true, 'update', '', 'namespaces', 'finalize', 'ns', 'ns']);
  assert.deepEqual(ri('GET', '/apis/events.k8s.io/v1/events'), [true, 'list', 'events.k8s.io', 'events', '', '', '']);
  assert.deepEqual(ri('GET', '/version'), [false, 'get', '', '', '', '', '']);
  assert.deepEqual(ri('GET', '/api/v1'), [false, 'get', '', '', '', '', '']);
});

test('RBAC matching: rules against decoded requests, and the grants a role has but nobody used', () => {
  const reqs = [
    requestInfo('GET', new URL('https://x/api/v1/pods?fieldSelector=spec.nodeName%3Dn1')),
    requestInfo('GET', new URL('https://x/api/v1/pods?watch=true')),
    requestInfo('PATCH', new URL('https://x/api/v1/namespaces/a/pods/p/status')),
    requestInfo('GET', new URL('https://x/version')),
  ];
  const role: PolicyRule[] = [
    { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch', 'get'] },
    { apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] },
    { nonResourceURLs: ['/version'], verbs: ['get'] },
  ];
  assert.deepEqual(notAllowed(role, reqs), []);
  assert.deepEqual(unusedGrants(role, reqs), [{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }]);
  assert.deepEqual(
    notAllowed([{ apiGroups: [''], resources: ['pods'], verbs: ['*'] }], reqs).map((r) => r.path),
    ['/api/v1/namespaces/a/pods/p/status', '/version'],
  );
  assert.deepEqual(notAllowed([{ apiGroups: ['*'], resources: ['*/status'], verbs: ['patch'] }], reqs.slice(2, 3)), []);
  assert.equal(
    notAllowed(
      [{ apiGroups: [''], resources: ['pods'], resourceNames: ['q'], verbs: ['get'] }],
      [requestInfo('GET', new URL('https://x/api/v1/namespaces/a/pods/p'))],
    ).length,
    1,
  );
});

test('store: two-phase deletion, a namespace takes its contents, the history limit compacts, namespaces keep their name label', () => {
  const st = new Store({ historyLimit: 3 });
  const events: string[] = [];
  st.create('namespaces', namespace('tmp'));
  assert.equal(st.get('namespaces', undefined, 'tmp').metadata.labels?.['kubernetes.io/metadata.name'], 'tmp');
  assert.equal(st.get('namespaces', undefined, 'tmp').status && (st.get('namespaces', undefined, 'tmp').status as { phase: string }).phase, 'Active');
  st.watch('pods', {}, (ev) => events.push(`${ev.type} ${ev.object.metadata?.name} ${ev.object.metadata?.deletionTimestamp ? 'terminating' : ''}`.trim()));
  st.create('pods', pod({ name: 'p', namespace: 'tmp', node: 'n1' }));
  st.create('pods', pod({ name: 'q', namespace: 'tmp', node: 'n1' }));
  const marked = st.delete('pods', 'tmp', 'p', { graceful: true });
  assert.ok(marked.metadata.deletionTimestamp);
  assert.equal(marked.metadata.deletionGracePeriodSeconds, 30);
  st.delete('pods', 'tmp', 'p');
  st.delete('namespaces', undefined, 'tmp');
  assert.deepEqual(events, ['ADDED p', 'ADDED q', 'MODIFIED p terminating', 'DELETED p terminating', 'DELETED q']);
  assert.equal(st.find('pods', 'tmp', 'q'), undefined);
  assert.equal(st.changes().length, 3, 'only the last 3 changes are kept');
  const old: string[] = [];
  const w = st.watch('pods', { resourceVersion: '1' }, (ev) => old.push(`${ev.type} ${(ev.object as unknown as { code?: number }).code}`));
  assert.deepEqual([old, w.open], [['ERROR 410'], false]);
  const lbl = st.create('namespaces', { metadata: { name: 'x', labels: { 'kubernetes.io/metadata.name': 'wrong' } } });
  assert.equal(lbl.metadata.labels?.['kubernetes.io/metadata.name'], 'x');
});

// ---- the server through client-node ----

test('a bearer token is required: 401 without it or with a wrong one, logged without a user', T, async (t) => {
  const { s, api } = await startServer(t);
  assert.equal((await raw(s, '/api/v1/namespaces', { token: null })).status, 401);
  const r = await raw(s, '/api/v1/namespaces', { token: 'wrong' });
  assert.equal(r.status, 401);
  assert.equal(r.headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(r.body), {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'Unauthorized',
    reason: 'Unauthorized',
    code: 401,
  });
  const bad = new k8s.KubeConfig();
  bad.loadFromString(s.kubeconfig({ token: 'wrong' }));
  assert.equal((await apiError(bad.makeApiClient(k8s.CoreV1Api).listNamespace())).code, 401);
  assert.equal((await api.listNamespace()).kind, 'NamespaceList');
  assert.deepEqual(
    s.requests.map((q) => [q.status, q.user]),
    [
      [401, undefined],
      [401, undefined],
      [401, undefined],
      [200, 'meshlane-test'],
    ],
  );
});

test('kubeconfig: from a file with the CA, insecure-skip-tls-verify, and no CA at all (refused)', T, async (t) => {
  const { s } = await startServer(t);
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-kube-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fromFile = new k8s.KubeConfig();
  fromFile.loadFromFile(s.writeKubeconfig(join(dir, 'kubeconfig')));
  assert.equal(fromFile.getCurrentCluster()?.server, s.url);
  assert.deepEqual(names((await fromFile.makeApiClient(k8s.CoreV1Api).listNamespace()).items), ['default', 'kube-node-lease', 'kube-public', 'kube-system']);
  const insecure = new k8s.KubeConfig();
  insecure.loadFromString(s.kubeconfig({ insecureSkipTlsVerify: true }));
  assert.equal(insecure.getCurrentCluster()?.skipTLSVerify, true);
  assert.equal((await insecure.makeApiClient(k8s.CoreV1Api).listNamespace()).kind, 'NamespaceList');
  const noCa = new k8s.KubeConfig();
  noCa.loadFromClusterAndUser({ name: 'c', server: s.url, skipTLSVerify: false }, { name: 'u', token: s.token });
  await assert.rejects(noCa.makeApiClient(k8s.CoreV1Api).listNamespace(), /self.signed|unable to verify|certificate/i);
});

test('discovery and /version are enough for client-node', T, async (t) => {
  const { s, kc } = await startServer(t);
  const v = await kc.makeApiClient(k8s.VersionApi).getCode();
  assert.equal(v.major, '1');
  assert.match(v.gitVersion, /^v1\.\d+\.\d+/);
  const core = await kc.makeApiClient(k8s.CoreApi).getAPIVersions();
  assert.deepEqual(core.versions, ['v1']);
  const res = await kc.makeApiClient(k8s.CoreV1Api).getAPIResources();
  const pods = res.resources.find((r) => r.name === 'pods');
  assert.equal(pods?.namespaced, true);
  assert.ok(pods?.verbs.includes('watch'));
  assert.ok(res.resources.some((r) => r.name === 'pods/status'));
  assert.ok(res.resources.some((r) => r.name === 'namespaces' && !r.namespaced));
  assert.ok(res.resources.some((r) => r.name === 'events'));
  assert.equal((await raw(s, '/readyz')).body, 'ok');
  assert.deepEqual(
    s.requests.map((q) => [q.isResourceRequest, q.verb, q.path]),
    [
      [false, 'get', '/version'],
      [false, 'get', '/api'],
      [false, 'get', '/api/v1'],
      [false, 'get', '/readyz'],
    ],
  );
});

test('list: namespaces and pods with label and field selectors, all namespaces or one', T, async (t) => {
  const { s, api } = await startServer(t);
  s.store.create('namespaces', namespace('mesh', { 'istio-injection': 'enabled' }));
  s.store.create('pods', pod({ name: 'web-1', namespace: 'mesh', node: 'n1', labels: { app: 'web', tier: 'front' }, podIP: '10.244.0.5' }));
  s.store.create('pods', pod({ name: 'web-2', namespace: 'default', node: 'n2', labels: { app: 'web' } }));
  s.store.create('pods', pod({ name: 'db-1', namespace: 'mesh', node: 'n1', labels: { app: 'db' }, phase: 'Succeeded' }));
  s.store.create('pods', pod({ name: 'pending', namespace: 'mesh', labels: { app: 'web', canary: 'true' } }));

  assert.deepEqual(names((await api.listNamespace({ labelSelector: 'istio-injection=enabled' })).items), ['mesh']);
  assert.deepEqual(names((await api.listNamespace({ labelSelector: 'kubernetes.io/metadata.name in (default,mesh)' })).items), ['default', 'mesh']);
  assert.deepEqual(names((await api.listNamespace({ fieldSelector: 'metadata.name!=default,status.phase=Active' })).items), [
    'kube-node-lease',
    'kube-public',
    'kube-system',
    'mesh',
  ]);

  const all = async (o: { labelSelector?: string; fieldSelector?: string }): Promise<string[]> => names((await api.listPodForAllNamespaces(o)).items);
  const inMesh = async (o: { labelSelector?: string; fieldSelector?: string }): Promise<string[]> =>
    names((await api.listNamespacedPod({ namespace: 'mesh', ...o })).items);
  assert.deepEqual(await all({}), ['db-1', 'pending', 'web-1', 'web-2']);
  assert.deepEqual(await inMesh({}), ['db-1', 'pending', 'web-1']);
  assert.deepEqual(await all({ labelSelector: 'app=web' }), ['pending', 'web-1', 'web-2']);
  assert.deepEqual(await all({ labelSelector: 'app==web,tier!=front' }), ['pending', 'web-2']);
  assert.deepEqual(await all({ labelSelector: 'app in (db,web),!canary' }), ['db-1', 'web-1', 'web-2']);
  assert.deepEqual(await all({ labelSelector: 'app notin (web)' }), ['db-1']);
  assert.deepEqual(await all({ labelSelector: 'tier' }), ['web-1']);
  assert.deepEqual(await all({ fieldSelector: 'spec.nodeName=n1' }), ['db-1', 'web-1']);
  assert.deepEqual(await all({ fieldSelector: 'spec.nodeName=' }), ['pending'], 'an unscheduled pod has the empty nodeName');
  assert.deepEqual(await all({ fieldSelector: 'spec.nodeName=n1,status.phase!=Succeeded' }), ['web-1']);
  assert.deepEqual(await all({ fieldSelector: 'metadata.namespace=default' }), ['web-2']);
  assert.deepEqual(await inMesh({ fieldSelector: 'metadata.name=web-1', labelSelector: 'app=web' }), ['web-1']);
  assert.deepEqual(await all({ fieldSelector: 'status.podIP=10.244.0.5' }), ['web-1']);

  const list = await api.listPodForAllNamespaces();
  assert.equal(list.metadata?.resourceVersion, String(s.store.resourceVersion), 'the list carries the current revision');
  assert.ok(list.items.every((p) => p.metadata?.uid && p.metadata.resourceVersion && p.metadata.creationTimestamp instanceof Date));

  const bad = await apiError(api.listPodForAllNamespaces({ fieldSelector: 'spec.host=n1' }));
  assert.equal(bad.code, 400);
  assert.equal(bad.body.message, 'field label not supported: spec.host');
  assert.equal((await apiError(api.listPodForAllNamespaces({ labelSelector: 'app in (' }))).code, 400);
});

test('list: resourceVersion 0 / exact / too old / too new, and limit+continue as one snapshot', T, async (t) => {
  const { s, api } = await startServer(t);
  for (const n of ['a', 'b', 'c']) s.store.create('pods', pod({ name: n, node: 'n1' }));
  const rvAfterC = String(s.store.resourceVersion);
  s.store.delete('pods', 'default', 'b');
  assert.deepEqual(names((await api.listNamespacedPod({ namespace: 'default', resourceVersion: '0' })).items), ['a', 'c']);
  assert.deepEqual(names((await api.listNamespacedPod({ namespace: 'default', resourceVersion: rvAfterC })).items), ['a', 'c'], 'not older than: served now');
  const exact = await api.listNamespacedPod({ namespace: 'default', resourceVersion: rvAfterC, resourceVersionMatch: 'Exact' });
  assert.deepEqual(names(exact.items), ['a', 'b', 'c'], 'exact: the state at that revision');
  assert.equal(exact.metadata?.resourceVersion, rvAfterC);
  const future = await apiError(api.listNamespacedPod({ namespace: 'default', resourceVersion: String(s.store.resourceVersion + 10) }));
  assert.equal(future.code, 504);
  assert.match(future.body.message ?? '', /Too large resource version/);

  const page1 = await api.listNamespacedPod({ namespace: 'default', limit: 1 });
  assert.deepEqual(names(page1.items), ['a']);
  assert.equal(page1.metadata?.remainingItemCount, 1);
  s.store.create('pods', pod({ name: 'aa', node: 'n1' })); // after the first page: not in this list
  const page2 = await api.listNamespacedPod({ namespace: 'default', limit: 1, _continue: page1.metadata?._continue ?? '' });
  assert.deepEqual(names(page2.items), ['c']);
  assert.equal(page2.metadata?._continue, undefined);
  assert.equal(page2.metadata?.resourceVersion, page1.metadata?.resourceVersion, 'every page is read at the first page’s revision');

  s.compact();
  const gone = await apiError(api.listNamespacedPod({ namespace: 'default', resourceVersion: rvAfterC, resourceVersionMatch: 'Exact' }));
  assert.deepEqual([gone.code, gone.body.reason], [410, 'Expired']);
  const staleToken = await apiError(api.listNamespacedPod({ namespace: 'default', limit: 1, _continue: page1.metadata?._continue ?? '' }));
  assert.deepEqual([staleToken.code, staleToken.body.reason], [410, 'Expired']);
});

test('create, get, replace with optimistic concurrency, status subresource, delete', T, async (t) => {
  const { s, api } = await startServer(t);
  const created = await api.createNamespacedPod({
    namespace: 'default',
    body: { metadata: { name: 'p', labels: { a: '1' } }, spec: { containers: [{ name: 'c', image: 'i' }] }, status: { phase: 'Running' } },
  });
  assert.equal(created.kind, 'Pod');
  assert.equal(created.status?.phase, 'Pending', 'a create through the API drops the status');
  assert.equal(s.requests.at(-1)?.status, 201);
  const gen = await api.createNamespacedPod({ namespace: 'default', body: { metadata: { generateName: 'gen-' }, spec: { containers: [] } } });
  assert.match(gen.metadata?.name ?? '', /^gen-[a-z0-9]{5}$/);
  assert.equal((await apiError(api.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'p' } } }))).body.reason, 'AlreadyExists');
  assert.equal((await apiError(api.createNamespacedPod({ namespace: 'nope', body: { metadata: { name: 'p' } } }))).code, 404);
  assert.equal((await apiError(api.readNamespacedPod({ namespace: 'default', name: 'missing' }))).code, 404);

  const got = await api.readNamespacedPod({ namespace: 'default', name: 'p' });
  assert.equal(got.metadata?.uid, created.metadata?.uid);
  got.metadata = { ...got.metadata, labels: { a: '2' } };
  const stale = { ...got, metadata: { ...got.metadata, resourceVersion: '1' } };
  const conflict = await apiError(api.replaceNamespacedPod({ namespace: 'default', name: 'p', body: stale }));
  assert.deepEqual([conflict.code, conflict.body.reason], [409, 'Conflict']);
  const replaced = await api.replaceNamespacedPod({ namespace: 'default', name: 'p', body: { ...got, status: { phase: 'Failed' } } });
  assert.equal(replaced.metadata?.labels?.a, '2');
  assert.ok(Number(replaced.metadata?.resourceVersion) > Number(got.metadata?.resourceVersion));
  assert.equal(replaced.status?.phase, 'Pending', 'an update of the pod keeps its status');
  const st = await api.replaceNamespacedPodStatus({
    namespace: 'default',
    name: 'p',
    body: { ...replaced, metadata: { ...replaced.metadata, labels: { ignored: 'x' } }, status: { phase: 'Running', podIP: '10.244.0.9' } },
  });
  assert.equal(st.status?.phase, 'Running');
  assert.deepEqual(st.metadata?.labels, { a: '2' }, 'a status update changes only the status');
  const same = await api.replaceNamespacedPod({ namespace: 'default', name: 'p', body: st });
  assert.equal(same.metadata?.resourceVersion, st.metadata?.resourceVersion, 'a write that changes nothing is no new revision');
  assert.deepEqual(
    s.requests.map((r) => `${r.verb} ${r.resource}${r.subresource ? '/' + r.subresource : ''} ${r.status}`),
    [
      'create pods 201',
      'create pods 201',
      'create pods 409',
      'create pods 404',
      'get pods 404',
      'get pods 200',
      'update pods 409',
      'update pods 200',
      'update pods/status 200',
      'update pods 200',
    ],
  );

  await api.createNamespace({ body: { metadata: { name: 'tmp' } } });
  await api.createNamespacedPod({ namespace: 'tmp', body: { metadata: { name: 'in-tmp' }, spec: { containers: [] } } });
  await api.deleteNamespace({ name: 'tmp' });
  assert.equal(s.store.find('pods', 'tmp', 'in-tmp'), undefined, 'deleting a namespace deletes what is in it');
  assert.equal((await raw(s, '/api/v1/services')).status, 404);
  assert.equal((await raw(s, '/apis/apps/v1/namespaces/default/deployments')).status, 404);
  s.clearRequests();
  const deleted = await api.deleteNamespacedPod({ namespace: 'default', name: 'p' });
  assert.equal(deleted.metadata?.name, 'p');
  assert.equal(s.store.find('pods', 'default', 'p'), undefined);
  assert.equal(s.store.changes().at(-1)?.type, 'DELETED');
  assert.deepEqual(
    s.requests.map((r) => `${r.verb} ${r.resource}${r.subresource ? '/' + r.subresource : ''} ${r.status}`),
    ['delete pods 200'],
  );
});

test('patch: JSON patch by default, merge and strategic merge through the Content-Type option', T, async (t) => {
  const { s, api } = await startServer(t);
  s.store.create('pods', pod({ name: 'p', node: 'n1', labels: { a: '1', b: '2' } }));
  const j = await api.patchNamespacedPod({ namespace: 'default', name: 'p', body: [{ op: 'add', path: '/metadata/labels/c', value: '3' }] });
  assert.deepEqual(j.metadata?.labels, { a: '1', b: '2', c: '3' });
  assert.equal(s.requests.at(-1)?.query.fieldManager, undefined);
  const m = await api.patchNamespacedPod(
    { namespace: 'default', name: 'p', body: { metadata: { labels: { a: null, d: '4' }, annotations: { x: 'y' } } } },
    mergeOpts,
  );
  assert.deepEqual(m.metadata?.labels, { b: '2', c: '3', d: '4' });
  assert.deepEqual(m.metadata?.annotations, { x: 'y' });
  const sm = await api.patchNamespacedPodStatus({ namespace: 'default', name: 'p', body: { status: { phase: 'Succeeded' } } }, strategicOpts);
  assert.equal(sm.status?.phase, 'Succeeded');
  const noop = await api.patchNamespacedPod({ namespace: 'default', name: 'p', body: { metadata: { labels: { b: '2' } } } }, mergeOpts);
  assert.equal(noop.metadata?.resourceVersion, sm.metadata?.resourceVersion, 'a patch that changes nothing is no new revision');
  const stale = await apiError(
    api.patchNamespacedPod({ namespace: 'default', name: 'p', body: { metadata: { resourceVersion: '1', labels: { e: '5' } } } }, mergeOpts),
  );
  assert.equal(stale.code, 409);
  const directive = await apiError(
    api.patchNamespacedPod({ namespace: 'default', name: 'p', body: { spec: { containers: [{ name: 'app', $patch: 'delete' }] } } }, strategicOpts),
  );
  assert.equal(directive.code, 500);
  assert.match(directive.body.message ?? '', /strategic merge directive \$patch/);
  const apply = await raw(s, '/api/v1/namespaces/default/pods/p', { method: 'PATCH', body: { metadata: {} }, contentType: 'application/apply-patch+yaml' });
  assert.equal(apply.status, 415);
  assert.deepEqual(
    s.requests.map((r) => `${r.verb} ${r.resource}${r.subresource ? '/' + r.subresource : ''} ${r.status}`),
    ['patch pods 200', 'patch pods 200', 'patch pods/status 200', 'patch pods 200', 'patch pods 409', 'patch pods 500', 'patch pods 415'],
  );
});

test('events: create, get, list by involved object, kubelet-style dedupe by PATCH and by PUT', T, async (t) => {
  const { s, api } = await startServer(t);
  const first = new Date('2026-12-01T10:00:00Z');
  const ev = await api.createNamespacedEvent({
    namespace: 'default',
    body: {
      metadata: { name: 'p.1880c3b5d2a6e4f0', namespace: 'default' },
      involvedObject: { kind: 'Pod', namespace: 'default', name: 'p', uid: 'u1', apiVersion: 'v1' },
      reason: 'CaptureEnabled',
      message: 'meshlane captures pod p',
      type: 'Normal',
      source: { component: 'meshlane', host: 'n1' },
      reportingComponent: 'meshlane',
      reportingInstance: 'n1',
      firstTimestamp: first,
      lastTimestamp: first,
      count: 1,
    },
  });
  assert.equal(ev.count, 1);
  const later = '2026-12-01T10:05:00Z';
  const patched = await api.patchNamespacedEvent(
    { namespace: 'default', name: ev.metadata?.name ?? '', body: { count: 2, lastTimestamp: later, message: 'meshlane captures pod p (again)' } },
    strategicOpts,
  );
  assert.equal(patched.count, 2);
  assert.equal(patched.lastTimestamp?.toISOString(), new Date(later).toISOString());
  assert.equal(patched.firstTimestamp?.toISOString(), first.toISOString());
  const got = await api.readNamespacedEvent({ namespace: 'default', name: ev.metadata?.name ?? '' });
  const put = await api.replaceNamespacedEvent({ namespace: 'default', name: got.metadata?.name ?? '', body: { ...got, count: (got.count ?? 0) + 1 } });
  assert.equal(put.count, 3);
  s.store.create('events', { metadata: { name: 'other', namespace: 'default' }, involvedObject: { kind: 'Pod', name: 'q' }, reason: 'X' });
  const list = await api.listNamespacedEvent({
    namespace: 'default',
    fieldSelector: 'involvedObject.kind=Pod,involvedObject.name=p,reason=CaptureEnabled,source=meshlane',
  });
  assert.deepEqual(names(list.items), [ev.metadata?.name ?? '']);
  assert.deepEqual(
    s.requests.map((r) => `${r.verb} ${r.resource}`),
    ['create events', 'patch events', 'get events', 'update events', 'list events'],
  );
});

test('watch: chunked JSON lines; ADDED, MODIFIED, DELETED, BOOKMARK; replay from a resourceVersion', T, async (t) => {
  const { s, kc, api } = await startServer(t, { bookmarkIntervalMs: 0 });
  s.store.create('pods', pod({ name: 'old', node: 'n1' }));
  const list = await api.listNamespacedPod({ namespace: 'default' });
  s.store.create('pods', pod({ name: 'gap', node: 'n1' })); // after the list: replayed by the watch
  const w = await rawWatch(t, kc, '/api/v1/namespaces/default/pods', { resourceVersion: list.metadata?.resourceVersion, allowWatchBookmarks: true });
  await w.seen.waitFor('ADDED gap');
  assert.ok(!w.seen.has('ADDED old'), 'a watch from a revision replays only what came after it');
  await s.waitForWatches(1);
  s.store.patch('pods', 'default', 'gap', 'application/merge-patch+json', { metadata: { labels: { x: '1' } } });
  s.store.delete('pods', 'default', 'old');
  assert.equal(s.sendBookmarks(), 1);
  const rvNow = String(s.store.resourceVersion);
  await w.seen.waitFor(`BOOKMARK ${rvNow}`);
  assert.deepEqual(w.seen.log, ['ADDED gap', 'MODIFIED gap', 'DELETED old', `BOOKMARK ${rvNow}`]);
  const bookmark = w.events.at(-1)?.object;
  assert.deepEqual(bookmark, { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: rvNow } }, 'a bookmark carries only the resourceVersion');
  const del = w.events[2]?.object;
  assert.equal(del?.metadata?.resourceVersion, rvNow, 'DELETED carries the revision of the deletion (the last write)');

  // the protocol itself: 200, application/json, chunked, one event per line; ""/"0" start with synthetic ADDEDs
  const rawStream = (path: string): Promise<{ headers: Record<string, unknown>; lines: string[] }> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest({ host: s.host, port: s.port, path, ca: s.certs.caPem, headers: { authorization: `Bearer ${s.token}` } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ headers: res.headers, lines: text.split('\n') }));
      });
      req.on('error', reject);
      req.end();
    });
  const parse = (l: string): string => {
    const ev = JSON.parse(l) as { type: string; object: k8s.V1Pod };
    return `${ev.type} ${ev.object.metadata?.name}`;
  };
  s.store.create('pods', pod({ name: 'other', node: 'n2' }));
  const [body, legacy] = await Promise.all([
    rawStream('/api/v1/pods?watch=true&resourceVersion=0&timeoutSeconds=1'),
    rawStream('/api/v1/watch/namespaces/default/pods/gap?timeoutSeconds=1'),
  ]);
  assert.equal(body.headers['content-type'], 'application/json');
  assert.equal(body.headers['transfer-encoding'], 'chunked');
  assert.deepEqual(body.lines.slice(0, -1).map(parse), ['ADDED gap', 'ADDED other']);
  assert.equal(body.lines.at(-1), '', 'every event ends with a newline');
  assert.deepEqual(legacy.lines.slice(0, -1).map(parse), ['ADDED gap'], 'the legacy /watch/ path names one object');
  const legacyRecord = s.requests.find((r) => r.path.startsWith('/api/v1/watch/'));
  assert.deepEqual([legacyRecord?.verb, legacyRecord?.resource, legacyRecord?.name], ['watch', 'pods', 'gap']);
  const rvNow2 = String(s.store.resourceVersion);
  const noBookmarks = await rawWatch(t, kc, '/api/v1/pods', { resourceVersion: rvNow2 });
  await s.waitForWatches(2);
  assert.equal(s.sendBookmarks(), 1, 'bookmarks only where allowWatchBookmarks=true');
  noBookmarks.ctl.abort();
  w.ctl.abort();
});

test('watch: periodic bookmarks when allowed', T, async (t) => {
  const { s, kc } = await startServer(t, { bookmarkIntervalMs: 100 });
  const w = await rawWatch(t, kc, '/api/v1/pods', { resourceVersion: String(s.store.resourceVersion), allowWatchBookmarks: true });
  await w.seen.waitFor((l) => l.filter((e) => e.startsWith('BOOKMARK')).length >= 2);
  assert.ok(w.seen.log.every((e) => e === `BOOKMARK ${s.store.resourceVersion}`));
});

test('watch through selectors: leaving the view is DELETED (old content, new revision), entering is ADDED', T, async (t) => {
  const { s, kc } = await startServer(t, { bookmarkIntervalMs: 0 });
  s.store.create('pods', pod({ name: 'p', labels: { app: 'web' } })); // unscheduled
  const byLabel = await rawWatch(t, kc, '/api/v1/pods', { labelSelector: 'app=web' });
  const byNode = await rawWatch(t, kc, '/api/v1/pods', { fieldSelector: 'spec.nodeName=n1' });
  const otherNs = await rawWatch(t, kc, '/api/v1/namespaces/kube-system/pods', {});
  await s.waitForWatches(3);
  await byLabel.seen.waitFor('ADDED p');
  const cur = s.store.get('pods', 'default', 'p');
  s.store.update('pods', { ...cur, spec: { ...(cur.spec as object), nodeName: 'n1' } }); // scheduled onto n1
  await byNode.seen.waitFor('ADDED p');
  const before = s.store.get('pods', 'default', 'p');
  const leave = s.store.patch('pods', 'default', 'p', 'application/merge-patch+json', { metadata: { labels: { app: 'db' } } });
  s.store.patch('pods', 'default', 'p', 'application/merge-patch+json', { metadata: { labels: { other: 'x' } } }); // out of view: nothing
  s.store.patch('pods', 'default', 'p', 'application/merge-patch+json', { metadata: { labels: { app: 'web' } } });
  s.store.delete('pods', 'default', 'p');
  await byLabel.seen.waitFor((l) => l.length >= 5);
  await byNode.seen.waitFor('DELETED p');
  assert.deepEqual(byLabel.seen.log, ['ADDED p', 'MODIFIED p', 'DELETED p', 'ADDED p', 'DELETED p']);
  const left = byLabel.events[2]?.object as k8s.V1Pod;
  assert.deepEqual(left.metadata?.labels, before.metadata.labels, 'the DELETED of an object leaving the view shows its content before');
  assert.equal(left.metadata?.resourceVersion, leave.metadata.resourceVersion, 'at the revision of the change');
  assert.deepEqual(byNode.seen.log, ['ADDED p', 'MODIFIED p', 'MODIFIED p', 'MODIFIED p', 'DELETED p']);
  assert.deepEqual(otherNs.seen.log, []);
});

test('watch from a compacted resourceVersion: HTTP 200, one ERROR event (410 Expired), then the end', T, async (t) => {
  const { s, kc } = await startServer(t);
  const old = String(s.store.resourceVersion);
  s.store.create('pods', pod({ name: 'p' }));
  s.compact();
  const w = await rawWatch(t, kc, '/api/v1/pods', { resourceVersion: old });
  assert.equal(await w.done, null, 'the stream ends cleanly after the ERROR event');
  assert.equal(w.events.length, 1);
  assert.equal(w.events[0]?.type, 'ERROR');
  assert.deepEqual(w.events[0]?.object, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: ${old} (${s.store.resourceVersion})`,
    reason: 'Expired',
    code: 410,
  });
  assert.equal(s.requests.at(-1)?.status, 200);
  const future = await rawWatch(t, kc, '/api/v1/pods', { resourceVersion: String(s.store.resourceVersion + 5) });
  await future.done;
  assert.equal(future.events[0]?.object.code, 504);
});

test('watch timeoutSeconds: the stream ends with the terminating chunk (done(null))', T, async (t) => {
  const { s, kc } = await startServer(t);
  const w = await rawWatch(t, kc, '/api/v1/pods', { resourceVersion: String(s.store.resourceVersion), timeoutSeconds: 1 });
  assert.equal(await w.done, null);
  assert.equal(s.watches().length, 0);
});

test('informer on spec.nodeName: syncs, sees adds/updates/deletes of its node only', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  s.store.create('pods', pod({ name: 'mine', node: 'node-a' }));
  s.store.create('pods', pod({ name: 'theirs', node: 'node-b' }));
  const listRv = String(s.store.resourceVersion);
  const { inf, seen } = nodeInformer(t, kc, api, 'node-a');
  await inf.start();
  await s.waitForWatches(1);
  assert.deepEqual(seen.log, ['connect', 'add mine']);
  assert.deepEqual(names(inf.list()), ['mine']);
  assert.ok(inf.get('mine', 'default')?.metadata?.creationTimestamp instanceof Date, 'a listed object is deserialised (V1Pod, Dates)');
  s.store.create('pods', pod({ name: 'new', namespace: 'kube-system', node: 'node-a' }));
  s.store.create('pods', pod({ name: 'elsewhere', node: 'node-b' }));
  s.store.patch('pods', 'default', 'mine', 'application/merge-patch+json', { status: { podIP: '10.244.0.7' } });
  s.store.delete('pods', 'kube-system', 'new', { graceful: true }); // the kubelet's turn: terminating first
  await seen.waitFor('update new');
  // the cache mixes two shapes: list items are deserialised (Date fields), watch objects are the plain JSON
  assert.equal(typeof (inf.get('new', 'kube-system')?.metadata?.deletionTimestamp as unknown), 'string');
  assert.equal(
    typeof (inf.get('mine', 'default')?.metadata?.creationTimestamp as unknown),
    'string',
    'once updated by the watch, the same object has string timestamps',
  );
  s.store.delete('pods', 'kube-system', 'new');
  await seen.waitFor('delete new');
  assert.deepEqual(seen.log, ['connect', 'add mine', 'add new', 'update mine', 'update new', 'delete new']);
  assert.equal(inf.get('mine', 'default')?.status?.podIP, '10.244.0.7');
  assert.deepEqual(
    s.requests.map((r) => [r.verb, r.path, r.query.fieldSelector, r.query.resourceVersion, r.query.allowWatchBookmarks]),
    [
      ['list', '/api/v1/pods', 'spec.nodeName=node-a', undefined, undefined],
      ['watch', '/api/v1/pods', 'spec.nodeName=node-a', listRv, undefined], // the watch starts at the list's revision
    ],
  );
  assert.deepEqual(Object.keys(s.requests[1]?.query ?? {}).sort(), ['fieldSelector', 'resourceVersion', 'watch'], 'no allowWatchBookmarks, no timeoutSeconds');
});

test('fault: a watch ended gracefully -> the informer reconnects from its resourceVersion (no relist) and misses nothing', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  s.store.create('pods', pod({ name: 'a', node: 'n1' }));
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  await s.waitForWatches(1);
  const rv = inf.latestResourceVersion();
  const mark = s.lastSeq;
  const held = s.delay({ ms: 200, count: 1, match: (r) => r.verb === 'watch' }); // the reconnect waits: a change in the gap
  assert.equal(s.endWatches('graceful'), 1);
  await s.waitForRequest((r) => r.verb === 'watch', { since: mark });
  s.store.create('pods', pod({ name: 'b', node: 'n1' }));
  await seen.waitFor('add b');
  assert.equal(held.hits, 1);
  const after = s.requests.filter((r) => r.seq > mark);
  assert.deepEqual(
    after.map((r) => [r.verb, r.query.resourceVersion]),
    [['watch', rv]],
  );
  assert.deepEqual(seen.log, ['connect', 'add a', 'connect', 'add b']);
  assert.equal(seen.count('error'), 0);
});

test(
  'fault: a watch closed mid-stream (no terminating chunk) -> error ERR_STREAM_PREMATURE_CLOSE, the informer stays stopped; start() resumes from its resourceVersion',
  T,
  async (t) => {
    const { s, kc, api } = await startServer(t);
    const { inf, seen } = nodeInformer(t, kc, api, 'n1');
    await inf.start();
    await s.waitForWatches(1);
    const rv = inf.latestResourceVersion();
    const mark = s.lastSeq;
    s.endWatches('abrupt');
    await seen.waitFor('error ERR_STREAM_PREMATURE_CLOSE');
    s.store.create('pods', pod({ name: 'missed', node: 'n1' }));
    await settle();
    assert.equal(s.lastSeq, mark, 'no reconnect, no relist');
    assert.ok(!seen.has('add missed'));
    await inf.start();
    await seen.waitFor('add missed');
    assert.deepEqual(
      s.requests.filter((r) => r.seq > mark).map((r) => [r.verb, r.query.resourceVersion]),
      [['watch', rv]],
      'start() after an error watches from the last resourceVersion',
    );
    assert.deepEqual(seen.log, ['connect', 'error ERR_STREAM_PREMATURE_CLOSE', 'connect', 'add missed']);
  },
);

test('fault: a TCP reset of the watch -> error ECONNRESET, the informer stays stopped', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  await s.waitForWatches(1);
  const mark = s.lastSeq;
  assert.ok(s.resetConnections() >= 1);
  await seen.waitFor('error ECONNRESET');
  await settle();
  assert.equal(s.lastSeq, mark);
  assert.deepEqual(seen.log, ['connect', 'error ECONNRESET']);
  // the same through endWatches('reset')
  await inf.start();
  await s.waitForWatches(1);
  assert.equal(s.endWatches('reset'), 1);
  await seen.waitFor((l) => l.filter((e) => e === 'error ECONNRESET').length === 2);
});

test('fault: 503 on the reconnect -> error 503, the informer stays stopped', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  await s.waitForWatches(1);
  const mark = s.lastSeq;
  const f = s.fail({ count: 1, match: (r) => r.verb === 'watch' });
  s.endWatches('graceful');
  await seen.waitFor('error 503');
  await settle();
  assert.equal(f.hits, 1);
  const after = s.requests.filter((r) => r.seq > mark);
  assert.deepEqual(
    after.map((r) => [r.verb, r.status, r.fault]),
    [['watch', 503, 'fail']],
  );
  assert.deepEqual(seen.log, ['connect', 'connect', 'error 503']);
  // and a 503 on the first list: the error callback, nothing else
  const second = nodeInformer(t, kc, api, 'n2');
  s.fail({ count: 1, match: (r) => r.verb === 'list' });
  await second.inf.start();
  await settle();
  assert.deepEqual(second.seen.log, ['connect', 'error 503']);
  assert.equal(s.watches().length, 0);
});

test(
  'fault: compacted history -> the reconnect gets the 410 ERROR event and the informer relists (deletions in the gap become delete callbacks)',
  T,
  async (t) => {
    const { s, kc, api } = await startServer(t);
    s.store.create('pods', pod({ name: 'stays', node: 'n1' }));
    s.store.create('pods', pod({ name: 'goes', node: 'n1' }));
    const { inf, seen } = nodeInformer(t, kc, api, 'n1');
    await inf.start();
    await s.waitForWatches(1);
    const rv = inf.latestResourceVersion();
    const mark = s.lastSeq;
    // the watch is dropped, changes happen, the history is compacted past the informer's revision
    s.endWatches('abrupt');
    await seen.waitFor('error ERR_STREAM_PREMATURE_CLOSE');
    s.store.delete('pods', 'default', 'goes');
    s.store.create('pods', pod({ name: 'came', node: 'n1' }));
    s.store.patch('pods', 'default', 'stays', 'application/merge-patch+json', { metadata: { labels: { v: '2' } } });
    s.compact();
    await inf.start();
    await seen.waitFor('update stays');
    await s.waitForWatches(1);
    const after = s.requests.filter((r) => r.seq > mark);
    assert.deepEqual(
      after.map((r) => [r.verb, r.query.resourceVersion, r.status]),
      [
        ['watch', rv, 200], // answered with the ERROR event
        ['list', undefined, 200],
        ['watch', String(s.store.resourceVersion), 200],
      ],
    );
    assert.deepEqual(seen.log, [
      'connect',
      'add goes',
      'add stays',
      'error ERR_STREAM_PREMATURE_CLOSE',
      'connect',
      'connect',
      'delete goes',
      'add came',
      'update stays',
    ]);
    assert.deepEqual(names(inf.list()), ['came', 'stays']);
    assert.equal(seen.count('error'), 1, 'the 410 is no error callback');
  },
);

test('fault: an HTTP 410 answer to the watch request also makes the informer relist', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  await s.waitForWatches(1);
  const mark = s.lastSeq;
  s.fail({ answer: 410, match: (r) => r.verb === 'watch' });
  s.endWatches('graceful');
  await s.waitForWatches(1);
  assert.deepEqual(
    s.requests.filter((r) => r.seq > mark).map((r) => [r.verb, r.status]),
    [
      ['watch', 410],
      ['list', 200],
      ['watch', 200],
    ],
  );
  assert.equal(seen.count('error'), 0);
});

test('fault answers on plain requests: 503 with Retry-After, a TCP reset, a hang-up', T, async (t) => {
  const { s, api } = await startServer(t);
  s.fail({ retryAfterSeconds: 2 });
  const e503 = await apiError(api.listNamespace());
  assert.deepEqual([e503.code, e503.body.reason, e503.body.code], [503, 'ServiceUnavailable', 503]);
  s.fail({ answer: 'reset' });
  await assert.rejects(api.listNamespace(), (e: unknown) => errorCode(e) === 'ECONNRESET');
  s.fail({ answer: 'hangup' });
  await assert.rejects(api.listNamespace(), (e: unknown) => errorCode(e) === 'ECONNRESET' && /socket hang up/.test((e as Error).message));
  const f = s.fail({ answer: 500, count: Infinity, match: (r) => r.resource === 'pods' });
  assert.equal((await apiError(api.listPodForAllNamespaces())).code, 500);
  assert.equal((await api.listNamespace()).kind, 'NamespaceList', 'only matching requests fail');
  assert.equal((await apiError(api.listPodForAllNamespaces())).code, 500);
  f.clear();
  assert.equal((await api.listPodForAllNamespaces()).kind, 'PodList');
  assert.deepEqual(
    s.requests.map((r) => [r.status, r.fault]),
    [
      [503, 'fail'],
      [undefined, 'reset'],
      [undefined, 'hangup'],
      [500, 'fail'],
      [200, undefined],
      [500, 'fail'],
      [200, undefined],
    ],
  );
  assert.equal((await raw(s, '/api')).status, 200);
  s.fail({ retryAfterSeconds: 3 });
  assert.equal((await raw(s, '/api')).headers['retry-after'], '3');
});

test(
  'an ERROR event other than 410 (a resourceVersion the server has not reached) is ignored: the informer re-watches the same resourceVersion at once, in a loop',
  T,
  async (t) => {
    // a server that lost its state (a fresh store behind the same address and certificate)
    const { s, kc, api } = await startServer(t);
    for (const n of ['a', 'b', 'c', 'd']) s.store.create('pods', pod({ name: n, node: 'n1' }));
    const { inf, seen } = nodeInformer(t, kc, api, 'n1');
    await inf.start();
    await s.waitForWatches(1);
    const rv = inf.latestResourceVersion();
    await s.close();
    const fresh = await KubeApiServer.start({ port: s.port, certs: s.certs, token: s.token });
    t.after(() => fresh.close());
    await inf.start();
    const loops = await fresh.waitForRequest((r) => r.verb === 'watch' && r.seq >= 5);
    await inf.stop();
    assert.equal(loops.query.resourceVersion, rv);
    assert.ok(
      fresh.requests.every((r) => r.verb === 'watch' && r.query.resourceVersion === rv && (r.status ?? 200) === 200),
      'no relist, the same resourceVersion every time',
    );
    assert.ok(
      seen.log.filter((e) => e.startsWith('error')).every((e) => e === 'error AbortError'),
      'no error callback (but the AbortError of stop() when it caught a watch open)',
    );
    assert.ok(seen.count('connect') >= 6);
  },
);

test('fault: delayed responses still arrive (a later undelayed request overtakes)', T, async (t) => {
  const { s, api } = await startServer(t);
  s.delay({ ms: 400, count: 1, match: (r) => r.resource === 'namespaces' });
  const order: string[] = [];
  const slow = api.listNamespace().then(() => order.push('namespaces'));
  await s.waitForRequest((r) => r.resource === 'namespaces');
  const fast = api.listPodForAllNamespaces().then(() => order.push('pods'));
  await Promise.all([slow, fast]);
  assert.deepEqual(order, ['pods', 'namespaces']);
  assert.deepEqual(
    s.requests.map((r) => [r.resource, r.fault, r.status]),
    [
      ['namespaces', 'delay', 200],
      ['pods', undefined, 200],
    ],
  );
});

test('fault: the API down at start and while running; restarted on the same port with the same certificate and store', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  const port = s.port;
  await s.stop();
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  assert.deepEqual(seen.log, ['connect', 'error ECONNREFUSED'], 'down at start: the list fails, nothing retries');
  s.store.create('pods', pod({ name: 'a', node: 'n1' }));
  await s.start();
  assert.equal(s.port, port);
  await inf.start();
  await seen.waitFor('add a');
  await s.waitForWatches(1);
  const rv = inf.latestResourceVersion();
  await s.stop(); // while running: the watch ends gracefully, the reconnect is refused
  await seen.waitFor((l) => l.filter((e) => e === 'error ECONNREFUSED').length === 2);
  assert.deepEqual(seen.log.slice(-2), ['connect', 'error ECONNREFUSED']);
  s.store.create('pods', pod({ name: 'b', node: 'n1' }));
  await s.start();
  const mark = s.lastSeq;
  await inf.start();
  await seen.waitFor('add b');
  assert.deepEqual(
    s.requests.filter((r) => r.seq > mark).map((r) => [r.verb, r.query.resourceVersion]),
    [['watch', rv]],
  );
});

test('stop() of an informer aborts its watch and fires the error callback with an AbortError', T, async (t) => {
  const { s, kc, api } = await startServer(t);
  const { inf, seen } = nodeInformer(t, kc, api, 'n1');
  await inf.start();
  await s.waitForWatches(1);
  await inf.stop();
  await settle();
  assert.deepEqual(seen.log, ['connect', 'error AbortError']);
  assert.equal(s.watches().length, 0);
});

test('two agents with their own tokens; the request log checked against a ClusterRole', T, async (t) => {
  const { s } = await startServer(t);
  s.addToken('token-b', 'node-b-agent');
  const kcB = new k8s.KubeConfig();
  kcB.loadFromString(s.kubeconfig({ token: 'token-b' }));
  const kcA = new k8s.KubeConfig();
  kcA.loadFromString(s.kubeconfig());
  const apiA = kcA.makeApiClient(k8s.CoreV1Api);
  const apiB = kcB.makeApiClient(k8s.CoreV1Api);
  s.store.create('pods', pod({ name: 'pa', node: 'node-a' }));
  s.store.create('pods', pod({ name: 'pb', node: 'node-b' }));
  const a = nodeInformer(t, kcA, apiA, 'node-a');
  const b = nodeInformer(t, kcB, apiB, 'node-b');
  await Promise.all([a.inf.start(), b.inf.start()]);
  await s.waitForWatches(2);
  await apiB.createNamespacedEvent({
    namespace: 'default',
    body: { metadata: { name: 'pb.1' }, involvedObject: { kind: 'Pod', name: 'pb', namespace: 'default' }, reason: 'Captured' },
  });
  await apiB.patchNamespacedEvent({ namespace: 'default', name: 'pb.1', body: { count: 2 } }, strategicOpts);
  assert.deepEqual(a.seen.log, ['connect', 'add pa']);
  assert.deepEqual(b.seen.log, ['connect', 'add pb']);
  const byUser = (u: string): RequestRecord[] => s.requests.filter((r) => r.user === u);
  assert.deepEqual(
    byUser('meshlane-test').map((r) => r.verb),
    ['list', 'watch'],
  );
  assert.deepEqual(
    byUser('node-b-agent').map((r) => r.verb),
    ['list', 'watch', 'create', 'patch'],
  );
  const role: PolicyRule[] = [
    { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  ];
  assert.deepEqual(notAllowed(role, s.requests), []);
  assert.deepEqual(unusedGrants(role, s.requests), []);
  assert.deepEqual(
    unusedGrants(role, byUser('meshlane-test')).map((g) => `${g.verbs[0]} ${g.resources?.[0]}`),
    ['create events', 'patch events'],
  );
});
