// deploy/ offline: every object validates against the Kubernetes schemas (kubernetes-models: the API's
// OpenAPI schemas compiled to validators, plus its TypeScript interfaces, through which the TypeScript
// compiler rejects a field the API does not have, e.g. a misspelt mountPropagation, which the OpenAPI
// schemas let through); the kustomizations list exactly their directory's files and nothing else (so the
// rendering `kubectl apply -k` sends is those files as they are); and the DaemonSet says what the agent
// needs, consistently: flags, mounts, probes, the CNI socket, the service account.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { parse } from 'yaml';
import { packageRoot } from '../../src/util/paths.js';
import { DEFAULT_CNI_SOCKET } from '../../src/cni/protocol.js';
import {
  DEPLOY,
  agentDaemonSet,
  agentRules,
  container,
  flag,
  loadDocs,
  uninstallDaemonSet,
  yamlFiles,
  type Container,
  type DaemonSet,
  type Doc,
} from '../support/deploy.js';

const DIRS = (): string[] => [DEPLOY(), join(DEPLOY(), 'uninstall')];
const allDocs = (): Doc[] => DIRS().flatMap((d) => loadDocs(d).map((x) => ({ ...x, file: join(d.slice(DEPLOY().length + 1), x.file) })));

/** kubernetes-models' module and interface for an apiVersion/kind: apps/v1 DaemonSet -> kubernetes-models/apps/v1/DaemonSet */
function model(apiVersion: string, kind: string): { module: string; iface: string } {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  return { module: `kubernetes-models/${group ? `${group}/` : ''}${version}/${kind}`, iface: `I${kind}` };
}

interface Validating {
  validate(): void;
}
type ModelClass = new (data: unknown) => Validating;

test('every object of deploy/ and deploy/uninstall/ validates against the Kubernetes schemas', async () => {
  const docs = allDocs();
  assert.ok(docs.length >= 6);
  for (const d of docs) {
    const m = model(d.obj.apiVersion, d.obj.kind);
    const mod = (await import(m.module)) as Record<string, ModelClass | undefined>;
    const Model = mod[d.obj.kind];
    assert.ok(Model, `${d.file}: no schema for ${d.obj.apiVersion} ${d.obj.kind}`);
    assert.doesNotThrow(() => new Model(d.obj).validate(), `${d.file}: ${d.obj.kind} ${d.obj.metadata.name}`);
  }
});

test('the schema check fails where it must: a wrong type, a missing required field', async () => {
  const { DaemonSet: DS } = (await import('kubernetes-models/apps/v1/DaemonSet')) as unknown as { DaemonSet: ModelClass };
  const ds = structuredClone(agentDaemonSet()) as unknown as {
    spec: { template: { spec: { containers: Array<{ ports: Array<{ containerPort: unknown }> }> } } };
  };
  ds.spec.template.spec.containers[0]!.ports[0]!.containerPort = 'metrics';
  assert.throws(() => new DS(ds).validate(), /containerPort must be integer/);
  const noSelector = structuredClone(agentDaemonSet()) as unknown as { spec: { selector?: unknown } };
  delete noSelector.spec.selector;
  assert.throws(() => new DS(noSelector).validate(), /selector/);
});

