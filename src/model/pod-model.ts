// Kubernetes objects -> which pods to capture and how (capture-spec section 2). Pure: no I/O, never
// throws on a strange object (it is skipped with a reason instead).

import { z } from 'zod';
import { canonicalIp } from '../util/ip.js';
import { parseCaptureSettings, PROXY_CONTAINER } from './annotations.js';
import type { DesiredPod, Family, ModelResult, PodRef, QosClass, SkippedPod } from './types.js';

export const INJECT_LABEL = 'sidecar.istio.io/inject';
export const STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const NS_INJECTION_LABEL = 'istio-injection';
export const NS_REV_LABEL = 'istio.io/rev';

export interface BuildModelOptions {
  /** only pods scheduled on this node (spec.nodeName) */
  nodeName?: string;
}

const StringMap = z.record(z.string(), z.string()).nullish();

const NamespaceShape = z.object({
  metadata: z.object({ name: z.string().min(1), labels: StringMap }),
});

const PodShape = z.object({
  metadata: z.object({
    name: z.string().min(1),
    namespace: z.string().min(1).nullish(),
    uid: z.string().min(1).nullish(),
    labels: StringMap,
    annotations: StringMap,
  }),
  spec: z
    .object({
      nodeName: z.string().nullish(),
      hostNetwork: z.boolean().nullish(),
      containers: z
        .array(
          z.looseObject({
            name: z.string(),
            securityContext: z
              .object({ runAsUser: z.number().nullish(), runAsGroup: z.number().nullish() })
              .nullish(),
            env: z.array(z.looseObject({ name: z.string(), value: z.string().nullish() })).nullish(),
          }),
        )
        .nullish(),
    })
    .nullish(),
  status: z
    .object({
      phase: z.string().nullish(),
      qosClass: z.string().nullish(),
      podIP: z.string().nullish(),
      podIPs: z.array(z.object({ ip: z.string() })).nullish(),
    })
    .nullish(),
});

type Pod = z.infer<typeof PodShape>;
type Labels = Readonly<Record<string, string>>;

