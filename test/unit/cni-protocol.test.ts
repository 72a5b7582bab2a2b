// The agent's end of the meshlane-cni protocol, pure: CNI_ARGS, the config and prevResult, versions,
// the checks a CNI plugin must make (as the CNI skel makes them), and the shapes of what we answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import {
  CniCode,
  CniError,
  DEFAULT_CNI_SOCKET,
  FALLBACK_CNI_VERSION,
  PLUGIN_TYPE,
  SUPPORTED_CNI_VERSIONS,
  WIRE_VERSION,
  checkVersion,
  decodeRequest,
  encodeResponse,
  errorBody,
  parseCniArgs,
  podFromArgs,
  resultBody,
  sandboxIps,
  type CniAddRequest,
  type CniDelRequest,
  type Decoded,
} from '../../src/cni/protocol.js';

// The bridge plugin's result from the CNI spec's "Add example" (SPEC.md, Appendix), as containerd hands
// it to the next plugin of the chain in prevResult.
const BRIDGE_RESULT = {
  cniVersion: '1.0.0',
  ips: [{ address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0' }],
  interfaces: [
    { name: 'cni0', mac: '00:11:22:33:44:55' },
    { name: 'veth3243', mac: '55:44:33:22:11:11' },
    { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' },
  ],
  dns: { nameservers: ['10.1.0.1'] },
};

const CONTAINERD_ARGS =
  'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=4f1a2b;K8S_POD_UID=6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10';

const conf = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  type: 'meshlane-cni',
  socket: '/var/run/meshlane/cni.sock',
  prevResult: BRIDGE_RESULT,
  ...over,
});

/** The line meshlane-cni sends: the env it got, the config text as a string. */
const line = (command: string, over: Record<string, unknown> = {}, config: unknown = conf()): string =>
  JSON.stringify({
    v: 1,
    command,
    containerId: '4f1a2b',
    netns: '/var/run/netns/blue',
    ifname: 'eth0',
    args: CONTAINERD_ARGS,
    path: '/opt/cni/bin',
    config: typeof config === 'string' ? config : JSON.stringify(config),
    ...over,
  });

function failed(d: Decoded): { code: number; msg: string; details?: string; command?: string; cniVersion: string } {
  assert.equal(d.ok, false, `expected a failure, got ${JSON.stringify(d)}`);
  if (d.ok) throw new Error('unreachable');
  return { ...d.failure, command: d.command, cniVersion: d.cniVersion };
}

// ---- CNI_ARGS ----

test('CNI_ARGS as containerd passes them', () => {
  const args = parseCniArgs(CONTAINERD_ARGS);
  assert.deepEqual(args, {
    IgnoreUnknown: '1',
    K8S_POD_NAMESPACE: 'shop',
    K8S_POD_NAME: 'web-1',
    K8S_POD_INFRA_CONTAINER_ID: '4f1a2b',
    K8S_POD_UID: '6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10',
  });
  assert.deepEqual(podFromArgs(args), { namespace: 'shop', name: 'web-1', uid: '6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10', infraContainerId: '4f1a2b' });
});

test('CNI_ARGS: empty, trailing ";", "=" inside a value, a repeated key (the last wins)', () => {
  assert.deepEqual(parseCniArgs(undefined), {});
  assert.deepEqual(parseCniArgs(''), {});
  assert.deepEqual(parseCniArgs('A=1;;B=x=y;'), { A: '1', B: 'x=y' });
  assert.deepEqual(parseCniArgs('A=1;A=2'), { A: '2' });
  assert.deepEqual(parseCniArgs('A='), { A: '' });
});

test('CNI_ARGS: a pair without "=" or without a key is an invalid env variable (code 4)', () => {
  for (const bad of ['A', 'A=1;B', '=1']) {
    assert.throws(
      () => parseCniArgs(bad),
      (e: unknown) => e instanceof CniError && e.code === CniCode.InvalidEnvironment && /CNI_ARGS/.test(e.msg),
      bad,
    );
  }
});

test('the pod identity needs namespace and name; uid and infra container id are optional', () => {
  assert.equal(podFromArgs({ K8S_POD_NAME: 'x' }), undefined);
  assert.equal(podFromArgs({ K8S_POD_NAMESPACE: 'x' }), undefined);
  assert.equal(podFromArgs({}), undefined);
  assert.deepEqual(podFromArgs({ K8S_POD_NAMESPACE: 'a', K8S_POD_NAME: 'b' }), { namespace: 'a', name: 'b' });
});

// ---- versions ----

test('every version we claim in VERSION is accepted for ADD, DEL and (from 0.4.0) CHECK', () => {
  assert.deepEqual([...SUPPORTED_CNI_VERSIONS], ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  for (const v of SUPPORTED_CNI_VERSIONS) {
    checkVersion(v, 'ADD');
    checkVersion(v, 'DEL');
  }
  checkVersion('0.4.0', 'CHECK');
  checkVersion('1.0.0', 'CHECK');
});

test('versions we do not claim: incompatible (code 1); not a version: decoding failure (code 6)', () => {
  const code = (v: string, c: 'ADD' | 'CHECK'): number => {
    try {
      checkVersion(v, c);
      return 0;
    } catch (e) {
      assert.ok(e instanceof CniError);
      return e.code;
    }
  };
  assert.equal(code('1.1.0', 'ADD'), CniCode.IncompatibleVersion);
  assert.equal(code('0.2.0', 'ADD'), CniCode.IncompatibleVersion);
  assert.equal(code('2.0.0', 'ADD'), CniCode.IncompatibleVersion);
  assert.equal(code('0.3.1', 'CHECK'), CniCode.IncompatibleVersion, 'CHECK came with 0.4.0');
  assert.equal(code('1.0', 'ADD'), CniCode.DecodingFailure);
  assert.equal(code('latest', 'ADD'), CniCode.DecodingFailure);
});

// ---- a request, decoded ----

test('ADD as a runtime sends it after the bridge plugin: every field, the pod, the prevResult as it came', () => {
  const d = decodeRequest(line('ADD'));
  assert.ok(d.ok, JSON.stringify(d));
  const r = d.request as CniAddRequest;
  assert.equal(r.command, 'ADD');
  assert.equal(r.containerId, '4f1a2b');
  assert.equal(r.netns, '/var/run/netns/blue');
  assert.equal(r.ifname, 'eth0');
  assert.equal(r.cniPath, '/opt/cni/bin');
  assert.equal(r.args.K8S_POD_NAME, 'web-1');
  assert.deepEqual(r.pod, { namespace: 'shop', name: 'web-1', uid: '6f1c7a52-3e9b-4f0e-9a41-0c2d5e8b7a10', infraContainerId: '4f1a2b' });
  assert.deepEqual(r.prevResult, BRIDGE_RESULT);
  assert.equal(r.config.cniVersion, '1.0.0');
  assert.equal(r.config.socket, '/var/run/meshlane/cni.sock');
  assert.equal((r.config as Record<string, unknown>).prevResult, undefined, 'prevResult is on the request, not left in the config');
  assert.deepEqual(sandboxIps(r.prevResult), ['10.1.0.5']);
});

test('a 0.4.0 config with a 0.4.0 prevResult (ips[].version) and unknown fields passes through', () => {
  const prev = {
    cniVersion: '0.4.0',
    interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }],
    ips: [{ version: '4', address: '10.244.0.9/24', interface: 0 }],
    extra: { keep: true },
  };
  const d = decodeRequest(line('ADD', {}, conf({ cniVersion: '0.4.0', prevResult: prev, runtimeConfig: { portMappings: [] }, foo: 'bar' })));
  assert.ok(d.ok, JSON.stringify(d));
  const r = d.request as CniAddRequest;
  assert.deepEqual(r.prevResult, prev);
  assert.equal((r.config as Record<string, unknown>).foo, 'bar');
  const out = JSON.parse(resultBody(r.config.cniVersion, r.prevResult)) as Record<string, unknown>;
  assert.deepEqual(out, prev);
});

