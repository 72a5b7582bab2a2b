import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../src/model/pod-model.js';
import type { ModelResult } from '../../src/model/types.js';
import { defaultCaptureSettings } from '../../src/model/annotations.js';

function ns(name: string, labels: Record<string, string> = {}): unknown {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

interface PodOpts {
  name?: string;
  namespace?: string;
  uid?: string | null;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  containers?: unknown[];
  nodeName?: string;
  hostNetwork?: boolean;
  podIPs?: string[];
  podIP?: string;
  phase?: string;
  qosClass?: string;
  deletionTimestamp?: string;
}

function pod(o: PodOpts = {}): unknown {
  const name = o.name ?? 'web-1';
  const namespace = o.namespace ?? 'shop';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace,
      ...(o.uid === null ? {} : { uid: o.uid ?? `uid-${name}` }),
      labels: o.labels ?? { app: 'web' },
      annotations: o.annotations ?? { 'sidecar.istio.io/status': '{"initContainers":["istio-init"]}' },
      ...(o.deletionTimestamp ? { deletionTimestamp: o.deletionTimestamp } : {}),
    },
    spec: {
      nodeName: o.nodeName ?? 'node-a',
      hostNetwork: o.hostNetwork ?? false,
      containers: o.containers ?? [
        { name: 'web', image: 'nginx' },
        { name: 'istio-proxy', image: 'proxyv2' },
      ],
    },
    status: {
      phase: o.phase ?? 'Running',
      ...(o.qosClass ? { qosClass: o.qosClass } : {}),
      ...(o.podIP !== undefined ? { podIP: o.podIP } : {}),
      podIPs: (o.podIPs ?? ['10.244.1.5']).map((ip) => ({ ip })),
    },
  };
}

const enabled = [ns('shop', { 'istio-injection': 'enabled' })];

function reasons(r: ModelResult): string[] {
  return r.skipped.map((s) => s.reason);
}

test('an injected pod in an enabled namespace is captured with its settings', () => {
  const r = buildModel({ namespaces: enabled, pods: [pod({ qosClass: 'Burstable' })] }, {});
  assert.deepEqual(r.skipped, []);
  assert.equal(r.captured.length, 1);
  const p = r.captured[0]!;
  assert.deepEqual(p.ref, { namespace: 'shop', name: 'web-1', uid: 'uid-web-1' });
  assert.deepEqual(p.ips, ['10.244.1.5']);
  assert.equal(p.qosClass, 'Burstable');
  assert.equal(p.settings.outboundPort, 15001);
  assert.deepEqual(p.errors, []);
  assert.deepEqual(p.unsupported, []);
});

test('namespace selection table', () => {
  const cases: Array<[Record<string, string> | undefined, string | undefined]> = [
    [{ 'istio-injection': 'enabled' }, undefined],
    [{ 'istio.io/rev': 'canary' }, undefined],
    [{ 'istio.io/rev': '' }, undefined],
    [{ 'istio-injection': 'disabled', 'istio.io/rev': 'canary' }, 'namespace "shop" is labelled istio-injection=disabled'],
    [{ 'istio-injection': 'disabled' }, 'namespace "shop" is labelled istio-injection=disabled'],
    [{ 'istio-injection': 'yes', 'istio.io/rev': 'canary' }, 'namespace "shop" is labelled istio-injection=yes, not istio-injection=enabled'],
    [{}, 'namespace "shop" is not labelled istio-injection=enabled or istio.io/rev'],
    [undefined, 'namespace "shop" not found'],
  ];
  for (const [labels, reason] of cases) {
    const namespaces = labels ? [ns('shop', labels)] : [ns('other', { 'istio-injection': 'enabled' })];
    const r = buildModel({ namespaces, pods: [pod()] }, {});
    assert.deepEqual(reasons(r), reason ? [reason] : [], JSON.stringify(labels));
    assert.equal(r.captured.length, reason ? 0 : 1);
  }
  // istio-injection=disabled wins over a pod that asks for injection
  const r = buildModel({ namespaces: [ns('shop', { 'istio-injection': 'disabled' })], pods: [pod({ labels: { 'sidecar.istio.io/inject': 'true' } })] }, {});
  assert.equal(r.captured.length, 0);
});

