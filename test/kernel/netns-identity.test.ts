// A pod's network namespace comes from an authority the pod cannot influence (its sandbox process, the
// oldest of the pod) and stays bound to the pod until that netns is gone; no other process of the pod moves
// it, on a running agent or across a restart. With real processes: a uid-1000 process of the pod that runs
// `unshare -Urn` (as Chromium and bubblewrap do), a younger root process sitting in another pod's netns, pins
// left by an agent that was fooled, the sandbox process exiting, and the sandbox recreated in a new netns.
// Each case checks the `pods` map (dump), outbound and inbound through the proxy, and status.
//
// The agent before this rule took the first process in cgroup directory order. The processes playing the
// attacker here run in a container whose cgroup sorts before every other container of the pod, so that such
// an agent is demonstrably fooled; the locator now must not care where they are.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import * as native from '../../src/native/addon.js';
import { parseCaptureSettings, type PodLike } from '../../src/model/annotations.js';
import { PinnedMaps } from '../../src/dataplane/dataplane.js';
import { SANDBOX_CONTAINER, type SandboxPod } from '../../src/sandbox/sandbox.js';
import {
  APP,
  POD_UID,
  POD_V4,
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
  waitForPodSettings,
  startProxy,
  waitReady,
  cli,
  dumpJson,
  type Topology,
  type AgentRun,
} from '../support/harness.js';

const PEER_UID = '5e2f8a31-7c4d-4b6e-9f10-2a3b4c5d6e7f';
const PEER_V4 = '10.244.0.11';
const NS = namespaceObject('demo', { 'istio-injection': 'enabled' });
const LEGACY = namespaceObject('legacy', {});
const peerObject = podObject({ namespace: 'legacy', name: 'peer', uid: PEER_UID, ipv4: PEER_V4, ipv6: '' });

const outboundCaptured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;
const inboundCaptured = /^proxy-inbound:15006 peer=10\.244\.0\.11 orig=10\.244\.0\.10:8080 app-sees=10\.244\.0\.10:8080$/;

let topo: Topology;
let peer: SandboxPod;
let agent: AgentRun | undefined;

