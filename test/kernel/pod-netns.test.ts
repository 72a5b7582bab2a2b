// A captured pod's network namespace as the agent prepares it (src/dataplane/pod-netns.ts), on real
// sandbox pods: ::6/128 on lo for a pod with IPv6 (istio-iptables' configureIPv6Addresses), and the
// source routing that gives a socket carrying meshlane's source mark the pod IP as the source of
// 127.0.0.1 / ::1. Read back with `ip -j`, and exercised with real sockets (python3 sets the mark
// itself here, as the connect hook does in outbound-parity). Idempotent; every family only with an
// address of it. Needs root; under the kernel lock.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile as execFileCb } from 'node:child_process';
import { promisify } from 'node:util';
import { Sandbox, type SandboxPod } from '../../src/sandbox/sandbox.js';
import { ensurePassthroughAddress, ensurePodNetns, ensureSourceRouting, LOCAL_RULE_PRIORITY } from '../../src/dataplane/pod-netns.js';
import { SourceRouting } from '../../src/dataplane/layouts.js';
import { BpfError } from '../../src/native/errors.js';

const execFile = promisify(execFileCb);
const DUAL = { ipv4: '10.244.0.40', ipv6: 'fd00:244::40' };
const V4ONLY = { ipv4: '10.244.0.41' };

let sb: Sandbox | undefined;
after(async () => {
  await sb?.destroy();
});

const nsPath = (p: SandboxPod): string => `/run/netns/${p.netns}`;
const ipJson = async <T>(p: SandboxPod, ...args: string[]): Promise<T> =>
  JSON.parse((await execFile('ip', ['-j', '-n', p.netns, ...args])).stdout || '[]') as T;

interface RuleRow {
  priority: number;
  table: string;
  fwmark?: string;
}
/** `ip rule` as [priority, table, fwmark] rows */
async function rules(p: SandboxPod, family: '-4' | '-6'): Promise<string[]> {
  const rows = await ipJson<RuleRow[]>(p, family, 'rule', 'show');
  return rows.map((r) => `${r.priority} ${r.fwmark ? `fwmark ${r.fwmark} ` : ''}lookup ${r.table}`);
}

interface RouteRow {
  type?: string;
  dst: string;
  dev: string;
  prefsrc?: string;
}
async function sourceTable(p: SandboxPod, family: '-4' | '-6'): Promise<string[]> {
  const rows = await ipJson<RouteRow[]>(p, family, 'route', 'show', 'table', String(SourceRouting.TABLE));
  return rows.map((r) => `${r.type ?? 'unicast'} ${r.dst} dev ${r.dev} src ${r.prefsrc}`);
}

interface AddrRow {
  addr_info: Array<{ local: string; prefixlen: number; scope: string }>;
}
async function loV6(p: SandboxPod): Promise<string[]> {
  const rows = await ipJson<AddrRow[]>(p, '-6', 'addr', 'show', 'dev', 'lo');
  return rows.flatMap((r) => r.addr_info.map((a) => `${a.local}/${a.prefixlen} ${a.scope}`)).sort();
}

const MARK = `0x${SourceRouting.MARK.toString(16)}`;
const v4Rules = [`0 fwmark ${MARK} lookup ${SourceRouting.TABLE}`, `${LOCAL_RULE_PRIORITY} lookup local`, '32766 lookup main', '32767 lookup default'];
const v6Rules = [`0 fwmark ${MARK} lookup ${SourceRouting.TABLE}`, `${LOCAL_RULE_PRIORITY} lookup local`, '32766 lookup main'];

/** A TCP connection to a listener on 127.0.0.1 / ::1 in the pod from a socket bound to the wildcard
 * address first, with the source mark set or not: the app's address and the peer the listener saw. */
