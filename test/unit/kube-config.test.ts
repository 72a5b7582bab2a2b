// Source selection (src/sources/select.ts) and the kubeconfig checks (src/kube/config.ts): exactly one
// of --cluster-file, --kubeconfig and in-cluster; --node-name from NODE_NAME and required with the API;
// every problem one line naming the cause and the fix. (In-cluster with a real service account mount
// and token rotation: test/kernel/kube-in-cluster.test.ts, in a private mount namespace.)
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { chooseSource, ClusterFileSourceAdapter, sourceFromOptions, type SourceOptions } from '../../src/sources/select.js';
import { KubeSource } from '../../src/sources/kube.js';
import { inClusterConnection, kubeconfigConnection } from '../../src/kube/config.js';
import { UserError } from '../../src/util/errors.js';
import { kubeconfigYaml } from '../support/kube/kubeconfig.js';
import type { SourceEvent } from '../../src/sources/source.js';

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'meshlane-kube-config-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** a UserError of one line that matches `re`; returns it */
/** oneLine for a function that rejects */
async function oneLineRejects(f: () => Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(f(), (e: unknown) => {
    assert.ok(e instanceof UserError, `not a UserError: ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `more than one line: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

function oneLine(f: () => unknown, re: RegExp): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof UserError, `not a UserError: ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `more than one line: ${e.message}`);
    assert.match(e.message, re);
    return e.message;
  }
  assert.fail(`no error, expected ${re}`);
}

const THREE_WAYS = /--cluster-file FILE.*--kubeconfig FILE.*in-cluster.*KUBERNETES_SERVICE_HOST/;

test('chooseSource: exactly one of --cluster-file, --kubeconfig, in-cluster', () => {
  const c = (o: SourceOptions, env: Record<string, string> = {}): unknown => chooseSource(o, env);
  assert.deepEqual(c({ clusterFile: 'f' }), { kind: 'cluster-file', file: 'f' });
  assert.deepEqual(c({ kubeconfig: 'k', nodeName: 'n1' }), { kind: 'kubeconfig', file: 'k', nodeName: 'n1' });
  assert.deepEqual(c({}, { KUBERNETES_SERVICE_HOST: '10.96.0.1', NODE_NAME: 'n1' }), { kind: 'in-cluster', nodeName: 'n1' });
  // an explicit flag wins over the pod's environment
  assert.deepEqual(c({ clusterFile: 'f' }, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }), { kind: 'cluster-file', file: 'f' });
  assert.deepEqual(c({ kubeconfig: 'k' }, { KUBERNETES_SERVICE_HOST: '10.96.0.1', NODE_NAME: 'n1' }), { kind: 'kubeconfig', file: 'k', nodeName: 'n1' });
  oneLine(() => c({ clusterFile: 'f', kubeconfig: 'k', nodeName: 'n1' }), /^--cluster-file and --kubeconfig both given: /);
  oneLine(() => c({ clusterFile: 'f', kubeconfig: 'k' }), THREE_WAYS);
  oneLine(() => c({}), /^no source of pods: /);
  oneLine(() => c({}, { NODE_NAME: 'n1' }), THREE_WAYS);
  oneLine(() => c({}, { KUBERNETES_SERVICE_HOST: '' }), THREE_WAYS);
  oneLine(() => c({ clusterFile: '' }), /--cluster-file is empty/);
  oneLine(() => c({ kubeconfig: '' }), /--kubeconfig is empty/);
});

test('chooseSource: --node-name defaults to NODE_NAME; required with the API source; must be a node name', () => {
  const c = (o: SourceOptions, env: Record<string, string> = {}): unknown => chooseSource(o, env);
  assert.deepEqual(c({ kubeconfig: 'k' }, { NODE_NAME: 'node-a.example' }), { kind: 'kubeconfig', file: 'k', nodeName: 'node-a.example' });
  assert.deepEqual(c({ kubeconfig: 'k', nodeName: 'flag' }, { NODE_NAME: 'env' }), { kind: 'kubeconfig', file: 'k', nodeName: 'flag' }, 'the flag wins');
  assert.deepEqual(
    c({ clusterFile: 'f' }, { NODE_NAME: 'env' }),
    { kind: 'cluster-file', file: 'f', nodeName: 'env' },
    'a cluster file is filtered by NODE_NAME too',
  );
  oneLine(
    () => c({ kubeconfig: 'k' }),
    /^the Kubernetes API source \(--kubeconfig\) needs this node's name: give --node-name NAME, or set NODE_NAME .*fieldRef spec\.nodeName/,
  );
  oneLine(() => c({}, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }), /^the Kubernetes API source \(in-cluster\) needs this node's name/);
  oneLine(() => c({ kubeconfig: 'k' }, { NODE_NAME: '' }), /needs this node's name/);
  oneLine(() => c({ kubeconfig: 'k', nodeName: '' }), /--node-name is empty/);
  for (const bad of ['Node-A', 'a,b', 'a=b', '-a', 'a_b', 'x'.repeat(254)]) {
    oneLine(() => c({ kubeconfig: 'k', nodeName: bad }), /^--node-name '.*' is not a node name/);
  }
  oneLine(() => c({ kubeconfig: 'k' }, { NODE_NAME: 'a,b' }), /^NODE_NAME 'a,b' is not a node name/);
});

const GOOD = (server = 'https://127.0.0.1:6443'): string =>
  kubeconfigYaml({ server, token: 't', caPem: '-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n' });

test('kubeconfig: each way a file can be wrong is one line with the file, the cause and the fix', (t) => {
  const d = tmp(t);
  const w = (name: string, text: string): string => {
    const p = join(d, name);
    writeFileSync(p, text);
    return p;
  };
  oneLine(() => kubeconfigConnection(join(d, 'missing')), /^cannot read kubeconfig \/.*\/missing: file not found: give the path of a kubeconfig/);
  oneLine(() => kubeconfigConnection(d), /^cannot read kubeconfig .*: EISDIR/);
  oneLine(() => kubeconfigConnection(w('empty', '')), /^cannot read kubeconfig .*empty: the file is empty: give a kubeconfig/);
  oneLine(() => kubeconfigConnection(w('bad-yaml', 'clusters: [\n  - {name: x\n')), /^cannot read kubeconfig .*bad-yaml: .*: give a kubeconfig/);
  oneLine(() => kubeconfigConnection(w('scalar', 'just text\n')), /scalar has no contexts \(is it a kubeconfig\?\)/);
  const base = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:6443', 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'u', user: { token: 't' } }],
    contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
  };
  oneLine(
    () => kubeconfigConnection(w('no-current', stringify(base))),
    /^kubeconfig .*no-current has no current-context: set one \(kubectl config use-context NAME/,
  );
  oneLine(
    () => kubeconfigConnection(w('unknown-current', stringify({ ...base, 'current-context': 'nope' }))),
    /the current-context 'nope' is not among its contexts/,
  );
  oneLine(
    () => kubeconfigConnection(w('no-cluster', stringify({ ...base, 'current-context': 'x', clusters: [] }))),
    /context 'x' names cluster 'c', which is not in the file/,
  );
  oneLine(
    () => kubeconfigConnection(w('no-user', stringify({ ...base, 'current-context': 'x', users: [] }))),
    /context 'x' names user 'u', which is not in the file/,
  );
  oneLine(
    () => kubeconfigConnection(w('no-server', stringify({ ...base, 'current-context': 'x', clusters: [{ name: 'c', cluster: {} }] }))),
    /clusters\[0\]\.cluster\.server is missing/,
  );
  oneLine(
    () =>
      kubeconfigConnection(w('http', stringify({ ...base, 'current-context': 'x', clusters: [{ name: 'c', cluster: { server: 'http://127.0.0.1:8080' } }] }))),
    /plain http:\/\/ server: use https:\/\/, or set insecure-skip-tls-verify: true/,
  );
  oneLine(
    () => kubeconfigConnection(w('ftp', stringify({ ...base, 'current-context': 'x', clusters: [{ name: 'c', cluster: { server: 'ftp://x' } }] }))),
    /give https:\/\/HOST:PORT/,
  );
  oneLine(
    () =>
      kubeconfigConnection(
        w(
          'ca-missing',
          stringify({
            ...base,
            'current-context': 'x',
            clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:6443', 'certificate-authority': 'nope/ca.crt' } }],
          }),
        ),
      ),
    new RegExp(`certificate-authority ${d}/nope/ca.crt does not exist: fix the path`),
  );
  // a relative CA path is read relative to the kubeconfig's directory, as kubectl does
  mkdirSync(join(d, 'pki'));
  writeFileSync(join(d, 'pki', 'ca.crt'), 'x');
  const rel = kubeconfigConnection(
    w(
      'relative',
      stringify({
        ...base,
        'current-context': 'x',
        clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:6443', 'certificate-authority': 'pki/ca.crt' } }],
      }),
    ),
  );
  assert.equal(rel.load().getCurrentCluster()?.caFile, join(d, 'pki', 'ca.crt'));
  const ok = kubeconfigConnection(w('good', GOOD()));
  assert.equal(ok.server, 'https://127.0.0.1:6443');
  assert.match(ok.description, /^Kubernetes API https:\/\/127\.0\.0\.1:6443 \(kubeconfig .*good\)$/);
});

test('in-cluster: the environment kubelet sets is checked (the service account files: the kernel test)', () => {
  oneLine(() => inClusterConnection({}), /^in-cluster config: KUBERNETES_SERVICE_HOST is not set/);
  oneLine(() => inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }), /^in-cluster config: KUBERNETES_SERVICE_PORT is not set: /);
  oneLine(
    () => inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: 'https' }),
    /KUBERNETES_SERVICE_PORT is 'https', not a port/,
  );
});

test('sourceFromOptions: a KubeSource for --kubeconfig (checked, not contacted), the cluster file as a Source', async (t) => {
  const d = tmp(t);
  const k = join(d, 'kubeconfig');
  writeFileSync(k, GOOD('https://127.0.0.1:1'));
  const src = await sourceFromOptions({ kubeconfig: k, nodeName: 'n1' }, {});
  assert.ok(src instanceof KubeSource);
  assert.equal(src.description, `Kubernetes API https://127.0.0.1:1 (kubeconfig ${k})`);
  assert.deepEqual(src.health(), { synced: false, connected: false });
  await oneLineRejects(() => sourceFromOptions({ kubeconfig: join(d, 'nope'), nodeName: 'n1' }, {}), /file not found/);
  await oneLineRejects(() => sourceFromOptions({ kubeconfig: k }, {}), /needs this node's name/);

  const f = join(d, 'cluster.yaml');
  writeFileSync(f, 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: shop}\n');
  const file = await sourceFromOptions({ clusterFile: f }, {});
  assert.ok(file instanceof ClusterFileSourceAdapter);
  assert.equal(file.description, `cluster file ${f}`);
  const got: SourceEvent[] = [];
  await file.start({ event: (e) => void got.push(e), error: () => undefined });
  t.after(() => file.stop());
  assert.equal(got[0]?.type, 'replace');
  assert.equal(got[0]?.type === 'replace' ? got[0].namespaces.length : -1, 1);
  assert.equal(file.health().synced, true);
  const missing = await sourceFromOptions({ clusterFile: join(d, 'missing.yaml') }, {});
  await assert.rejects(
    missing.start({ event: () => undefined, error: () => undefined }),
    (e: unknown) => e instanceof UserError && /file not found/.test(e.message),
  );
});
