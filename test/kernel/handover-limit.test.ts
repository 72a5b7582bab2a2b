// Hardening (issue 8 item 5): one pod cannot exhaust the node-wide hand-over map (orig_by_tuple).
//
// Pod A's proxy stops accepting: a real listener on 15001 with a backlog of 1 that never accepts, so once
// its accept queue is full every new SYN is dropped and each of A's connects leaves its hand-over entry
// behind (SYN_SENT, for minutes). A's app opens non-blocking connects to a real destination until it is
// refused: with the per-pod limit (--max-inflight-per-pod) the connect hook refuses the pod's next
// redirect with EPERM once it holds its limit, and never lets it bypass the proxy (the destination sees
// no connection at all). Meanwhile pod B's requests through its own proxy all succeed. A's refusals are in
// status (per pod and for the node), `meshlane status`, `meshlane dump`, and one log line (rate-limited,
// not one per connection). When A's app gives up, A's count drains to 0; when A leaves the cluster its
// count leaves the map.
//
// Without the limit (the code before this test) A's connects are never refused: every one of them is in
// progress (EINPROGRESS) until the map is full, and the test fails on its first assertion.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import type { SandboxPod } from '../../src/sandbox/sandbox.js';
import {
  APP,
  POD_UID,
  PROXY,
  SVC_V4,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  cli,
  waitReady,
  type Topology,
  type AgentRun,
} from '../support/harness.js';
import { PYTHON, STUCK_PROXY, connects, destination, firstJsonLine } from '../support/stuck-proxy.js';

const LIMIT = 32;
/** A's connects: well past its limit */
const ATTEMPTS = LIMIT + 48;
/** a destination only A dials (B's requests go to :80) */
const DEST_PORT = 7070;
const STUCK = { name: 'stuck', uid: 'a5000000-0000-4000-8000-000000000001', ipv4: '10.244.0.51' };
const captured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;

const ns = namespaceObject('demo', { 'istio-injection': 'enabled' });
const stuckObject = podObject({ name: STUCK.name, uid: STUCK.uid, ipv4: STUCK.ipv4, ipv6: '' });

let topo: Topology;
let agent: AgentRun | undefined;
let stuck: SandboxPod;
const procs: ChildProcess[] = [];
let destOut = '';

before(async () => {
  topo = await makeTopology({ prefix: 'mlhl' });
  stuck = await topo.sb.addPod({ namespace: 'demo', name: STUCK.name, uid: STUCK.uid, ipv4: STUCK.ipv4 });
  const proxy = stuck.spawn(PYTHON, ['-c', STUCK_PROXY], { uid: PROXY, gid: PROXY, container: 'istio-proxy' });
  const dest = topo.svc.spawn(PYTHON, ['-c', destination(DEST_PORT)]);
  procs.push(proxy, dest);
  dest.stdout?.on('data', (d: Buffer) => (destOut += d.toString()));
  await Promise.all([waitReady(proxy, 'stuck proxy'), waitReady(dest, 'destination')]);
  agent = await startAgent(topo.sb, [ns, podObject(), stuckObject], 'handover-limit', undefined, ['--max-inflight-per-pod', String(LIMIT)]);
  await waitFor(() => podState(POD_UID)?.state === 'captured' && podState(STUCK.uid)?.state === 'captured', 10_000, 'both pods captured');
});
after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

const podState = (uid: string) => agent!.status()?.pods.find((p) => p.ref.uid === uid);

/** A's app: starts the connects, resolves with the count per errno once they are all made. */
async function openConnects(): Promise<{ proc: ChildProcess; counts: Record<string, number> }> {
  const proc = stuck.spawn(PYTHON, ['-c', connects(DEST_PORT), String(ATTEMPTS)], { uid: APP, gid: APP, container: 'app' });
  procs.push(proc);
  return { proc, counts: await firstJsonLine<Record<string, number>>(proc, "A's app") };
}

