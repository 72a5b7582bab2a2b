// The resource types the test API server serves: what discovery says about them, which field labels a
// field selector may use (the real per-type sets: an unsupported label is a 400 there too), and how a
// create through the API prepares an object (the REST strategy's PrepareForCreate).

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [k: string]: unknown;
}

/** An object as the store holds it: identity and version always set */
export interface StoredObject extends KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta & { name: string; uid: string; resourceVersion: string; creationTimestamp: string };
}

export interface ResourceType {
  /** the URL segment and RBAC resource name */
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames: string[];
  verbs: string[];
  /** subresources served (only `status` is) */
  subresources: string[];
  fieldLabels: readonly string[];
  fields(o: StoredObject): Record<string, string>;
  /** what a create through the API does to the object before it is stored */
  prepareForCreate?(o: StoredObject): void;
  /** what every write (through the API or the store) enforces */
  normalize?(o: StoredObject): void;
}

const ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

/** A string at a path of an untyped object ('' when absent, as the real field sets have it). */
export function field(o: unknown, ...path: string[]): string {
  let cur: unknown = o;
  for (const p of path) {
    if (typeof cur !== 'object' || cur === null) return '';
    cur = (cur as Record<string, unknown>)[p];
  }
  if (typeof cur === 'string') return cur;
  if (typeof cur === 'number' || typeof cur === 'boolean') return String(cur);
  return '';
}

const meta = (o: StoredObject, namespaced: boolean): Record<string, string> =>
  namespaced ? { 'metadata.name': o.metadata.name, 'metadata.namespace': o.metadata.namespace ?? '' } : { 'metadata.name': o.metadata.name };

export const NAMESPACES: ResourceType = {
  plural: 'namespaces',
  singular: 'namespace',
  kind: 'Namespace',
  listKind: 'NamespaceList',
  namespaced: false,
  shortNames: ['ns'],
  verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
  subresources: ['status'],
  fieldLabels: ['metadata.name', 'status.phase'],
  fields: (o) => ({ ...meta(o, false), 'status.phase': field(o, 'status', 'phase') }),
  prepareForCreate: (o) => {
    o.status = { phase: 'Active' };
    o.spec = { finalizers: ['kubernetes'] };
  },
  // the real server keeps this label on every namespace (since 1.21), whatever the writer sends
  normalize: (o) => {
    o.metadata.labels = { ...o.metadata.labels, 'kubernetes.io/metadata.name': o.metadata.name };
    if (field(o, 'status', 'phase') === '') o.status = { ...(o.status as object | undefined), phase: 'Active' };
  },
};

export const PODS: ResourceType = {
  plural: 'pods',
  singular: 'pod',
  kind: 'Pod',
  listKind: 'PodList',
  namespaced: true,
  shortNames: ['po'],
  verbs: ALL_VERBS,
  subresources: ['status'],
  fieldLabels: [
    'metadata.name',
    'metadata.namespace',
    'spec.nodeName',
    'spec.restartPolicy',
    'spec.schedulerName',
    'spec.serviceAccountName',
    'spec.hostNetwork',
    'status.phase',
    'status.podIP',
    'status.nominatedNodeName',
  ],
  fields: (o) => ({
    ...meta(o, true),
    'spec.nodeName': field(o, 'spec', 'nodeName'),
    'spec.restartPolicy': field(o, 'spec', 'restartPolicy'),
    'spec.schedulerName': field(o, 'spec', 'schedulerName'),
    'spec.serviceAccountName': field(o, 'spec', 'serviceAccountName'),
    'spec.hostNetwork': field(o, 'spec', 'hostNetwork') || 'false',
    'status.phase': field(o, 'status', 'phase'),
    'status.podIP': field(o, 'status', 'podIP'),
    'status.nominatedNodeName': field(o, 'status', 'nominatedNodeName'),
  }),
  // the real strategy drops a status sent with the create: a new pod is Pending until a kubelet says more
  prepareForCreate: (o) => {
    o.status = { phase: 'Pending' };
  },
};

export const EVENTS: ResourceType = {
  plural: 'events',
  singular: 'event',
  kind: 'Event',
  listKind: 'EventList',
  namespaced: true,
  shortNames: ['ev'],
  verbs: ALL_VERBS,
  subresources: [],
  fieldLabels: [
    'metadata.name',
    'metadata.namespace',
    'involvedObject.kind',
    'involvedObject.namespace',
    'involvedObject.name',
    'involvedObject.uid',
    'involvedObject.apiVersion',
    'involvedObject.resourceVersion',
    'involvedObject.fieldPath',
    'reason',
    'reportingComponent',
    'source',
    'type',
  ],
  fields: (o) => ({
    ...meta(o, true),
    'involvedObject.kind': field(o, 'involvedObject', 'kind'),
    'involvedObject.namespace': field(o, 'involvedObject', 'namespace'),
    'involvedObject.name': field(o, 'involvedObject', 'name'),
    'involvedObject.uid': field(o, 'involvedObject', 'uid'),
    'involvedObject.apiVersion': field(o, 'involvedObject', 'apiVersion'),
    'involvedObject.resourceVersion': field(o, 'involvedObject', 'resourceVersion'),
    'involvedObject.fieldPath': field(o, 'involvedObject', 'fieldPath'),
    reason: field(o, 'reason'),
    reportingComponent: field(o, 'reportingComponent'),
    source: field(o, 'source', 'component'),
    type: field(o, 'type'),
  }),
};

/** core/v1 as served; add a type here (and nothing else) to serve another core resource */
export const CORE_V1: readonly ResourceType[] = [NAMESPACES, PODS, EVENTS];
