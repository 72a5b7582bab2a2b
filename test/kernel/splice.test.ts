// Same-node socket splicing (sk_msg on sock_pairs) against the real kernel, byte-exact. Two captured
// pods on one sandbox node, each with an Envoy-like forwarding proxy: the app of pod A sends to pod B's
// IP (app -> proxy A on 15001 over lo, proxy A -> pod B over the bridge, steered to proxy B's 15006,
// proxy B -> the server from 127.0.0.6 over lo: every hop is local) and to a service VIP on a host that
// is not a pod (app -> proxy spliced, proxy -> VIP not). Every scenario runs three times: with the
// default agent (splicing on, bounded at 4 MiB per direction: fast transfers may fall back to TCP midway),
// with a budget so large that nothing falls back (--splice-budget 1GiB: the redirect path alone), and
// OFF (`meshlane agent --no-splice` on the same pins), and checks sha256 of every byte moved: large
// transfers both ways, 60 concurrent connections, a slow reader with odd-sized partial reads, half-close,
// a reset, a server killed mid-stream (the client sees an error or EOF with an exact prefix, never a
// silent corruption), sock_pairs holding entries only when on, and lo carrying the bytes only when off.
// With splicing on, the agent is SIGKILLed and restarted in the middle of transfers: no byte is lost.
// The bound itself (slow readers, fallbacks, leaving sock_pairs) is test/kernel/splice-bound.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { uninstall } from '../../src/dataplane/dataplane.js';
import { streamSha } from '../support/transfer.js';
import { POD_V4, SVC_V4, cleanupAgent, dumpJson, stopAgent } from '../support/harness.js';
import { B_V4, B_V6, MiB, SpliceWorld, assertAllOk } from '../support/splice.js';

const PORT = 9000;
const KILL_PORT = 9001;
const BPFFS = '/sys/fs/bpf/meshlane-test-splice';

let w: SpliceWorld;

/** The bytes seen are exactly the first `n` bytes of the stream: a loss or corruption shows here. */
function assertPrefix(seed: number, n: number, sha: unknown, what: string): void {
  assert.equal(sha, streamSha(seed, n), `${what}: the ${n} bytes seen are not the stream's first ${n} bytes`);
}

before(async () => {
  w = await SpliceWorld.create('mlsp', BPFFS, { b: ['b', [PORT]], kill: ['b', [KILL_PORT]], svc: ['svc', [PORT]] });
  await w.startAgent([]); // the default: splicing on, bounded
});

after(async () => {
  await cleanupAgent(w?.agent);
  uninstall(BPFFS); // also when the agent never started
  await w?.destroy();
});

const toB = `${B_V4}:${PORT}`;

