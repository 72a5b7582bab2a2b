// The agent over a pod's life, against the real kernel: capture follows the cluster file (label flip,
// annotation change, bad annotation, deletion, a pod whose cgroup appears later) without a restart and
// without breaking existing connections; a pod outside a captured namespace is untouched; a proxy that
// is down means refused, never a bypass; SIGKILL leaves capture in place and a restart adopts the pins
// and drops what vanished meanwhile; uninstall removes every link and pin.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { SandboxPod } from '../../src/sandbox/sandbox.js';
import { staticPrograms } from '../../src/dataplane/programs.js';
import { PinnedMaps } from '../../src/dataplane/dataplane.js';
import {
  APP,
  POD_UID,
  SVC_V4,
  ENDPOINT,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  stopAgent,
  cleanupAgent,
  waitFor,
  startSession,
  startProxy,
  waitReady,
  cli,
  dumpJson,
  type Topology,
  type AgentRun,
} from '../support/harness.js';

const OTHER_UID = '0a7e2b44-51f3-4c2e-8d1a-7b6c5d4e3f21';
const LATE_UID = '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a';
const captured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;
const direct = /^svc:80 peer=10\.244\.0\.10 app-sees=10\.96\.0\.10:80$/;

const demoNs = (labels: Record<string, string> = { 'istio-injection': 'enabled' }) => namespaceObject('demo', labels);
const legacyNs = namespaceObject('legacy', {});
const otherPod = podObject({ namespace: 'legacy', name: 'other', uid: OTHER_UID, ipv4: '10.244.0.20', ipv6: '' });

let topo: Topology;
let other: SandboxPod;
let agent: AgentRun | undefined;

