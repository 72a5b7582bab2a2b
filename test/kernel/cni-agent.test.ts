// The real agent (`meshlane agent --kubeconfig --node-name --cni-socket`, a subprocess) serving the real
// meshlane-cni executable, run as a container runtime runs a chained plugin (CNI_* environment, the config
// with prevResult on stdin; SPEC.md, Section 2) against sandbox pods whose network namespace the test made
// and whose sandbox process starts only after ADD (as containerd does it):
// - ADD of a captured pod (the API shows it without IPs yet, as at a real ADD): the netns is enrolled (maps
//   entry, netns link) when ADD returns; then traffic from the pod is captured; status says via=cni;
// - ADD of a pod that is not captured returns the prevResult without enrolling anything;
// - ADD of a pod the API never shows fails after --cni-pod-wait (fail closed);
// - the agent slow: the pod shows in the API only after ADD started: ADD waits and succeeds;
// - the agent down (stopped: no socket; killed: a stale socket): ADD and CHECK fail with a clear message,
//   DEL succeeds;
// - DEL releases (entries and netns link go) and always succeeds, also for a pod nobody knows;
// - CHECK and VERSION (1.0.0 and 0.4.0);
// - Istio's istio-validation check (test/fixtures/istio-validation.py, from validator.go) as uid 1337 in a
//   pod started through ADD passes on its first dial, IPv4 and IPv6.
//
// Root: netns, cgroups, bpffs pins under /sys/fs/bpf/meshlane-test-cni-agent (removed in after()).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox, type SandboxHost, type SandboxPod } from '../../src/sandbox/sandbox.js';
import { builtPlugin } from '../../src/cni/install.js';
import { packageRoot } from '../../src/util/paths.js';
import * as native from '../../src/native/addon.js';
import { KubeApiServer } from '../support/kube/server.js';
import type { KubeObject } from '../support/kube/resources.js';
import {
  APP,
  PROXY,
  SVC_V4,
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
  startProxy,
  waitReady,
  cli,
  type AgentRun,
} from '../support/harness.js';

const NODE = 'sandbox-node';
const POD_WAIT_S = 5;
const PLUGIN_KILL_MS = 60_000;
const VALIDATOR = (): string => join(packageRoot(), 'test', 'fixtures', 'istio-validation.py');

let sb: Sandbox;
let svc: SandboxHost;
let api: KubeApiServer;
let agent: AgentRun | undefined;
let tmp = '';
let kubeconfig = '';
const procs: ChildProcess[] = [];
let nextIp = 20;

interface Pod {
  sp: SandboxPod;
  uid: string;
  ip: string;
  ip6?: string;
  ns: string;
  name: string;
}

/** The pod as the API shows it at ADD time: scheduled to this node, Pending, no IPs reported yet. */
function apiPod(ns: string, name: string): KubeObject {
  const obj = podObject({ namespace: ns, name, ipv4: '', ipv6: '' }) as KubeObject;
  (obj.status as Record<string, unknown>) = { phase: 'Pending', qosClass: 'BestEffort' };
  return obj;
}

/** A pod as kubelet makes it before the runtime's ADD: its cgroup and its netns, no process in it yet. */
async function makePod(ns: string, name: string, o: { inApi?: boolean; ipv6?: boolean } = {}): Promise<Pod> {
  const ip = `10.244.0.${nextIp++}`;
  const ip6 = o.ipv6 ? `fd00:244::${nextIp}` : undefined;
  let uid = `00000000-0000-4000-8000-0000000000${nextIp}`;
  if (o.inApi !== false) uid = api.store.create('pods', apiPod(ns, name)).metadata.uid;
  const sp = await sb.addPod({ namespace: ns, name, uid, ipv4: ip, ...(ip6 ? { ipv6: ip6 } : {}), startSandbox: false });
  return { sp, uid, ip, ns, name, ...(ip6 ? { ip6 } : {}) };
}

