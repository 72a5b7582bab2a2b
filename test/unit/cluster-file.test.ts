import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import {
  ClusterFileSource,
  commonEnds,
  parseClusterBytesMemo,
  readAgainst,
  changedWindow,
  parseChangedWindow,
  parseClusterFile,
  type ClusterFileSourceOptions,
  type ClusterSnapshot,
  type ListMemo,
} from '../../src/sources/cluster-file.js';
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

/** Follows `file` with a source (options `opts`) while `fn` runs, with a recorder of its events; stops it after. */
async function following(
  file: string,
  fn: (src: ClusterFileSource, rec: ReturnType<typeof recorder>) => Promise<void>,
  opts?: ClusterFileSourceOptions,
): Promise<void> {
  const src = new ClusterFileSource(file, opts);
  const rec = recorder(src);
  src.start();
  try {
    await fn(src, rec);
  } finally {
    src.stop();
  }
}

function podDoc(name: string): string {
  return `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: shop}\nspec: {containers: []}\nstatus: {}\n`;
}

/** The fds of this process open on files in `dir` (a renamed-over one reads as 'PATH (deleted)'). */
function fdsIn(dir: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(`${dir}/`)) n++;
    } catch {
      // (the fd of readdir itself, closed by now)
    }
  }
  return n;
}

/** Until fdsIn(dir) is n (the held files are closed on libuv's pool, soon after the change); the count then. */
async function fdsSettleAt(dir: string, n: number): Promise<number> {
  for (let k = 0; k < 100 && fdsIn(dir) !== n; k++) await new Promise((r) => setTimeout(r, 10));
  return fdsIn(dir);
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
    await following(file, async (src, rec) => {
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
    });
  });
});

test('invalid YAML: an error event, the last good snapshot kept, then recovery', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.yaml');
    await writeFile(file, podDoc('good'));
    await following(file, async (src, rec) => {
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
    });
  });
});

test('a missing file is an error; the file appearing later is picked up', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'later.yaml');
    await following(file, async (_src, rec) => {
      const err = await rec.next('error', 2000);
      if (err.kind === 'error') assert.match(err.err.message, /file not found$/);
      await writeFile(file, podDoc('late'));
      const snap = await rec.next('snapshot', 2000);
      if (snap.kind === 'snapshot') assert.deepEqual(names(snap.snap.pods), ['late']);
    });
  });
});

test('a file in a directory that does not exist yet is found by the poll', async () => {
  await withTempDir(async (dir) => {
    const sub = join(dir, 'later');
    const file = join(sub, 'cluster.yaml');
    await following(
      file,
      async (_src, rec) => {
        await rec.next('error', 2000);
        await mkdir(sub);
        await writeFile(file, podDoc('deep'));
        const snap = await rec.next('snapshot', 2000);
        if (snap.kind === 'snapshot') assert.deepEqual(names(snap.snap.pods), ['deep']);
        await writeFile(file, podDoc('deeper'));
        const again = await rec.next('snapshot', 2000);
        if (again.kind === 'snapshot') assert.deepEqual(names(again.snap.pods), ['deeper']);
      },
      { pollMs: 100 },
    );
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

/** a JSON List of one good pod */
const goodList = (name: string): string =>
  JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ ...GOOD_POD, metadata: { ...GOOD_POD.metadata, name } }] });

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
    await writeFile(file, goodList('before'));
    await following(file, async (src, rec) => {
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
      await writeFile(file, goodList('after'));
      const back = await rec.next('snapshot', 2000);
      if (back.kind === 'snapshot') assert.deepEqual(names(back.snap.pods), ['after']);
    });
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

