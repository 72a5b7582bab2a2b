import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
`;
  const s = parseClusterFile(text, 'c.yaml');
  assert.deepEqual(names(s.namespaces), ['shop']);
  assert.deepEqual(names(s.pods), ['web-1']);
});

test('the same List in JSON, and typed lists whose items have no kind', () => {
  const json = JSON.stringify({
    kind: 'List',
    items: [
      { kind: 'NamespaceList', items: [{ metadata: { name: 'a' } }] },
      { kind: 'PodList', items: [{ metadata: { name: 'p1' } }, { metadata: { name: 'p2' } }] },
    ],
  }, null, '\t');
  const s = parseClusterFile(json, 'c.json');
  assert.deepEqual(names(s.namespaces), ['a']);
  assert.deepEqual(names(s.pods), ['p1', 'p2']);
});

test('a multi-document YAML stream; empty documents and unknown kinds ignored', () => {
  const text = `---
kind: Namespace
metadata: {name: shop}
---
---
kind: ConfigMap
metadata: {name: cm}
---
kind: Pod
metadata: {name: p}
...
`;
  const s = parseClusterFile(text, 'c.yaml');
  assert.deepEqual(names(s.namespaces), ['shop']);
  assert.deepEqual(names(s.pods), ['p']);
  assert.deepEqual(parseClusterFile('', 'empty.yaml'), { namespaces: [], pods: [] });
  assert.deepEqual(parseClusterFile('just text', 'x.yaml'), { namespaces: [], pods: [] });
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
  return `kind: Pod\nmetadata: {name: ${name}, namespace: shop}\n`;
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
