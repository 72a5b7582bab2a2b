// Kubernetes objects -> which pods to capture and how (capture-spec section 2). Pure: no I/O, never
// throws on a strange object.
//
// Every field is read on its own. Only the identity fields (metadata.name, and metadata.namespace and
// metadata.uid when given) decide whether a pod is considered at all. Any other field with a wrong
// type or value is an error on that pod ("invalid value '<v>' for <field>: <why>") and the capturing
// reading applies to that one setting: a malformed value never widens the bypass, and never turns a
// captured pod into a released one. Only what is positively known releases a pod (no istio-proxy
// container, no sidecar status annotation, istio-injection=disabled, inject=false, hostNetwork: true,
// interception mode NONE, a finished phase, another node).

import { canonicalIp } from '../util/ip.js';
import { parseCaptureSettings, PROXY_CONTAINER, type ContainerLike } from './annotations.js';
import type { DesiredPod, Family, ModelResult, PodRef, QosClass, SkippedPod } from './types.js';

export const INJECT_LABEL = 'sidecar.istio.io/inject';
export const STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const NS_INJECTION_LABEL = 'istio-injection';
export const NS_REV_LABEL = 'istio.io/rev';

export interface BuildModelOptions {
  /** only pods scheduled on this node (spec.nodeName) */
  nodeName?: string;
}

type Obj = Record<string, unknown>;
type Labels = Readonly<Record<string, string>>;

const isRecord = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const absent = (v: unknown): v is null | undefined => v === undefined || v === null;
const isName = (v: unknown): v is string => typeof v === 'string' && v !== '';

