import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ClusterFileSource, parseClusterFile, type ClusterSnapshot } from '../../src/sources/cluster-file.js';
import { UserError } from '../../src/util/errors.js';

const names = (items: unknown[]): string[] => items.map((i) => (i as { metadata: { name: string } }).metadata.name);

test('a kubectl List in YAML', () => {
  const text = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop, labels: {istio-injection: enabled}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web-1, namespace: shop}
  spec: {containers: [{name: web}]}
  status: {phase: Running}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
`;
  const s = parseClusterFile(text, 'c.yaml');
  assert.deepEqual(names(s.namespaces), ['shop']);
  assert.deepEqual(names(s.pods), ['web-1']);
});

test('the same List in JSON, and typed lists whose items have no kind', () => {
  const podItem = (name: string) => ({ metadata: { name }, spec: { containers: [] }, status: {} });
  const json = JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'NamespaceList', items: [{ metadata: { name: 'a' } }] },
        { apiVersion: 'v1', kind: 'PodList', items: [podItem('p1'), podItem('p2')] },
      ],
    },
    null,
    '\t',
  );
  const s = parseClusterFile(json, 'c.json');
  assert.deepEqual(names(s.namespaces), ['a']);
  assert.deepEqual(names(s.pods), ['p1', 'p2']);
});

test('keep: pods of another node are checked like every object but left out of the snapshot', () => {
  const pod = (name: string, nodeName: string, status: unknown = {}) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: { nodeName, containers: [] },
    status,
  });
  const keep = (p: unknown): boolean => (p as { spec: { nodeName: string } }).spec.nodeName === 'n1';
  const file = (items: unknown[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  const s = parseClusterFile(file([pod('a', 'n1'), pod('b', 'n2'), pod('c', 'n1')]), 'c.json', keep);
  assert.deepEqual(names(s.pods), ['a', 'c']);
  // only other nodes' pods: a valid file with no pods here (not 'no Namespace or Pod in it')
  assert.deepEqual(parseClusterFile(file([pod('b', 'n2')]), 'c.json', keep).pods, []);
  // another node's pod cut short is still refused
  assert.throws(
    () =>
      parseClusterFile(
        file([pod('a', 'n1'), { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'b' }, spec: { nodeName: 'n2', containers: [] } }]),
        'c.json',
        keep,
      ),
    /item 2 of the List: Pod default\/b has no status/,
  );
});

test('a multi-document YAML stream; empty documents and unknown kinds ignored', () => {
  const text = `---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: []}
