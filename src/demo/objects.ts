// The demo's cluster: the Kubernetes objects the agent reads from its cluster file (same shapes as the
// kernel tests use: a pod as the API server returns it once the sidecar injector has run).

export const NODE_NAME = 'sandbox-node';

export const SERVICE = { name: 'reviews', ipv4: '10.244.0.200', ipv6: 'fd00:244::200', vip4: '10.96.0.10', vip6: 'fd00:96::10', port: 80 } as const;

export interface DemoPod {
  namespace: string;
  name: string;
  uid: string;
  ipv4: string;
  ipv6: string;
  /** has an injected istio-proxy sidecar */
  sidecar: boolean;
}

export const PRODUCTPAGE: DemoPod = {
  namespace: 'shop',
  name: 'productpage',
  uid: '3d0b6a8e-5c1f-4e27-9b3a-7f2e1c9d4a10',
  ipv4: '10.244.0.10',
  ipv6: 'fd00:244::10',
  sidecar: true,
};

export const RATINGS: DemoPod = {
  namespace: 'legacy',
  name: 'ratings',
  uid: '9a4e2c71-0b8d-4f36-a5e9-2c7d1b6f3e20',
  ipv4: '10.244.0.20',
  ipv6: 'fd00:244::20',
  sidecar: false,
};

export const APP_UID = 1000;
export const PROXY_UID = 1337;
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;

export const EXCLUDE_ANNOTATION = 'traffic.sidecar.istio.io/excludeOutboundIPRanges';
export const EXCLUDE_RANGE = '10.96.0.0/16';

export function namespaceObject(name: string, labels: Record<string, string>): object {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export function podObject(p: DemoPod, annotations: Record<string, string> = {}): object {
  const ips = [p.ipv4, p.ipv6];
  const containers: object[] = [{ name: 'app', securityContext: { runAsUser: APP_UID, runAsGroup: APP_UID } }];
  const ann: Record<string, string> = { ...annotations };
  if (p.sidecar) {
    ann['sidecar.istio.io/status'] = '{"containers":["istio-proxy"]}';
    containers.push({ name: 'istio-proxy', securityContext: { runAsUser: PROXY_UID, runAsGroup: PROXY_UID } });
  }
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid, labels: { app: p.name }, annotations: ann },
    spec: { nodeName: NODE_NAME, containers },
    status: { phase: 'Running', qosClass: 'BestEffort', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  };
}

/** The cluster file's text: a List of both namespaces and both pods. */
export function clusterFile(opts: { excludeVip: boolean }): string {
  const items = [
    namespaceObject(PRODUCTPAGE.namespace, { 'istio-injection': 'enabled' }),
    namespaceObject(RATINGS.namespace, {}),
    podObject(PRODUCTPAGE, opts.excludeVip ? { [EXCLUDE_ANNOTATION]: EXCLUDE_RANGE } : {}),
    podObject(RATINGS),
  ];
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2) + '\n';
}