test('pod opt-out: label, deprecated annotation, label beats annotation, invalid values', () => {
  const status = { 'sidecar.istio.io/status': '{}' };
  const run = (labels: Record<string, string>, annotations: Record<string, string> = {}) =>
    buildModel({ namespaces: enabled, pods: [pod({ labels, annotations: { ...status, ...annotations } })] }, {});
  assert.deepEqual(reasons(run({ 'sidecar.istio.io/inject': 'false' })), ['pod is labelled sidecar.istio.io/inject=false']);
  assert.deepEqual(reasons(run({}, { 'sidecar.istio.io/inject': 'false' })), ['pod is annotated sidecar.istio.io/inject=false']);
  assert.equal(run({ 'sidecar.istio.io/inject': 'true' }, { 'sidecar.istio.io/inject': 'false' }).captured.length, 1);
  assert.deepEqual(reasons(run({ 'sidecar.istio.io/inject': 'false' }, { 'sidecar.istio.io/inject': 'true' })), [
    'pod is labelled sidecar.istio.io/inject=false',
  ]);
  // an invalid label value is an error and counts as absent: the annotation decides
  const bad = run({ 'sidecar.istio.io/inject': 'no' });
  assert.equal(bad.captured.length, 1);
  assert.deepEqual(bad.captured[0]!.errors, [`invalid value 'no' for label 'sidecar.istio.io/inject': must be "true" or "false"`]);
  assert.deepEqual(reasons(run({ 'sidecar.istio.io/inject': 'False' }, { 'sidecar.istio.io/inject': 'false' })), [
    'pod is annotated sidecar.istio.io/inject=false',
  ]);
});

test('only pods that carry a proxy; never hostNetwork; NONE is not captured', () => {
  const noProxy = pod({ name: 'a', containers: [{ name: 'web' }] });
  const noStatus = pod({ name: 'b', annotations: {} });
  const host = pod({ name: 'c', hostNetwork: true });
  const none = pod({ name: 'd', annotations: { 'sidecar.istio.io/status': '{}', 'sidecar.istio.io/interceptionMode': 'NONE' } });
  const r = buildModel({ namespaces: enabled, pods: [noProxy, noStatus, host, none] }, {});
  assert.equal(r.captured.length, 0);
  assert.deepEqual(reasons(r), [
    'pod has no istio-proxy container',
    'pod has no sidecar.istio.io/status annotation (sidecar not injected)',
    'pod uses hostNetwork',
    'interception mode is NONE',
  ]);
});

test('node filter, phase, IPs, terminating pods', () => {
  const pods = [
    pod({ name: 'here' }),
    pod({ name: 'there', nodeName: 'node-b' }),
    pod({ name: 'done', phase: 'Succeeded' }),
    pod({ name: 'failed', phase: 'Failed' }),
    pod({ name: 'pending', phase: 'Pending', podIPs: [] }),
    pod({ name: 'leaving', deletionTimestamp: '2024-01-01T00:00:00Z' }),
  ];
  const r = buildModel({ namespaces: enabled, pods }, { nodeName: 'node-a' });
  assert.deepEqual(
    r.captured.map((p) => p.ref.name),
    ['here', 'leaving'],
  );
  assert.deepEqual(
    r.skipped.map((s) => [s.ref.name, s.reason]),
    [
      ['there', 'runs on node "node-b", not "node-a"'],
      ['done', 'pod phase is Succeeded'],
      ['failed', 'pod phase is Failed'],
      ['pending', 'no pod IP yet'],
    ],
  );
  // without a node name every node's pods count
  assert.equal(buildModel({ namespaces: enabled, pods }, {}).captured.length, 3);
});