before(async () => {
  topo = await makeTopology({ prefix: 'mlni' });
  peer = await topo.sb.addPod({ namespace: 'legacy', name: 'peer', uid: PEER_UID, ipv4: PEER_V4 });
});
after(async () => {
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

/** A process a case started, gone when the case ends (pass or fail), so the next case starts clean. */
async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

// ---- facts from the kernel, independent of the agent -------------------------------------------------------

const inoOf = (path: string): bigint => statSync(path, { bigint: true }).ino;
const procIno = (pid: number): bigint | undefined => {
  try {
    return inoOf(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
};
const procUid = (pid: number): string | undefined => /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
const procComm = (pid: number): string => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
/** starttime, field 22 of /proc/<pid>/stat (fields counted after the command name's closing parenthesis) */
const procStart = (pid: number): bigint => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!);
};
const HOST_INO = inoOf('/proc/self/ns/net');

/** The pod's netns as the sandbox made it: inode and cookie. */
function podNetns(pod: SandboxPod): { ino: string; cookie: string } {
  const path = `/run/netns/${pod.netns}`;
  return { ino: inoOf(path).toString(), cookie: native.netnsCookie(path).toString() };
}

/** A container name of the pod whose cgroup sorts before the cgroup of every container the pod has. */
function firstContainer(pod: SandboxPod): string {
  const leaf = (c: string): string => basename(pod.containerCgroup(c));
  const others = [SANDBOX_CONTAINER, 'app', 'istio-proxy'].map(leaf);
  for (let i = 0; ; i++) if (others.every((o) => leaf(`sandboxed-${i}`) < o)) return `sandboxed-${i}`;
}

/** Wait until a process of the pod has become `comm` as `uid` in a netns other than the pod's and the node's. */
async function waitElsewhere(pod: SandboxPod, p: ChildProcess, comm: string, uid: string): Promise<bigint> {
  const own = BigInt(podNetns(pod).ino);
  await waitFor(
    () => {
      const ino = procIno(p.pid!);
      return procComm(p.pid!) === comm && procUid(p.pid!) === uid && ino !== undefined && ino !== own && ino !== HOST_INO;
    },
    10_000,
    `process ${p.pid} (${comm}) in a netns of its own`,
  );
  return procIno(p.pid!)!;
}

// ---- the agent --------------------------------------------------------------------------------------------

const podState = () => agent!.status()?.pods.find((p) => p.ref.uid === POD_UID);

let tick = 0;
/**
 * Wait until the agent has run a full pass after whatever the test just did: change a harmless setting (an
 * excluded outbound port nobody uses) and wait for status to show it. The pass that publishes it has located
 * the pod too.
 */
async function pass(): Promise<void> {
  tick++;
  const obj = podObject({ annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': String(9000 + tick) } });
  agent!.write([NS, LEGACY, obj, peerObject]);
  await waitForPodSettings(agent!, POD_UID, parseCaptureSettings(obj as PodLike).settings);
}

/** Everything that says the pod is captured by its own netns: pods map, netns link, status, outbound, inbound. */
async function assertPodOwnsItsNetns(what: string, how: 'sandbox' | 'pins', pod: SandboxPod = topo.pod): Promise<void> {
  const own = podNetns(pod);
  const d = dumpJson(agent!.bpffs);
  const pods = (d.maps.pods as Array<{ netns_cookie: string; pod: string }>).map((p) => [p.pod, String(p.netns_cookie)]);
  assert.deepEqual(pods, [['demo/client', own.cookie]], `${what}: the pods map keys the pod by its own netns (cookie ${own.cookie})`);
  assert.deepEqual(
    d.links.filter((l) => l.startsWith('netns/')),
    [`netns/meshlane_sk_lookup/${own.cookie}`],
    `${what}: the inbound program is on the pod's own netns`,
  );
  assert.match(await runCase(pod, { name: 'out', uid: APP, gid: APP, to: `${SVC_V4}:80` }), outboundCaptured, `${what}: outbound reaches the proxy`);
  assert.match(
    await runCase(pod, { name: 'in', uid: APP, gid: APP, to: `${POD_V4}:8080`, on: peer }),
    inboundCaptured,
    `${what}: inbound from another pod reaches the proxy`,
  );
  const st = podState();
  assert.equal(st?.state, 'captured', what);
  assert.equal(st?.netnsCookie, own.cookie, `${what}: status cookie`);
  assert.deepEqual(st?.netns, { inode: own.ino, how, pid: pod.sandboxPid }, `${what}: status shows the netns inode and how it was found`);
}

function statusText(): string {
  const r = cli(['status', '--bpffs', agent!.bpffs, '--state-dir', agent!.stateDir]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function restartAgent(): Promise<void> {
  await stopAgent(agent, 'SIGKILL');
  agent = await startAgent(topo.sb, [], 'netns-identity', agent);
  await waitFor(() => podState()?.state === 'captured', 10_000, 'the restarted agent to capture the pod');
}

// ---- the cases ----------------------------------------------------------------------------------------------

test('an unprivileged process of the pod that unshares its netns moves nothing: running agent, restart, fooled pins', async (t) => {
  // the sandbox models a real pod: its sandbox process is the pod's oldest, in its own container, in the netns
  const sandboxPid = topo.pod.sandboxPid;
  assert.equal(procIno(sandboxPid)?.toString(), podNetns(topo.pod).ino);
  const v2 = readFileSync(`/proc/${sandboxPid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  assert.equal(v2, `0::${topo.pod.containerCgroup(SANDBOX_CONTAINER).slice(topo.sb.cgroup2Mount.length)}`);
  assert.equal(procUid(sandboxPid), '65535');
  for (const p of topo.procs) assert.ok(procStart(sandboxPid) <= procStart(p.pid!), `the sandbox process started before ${p.pid}`);

  // A uid-1000 process in the pod's netns, in a container of its own, there before the agent looks at the pod.
  const container = firstContainer(topo.pod);
  const attacker = topo.pod.spawn('sh', ['-c', 'read go; exec unshare -Urn sleep 600'], { uid: APP, gid: APP, container });
  t.after(() => kill(attacker));
  await waitFor(
    () => procUid(attacker.pid!) === '1000' && procIno(attacker.pid!)?.toString() === podNetns(topo.pod).ino,
    10_000,
    'the process in the pod netns',
  );

  agent = await startAgent(topo.sb, [NS, LEGACY, podObject(), peerObject], 'netns-identity');
  await waitFor(() => podState()?.state === 'captured', 10_000, 'the pod captured');
  await assertPodOwnsItsNetns('before the unshare', 'sandbox');

  attacker.stdin!.write('go\n');
  const privateIno = await waitElsewhere(topo.pod, attacker, 'sleep', '1000');
  await pass();
  await assertPodOwnsItsNetns('after a uid-1000 process of the pod unshared its netns (running agent)', 'sandbox');
  assert.equal(procIno(attacker.pid!), privateIno, 'the unshared process is still there, in its own netns');

  const own = podNetns(topo.pod);
  assert.ok(statusText().includes(`    netns=${own.ino} via sandbox process ${sandboxPid}\n`), statusText());
  const json = JSON.parse(cli(['status', '--json', '--bpffs', agent.bpffs, '--state-dir', agent.stateDir]).stdout) as {
    status: { pods: Array<{ ref: { uid: string }; netns?: unknown }> };
  };
  assert.deepEqual(json.status.pods.find((p) => p.ref.uid === POD_UID)?.netns, { inode: own.ino, how: 'sandbox', pid: sandboxPid }, '--json');

  // SIGKILL and a restart with the unshared process still there: the pins and the sandbox process agree
  await restartAgent();
  await assertPodOwnsItsNetns('after SIGKILL and a restart', 'pins');
  assert.ok(statusText().includes(`    netns=${own.ino} restored from pins, confirmed by sandbox process ${sandboxPid}\n`), statusText());

  // Pins that key the pod by the unshared process's netns, as an agent without this rule would have left
  // them: the restarted agent follows the sandbox process and says so.
  await stopAgent(agent, 'SIGKILL');
  const privateCookie = native.netnsCookie(`/proc/${attacker.pid}/ns/net`);
  const pinned = new PinnedMaps(agent.bpffs);
  try {
    const entry = pinned.maps.pods!.get(BigInt(own.cookie));
    assert.ok(entry, 'the pod has its pods entry');
    pinned.maps.pods!.set(privateCookie, entry);
    assert.equal(pinned.maps.pods!.delete(BigInt(own.cookie)), true);
  } finally {
    pinned.close();
  }
  await restartAgent();
  await assertPodOwnsItsNetns('after a restart on pins that named the unshared netns', 'sandbox');
  assert.match(agent.log(), /the pinned netns of the pod is not the netns of its sandbox process/);
});

test("younger processes of the pod in other netns (their own, another pod's) move nothing, also across a restart", async (t) => {
  const container = firstContainer(topo.pod);
  // root in the pod (a privileged container, a debugging tool) sitting in the peer pod's netns
  const inPeer = topo.pod.spawn('nsenter', [`--net=/proc/${peer.sandboxPid}/ns/net`, 'sleep', '600'], { container });
  t.after(() => kill(inPeer));
  await waitFor(() => procComm(inPeer.pid!) === 'sleep' && procIno(inPeer.pid!)?.toString() === podNetns(peer).ino, 10_000, 'the process in the peer netns');
  // uid 1000 started in a netns of its own
  const own = topo.pod.spawn('unshare', ['-Urn', 'sleep', '600'], { uid: APP, gid: APP, container });
  t.after(() => kill(own));
  await waitElsewhere(topo.pod, own, 'sleep', '1000');

  await pass();
  await assertPodOwnsItsNetns('with younger processes in other netns (running agent)', 'sandbox');
  await restartAgent();
  await assertPodOwnsItsNetns('with younger processes in other netns, after a restart', 'pins');
  // the peer pod is not captured: its netns was never given the client's settings
  assert.match(await runCase(peer, { name: 'peer out', uid: APP, gid: APP, to: `${SVC_V4}:80` }), /^svc:80 peer=10\.244\.0\.11 app-sees=10\.96\.0\.10:80$/);
});

test("the sandbox process exits: the pod's other processes hold the netns; the sandbox recreated in a new netns: the binding moves", async () => {
  const was = podNetns(topo.pod);
  const oldPause = topo.pod.sandboxPid;
  process.kill(oldPause, 'SIGKILL');
  await waitFor(() => procIno(oldPause) === undefined, 5000, 'the sandbox process gone');
  await pass();
  const st = podState();
  assert.equal(st?.netnsCookie, was.cookie, 'the binding stays while processes of the pod are in its netns');
  assert.equal(st?.netns?.inode, was.ino);
  assert.equal(st?.netns?.pid, oldPause);
  const heldBy = st?.netns?.heldBy;
  assert.ok(heldBy !== undefined && procIno(heldBy)?.toString() === was.ino, `held by a process in the pod's netns: ${JSON.stringify(st?.netns)}`);
  assert.match(
    statusText(),
    new RegExp(`netns=${was.ino} (via sandbox process|restored from pins, confirmed by sandbox process) ${oldPause} \\(gone; held by process ${heldBy}\\)`),
  );
  assert.match(await runCase(topo.pod, { name: 'out', uid: APP, gid: APP, to: `${SVC_V4}:80` }), outboundCaptured);

  // kubelet's answer to a dead sandbox: every container stopped, a new sandbox in a new netns, containers again
  await topo.pod.recreateSandbox();
  const now = podNetns(topo.pod);
  assert.notEqual(now.ino, was.ino);
  await waitFor(() => podState()?.netns?.inode === now.ino, 10_000, 'the binding to move to the new sandbox netns');
  const app = topo.pod.spawn('node', [ENDPOINT(), 'serve', '--ports', '8080,9090,15008,53', '--tag', 'app'], { container: 'app' });
  const proxy = startProxy(topo.pod);
  topo.procs.push(app, proxy);
  await Promise.all([waitReady(app, 'app server'), waitReady(proxy, 'proxy')]);
  await pass();
  await assertPodOwnsItsNetns('after the sandbox was recreated', 'sandbox');
  assert.match(agent!.log(), /no process of the pod is in its netns any more/);
});