test('a JSON List rewritten whole: only the items whose bytes changed are parsed again, with the same result', () => {
  const pod = (name: string, nodeName: string, port = 0) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'ns', annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': String(port) } },
    spec: { nodeName, containers: [{ name: 'c' }] },
    status: { podIPs: [{ ip: '10.0.0.1' }] },
  });
  const ns = (name: string, label = 'enabled') => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'istio-injection': label } } });
  const keep = (p: unknown): boolean => (p as { spec: { nodeName: string } }).spec.nodeName === 'n1';
  const list = (items: unknown[], kind = 'List'): Buffer => Buffer.from(JSON.stringify({ apiVersion: 'v1', kind, items }));
  const base = [ns('ns'), pod('a', 'n1'), pod('b', 'n2'), pod('c', 'n1'), pod('d', 'n1'), { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } }];
  const steps: Array<[string, Buffer]> = [
    ['the first read', list(base)],
    ['touched, not changed', list(base)],
    ['one pod changed', list([base[0], pod('a', 'n1', 1), ...base.slice(2)])],
    ['a pod removed', list([base[0], pod('a', 'n1', 1), base[3], base[4], base[5]])],
    ['a pod added', list([base[0], pod('a', 'n1', 1), pod('e', 'n1'), base[3], base[4], base[5]])],
    ['another node pod moved to this node', list([base[0], pod('a', 'n1', 1), pod('e', 'n1'), pod('b', 'n1'), base[3], base[4], base[5]])],
    ['the namespace relabelled', list([ns('ns', 'disabled'), pod('a', 'n1', 1), pod('e', 'n1'), base[3], base[4]])],
    ['reordered', list([base[4], base[3], ns('ns'), pod('a', 'n1', 1)])],
    [
      'another list kind, same items',
      list(
        [pod('a', 'n1', 1), pod('c', 'n1')].map(({ kind: _k, ...p }) => p),
        'PodList',
      ),
    ],
    ['emptied', list([])],
    ['back', list(base)],
  ];
  let memo: ListMemo | undefined;
  let prev: ClusterSnapshot | undefined;
  for (const [what, bytes] of steps) {
    const got = parseClusterBytesMemo(bytes, 'c.json', keep, memo);
    assert.deepEqual(got.snapshot, parseClusterFile(bytes.toString(), 'c.json', keep, { wholeText: true }), what);
    assert.ok(got.memo, `${what}: a JSON List keeps its memo`);
    // an object whose bytes did not change is the object of the last read (not parsed again; a reordered
    // file and another list kind are parsed anew; next to a change, one unchanged item may be parsed again)
    const before = new Map((prev?.pods ?? []).map((p) => [JSON.stringify(p), p]));
    const again = got.snapshot.pods.filter((p) => before.has(JSON.stringify(p)) && before.get(JSON.stringify(p)) !== p);
    if (what !== 'another list kind, same items' && what !== 'reordered') assert.ok(again.length <= 1, `${what}: ${again.length} unchanged pods parsed again`);
    memo = got.memo;
    prev = got.snapshot;
  }
  // a changed item is checked like any: a bad one refuses the file with the whole text's message, and the
  // memo of the last good read still serves the next good one
  const bad = list([base[0], { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', namespace: 'ns' }, spec: { containers: [] } }, ...base.slice(2)]);
  const message = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      return e instanceof UserError ? e.message : `not a UserError: ${String(e)}`;
    }
    return 'accepted';
  };
  assert.equal(
    message(() => parseClusterBytesMemo(bad, 'c.json', keep, memo)),
    message(() => parseClusterFile(bad.toString(), 'c.json', keep, { wholeText: true })),
  );
  assert.match(
    message(() => parseClusterBytesMemo(bad, 'c.json', keep, memo)),
    /has no status/,
  );
  const again = parseClusterBytesMemo(list(base), 'c.json', keep, memo);
  assert.equal(again.snapshot.pods[0], prev!.pods[0]);
  // a file that is no JSON List (YAML) has no memo, and its result is the whole text's
  const yaml = Buffer.from(podDoc('y'));
  const y = parseClusterBytesMemo(yaml, 'c.yaml', undefined, memo);
  assert.equal(y.memo, undefined);
  assert.deepEqual(names(y.snapshot.pods), ['y']);
});

test('the source: a broken file renamed over is reported (once it stays broken), a good one renamed over is read', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.json');
    await writeFile(file, goodList('before'));
    await following(file, async (src, rec) => {
      await rec.next('snapshot', 2000);
      await writeFile(join(dir, 'tmp'), '{"apiVersion":"v1","kind":"List","items":[{');
      await rename(join(dir, 'tmp'), file);
      const err = await rec.next('error', 2000);
      if (err.kind === 'error') assert.match(err.err.message, /^cannot read cluster file .*cluster\.json: /);
      assert.deepEqual(names(src.current?.pods ?? []), ['before']);
      await writeFile(join(dir, 'tmp'), goodList('after'));
      await rename(join(dir, 'tmp'), file);
      const back = await rec.next('snapshot', 2000);
      if (back.kind === 'snapshot') assert.deepEqual(names(back.snap.pods), ['after']);
      // renamed away: reported (after the debounce) as not found, the last good state kept
      await rename(file, join(dir, 'away'));
      const gone = await rec.next('error', 2000);
      if (gone.kind === 'error') assert.match(gone.err.message, /file not found$/);
      assert.deepEqual(names(src.current?.pods ?? []), ['after']);
    });
  });
});

