// The real agent on the Kubernetes API end to end: `meshlane agent --kubeconfig FILE --node-name N` (a
// subprocess) against the suite's API server (test/support/kube, HTTPS on loopback), with real sandbox pods
// (netns, kubelet cgroups, sandbox processes) and real traffic through the proxy:
// - initial sync: the node's pods of captured namespaces are captured, the others are not, pods of other
//   nodes are not even listed;
// - every toggle through the watch, with a long-lived connection untouched: namespace istio-injection
//   removed / enabled / disabled, istio.io/rev removed / added, pod label sidecar.istio.io/inject=false, an
//   annotation change re-tunes a running pod, a deleted pod's entries go;
// - a malformed annotation: a Warning Event on the pod (count 1, not a new Event on the next change),
//   besides the log and status;
// - every way a watch can break (ended, cut, reset, 410 after compaction, 503s on the way back), each with
//   a pod deleted meanwhile: its entries go once the watch is back;
// - the API server down while running and at start: capture in place stays exactly as it is, readiness
//   says not ready, the agent retries and follows again when the server is back.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Sandbox, type SandboxHost, type SandboxPod } from '../../src/sandbox/sandbox.js';
import { KubeApiServer, type EndMode } from '../support/kube/server.js';
import type { KubeObject } from '../support/kube/resources.js';
import {
  APP,
  SVC_V4,
  SVC_V6,
  OTHER_V4,
  ENDPOINT,
  namespaceObject,
  podObject,
  runCase,
  startKubeAgent,
  stopAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  startSession,
  startProxy,
  waitReady,
  type AgentRun,
} from '../support/harness.js';

const NODE = 'sandbox-node';
const MERGE = 'application/merge-patch+json';
const EXCLUDE = 'traffic.sidecar.istio.io/excludeOutboundIPRanges';

let sb: Sandbox;
let svc: SandboxHost;
let api: KubeApiServer;
let agent: AgentRun | undefined;
let tmp = '';
let kubeconfig = '';
const procs: ChildProcess[] = [];
/** pod name -> its sandbox pod and uid */
const pods = new Map<string, { sp: SandboxPod; uid: string; ip: string }>();
let nextIp = 10;

/** Create the pod in the API store (as a scheduler and kubelet leave it) and its sandbox pod with the same uid. */
async function addPod(ns: string, name: string, o: { proxy?: boolean; node?: string; sandbox?: boolean } = {}): Promise<string> {
  const ip = `10.244.0.${nextIp++}`;
  const obj = podObject({ namespace: ns, name, ipv4: ip, ipv6: '' }) as KubeObject;
  if (o.node) (obj.spec as Record<string, unknown>).nodeName = o.node;
  const stored = api.store.create('pods', obj);
  const uid = stored.metadata.uid;
  if (o.sandbox === false) return uid;
  const sp = await sb.addPod({ namespace: ns, name, uid, ipv4: ip });
  pods.set(name, { sp, uid, ip });
  if (o.proxy) {
    const p = startProxy(sp, false, true); // echo: keeps connections open (the long-lived session)
    procs.push(p);
    await waitReady(p, `proxy of ${name}`);
  } else procs.push(sp.spawn('sleep', ['600'], { container: 'app' }));
  return uid;
}