/** Builds the desired capture state from namespaces and pods (plain Kubernetes JSON). */
export function buildModel(input: { namespaces: unknown[]; pods: unknown[] }, opts: BuildModelOptions = {}): ModelResult {
  const namespaces = namespaceLabels(input.namespaces);
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

function namespaceLabels(items: unknown[]): Map<string, Labels> {
  const out = new Map<string, Labels>();
  for (const raw of items) {
    const ns = NamespaceShape.safeParse(raw);
    if (ns.success) out.set(ns.data.metadata.name, ns.data.metadata.labels ?? {});
  }
  return out;
}

/** A ref for an object that did not even parse: whatever can be read of it. */
function roughRef(raw: unknown): PodRef {
  const meta = (typeof raw === 'object' && raw !== null ? (raw as { metadata?: unknown }).metadata : undefined) as
    | { name?: unknown; namespace?: unknown; uid?: unknown }
    | undefined;
  const str = (v: unknown, d: string): string => (typeof v === 'string' && v !== '' ? v : d);
  const namespace = str(meta?.namespace, 'default');
  const name = str(meta?.name, '<unnamed>');
  return { namespace, name, uid: str(meta?.uid, `${namespace}/${name}`) };
}

function podRef(pod: Pod): PodRef {
  const namespace = pod.metadata.namespace ?? 'default';
  const name = pod.metadata.name;
  return { namespace, name, uid: pod.metadata.uid ?? `${namespace}/${name}` };
}

function decidePod(raw: unknown, namespaces: Map<string, Labels>, opts: BuildModelOptions): DesiredPod | SkippedPod {
  const parsed = PodShape.safeParse(raw);
  if (!parsed.success) {
    return { ref: roughRef(raw), reason: `not a valid pod object: ${describeIssue(parsed.error)}` };
  }
  const pod = parsed.data;
  const ref = podRef(pod);
  const errors: string[] = [];
  const reason =
    placementReason(pod, opts) ??
    namespaceReason(ref.namespace, namespaces) ??
    optOutReason(pod, errors) ??
    proxyReason(pod);
  if (reason) return { ref, reason };
  const { settings, errors: annErrors, unsupported } = parseCaptureSettings(pod);
  if (settings.interceptionMode === 'NONE') return { ref, reason: 'interception mode is NONE' };
  const ips = podIps(pod, errors);
  if (ips.length === 0) return { ref, reason: 'no pod IP yet' };
  return { ref, ips, qosClass: qosClass(pod), settings, errors: [...errors, ...annErrors], unsupported };
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'unknown shape';
  const path = issue.path.map(String).join('.');
  return path ? `${path}: ${issue.message}` : issue.message;
}

function placementReason(pod: Pod, opts: BuildModelOptions): string | undefined {
  const node = pod.spec?.nodeName ?? undefined;
  if (opts.nodeName !== undefined && node !== opts.nodeName) {
    return node ? `runs on node "${node}", not "${opts.nodeName}"` : 'not scheduled on a node yet';
  }
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return `pod phase is ${phase}`;
  if (pod.spec?.hostNetwork === true) return 'pod uses hostNetwork';
  return undefined;
}

function namespaceReason(name: string, namespaces: Map<string, Labels>): string | undefined {
  const labels = namespaces.get(name);
  if (!labels) return `namespace "${name}" not found`;
  const injection = labels[NS_INJECTION_LABEL];
  if (injection === 'disabled') return `namespace "${name}" is labelled ${NS_INJECTION_LABEL}=disabled`;
  if (injection === 'enabled') return undefined;
  if (injection === undefined && labels[NS_REV_LABEL] !== undefined) return undefined;
  if (injection !== undefined) {
    return `namespace "${name}" is labelled ${NS_INJECTION_LABEL}=${injection}, not ${NS_INJECTION_LABEL}=enabled`;
  }
  return `namespace "${name}" is not labelled ${NS_INJECTION_LABEL}=enabled or ${NS_REV_LABEL}`;
}

/** sidecar.istio.io/inject: the label beats the deprecated annotation; only "true"/"false" count. */
function optOutReason(pod: Pod, errors: string[]): string | undefined {
  const read = (where: 'label' | 'annotation', v: string | undefined): boolean | undefined => {
    if (v === undefined) return undefined;
    if (v === 'true' || v === 'false') return v === 'true';
    errors.push(`invalid value '${v}' for ${where} '${INJECT_LABEL}': must be "true" or "false"`);
    return undefined;
  };
  const label = read('label', pod.metadata.labels?.[INJECT_LABEL]);
  const annotation = read('annotation', pod.metadata.annotations?.[INJECT_LABEL]);
  if (label === false) return `pod is labelled ${INJECT_LABEL}=false`;
  if (label === undefined && annotation === false) return `pod is annotated ${INJECT_LABEL}=false`;
  return undefined;
}

function proxyReason(pod: Pod): string | undefined {
  if (!(pod.spec?.containers ?? []).some((c) => c.name === PROXY_CONTAINER)) {
    return `pod has no ${PROXY_CONTAINER} container`;
  }
  if (pod.metadata.annotations?.[STATUS_ANNOTATION] === undefined) {
    return `pod has no ${STATUS_ANNOTATION} annotation (sidecar not injected)`;
  }
  return undefined;
}

/** status.podIPs (else status.podIP), canonical, at most one per family, in the order given. */
function podIps(pod: Pod, errors: string[]): string[] {
  const listed = pod.status?.podIPs?.map((p) => p.ip) ?? [];
  const raw = listed.length > 0 ? listed : pod.status?.podIP ? [pod.status.podIP] : [];
  const families = new Set<Family>();
  const out: string[] = [];
  for (const text of raw) {
    const ip = canonicalIp(text);
    if (!ip) {
      errors.push(`invalid pod IP '${text}' ignored`);
      continue;
    }
    if (families.has(ip.family)) continue;
    families.add(ip.family);
    out.push(ip.addr);
  }
  return out;
}

function qosClass(pod: Pod): QosClass {
  const q = pod.status?.qosClass;
  return q === 'Guaranteed' || q === 'Burstable' || q === 'BestEffort' ? q : 'BestEffort';
}