/** A value as an error message shows it: strings as they are, anything else as JSON; long ones cut. */
function show(v: unknown): string {
  const s = typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const invalid = (v: unknown, field: string, why: string): string => `invalid value '${show(v)}' for ${field}: ${why}`;

/** A labels or annotations map: its string entries, the keys whose value was not a string, and
 *  whether the map itself could not be read. Problems are pushed to `errors`. */
export interface StringMap {
  map: Labels;
  malformed: Set<string>;
  unreadable: boolean;
}

function readStringMap(v: unknown, kind: 'label' | 'annotation', errors: string[], prefix = ''): StringMap {
  if (absent(v)) return { map: {}, malformed: new Set(), unreadable: false };
  if (!isRecord(v)) {
    errors.push(prefix + invalid(v, `metadata.${kind}s`, 'not a map'));
    return { map: {}, malformed: new Set(), unreadable: true };
  }
  const map: Record<string, string> = {};
  const malformed = new Set<string>();
  for (const [k, val] of Object.entries(v)) {
    if (typeof val === 'string') map[k] = val;
    else {
      malformed.add(k);
      errors.push(prefix + invalid(val, `${kind} '${k}'`, 'not a string'));
    }
  }
  return { map, malformed, unreadable: false };
}

/** What the model reads of a Namespace (decided once per namespace, reused for each of its pods). */
export interface NamespaceInfo {
  labels: StringMap;
  /** problems with the namespace object, reported on each of its pods */
  errors: string[];
}

/** Builds the desired capture state from namespaces and pods (plain Kubernetes JSON). */
export function buildModel(input: { namespaces: unknown[]; pods: unknown[] }, opts: BuildModelOptions = {}): ModelResult {
  const namespaces = namespaceInfos(input.namespaces);
  const result: ModelResult = { captured: [], skipped: [] };
  const seen = new Set<string>();
  for (const raw of input.pods) {
    const d = decidePod(raw, namespaces, opts);
    if ('reason' in d) {
      result.skipped.push(d);
    } else if (seen.has(d.ref.uid)) {
      result.skipped.push({ ref: d.ref, reason: `duplicate pod uid ${d.ref.uid}` });
    } else {
      seen.add(d.ref.uid);
      result.captured.push(d);
    }
  }
  return result;
}

function namespaceInfos(items: unknown[]): Map<string, NamespaceInfo> {
  const out = new Map<string, NamespaceInfo>();
  for (const raw of items) {
    const info = namespaceInfo(raw);
    if (info) out.set(info.name, info.info);
  }
  return out;
}

/** One Namespace as the model reads it; undefined when its name cannot be read (it cannot be matched to its
 * pods, which then read "not found"). */
export function namespaceInfo(raw: unknown): { name: string; info: NamespaceInfo } | undefined {
  if (!isRecord(raw) || !isRecord(raw.metadata) || !isName(raw.metadata.name)) return undefined;
  const name = raw.metadata.name;
  const errors: string[] = [];
  const labels = readStringMap(raw.metadata.labels, 'label', errors, `namespace '${name}': `);
  if (labels.malformed.has(NS_INJECTION_LABEL)) {
    // `istio-injection: true` or `1`, unquoted in YAML (Kubernetes would refuse it): the capturing
    // reading is "enabled"; only the string "disabled" opts a namespace out
    const i = errors.findIndex((e) => e.endsWith(`for label '${NS_INJECTION_LABEL}': not a string`));
    if (i >= 0) errors[i] += '; read as enabled';
  }
  return { name, info: { labels, errors } };
}

/** The namespace a pod object names (metadata.namespace, default 'default'); what decideOne looks up. */
export function podNamespace(raw: unknown): string {
  return roughRef(raw).namespace;
}

/** The key a pod is known by: metadata.uid, or `<namespace>/<name>` without one (as the model's refs). */
export function podKey(raw: unknown): string {
  return roughRef(raw).uid;
}

/** One pod decided on its own, from its namespace as namespaceInfo() read it (undefined: not found).
 * buildModel() is this for every pod, plus the duplicate-uid check. */
export function decideOne(raw: unknown, ns: NamespaceInfo | undefined, opts: BuildModelOptions = {}): DesiredPod | SkippedPod {
  const ref = identity(raw);
  const nsName = typeof ref === 'string' ? roughRef(raw).namespace : ref.namespace;
  return decidePod(raw, ns ? new Map([[nsName, ns]]) : new Map(), opts);
}

/** A ref for an object whose identity could not be read: whatever can be read of it. */
function roughRef(raw: unknown): PodRef {
  const meta = isRecord(raw) && isRecord(raw.metadata) ? raw.metadata : {};
  const str = (v: unknown, d: string): string => (isName(v) ? v : d);
  const namespace = str(meta.namespace, 'default');
  const name = str(meta.name, '<unnamed>');
  return { namespace, name, uid: str(meta.uid, `${namespace}/${name}`) };
}

/** metadata.name (required), metadata.namespace and metadata.uid (defaulted when absent). */
function identity(raw: unknown): PodRef | string {
  if (!isRecord(raw)) return `not an object (${show(raw)})`;
  const meta = raw.metadata;
  if (!isRecord(meta)) return 'metadata: not an object';
  if (!isName(meta.name)) return `metadata.name: ${absent(meta.name) ? 'missing' : `'${show(meta.name)}' is not a name`}`;
  if (!absent(meta.namespace) && !isName(meta.namespace)) return `metadata.namespace: '${show(meta.namespace)}' is not a name`;
  if (!absent(meta.uid) && !isName(meta.uid)) return `metadata.uid: '${show(meta.uid)}' is not a uid`;
  const namespace = isName(meta.namespace) ? meta.namespace : 'default';
  return { namespace, name: meta.name, uid: isName(meta.uid) ? meta.uid : `${namespace}/${meta.name}` };
}

/** The containers as far as they can be read, and whether the proxy container is there. */
interface Containers {
  list: ContainerLike[];
  /** 'unknown': the list (or an entry's name) could not be read */
  proxy: 'yes' | 'no' | 'unknown';
}

function readContainers(spec: Obj, errors: string[]): Containers {
  const raw = spec.containers;
  if (absent(raw)) return { list: [], proxy: 'no' };
  if (!Array.isArray(raw)) {
    errors.push(invalid(raw, 'spec.containers', 'not a list'));
    return { list: [], proxy: 'unknown' };
  }
  const list: ContainerLike[] = [];
  let unreadable = false;
  raw.forEach((c: unknown, i) => {
    if (!isRecord(c)) {
      errors.push(invalid(c, `spec.containers[${i}]`, 'not an object'));
      unreadable = true;
    } else if (typeof c.name !== 'string') {
      errors.push(invalid(c.name, `spec.containers[${i}].name`, 'not a string'));
      unreadable = true;
    } else {
      list.push(c as ContainerLike);
    }
  });
  const proxy = list.some((c) => c.name === PROXY_CONTAINER) ? 'yes' : unreadable ? 'unknown' : 'no';
  return { list, proxy };
}

/** An optional field of `obj` that must pass `ok`; a wrong one is an error and reads as absent. */
function field<T>(obj: Obj, key: string, path: string, ok: (v: unknown) => v is T, want: string, then: string, errors: string[]): T | undefined {
  const v = obj[key];
  if (absent(v)) return undefined;
  if (ok(v)) return v;
  errors.push(invalid(v, path, `not ${want}; ${then}`));
  return undefined;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const QOS_CLASSES: readonly QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort'];
const isQos = (v: unknown): v is QosClass => QOS_CLASSES.includes(v as QosClass);

function objectField(obj: Obj, key: string, errors: string[]): { value: Obj; unreadable: boolean } {
  const v = obj[key];
  if (absent(v)) return { value: {}, unreadable: false };
  if (isRecord(v)) return { value: v, unreadable: false };
  errors.push(invalid(v, key, 'not an object'));
  return { value: {}, unreadable: true };
}

function decidePod(raw: unknown, namespaces: Map<string, NamespaceInfo>, opts: BuildModelOptions): DesiredPod | SkippedPod {
  const ref = identity(raw);
  if (typeof ref === 'string') return { ref: roughRef(raw), reason: `not a valid pod object: ${ref}` };
  const pod = raw as Obj;
  const meta = pod.metadata as Obj;
  const errors: string[] = [];
  const labels = readStringMap(meta.labels, 'label', errors);
  const annotations = readStringMap(meta.annotations, 'annotation', errors);
  const spec = objectField(pod, 'spec', errors);
  const status = objectField(pod, 'status', errors);
  const containers = spec.unreadable ? { list: [], proxy: 'unknown' as const } : readContainers(spec.value, errors);

  const ns = namespaces.get(ref.namespace);
  const reason =
    placementReason(spec.value, status.value, opts, errors) ??
    namespaceReason(ref.namespace, ns) ??
    optOutReason(labels, annotations, errors) ??
    proxyReason(containers, annotations);
  if (reason) return { ref, reason };
  // only the string entries reach the annotation parser: a malformed one has been reported and reads
  // as absent, so its default applies
  const {
    settings,
    errors: annErrors,
    unsupported,
  } = parseCaptureSettings({
    metadata: { annotations: annotations.map },
    spec: { containers: containers.list },
  });
  if (settings.interceptionMode === 'NONE') return { ref, reason: 'interception mode is NONE' };
  const ips = podIps(status, errors);
  if (ips === undefined) return { ref, reason: 'no pod IP yet' };
  const qos = field(
    status.value,
    'qosClass',
    'status.qosClass',
    isQos,
    'Guaranteed, Burstable or BestEffort',
    "the pod's cgroup is looked for as BestEffort",
    errors,
  );
  return {
    ref,
    ips,
    qosClass: qos ?? 'BestEffort',
    settings,
    errors: [...errors, ...annErrors, ...(ns?.errors ?? [])],
    unsupported,
  };
}

function placementReason(spec: Obj, status: Obj, opts: BuildModelOptions, errors: string[]): string | undefined {
  // a node name that cannot be read is taken to be this node: the pod is then looked for here (and
  // stays pending if it is not here), rather than released
  const node = field(spec, 'nodeName', 'spec.nodeName', isString, 'a string', 'the pod is taken to be on this node', errors);
  const unreadableNode = !absent(spec.nodeName) && node === undefined;
  if (opts.nodeName !== undefined && !unreadableNode) {
    if (!node) return 'not scheduled on a node yet';
    if (node !== opts.nodeName) return `runs on node "${node}", not "${opts.nodeName}"`;
  }
  const phase = field(status, 'phase', 'status.phase', isString, 'a string', 'the pod is taken to be running', errors);
  if (phase === 'Succeeded' || phase === 'Failed') return `pod phase is ${phase}`;
  // hostNetwork that cannot be read is taken to be false: capture is then attempted, and the locator
  // refuses a pod whose network namespace is the node's, so a host-network pod is never enrolled
  const host = field(
    spec,
    'hostNetwork',
    'spec.hostNetwork',
    isBoolean,
    'a boolean',
    'taken as false (a pod sharing the node network namespace is never enrolled)',
    errors,
  );
  if (host === true) return 'pod uses hostNetwork';
  return undefined;
}

function namespaceReason(name: string, ns: NamespaceInfo | undefined): string | undefined {
  if (!ns) return `namespace "${name}" not found`;
  // a labels map that cannot be read: the capturing reading (the error is on the pod already)
  if (ns.labels.unreadable) return undefined;
  const labels = ns.labels.map;
  const injection = labels[NS_INJECTION_LABEL];
  if (injection === 'disabled') return `namespace "${name}" is labelled ${NS_INJECTION_LABEL}=disabled`;
  if (injection === 'enabled') return undefined;
  if (ns.labels.malformed.has(NS_INJECTION_LABEL)) return undefined; // read as enabled (see namespaceInfos)
  if (injection === undefined && (labels[NS_REV_LABEL] !== undefined || ns.labels.malformed.has(NS_REV_LABEL))) return undefined;
  if (injection !== undefined) {
    return `namespace "${name}" is labelled ${NS_INJECTION_LABEL}=${injection}, not ${NS_INJECTION_LABEL}=enabled`;
  }
  return `namespace "${name}" is not labelled ${NS_INJECTION_LABEL}=enabled or ${NS_REV_LABEL}`;
}

/** sidecar.istio.io/inject: the label beats the deprecated annotation; only "true"/"false" count (a
 *  malformed value has been reported and reads as absent). */
function optOutReason(labels: StringMap, annotations: StringMap, errors: string[]): string | undefined {
  const read = (where: 'label' | 'annotation', v: string | undefined): boolean | undefined => {
    if (v === undefined) return undefined;
    if (v === 'true' || v === 'false') return v === 'true';
    errors.push(`invalid value '${v}' for ${where} '${INJECT_LABEL}': must be "true" or "false"`);
    return undefined;
  };
  const label = read('label', labels.map[INJECT_LABEL]);
  const annotation = read('annotation', annotations.map[INJECT_LABEL]);
  if (label === false) return `pod is labelled ${INJECT_LABEL}=false`;
  if (label === undefined && annotation === false) return `pod is annotated ${INJECT_LABEL}=false`;
  return undefined;
}

/** Only what is known releases: no istio-proxy container, or no sidecar status annotation. A list
 *  or map that cannot be read counts as "maybe" (the pod is captured: with no proxy its connections
 *  are refused, never bypassed). */
function proxyReason(containers: Containers, annotations: StringMap): string | undefined {
  if (containers.proxy === 'no') return `pod has no ${PROXY_CONTAINER} container`;
  const status = annotations.map[STATUS_ANNOTATION] !== undefined || annotations.malformed.has(STATUS_ANNOTATION) || annotations.unreadable;
  if (!status) return `pod has no ${STATUS_ANNOTATION} annotation (sidecar not injected)`;
  return undefined;
}

/**
 * status.podIPs and status.podIP, canonical, at most one per family (podIPs first, in order).
 * undefined: no IP given at all yet. [] : IPs given but none valid; the pod is still captured, by
 * its network namespace (outbound capture needs no address; inbound steering, which is keyed by the
 * pod IP, stays off until a valid IP is known).
 */
function podIps(status: { value: Obj; unreadable: boolean }, errors: string[]): string[] | undefined {
  const texts: unknown[] = [];
  let unreadable = status.unreadable;
  const list = status.value.podIPs;
  if (Array.isArray(list)) {
    for (const p of list) texts.push(isRecord(p) ? p.ip : p);
  } else if (!absent(list)) {
    errors.push(invalid(list, 'status.podIPs', 'not a list'));
    unreadable = true;
  }
  const single = status.value.podIP;
  if (!absent(single) && single !== '') texts.push(single);
  if (texts.length === 0 && !unreadable) return undefined;
  const families = new Set<Family>();
  const out: string[] = [];
  for (const text of texts) {
    const ip = typeof text === 'string' ? canonicalIp(text) : undefined;
    if (!ip) {
      errors.push(`invalid pod IP '${show(text)}' ignored`);
      continue;
    }
    if (families.has(ip.family)) continue;
    families.add(ip.family);
    out.push(ip.addr);
  }
  if (out.length === 0) {
    errors.push('no valid pod IP: captured by its network namespace; inbound capture is off until a valid IP is known');
  }
  return out;
}
