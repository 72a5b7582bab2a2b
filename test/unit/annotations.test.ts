import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalIp } from '../../src/util/ip.js';
import { ANNOTATIONS as A, defaultCaptureSettings, parseCaptureSettings, parseCidr, type ContainerLike, type PodLike } from '../../src/model/annotations.js';

function pod(annotations: Record<string, string>, proxy: Omit<ContainerLike, 'name'> = {}): PodLike {
  return { metadata: { annotations }, spec: { containers: [{ name: 'app' }, { name: 'istio-proxy', ...proxy }] } };
}

function parse(annotations: Record<string, string>, proxy: Omit<ContainerLike, 'name'> = {}) {
  return parseCaptureSettings(pod(annotations, proxy));
}

test('no annotations: the reference istio-iptables invocation', () => {
  const r = parse({});
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.unsupported, []);
  assert.deepEqual(r.settings, {
    outboundPort: 15001,
    inboundPort: 15006,
    inboundTunnelPort: 15008,
    dnsPort: 15053,
    proxyUids: [1337],
    proxyGids: [1337],
    interceptionMode: 'REDIRECT',
    inboundPorts: { mode: 'all', exclude: [15090, 15021, 15020] },
    outboundInclude: { all: true, cidrs: [] },
    outboundExclude: [],
    includeOutboundPorts: [],
    excludeOutboundPorts: [],
    excludeInterfaces: [],
    rerouteInterfaces: [],
    dns: { enabled: false, captureAll: false },
  });
  assert.deepEqual(parseCaptureSettings({}).settings, defaultCaptureSettings());
});

test('includeInboundPorts: *, list with spaces and duplicates, empty = no inbound capture', () => {
  assert.deepEqual(parse({ [A.includeInboundPorts]: '*' }).settings.inboundPorts.mode, 'all');
  assert.deepEqual(parse({ [A.includeInboundPorts]: ' 8080 , 9090,8080 ' }).settings.inboundPorts, {
    mode: 'list',
    include: [8080, 9090],
  });
  // an empty item is an error for Istio's parsePorts (it used to be dropped here): the default * applies
  const empty = parse({ [A.includeInboundPorts]: ' 8080 , ,9090,,8080' });
  assert.deepEqual(empty.settings.inboundPorts, { mode: 'all', exclude: [15090, 15021, 15020] });
  assert.deepEqual(empty.errors, [
    `invalid value ' 8080 , ,9090,,8080' for annotation '${A.includeInboundPorts}': an empty item (two commas in a row, or a comma at either end) is not a valid port`,
  ]);
  assert.deepEqual(parse({ [A.includeInboundPorts]: ' \t' }).settings.inboundPorts, { mode: 'list', include: [] });
  assert.deepEqual(parse({ [A.includeInboundPorts]: '' }).settings.inboundPorts, { mode: 'list', include: [] });
  assert.deepEqual(parse({ [A.includeInboundPorts]: '0,65535' }).settings.inboundPorts, {
    mode: 'list',
    include: [0, 65535],
  });
});

test('includeInboundPorts: bad values are ignored (default *) with the exact error', () => {
  const cases: Array<[string, string]> = [
    ['abc', '"abc" is not a valid port'],
    ['65536', '"65536" is not a valid port (must be 0-65535)'],
    ['-1', '"-1" is not a valid port'],
    ['+80', '"+80" is not a valid port'],
    ['0x50', '"0x50" is not a valid port'],
    ['80,*', '"*" must be the whole value of includeInboundPorts'],
    [' *', '"*" must be the whole value of includeInboundPorts'],
  ];
  for (const [v, reason] of cases) {
    const r = parse({ [A.includeInboundPorts]: v });
    assert.deepEqual(r.settings.inboundPorts, { mode: 'all', exclude: [15090, 15021, 15020] }, v);
    assert.deepEqual(r.errors, [`invalid value '${v}' for annotation '${A.includeInboundPorts}': ${reason}`]);
  }
});

