// The sandbox itself: netns plumbing, kubelet cgroup layout, process placement, and complete cleanup.
// Needs root. Traffic stays inside network namespaces this test creates.

import assert from 'node:assert/strict';
import { execFile as execFileCb, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { Sandbox, type SandboxMember } from '../../src/sandbox/sandbox.js';
import { skipUnless, whyMissing } from '../support/features.js';

const execFile = promisify(execFileCb);
const ENDPOINT = fileURLToPath(new URL('../../src/sandbox/endpoint.js', import.meta.url));
const ADDON_BUILT = whyMissing('addon') === undefined;

/** Spawn `endpoint.js serve|proxy ...` and wait for its "ready" line. */
async function startEndpoint(m: SandboxMember, args: string[], opts: { uid?: number; container?: string } = {}): Promise<ChildProcess> {
  const child = m.spawn(process.execPath, [ENDPOINT, ...args], opts);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`endpoint ${args.join(' ')} not ready: ${err}`)), 10_000);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.split('\n').includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`endpoint exited (${code}): ${err}`));
    });
  });
  return child;
}

interface ConnectResult {
  ok: boolean;
  error?: string;
  local?: string;
  reply?: { tag: string; port: number; local: string; peer: string; orig: { address?: string; port?: number; error?: string } };
}