test('pod IPs: dual stack canonical, one per family, podIP fallback, invalid ones dropped', () => {
  const r = buildModel(
    {
      namespaces: enabled,
      pods: [
        pod({ name: 'a', podIPs: ['10.244.1.5', 'FD00:10:244:0:0:0:0:5', '10.244.1.6'] }),
        pod({ name: 'b', podIPs: [], podIP: '10.244.1.7' }),
        pod({ name: 'c', podIPs: ['bogus', '10.244.1.8'] }),
      ],
    },
    {},
  );
  assert.deepEqual(
    r.captured.map((p) => p.ips),
    [['10.244.1.5', 'fd00:10:244::5'], ['10.244.1.7'], ['10.244.1.8']],
  );
  assert.deepEqual(r.captured[2]!.errors, [`invalid pod IP 'bogus' ignored`]);
});

test('defaults: uid from namespace/name, qosClass BestEffort, namespace "default"', () => {
  const r = buildModel(
    {
      namespaces: [ns('shop', { 'istio-injection': 'enabled' }), ns('default', { 'istio.io/rev': 'x' })],
      pods: [
        pod({ uid: null, qosClass: 'Weird' }),
        { ...(pod({ name: 'nons' }) as object), metadata: { name: 'nons', annotations: { 'sidecar.istio.io/status': '{}' } } },
      ],
    },
    {},
  );
  assert.deepEqual(r.skipped, []);
  assert.equal(r.captured[0]!.ref.uid, 'shop/web-1');
  assert.equal(r.captured[0]!.qosClass, 'BestEffort');
  assert.deepEqual(r.captured[1]!.ref, { namespace: 'default', name: 'nons', uid: 'default/nons' });
});

test('annotation errors and unsupported notes travel with the captured pod', () => {
  const r = buildModel(
    {
      namespaces: enabled,
      pods: [
        pod({
          annotations: {
            'sidecar.istio.io/status': '{}',
            'traffic.sidecar.istio.io/includeInboundPorts': '8080,abc',
            'traffic.sidecar.istio.io/excludeInterfaces': 'eth1',
          },
          containers: [{ name: 'istio-proxy', securityContext: { runAsUser: 1500 } }],
        }),
      ],
    },
    {},
  );
  const p = r.captured[0]!;
  assert.equal(p.settings.inboundPorts.mode, 'all');
  assert.deepEqual(p.settings.proxyUids, [1500]);
  assert.deepEqual(p.errors, [`invalid value '8080,abc' for annotation 'traffic.sidecar.istio.io/includeInboundPorts': "abc" is not a valid port`]);
  assert.deepEqual(p.unsupported, [
    'traffic.sidecar.istio.io/excludeInterfaces is enforced for inbound only: outbound connections are decided at connect(), before an output interface is known (interfaces: eth1)',
  ]);
});

test('weird objects are skipped with a reason, never thrown', () => {
  const weird: unknown[] = [
    null,
    42,
    'pod',
    {},
    // identity readable: decided field by field (the malformed field is an error, not the reason)
    { metadata: { name: 'x', namespace: 'shop' }, spec: { containers: 'nope' } },
    { metadata: { name: 'y', namespace: 'shop', labels: { a: 1 } } },
  ];
  const r = buildModel({ namespaces: [null, { metadata: {} }, 'ns', ...enabled], pods: weird }, {});
  assert.equal(r.captured.length, 0);
  assert.equal(r.skipped.length, weird.length);
  for (const s of r.skipped.slice(0, 4)) assert.match(s.reason, /^not a valid pod object: /);
  assert.deepEqual(r.skipped[4]!, {
    ref: { namespace: 'shop', name: 'x', uid: 'shop/x' },
    reason: 'pod has no sidecar.istio.io/status annotation (sidecar not injected)',
  });
  assert.deepEqual(r.skipped[5]!.reason, 'pod has no istio-proxy container');
});