/** bounded: the default agent; wide: nothing falls back (--splice-budget 1GiB); off: --no-splice. */
function scenarios(mode: 'bounded' | 'wide' | 'off'): void {
  const on = mode !== 'off';

  test(`splice ${mode}: 32 MiB each way to a pod on the node, 16 MiB to a VIP, IPv6; lo carries the bytes only when off`, async (t) => {
    const lo0 = await w.loBytes();
    const c0 = w.counters();
    const [up, down, vip, v6] = await Promise.all([
      w.client(toB, ['--mode', 'sink', '--bytes', String(32 * MiB), '--seed', '11', '--id', `${mode}-up`]),
      w.client(toB, ['--mode', 'source', '--bytes', String(32 * MiB), '--seed', '12', '--id', `${mode}-down`]),
      w.client(`${SVC_V4}:${PORT}`, ['--mode', 'echo', '--bytes', String(16 * MiB), '--seed', '13', '--id', `${mode}-vip`]),
      w.client(`[${B_V6}]:${PORT}`, ['--mode', 'sink', '--bytes', String(8 * MiB), '--seed', '14', '--id', `${mode}-v6`]),
    ]);
    assertAllOk(up, 'upload');
    assertAllOk(down, 'download');
    assertAllOk(vip, 'echo through the VIP');
    assertAllOk(v6, 'IPv6 upload');
    const lo = (await w.loBytes()) - lo0;
    const c = w.counters();
    const moved = 32 * MiB * 2 + 16 * MiB * 2 + 8 * MiB;
    t.diagnostic(`lo carried ${lo} of ${moved} bytes; fallbacks ${c.splice_fallback! - c0.splice_fallback!}, followed ${c.splice_fallback_peer! - c0.splice_fallback_peer!}, left ${c.splice_left! - c0.splice_left!}`);
    // off: every byte crosses lo between the app and proxy A (and back for the echo); bounded: a fast
    // writer may run 4 MiB ahead of its reader, and that connection goes on through TCP (part of it)
    if (mode === 'wide') assert.ok(lo < moved / 20, `splice on, nothing to fall back: lo still carried ${lo} bytes of ${moved}`);
    else if (mode === 'bounded') assert.ok(lo < moved, `splice on, bounded: lo carried every byte (${lo} of ${moved}): nothing was spliced`);
    else assert.ok(lo >= moved, `splice off: lo carried only ${lo} bytes of ${moved}`);
    assert.equal(c.splice_retarget_fail, 0, 'a message for the stack stayed redirected');
  });

  test(`splice ${mode}: 60 concurrent connections (50 to a pod, 10 to a VIP)`, async () => {
    const [a, b] = await Promise.all([
      w.client(toB, ['--mode', 'echo', '--bytes', String(256 * 1024), '--concurrency', '50', '--chunk', '7001', '--seed', '100', '--id', `${mode}-conc`]),
      w.client(`${SVC_V4}:${PORT}`, ['--mode', 'sink', '--bytes', String(512 * 1024), '--concurrency', '10', '--seed', '200', '--id', `${mode}-concv`]),
    ]);
    assertAllOk(a, '50 echo connections to pod B');
    assertAllOk(b, '10 sink connections to the VIP');
  });

  test(`splice ${mode}: slow readers with odd partial reads; sock_pairs holds the open pairs only when on`, async (t) => {
    const slowDown = w.client(toB, ['--mode', 'source', '--bytes', String(4 * MiB), '--read-size', '4093', '--slow-ms', '1', '--seed', '21', '--id', `${mode}-slowdown`]);
    const slowUp = w.client(toB, ['--mode', 'sink', '--bytes', String(16 * MiB), '--chunk', '1000', '--server-slow-ms', '2', '--seed', '22', '--id', `${mode}-slowup`]);
    // sock_pairs looked at all through the transfers (every 50 ms; the second connection may be set up after
    // the first one's pairs are there, and finish before or after it): every socket seen in the map counts.
    let done = false;
    const both = Promise.all([slowDown, slowUp]).finally(() => (done = true));
    const seen = new Map<string, Record<string, unknown>>();
    const look = (): void => {
      for (const r of w.pairs()) seen.set(String(r.socket_cookie), r);
    };
    look();
    while (!done) {
      look();
      await new Promise((r) => setTimeout(r, 50));
    }
    const rows = [...seen.values()];
    t.diagnostic(`sockets seen in sock_pairs during the 2 transfers: ${rows.length}`);
    if (process.env.SPLICE_DEBUG) t.diagnostic(JSON.stringify(rows));
    const [d, u] = await both;
    assertAllOk(d, 'slow reader (client)');
    assertAllOk(u, 'slow reader (server)');
    if (!on) {
      assert.equal(rows.length, 0, `splice off: sock_pairs must stay empty: ${JSON.stringify(rows)}`);
      return;
    }
    // each connection: app<->proxy A over lo (netns cookie), proxy A<->pod B (pod IPs, cookie 0),
    // and inside pod B whatever is local there
    const loop = rows.filter((r) => r.netns_cookie !== '0' && r.netns_cookie !== 0 && String(r.remote).startsWith('127.0.0.1:15001'));
    const podToPod = rows.filter((r) => String(r.netns_cookie) === '0' && String(r.local).startsWith(`${POD_V4}:`) && r.remote === toB);
    // bounded: a connection may fall back and leave sock_pairs before the other one is seen in it
    const want = mode === 'wide' ? 2 : 1;
    assert.ok(loop.length >= want, `app -> proxy A pairs in sock_pairs: ${JSON.stringify(rows)}`);
    assert.ok(podToPod.length >= want, `proxy A -> pod B pairs in sock_pairs: ${JSON.stringify(rows)}`);
  });

  test(`splice ${mode}: half-close: the client shuts its write side and keeps reading`, async () => {
    const [src, echo, vip] = await Promise.all([
      w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--half-close', '--seed', '31', '--id', `${mode}-hc-src`]),
      w.client(toB, ['--mode', 'echo', '--bytes', String(4 * MiB), '--half-close', '--seed', '32', '--id', `${mode}-hc-echo`]),
      w.client(`${SVC_V4}:${PORT}`, ['--mode', 'source', '--bytes', String(4 * MiB), '--half-close', '--seed', '33', '--id', `${mode}-hc-vip`]),
    ]);
    assertAllOk(src, 'half-closed download');
    assertAllOk(echo, 'half-closed echo');
    assertAllOk(vip, 'half-closed download through the VIP');
  });

  test(`splice ${mode}: a reset mid-upload reaches the server as an error or EOF with an exact prefix`, async (t) => {
    const r = await w.client(toB, ['--mode', 'sink', '--bytes', String(32 * MiB), '--reset-after', String(4 * MiB), '--seed', '41', '--id', `${mode}-rst`]);
    const c = r.results[0]!;
    assert.equal(c.reset, true, JSON.stringify(c));
    const s = await w.serverLine('b', `${mode}-rst-0`);
    t.diagnostic(`client sent ${c.sent} then RST; server: ${JSON.stringify({ received: s.received, end: s.end, error: s.error })}`);
    assert.ok(typeof s.received === 'number' && s.received <= c.sent, `server got ${String(s.received)} bytes, the client sent ${c.sent}: ${JSON.stringify(s)}`);
    assertPrefix(41, s.received as number, s.receivedSha, 'reset upload');
  });

  test(`splice ${mode}: the server killed mid-stream: the client sees an error or EOF, never a silent corruption`, async (t) => {
    const down = w.client(`${B_V4}:${KILL_PORT}`, ['--mode', 'source', '--bytes', String(256 * MiB), '--slow-ms', '1', '--seed', '51', '--id', `${mode}-kill-down`]);
    const up = w.client(`${B_V4}:${KILL_PORT}`, ['--mode', 'sink', '--bytes', String(256 * MiB), '--server-slow-ms', '1', '--seed', '52', '--id', `${mode}-kill-up`]);
    await new Promise((r) => setTimeout(r, 700));
    w.killServer('kill');
    const [d, u] = [(await down).results[0]!, (await up).results[0]!];
    t.diagnostic(`download: ${d.received} bytes, ${d.error}; upload: sent ${u.sent}, ${u.error}`);
    assert.equal(d.ok, false, `download from a killed server cannot succeed: ${JSON.stringify(d)}`);
    assert.ok(d.error, JSON.stringify(d));
    assert.ok(d.received > 0 && d.received < 256 * MiB, JSON.stringify(d));
    assertPrefix(51, d.received, d.receivedSha, 'download cut by the kill');
    assert.equal(u.ok, false, `upload to a killed server cannot succeed: ${JSON.stringify(u)}`);
    assert.equal(u.reply, undefined, `no checksum reply from a killed server: ${JSON.stringify(u)}`);
    await w.startServer(w.podB, 'kill', [KILL_PORT]);
  });
}

