// Map capacity (issue 11, point 5): --max-pods and --max-connections size the maps (src/dataplane/capacity.ts),
// and a full map is defined, logged, counted and shown, never a silent bypass. One agent with small limits
// over real sandbox pods, real traffic:
// - --max-pods 2: two pods are captured; the third is not enrolled (nothing of it in the maps), its status
//   names the full map and the option that sizes it, `meshlane status` shows `pods: 2 of 2 FULL`, the
//   metrics count the refused write and show the capacity;
// - --max-connections 16: a pod whose proxy stops accepting fills the node's hand-over map; connects beyond
//   what it holds are refused with EPERM (node_handover_full), never passed to their destination
//   uncaptured; counted in status and metrics;
// - a restart with other limits keeps the pinned maps (their capacity cannot change in place): capture
//   stays, the log warns once per map, status says "capacity 2 (wanted 4 by --max-pods, takes effect after
//   `meshlane uninstall`)"; after an uninstall the new limits take effect and the third pod is captured.
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
  stopAgent,
  cleanupAgent,
  waitFor,
  dumpJson,
  cli,
  waitReady,
  type Topology,
  type AgentRun,
} from '../support/harness.js';
import { freePort, scrapeMetrics } from '../support/scrape.js';
import { PYTHON, STUCK_PROXY, connects, destination, firstJsonLine } from '../support/stuck-proxy.js';

const MAX_CONNECTIONS = 16;
/** orig_by_tuple of 16 entries: new redirects refused from 15 node-wide (capacity.ts handoverBounds) */
const REFUSE_FROM = 15;
const ATTEMPTS = 40;
const DEST_PORT = 7071;
const SECOND = { name: 'second', uid: 'ca000000-0000-4000-8000-000000000002', ipv4: '10.244.0.62' };
const THIRD = { name: 'third', uid: 'ca000000-0000-4000-8000-000000000003', ipv4: '10.244.0.63' };
const captured = /^proxy-outbound:15001 peer=10\.244\.0\.10 orig=10\.96\.0\.10:80 app-sees=10\.96\.0\.10:80$/;

// the client pod's app: connections through its proxy, held open (each is two spliced sockets: the app's
// and the proxy's), the proxy's reply tag of each printed once all are made
const HELD_CONNECTIONS = 24;
const HELD = `
import socket, json, sys
socks, tags = [], []
for i in range(int(sys.argv[1])):
    s = socket.create_connection(('${SVC_V4}', 80), timeout=5)
    line = b''
    while not line.endswith(b'\\n'):
        d = s.recv(4096)
        if not d:
            break
        line += d
    tags.append(json.loads(line)['tag'])
    socks.append(s)
print(json.dumps(tags), flush=True)
sys.stdin.read()
`;

const ns = namespaceObject('demo', { 'istio-injection': 'enabled' });
const second = podObject({ name: SECOND.name, uid: SECOND.uid, ipv4: SECOND.ipv4, ipv6: '' });
const third = podObject({ name: THIRD.name, uid: THIRD.uid, ipv4: THIRD.ipv4, ipv6: '' });

let topo: Topology;
let agent: AgentRun | undefined;
let secondPod: SandboxPod;
let port = 0;
const procs: ChildProcess[] = [];
let destOut = '';

const scrape = (): Promise<Map<string, number>> => scrapeMetrics(port);