test("the result is in the config's cniVersion (first key), the rest of prevResult unchanged", () => {
  const text = resultBody('0.4.0', BRIDGE_RESULT);
  assert.ok(text.endsWith('\n'));
  assert.ok(text.startsWith('{"cniVersion":"0.4.0",'), text);
  const { cniVersion: _v, ...rest } = BRIDGE_RESULT;
  assert.deepEqual(JSON.parse(text), { cniVersion: '0.4.0', ...rest });
});

test('ADD or CHECK without prevResult: meshlane-cni must be chained (code 7)', () => {
  for (const c of ['ADD', 'CHECK']) {
    const f = failed(decodeRequest(line(c, {}, conf({ prevResult: undefined }))));
    assert.equal(f.code, CniCode.InvalidConfig);
    assert.match(f.msg, /chained/);
    assert.equal(f.command, c);
  }
});

test('DEL: netns and prevResult are optional (the netns may be gone); the pod is still named', () => {
  const d = decodeRequest(line('DEL', { netns: undefined }, conf({ prevResult: undefined })));
  assert.ok(d.ok, JSON.stringify(d));
  const r = d.request as CniDelRequest;
  assert.equal(r.command, 'DEL');
  assert.equal(r.netns, undefined);
  assert.equal(r.prevResult, undefined);
  assert.equal(r.pod?.name, 'web-1');
});