status: {}
...
`;
  const s = parseClusterFile(text, 'c.yaml');
  assert.deepEqual(names(s.namespaces), ['shop']);
  assert.deepEqual(names(s.pods), ['p']);
  // an empty file and plain text are errors now (below), not an empty cluster
});

test('a syntax error is a one-line UserError naming the file', () => {
  for (const text of ['kind: Pod\nmetadata: {name: [\n', '{"kind": "List", "items": [', 'a: b\n  c: d\n']) {
    assert.throws(
      () => parseClusterFile(text, '/tmp/c.yaml'),
      (e: unknown) => {
        assert.ok(e instanceof UserError);
        assert.match(e.message, /^cannot read cluster file \/tmp\/c\.yaml: \S/);
        assert.ok(!e.message.includes('\n'), e.message);
        return true;
      },
    );
  }
});

/** Collects a source's events; `next` waits for the next one of a kind. */
function recorder(src: ClusterFileSource) {
  const events: Array<{ kind: 'snapshot'; snap: ClusterSnapshot } | { kind: 'error'; err: Error }> = [];
  let wake: (() => void) | undefined;
  src.on('snapshot', (snap: ClusterSnapshot) => {
    events.push({ kind: 'snapshot', snap });
    wake?.();
  });
  src.on('error', (err: Error) => {
    events.push({ kind: 'error', err });
    wake?.();
  });
  async function next(kind: 'snapshot' | 'error', withinMs: number) {
    const deadline = Date.now() + withinMs;
    for (;;) {
      const i = events.findIndex((e) => e.kind === kind);
      if (i >= 0) return events.splice(0, i + 1)[i]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${kind} event within ${withinMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }
  return { events, next };
}

function podDoc(name: string): string {
  return `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: shop}\nspec: {containers: []}\nstatus: {}\n`;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'meshlane-cluster-file-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('the source emits a snapshot at start and again when the file is rewritten', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.yaml');
    await writeFile(file, podDoc('one'));
    const src = new ClusterFileSource(file);
    const rec = recorder(src);
    src.start();
    try {
      const first = await rec.next('snapshot', 2000);
      assert.equal(first.kind, 'snapshot');
      if (first.kind === 'snapshot') assert.deepEqual(names(first.snap.pods), ['one']);
      await writeFile(file, podDoc('two'));
      const second = await rec.next('snapshot', 2000);
      if (second.kind === 'snapshot') assert.deepEqual(names(second.snap.pods), ['two']);
      // an editor's write-to-temp-then-rename
      await writeFile(join(dir, '.cluster.yaml.swp'), podDoc('three'));
      await rename(join(dir, '.cluster.yaml.swp'), file);
      const third = await rec.next('snapshot', 2000);
      if (third.kind === 'snapshot') assert.deepEqual(names(third.snap.pods), ['three']);
      assert.deepEqual(names(src.current?.pods ?? []), ['three']);
    } finally {
      src.stop();
    }
  });
});

test('invalid YAML: an error event, the last good snapshot kept, then recovery', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.yaml');
    await writeFile(file, podDoc('good'));
    const src = new ClusterFileSource(file);
    const rec = recorder(src);
    src.start();
    try {
      await rec.next('snapshot', 2000);
      await writeFile(file, 'kind: Pod\nmetadata: {name: [\n');
      const err = await rec.next('error', 2000);
      assert.equal(err.kind, 'error');
      if (err.kind === 'error') {
        assert.ok(err.err instanceof UserError);
        assert.match(err.err.message, /^cannot read cluster file .*cluster\.yaml: /);
      }
      assert.ok(!rec.events.some((e) => e.kind === 'snapshot'), 'no snapshot from the broken file');
      assert.deepEqual(names(src.current?.pods ?? []), ['good']);
      await writeFile(file, podDoc('fixed'));
      const back = await rec.next('snapshot', 2000);
      if (back.kind === 'snapshot') assert.deepEqual(names(back.snap.pods), ['fixed']);
    } finally {
      src.stop();
    }
  });
});

test('a missing file is an error; the file appearing later is picked up', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'later.yaml');
    const src = new ClusterFileSource(file);
    const rec = recorder(src);
    src.start();
    try {
      const err = await rec.next('error', 2000);
      if (err.kind === 'error') assert.match(err.err.message, /file not found$/);
      await writeFile(file, podDoc('late'));
      const snap = await rec.next('snapshot', 2000);
      if (snap.kind === 'snapshot') assert.deepEqual(names(snap.snap.pods), ['late']);
    } finally {
      src.stop();
    }
  });
});

test('a file in a directory that does not exist yet is found by the poll', async () => {
  await withTempDir(async (dir) => {
    const sub = join(dir, 'later');
    const file = join(sub, 'cluster.yaml');
    const src = new ClusterFileSource(file, { pollMs: 100 });
    const rec = recorder(src);
    src.start();
    try {
      await rec.next('error', 2000);
      await mkdir(sub);
      await writeFile(file, podDoc('deep'));
      const snap = await rec.next('snapshot', 2000);
      if (snap.kind === 'snapshot') assert.deepEqual(names(snap.snap.pods), ['deep']);
      await writeFile(file, podDoc('deeper'));
      const again = await rec.next('snapshot', 2000);
      if (again.kind === 'snapshot') assert.deepEqual(names(again.snap.pods), ['deeper']);
    } finally {
      src.stop();
    }
  });
});

// ---- no cluster file releases capture by accident (hardening issue, point 2) --------------------

const GOOD_POD = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'shop', uid: 'u1' },
  spec: { containers: [{ name: 'web' }, { name: 'istio-proxy' }] },
  status: { phase: 'Running', podIP: '10.244.0.10' },
};

/** parseClusterFile throws a one-line UserError naming the file and matching `cause`. */
function assertRejected(text: string, cause: RegExp, what = JSON.stringify(text.slice(0, 60))): void {
  assert.throws(
    () => parseClusterFile(text, '/tmp/c.yaml'),
    (e: unknown) => {
      assert.ok(e instanceof UserError, `${what}: not a UserError: ${String(e)}`);
      assert.match(e.message, /^cannot read cluster file \/tmp\/c\.yaml: \S/, what);
      assert.match(e.message, cause, what);
      assert.ok(!e.message.includes('\n'), `${what}: ${e.message}`);
      return true;
    },
    `${what} was accepted as a cluster file`,
  );
}

test('an empty file, whitespace or comments only is an error, not "no pods"', () => {
  for (const text of ['', '\n', '   \n\t\n', '# nothing here\n', '---\n', '---\n---\n...\n', 'null\n', '~\n']) {
    assertRejected(text, /no objects|empty/);
  }
});

test('an HTML error page (a YAML scalar) is an error', () => {
  const html = `<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