test('commonEnds: the equal head and tail of two byte strings, never overlapping', () => {
  const big = Buffer.alloc(200_000, 0x61);
  const cases: Array<[Buffer, Buffer, { p: number; s: number }]> = [
    [Buffer.from('abc'), Buffer.from('abc'), { p: 3, s: 0 }],
    [Buffer.from(''), Buffer.from('abc'), { p: 0, s: 0 }],
    [Buffer.from('abc'), Buffer.from('abXc'), { p: 2, s: 1 }],
    [Buffer.from('aaaa'), Buffer.from('aaaaa'), { p: 4, s: 0 }],
    [Buffer.from('xbc'), Buffer.from('ybc'), { p: 0, s: 2 }],
    [big, Buffer.concat([big.subarray(0, 100_000), Buffer.from('z'), big.subarray(100_001)]), { p: 100_000, s: 99_999 }],
    [big, Buffer.concat([big.subarray(0, 70_000), Buffer.from('zz'), big.subarray(70_000)]), { p: 70_000, s: 130_000 }],
    [Buffer.from('abab'), Buffer.from('ab'), { p: 2, s: 0 }],
  ];
  for (const [a, b, want] of cases) assert.deepEqual(commonEnds(a, b), want, `${a.length} / ${b.length}`);
});

test('a JSON List rewritten whole, narrowed to what changed: the whole text result for random edits, errors included', () => {
  // a deterministic generator (xorshift), so that a failure names its seed and step
  let seed = 0x9e3779b9;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pod = (i: number, v: number) =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `p${i}`, namespace: `ns${i % 3}`, annotations: { a: `${'x'.repeat(i % 5)}"]},{[${v}` } },
      spec: { nodeName: `n${i % 2}`, containers: [{ name: 'c' }] },
      status: { podIPs: [{ ip: `10.0.0.${i}` }] },
    });
  const ns = (i: number, v: number) => JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns${i}`, labels: { v: String(v) } } });
  const keep = (p: unknown): boolean => (p as { spec: { nodeName: string } }).spec.nodeName === 'n1';
  let items = [ns(0, 0), ns(1, 0), ns(2, 0), ...Array.from({ length: 20 }, (_, i) => pod(i, 0))];
  let head = '{"apiVersion":"v1","kind":"List","items":[';
  let tail = ']}';
  let sep = ',';
  const text = (): string => head + items.join(sep) + tail;
  const outcome = (f: () => ClusterSnapshot): unknown => {
    try {
      return { ok: f() };
    } catch (e) {
      return { err: e instanceof UserError ? e.message : `not a UserError: ${String(e)}` };
    }
  };
  let memo: ListMemo | undefined = parseClusterBytesMemo(Buffer.from(text()), 'c.json', keep).memo;
  let bad = 0;
  let windowed = 0;
  for (let step = 0; step < 600; step++) {
    const v = step + 1;
    const n = rnd(items.length + 1);
    const edits = [
      () => (items[Math.min(n, items.length - 1)] = pod(n, v)), // one pod changed (or replaced by another)
      () => items.splice(n, 0, pod(100 + step, v)), // added anywhere
      () => items.length > 1 && items.splice(Math.min(n, items.length - 1), 1), // removed
      () => (items[rnd(3)] = ns(rnd(3), v)), // a namespace relabelled
      () => items.splice(n, 0, pod(rnd(20), v)), // a duplicate name
      () => (sep = [',', ', ', ',\n  '][rnd(3)]!), // whitespace between every item
      () => (head = [`{"apiVersion":"v1","kind":"List","items":[`, `{"kind":"List","apiVersion":"v1","metadata":{"v":${v}},"items":[ `][rnd(2)]!),
      () => (tail = [']}', ' ]\n}', `],"metadata":{"resourceVersion":"${v}"}}`][rnd(3)]!),
      () => items.splice(n, 0, ['', '{', '"x"', '1', '{"kind":"Pod"}', '{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}', '[', ']'][rnd(8)]!), // broken or odd
      () => items.splice(n, 0, pod(200 + step, v).slice(0, rnd(40) + 1)), // an item cut short
    ];
    edits[rnd(edits.length)]!();
    const bytes = Buffer.from(text());
    const want = outcome(() => parseClusterFile(bytes.toString(), 'c.json', keep, { wholeText: true }));
    // the source's way: only the window of what changed, with a memo that has no bytes (its own copy: a
    // same-count change writes the memo's arrays over in place)
    if (memo?.bytes) {
      const at = commonEnds(memo.bytes, bytes);
      const bare: ListMemo = { ...memo, bytes: undefined, starts: memo.starts.slice(), ends: memo.ends.slice(), results: [...memo.results] };
      const win = changedWindow(bare, at, bytes.length);
      const part = win ? parseChangedWindow(bytes.subarray(win.off, win.end), win.off, bytes.length, keep, bare, at) : undefined;
      if (part) {
        windowed++;
        assert.deepEqual({ ok: part.snapshot }, want, `step ${step}, the window ${win!.off}-${win!.end}: ${bytes.toString().slice(0, 200)}`);
        const whole = parseClusterBytesMemo(bytes, 'c.json', keep).memo!;
        assert.deepEqual([...part.memo.starts], [...whole.starts], `step ${step}: item starts`);
        assert.deepEqual([...part.memo.ends], [...whole.ends], `step ${step}: item ends`);
        assert.equal(part.memo.close, whole.close, `step ${step}: the items' ]`);
        assert.equal(part.memo.size, bytes.length);
      }
    }
    const got = outcome(() => {
      const r = parseClusterBytesMemo(bytes, 'c.json', keep, memo);
      memo = r.memo ?? memo;
      return r.snapshot;
    });
    assert.deepEqual(got, want, `step ${step}: ${bytes.toString().slice(0, 200)}`);
    if ('err' in (got as object)) {
      bad++;
      // a refused file is undone, as the source keeps the last good state
      items = items.filter((t) =>
        t.startsWith('{"apiVersion":"v1","kind":"Pod","metadata"') && t.endsWith('}}')
          ? !/"p2\d\d"/.test(t)
          : t.startsWith('{"apiVersion":"v1","kind":"Namespace"'),
      );
    }
  }
  assert.ok(bad > 20 && bad < 500, `both accepted and refused files were tried (${bad} refused)`);
  assert.ok(windowed > 100, `the window settled most changes (${windowed})`);
});