test('a duplicate uid is captured once', () => {
  const r = buildModel({ namespaces: enabled, pods: [pod({ name: 'a', uid: 'u1' }), pod({ name: 'b', uid: 'u1' })] }, {});
  assert.deepEqual(
    r.captured.map((p) => p.ref.name),
    ['a'],
  );
  assert.deepEqual(reasons(r), ['duplicate pod uid u1']);
});

// ---- a wrongly typed value drops only that setting (hardening issue, point 3) -------------------

/** A pod as plain JSON with `patch` applied to it (values of any type: this is about bad input). */
function rawPod(patch: (p: any) => void, name = 'web-1'): unknown {
  const p = JSON.parse(JSON.stringify(pod({ name }))) as any;
  patch(p);
  return p;
}

function one(pods: unknown[], namespaces: unknown[] = enabled): ReturnType<typeof buildModel> {
  return buildModel({ namespaces, pods }, {});
}

test('a number as an annotation value: that annotation is an error and has its default; the pod stays captured', () => {
  const r = one([
    rawPod((p) => {
      p.metadata.annotations['traffic.sidecar.istio.io/excludeOutboundPorts'] = 80;
      p.metadata.annotations['traffic.sidecar.istio.io/includeInboundPorts'] = 8080;
      p.metadata.annotations['prometheus.io/port'] = 9090;
    }),
  ]);
  assert.deepEqual(reasons(r), []);
  const c = r.captured[0]!;
  assert.deepEqual(c.settings.excludeOutboundPorts, []);
  assert.deepEqual(c.settings.inboundPorts, { mode: 'all', exclude: [15090, 15021, 15020] });
  assert.deepEqual(c.errors, [
    `invalid value '80' for annotation 'traffic.sidecar.istio.io/excludeOutboundPorts': not a string`,
    `invalid value '8080' for annotation 'traffic.sidecar.istio.io/includeInboundPorts': not a string`,
    `invalid value '9090' for annotation 'prometheus.io/port': not a string`,
  ]);
  // the sidecar status annotation as a mapping (unquoted JSON in YAML): present, so still injected
  const status = one([rawPod((p) => (p.metadata.annotations['sidecar.istio.io/status'] = { containers: ['istio-proxy'] }))]);
  assert.equal(status.captured.length, 1, JSON.stringify(status.skipped));
  assert.match(
    status.captured[0]!.errors[0]!,
    /^invalid value '\{"containers":\["istio-proxy"\]\}' for annotation 'sidecar\.istio\.io\/status': not a string$/,
  );
  // the whole annotations map unreadable: the pod carries a proxy, so it stays captured with the defaults
  const map = one([rawPod((p) => (p.metadata.annotations = 'sidecar.istio.io/status=x'))]);
  assert.equal(map.captured.length, 1, JSON.stringify(map.skipped));
  assert.deepEqual(map.captured[0]!.settings, defaultCaptureSettings());
  assert.match(map.captured[0]!.errors[0]!, /for metadata\.annotations: not a map/);
});

test('a number as a label value: an error on the pod; the inject label as a boolean counts as absent', () => {
  const r = one([rawPod((p) => (p.metadata.labels = { app: 'web', version: 2 }))]);
  assert.equal(r.captured.length, 1, JSON.stringify(r.skipped));
  assert.deepEqual(r.captured[0]!.errors, [`invalid value '2' for label 'version': not a string`]);
  // `sidecar.istio.io/inject: false` unquoted in YAML is a boolean: not "false", so not an opt-out
  const b = one([rawPod((p) => (p.metadata.labels = { 'sidecar.istio.io/inject': false }))]);
  assert.equal(b.captured.length, 1, JSON.stringify(b.skipped));
  assert.deepEqual(b.captured[0]!.errors, [`invalid value 'false' for label 'sidecar.istio.io/inject': not a string`]);
  const labels = one([rawPod((p) => (p.metadata.labels = ['app=web']))]);
  assert.equal(labels.captured.length, 1);
  assert.match(labels.captured[0]!.errors[0]!, /for metadata\.labels: not a map/);
});