test('excludeInboundPorts: user first, then the fixed ports, then the status port, deduplicated', () => {
  const r = parse({ [A.excludeInboundPorts]: '9000, 15021 ,9000', [A.statusPort]: '15030' });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.settings.inboundPorts, { mode: 'all', exclude: [9000, 15021, 15090, 15020, 15030] });
  // status port equal to a fixed one, and status port 0 (no status server) add nothing
  assert.deepEqual(parse({ [A.statusPort]: '15020' }).settings.inboundPorts, {
    mode: 'all',
    exclude: [15090, 15021, 15020],
  });
  assert.deepEqual(parse({ [A.statusPort]: '0' }).settings.inboundPorts, {
    mode: 'all',
    exclude: [15090, 15021, 15020],
  });
  assert.deepEqual(parse({ [A.excludeInboundPorts]: '' }).settings.inboundPorts, {
    mode: 'all',
    exclude: [15090, 15021, 15020],
  });
});

test('excludeInboundPorts and status port: bad values are errors; the fixed excludes stay', () => {
  const r = parse({ [A.excludeInboundPorts]: '9000,x', [A.statusPort]: '70000' });
  assert.deepEqual(r.settings.inboundPorts, { mode: 'all', exclude: [15090, 15021, 15020] });
  assert.deepEqual(r.errors, [
    `invalid value '9000,x' for annotation '${A.excludeInboundPorts}': "x" is not a valid port`,
    `invalid value '70000' for annotation '${A.statusPort}': "70000" is not a valid port (must be 0-65535)`,
  ]);
  const star = parse({ [A.excludeInboundPorts]: '*' });
  assert.deepEqual(star.errors, [`invalid value '*' for annotation '${A.excludeInboundPorts}': "*" is not allowed in excludeInboundPorts`]);
});

test('exclusions are still validated when includeInboundPorts is a list', () => {
  const r = parse({ [A.includeInboundPorts]: '8080', [A.excludeInboundPorts]: 'nope' });
  assert.deepEqual(r.settings.inboundPorts, { mode: 'list', include: [8080] });
  assert.equal(r.errors.length, 1);
});

test('include/excludeOutboundPorts: lists, trimming, errors', () => {
  const r = parse({ [A.includeOutboundPorts]: '443, 8443', [A.excludeOutboundPorts]: '3306, 5432 ' });
  assert.deepEqual(r.settings.includeOutboundPorts, [443, 8443]);
  assert.deepEqual(r.settings.excludeOutboundPorts, [3306, 5432]);
  assert.deepEqual(r.errors, []);
  const empty = parse({ [A.excludeOutboundPorts]: '3306,,5432 ' });
  assert.deepEqual(empty.settings.excludeOutboundPorts, [], 'an empty item makes the value invalid (Istio): no bypass');
  assert.equal(empty.errors.length, 1);
  const bad = parse({ [A.includeOutboundPorts]: '*', [A.excludeOutboundPorts]: '65536' });
  assert.deepEqual(bad.settings.includeOutboundPorts, []);
  assert.deepEqual(bad.settings.excludeOutboundPorts, []);
  assert.deepEqual(bad.errors, [
    `invalid value '*' for annotation '${A.includeOutboundPorts}': "*" is not allowed in includeOutboundPorts`,
    `invalid value '65536' for annotation '${A.excludeOutboundPorts}': "65536" is not a valid port (must be 0-65535)`,
  ]);
});