const uidOf = (name: string): string => pods.get(name)!.uid;
const podState = (name: string) => agent!.status()?.pods.find((p) => p.ref.uid === uidOf(name));
const skipped = (name: string) => agent!.status()?.skipped.find((p) => p.ref.uid === uidOf(name));
const health = () => agent!.status()?.health;
const vip = (name = 'client') => runCase(pods.get(name)!.sp, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` });
const captured = (ip: string): RegExp =>
  new RegExp(`^proxy-outbound:15001 peer=${ip.replace(/\./g, '\\.')} orig=10\\.96\\.0\\.10:80 app-sees=10\\.96\\.0\\.10:80$`);
const direct = (ip: string): RegExp => new RegExp(`^svc:80 peer=${ip.replace(/\./g, '\\.')} app-sees=10\\.96\\.0\\.10:80$`);
const pinnedCookies = (): string[] => (dumpJson(agent!.bpffs).maps.pods as Array<{ netns_cookie: string | number }>).map((p) => String(p.netns_cookie)).sort();

async function until(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  await waitFor(pred, ms, what);
}

const patchNs = (name: string, labels: Record<string, string | null>): void =>
  void api.store.patch('namespaces', undefined, name, MERGE, { metadata: { labels } });
const patchPod = (name: string, meta: { labels?: Record<string, string | null>; annotations?: Record<string, string | null> }): void =>
  void api.store.patch('pods', 'demo', name, MERGE, { metadata: meta });

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-kube-agent-'));
  sb = await Sandbox.create({ prefix: 'mlka', cgroupDriver: 'systemd' });
  svc = await sb.addHost('svc', { ipv4: '10.244.0.200', ipv6: 'fd00:244::200', extraV4: [SVC_V4, OTHER_V4], extraV6: [SVC_V6] });
  const server = svc.spawn('node', [ENDPOINT(), 'serve', '--ports', '80', '--tag', 'svc', '--echo']);
  procs.push(server);
  await waitReady(server, 'service server');
  api = await KubeApiServer.start();
  kubeconfig = api.writeKubeconfig(join(tmp, 'kubeconfig'));
  api.store.create('namespaces', namespaceObject('demo', { 'istio-injection': 'enabled' }) as KubeObject);
  api.store.create('namespaces', namespaceObject('canary', { 'istio.io/rev': 'canary' }) as KubeObject);
  api.store.create('namespaces', namespaceObject('plain', {}) as KubeObject);
  await addPod('demo', 'client', { proxy: true });
  await addPod('canary', 'rev', { proxy: true });
  await addPod('plain', 'legacy');
  await addPod('demo', 'elsewhere', { node: 'other-node', sandbox: false });
  agent = await startKubeAgent(sb, kubeconfig, NODE, 'kube-agent');
});

after(async () => {
  await cleanupAgent(agent);
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await sb?.destroy();
  await api?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test("initial sync: the node's pods of captured namespaces are captured, the rest not; other nodes' pods are not listed; ready", async () => {
  await until('the initial sync', () => podState('client')?.state === 'captured' && podState('rev')?.state === 'captured');
  assert.match(await vip(), captured(pods.get('client')!.ip));
  assert.match(await vip('rev'), captured(pods.get('rev')!.ip), 'istio.io/rev captures');
  assert.match(skipped('legacy')?.reason ?? '', /not labelled istio-injection=enabled or istio\.io\/rev/);
  assert.match(await vip('legacy'), direct(pods.get('legacy')!.ip));
  const st = agent!.status()!;
  assert.ok(![...st.pods, ...st.skipped].some((p) => p.ref.name === 'elsewhere'), 'a pod of another node is not even listed');
  await until('ready', () => health()?.ready === true);
  assert.ok(st.source.startsWith(`Kubernetes API ${api.url}`), st.source);
  // only the node's pods are asked for
  assert.ok(
    api.requests
      .filter((r) => r.resource === 'pods' && (r.verb === 'list' || r.verb === 'watch'))
      .every((r) => r.query.fieldSelector === `spec.nodeName=${NODE}`),
  );
});

test('every toggle through the watch; a long-lived captured connection is untouched', async () => {
  const c = pods.get('client')!;
  const session = startSession(c.sp, `${SVC_V4}:80`, 60, 100); // ~6 s on one captured connection
  await new Promise((r) => setTimeout(r, 300));
  // namespace label removed: released
  patchNs('demo', { 'istio-injection': null });
  await until('released (label removed)', () => podState('client') === undefined && /not labelled/.test(skipped('client')?.reason ?? ''));
  assert.match(await vip(), direct(c.ip));
  patchNs('demo', { 'istio-injection': 'enabled' });
  await until('captured (enabled)', () => podState('client')?.state === 'captured');
  assert.match(await vip(), captured(c.ip));
  patchNs('demo', { 'istio-injection': 'disabled' });
  await until('released (disabled)', () => /istio-injection=disabled/.test(skipped('client')?.reason ?? ''));
  assert.match(await vip(), direct(c.ip));
  patchNs('demo', { 'istio-injection': 'enabled' });
  await until('captured again', () => podState('client')?.state === 'captured');
  // istio.io/rev removed and back
  patchNs('canary', { 'istio.io/rev': null });
  await until('rev released', () => podState('rev') === undefined);
  assert.match(await vip('rev'), direct(pods.get('rev')!.ip));
  patchNs('canary', { 'istio.io/rev': 'canary' });
  await until('rev captured', () => podState('rev')?.state === 'captured');
  // the pod opts out with its label
  patchPod('client', { labels: { 'sidecar.istio.io/inject': 'false' } });
  await until('opted out', () => /sidecar\.istio\.io\/inject=false/.test(skipped('client')?.reason ?? ''));
  assert.match(await vip(), direct(c.ip));
  patchPod('client', { labels: { 'sidecar.istio.io/inject': null } });
  await until('opted in', () => podState('client')?.state === 'captured');
  // an annotation change re-tunes the running pod
  patchPod('client', { annotations: { [EXCLUDE]: '10.96.0.0/16' } });
  await until('re-tuned', () => podState('client')?.settings.outboundExclude.length === 1);
  assert.match(await vip(), direct(c.ip));
  patchPod('client', { annotations: { [EXCLUDE]: null } });
  await until('re-tuned back', () => podState('client')?.settings.outboundExclude.length === 0);
  assert.match(await vip(), captured(c.ip));
  const s = await session;
  assert.equal(s.ok, true, `the long-lived connection broke: ${JSON.stringify(s)}`);
  assert.equal(s.reply?.tag, 'proxy-outbound');
});

test('a malformed annotation: a Warning Event on the pod (deduplicated), besides status and the log', async () => {
  const want = "invalid value 'x' for annotation 'traffic.sidecar.istio.io/excludeOutboundPorts'";
  patchPod('client', { annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': 'x' } });
  await until('the error in status', () => (podState('client')?.errors ?? []).some((e) => e.startsWith(want)));
  assert.ok(agent!.log().includes(want));
  const events = (): KubeObject[] =>
    api.store.list('events', { namespace: 'demo' }).items.filter((e) => (e.involvedObject as { uid?: string } | undefined)?.uid === uidOf('client'));
  await until('the Event', () => events().length === 1);
  const ev = events()[0]!;
  assert.equal(ev.type, 'Warning');
  assert.equal(ev.reason, 'InvalidCaptureAnnotation');
  assert.match(String(ev.message), new RegExp(`^${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  assert.deepEqual(ev.source, { component: 'meshlane', host: NODE });
  // another change of the pod with the same error: no second Event, no count raised
  patchPod('client', { labels: { app: 'web' } });
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(events().length, 1);
  assert.equal(events()[0]!.count, 1);
  assert.match(await vip(), captured(pods.get('client')!.ip), 'the bad annotation widened nothing');
  patchPod('client', { annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': null } });
  await until('the error cleared', () => podState('client')?.errors.length === 0);
});

test("a deleted pod's entries go", async () => {
  await addPod('demo', 'doomed');
  await until('captured', () => podState('doomed')?.state === 'captured');
  const cookie = podState('doomed')!.netnsCookie!;
  assert.ok(pinnedCookies().includes(cookie));
  api.store.delete('pods', 'demo', 'doomed');
  await until('gone from status', () => podState('doomed') === undefined && skipped('doomed') === undefined);
  assert.ok(!pinnedCookies().includes(cookie));
  assert.ok(!dumpJson(agent!.bpffs).links.includes(`netns/meshlane_sk_lookup/${cookie}`), 'its netns link is gone');
  assert.match(await vip('doomed'), direct(pods.get('doomed')!.ip));
});

const ways: Array<[string, EndMode | '410' | '503']> = [
  ['ended with the terminating chunk', 'graceful'],
  ['cut without it', 'abrupt'],
  ['reset (TCP RST)', 'reset'],
  ['expired: 410 after the history was compacted', '410'],
  ['503s on the way back', '503'],
];

for (const [what, how] of ways) {
  test(`a watch ${what}, with a pod deleted meanwhile: its entries go once the watch is back`, async () => {
    const name = `w-${how}`;
    await addPod('demo', name);
    await until('captured', () => podState(name)?.state === 'captured');
    const cookie = podState(name)!.netnsCookie!;
    const watchesPods = (r: { verb: string; resource: string }): boolean => r.verb === 'watch' && r.resource === 'pods';
    // the watch cannot come back while the pod is deleted
    const fault = api.fail({ count: Infinity, match: watchesPods, answer: how === '503' ? 503 : 'hangup' });
    api.endWatches(how === '410' || how === '503' ? 'abrupt' : how, watchesPods);
    api.store.delete('pods', 'demo', name);
    if (how === '410') api.compact();
    await waitFor(() => fault.hits >= (how === '503' ? 2 : 1), 15_000, 'the re-watch refused');
    assert.ok(pinnedCookies().includes(cookie), 'nothing changes while the watch is down');
    fault.clear();
    await until('the deleted pod gone', () => podState(name) === undefined, 20_000);
    assert.ok(!pinnedCookies().includes(cookie));
    if (how === '410')
      assert.ok(
        api.requests.some((r) => r.resource === 'pods' && r.verb === 'list' && r.seq > 1),
        'relisted',
      );
    await until('ready again', () => health()?.ready === true, 20_000);
  });
}

test('the API server down while running: capture stays exactly as it is, not ready; a pod deleted meanwhile goes when it is back', async () => {
  await addPod('demo', 'late-gone');
  await until('captured', () => podState('late-gone')?.state === 'captured');
  const before = pinnedCookies();
  await api.stop({ watches: 'abrupt' });
  await until('not ready', () => health()?.ready === false && health()?.sourceConnected === false, 20_000);
  assert.match(health()!.reasons.join('\n'), /source is not connected/);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(pinnedCookies(), before, 'nothing released because the API is unreachable');
  assert.match(await vip(), captured(pods.get('client')!.ip));
  api.store.delete('pods', 'demo', 'late-gone');
  await api.start();
  await until('the deleted pod gone', () => podState('late-gone') === undefined, 30_000);
  await until('ready again', () => health()?.ready === true, 30_000);
  assert.match(await vip(), captured(pods.get('client')!.ip));
});

test('the API server down at start: the agent starts, keeps the pins as they are, is not ready; it syncs when the server comes', async () => {
  await stopAgent(agent, 'SIGTERM');
  const before = pinnedCookies();
  await api.stop({ watches: 'abrupt' });
  await addPod('demo', 'while-down', { sandbox: true });
  agent = await startKubeAgent(sb, kubeconfig, NODE, 'kube-agent', agent);
  // the first status.json is written before the programs are attached (it proves the state dir): wait for the one after
  await until('programs attached', () => health()?.programsAttached === true, 15_000);
  const h = health()!;
  assert.equal(h.ready, false);
  assert.equal(h.firstSync, false);
  assert.equal(h.programsAttached, true);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(pinnedCookies(), before, 'the pins are as the last agent left them');
  assert.match(await vip(), captured(pods.get('client')!.ip));
  await api.start();
  await until('synced', () => health()?.ready === true && podState('while-down')?.state === 'captured', 30_000);
  assert.match(await vip(), captured(pods.get('client')!.ip));
});
