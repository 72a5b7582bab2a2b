// deploy/ as the tests read it: every YAML document of a directory's files, the agent's DaemonSet and
// its containers, the ClusterRole bound to the agent's service account, and a container's --flag=value
// arguments. Shared by the schema/semantics test (unit), the RBAC test and the image test (kernel).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { packageRoot } from '../../src/util/paths.js';
import type { PolicyRule } from './kube/rbac.js';

export const DEPLOY = (): string => join(packageRoot(), 'deploy');

export interface Doc {
  file: string;
  /** the document as parsed (a plain object) */
  obj: K8sObject;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  mountPropagation?: string;
}
export interface HttpProbe {
  httpGet?: { host?: string; port: number | string; path: string };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: VolumeMount[];
  ports?: Array<{ name?: string; containerPort: number }>;
  securityContext?: {
    privileged?: boolean;
    runAsUser?: number;
    capabilities?: { add?: string[]; drop?: string[] };
  };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  livenessProbe?: HttpProbe;
  readinessProbe?: HttpProbe;
  startupProbe?: HttpProbe;
}
export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
}
export interface PodSpec {
  serviceAccountName?: string;
  hostNetwork?: boolean;
  hostPID?: boolean;
  priorityClassName?: string;
  tolerations?: Array<Record<string, string>>;
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
  automountServiceAccountToken?: boolean;
}
export interface DaemonSet extends K8sObject {
  spec: { template: { spec: PodSpec } };
}

/** The YAML files of a directory (not its subdirectories), sorted. */
export function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => /\.ya?ml$/.test(n) && statSync(join(dir, n)).isFile())
    .sort();
}

/** Every document of the files of `dir` but its kustomization.yaml. */
export function loadDocs(dir = DEPLOY()): Doc[] {
  const out: Doc[] = [];
  for (const f of yamlFiles(dir).filter((n) => n !== 'kustomization.yaml')) {
    for (const d of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      if (d.errors.length) throw new Error(`${f}: ${d.errors.map((e) => e.message).join('; ')}`);
      const obj = d.toJS() as K8sObject | null;
      if (obj) out.push({ file: f, obj });
    }
  }
  return out;
}

export function findObject<T extends K8sObject>(docs: Doc[], kind: string, name: string): T {
  const d = docs.find((x) => x.obj.kind === kind && x.obj.metadata.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in deploy/`);
  return d.obj as T;
}

export const agentDaemonSet = (docs = loadDocs()): DaemonSet => findObject<DaemonSet>(docs, 'DaemonSet', 'meshlane');
export const uninstallDaemonSet = (): DaemonSet => findObject<DaemonSet>(loadDocs(join(DEPLOY(), 'uninstall')), 'DaemonSet', 'meshlane-uninstall');

export function container(ds: DaemonSet, name: string): Container {
  const s = ds.spec.template.spec;
  const c = [...(s.initContainers ?? []), ...s.containers].find((x) => x.name === name);
  if (!c) throw new Error(`DaemonSet ${ds.metadata.name} has no container ${name}`);
  return c;
}

/** --flag=value (or --flag value) of a container's args; undefined when absent, '' for a bare --flag. */
export function flag(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === name) return args[i + 1] !== undefined && !args[i + 1]!.startsWith('--') ? args[i + 1] : '';
    if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
  }
  return undefined;
}

/** The rules of the ClusterRole(s) bound to the service account the agent's DaemonSet runs as. */
export function agentRules(docs = loadDocs()): PolicyRule[] {
  const ds = agentDaemonSet(docs);
  const sa = ds.spec.template.spec.serviceAccountName ?? 'default';
  const ns = ds.metadata.namespace;
  const roles = docs
    .filter((d) => d.obj.kind === 'ClusterRoleBinding')
    .map((d) => d.obj as K8sObject & { roleRef: { kind: string; name: string }; subjects: Array<{ kind: string; name: string; namespace?: string }> })
    .filter((b) => b.roleRef.kind === 'ClusterRole' && b.subjects.some((s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === ns))
    .map((b) => b.roleRef.name);
  return docs
    .filter((d) => d.obj.kind === 'ClusterRole' && roles.includes(d.obj.metadata.name))
    .flatMap((d) => (d.obj as K8sObject & { rules: PolicyRule[] }).rules);
}