`;
  assertRejected(html, /not a Kubernetes object/);
  assertRejected('<!DOCTYPE html><html><body>Forbidden</body></html>', /not a Kubernetes object/);
});

test('random bytes that parse as YAML are an error, never an empty cluster', () => {
  const seed = 20260101;
  let s = seed;
  const rnd = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  let parsedAsYaml = 0;
  for (let i = 0; i < 400; i++) {
    const bytes = Buffer.from(Array.from({ length: 1 + rnd(64) }, () => (rnd(4) === 0 ? rnd(256) : 32 + rnd(95))));
    const text = bytes.toString('utf8');
    if (parseAllDocuments(text).every((d) => d.errors.length === 0)) parsedAsYaml++;
    let threw = false;
    try {
      parseClusterFile(text, '/tmp/c.yaml');
    } catch (e) {
      assert.ok(e instanceof UserError, `seed ${seed} case ${i}: ${String(e)}`);
      threw = true;
    }
    assert.ok(threw, `seed ${seed} case ${i}: random text ${JSON.stringify(text)} was accepted`);
  }
  assert.ok(parsedAsYaml > 50, `only ${parsedAsYaml} of the random texts parsed as YAML: the test does not test much`);
  // a few that certainly parse
  for (const text of ['12345\n', 'true\n', 'Kd93jf xx\n', '"quoted"\n', '- a\n- b\n', '{a: 1}\n', 'a: b\n', '[1, 2]\n']) {
    assertRejected(text, /not a Kubernetes object|no kind/);
  }
});

test('a file of only other kinds is an error; other kinds next to pods are ignored', () => {
  const svc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' } };
  const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c', namespace: 'shop' } };
  assertRejected(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [svc, cm] }), /no Namespace or Pod.*Service, ConfigMap/);
  assertRejected('apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n', /no Namespace or Pod/);
  const s = parseClusterFile(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [svc, GOOD_POD, cm] }), 'c.json');
  assert.deepEqual(names(s.pods), ['web-1']);
});

test('a truncation that is still valid YAML is an error', () => {
  // `kubectl get -o yaml` prints keys in order: apiVersion, items, kind, metadata. A cut inside the
  // items loses the List's kind.
  const full = `apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    labels:
      istio-injection: enabled
    name: shop
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-1
    namespace: shop
    uid: u1
  spec:
    containers:
    - name: web
    - name: istio-proxy
  status:
    phase: Running
    podIP: 10.244.0.10
kind: List
metadata:
  resourceVersion: ""