test('includeOutboundIPRanges: *, v4/v6 lists normalised, empty = no outbound capture', () => {
  assert.deepEqual(parse({ [A.includeOutboundIPRanges]: '*' }).settings.outboundInclude, { all: true, cidrs: [] });
  assert.deepEqual(parse({ [A.includeOutboundIPRanges]: '' }).settings.outboundInclude, { all: false, cidrs: [] });
  const empty = parse({ [A.includeOutboundIPRanges]: '10.1.2.3/8,,FD00:0::1/8' });
  assert.deepEqual(empty.settings.outboundInclude, { all: true, cidrs: [] }, 'an empty item is an error (validateCIDRList)');
  assert.equal(empty.errors.length, 1);
  const r = parse({ [A.includeOutboundIPRanges]: '10.1.2.3/8,FD00:0::1/8,2001:db8:0:0:1::/80,127.1.2.3/32' });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.settings.outboundInclude, {
    all: false,
    cidrs: [
      { family: 4, addr: '10.0.0.0', prefix: 8 },
      { family: 6, addr: 'fd00::', prefix: 8 },
      { family: 6, addr: '2001:db8:0:0:1::', prefix: 80 },
      { family: 4, addr: '127.1.2.3', prefix: 32 },
    ],
  });
});

test('CIDR lists are not trimmed: a space makes the whole annotation invalid', () => {
  const r = parse({ [A.includeOutboundIPRanges]: '10.0.0.0/8, 192.168.0.0/16' });
  assert.deepEqual(r.settings.outboundInclude, { all: true, cidrs: [] });
  assert.deepEqual(r.errors, [
    `invalid value '10.0.0.0/8, 192.168.0.0/16' for annotation '${A.includeOutboundIPRanges}': ` + `" 192.168.0.0/16" is not a valid CIDR`,
  ]);
});

test('includeOutboundIPRanges: other bad values fall back to *', () => {
  for (const v of ['10.0.0.1', '10.0.0.0/33', '010.0.0.0/8', '10.0.0.0/08', 'fe80::1%eth0/64', '1::2::3/64', 'x', '*,10.0.0.0/8']) {
    const r = parse({ [A.includeOutboundIPRanges]: v });
    assert.deepEqual(r.settings.outboundInclude, { all: true, cidrs: [] }, v);
    assert.equal(r.errors.length, 1, v);
    assert.ok(r.errors[0]?.startsWith(`invalid value '${v}' for annotation '${A.includeOutboundIPRanges}': `), v);
  }
});

test('excludeOutboundIPRanges: list, * is an error, bad value -> empty', () => {
  const r = parse({ [A.excludeOutboundIPRanges]: '169.254.169.254/32,::1/128' });
  assert.deepEqual(r.settings.outboundExclude, [
    { family: 4, addr: '169.254.169.254', prefix: 32 },
    { family: 6, addr: '::1', prefix: 128 },
  ]);
  const star = parse({ [A.excludeOutboundIPRanges]: '*' });
  assert.deepEqual(star.settings.outboundExclude, []);
  assert.deepEqual(star.errors, [`invalid value '*' for annotation '${A.excludeOutboundIPRanges}': "*" is not allowed in excludeOutboundIPRanges`]);
  assert.deepEqual(parse({ [A.excludeOutboundIPRanges]: '' }).settings.outboundExclude, []);
});

test('parseCidr / canonicalIp: canonical v6 text is what Node (WHATWG URL) prints', () => {
  for (const text of ['fd00::', '2001:DB8:0:0:1:0:0:1', '1:0:0:1:0:0:0:1', '::ffff:10.0.0.1', '0:0:1::', '::']) {
    const c = canonicalIp(text);
    assert.ok(c, text);
    assert.equal(`[${c.addr}]`, new URL(`http://[${text}]`).hostname, text);
  }
  assert.deepEqual(parseCidr('::/0'), { ok: true, value: { family: 6, addr: '::', prefix: 0 } });
  assert.deepEqual(parseCidr('10.255.1.1/12'), { ok: true, value: { family: 4, addr: '10.240.0.0', prefix: 12 } });
  assert.equal(canonicalIp('1:2:3:4::5:6:7:8'), undefined);
  assert.equal(canonicalIp('256.0.0.1'), undefined);
});