test('required env variables, named in the message (code 4), as the CNI skel does', () => {
  let f = failed(decodeRequest(line('ADD', { containerId: undefined, netns: '' })));
  assert.equal(f.code, CniCode.InvalidEnvironment);
  assert.match(f.msg, /\[CNI_CONTAINERID,CNI_NETNS\]/);
  f = failed(decodeRequest(line('DEL', { ifname: undefined, netns: undefined })));
  assert.equal(f.code, CniCode.InvalidEnvironment);
  assert.match(f.msg, /\[CNI_IFNAME\]/);
});

test('container id and interface name are checked as libcni does (code 4)', () => {
  for (const id of ['-abc', 'a/b', 'a b', 'ä']) {
    const f = failed(decodeRequest(line('ADD', { containerId: id })));
    assert.equal(f.code, CniCode.InvalidEnvironment, id);
    assert.match(f.msg, /CNI_CONTAINERID/);
  }
  for (const ifname of ['.', '..', 'eth/0', 'eth:0', 'eth 0', 'a-very-long-name0']) {
    const f = failed(decodeRequest(line('ADD', { ifname })));
    assert.equal(f.code, CniCode.InvalidEnvironment, ifname);
    assert.match(f.msg, /CNI_IFNAME/);
  }
  assert.ok(decodeRequest(line('ADD', { containerId: 'A1_b.c-d', ifname: 'net1' })).ok);
});

test('a config that is not JSON: decoding failure (code 6); one without name/type/cniVersion: invalid config (code 7)', () => {
  let f = failed(decodeRequest(line('ADD', {}, '{"cniVersion": "1.0.0", ')));
  assert.equal(f.code, CniCode.DecodingFailure);
  assert.equal(f.cniVersion, '1.0.0', 'no version could be read: the fallback');
  for (const key of ['cniVersion', 'name', 'type']) {
    f = failed(decodeRequest(line('ADD', {}, conf({ [key]: undefined }))));
    assert.equal(f.code, CniCode.InvalidConfig, key);
    assert.match(f.details ?? '', new RegExp(key));
  }
  f = failed(decodeRequest(line('ADD', {}, conf({ timeoutSeconds: 0 }))));
  assert.equal(f.code, CniCode.InvalidConfig);
});

test('a prevResult of the wrong shape: decoding failure (code 6)', () => {
  const f = failed(decodeRequest(line('ADD', {}, conf({ prevResult: { ips: [{ gateway: '10.1.0.1' }] } }))));
  assert.equal(f.code, CniCode.DecodingFailure);
  assert.match(f.msg, /prevResult/);
});

