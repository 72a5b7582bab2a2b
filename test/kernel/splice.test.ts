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
import { SVC_V4, cleanupAgent, dumpJson, stopAgent } from '../support/harness.js';
import { B_V4, B_V6, MiB, SpliceWorld, assertAllOk, delta } from '../support/splice.js';

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
    t.diagnostic(
      `lo carried ${lo} of ${moved} bytes; fallbacks ${c.splice_fallback! - c0.splice_fallback!}, followed ${c.splice_fallback_peer! - c0.splice_fallback_peer!}, left ${c.splice_left! - c0.splice_left!}`,
    );
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

  test(`splice ${mode}: slow readers with odd partial reads; every socket of the path goes into sock_pairs only when on`, async (t) => {
    const c0 = w.counters();
    const [d, u] = await Promise.all([
      w.client(toB, ['--mode', 'source', '--bytes', String(4 * MiB), '--read-size', '4093', '--slow-ms', '1', '--seed', '21', '--id', `${mode}-slowdown`]),
      w.client(toB, ['--mode', 'sink', '--bytes', String(16 * MiB), '--chunk', '1000', '--server-slow-ms', '2', '--seed', '22', '--id', `${mode}-slowup`]),
    ]);
    assertAllOk(d, 'slow reader (client)');
    assertAllOk(u, 'slow reader (server)');
    // What went into sock_pairs is counted when it goes in (a socket that falls back may leave it again
    // before any look at the map): each connection is app <-> proxy A over lo, proxy A <-> proxy B over
    // the bridge (pod IPs), proxy B <-> the server over lo in pod B: 6 same-node sockets.
    const c = delta(c0, w.counters());
    t.diagnostic(`sockets into sock_pairs: ${c.spliced}; fallbacks ${c.splice_fallback}, left ${c.splice_left}`);
    assert.equal(c.spliced, on ? 12 : 0, `sockets into sock_pairs for 2 connections: ${JSON.stringify(c)}`);
    if (!on) assert.deepEqual(w.pairs(), [], 'splice off: sock_pairs stays empty');
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
    assert.ok(
      typeof s.received === 'number' && s.received <= c.sent,
      `server got ${String(s.received)} bytes, the client sent ${c.sent}: ${JSON.stringify(s)}`,
    );
    assertPrefix(41, s.received as number, s.receivedSha, 'reset upload');
  });

  test(`splice ${mode}: the server killed mid-stream: the client sees an error or EOF, never a silent corruption`, async (t) => {
    // the server is killed once both transfers are under way (1 MiB in, 1 MiB out); they are far from done
    const downMark = w.file(`${mode}-kill-down.mark`);
    const upMark = w.file(`${mode}-kill-up.mark`);
    const down = w.client(`${B_V4}:${KILL_PORT}`, [
      '--mode',
      'source',
      '--bytes',
      String(256 * MiB),
      '--slow-ms',
      '1',
      '--mark-after',
      String(MiB),
      '--mark-file',
      downMark,
      '--seed',
      '51',
      '--id',
      `${mode}-kill-down`,
    ]);
    const up = w.client(`${B_V4}:${KILL_PORT}`, [
      '--mode',
      'sink',
      '--bytes',
      String(256 * MiB),
      '--server-slow-ms',
      '1',
      '--mark-after',
      String(MiB),
      '--mark-file',
      upMark,
      '--seed',
      '52',
      '--id',
      `${mode}-kill-up`,
    ]);
    try {
      await w.marked(downMark, 'the download to be under way');
      await w.marked(upMark, 'the upload to be under way');
    } finally {
      w.killServer('kill');
    }
    const [d, u] = [(await down).results[0]!, (await up).results[0]!];
    t.diagnostic(`download: ${d.received} bytes, ${d.error}; upload: sent ${u.sent}, ${u.error}`);
    const seen = `server: ${JSON.stringify(w.serverLines('kill'))}`;
    assert.equal(d.ok, false, `download from a killed server cannot succeed: ${JSON.stringify(d)}`);
    assert.ok(d.error, JSON.stringify(d));
    assert.ok(d.received >= MiB && d.received < 256 * MiB, `${JSON.stringify(d)} ${seen}`);
    assertPrefix(51, d.received, d.receivedSha, 'download cut by the kill');
    assert.equal(u.ok, false, `upload to a killed server cannot succeed: ${JSON.stringify(u)}`);
    assert.equal(u.reply, undefined, `no checksum reply from a killed server: ${JSON.stringify(u)}`);
    await w.startServer(w.podB, 'kill', [KILL_PORT]);
  });
}

scenarios('bounded');

test('splice on: the agent SIGKILLed and restarted during transfers loses no byte; new connections are spliced', async () => {
  // every transfer moves 1 MiB (well under the budget), then holds until the new agent is up
  const c0 = w.counters();
  const gate = w.file('restart.gate');
  const hold = ['--pause-after', String(MiB), '--hold-until', gate];
  const running = Promise.all([
    w.client(toB, ['--mode', 'sink', '--bytes', String(48 * MiB), '--server-slow-ms', '1', ...hold, '--seed', '61', '--id', 'restart-up']),
    w.client(toB, ['--mode', 'source', '--bytes', String(16 * MiB), '--read-size', '65521', '--slow-ms', '1', ...hold, '--seed', '62', '--id', 'restart-down']),
    w.client(toB, ['--mode', 'echo', '--bytes', String(4 * MiB), '--concurrency', '20', ...hold, '--seed', '63', '--id', 'restart-echo']),
  ]);
  try {
    // 22 connections of 6 sockets each are in sock_pairs: the transfers are under way, spliced
    await w.untilCounters(c0, (d) => d.spliced! >= 22 * 6, 'the 22 connections in sock_pairs');
    await stopAgent(w.agent, 'SIGKILL');
    await w.startAgent([]);
  } finally {
    w.open(gate);
  }
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
