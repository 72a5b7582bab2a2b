// The agent's CNI handler (src/cni/handler.ts) against a fake enroller: which answer each case gets, what
// the pipeline is asked. The real agent, plugin and kernel: test/kernel/cni-agent.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { AgentCniHandler } from '../../src/cni/handler.js';
import { CniCode, CniError, type CniAddRequest, type CniCheckRequest, type CniDelRequest } from '../../src/cni/protocol.js';
import type { CniRelease, Enroller, Wanted } from '../../src/agent/enroller.js';
import type { CniNetns } from '../../src/agent/pod-locator.js';
import type { PodStatus } from '../../src/agent/status.js';

const log = pino({ level: 'silent' });
const NETNS = '/var/run/netns/cni-1';
const COOKIE = 4242n;

class FakeEnroller implements Enroller {
  wantedCalls: Array<{ pod: unknown; ips: string[] | undefined }> = [];
  enrolled: Array<[string, CniNetns]> = [];
  released: CniRelease[] = [];
  answer: Wanted = { capture: true, uid: 'u1' };
  after: PodStatus | undefined = status('captured');

  async wanted(pod: unknown, _t: number, _s?: AbortSignal, hints?: { ips?: string[] }): Promise<Wanted> {
    this.wantedCalls.push({ pod, ips: hints?.ips });
    return this.answer;
  }
  async enroll(uid: string, ns: CniNetns): Promise<PodStatus | undefined> {
    this.enrolled.push([uid, ns]);
    return this.after;
  }
  async unenroll(r: CniRelease): Promise<string | undefined> {
    this.released.push(r);
    return 'u1';
  }
  status(): PodStatus | undefined {
    return this.after;
  }
}

function status(state: 'captured' | 'pending', o: Partial<PodStatus> = {}): PodStatus {
  return {
    ref: { namespace: 'shop', name: 'web', uid: 'u1' },
    state,
    ips: ['10.1.0.5'],
    settings: {} as PodStatus['settings'],
    errors: [],
    unsupported: [],
    ...(state === 'captured' ? { netnsCookie: COOKIE.toString() } : {}),
    ...o,
  };
}

const prevResult = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: NETNS }],
  ips: [{ address: '10.1.0.5/24', interface: 0 }, { address: '10.9.9.9/24' }],
};
const base = { containerId: 'c1', ifname: 'eth0', args: {}, config: { cniVersion: '1.0.0', name: 'n', type: 'meshlane-cni' } };
const add = (pod = true): CniAddRequest => ({
  command: 'ADD',
  ...base,
  netns: NETNS,
  prevResult,
  ...(pod ? { pod: { namespace: 'shop', name: 'web', uid: 'u1' } } : {}),
});
const signal = (): AbortSignal => new AbortController().signal;

function handler(e: FakeEnroller, cookie: (p: string) => bigint = () => COOKIE): AgentCniHandler {
  return new AgentCniHandler({ enroller: Promise.resolve(e), log, podWaitMs: 100, netnsCookie: cookie });
}

async function rejectsWith(p: Promise<unknown>, code: number, msg: RegExp, details?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CniError, String(e));
    assert.equal(e.code, code);
    assert.match(e.msg, msg);
    if (details) assert.match(e.details ?? '', details);
    return true;
  });
}

test("ADD of a captured pod: the prevResult's IPs as the hint, the netns enrolled with the container, the prevResult returned", async () => {
  const e = new FakeEnroller();
  const out = await handler(e).add(add(), signal());
  assert.deepEqual(out, { result: prevResult });
  assert.deepEqual(e.wantedCalls[0]?.ips, ['10.1.0.5', '10.9.9.9']);
  assert.deepEqual(e.enrolled, [['u1', { nsPath: NETNS, how: 'cni', containerId: 'c1' }]]);
});

test('ADD of a pod not captured: the prevResult at once, nothing enrolled; no K8S_POD_* at all: passed through', async () => {
  const e = new FakeEnroller();
  e.answer = { capture: false, uid: 'u1', reason: 'namespace not labelled' };
  assert.deepEqual(await handler(e, () => assert.fail('no netns read')).add(add(), signal()), { result: prevResult });
  assert.deepEqual(e.enrolled, []);
  assert.deepEqual(await handler(e).add(add(false), signal()), { result: prevResult });
  assert.equal(e.wantedCalls.length, 1, 'a container that names no pod is not looked up');
});