async function connect(m: SandboxMember, to: string, extra: string[] = [], uid = 1000): Promise<ConnectResult> {
  const r = await m.exec(process.execPath, [ENDPOINT, 'connect', '--to', to, '--timeout', '2000', ...extra], { uid, timeoutMs: 10_000 });
  assert.equal(r.code, 0, `connect ${to}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `one JSON line, got: ${r.stdout}`);
  return JSON.parse(lines[0]!) as ConnectResult;
}

function assertNotCaptured(orig: { error?: string } | undefined): void {
  assert.ok(orig !== undefined);
  const allowed = ADDON_BUILT ? ['ENOENT', 'ENOPROTOOPT'] : ['ENOENT', 'ENOPROTOOPT', 'ENOADDON'];
  assert.ok(orig.error !== undefined && allowed.includes(orig.error), `orig: ${JSON.stringify(orig)}`);
}

async function netnsNames(): Promise<string[]> {
  const { stdout } = await execFile('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Wait until a spawned process has exec'd its final command (placement is done by then). */
async function waitComm(pid: number, comm: string): Promise<void> {
  const end = Date.now() + 5000;
  while (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== comm) {
    if (Date.now() > end) throw new Error(`pid ${pid} never became ${comm}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function procCgroup(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  assert.ok(line, `no cgroup v2 line for ${pid}`);
  return line.slice(3);
}

function procIds(pid: number): { uid: string; gid: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? '';
  return { uid: field('Uid'), gid: field('Gid') };
}

function sameNetns(pid: number, netns: string): boolean {
  return statSync(`/proc/${pid}/ns/net`).ino === statSync(`/run/netns/${netns}`).ino;
}

if (!ADDON_BUILT) console.error('native addon not built: orig may be ENOADDON');

for (const driver of ['systemd', 'cgroupfs'] as const) {
  test(`sandbox with the ${driver} cgroup driver: pods, a host, placement and cleanup`, { timeout: 90_000 }, async (t) => {
    const prefix = driver === 'systemd' ? 'mlsbs' : 'mlsbc';
    const sb = await Sandbox.create({ prefix, cgroupDriver: driver });
    t.after(() => sb.destroy());

    assert.equal(sb.cgroupRoot, join(sb.cgroup2Mount, prefix));
    assert.equal(sb.nodeNetns, `${prefix}-node`);
    const layout =
      driver === 'systemd'
        ? ['kubepods.slice/kubepods-besteffort.slice', 'kubepods.slice/kubepods-burstable.slice']
        : ['kubepods/besteffort', 'kubepods/burstable'];
    for (const d of layout) assert.ok(statSync(join(sb.cgroupRoot, d)).isDirectory(), d);

    const podA = await sb.addPod({
      namespace: 'default',
      name: 'client',
      uid: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
      ipv4: '10.244.0.11',
      ipv6: 'fd00:244::11',
    });
    const podB = await sb.addPod({
      namespace: 'default',
      name: 'server',
      uid: '6fa459ea-ee8a-3ca4-894e-db77e160355e',
      qos: 'Guaranteed',
      ipv4: '10.244.0.12',
      ipv6: 'fd00:244::12',
    });
    const host = await sb.addHost('remote', {
      ipv4: '10.244.0.100',
      ipv6: 'fd00:244::100',
      extraV4: ['10.96.0.10'],
      extraV6: ['fd00:96::10'],
    });
    for (const n of [podA.netns, podB.netns, host.netns, sb.nodeNetns]) assert.ok(n.length <= 15, n);

    const uidA = '1b4e28ba_2fa1_11d2_883f_0016d3cca427';
    const expectedA =
      driver === 'systemd'
        ? `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uidA}.slice`
        : 'kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427';
    const expectedB =
      driver === 'systemd' ? 'kubepods.slice/kubepods-pod6fa459ea_ee8a_3ca4_894e_db77e160355e.slice' : 'kubepods/pod6fa459ea-ee8a-3ca4-894e-db77e160355e';
    assert.equal(podA.cgroupDir, join(sb.cgroupRoot, expectedA));
    assert.equal(podB.cgroupDir, join(sb.cgroupRoot, expectedB));
    assert.ok(statSync(podA.cgroupDir).isDirectory());

    await startEndpoint(podB, ['serve', '--ports', '8080,9090', '--tag', 'app-b'], { uid: 1000 });
    await startEndpoint(host, ['serve', '--ports', '80', '--tag', 'remote']); // root: port 80

    await t.test('pod to pod, v4 and v6: the peer is the client pod, nothing captured', async () => {
      const v4 = await connect(podA, '10.244.0.12:8080');
      assert.equal(v4.ok, true, JSON.stringify(v4));
      assert.equal(v4.reply?.tag, 'app-b');
      assert.equal(v4.reply?.port, 8080);
      assert.equal(v4.reply?.local, '10.244.0.12');
      assert.equal(v4.reply?.peer, '10.244.0.11');
      assert.match(v4.local ?? '', /^10\.244\.0\.11:\d+$/);
      assertNotCaptured(v4.reply?.orig);

      const v6 = await connect(podA, '[fd00:244::12]:9090');
      assert.equal(v6.ok, true, JSON.stringify(v6));
      assert.equal(v6.reply?.port, 9090);
      assert.equal(v6.reply?.local, 'fd00:244::12');
      assert.equal(v6.reply?.peer, 'fd00:244::11');
      assert.match(v6.local ?? '', /^\[fd00:244::11\]:\d+$/);
      assertNotCaptured(v6.reply?.orig);
    });

    await t.test('pod to the Service-VIP stand-in on the host, through the node', async () => {
      const v4 = await connect(podA, '10.96.0.10:80');
      assert.equal(v4.ok, true, JSON.stringify(v4));
      assert.equal(v4.reply?.tag, 'remote');
      assert.equal(v4.reply?.local, '10.96.0.10');
      assert.equal(v4.reply?.peer, '10.244.0.11');
      assertNotCaptured(v4.reply?.orig);

      const v6 = await connect(podA, '[fd00:96::10]:80');
      assert.equal(v6.ok, true, JSON.stringify(v6));
      assert.equal(v6.reply?.local, 'fd00:96::10');
      assert.equal(v6.reply?.peer, 'fd00:244::11');
    });

    await t.test('host and node reach pods; refused and passthrough sources', async () => {
      const fromHost = await connect(host, '10.244.0.12:8080');
      assert.equal(fromHost.reply?.peer, '10.244.0.100');
      const fromNode = await connect(sb.node, '[fd00:244::12]:8080');
      assert.equal(fromNode.reply?.peer, 'fd00:244::1');
      assert.deepEqual(await connect(podA, '10.244.0.12:7777'), { ok: false, error: 'ECONNREFUSED' });
      // the proxy's inbound passthrough sources are bindable inside a pod
      const p4 = await connect(podB, '10.244.0.12:8080', ['--from', '127.0.0.6']);
      assert.equal(p4.reply?.peer, '127.0.0.6');
      const p6 = await connect(podB, '[fd00:244::12]:8080', ['--from', '::6']);
      assert.equal(p6.reply?.peer, '::6');
    });

    await t.test('processes are placed in the container cgroup, netns and ids', async () => {
      const proxy = podA.spawn('sleep', ['30'], { uid: 1337, container: 'istio-proxy' });
      await waitComm(proxy.pid!, 'sleep');
      assert.equal(procCgroup(proxy.pid!), podA.containerCgroup('istio-proxy').slice(sb.cgroup2Mount.length));
      const leaf = podA.containerCgroup('istio-proxy').split('/').pop()!;
      assert.match(leaf, driver === 'systemd' ? /^cri-containerd-[0-9a-f]{64}\.scope$/ : /^[0-9a-f]{64}$/);
      assert.deepEqual(procIds(proxy.pid!), { uid: '1337', gid: '1337' });
      assert.ok(sameNetns(proxy.pid!, podA.netns));
      assert.notEqual(podA.containerCgroup('app'), podA.containerCgroup('istio-proxy'));

      const hostProc = host.spawn('sleep', ['30']);
      await waitComm(hostProc.pid!, 'sleep');
      assert.equal(procCgroup(hostProc.pid!), `/${prefix}/hosts/remote`);
      assert.ok(sameNetns(hostProc.pid!, host.netns));

      const ids = await podB.exec('sh', ['-c', 'id -u; id -g; id -G; grep ^0:: /proc/self/cgroup'], { uid: 1000, gid: 1337 });
      assert.equal(ids.code, 0, ids.stderr);
      const [u, g, groups, cg] = ids.stdout.trim().split('\n');
      assert.equal(u, '1000');
      assert.equal(g, '1337');
      assert.equal(groups, '1337');
      assert.equal(cg, `0::${podB.containerCgroup('app').slice(sb.cgroup2Mount.length)}`);

      const gidOnly = await podB.exec('id', ['-u'], { gid: 1337 });
      assert.equal(gidOnly.stdout.trim(), '0');
      const failing = await podB.exec('sh', ['-c', 'exit 3']);
      assert.equal(failing.code, 3);
    });

    await t.test('proxy --forward behind iptables REDIRECT rules (what istio-iptables would do)', { skip: skipUnless('addon') }, async () => {
      const podC = await sb.addPod({
        namespace: 'default',
        name: 'meshed',
        uid: 'c0ffee00-0000-4000-8000-000000000001',
        qos: 'Burstable',
        ipv4: '10.244.0.13',
        ipv6: 'fd00:244::13',
      });
      await startEndpoint(podC, ['serve', '--ports', '8080', '--tag', 'app-c'], { uid: 1000 });
      const proxy = await startEndpoint(podC, ['proxy', '--forward'], { uid: 1337, container: 'istio-proxy' });
      const log: Array<Record<string, unknown>> = [];
      let buf = '';
      proxy.stdout?.on('data', (d: string) => {
        buf += d;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.startsWith('{')) log.push(JSON.parse(line) as Record<string, unknown>);
        }
      });
      for (const cmd of ['iptables', 'ip6tables']) {
        for (const rule of [
          ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', '15006'],
          ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '80', '-m', 'owner', '!', '--uid-owner', '1337', '-j', 'REDIRECT', '--to-ports', '15001'],
        ]) {
          const r = await podC.exec(cmd, rule);
          assert.equal(r.code, 0, `${cmd} ${rule.join(' ')}: ${r.stderr}`);
        }
      }

      const inbound = await connect(podA, '10.244.0.13:8080');
      assert.equal(inbound.reply?.tag, 'app-c', JSON.stringify(inbound));
      assert.equal(inbound.reply?.peer, '127.0.0.6');
      // Not redirected, but conntrack is active in this netns (nat rules exist), so SO_ORIGINAL_DST answers
      // with the un-translated destination instead of ENOENT: that is what the kernel does under iptables.
      assert.deepEqual(inbound.reply?.orig, { address: '10.244.0.13', port: 8080 });
      const inbound6 = await connect(podA, '[fd00:244::13]:8080');
      assert.equal(inbound6.reply?.peer, '::6', JSON.stringify(inbound6));

      const outbound = await connect(podC, '10.96.0.10:80');
      assert.equal(outbound.reply?.tag, 'remote', JSON.stringify(outbound));
      assert.equal(outbound.reply?.peer, '10.244.0.13');
      const outbound6 = await connect(podC, '[fd00:96::10]:80');
      assert.equal(outbound6.reply?.peer, 'fd00:244::13', JSON.stringify(outbound6));

      await new Promise((r) => setTimeout(r, 50));
      const seen = log.map((l) => [l.tag, l.peer, JSON.stringify(l.orig)]);
      assert.deepEqual(seen, [
        ['proxy-inbound', '10.244.0.11', JSON.stringify({ address: '10.244.0.13', port: 8080 })],
        ['proxy-inbound', 'fd00:244::11', JSON.stringify({ address: 'fd00:244::13', port: 8080 })],
        ['proxy-outbound', '10.244.0.13', JSON.stringify({ address: '10.96.0.10', port: 80 })],
        ['proxy-outbound', 'fd00:244::13', JSON.stringify({ address: 'fd00:96::10', port: 80 })],
      ]);
    });

    // explicit destroy so the result can be checked (t.after's destroy is then a no-op)
    const errors = await sb.destroy();
    assert.deepEqual(errors, []);
    const left = (await netnsNames()).filter((n) => n.startsWith(`${prefix}-`));
    assert.deepEqual(left, []);
    assert.equal(existsSync(sb.cgroupRoot), false);
    await assert.rejects(sb.addPod({ namespace: 'x', name: 'y', uid: 'z', ipv4: '10.244.0.50' }));
  });
}

