import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../src/model/pod-model.js';
import type { ModelResult } from '../../src/model/types.js';

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
      containers: o.containers ?? [{ name: 'web', image: 'nginx' }, { name: 'istio-proxy', image: 'proxyv2' }],
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
    [
      { 'istio-injection': 'yes', 'istio.io/rev': 'canary' },
      'namespace "shop" is labelled istio-injection=yes, not istio-injection=enabled',
    ],
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
  const r = buildModel(
    { namespaces: [ns('shop', { 'istio-injection': 'disabled' })], pods: [pod({ labels: { 'sidecar.istio.io/inject': 'true' } })] },
    {},
  );
  assert.equal(r.captured.length, 0);
});

test('pod opt-out: label, deprecated annotation, label beats annotation, invalid values', () => {
  const status = { 'sidecar.istio.io/status': '{}' };
  const run = (labels: Record<string, string>, annotations: Record<string, string> = {}) =>
    buildModel({ namespaces: enabled, pods: [pod({ labels, annotations: { ...status, ...annotations } })] }, {});
  assert.deepEqual(reasons(run({ 'sidecar.istio.io/inject': 'false' })), ['pod is labelled sidecar.istio.io/inject=false']);
  assert.deepEqual(reasons(run({}, { 'sidecar.istio.io/inject': 'false' })), [
    'pod is annotated sidecar.istio.io/inject=false',
  ]);
  assert.equal(run({ 'sidecar.istio.io/inject': 'true' }, { 'sidecar.istio.io/inject': 'false' }).captured.length, 1);
  assert.deepEqual(reasons(run({ 'sidecar.istio.io/inject': 'false' }, { 'sidecar.istio.io/inject': 'true' })), [
    'pod is labelled sidecar.istio.io/inject=false',
  ]);
  // an invalid label value is an error and counts as absent: the annotation decides
  const bad = run({ 'sidecar.istio.io/inject': 'no' });
  assert.equal(bad.captured.length, 1);
  assert.deepEqual(bad.captured[0]!.errors, [
    `invalid value 'no' for label 'sidecar.istio.io/inject': must be "true" or "false"`,
  ]);
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
      pods: [pod({ uid: null, qosClass: 'Weird' }), { ...(pod({ name: 'nons' }) as object), metadata: { name: 'nons', annotations: { 'sidecar.istio.io/status': '{}' } } }],
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
  assert.deepEqual(p.errors, [
    `invalid value '8080,abc' for annotation 'traffic.sidecar.istio.io/includeInboundPorts': "abc" is not a valid port`,
  ]);
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
    { metadata: { name: 'x', namespace: 'shop' }, spec: { containers: 'nope' } },
    { metadata: { name: 'y', namespace: 'shop', labels: { a: 1 } } },
  ];
  const r = buildModel({ namespaces: [null, { metadata: {} }, ...enabled], pods: weird }, {});
  assert.equal(r.captured.length, 0);
  assert.equal(r.skipped.length, weird.length);
  for (const s of r.skipped) assert.match(s.reason, /^not a valid pod object: /);
  assert.deepEqual(r.skipped[4]!.ref, { namespace: 'shop', name: 'x', uid: 'shop/x' });
  assert.match(r.skipped[4]!.reason, /spec\.containers/);
});

test('a duplicate uid is captured once', () => {
  const r = buildModel({ namespaces: enabled, pods: [pod({ name: 'a', uid: 'u1' }), pod({ name: 'b', uid: 'u1' })] }, {});
  assert.deepEqual(r.captured.map((p) => p.ref.name), ['a']);
  assert.deepEqual(reasons(r), ['duplicate pod uid u1']);
});