test('ADD fails closed: pod unknown after the wait, enrolled only as pending, in another netns, attach failed', async () => {
  const e = new FakeEnroller();
  e.answer = { capture: 'unknown', reason: 'not shown' };
  await rejectsWith(handler(e).add(add(), signal()), CniCode.TryAgainLater, /pod shop\/web is not known/, /within 0\.1 s.*fail closed/);
  e.answer = { capture: true, uid: 'u1' };
  e.after = status('pending', { reason: 'no pod cgroup yet under /cg' });
  await rejectsWith(handler(e).add(add(), signal()), CniCode.AgentFailure, /could not capture pod shop\/web/, /no pod cgroup yet/);
  e.after = status('captured', { netnsCookie: '7' });
  await rejectsWith(handler(e).add(add(), signal()), CniCode.AgentFailure, /could not capture/, /another netns/);
  e.after = status('captured', { errors: ["attaching the inbound program to the pod's netns failed: EPERM"] });
  await rejectsWith(handler(e).add(add(), signal()), CniCode.AgentFailure, /could not capture/, /attaching the inbound program/);
  e.after = undefined;
  await rejectsWith(handler(e).add(add(), signal()), CniCode.AgentFailure, /could not capture/);
  // CNI_NETNS that is not a netns
  e.after = status('captured');
  await rejectsWith(
    handler(e, () => {
      throw new Error('ENOENT');
    }).add(add(), signal()),
    CniCode.InvalidEnvironment,
    /not a network namespace/,
  );
});

test("ADD waits for the agent's start; a request whose time is up stops waiting", async () => {
  let ready: (e: Enroller) => void = () => {};
  const h = new AgentCniHandler({ enroller: new Promise<Enroller>((r) => (ready = r)), log, netnsCookie: () => COOKIE });
  const ac = new AbortController();
  const waiting = h.add(add(), ac.signal);
  ac.abort(new Error('timed out'));
  await assert.rejects(waiting, /timed out/);
  const e = new FakeEnroller();
  const later = h.add(add(), signal());
  ready(e);
  assert.deepEqual(await later, { result: prevResult });
});

test('DEL asks the pipeline to release with the container and the netns cookie; without the netns, with the container alone', async () => {
  const e = new FakeEnroller();
  const del: CniDelRequest = { command: 'DEL', ...base, netns: NETNS, pod: { namespace: 'shop', name: 'web' } };
  await handler(e).del(del, signal());
  assert.deepEqual(e.released, [{ containerId: 'c1', pod: { namespace: 'shop', name: 'web' }, netnsCookie: COOKIE }]);
  await handler(e, () => {
    throw new Error('ENOENT');
  }).del({ ...del, pod: undefined } as CniDelRequest, signal());
  assert.deepEqual(e.released[1], { containerId: 'c1' });
});

test('CHECK: captured in this netns is fine; another netns or pending is an error; not captured is fine', async () => {
  const e = new FakeEnroller();
  const check: CniCheckRequest = { command: 'CHECK', ...base, netns: NETNS, prevResult, pod: { namespace: 'shop', name: 'web', uid: 'u1' } };
  assert.deepEqual(await handler(e).check(check, signal()), { ok: true });
  e.after = status('pending', { reason: 'torn down' });
  const bad = await handler(e).check(check, signal());
  assert.ok('error' in bad && bad.error.code === CniCode.AgentFailure && /not captured in CNI_NETNS/.test(bad.error.msg));
  e.answer = { capture: false, uid: 'u1', reason: 'x' };
  assert.deepEqual(await handler(e).check(check, signal()), { ok: true });
  e.answer = { capture: 'unknown', reason: 'x' };
  const unknown = await handler(e).check(check, signal());
  assert.ok('error' in unknown && unknown.error.code === CniCode.TryAgainLater);
});