const limits = (pods: number, connections: number): string[] => [
  '--max-pods',
  String(pods),
  '--max-connections',
  String(connections),
  '--metrics-address',
  `127.0.0.1:${port}`,
];
const podState = (uid: string) => agent!.status()?.pods.find((p) => p.ref.uid === uid);
const statusText = (): string => {
  const r = cli(['status', '--bpffs', agent!.bpffs, '--state-dir', agent!.stateDir]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
};
const client = (name: string): Promise<string> => runCase(topo.pod, { name, uid: APP, gid: APP, to: `${SVC_V4}:80` });

before(async () => {
  topo = await makeTopology({ prefix: 'mlcap' });
  secondPod = await topo.sb.addPod({ namespace: 'demo', name: SECOND.name, uid: SECOND.uid, ipv4: SECOND.ipv4 });
  await topo.sb.addPod({ namespace: 'demo', name: THIRD.name, uid: THIRD.uid, ipv4: THIRD.ipv4 });
  const proxy = secondPod.spawn(PYTHON, ['-c', STUCK_PROXY], { uid: PROXY, gid: PROXY, container: 'istio-proxy' });
  const dest = topo.svc.spawn(PYTHON, ['-c', destination(DEST_PORT)]);
  procs.push(proxy, dest);
  dest.stdout?.on('data', (d: Buffer) => (destOut += d.toString()));
  await Promise.all([waitReady(proxy, 'stuck proxy'), waitReady(dest, 'destination')]);
  port = await freePort();
  agent = await startAgent(topo.sb, [ns, podObject(), second], 'capacity', undefined, [...limits(2, MAX_CONNECTIONS), '--max-inflight-per-pod', '15']);
  await waitFor(() => podState(POD_UID)?.state === 'captured' && podState(SECOND.uid)?.state === 'captured', 10_000, 'two pods captured');
});
after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await cleanupAgent(agent);
  await destroyTopology(topo);
});