`;
  assert.deepEqual(names(parseClusterFile(full, 'c.yaml').pods), ['web-1']);
  const cutAt = (marker: string): string => full.slice(0, full.indexOf(marker));
  assertRejected(cutAt('kind: List'), /no kind|cut short/, 'cut before the List kind');
  assertRejected(cutAt('  status:'), /no kind|cut short/, 'cut inside the last item');
  assertRejected(cutAt('- apiVersion: v1\n  kind: Pod'), /no kind|cut short/, 'cut between items');
  // a stream whose last document lost its tail
  assertRejected(
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n',
    /Pod shop\/web-1.*(spec|status)/,
  );
  assertRejected('apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Pod\n', /metadata/);
  assertRejected('apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\n', /no kind/);
  // a List whose last item is cut
  const list = (items: unknown[]): string => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  assertRejected(list([GOOD_POD, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-2' } }]), /item 2.*Pod default\/web-2.*spec/);
  assertRejected(list([GOOD_POD, { apiVersion: 'v1' }]), /item 2.*no kind/);
  assertRejected(list([GOOD_POD, {}]), /item 2/);
  assertRejected(list([GOOD_POD, 'web-2']), /item 2 of the List is not a Kubernetes object \(a string\)/);
  assertRejected(list([GOOD_POD, null]), /item 2 of the List is not a Kubernetes object \(empty\)/);
  assertRejected(JSON.stringify({ apiVersion: 'v1', kind: 'List' }), /items/);
  assertRejected(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: null }), /items/);
  assertRejected(JSON.stringify({ apiVersion: 'v1', kind: 'PodList', items: [{ metadata: { name: 'x' }, spec: { containers: [] } }] }), /item 1.*status/);
});

test('an explicit empty List is the one way to release everything', () => {
  assert.deepEqual(parseClusterFile('apiVersion: v1\nkind: List\nitems: []\n', 'c.yaml'), { namespaces: [], pods: [] });
  assert.deepEqual(parseClusterFile('{"apiVersion":"v1","kind":"List","items":[]}', 'c.json'), { namespaces: [], pods: [] });
  assert.deepEqual(parseClusterFile('apiVersion: v1\nkind: PodList\nitems: []\n', 'c.yaml'), { namespaces: [], pods: [] });
  // namespaces only: well formed, no pod to capture
  const nsOnly = parseClusterFile('apiVersion: v1\nkind: NamespaceList\nitems:\n- metadata: {name: shop}\n', 'c.yaml');
  assert.deepEqual(names(nsOnly.namespaces), ['shop']);
});

test('the source: an empty file (the gap of a shell `>` rewrite) keeps the last good state', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.yaml');
    const good = (name: string): string =>
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ ...GOOD_POD, metadata: { ...GOOD_POD.metadata, name } }] });
    await writeFile(file, good('before'));
    const src = new ClusterFileSource(file);
    const rec = recorder(src);
    src.start();
    try {
      await rec.next('snapshot', 2000);
      await writeFile(file, ''); // what `cat x > cluster.yaml` leaves for a moment
      const err = await rec.next('error', 2000);
      if (err.kind === 'error') assert.match(err.err.message, /no objects|empty/);
      assert.ok(!rec.events.some((e) => e.kind === 'snapshot'), 'no snapshot from the empty file');
      assert.deepEqual(names(src.current?.pods ?? []), ['before']);
      await writeFile(file, '<html><body>502</body></html>\n');
      const err2 = await rec.next('error', 2000);
      if (err2.kind === 'error') assert.match(err2.err.message, /not a Kubernetes object/);
      assert.deepEqual(names(src.current?.pods ?? []), ['before']);
      await writeFile(file, good('after'));
      const back = await rec.next('snapshot', 2000);
      if (back.kind === 'snapshot') assert.deepEqual(names(back.snap.pods), ['after']);
    } finally {
      src.stop();
    }
  });
});

// A JSON List is read item by item (each item parsed and checked on its own); the result must be the
// whole-text parse's for every input, valid or not, including the error's message.
const outcome = (text: string, keep?: (pod: unknown) => boolean, wholeText = false): unknown => {
  try {
    return { ok: parseClusterFile(text, 'c.json', keep, { wholeText }) };
  } catch (e) {
    return { err: e instanceof UserError ? e.message : `not a UserError: ${String(e)}` };
  }
};

test('a JSON List item by item: the same result as the whole text, for tricky text, other shapes and every cut', () => {
  const pod = (name: string, nodeName: string, extra: Record<string, unknown> = {}) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'ns', annotations: { tricky: '{"a":[1,2]}, ] } [ \\" \\\\', ...extra } },
    spec: { nodeName, containers: [{ name: 'c', args: ['[', ']', '{', '}', ',', '"', '\\'] }] },
    status: { podIPs: [{ ip: '10.0.0.1' }], n: -1.5e3, t: true, f: false, z: null },
  });
  const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } };
  const keep = (p: unknown): boolean => (p as { spec: { nodeName: string } }).spec.nodeName === 'n1';
  const items = [ns, pod('a', 'n1'), pod('b', 'n2'), pod('c', 'n1', { '\u00e9\u2028': 'x' }), { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } }];
  const texts = [
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
    JSON.stringify({ kind: 'List', items, metadata: { resourceVersion: '' }, apiVersion: 'v1' }, null, 2),
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, '\t').replace(/\n/g, '\r\n'),
    JSON.stringify({ apiVersion: 'v1', kind: 'PodList', items: [pod('a', 'n1')].map(({ kind: _k, ...p }) => p) }),
    ' \n{ "apiVersion" : "v1" , "kind" : "List" , "items" : [ ] } \n',
    '{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}]}',
    // two items keys (JSON.parse keeps the last), one of them spelled with an escape
    `{"apiVersion":"v1","kind":"List","items":[${JSON.stringify(pod('a', 'n1'))}],"\\u0069tems":[]}`,
    `{"apiVersion":"v1","kind":"List","items":[],"items":[${JSON.stringify(pod('a', 'n1'))}]}`,
    // not JSON a List: a Pod, an array, numbers, junk between or after items, a trailing comma
    JSON.stringify(pod('a', 'n1')),
    JSON.stringify([ns]),
    '{"apiVersion":"v1","kind":"List","items":[1,2]}',
    `{"apiVersion":"v1","kind":"List","items":[${JSON.stringify(ns)} ${JSON.stringify(ns)}]}`,
    `{"apiVersion":"v1","kind":"List","items":[${JSON.stringify(ns)},]}`,
    `{"apiVersion":"v1","kind":"List","items":[${JSON.stringify(ns)}]} x`,
    `{"apiVersion":"v1","kind":"List","items":[${JSON.stringify(ns)}],}`,
    // a bad item before a good one, and an item that is no Pod or Namespace only
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [] } }, ns] }),
  ];
  for (const text of texts) {
    for (const k of [undefined, keep]) assert.deepEqual(outcome(text, k), outcome(text, k, true), text.slice(0, 120));
  }
  // a file cut short anywhere: refused, with the whole text's message
  const full = texts[1]!;
  for (let cut = 0; cut < full.length; cut += 7) {
    const text = full.slice(0, cut);
    const got = outcome(text, keep);
    assert.deepEqual(got, outcome(text, keep, true), `cut at ${cut}`);
    assert.ok(cut === 0 || 'err' in (got as object), `cut at ${cut}: refused`);
  }
});