test('readAgainst: the equal head and tail of a new file and the held one, as commonEnds says, for random edits', async () => {
  await withTempDir(async (dir) => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let text = Buffer.from(Array.from({ length: 3000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''));
    const [ca, cb] = [Buffer.alloc(256), Buffer.alloc(256)]; // small, so that heads and tails span chunks
    await writeFile(join(dir, 'f0'), text);
    let held = openSync(join(dir, 'f0'), 'r');
    try {
      for (let step = 1; step <= 300; step++) {
        const at = rnd(text.length + 1);
        const cut = rnd(3) === 0 ? rnd(600) : rnd(4);
        const add = Buffer.from('#'.repeat(rnd(3) === 0 ? rnd(2000) : rnd(5)));
        const next = rnd(10) === 0 ? Buffer.from(text) : Buffer.concat([text.subarray(0, at), add, text.subarray(Math.min(text.length, at + cut))]);
        // a new file renamed over the held one's name: the held inode keeps the old bytes
        await writeFile(join(dir, 'tmp'), next);
        await rename(join(dir, 'tmp'), join(dir, 'f0'));
        const fd = openSync(join(dir, 'f0'), 'r');
        assert.deepEqual(readAgainst(fd, next.length, held, text.length, ca, cb), commonEnds(text, next), `step ${step}`);
        closeSync(held);
        held = fd;
        text = next;
      }
      // a file shorter than its stat said (being written): undefined
      await writeFile(join(dir, 'short'), text.subarray(0, 10));
      const fd = openSync(join(dir, 'short'), 'r');
      try {
        assert.equal(readAgainst(fd, text.length, held, text.length, ca, cb), undefined);
      } finally {
        closeSync(fd);
      }
    } finally {
      closeSync(held);
    }
  });
});