test('--max-pods 2: the third pod is not enrolled, its status names the full map and the option; status and metrics show it', async () => {
  agent!.write([ns, podObject(), second, third]);
  await waitFor(() => /map pods is full \(2 entries, sized by --max-pods\)/.test(podState(THIRD.uid)?.reason ?? ''), 10_000, 'the third pod refused');
  const st = podState(THIRD.uid)!;
  assert.equal(st.state, 'pending');
  assert.match(st.reason!, /the pod keeps no entries \(not captured\)/);
  assert.deepEqual(agent!.status()!.health?.fullMaps, ['pods']);
  assert.match(agent!.log(), /map pods is full/);
  // nothing of it in the maps; the two that fit are captured, and their traffic is
  const dump = dumpJson(agent!.bpffs);
  assert.deepEqual((dump.maps.pods as Array<Record<string, unknown>>).map((p) => p.pod).sort(), ['demo/client', 'demo/second']);
  assert.match(await client('first-pod'), captured);
  assert.equal(podState(SECOND.uid)?.state, 'captured');

  // status: entries of capacity, and what sizes each map
  const text = statusText();
  assert.match(text, /\n {2}pods: 2 of 2 FULL \(sized by --max-pods 2\)\n/);
  assert.match(text, /\n {2}pod_info: 2 of 2 FULL \(sized by --max-pods 2\)\n/);
  assert.match(text, /\n {2}pod_ports: \d+ of 32 \(sized by --max-pods 2\)\n/);
  assert.match(text, /\n {2}handover: \d+ of 5 \(sized by --max-pods 2\)\n/);
  assert.match(text, /\n {2}orig_by_tuple: \d+ of 16 \(sized by --max-connections 16\)\n/);
  assert.match(text, /\n {2}sock_pairs: \d+ of 32 \(sized by --max-connections 16\)\n/);
  assert.match(text, /demo\/third pending \(not enrolled with these settings: map pods is full/);
  assert.deepEqual(agent!.status()!.capacity?.limits, { maxPods: 2, maxConnections: 16 });

  // metrics: the capacity the option gave, the refused write
  const m = await scrape();
  assert.equal(m.get('meshlane_map_capacity{map="pods"}'), 2);
  assert.equal(m.get('meshlane_map_capacity{map="orig_by_tuple"}'), 16);
  assert.equal(m.get('meshlane_map_capacity{map="sock_pairs"}'), 32);
  assert.equal(m.get('meshlane_map_entries{map="pods"}'), 2);
  assert.ok((m.get('meshlane_map_full_total{map="pods"}') ?? 0) >= 1, 'the refused write is counted');
});

test("--max-connections 16: connects beyond the node's hand-over map are refused (EPERM), never passed uncaptured; counted and shown", async () => {
  const proc = secondPod.spawn(PYTHON, ['-c', connects(DEST_PORT), String(ATTEMPTS)], { uid: APP, gid: APP, container: 'app' });
  procs.push(proc);
  const counts = await firstJsonLine<Record<string, number>>(proc, 'the app');
  const eperm = counts.EPERM ?? 0;
  const inProgress = counts.EINPROGRESS ?? 0;
  assert.deepEqual(
    Object.keys(counts).filter((k) => k !== 'EPERM' && k !== 'EINPROGRESS'),
    [],
    JSON.stringify(counts),
  );
  assert.ok(eperm > 0, `refused once the node's map is near full: ${JSON.stringify(counts)}`);
  // the node's threshold, plus what the listener's accept queue took (their hand-over was consumed)
  assert.ok(inProgress >= REFUSE_FROM && inProgress <= REFUSE_FROM + 4, JSON.stringify(counts));
  assert.equal(eperm + inProgress, ATTEMPTS);

  await waitFor(() => agent!.status()?.handover?.refusedNodeFull === eperm, 10_000, 'the refusals in status');
  const node = agent!.status()!.handover!;
  assert.equal(node.capacity, MAX_CONNECTIONS);
  assert.equal(node.refuseFrom, REFUSE_FROM);
  assert.equal(node.handoverFull, 0, 'every hand-over that was let through was stored');
  assert.equal(podState(SECOND.uid)!.handover?.refusedNodeFull, eperm);
  assert.match(statusText(), new RegExp(`hand-over map: \\d+ of 16 [^\\n]*new ones refused from 15\\)[^\\n]*${eperm} with the map near full`));
  const m = await scrape();
  assert.equal(m.get('meshlane_connections_refused_total{reason="node_handover_full"}'), eperm);
  assert.equal(destOut.includes('peer'), false, `nothing reached the destination uncaptured: ${destOut}`);

  // the app gives up: the map drains, and the other pod's connections go through again
  const exited = new Promise((r) => proc.once('exit', r));
  proc.stdin?.end();
  await exited;
  await waitFor(() => agent!.status()?.handover?.inflight === 0, 10_000, 'the hand-over map drained');
  assert.match(await client('after-drain'), captured);
  assert.equal(destOut.includes('peer'), false, destOut);
});

test('--max-connections 16: sock_pairs (32) full: the connections beyond it are not spliced, still captured; counted, logged, shown', async () => {
  const before = Number(/splice_table_full=(\d+)/.exec(statusText())?.[1] ?? 'NaN');
  assert.equal(before, 0);
  const proc = topo.pod.spawn(PYTHON, ['-c', HELD, String(HELD_CONNECTIONS)], { uid: APP, gid: APP, container: 'app' });
  procs.push(proc);
  const tags = await firstJsonLine<string[]>(proc, 'the app');
  // every connection reached the proxy (captured), spliced or not
  assert.deepEqual(tags, Array<string>(HELD_CONNECTIONS).fill('proxy-outbound'));
  const text = statusText();
  const full = Number(/splice_table_full=(\d+)/.exec(text)?.[1] ?? 'NaN');
  assert.ok(full > 0, `sockets left out of sock_pairs are counted: ${text}`);
  assert.match(text, /\n {2}sock_pairs: 32 of 32 FULL \(sized by --max-connections 16\)\n/);
  assert.equal((await scrape()).get('meshlane_kernel_map_full_total{map="sock_pairs"}'), full);
  await waitFor(() => /map sock_pairs is full \(sized by --max-connections/.test(agent!.log()), 10_000, 'the log line');
  const exited = new Promise((r) => proc.once('exit', r));
  proc.stdin?.end();
  await exited;
  assert.match(await client('after-held'), captured);
});

test('a restart with other limits keeps the pinned capacity (capture intact, warned, shown); after an uninstall they take effect', async () => {
  await stopAgent(agent);
  assert.match(await client('agent-down'), captured, 'capture stays without the agent');
  agent = await startAgent(topo.sb, [], 'capacity', agent, limits(4, 32));
  await waitFor(() => /capture active/.test(agent!.log()), 10_000, 'the restarted agent to finish starting');
  await waitFor(() => podState(THIRD.uid)?.reason !== undefined && podState(POD_UID)?.state === 'captured', 10_000, 'the restarted agent reconciled');
  // the pins kept their capacity: the two pods are still captured, the third still does not fit
  assert.equal(podState(SECOND.uid)?.state, 'captured');
  assert.match(podState(THIRD.uid)!.reason!, /map pods is full \(2 entries, sized by --max-pods\)/);
  assert.match(await client('after-restart'), captured);
  const warned = agent!
    .log()
    .split('\n')
    .filter((l) => l.includes('"map":"pods"') && l.includes('pinned with capacity 2 (wanted 4 by --max-pods'));
  assert.equal(warned.length, 1, 'one warning for the pods map');
  const text = statusText();
  assert.match(text, /\n {2}pods: 2 of 2 FULL \(sized by --max-pods 4\); capacity 2 \(wanted 4 by --max-pods, takes effect after `meshlane uninstall`\)\n/);
  assert.match(text, /\n {2}orig_by_tuple: \d+ of 16 \(sized by --max-connections 32\); capacity 16 \(wanted 32 by --max-connections, takes effect/);
  // the node's threshold follows the map it has, not the one it wanted
  await waitFor(() => agent!.status()?.handover !== undefined, 10_000, 'the hand-over figures');
  assert.equal(agent!.status()!.handover!.capacity, 16);
  assert.equal(agent!.status()!.handover!.refuseFrom, REFUSE_FROM);
  assert.equal((await scrape()).get('meshlane_map_capacity{map="pods"}'), 2);

  // a per-pod limit the CLI accepts for --max-connections 32 but the kept map of 16 cannot take: one line,
  // exit 2, and the pinned capture as it was
  await stopAgent(agent);
  const refused = cli([
    'agent',
    '--cluster-file',
    agent!.clusterFile,
    '--cgroup-root',
    topo.sb.cgroupRoot,
    '--bpffs',
    agent!.bpffs,
    '--state-dir',
    agent!.stateDir,
    '--cni-socket',
    agent!.cniSocket,
    '--metrics-address',
    'off',
    '--max-connections',
    '32',
    '--max-inflight-per-pod',
    '20',
  ]);
  assert.equal(refused.code, 2, refused.stderr);
  // (its log lines go to stderr too: the error is the last line)
  assert.equal(
    refused.stderr.slice(refused.stderr.lastIndexOf('\nmeshlane: ') + 1),
    `meshlane: --max-inflight-per-pod 20 does not fit the pinned orig_by_tuple of 16 entries (at most 15): pass at most 15, or run 'meshlane uninstall --bpffs ${agent!.bpffs}' first so that the maps are made for the new --max-connections\n`,
  );
  assert.match(await client('after-refused-start'), captured, 'capture as it was');
  assert.equal((dumpJson(agent!.bpffs).maps.pods as unknown[]).length, 2);

  // uninstall, start again: the new limits are the maps' capacity, and the third pod fits
  const u = cli(['uninstall', '--bpffs', agent!.bpffs]);
  assert.equal(u.code, 0, u.stderr);
  agent = await startAgent(topo.sb, [], 'capacity', agent, limits(4, 32));
  await waitFor(() => podState(THIRD.uid)?.state === 'captured', 10_000, 'the third pod captured');
  assert.match(await client('after-uninstall'), captured);
  assert.match(statusText(), /\n {2}pods: 3 of 4 \(sized by --max-pods 4\)\n/);
  assert.equal(agent!.status()!.handover?.capacity ?? 32, 32);
  assert.equal(agent!.log().includes('pinned with capacity'), false);
});