test('interfaces: parsed, reported as unsupported; bad names rejected', () => {
  const r = parse({ [A.excludeInterfaces]: 'eth1,,net1.100', [A.rerouteVirtualInterfaces]: 'tap0' });
  assert.deepEqual(r.settings.excludeInterfaces, ['eth1', 'net1.100']);
  assert.deepEqual(r.settings.rerouteInterfaces, ['tap0']);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.unsupported, [
    `${A.excludeInterfaces} is enforced for inbound only: outbound connections are decided at connect(), before an output interface is known (interfaces: eth1,net1.100)`,
    `${A.rerouteVirtualInterfaces} is not enforced by meshlane: it captures traffic forwarded through the pod, which no socket hook sees (interfaces: tap0)`,
  ]);
  const empty = parse({ [A.excludeInterfaces]: '', [A.rerouteVirtualInterfaces]: '' });
  assert.deepEqual(empty.unsupported, []);
  const bad = parse({ [A.excludeInterfaces]: 'eth1, eth2', [A.rerouteVirtualInterfaces]: 'a234567890123456' });
  assert.deepEqual(bad.settings.excludeInterfaces, []);
  assert.deepEqual(bad.settings.rerouteInterfaces, []);
  assert.deepEqual(bad.unsupported, []);
  assert.deepEqual(bad.errors, [
    `invalid value 'eth1, eth2' for annotation '${A.excludeInterfaces}': " eth2" is not a valid interface name`,
    `invalid value 'a234567890123456' for annotation '${A.rerouteVirtualInterfaces}': ` + `"a234567890123456" is longer than 15 characters`,
  ]);
  assert.equal(parse({ [A.excludeInterfaces]: '1eth' }).errors.length, 1);
  assert.deepEqual(parse({ [A.excludeInterfaces]: 'a23456789012345' }).settings.excludeInterfaces, ['a23456789012345']);
});

test('old kubevirtInterfaces is read; the new annotation wins when both are set', () => {
  const old = parse({ [A.kubevirtInterfaces]: 'vm0' });
  assert.deepEqual(old.settings.rerouteInterfaces, ['vm0']);
  assert.deepEqual(old.unsupported, [
    `${A.kubevirtInterfaces} is not enforced by meshlane: it captures traffic forwarded through the pod, which no socket hook sees (interfaces: vm0)`,
  ]);
  const both = parse({ [A.kubevirtInterfaces]: 'vm0', [A.rerouteVirtualInterfaces]: 'vm1' });
  assert.deepEqual(both.settings.rerouteInterfaces, ['vm1']);
});

test('interceptionMode: REDIRECT, TPROXY (unsupported note), NONE, bad', () => {
  assert.equal(parse({ [A.interceptionMode]: 'REDIRECT' }).settings.interceptionMode, 'REDIRECT');
  const t = parse({ [A.interceptionMode]: 'TPROXY' });
  assert.equal(t.settings.interceptionMode, 'TPROXY');
  assert.deepEqual(t.unsupported, [`${A.interceptionMode} TPROXY is handled as REDIRECT`]);
  assert.equal(parse({ [A.interceptionMode]: 'NONE' }).settings.interceptionMode, 'NONE');
  const bad = parse({ [A.interceptionMode]: 'redirect' });
  assert.equal(bad.settings.interceptionMode, 'REDIRECT');
  assert.deepEqual(bad.errors, [`invalid value 'redirect' for annotation '${A.interceptionMode}': must be one of REDIRECT, TPROXY, NONE`]);
});

