// Hostile input against the real agent and kernel: capture already in place is never lost because of
// what the cluster file holds.
// - A cluster file with no recognisable objects (empty, the gap of a shell `>` rewrite, an HTML error
//   page, random text that parses as YAML, only other kinds, a truncation that is still valid YAML)
//   never releases a pod: the last good state stays (maps and real traffic through the proxy), status
//   and the log name the cause, a later good file applies, an explicit empty List releases.
// - A wrongly typed value in a pod or its namespace (a number as a label value, runAsUser as a string,
//   an invalid status.podIP) drops only that setting: the pod stays captured, the error is on the pod.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import {
  APP,
  POD_UID,
  SVC_V4,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  cleanupAgent,
  waitFor,
  cli,
  dumpJson,
  waitForPodSettings,
  clusterList,
  type Topology,
  type AgentRun,
} from '../support/harness.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';

const captured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;
const direct = /^svc:80 peer=10\.244\.0\.10 app-sees=10\.96\.0\.10:80$/;

const demoNs = (labels: Record<string, unknown> = { 'istio-injection': 'enabled' }): object => ({
  ...namespaceObject('demo', {}),
  metadata: { name: 'demo', labels },
});

let topo: Topology;
let agent: AgentRun | undefined;

before(async () => {
  topo = await makeTopology({ prefix: 'mlhi' });
  agent = await startAgent(topo.sb, [demoNs(), podObject()], 'hostile');
});
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const vip = () => runCase(topo.pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` });
const podState = (uid = POD_UID) => agent!.status()?.pods.find((p) => p.ref.uid === uid);

/** Replace the cluster file's content in one step (write a temp file, rename it over). */
function replaceFile(text: string): void {
  const tmp = `${agent!.clusterFile}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, agent!.clusterFile);
}

/** The pod is captured: in status, in the pods map under its netns cookie, and its traffic goes to the proxy. */
async function assertStillCaptured(what: string, outcome = captured): Promise<void> {
  const p = podState();
  assert.equal(p?.state, 'captured', `${what}: the pod is no longer captured in status`);
  const cookie = p.netnsCookie!;
  const pods = dumpJson(agent!.bpffs).maps.pods as Array<{ netns_cookie: string | number; pod: string }>;
  assert.ok(
    pods.some((e) => String(e.netns_cookie) === cookie && e.pod === 'demo/client'),
    `${what}: the pods entry is gone: ${JSON.stringify(pods)}`,
  );
  assert.match(await vip(), outcome, `${what}: traffic no longer goes through the proxy`);
}

/** Wait until status shows a source error matching `cause`; it is in the log too. */
async function waitSourceError(cause: RegExp, what: string): Promise<string> {
  await waitFor(() => cause.test(agent!.status()?.sourceError ?? ''), 10_000, `status to show the source error for ${what}`);
  const msg = agent!.status()!.sourceError!;
  assert.match(msg, new RegExp(`^cannot read cluster file ${agent!.clusterFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `), what);
  assert.ok(agent!.log().includes(JSON.stringify(msg).slice(1, -1)), `${what}: the log does not name it:\n${agent!.log().slice(-2000)}`);
  return msg;
}

const KUBECTL_YAML = `apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    labels:
      istio-injection: enabled
    name: demo
${'' /* the pod, as kubectl prints it */}- ${JSON.stringify(podObject())}
kind: List
metadata:
  resourceVersion: ""
`;

test('a captured pod stays captured through every bad rewrite of the cluster file', async () => {
  await waitFor(() => podState()?.state === 'captured', 10_000, 'the pod captured');
  assert.match(await vip(), captured);

  const bad: Array<[string, string, RegExp]> = [
    ['an empty file', '', /no objects|empty/],
    ['whitespace only', '  \n\t\n', /no objects|empty/],
    ['an HTML error page', '<html>\n<head><title>502 Bad Gateway</title></head>\n<body><h1>502 Bad Gateway</h1></body>\n</html>\n', /not a Kubernetes object/],
    ['random text that parses as YAML', 'x9$Kd 3jf!! q\n', /not a Kubernetes object/],
    ['only other kinds', clusterList([{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'demo' } }]), /no Namespace or Pod/],
    ['a truncation that is still valid YAML', KUBECTL_YAML.slice(0, KUBECTL_YAML.indexOf('kind: List')), /no kind/],
  ];
  // the file as kubectl writes it is good (and the same state)
  replaceFile(KUBECTL_YAML);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(agent!.status()?.sourceError, undefined, 'the kubectl List is accepted');
  for (const [what, text, cause] of bad) {
    replaceFile(text);
    await waitSourceError(cause, what);
    await assertStillCaptured(what);
  }
  const st = cli(['status', '--bpffs', agent!.bpffs, '--state-dir', agent!.stateDir]);
  assert.equal(st.code, 0);
  assert.match(st.stdout, /^source error: cannot read cluster file .*: .*no kind/m, st.stdout);

  // a later good file applies (and clears the error): a changed setting shows it was read
  const changed = podObject({ annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '9999' } });
  replaceFile(clusterList([demoNs(), changed]));
  await waitForPodSettings(agent!, POD_UID, { ...defaultCaptureSettings(), excludeOutboundPorts: [9999] });
  await waitFor(() => agent!.status()?.sourceError === undefined, 10_000, 'the source error to clear');
  assert.match(await vip(), captured);
});