test('runAsUser as a string: an error; the proxy uid is the default 1337, never the text', () => {
  const proxy = (sc: unknown) => one([rawPod((p) => (p.spec.containers[1].securityContext = sc))]).captured[0]!;
  const s = proxy({ runAsUser: '1500' });
  assert.deepEqual([s.settings.proxyUids, s.settings.proxyGids], [[1337], [1337]]);
  assert.deepEqual(s.errors, [
    `invalid value '"1500"' for spec.containers[istio-proxy].securityContext.runAsUser: not a uid (a non-negative integer); the proxy uid is 1337, the default`,
  ]);
  const g = proxy({ runAsUser: 1500, runAsGroup: '7' });
  assert.deepEqual([g.settings.proxyUids, g.settings.proxyGids], [[1500], [1500]]);
  assert.equal(g.errors.length, 1);
  for (const bad of [-1, 1.5, 2 ** 32, true, {}]) {
    const x = proxy({ runAsUser: bad });
    assert.deepEqual(x.settings.proxyUids, [1337], JSON.stringify(bad));
    assert.equal(x.errors.length, 1, JSON.stringify(bad));
  }
  // 0 is a uid ("run as root"): Istio then uses its default, and that is no error
  assert.deepEqual(proxy({ runAsUser: 0 }).errors, []);
  const sc = proxy('root');
  assert.deepEqual(sc.settings.proxyUids, [1337]);
  assert.match(sc.errors[0]!, /securityContext: not an object/);
});

test('a number in a namespace label: the namespace is still found; the error is on its pods', () => {
  const r = one([pod()], [ns('shop', { 'istio-injection': 'enabled', team: 7 } as never)]);
  assert.deepEqual(reasons(r), []);
  assert.deepEqual(r.captured[0]!.errors, [`namespace 'shop': invalid value '7' for label 'team': not a string`]);
  // istio-injection itself malformed: the capturing reading (a pod that carries a proxy stays captured)
  for (const v of [1, true, false, { enabled: true }]) {
    const x = one([pod()], [ns('shop', { 'istio-injection': v } as never)]);
    assert.equal(x.captured.length, 1, `${JSON.stringify(v)}: ${JSON.stringify(x.skipped)}`);
    assert.match(x.captured[0]!.errors[0]!, /^namespace 'shop': invalid value '.*' for label 'istio-injection': not a string; read as enabled/);
  }
  // a malformed istio.io/rev still marks the namespace as a revision's
  assert.equal(one([pod()], [ns('shop', { 'istio.io/rev': 1 } as never)]).captured.length, 1);
  // the string "disabled" still wins, and a namespace with an unreadable labels map is captured
  assert.deepEqual(reasons(one([pod()], [ns('shop', { 'istio-injection': 'disabled', x: 1 } as never)])), [
    'namespace "shop" is labelled istio-injection=disabled',
  ]);
  const unreadable = one([pod()], [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: 'istio-injection=enabled' } }]);
  assert.equal(unreadable.captured.length, 1);
  assert.match(unreadable.captured[0]!.errors[0]!, /^namespace 'shop': invalid value .* for metadata\.labels: not a map/);
});