test('proxy.istio.io/config: DNS capture from proxyMetadata (YAML or JSON)', () => {
  const yaml = 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n  ISTIO_META_DNS_AUTO_ALLOCATE: "true"\n';
  assert.deepEqual(parse({ [A.proxyConfig]: yaml }).settings.dns, { enabled: true, captureAll: false });
  const json = '{"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"}}';
  assert.deepEqual(parse({ [A.proxyConfig]: json }).settings.dns, { enabled: true, captureAll: false });
  const off = parse({ [A.proxyConfig]: 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "false"\n' });
  assert.equal(off.settings.dns.enabled, false);
  assert.equal(parse({ [A.proxyConfig]: 'holdApplicationUntilProxyStarts: true' }).settings.dns.enabled, false);
  assert.equal(parse({ [A.proxyConfig]: '' }).errors.length, 0);
  // interceptionMode in the ProxyConfig applies when the annotation is absent
  assert.equal(parse({ [A.proxyConfig]: 'interceptionMode: NONE' }).settings.interceptionMode, 'NONE');
  assert.equal(parse({ [A.proxyConfig]: 'interceptionMode: NONE', [A.interceptionMode]: 'REDIRECT' }).settings.interceptionMode, 'REDIRECT');
});

test('proxy.istio.io/config: malformed -> ignored with an error', () => {
  const cases: Array<[string, string]> = [
    ['proxyMetadata: [1', 'not valid YAML or JSON: '],
    ['just a string', 'not a mapping'],
    ['proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: true\n', 'proxyMetadata.ISTIO_META_DNS_CAPTURE must be a string'],
    ['proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "maybe"\n', 'proxyMetadata.ISTIO_META_DNS_CAPTURE: "maybe" is not a boolean'],
    ['interceptionMode: SOMETIMES', 'interceptionMode must be one of REDIRECT, TPROXY, NONE'],
  ];
  for (const [v, reason] of cases) {
    const r = parse({ [A.proxyConfig]: v });
    assert.equal(r.settings.dns.enabled, false, v);
    assert.equal(r.settings.interceptionMode, 'REDIRECT', v);
    assert.equal(r.errors.length, 1, v);
    assert.ok(r.errors[0]?.startsWith(`invalid value '${v}' for annotation '${A.proxyConfig}': ${reason}`), r.errors[0]);
    assert.ok(!r.errors[0]?.slice(`invalid value '${v}'`.length).includes('\n'), 'reason is one line');
  }
});

test('DNS capture: the istio-proxy container env (what istio-cni reads) wins over the annotation', () => {
  const env = (value: string) => ({ env: [{ name: 'ISTIO_META_DNS_CAPTURE', value }] });
  assert.equal(parse({}, env('true')).settings.dns.enabled, true);
  const cfgOn = { [A.proxyConfig]: 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n' };
  assert.equal(parse(cfgOn, env('false')).settings.dns.enabled, false);
  const bad = parse(cfgOn, env('yes please'));
  assert.equal(bad.settings.dns.enabled, true);
  assert.deepEqual(bad.errors, [`invalid value 'yes please' for env ISTIO_META_DNS_CAPTURE of container 'istio-proxy': "yes please" is not a boolean`]);
});

test('proxy uid/gid from the istio-proxy container securityContext', () => {
  const ids = (sc: ContainerLike['securityContext']) => {
    const s = parse({}, { securityContext: sc }).settings;
    return [s.proxyUids, s.proxyGids];
  };
  assert.deepEqual(ids({ runAsUser: 1000, runAsGroup: 2000 }), [[1000], [2000]]);
  assert.deepEqual(ids({ runAsUser: 1000 }), [[1000], [1000]]);
  assert.deepEqual(ids({ runAsUser: 0, runAsGroup: 0 }), [[1337], [1337]]);
  assert.deepEqual(ids({ runAsGroup: 3000 }), [[1337], [3000]]);
  assert.deepEqual(ids(null), [[1337], [1337]]);
  // another container's securityContext is not the proxy's
  const other: PodLike = { spec: { containers: [{ name: 'app', securityContext: { runAsUser: 5 } }] } };
  assert.deepEqual(parseCaptureSettings(other).settings.proxyUids, [1337]);
});

test('a non-string annotation value is reported, not thrown', () => {
  const r = parseCaptureSettings({ metadata: { annotations: { [A.includeInboundPorts]: 8080 } } });
  assert.equal(r.settings.inboundPorts.mode, 'all');
  assert.deepEqual(r.errors, [`invalid value '8080' for annotation '${A.includeInboundPorts}': not a string`]);
});