test("a pod whose proxy stops accepting is refused at its limit (EPERM, no bypass); another pod's requests all succeed; status, dump and one log line say so", async () => {
  const { proc, counts } = await openConnects();
  const eperm = counts.EPERM ?? 0;
  const inProgress = counts.EINPROGRESS ?? 0;
  assert.deepEqual(
    Object.keys(counts).filter((k) => k !== 'EPERM' && k !== 'EINPROGRESS'),
    [],
    `only EPERM and EINPROGRESS: ${JSON.stringify(counts)}`,
  );
  assert.ok(eperm > 0, `A is refused once it holds its limit: ${JSON.stringify(counts)}`);
  // the limit, plus the two connections the listener's accept queue took (their hand-over was consumed)
  assert.ok(inProgress >= LIMIT && inProgress <= LIMIT + 4, `A got its limit and no more: ${JSON.stringify(counts)}`);
  assert.equal(eperm + inProgress, ATTEMPTS);

  // pod B, meanwhile: every request goes through its own proxy
  for (let i = 0; i < 10; i++) assert.match(await runCase(topo.pod, { name: `b-${i}`, uid: APP, gid: APP, to: `${SVC_V4}:80` }), captured, `B's request ${i}`);

  // status: A's refusals and what it holds; B untouched; the node's figures
  await waitFor(() => podState(STUCK.uid)?.handover?.refusedAtLimit === eperm, 10_000, "A's refusals in status");
  const a = podState(STUCK.uid)!.handover!;
  assert.equal(a.limit, LIMIT);
  assert.equal(a.refusedNodeFull, 0);
  assert.ok(a.inflight > 0 && a.inflight <= LIMIT, `A holds at most its limit: ${a.inflight}`);
  const b = podState(POD_UID)!.handover;
  assert.equal(b?.refusedAtLimit ?? 0, 0);
  assert.equal(b?.refusedNodeFull ?? 0, 0);
  const node = agent!.status()!.handover!;
  assert.equal(node.perPodLimit, LIMIT);
  assert.equal(node.refusedPodLimit, eperm);
  assert.equal(node.refusedNodeFull, 0);
  assert.equal(node.handoverFull, 0);
  assert.ok(node.inflight >= a.inflight);

  const text = cli(['status', '--bpffs', agent!.bpffs, '--state-dir', agent!.stateDir]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    new RegExp(
      `demo/stuck captured[^\\n]*\\n(?:    [^\\n]*\\n)*    connections between connect\\(\\) and accept\\(\\): \\d+ \\(limit ${LIMIT}\\); refused: ${eperm} at its limit, 0 with the node's map near full`,
    ),
  );
  assert.match(
    text.stdout,
    new RegExp(`hand-over map: \\d+ of 65536 [^\\n]*per pod at most ${LIMIT}; refused: ${eperm} at a pod's limit, 0 with the map near full`),
  );
  assert.match(text.stdout, new RegExp(`refused_pod_limit=${eperm}`));

  const dump = dumpJson(agent!.bpffs);
  const rows = dump.maps.handover as Array<Record<string, unknown>>;
  const row = rows.find((r) => r.pod === 'demo/stuck');
  assert.ok(row, `A's count in dump: ${JSON.stringify(rows)}`);
  assert.equal(row.refused_at_limit, String(eperm));
  assert.deepEqual(dump.maps.limits, [{ handover_per_pod: LIMIT }]);

  // the log: one line for the burst of refusals, not one per connection
  const lines = agent!
    .log()
    .split('\n')
    .filter((l) => l.includes('the pod holds its limit'));
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0]!, /"pod":"demo\/stuck"/);
  assert.match(lines[0]!, new RegExp(`"refused":${eperm}\\b`));

  // nothing bypassed: the destination never saw a connection
  assert.equal(destOut.includes('peer'), false, destOut);

  // A's app gives up: its connects close and its count drains (nothing leaks)
  const exited = new Promise((r) => proc.once('exit', r));
  proc.stdin?.end();
  await exited;
  await waitFor(() => podState(STUCK.uid)?.handover?.inflight === 0, 10_000, "A's count drained");
  assert.equal(destOut.includes('peer'), false, destOut);

  // A leaves the cluster: once drained, its count leaves the map
  const cookie = podState(STUCK.uid)!.netnsCookie!;
  agent!.write([ns, podObject()]);
  await waitFor(() => podState(STUCK.uid) === undefined, 10_000, 'A released');
  await waitFor(
    () => !(dumpJson(agent!.bpffs).maps.handover as Array<Record<string, unknown>>).some((r) => r.netns_cookie === cookie),
    10_000,
    "A's count removed from the map",
  );
  // B still captured and working
  assert.match(await runCase(topo.pod, { name: 'b-after', uid: APP, gid: APP, to: `${SVC_V4}:80` }), captured);
});