test('create removes the leftovers of an earlier run with the same prefix', { timeout: 60_000 }, async (t) => {
  const first = await Sandbox.create({ prefix: 'mlsbl' });
  t.after(() => first.destroy());
  const pod = await first.addPod({ namespace: 'ns', name: 'p', uid: 'aaaa-bbbb', qos: 'Burstable', ipv4: '10.244.0.21' });
  const sleeper = pod.spawn('sleep', ['60']);
  await waitComm(sleeper.pid!, 'sleep');
  const exited = new Promise((r) => sleeper.once('exit', r));

  const second = await Sandbox.create({ prefix: 'mlsbl', cgroupDriver: 'cgroupfs' });
  t.after(() => second.destroy());
  await exited;
  assert.ok(!(await netnsNames()).includes(pod.netns), 'the old pod netns is gone');
  assert.ok(!existsSync(pod.cgroupDir), 'the old pod cgroup is gone');
  assert.ok(existsSync(join(second.cgroupRoot, 'kubepods/burstable')));
  assert.deepEqual(await second.destroy(), []);
  assert.deepEqual(await first.destroy(), []);
  assert.equal(existsSync(second.cgroupRoot), false);
  assert.deepEqual(
    (await netnsNames()).filter((n) => n.startsWith('mlsbl-')),
    [],
  );
});