const PY = `
import socket, sys
fam = socket.AF_INET if sys.argv[1] == '4' else socket.AF_INET6
lo, anyaddr = ('127.0.0.1', '0.0.0.0') if fam == socket.AF_INET else ('::1', '::')
srv = socket.socket(fam); srv.bind((lo, 0)); srv.listen()
c = socket.socket(fam); c.bind((anyaddr, 0))
if sys.argv[2] != '0': c.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[2]))
c.connect((lo, srv.getsockname()[1])); a, peer = srv.accept()
print(c.getsockname()[0], peer[0])
`;
async function boundConnect(p: SandboxPod, family: 4 | 6, mark: number): Promise<string> {
  const r = await p.exec('python3', ['-c', PY, String(family), String(mark)], { timeoutMs: 10_000 });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

test('a dual-stack pod: ::6 on lo, the source rule ahead of the moved local rule, the loopback routes with the pod IPs as source', async () => {
  sb = await Sandbox.create({ prefix: 'mlpn' });
  const pod = await sb.addPod({ namespace: 'demo', name: 'dual', uid: '0c1e3a5b-7d9f-4b2a-8c6e-1f3a5b7d9e20', ...DUAL, passthroughV6: false });
  const v4only = await sb.addPod({ namespace: 'demo', name: 'v4only', uid: '1d2f4b6c-8e0a-4c3b-9d7f-2a4c6e8f0a31', ...V4ONLY });

  assert.ok(!(await loV6(pod)).some((a) => a.startsWith('::6/')), 'no ::6 before');
  assert.deepEqual(await rules(pod, '-4'), ['0 lookup local', '32766 lookup main', '32767 lookup default'], 'the kernel defaults before');
  assert.equal(await boundConnect(pod, 4, SourceRouting.MARK), '127.0.0.1 127.0.0.1', 'without the routing the mark changes nothing');

  assert.deepEqual(ensurePodNetns(nsPath(pod), { ip4: DUAL.ipv4, ip6: DUAL.ipv6 }), { addedPassthrough: true });
  assert.deepEqual(await loV6(pod), ['::1/128 host', '::6/128 global'], '::6/128 as `ip -6 addr add ::6/128 dev lo` adds it');
  assert.deepEqual(await rules(pod, '-4'), v4Rules);
  assert.deepEqual(await rules(pod, '-6'), v6Rules);
  assert.deepEqual(await sourceTable(pod, '-4'), [`local 127.0.0.1 dev lo src ${DUAL.ipv4}`]);
  assert.deepEqual(await sourceTable(pod, '-6'), [`local ::1 dev lo src ${DUAL.ipv6}`]);

  // what it is for: a marked socket bound to the wildcard address gets the pod IP; others are as before
  assert.equal(await boundConnect(pod, 4, SourceRouting.MARK), `${DUAL.ipv4} ${DUAL.ipv4}`);
  assert.equal(await boundConnect(pod, 6, SourceRouting.MARK), `${DUAL.ipv6} ${DUAL.ipv6}`);
  assert.equal(await boundConnect(pod, 4, 0), '127.0.0.1 127.0.0.1');
  assert.equal(await boundConnect(pod, 6, 0), '::1 ::1');
  assert.equal(await boundConnect(pod, 4, SourceRouting.MARK + 1), '127.0.0.1 127.0.0.1', 'another mark: not ours');

  // idempotent: nothing doubles, ::6 is reported as present
  assert.deepEqual(ensurePodNetns(nsPath(pod), { ip4: DUAL.ipv4, ip6: DUAL.ipv6 }), { addedPassthrough: false });
  assert.equal(ensurePassthroughAddress(nsPath(pod)), false);
  ensureSourceRouting(nsPath(pod), { ip4: DUAL.ipv4, ip6: DUAL.ipv6 });
  assert.deepEqual(await rules(pod, '-4'), v4Rules);
  assert.deepEqual(await rules(pod, '-6'), v6Rules);
  assert.deepEqual(await sourceTable(pod, '-4'), [`local 127.0.0.1 dev lo src ${DUAL.ipv4}`]);
  assert.deepEqual(await loV6(pod), ['::1/128 host', '::6/128 global']);

  // an IPv4-only pod: IPv4 only; its IPv6 rules and lo stay the kernel's
  assert.deepEqual(ensurePodNetns(nsPath(v4only), { ip4: V4ONLY.ipv4 }), { addedPassthrough: false });
  assert.deepEqual(await rules(v4only, '-4'), v4Rules);
  assert.deepEqual(await rules(v4only, '-6'), ['0 lookup local', '32766 lookup main']);
  assert.deepEqual(await loV6(v4only), ['::1/128 host']);
  assert.equal(await boundConnect(v4only, 4, SourceRouting.MARK), `${V4ONLY.ipv4} ${V4ONLY.ipv4}`);
});

test('failures: a namespace that is not there, a source the pod does not have (refused before any rule moves)', async () => {
  assert.throws(
    () => ensurePodNetns('/run/netns/meshlane-test-no-such-netns', { ip4: '10.244.0.99' }),
    (e: unknown) => e instanceof BpfError && e.code === 'ENOENT' && e.syscall === 'open' && /meshlane-test-no-such-netns/.test(e.message),
  );
  const v4only = sb!.listPods().find((p) => p.ipv4 === V4ONLY.ipv4)!;
  // the route comes first: the kernel refuses a preferred source the namespace does not have, and the
  // rules are left as they were
  assert.throws(
    () => ensureSourceRouting(nsPath(v4only), { ip6: 'fd00:244::99' }),
    (e: unknown) => e instanceof BpfError && e.syscall === 'netlink' && /request 0 in network namespace/.test(e.message),
  );
  assert.deepEqual(await rules(v4only, '-6'), ['0 lookup local', '32766 lookup main']);
});