test('the source: a List written in place (the same inode, nothing to compare with) is read whole; the next one renamed over is compared with it', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.json');
    const list = (ports: string[]) =>
      `{"apiVersion":"v1","kind":"List","items":[${ports
        .map((p, i) =>
          JSON.stringify({
            ...GOOD_POD,
            metadata: { ...GOOD_POD.metadata, name: `p${i}`, annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': p } },
          }),
        )
        .join(',')}]}`;
    const renamed = async (text: string): Promise<void> => {
      await writeFile(join(dir, 'tmp'), text);
      await rename(join(dir, 'tmp'), file);
    };
    const versions = [list(['1', '2', '3']), list(['1', '22', '3']), list(['1', '22', '33']), list(['11', '22', '33', '4'])];
    await writeFile(file, versions[0]!);
    await following(
      file,
      async (src, rec) => {
        assert.deepEqual((await rec.next('snapshot', 2000)).kind, 'snapshot');
        const until = async (text: string, what: string): Promise<void> => {
          const want = parseClusterFile(text, file);
          for (;;) {
            const e = await rec.next('snapshot', 2000); // (an in-place write's empty moment is an error, skipped)
            if (e.kind === 'snapshot' && JSON.stringify(e.snap) === JSON.stringify(want)) break;
          }
          assert.deepEqual(src.current, want, what);
        };
        await renamed(versions[1]!);
        await until(versions[1]!, 'renamed over: compared with the held file');
        writeFileSync(file, versions[2]!); // in place: the held file is this inode
        await until(versions[2]!, 'written in place: read whole');
        await renamed(versions[3]!);
        await until(versions[3]!, 'renamed over again: compared with the file written in place');
        await renamed(versions[3]!); // touched, not changed: no snapshot
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(rec.events.filter((e) => e.kind === 'snapshot').length, 0, 'no snapshot for the same bytes');
      },
      { pollMs: 50, debounceMs: 20 },
    );
  });
});

test('the source: a JSON List rewritten again and again (same size, grown, shrunk, broken, back) gives the whole text parse each time', async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'cluster.json');
    const podJson = (i: number, port: string) =>
      JSON.stringify({
        ...GOOD_POD,
        metadata: { ...GOOD_POD.metadata, name: `p${i}`, annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': port } },
      });
    const list = (ports: string[]) => `{"apiVersion":"v1","kind":"List","items":[${ports.map((p, i) => podJson(i, p)).join(',')}]}`;
    const versions = [
      list(['1000', '1000', '1000']),
      list(['1000', '1001', '1000']), // the same size
      list(['1000', '1001', '1002']), // the same size, elsewhere
      list(['1000', '10011', '1002']), // grown
      list(['1000', '1', '1002']), // shrunk
      list(['1000', '1', '1002']).replace('"status"', '"statu'), // broken
      list(['1000', '1', '1003']), // good again
      list(['1000', '1', '1003', '7']), // a pod more
      list(['1000', '1', '1003', '7']), // touched, not changed
      list(['9']),
    ];
    await writeFile(file, versions[0]!);
    await following(
      file,
      async (src, rec) => {
        await rec.next('snapshot', 2000);
        let expected = parseClusterFile(versions[0]!, file);
        for (const [n, text] of versions.entries()) {
          if (n === 0) continue;
          await writeFile(join(dir, 'tmp'), text);
          await rename(join(dir, 'tmp'), file);
          let good: ClusterSnapshot | undefined;
          try {
            good = parseClusterFile(text, file);
          } catch {
            good = undefined;
          }
          if (good === undefined) {
            const err = await rec.next('error', 2000);
            assert.equal(err.kind, 'error', `version ${n}: refused`);
          } else if (JSON.stringify(good) !== JSON.stringify(expected)) {
            const got = await rec.next('snapshot', 2000);
            if (got.kind === 'snapshot') assert.deepEqual(got.snap, good, `version ${n}`);
          }
          if (good) expected = good;
          assert.deepEqual(src.current, expected, `version ${n}: the current state`);
          // the last good file is held open, and only it: each one renamed over is closed once replaced
          assert.equal(await fdsSettleAt(dir, 1), 1, `version ${n}: one file held`);
        }
      },
      { pollMs: 50, debounceMs: 20 },
    );
    assert.equal(await fdsSettleAt(dir, 0), 0, 'stopped: no file held');
  });
});