/** What the interface plugin (bridge) returned for the pod: the prevResult our plugin gets. */
function prevResult(p: Pod): Record<string, unknown> {
  const ips: Array<Record<string, unknown>> = [{ address: `${p.ip}/24`, gateway: '10.244.0.1', interface: 2 }];
  if (p.ip6) ips.push({ address: `${p.ip6}/64`, gateway: 'fd00:244::1', interface: 2 });
  return {
    cniVersion: '1.0.0',
    interfaces: [
      { name: 'mlbr0', mac: '00:11:22:33:44:55' },
      { name: p.sp.hostVeth, mac: '55:44:33:22:11:11' },
      { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: p.sp.netnsPath },
    ],
    ips,
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}

const config = (p: Pod, over: Record<string, unknown> = {}): string =>
  JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'meshlane-cni', socket: agent!.cniSocket, prevResult: prevResult(p), ...over });

/** The environment containerd sets for the pod's sandbox. */
function runtimeEnv(command: string, p: Pod, o: { uid?: boolean } = {}): Record<string, string> {
  const id = p.sp.containerId('pause');
  return {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: p.sp.netnsPath,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${p.ns};K8S_POD_NAME=${p.name};K8S_POD_INFRA_CONTAINER_ID=${id}${o.uid === false ? '' : `;K8S_POD_UID=${p.uid}`}`,
    CNI_PATH: '/opt/cni/bin',
  };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function plugin(env: Record<string, string>, stdin: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(builtPlugin(), [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const kill = setTimeout(() => p.kill('SIGKILL'), PLUGIN_KILL_MS);
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code, stdout, stderr });
    });
    p.stdin.end(stdin);
  });
}

const show = (r: Run): string => `exit ${r.code}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;

function cniError(r: Run, code: number, msg: RegExp, details?: RegExp): { code: number; msg: string; details: string } {
  assert.notEqual(r.code, 0, show(r));
  const e = JSON.parse(r.stdout) as { cniVersion: string; code: number; msg: string; details: string };
  assert.equal(e.code, code, show(r));
  assert.match(e.msg, msg, show(r));
  if (details) assert.match(e.details, details, show(r));
  assert.match(r.stderr, /^meshlane-cni: /, show(r));
  return e;
}

const podState = (p: Pod) => agent!.status()?.pods.find((x) => x.ref.uid === p.uid);
const skipped = (p: Pod) => agent!.status()?.skipped.find((x) => x.ref.uid === p.uid);
const pinnedCookies = (): string[] => (dumpJson(agent!.bpffs).maps.pods as Array<{ netns_cookie: string | number }>).map((x) => String(x.netns_cookie));
const netnsLinks = (): string[] => dumpJson(agent!.bpffs).links.filter((l) => l.startsWith('netns/'));
/** status.json is published a moment after a change: wait for the pod's entry to say what we expect */
async function settled(p: Pod, ok: (st: ReturnType<typeof podState>) => boolean, what: string): Promise<NonNullable<ReturnType<typeof podState>>> {
  await waitFor(() => ok(podState(p)), 10_000, `pod ${p.name}: ${what}`);
  return podState(p)!;
}
const cookieOf = (p: Pod): string => native.netnsCookie(p.sp.netnsPath).toString();
const captured = (ip: string): RegExp =>
  new RegExp(`^proxy-outbound:15001 peer=${ip.replace(/\./g, '\\.')} orig=10\\.96\\.0\\.10:80 app-sees=10\\.96\\.0\\.10:80$`);

/** The runtime's next steps after ADD: the sandbox process, then the containers (here the proxy). */
async function startContainers(p: Pod): Promise<void> {
  await p.sp.startSandbox();
  const proxy = startProxy(p.sp);
  procs.push(proxy);
  await waitReady(proxy, `proxy of ${p.name}`);
}

async function startTheAgent(prior?: AgentRun): Promise<void> {
  agent = await startKubeAgent(sb, kubeconfig, NODE, 'cni-agent', prior, { args: ['--cni-pod-wait', String(POD_WAIT_S)] });
  await waitFor(() => agent!.status()?.health?.ready === true, 20_000, 'the agent ready');
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-cni-agent-'));
  sb = await Sandbox.create({ prefix: 'mlcn', cgroupDriver: 'systemd' });
  svc = await sb.addHost('svc', { ipv4: '10.244.0.200', extraV4: [SVC_V4, OTHER_V4] });
  const server = svc.spawn('node', [ENDPOINT(), 'serve', '--ports', '80', '--tag', 'svc']);
  procs.push(server);
  await waitReady(server, 'service server');
  api = await KubeApiServer.start();
  kubeconfig = api.writeKubeconfig(join(tmp, 'kubeconfig'));
  api.store.create('namespaces', namespaceObject('demo', { 'istio-injection': 'enabled' }) as KubeObject);
  api.store.create('namespaces', namespaceObject('plain', {}) as KubeObject);
  await startTheAgent();
});

after(async () => {
  await cleanupAgent(agent);
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await sb?.destroy();
  await api?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let web: Pod;

test("ADD of a captured pod: its netns is enrolled when ADD returns, then the pod's traffic is captured; status says via=cni", async () => {
  web = await makePod('demo', 'web');
  const cookiesBefore = pinnedCookies();
  const add = await plugin(runtimeEnv('ADD', web), config(web));
  assert.equal(add.code, 0, show(add));
  assert.deepEqual(JSON.parse(add.stdout), prevResult(web), 'the prevResult, passed through');
  // in place when ADD returns, before any process of the pod exists (the maps, read at once)
  const cookie = cookieOf(web);
  assert.ok(!cookiesBefore.includes(cookie));
  assert.ok(pinnedCookies().includes(cookie), 'the pods entry is in the map');
  assert.ok(
    netnsLinks().some((l) => l.endsWith(`/${cookie}`)),
    'the per-netns program is attached',
  );
  const st = await settled(web, (x) => x?.state === 'captured', 'captured in status');
  assert.equal(st.via, 'cni');
  assert.equal(st.netns?.how, 'cni');
  assert.equal(st.netnsCookie, cookie);
  assert.deepEqual(st.ips, [web.ip], "the prevResult's IP stands in while the API shows none");
  await startContainers(web);
  await settled(web, (x) => x?.ips.length === 1, 'still captured');
  assert.match(await runCase(web.sp, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` }), captured(web.ip));
  // kubelet reports the IP: the API's counts from now on, the pod stays captured in the same netns
  api.store.patch('pods', 'demo', 'web', 'application/merge-patch+json', { status: { phase: 'Running', podIP: web.ip, podIPs: [{ ip: web.ip }] } });
  await settled(web, (x) => x?.netns?.heldBy !== undefined || x?.netns?.pid !== undefined, 'the sandbox process seen');
  assert.equal(podState(web)?.netnsCookie, cookie);
  assert.equal(podState(web)?.via, 'cni');
  const text = cli(['status', '--state-dir', agent!.stateDir, '--bpffs', agent!.bpffs]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /demo\/web captured .*via=cni/);
});

test('CHECK: a captured pod in its netns passes; VERSION answers 1.0.0 and 0.4.0', async () => {
  const check = await plugin(runtimeEnv('CHECK', web), config(web));
  assert.equal(check.code, 0, show(check));
  assert.equal(check.stdout, '');
  const check04 = await plugin(runtimeEnv('CHECK', web), config(web, { cniVersion: '0.4.0' }));
  assert.equal(check04.code, 0, show(check04));
  for (const v of ['1.0.0', '0.4.0']) {
    const r = await plugin({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: v }));
    assert.equal(r.code, 0, show(r));
    const out = JSON.parse(r.stdout) as { cniVersion: string; supportedVersions: string[] };
    assert.equal(out.cniVersion, v);
    assert.ok(out.supportedVersions.includes('1.0.0') && out.supportedVersions.includes('0.4.0'));
  }
  // a 0.4.0 chain: ADD answers in 0.4.0
  const p = await makePod('demo', 'web04');
  const add = await plugin(runtimeEnv('ADD', p), config(p, { cniVersion: '0.4.0' }));
  assert.equal(add.code, 0, show(add));
  assert.equal((JSON.parse(add.stdout) as { cniVersion: string }).cniVersion, '0.4.0');
  assert.ok(pinnedCookies().includes(cookieOf(p)));
  await settled(p, (x) => x?.via === 'cni', 'via=cni');
});

test('ADD of a pod that is not captured returns the prevResult and enrolls nothing', async () => {
  const p = await makePod('plain', 'legacy');
  const before = pinnedCookies();
  const add = await plugin(runtimeEnv('ADD', p), config(p));
  assert.equal(add.code, 0, show(add));
  assert.deepEqual(JSON.parse(add.stdout), prevResult(p));
  assert.match(skipped(p)?.reason ?? '', /not labelled istio-injection=enabled/);
  assert.deepEqual(pinnedCookies().sort(), before.sort());
  assert.match(agent!.log(), /ADD for a pod that is not captured: passed through/);
  const check = await plugin(runtimeEnv('CHECK', p), config(p));
  assert.equal(check.code, 0, show(check));
});

test('ADD of a pod the API never shows fails after the wait (fail closed); nothing enrolled', async () => {
  const p = await makePod('demo', 'ghost', { inApi: false });
  const before = pinnedCookies();
  const add = await plugin(runtimeEnv('ADD', p), config(p));
  cniError(add, 11, /pod demo\/ghost is not known to the meshlane agent/, new RegExp(`within ${POD_WAIT_S} s.*fail closed`));
  assert.deepEqual(pinnedCookies().sort(), before.sort());
  // DEL for a pod nobody knows succeeds
  const del = await plugin(runtimeEnv('DEL', p), config(p));
  assert.equal(del.code, 0, show(del));
});

test("agent slow: the pod shows in the agent's source only after ADD started; ADD waits for it and succeeds", async () => {
  // the agent lags the API: its pod watch ends and the next one is held back while the pod is created
  const watchesPods = (r: { verb: string; resource: string }): boolean => r.verb === 'watch' && r.resource === 'pods';
  const hold = api.delay({ ms: 2500, count: 1, match: watchesPods });
  api.endWatches('graceful', watchesPods);
  await waitFor(() => hold.hits === 1, 10_000, 'the re-watch held back');
  const p = await makePod('demo', 'late');
  const logged = agent!.log().split('\n').length;
  const running = plugin(runtimeEnv('ADD', p, { uid: false }), config(p)); // an older runtime: no K8S_POD_UID
  await waitFor(
    () =>
      agent!
        .log()
        .split('\n')
        .slice(logged - 1)
        .some((l) => l.includes('ADD: waiting for the source') && l.includes('demo/late')),
    10_000,
    'the agent waiting for the pod',
  );
  assert.equal(podState(p), undefined, 'the agent did not know the pod when ADD came');
  const add = await running;
  assert.equal(add.code, 0, show(add));
  assert.ok(pinnedCookies().includes(cookieOf(p)));
  await settled(p, (x) => x?.state === 'captured' && x.via === 'cni', 'captured via cni');
});

test('DEL releases the pod (entries and netns link go) and succeeds; CHECK then fails; a second DEL succeeds', async () => {
  const cookie = podState(web)!.netnsCookie!;
  const del = await plugin(runtimeEnv('DEL', web), config(web));
  assert.equal(del.code, 0, show(del));
  assert.equal(del.stdout, '');
  assert.ok(!pinnedCookies().includes(cookie), 'the pods entry is gone');
  assert.ok(!netnsLinks().some((l) => l.endsWith(`/${cookie}`)), 'the netns link is gone');
  await settled(web, (x) => /torn down \(CNI DEL\)/.test(x?.reason ?? ''), 'pending: torn down');
  cniError(await plugin(runtimeEnv('CHECK', web), config(web)), 100, /is not captured in CNI_NETNS/);
  const again = await plugin(runtimeEnv('DEL', web), config(web));
  assert.equal(again.code, 0, show(again));
  // DEL without CNI_NETNS (the netns gone already) for a pod never added
  const { CNI_NETNS: _n, ...noNetns } = runtimeEnv('DEL', web);
  const gone = await plugin(noNetns, config(web));
  assert.equal(gone.code, 0, show(gone));
});

test('agent down: ADD and CHECK fail with a clear message, DEL succeeds (stopped: no socket; killed: a stale socket)', async () => {
  const p = await makePod('demo', 'down');
  await stopAgent(agent, 'SIGTERM');
  cniError(await plugin(runtimeEnv('ADD', p), config(p)), 11, /meshlane agent unreachable/, /no such file .*is the meshlane agent running/);
  cniError(await plugin(runtimeEnv('CHECK', p), config(p)), 11, /meshlane agent unreachable/);
  assert.equal((await plugin(runtimeEnv('DEL', p), config(p))).code, 0);
  await startTheAgent(agent);
  await stopAgent(agent, 'SIGKILL');
  cniError(await plugin(runtimeEnv('ADD', p), config(p)), 11, /meshlane agent unreachable/, /connection refused/);
  assert.equal((await plugin(runtimeEnv('DEL', p), config(p))).code, 0);
  // a new agent takes the stale socket over and serves
  await startTheAgent(agent);
  const add = await plugin(runtimeEnv('ADD', p), config(p));
  assert.equal(add.code, 0, show(add));
  assert.ok(pinnedCookies().includes(cookieOf(p)));
  await settled(p, (x) => x?.via === 'cni', 'via=cni');
});

for (const family of [4, 6] as const) {
  test(`Istio's istio-validation (uid 1337) in a pod started through CNI ADD passes on its first dial, IPv${family}`, async () => {
    const p = await makePod('demo', `validation${family}`, { ipv6: family === 6 });
    const add = await plugin(runtimeEnv('ADD', p), config(p));
    assert.equal(add.code, 0, show(add));
    await p.sp.startSandbox();
    // the init container: the first container of the pod, before the sidecar
    const r = await p.sp.exec('/usr/bin/python3', [VALIDATOR(), '--timeout', '20', ...(family === 6 ? ['--v6'] : [])], {
      uid: PROXY,
      gid: PROXY,
      container: 'istio-validation',
      timeoutMs: 40_000,
    });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    assert.equal(r.code, 0, `validation failed:\n${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(last) as { passed: boolean; dials: number; listener: string; errors: string[] };
    assert.equal(out.passed, true);
    assert.equal(out.dials, 1, `passed only on dial ${out.dials}: ${out.errors.join('; ')}`);
    assert.match(r.stdout, /validation passed/);
    assert.equal(out.listener, family === 6 ? '[::1]:15006' : '127.0.0.1:15006', 'the inbound capture port took it, as under istio-iptables');
  });
}

test('a CNI socket the agent may not serve fails the start with one line and exit 2, before anything is pinned', async () => {
  const bpffs = '/sys/fs/bpf/meshlane-test-cni-bad';
  const file = join(tmp, 'not-a-socket');
  writeFileSync(file, 'x');
  const args = (socket: string, wait = '5'): string[] => [
    'agent',
    // no metrics endpoint unless a test asks for one (a later --metrics-address wins): agents never share a port
    '--metrics-address',
    'off',
    '--kubeconfig',
    kubeconfig,
    '--node-name',
    NODE,
    '--cgroup-root',
    sb.cgroupRoot,
    '--bpffs',
    bpffs,
    '--state-dir',
    join(tmp, 'bad-state'),
    '--cni-socket',
    socket,
    '--cni-pod-wait',
    wait,
  ];
  try {
    for (const [socket, wait, want] of [
      [file, '5', /^meshlane: .*not-a-socket exists and is not a socket; meshlane does not remove it: remove it or pass another --cni-socket$/],
      [agent!.cniSocket, '5', /^meshlane: another process serves .*cni\.sock \(a second meshlane agent\?\): stop it or pass another --cni-socket$/],
      ['relative.sock', '5', /^meshlane: the CNI socket path relative\.sock is not absolute: pass an absolute --cni-socket$/],
      [join(tmp, 'ok.sock'), '0', /^meshlane: --cni-pod-wait 0 is not a whole number of seconds from 1 to 20: pass e\.g\. --cni-pod-wait 10$/],
    ] as const) {
      const r = cli(args(socket, wait));
      assert.equal(r.code, 2, `${socket}: ${r.stdout}${r.stderr}`);
      const lines = r.stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('{')); // JSON log lines may precede it
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, want);
      assert.ok(!existsSync(bpffs) || readdirSync(bpffs).length === 0, `pins made: ${existsSync(bpffs) ? readdirSync(bpffs).join(' ') : ''}`);
    }
    assert.equal(readFileSync(file, 'utf8'), 'x', 'the file is left alone');
    // the running agent still serves
    const p = await makePod('demo', 'after-bad');
    assert.equal((await plugin(runtimeEnv('ADD', p), config(p))).code, 0);
  } finally {
    rmSync(bpffs, { recursive: true, force: true });
  }
});
