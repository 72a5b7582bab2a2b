// Objects tests put into the store: pods as a scheduler and a kubelet leave them, and namespaces.
import type { KubeObject } from './resources.js';

export interface PodSpec {
  name: string;
  namespace?: string;
  /** spec.nodeName: unset for a pod the scheduler has not placed yet */
  node?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  podIP?: string;
  podIPs?: string[];
  hostNetwork?: boolean;
}

export function pod(p: PodSpec): KubeObject {
  const metadata: NonNullable<KubeObject['metadata']> = { name: p.name, namespace: p.namespace ?? 'default' };
  if (p.labels) metadata.labels = { ...p.labels };
  if (p.annotations) metadata.annotations = { ...p.annotations };
  const spec: Record<string, unknown> = { containers: [{ name: 'app', image: 'app:1' }], restartPolicy: 'Always', schedulerName: 'default-scheduler' };
  if (p.node) spec.nodeName = p.node;
  if (p.hostNetwork) spec.hostNetwork = true;
  const status: Record<string, unknown> = { phase: p.phase ?? (p.node ? 'Running' : 'Pending') };
  const ips = p.podIPs ?? (p.podIP ? [p.podIP] : []);
  if (ips.length) {
    status.podIP = ips[0];
    status.podIPs = ips.map((ip) => ({ ip }));
  }
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec, status };
}

export function namespace(name: string, labels?: Record<string, string>): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: labels ? { name, labels: { ...labels } } : { name } };
}