scenarios('bounded');

test('splice on: the agent SIGKILLed and restarted during transfers loses no byte; new connections are spliced', async () => {
  const running = Promise.all([
    w.client(toB, ['--mode', 'sink', '--bytes', String(48 * MiB), '--server-slow-ms', '1', '--seed', '61', '--id', 'restart-up']),
    w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--read-size', '65521', '--slow-ms', '1', '--seed', '62', '--id', 'restart-down']),
    w.client(toB, ['--mode', 'echo', '--bytes', String(MiB), '--concurrency', '20', '--seed', '63', '--id', 'restart-echo']),
  ]);
  await new Promise((r) => setTimeout(r, 300));
  await stopAgent(w.agent, 'SIGKILL');
  await w.startAgent([]);
  for (const [i, r] of (await running).entries()) assertAllOk(r, `transfer ${i} across the restart`);
  const lo0 = await w.loBytes();
  assertAllOk(await w.client(toB, ['--mode', 'sink', '--bytes', String(2 * MiB), '--seed', '64', '--id', 'after-restart']), 'after the restart');
  const lo = (await w.loBytes()) - lo0;
  assert.ok(lo < MiB, `a connection made after the restart is spliced (lo carried ${lo} bytes)`);
});

test('meshlane agent --splice --splice-budget 1GiB: the budget is live in global', async () => {
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--splice', '--splice-budget', '1GiB']);
  const g = dumpJson(BPFFS).maps.global;
  assert.ok(Array.isArray(g) && g[0]?.splice === true && g[0]?.splice_budget === '1 GiB', `global: ${JSON.stringify(g)}`);
});

scenarios('wide');

test('meshlane agent --no-splice: global flag off, live pairs drain back to the stack', async () => {
  await stopAgent(w.agent, 'SIGTERM');
  await w.startAgent(['--no-splice']);
  const g = dumpJson(BPFFS).maps.global;
  assert.ok(Array.isArray(g) && g[0]?.splice === false, `global: ${JSON.stringify(g)}`);
});

scenarios('off');