test('two linked sandboxes: pods reach each other with their own addresses; destroying either removes the link', { timeout: 60_000 }, async (t) => {
  const one = await Sandbox.create({ prefix: 'mlsb1' });
  t.after(() => one.destroy());
  const two = await Sandbox.create({ prefix: 'mlsb2', podCIDRs: { ipv4: '10.244.1.0/24', ipv6: 'fd00:244:1::/64' } });
  t.after(() => two.destroy());
  assert.deepEqual([one.node.ipv4, one.node.ipv6], ['10.244.0.1', 'fd00:244::1']);
  assert.deepEqual([two.node.ipv4, two.node.ipv6], ['10.244.1.1', 'fd00:244:1::1']);
  await assert.rejects(two.addPod({ namespace: 'x', name: 'y', uid: 'zz', ipv4: '10.244.0.30' }), /must be in 10\.244\.1\.0\/24/);
  await assert.rejects(two.addPod({ namespace: 'x', name: 'y', uid: 'zz', ipv4: '10.244.1.30', ipv6: 'fd00:244::30' }), /must be in fd00:244:1::\/64/);
  await assert.rejects(one.link(one), /itself/);

  const a = await one.addPod({ namespace: 'default', name: 'a', uid: '0a0a0a0a-1111-4000-8000-000000000001', ipv4: '10.244.0.21', ipv6: 'fd00:244::21' });
  const b = await two.addPod({ namespace: 'default', name: 'b', uid: '0b0b0b0b-2222-4000-8000-000000000002', ipv4: '10.244.1.21', ipv6: 'fd00:244:1::21' });
  await startEndpoint(a, ['serve', '--ports', '8080', '--tag', 'app-a'], { uid: 1000 });
  await startEndpoint(b, ['serve', '--ports', '8080', '--tag', 'app-b'], { uid: 1000 });
  // no route between the nodes before the link
  assert.equal((await connect(a, '10.244.1.21:8080')).ok, false);

  await one.link(two);
  const v4 = await connect(a, '10.244.1.21:8080');
  assert.deepEqual([v4.reply?.tag, v4.reply?.local, v4.reply?.peer], ['app-b', '10.244.1.21', '10.244.0.21'], JSON.stringify(v4));
  assertNotCaptured(v4.reply?.orig);
  const v6 = await connect(a, '[fd00:244:1::21]:8080');
  assert.deepEqual([v6.reply?.tag, v6.reply?.local, v6.reply?.peer], ['app-b', 'fd00:244:1::21', 'fd00:244::21'], JSON.stringify(v6));
  const back4 = await connect(b, '10.244.0.21:8080');
  assert.deepEqual([back4.reply?.tag, back4.reply?.peer], ['app-a', '10.244.1.21'], JSON.stringify(back4));
  const back6 = await connect(b, '[fd00:244::21]:8080');
  assert.deepEqual([back6.reply?.tag, back6.reply?.peer], ['app-a', 'fd00:244:1::21'], JSON.stringify(back6));

  // the second node goes first: the first one keeps neither its end of the link nor the routes over it
  assert.deepEqual(await two.destroy(), []);
  const { stdout: links } = await execFile('ip', ['-n', one.nodeNetns, '-o', 'link', 'show']);
  assert.doesNotMatch(links, /ln-mlsb2/);
  const { stdout: routes } = await execFile('ip', ['-n', one.nodeNetns, 'route', 'show', '10.244.1.0/24']);
  assert.equal(routes.trim(), '');
  const { stdout: routes6 } = await execFile('ip', ['-n', one.nodeNetns, '-6', 'route', 'show', 'fd00:244:1::/64']);
  assert.equal(routes6.trim(), '');
  assert.deepEqual(await one.destroy(), []);
  assert.deepEqual(
    (await netnsNames()).filter((n) => /^mlsb[12]-/.test(n)),
    [],
  );
});