before(async () => {
  topo = await makeTopology({ prefix: 'mllc', echo: true });
  other = await topo.sb.addPod({ namespace: 'legacy', name: 'other', uid: OTHER_UID, ipv4: '10.244.0.20' });
  agent = await startAgent(topo.sb, [demoNs(), legacyNs, podObject(), otherPod], 'lifecycle');
});
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const vip = (pod: SandboxPod = topo.pod) => runCase(pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` });
const podState = (uid: string) => agent!.status()?.pods.find((p) => p.ref.uid === uid);

/** Write the cluster file and wait until the agent applied it (the pod's state as given). */
async function apply(items: object[], uid: string, state: 'captured' | 'pending' | 'absent'): Promise<void> {
  agent!.write(items);
  await waitFor(() => (state === 'absent' ? podState(uid) === undefined : podState(uid)?.state === state), 10_000, `pod ${uid} ${state}`);
}

test('a pod of a captured namespace is captured', async () => {
  await waitFor(() => podState(POD_UID)?.state === 'captured', 10_000, 'the pod captured');
  assert.match(await vip(), captured);
});

test('splicing is on by default where the kernel can bound it (it can on these machines), at 4 MiB per direction', () => {
  assert.deepEqual(dumpJson(agent!.bpffs).maps.global, [{ flags: ['SPLICE'], splice: true, splice_budget: '4 MiB', splice_grace_ms: 1000 }]);
});

test('a pod in a namespace without istio-injection is untouched', async () => {
  assert.match(await vip(other), /^svc:80 peer=10\.244\.0\.20 app-sees=10\.96\.0\.10:80$/);
  const skipped = agent!.status()!.skipped.find((s) => s.ref.uid === OTHER_UID);
  assert.ok(skipped, 'the pod is listed as not captured');
  assert.match(skipped.reason, /legacy/);
});

test('label flip and annotation change take effect for new connections; an existing one keeps going', async () => {
  const session = startSession(topo.pod, `${SVC_V4}:80`, 30, 100); // ~3 s on one captured connection
  await new Promise((r) => setTimeout(r, 300));

  await apply([demoNs({ 'istio-injection': 'disabled' }), legacyNs, podObject(), otherPod], POD_UID, 'absent');
  assert.match(await vip(), direct, 'namespace disabled: not captured');

  await apply([demoNs(), legacyNs, podObject(), otherPod], POD_UID, 'captured');
  assert.match(await vip(), captured, 'namespace enabled again: captured');

  const excluded = podObject({ annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/16' } });
  agent!.write([demoNs(), legacyNs, excluded, otherPod]);
  await waitFor(() => podState(POD_UID)?.settings.outboundExclude.length === 1, 10_000, 'the exclusion applied');
  assert.match(await vip(), direct, 'excluded range: not captured');

  await apply([demoNs(), legacyNs, podObject(), otherPod], POD_UID, 'captured');
  await waitFor(() => podState(POD_UID)?.settings.outboundExclude.length === 0, 10_000, 'the exclusion removed');
  assert.match(await vip(), captured);

  const s = await session;
  assert.equal(s.ok, true, `the long-lived connection broke: ${JSON.stringify(s)}`);
  assert.equal(s.reply?.tag, 'proxy-outbound', 'the long-lived connection was a captured one');
});

test('a bad annotation is reported and ignored; the capturing default applies', async () => {
  const bad = podObject({ annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/33' } });
  agent!.write([demoNs(), legacyNs, bad, otherPod]);
  const want = "invalid value '10.96.0.0/33' for annotation 'traffic.sidecar.istio.io/excludeOutboundIPRanges'";
  await waitFor(() => (podState(POD_UID)?.errors ?? []).some((e) => e.startsWith(want)), 10_000, 'the error in status');
  assert.match(await vip(), captured, 'the bad exclusion did not widen the bypass');
  const st = cli(['status', '--bpffs', agent!.bpffs, '--state-dir', agent!.stateDir]);
  assert.equal(st.code, 0);
  assert.ok(st.stdout.includes(`error: ${want}`), st.stdout);
  assert.match(st.stdout, /^splicing: on \(bounded: at most 4 MiB unread per direction, then that connection goes through TCP\)$/m, 'status shows the switch');
  assert.match(st.stdout, /^counters: connect_seen=\d+ captured_outbound=[1-9]\d* /m, 'status shows the capture counters');
  assert.ok(agent!.log().includes(want), 'the error is in the agent log too');
  await apply([demoNs(), legacyNs, podObject(), otherPod], POD_UID, 'captured');
  await waitFor(() => (podState(POD_UID)?.errors ?? []).length === 0, 10_000, 'the error cleared');
});

test('proxy not listening: the connect is refused, never bypassed', async () => {
  const proxy = topo.procs.find((p) => p.spawnargs.includes('proxy'))!;
  const exited = new Promise((r) => proxy.once('exit', r));
  proxy.kill('SIGKILL');
  await exited;
  try {
    assert.equal(await vip(), 'error ECONNREFUSED');
  } finally {
    const p = startProxy(topo.pod, false, true);
    topo.procs.push(p);
    await waitReady(p, 'proxy');
  }
  assert.match(await vip(), captured);
});

test('a pod whose cgroup and processes appear later is picked up when they do', async () => {
  const late = podObject({ name: 'late', uid: LATE_UID, ipv4: '10.244.0.30', ipv6: '' });
  await apply([demoNs(), legacyNs, podObject(), otherPod, late], LATE_UID, 'pending');
  assert.match(podState(LATE_UID)!.reason ?? '', /cgroup|process/);
  const pod = await topo.sb.addPod({ namespace: 'demo', name: 'late', uid: LATE_UID, ipv4: '10.244.0.30' });
  const sleeper = pod.spawn('sleep', ['60'], { container: 'app' });
  topo.procs.push(sleeper);
  await waitFor(() => podState(LATE_UID)?.state === 'captured', 10_000, 'the late pod captured');
  // captured, and it has no proxy: refused (never a bypass)
  assert.equal(await vip(pod), 'error ECONNREFUSED');
  await apply([demoNs(), legacyNs, podObject(), otherPod], LATE_UID, 'absent');
  assert.match(await vip(pod), /^svc:80 peer=10\.244\.0\.30 app-sees=10\.96\.0\.10:80$/, 'deleted from the file: no longer captured');
});

test("a pods entry removed behind the agent's back is repaired within the 10 s resync", async () => {
  const cookie = BigInt(podState(POD_UID)!.netnsCookie!);
  const pinned = new PinnedMaps(agent!.bpffs);
  try {
    assert.equal(pinned.maps.pods!.delete(cookie), true);
  } finally {
    pinned.close();
  }
  assert.match(await vip(), direct, 'without its pods entry the pod is not captured');
  await waitFor(
    () => {
      const p = new PinnedMaps(agent!.bpffs);
      try {
        return p.maps.pods!.get(cookie) !== null;
      } finally {
        p.close();
      }
    },
    15_000,
    'the agent to restore the pods entry',
  );
  assert.match(await vip(), captured);
});

test('SIGKILL leaves capture in place; a restart adopts the pins and drops what vanished meanwhile', async () => {
  const extra = podObject({
    name: 'gone',
    uid: LATE_UID,
    ipv4: '10.244.0.30',
    ipv6: '',
    annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '9999' },
  });
  await apply([demoNs(), legacyNs, podObject(), otherPod, extra], LATE_UID, 'captured');
  const before = dumpJson(agent!.bpffs);
  assert.equal((before.maps.pods as unknown[]).length, 2);

  const session = startSession(topo.pod, `${SVC_V4}:80`, 30, 100);
  await new Promise((r) => setTimeout(r, 200));
  await stopAgent(agent, 'SIGKILL');
  assert.match(await vip(), captured, 'capture survives the agent');

  // while the agent is down, a pod goes away
  agent!.write([demoNs(), legacyNs, podObject(), otherPod]);
  agent = await startAgent(topo.sb, [], 'lifecycle', agent);
  await waitFor(() => podState(LATE_UID) === undefined && podState(POD_UID)?.state === 'captured', 10_000, 'the restarted agent reconciled');
  // status.json comes from the pass that fills the maps, before the programs are swapped: wait for
  // the end of the start (its log goes through a pipe and a file, a little later still)
  await waitFor(() => /capture active/.test(agent!.log()), 10_000, 'the restarted agent to finish starting');
  assert.match(agent.log(), /"action":"updated"/, 'the restarted agent swapped programs behind the pinned links');

  const d = dumpJson(agent.bpffs);
  const pods = d.maps.pods as Array<{ pod: string }>;
  assert.deepEqual(
    pods.map((p) => p.pod),
    ['demo/client'],
  );
  const ports = d.maps.pod_ports as Array<{ pod: string; port: number }>;
  assert.ok(
    ports.every((p) => p.pod === 'demo/client'),
    `no entries left of the vanished pod: ${JSON.stringify(ports)}`,
  );
  assert.deepEqual(
    (d.maps.pod_info as Array<{ name: string }>).map((i) => i.name),
    ['client'],
  );
  const cookie = podState(POD_UID)!.netnsCookie!;
  const cgroupPrograms = staticPrograms()
    .filter((p) => p.attach.kind === 'cgroup')
    .map((p) => p.name);
  assert.ok(cgroupPrograms.includes('meshlane_connect4'));
  assert.deepEqual(d.links.filter((l) => !l.startsWith('netns/')).sort(), [...cgroupPrograms].sort(), 'one pinned link per cgroup program');
  assert.deepEqual(
    d.links.filter((l) => l.startsWith('netns/')),
    [`netns/meshlane_sk_lookup/${cookie}`],
    'one netns link, for the pod that stays',
  );
  const attached = execFileSync('bpftool', ['cgroup', 'show', topo.sb.cgroupRoot], { encoding: 'utf8' });
  assert.equal(attached.split('\n').filter((l) => /meshlane_/.test(l)).length, cgroupPrograms.length, `one link per program, no duplicates:\n${attached}`);

  const s = await session;
  assert.equal(s.ok, true, `a connection broke across the restart: ${JSON.stringify(s)}`);
  assert.match(await vip(), captured);
});

test('uninstall removes every link and pin; capture stops', async () => {
  await stopAgent(agent, 'SIGTERM');
  const r = cli(['uninstall', '--bpffs', agent!.bpffs]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /links\/meshlane_connect4/);
  assert.equal(existsSync(agent!.bpffs), false);
  const attached = execFileSync('bpftool', ['cgroup', 'show', topo.sb.cgroupRoot], { encoding: 'utf8' });
  assert.doesNotMatch(attached, /meshlane_/);
  assert.match(await vip(), direct);
  assert.equal(cli(['uninstall', '--bpffs', agent!.bpffs]).code, 0, 'uninstall twice is fine');
});

void ENDPOINT;
