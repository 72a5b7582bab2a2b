// `meshlane agent`'s source flags end to end (the built CLI as a subprocess): exactly one of
// --cluster-file, --kubeconfig and in-cluster, --node-name (or NODE_NAME) with the Kubernetes API, a
// kubeconfig that is missing, does not parse or has no current context: each is ONE line `meshlane:
// <cause>: <fix>`, exit 2, no stack, and it comes before anything else (also before the root check).
// Every run gets a controlled environment (no NODE_NAME, no KUBERNETES_SERVICE_HOST unless the case
// sets them) and a --cgroup-root / --bpffs that cannot be used, so that nothing could be attached even
// if a check let a run through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../support/harness.js';
import { kubeconfigYaml } from '../support/kube/kubeconfig.js';

const TIMEOUT_MS = 12_000;
const UNPRIVILEGED = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups'];
let tmp = '';
let good = '';
let clusterFile = '';

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-agent-flags-'));
  good = join(tmp, 'kubeconfig');
  writeFileSync(good, kubeconfigYaml({ server: 'https://127.0.0.1:1', token: 't', insecureSkipTlsVerify: true }));
  clusterFile = join(tmp, 'cluster.yaml');
  writeFileSync(clusterFile, 'apiVersion: v1\nkind: List\nitems: []\n');
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const SAFE = [
  '--cgroup-root',
  '/nonexistent/meshlane-agent-flags',
  '--bpffs',
  '/nonexistent/meshlane-agent-flags',
  '--state-dir',
  '/nonexistent/meshlane-agent-flags',
];

function run(args: string[], env: Record<string, string> = {}, asUser = false): SpawnSyncReturns<string> {
  const cmd = asUser ? [...UNPRIVILEGED, process.execPath, CLI(), 'agent', ...args, ...SAFE] : [process.execPath, CLI(), 'agent', ...args, ...SAFE];
  return spawnSync(cmd[0]!, cmd.slice(1), {
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
    killSignal: 'SIGKILL',
    cwd: tmp,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
  });
}

function oneLine(r: SpawnSyncReturns<string>, re: RegExp): string {
  const ctx = `exit ${r.status}, signal ${r.signal}\n--- stderr ---\n${r.stderr}--- stdout ---\n${r.stdout}`;
  assert.ok(!r.error, `did not finish: ${ctx}`);
  assert.equal(r.status, 2, ctx);
  assert.doesNotMatch(r.stderr, /^\s+at /m, ctx);
  const lines = r.stderr.split('\n');
  assert.equal(lines.pop(), '', ctx);
  assert.equal(lines.length, 1, `not one line: ${ctx}`);
  assert.match(lines[0]!, /^meshlane: \S/, ctx);
  assert.match(lines[0]!, re, ctx);
  assert.equal(r.stdout, '', ctx);
  return lines[0]!;
}

const THREE_WAYS = /--cluster-file FILE or --kubeconfig FILE, or neither in a pod \(in-cluster config, when KUBERNETES_SERVICE_HOST is set\)/;

test('no source at all, or two: one line naming the three ways', () => {
  oneLine(run([]), /^meshlane: no source of pods: give exactly one of /);
  oneLine(run([]), THREE_WAYS);
  oneLine(run(['--cluster-file', clusterFile, '--kubeconfig', good]), /^meshlane: --cluster-file and --kubeconfig both given: /);
  oneLine(run(['--cluster-file', clusterFile, '--kubeconfig', good]), THREE_WAYS);
  oneLine(run(['--kubeconfig', '']), /^meshlane: --kubeconfig is empty: give the file's path$/);
});

test('the Kubernetes API without a node name, or with a wrong one', () => {
  oneLine(run(['--kubeconfig', good]), /^meshlane: the Kubernetes API source \(--kubeconfig\) needs this node's name: give --node-name NAME, or set NODE_NAME/);
  oneLine(
    run([], { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '1' }),
    /^meshlane: the Kubernetes API source \(in-cluster\) needs this node's name/,
  );
  oneLine(run(['--kubeconfig', good], { NODE_NAME: '' }), /needs this node's name/);
  oneLine(run(['--kubeconfig', good, '--node-name', 'Node_1']), /^meshlane: --node-name 'Node_1' is not a node name/);
  oneLine(run(['--kubeconfig', good], { NODE_NAME: 'a,b' }), /^meshlane: NODE_NAME 'a,b' is not a node name/);
});

test('a kubeconfig that is missing, does not parse, or has no current context', () => {
  oneLine(run(['--kubeconfig', join(tmp, 'missing'), '--node-name', 'n1']), new RegExp(`^meshlane: cannot read kubeconfig ${tmp}/missing: file not found: `));
  const bad = join(tmp, 'bad');
  writeFileSync(bad, 'clusters: [\n  - {name: x\n');
  oneLine(run(['--kubeconfig', bad], { NODE_NAME: 'n1' }), new RegExp(`^meshlane: cannot read kubeconfig ${bad}: .*: give a kubeconfig`));
  const noCtx = join(tmp, 'no-context');
  writeFileSync(noCtx, kubeconfigYaml({ server: 'https://127.0.0.1:1', token: 't', insecureSkipTlsVerify: true }).replace(/^current-context:.*$/m, ''));
  oneLine(run(['--kubeconfig', noCtx, '--node-name', 'n1']), new RegExp(`^meshlane: kubeconfig ${noCtx} has no current-context: set one`));
});

test('in-cluster environment without its port', () => {
  oneLine(run([], { KUBERNETES_SERVICE_HOST: '10.96.0.1', NODE_NAME: 'n1' }), /^meshlane: in-cluster config: KUBERNETES_SERVICE_PORT is not set: /);
});

test('the source flags are checked before the root check: an unprivileged user gets the flag error', () => {
  oneLine(run(['--cluster-file', clusterFile, '--kubeconfig', good], {}, true), /both given/);
  // with good flags, the root check speaks
  oneLine(run(['--cluster-file', clusterFile], {}, true), /needs root/);
});