test('the gap of a shell `>` rewrite (the file truncated in place) keeps capture', async () => {
  // `>` truncates the file, then the shell writes it: the agent may read it empty in between
  writeFileSync(agent!.clusterFile, '');
  await waitSourceError(/no objects|empty/, 'the truncated file');
  await assertStillCaptured('the truncated file');
  writeFileSync(agent!.clusterFile, clusterList([demoNs(), podObject()]));
  await waitForPodSettings(agent!, POD_UID, defaultCaptureSettings());
  await waitFor(() => agent!.status()?.sourceError === undefined, 10_000, 'the source error to clear');
  assert.match(await vip(), captured);
});

test('an explicit empty List releases every pod; the next good file captures again', async () => {
  replaceFile('apiVersion: v1\nkind: List\nitems: []\n');
  await waitFor(() => podState() === undefined, 10_000, 'the pod released');
  assert.equal(agent!.status()?.sourceError, undefined);
  assert.match(await vip(), direct);
  replaceFile(clusterList([demoNs(), podObject()]));
  await waitFor(() => podState()?.state === 'captured', 10_000, 'the pod captured again');
  assert.match(await vip(), captured);
});

test('a wrongly typed value drops only that setting: the pod stays captured, the error is on it', async () => {
  const pod = podObject({ labels: { app: 'client' } }) as {
    metadata: { labels: Record<string, unknown>; annotations: Record<string, unknown> };
    spec: { containers: Array<{ name: string; securityContext?: Record<string, unknown> }> };
    status: Record<string, unknown>;
  };
  pod.metadata.labels.version = 2; // a number as a label value
  pod.metadata.annotations['traffic.sidecar.istio.io/excludeOutboundPorts'] = 80; // a number as an annotation value
  pod.spec.containers[1]!.securityContext = { runAsUser: '1337', runAsGroup: 1337 }; // runAsUser as a string
  pod.status.podIP = 'not-an-ip'; // podIPs still good
  const ns = demoNs({ 'istio-injection': 'enabled', team: 7 }); // a number in a namespace label
  replaceFile(clusterList([ns, pod]));
  await waitFor(() => (podState()?.errors.length ?? 0) >= 4, 10_000, 'the errors on the pod');
  const p = podState()!;
  assert.equal(p.state, 'captured');
  assert.deepEqual(p.ips, ['10.244.0.10', 'fd00:244::10']);
  assert.deepEqual(p.settings, defaultCaptureSettings(), 'every malformed setting has its capturing default');
  const errs = p.errors.join('\n');
  assert.match(errs, /label 'version'/);
  assert.match(errs, /annotation 'traffic\.sidecar\.istio\.io\/excludeOutboundPorts'/);
  assert.match(errs, /runAsUser/);
  assert.match(errs, /not-an-ip/);
  assert.match(errs, /namespace 'demo'.*label 'team'/);
  await assertStillCaptured('a pod with wrongly typed fields');

  // no valid pod IP at all: still captured by its network namespace (outbound needs no address)
  const noIp = podObject() as { status: Record<string, unknown> };
  noIp.status.podIP = '10.244.0.999';
  noIp.status.podIPs = [{ ip: 'fd00::zz' }];
  replaceFile(clusterList([demoNs(), noIp]));
  await waitFor(() => podState()?.ips.length === 0, 10_000, 'the pod with no valid IP');
  assert.ok(
    podState()!.errors.some((e) => /no valid pod IP/.test(e)),
    JSON.stringify(podState()!.errors),
  );
  // (with no pod IP known, the source is not bound to it: the proxy sees the kernel's choice)
  await assertStillCaptured('no valid pod IP', /^proxy-outbound:15001 peer=\S+ orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/);

  // the namespace's istio-injection label as a number: the capturing reading (the pod stays captured)
  replaceFile(clusterList([demoNs({ 'istio-injection': 1 }), podObject()]));
  await waitFor(() => (podState()?.errors ?? []).some((e) => /istio-injection/.test(e)), 10_000, 'the namespace label error on the pod');
  await assertStillCaptured('istio-injection: 1');

  replaceFile(clusterList([demoNs(), podObject()]));
  await waitFor(() => podState()?.state === 'captured' && podState()!.errors.length === 0, 10_000, 'the errors cleared');
});