test('an invalid podIP: the valid podIPs are used; with no valid IP at all the pod is captured by its netns', () => {
  const a = one([rawPod((p) => (p.status.podIP = 'not-an-ip'))]).captured[0]!;
  assert.deepEqual(a.ips, ['10.244.1.5']);
  assert.deepEqual(a.errors, [`invalid pod IP 'not-an-ip' ignored`]);
  const b = one([
    rawPod((p) => {
      p.status.podIP = '10.244.1.9';
      p.status.podIPs = [{ ip: 'garbage' }, { ip: 42 }, 'x'];
    }),
  ]).captured[0]!;
  assert.deepEqual(b.ips, ['10.244.1.9']);
  assert.equal(b.errors.length, 3, JSON.stringify(b.errors));
  const none = one([
    rawPod((p) => {
      p.status.podIP = '10.244.1.999';
      p.status.podIPs = [{ ip: '10.244.1.999' }];
    }),
  ]);
  assert.deepEqual(reasons(none), []);
  const c = none.captured[0]!;
  assert.deepEqual(c.ips, []);
  assert.deepEqual(c.settings, defaultCaptureSettings());
  assert.ok(
    c.errors.some((e) => /no valid pod IP/.test(e)),
    JSON.stringify(c.errors),
  );
  const listNotList = one([rawPod((p) => (p.status.podIPs = '10.244.1.5'))]).captured[0]!;
  assert.match(listNotList.errors[0]!, /status\.podIPs: not a list/);
  // no IP at all (not yet assigned) is still "not yet"
  assert.deepEqual(reasons(one([rawPod((p) => (p.status = { phase: 'Pending', podIPs: [] }))])), ['no pod IP yet']);
});

test('every other field: a malformed value is an error and the capturing reading applies', () => {
  const cases: Array<[string, (p: any) => void, RegExp]> = [
    ['hostNetwork as a string', (p) => (p.spec.hostNetwork = 'false'), /spec\.hostNetwork/],
    ['nodeName as a number', (p) => (p.spec.nodeName = 7), /spec\.nodeName/],
    ['phase as a number', (p) => (p.status.phase = 3), /status\.phase/],
    ['qosClass unknown', (p) => (p.status.qosClass = 'Gold'), /status\.qosClass/],
    ['containers not a list (the status annotation says it was injected)', (p) => (p.spec.containers = 'istio-proxy'), /spec\.containers: not a list/],
    ['a container that is not an object', (p) => p.spec.containers.push('sidecar'), /spec\.containers\[2\]/],
    ['a container name that is not a string', (p) => (p.spec.containers[0].name = 5), /spec\.containers\[0\]\.name/],
    ['env not a list', (p) => (p.spec.containers[1].env = 'ISTIO_META_DNS_CAPTURE=true'), /env/],
    ['the DNS env as a boolean', (p) => (p.spec.containers[1].env = [{ name: 'ISTIO_META_DNS_CAPTURE', value: true }]), /ISTIO_META_DNS_CAPTURE/],
    // no IP can be read: the pod is captured by its network namespace
    ['status not an object', (p) => (p.status = 'Running'), /^invalid value 'Running' for status: not an object/],
  ];
  for (const [what, patch, err] of cases) {
    const r = buildModel({ namespaces: enabled, pods: [rawPod(patch)] }, { nodeName: 'node-a' });
    assert.equal(r.captured.length, 1, `${what}: ${JSON.stringify(r.skipped)}`);
    assert.deepEqual(r.captured[0]!.settings, defaultCaptureSettings(), what);
    assert.ok(
      r.captured[0]!.errors.some((e) => err.test(e)),
      `${what}: ${JSON.stringify(r.captured[0]!.errors)}`,
    );
  }
  // hostNetwork true (the boolean) is still never captured
  assert.deepEqual(reasons(one([rawPod((p) => (p.spec.hostNetwork = true))])), ['pod uses hostNetwork']);
});

test('identity fields are required: a pod without a readable name, namespace or uid is not considered', () => {
  const bad = [
    rawPod((p) => (p.metadata.name = 5)),
    rawPod((p) => (p.metadata.name = '')),
    rawPod((p) => delete p.metadata.name),
    rawPod((p) => (p.metadata.namespace = ['shop'])),
    rawPod((p) => (p.metadata.uid = 12345)),
    rawPod((p) => (p.metadata = 'web-1')),
  ];
  const r = one(bad);
  assert.equal(r.captured.length, 0);
  assert.equal(r.skipped.length, bad.length);
  for (const s of r.skipped) assert.match(s.reason, /^not a valid pod object: metadata/);
});