/** TypeScript's excess property check, object literal against the API's interface: every field the API does not have. */
function unknownFields(docs: Array<{ name: string; obj: object; apiVersion: string; kind: string }>): string[] {
  const file = join(packageRoot(), 'test', 'unit', '__deploy-fields.ts');
  const text = docs
    .map((d, i) => {
      const m = model(d.apiVersion, d.kind);
      return `import type { ${m.iface} as T${i} } from '${m.module}';\nexport const o${i}: T${i} = ${JSON.stringify(d.obj, null, 1)};\n`;
    })
    .join('');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  host.getSourceFile = (f, lang, onError, create) => (f === file ? ts.createSourceFile(f, text, lang) : getSourceFile(f, lang, onError, create));
  host.fileExists = (f) => f === file || fileExists(f);
  host.readFile = (f) => (f === file ? text : readFile(f));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : 0;
    const i = d.file ? text.slice(0, d.start).split('\nexport const o').length - 2 : -1;
    return `${docs[i]?.name ?? '?'} (line ${where}): ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

test('no object of deploy/ has a field the Kubernetes API does not have (TypeScript excess property check against the API types)', () => {
  const docs = allDocs().map((d) => ({ name: `${d.file}: ${d.obj.kind} ${d.obj.metadata.name}`, obj: d.obj, apiVersion: d.obj.apiVersion, kind: d.obj.kind }));
  assert.deepEqual(unknownFields(docs), []);
  // and it does catch one
  const typo = structuredClone(agentDaemonSet()) as unknown as {
    spec: { template: { spec: { containers: Array<{ volumeMounts: Array<Record<string, unknown>> }> } } };
  };
  typo.spec.template.spec.containers[0]!.volumeMounts[0]!.mountPropogation = 'HostToContainer';
  const found = unknownFields([{ name: 'typo', obj: typo, apiVersion: 'apps/v1', kind: 'DaemonSet' }]);
  assert.equal(found.length, 1);
  assert.match(found[0]!, /mountPropogation/);
});

test('each kustomization lists exactly the files of its directory, and nothing but resources (the rendering is those files)', () => {
  for (const dir of DIRS()) {
    const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(
      Object.keys(k).sort(),
      ['apiVersion', 'kind', 'resources'],
      `${dir}/kustomization.yaml: only resources (no transformer changes what is applied)`,
    );
    assert.equal(k.apiVersion, 'kustomize.config.k8s.io/v1beta1');
    assert.equal(k.kind, 'Kustomization');
    assert.deepEqual(
      [...(k.resources as string[])].sort(),
      yamlFiles(dir).filter((f) => f !== 'kustomization.yaml'),
      dir,
    );
  }
  // the rendering: unique objects; every namespaced one in a namespace that deploy/ makes
  const main = loadDocs();
  const ids = main.map((d) => `${d.obj.kind}/${d.obj.metadata.namespace ?? ''}/${d.obj.metadata.name}`);
  assert.equal(new Set(ids).size, ids.length);
  const namespaces = new Set(main.filter((d) => d.obj.kind === 'Namespace').map((d) => d.obj.metadata.name));
  const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
  for (const d of allDocs()) {
    if (clusterScoped.has(d.obj.kind)) assert.equal(d.obj.metadata.namespace, undefined, `${d.file}: ${d.obj.kind} is cluster-scoped`);
    else assert.ok(namespaces.has(d.obj.metadata.namespace ?? ''), `${d.file}: ${d.obj.kind} ${d.obj.metadata.name} in a namespace deploy/ makes`);
  }
});

const mountOf = (c: Container, path: string): { volume: string; sub: string } | undefined => {
  const m = (c.volumeMounts ?? [])
    .filter((v) => path === v.mountPath || path.startsWith(`${v.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  return m ? { volume: m.name, sub: path.slice(m.mountPath.length) } : undefined;
};

/** the host path a container path is on, through the container's hostPath mounts */
function hostPathOf(ds: DaemonSet, c: Container, path: string): string | undefined {
  const m = mountOf(c, path);
  const v = ds.spec.template.spec.volumes?.find((x) => x.name === m?.volume);
  return v?.hostPath && m ? `${v.hostPath.path}${m.sub}` : undefined;
}
const normRun = (p: string): string => p.replace(/^\/var\/run\//, '/run/');

test('the DaemonSet: in-cluster, NODE_NAME from the downward API, host mounts behind every path flag, probes on the metrics address', () => {
  const ds = agentDaemonSet();
  const spec = ds.spec.template.spec;
  const agent = container(ds, 'agent');
  const args = agent.args ?? [];
  assert.equal(args[0], 'agent');
  assert.equal(flag(args, '--kubeconfig'), undefined, 'in-cluster: no kubeconfig');
  assert.equal(flag(args, '--cluster-file'), undefined, 'in-cluster: no cluster file');
  assert.deepEqual(agent.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  assert.equal(spec.hostNetwork, true);
  assert.equal(spec.hostPID, true);
  assert.equal(spec.priorityClassName, 'system-node-critical');
  assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }], 'every taint tolerated');

  // bpffs: the host's, seen from the host (pins outlive the pod)
  const bpffs = flag(args, '--bpffs')!;
  assert.equal(hostPathOf(ds, agent, bpffs), bpffs, '--bpffs is on the host /sys/fs/bpf at the same path');
  assert.ok(bpffs.startsWith('/sys/fs/bpf/'));
  const bpfMount = agent.volumeMounts!.find((m) => m.mountPath === '/sys/fs/bpf')!;
  assert.equal(bpfMount.mountPropagation, 'HostToContainer');
  const init = container(ds, 'bpffs');
  assert.ok(spec.initContainers?.[0] === init, 'bpffs is mounted on the node before the agent starts');
  assert.equal(init.volumeMounts?.find((m) => m.mountPath === '/sys/fs/bpf')?.name, bpfMount.name);
  // cgroup: the host's root at --cgroup-root
  assert.equal(hostPathOf(ds, agent, flag(args, '--cgroup-root')!), '/sys/fs/cgroup');
  // state dir and the CNI socket: on the host's /run/meshlane, the same path inside and out
  assert.equal(hostPathOf(ds, agent, flag(args, '--state-dir')!), '/run/meshlane');
  const cni = container(ds, 'cni');
  assert.deepEqual((cni.args ?? []).slice(0, 3), ['cni', 'install', '--watch']);
  const socket = flag(cni.args ?? [], '--cni-socket')!;
  const agentSocket = flag(args, '--cni-socket') ?? DEFAULT_CNI_SOCKET;
  assert.equal(normRun(socket), normRun(agentSocket), 'the plugin is told the socket the agent serves');
  assert.equal(normRun(hostPathOf(ds, agent, normRun(agentSocket))!), normRun(socket), 'and it is the same path on the node');
  assert.equal(hostPathOf(ds, cni, flag(cni.args ?? [], '--cni-bin-dir')!), '/opt/cni/bin');
  assert.equal(hostPathOf(ds, cni, flag(cni.args ?? [], '--cni-conf-dir')!), '/etc/cni/net.d');

  // probes: kubelet (on the node: hostNetwork) asks the agent's metrics address
  const [host, port] = flag(args, '--metrics-address')!.split(/:(?=\d+$)/);
  assert.equal(agent.ports?.find((p) => p.name === 'metrics')?.containerPort, Number(port));
  for (const [probe, path] of [
    [agent.startupProbe, '/healthz'],
    [agent.livenessProbe, '/healthz'],
    [agent.readinessProbe, '/readyz'],
  ] as const) {
    assert.deepEqual(probe?.httpGet, { host, port: Number(port), path });
  }

  // volumes: every mount has its volume, every volume is mounted
  const all = [...(spec.initContainers ?? []), ...spec.containers];
  const vols = new Set((spec.volumes ?? []).map((v) => v.name));
  const used = new Set(all.flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name)));
  assert.deepEqual(
    [...used].filter((v) => !vols.has(v)),
    [],
  );
  assert.deepEqual(
    [...vols].filter((v) => !used.has(v)),
    [],
  );
  // named capabilities, never privileged; requests and a memory limit on every container; one image
  for (const c of all) {
    assert.notEqual(c.securityContext?.privileged, true, `${c.name} is not privileged`);
    assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${c.name} drops every capability it does not name`);
    assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory, `${c.name}: requests and a memory limit`);
    assert.equal(c.image, agent.image);
  }
  assert.deepEqual(cni.securityContext?.capabilities?.add ?? [], [], 'installing the CNI plugin needs no capability');
});

test('RBAC: the ClusterRole bound to the DaemonSet’s service account (rules checked against the agent’s requests in rbac-requests.test.ts)', () => {
  const docs = loadDocs();
  const ds = agentDaemonSet(docs);
  assert.ok(
    docs.some(
      (d) =>
        d.obj.kind === 'ServiceAccount' &&
        d.obj.metadata.name === ds.spec.template.spec.serviceAccountName &&
        d.obj.metadata.namespace === ds.metadata.namespace,
    ),
  );
  assert.deepEqual(agentRules(docs), [
    { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['list', 'watch'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  ]);
});

test('the uninstall DaemonSet removes what the agent’s made: the same bpffs, CNI bin and conf dirs on the node; no API access', () => {
  const ds = agentDaemonSet();
  const un = uninstallDaemonSet();
  const u = container(un, 'uninstall');
  const args = u.args ?? [];
  assert.equal(args[0], 'uninstall');
  assert.equal(flag(args, '--bpffs'), flag(container(ds, 'agent').args ?? [], '--bpffs'));
  const cni = container(ds, 'cni');
  assert.equal(hostPathOf(un, u, flag(args, '--cni-bin-dir')!), hostPathOf(ds, cni, flag(cni.args ?? [], '--cni-bin-dir')!));
  assert.equal(hostPathOf(un, u, flag(args, '--cni-conf-dir')!), hostPathOf(ds, cni, flag(cni.args ?? [], '--cni-conf-dir')!));
  assert.equal(hostPathOf(un, u, flag(args, '--bpffs')!), flag(args, '--bpffs'));
  assert.equal(un.spec.template.spec.automountServiceAccountToken, false);
  assert.deepEqual(un.spec.template.spec.tolerations, [{ operator: 'Exists' }]);
  assert.equal(u.image, container(ds, 'agent').image);
});