test('an unsupported cniVersion is refused with it echoed in the error result', () => {
  const f = failed(decodeRequest(line('ADD', {}, conf({ cniVersion: '1.1.0' }))));
  assert.equal(f.code, CniCode.IncompatibleVersion);
  assert.equal(f.cniVersion, '1.1.0');
  assert.match(f.details ?? '', /0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0/);
});

test('the wire: another protocol version, a malformed line, an unknown command', () => {
  let f = failed(decodeRequest(line('ADD', { v: 2 })));
  assert.equal(f.code, CniCode.IncompatibleVersion);
  assert.match(f.details ?? '', /meshlane cni install/);
  f = failed(decodeRequest('{"v":1,"command":"ADD"'));
  assert.equal(f.code, CniCode.DecodingFailure);
  f = failed(decodeRequest(JSON.stringify({ v: 1, command: 'ADD' })));
  assert.equal(f.code, CniCode.DecodingFailure, 'no config');
  f = failed(decodeRequest(line('FOO')));
  assert.equal(f.code, CniCode.InvalidEnvironment);
  assert.match(f.details ?? '', /FOO/);
});

test('GC and STATUS (CNI 1.1) are decoded for the server to answer, even with a config it cannot use', () => {
  let d = decodeRequest(line('GC', { containerId: undefined, netns: undefined, ifname: undefined }));
  assert.ok(d.ok && d.request.command === 'GC');
  d = decodeRequest(line('STATUS', {}, 'not json'));
  assert.ok(d.ok && d.request.command === 'STATUS');
});

// ---- answers ----

test('the response framing: exit code, newline, body', () => {
  assert.equal(encodeResponse(0), '0\n');
  assert.equal(encodeResponse(1, '{"x":1}\n'), '1\n{"x":1}\n');
  assert.throws(() => encodeResponse(256));
  assert.throws(() => encodeResponse(-1));
  assert.throws(() => encodeResponse(1.5));
});

test("an error result has the spec's four keys, details always a string", () => {
  assert.deepEqual(JSON.parse(errorBody('0.4.0', { code: 11, msg: 'try later' })), { cniVersion: '0.4.0', code: 11, msg: 'try later', details: '' });
  assert.deepEqual(JSON.parse(errorBody('1.0.0', { code: 7, msg: 'm', details: 'd' })), { cniVersion: '1.0.0', code: 7, msg: 'm', details: 'd' });
});

test('sandboxIps: only addresses on interfaces inside the pod, or not tied to one', () => {
  assert.deepEqual(
    sandboxIps({
      interfaces: [{ name: 'cni0' }, { name: 'eth0', sandbox: '/var/run/netns/x' }],
      ips: [
        { address: '10.0.0.1/24', interface: 0 },
        { address: '10.0.0.5/24', interface: 1 },
        { address: 'fd00::5/64', interface: 1 },
        { address: '10.9.9.9/32' },
      ],
    }),
    ['10.0.0.5', 'fd00::5', '10.9.9.9'],
  );
  assert.deepEqual(sandboxIps({}), []);
});

test("the plugin's C source and this module agree on the names, versions and defaults", () => {
  const c = readFileSync(join(packageRoot(), 'cni', 'meshlane-cni.c'), 'utf8');
  const define = (name: string): string => {
    const m = new RegExp(`^#define ${name} (.+?)\\s*(//.*)?$`, 'm').exec(c);
    assert.ok(m, `#define ${name} not found`);
    return m[1]!;
  };
  assert.equal(define('PLUGIN_NAME'), JSON.stringify(PLUGIN_TYPE));
  assert.equal(define('DEFAULT_SOCKET'), JSON.stringify(DEFAULT_CNI_SOCKET));
  assert.equal(Number(define('WIRE_VERSION')), WIRE_VERSION);
  assert.equal(define('FALLBACK_CNI_VERSION'), JSON.stringify(FALLBACK_CNI_VERSION));
  assert.deepEqual(JSON.parse(JSON.parse(define('SUPPORTED_VERSIONS')) as string), [...SUPPORTED_CNI_VERSIONS]);
});
