// Pod annotations -> CaptureSettings (capture-spec section 1), with Istio's validator rules.
//
// The one rule that matters: a malformed value never widens the bypass. A bad annotation is ignored as a
// whole (its default applies, and every default is the narrowest bypass) and the problem is reported as
// `invalid value '<v>' for annotation '<name>': <reason>`.

import { parse as parseYaml } from 'yaml';
import { parsePrefix } from '../util/ip.js';
import { goTrimSpace } from './go-strings.js';
import type { CaptureSettings, Cidr, InboundPorts, InterceptionMode } from './types.js';

export const ANNOTATIONS = {
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
  kubevirtInterfaces: 'traffic.sidecar.istio.io/kubevirtInterfaces',
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  statusPort: 'status.sidecar.istio.io/port',
  proxyConfig: 'proxy.istio.io/config',
} as const;

export const PROXY_CONTAINER = 'istio-proxy';
export const DNS_CAPTURE_ENV = 'ISTIO_META_DNS_CAPTURE';
export const DEFAULT_PROXY_UID = 1337;
/** Always excluded from inbound capture (prometheus, health, status), in istio-iptables' `-d` order. */
export const FIXED_INBOUND_EXCLUDES: readonly number[] = [15090, 15021, 15020];

/** The parts of a Kubernetes container that matter here; anything else is ignored. */
export interface ContainerLike {
  name?: unknown;
  securityContext?: { runAsUser?: unknown; runAsGroup?: unknown } | null;
  env?: ReadonlyArray<{ name?: unknown; value?: unknown }> | null;
}

/** The parts of a Kubernetes pod that matter here (plain API JSON fits). */
export interface PodLike {
  metadata?: { annotations?: Readonly<Record<string, unknown>> | null } | null;
  spec?: { containers?: readonly ContainerLike[] | null } | null;
}

export interface ParsedCaptureSettings {
  settings: CaptureSettings;
  errors: string[];
  unsupported: string[];
}

type Result<T> = { ok: true; value: T } | { ok: false; reason: string };
const ok = <T>(value: T): Result<T> => ({ ok: true, value });
const fail = <T>(reason: string): Result<T> => ({ ok: false, reason });
const q = (s: string): string => JSON.stringify(s);

export function annotationError(name: string, value: string, reason: string): string {
  return `invalid value '${value}' for annotation '${name}': ${reason}`;
}

// ---------------------------------------------------------------------------------------------------
// Value parsers (pure, exported for tests and for other sources)

function wildcardMisuse(what: string, allowed: boolean): string {
  return allowed ? `"*" must be the whole value of ${what}` : `"*" is not allowed in ${what}`;
}

/** One port as Istio's parsePort reads it (pkg/kube/inject/validate.go):
 *  strconv.ParseUint(strings.TrimSpace(s), 10, 16): ASCII digits only (no sign, no prefix, no `_`),
 *  leading zeros allowed, at most 65535. Trimmed as Go trims, not as JavaScript does. */
export function parsePort(text: string): Result<number> {
  const s = goTrimSpace(text);
  if (!/^[0-9]+$/.test(s)) return fail(`${q(s)} is not a valid port`);
  const n = Number(s); // exact up to 2^53; anything longer is far above 65535 anyway
  if (n > 65535) return fail(`${q(s)} is not a valid port (must be 0-65535)`);
  return ok(n);
}

/** A comma-separated port list as Istio's parsePorts reads it: the whole value trimmed; empty means no
 *  ports; otherwise every item, trimmed, must be a port: an empty item (`80,,90`, a trailing comma) is
 *  an error, as it is for Istio. Duplicates are dropped (the first one kept). */
export function parsePortList(text: string, what: string, wildcardAllowed = false): Result<number[]> {
  const whole = goTrimSpace(text);
  const out: number[] = [];
  if (whole === '') return ok(out);
  for (const raw of whole.split(',')) {
    const item = goTrimSpace(raw);
    if (item === '') return fail(EMPTY_ITEM('port'));
    if (item === '*') return fail(wildcardMisuse(what, wildcardAllowed));
    const p = parsePort(item);
    if (!p.ok) return p;
    out.push(p.value);
  }
  return ok([...new Set(out)]); // duplicates dropped, the first one kept (a Set keeps insertion order)
}

const EMPTY_ITEM = (what: string): string => `an empty item (two commas in a row, or a comma at either end) is not a valid ${what}`;

/** A prefix `addr/bits` (as Go's netip.ParsePrefix: the `/bits` part is required), host bits cleared. */
export function parseCidr(s: string): Result<Cidr> {
  const c = parsePrefix(s);
  return c ? ok(c) : fail(`${q(s)} is not a valid CIDR`);
}

/** A comma-separated CIDR list as Istio's validateCIDRList reads it: NOT trimmed (a space makes an
 *  item invalid); empty means no CIDRs; otherwise every item must be a prefix (netip.ParsePrefix): an
 *  empty item is an error. Duplicates are dropped. */
export function parseCidrList(text: string, what: string, wildcardAllowed = false): Result<Cidr[]> {
  const out: Cidr[] = [];
  const seen = new Set<string>();
  if (text === '') return ok(out);
  for (const item of text.split(',')) {
    if (item === '') return fail(EMPTY_ITEM('CIDR'));
    if (item === '*') return fail(wildcardMisuse(what, wildcardAllowed));
    const c = parseCidr(item);
    if (!c.ok) return c;
    // duplicates dropped in first-seen order; a Set keeps this linear (a pod may carry 40,000 CIDRs)
    const key = `${c.value.family}/${c.value.addr}/${c.value.prefix}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(c.value);
    }
  }
  return ok(out);
}

const IFACE_RE = /^[a-zA-Z][a-zA-Z0-9_.-]*$/;

/** A comma-separated interface-name list; empty items dropped; names as Linux allows (max 15 chars).
 *  Istio has no validator for the interface annotations: istio-iptables drops empty items (its
 *  split()) and hands each name to iptables as is, so nothing is trimmed here either. */
export function parseInterfaceList(text: string): Result<string[]> {
  const out: string[] = [];
  for (const item of text.split(',')) {
    if (item === '') continue;
    if (!IFACE_RE.test(item)) return fail(`${q(item)} is not a valid interface name`);
    if (item.length > 15) return fail(`${q(item)} is longer than 15 characters`);
    out.push(item);
  }
  return ok([...new Set(out)]);
}

export function parseInterceptionMode(text: string): Result<InterceptionMode> {
  if (text === 'REDIRECT' || text === 'TPROXY' || text === 'NONE') return ok(text);
  return fail('must be one of REDIRECT, TPROXY, NONE');
}

/** Go's strconv.ParseBool, which is how Istio reads ISTIO_META_DNS_CAPTURE. */
export function parseGoBool(text: string): Result<boolean> {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return ok(true);
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return ok(false);
  return fail(`${q(text)} is not a boolean`);
}

// ---------------------------------------------------------------------------------------------------
// The pod -> settings walk

export function defaultCaptureSettings(): CaptureSettings {
  return {
    outboundPort: 15001,
    inboundPort: 15006,
    inboundTunnelPort: 15008,
    dnsPort: 15053,
    proxyUids: [DEFAULT_PROXY_UID],
    proxyGids: [DEFAULT_PROXY_UID],
    interceptionMode: 'REDIRECT',
    inboundPorts: { mode: 'all', exclude: [...FIXED_INBOUND_EXCLUDES] },
    outboundInclude: { all: true, cidrs: [] },
    outboundExclude: [],
    includeOutboundPorts: [],
    excludeOutboundPorts: [],
    excludeInterfaces: [],
    rerouteInterfaces: [],
    dns: { enabled: false, captureAll: false },
  };
}

/** Collects errors while reading annotations. */
class Reader {
  readonly errors: string[] = [];
  readonly unsupported: string[] = [];
  constructor(private readonly annotations: Readonly<Record<string, unknown>>) {}

  has(name: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.annotations, name) && this.annotations[name] != null;
  }

  /** Records a problem with annotation `name` whose value is otherwise used. */
  report(name: string, reason: string): void {
    this.errors.push(annotationError(name, String(this.annotations[name]), reason));
  }

  /** The parsed value of annotation `name`, or undefined when absent or invalid (error recorded). */
  get<T>(name: string, parser: (v: string) => Result<T>): T | undefined {
    if (!this.has(name)) return undefined;
    const raw = this.annotations[name];
    if (typeof raw !== 'string') {
      this.errors.push(annotationError(name, String(raw), 'not a string'));
      return undefined;
    }
    const r = parser(raw);
    if (r.ok) return r.value;
    this.errors.push(annotationError(name, raw, r.reason));
    return undefined;
  }
}

function proxyContainer(pod: PodLike): ContainerLike | undefined {
  const containers: unknown = pod.spec?.containers;
  if (!Array.isArray(containers)) return undefined;
  return (containers as ContainerLike[]).find((c) => isRecord(c) && c.name === PROXY_CONTAINER);
}

const PROXY_FIELD = `spec.containers[${PROXY_CONTAINER}]`;

/** runAsUser / runAsGroup: a non-negative 32-bit integer; 0 ("root") means "not set" for Istio. */
function proxyId(v: unknown, field: string, fallback: string, errors: string[]): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= 0xffffffff) return v === 0 ? undefined : v;
  errors.push(
    `invalid value '${JSON.stringify(v) ?? String(v)}' for ${PROXY_FIELD}.securityContext.${field}: not a ${field === 'runAsUser' ? 'uid' : 'gid'} (a non-negative integer); ${fallback}`,
  );
  return undefined;
}

/**
 * The proxy's uid and gid (capture-spec: runAsUser / runAsGroup of the proxy container if non-zero).
 *
 * A malformed value gives the default, 1337, never a number read out of the text. The proxy uid is
 * exempt from capture, so the choice decides whose traffic bypasses the proxy: the default exempts
 * exactly what every pod without a runAsUser exempts, while a uid taken from a malformed value (Istio
 * would reject the pod) could be the app's own uid, whose traffic would then bypass. If the proxy
 * really runs under the malformed value's uid, its own egress is captured and loops back to itself:
 * connections fail, visibly, and nothing bypasses.
 */
function proxyIds(pod: PodLike, errors: string[]): { uids: number[]; gids: number[] } {
  const uidDefault = `the proxy uid is ${DEFAULT_PROXY_UID}, the default`;
  const sc: unknown = proxyContainer(pod)?.securityContext;
  if (sc !== undefined && sc !== null && !isRecord(sc)) {
    errors.push(`invalid value '${JSON.stringify(sc) ?? String(sc)}' for ${PROXY_FIELD}.securityContext: not an object; ${uidDefault}`);
  }
  const ctx = isRecord(sc) ? sc : {};
  const uid = proxyId(ctx.runAsUser, 'runAsUser', uidDefault, errors) ?? DEFAULT_PROXY_UID;
  const gid = proxyId(ctx.runAsGroup, 'runAsGroup', 'the proxy gid is the proxy uid, the default', errors);
  return { uids: [uid], gids: gid === undefined ? [uid] : [gid] };
}

/** `*` exactly (Istio compares the untrimmed value), else a list. */
function wildcardOr<T>(text: string, list: (t: string) => Result<T>): Result<T | '*'> {
  return text === '*' ? ok<T | '*'>('*') : list(text);
}

function inboundPorts(r: Reader): InboundPorts {
  const A = ANNOTATIONS;
  const include = r.get(A.includeInboundPorts, (v) => wildcardOr(v, (t) => parsePortList(t, 'includeInboundPorts', true)));
  // read (and so validate) the exclusions even when they do not apply
  const user = r.get(A.excludeInboundPorts, (v) => parsePortList(v, 'excludeInboundPorts')) ?? [];
  const status = r.get(A.statusPort, parsePort);
  if (include !== undefined && include !== '*') return { mode: 'list', include };
  const exclude: number[] = [];
  // status port 0 means "no status server": nothing to exclude for it (Istio's excludeInboundPort).
  for (const p of [...user, ...FIXED_INBOUND_EXCLUDES, ...(status ? [status] : [])]) {
    if (!exclude.includes(p)) exclude.push(p);
  }
  return { mode: 'all', exclude };
}

function outboundInclude(r: Reader): CaptureSettings['outboundInclude'] {
  const v = r.get(ANNOTATIONS.includeOutboundIPRanges, (t) => wildcardOr(t, (x) => parseCidrList(x, 'includeOutboundIPRanges', true)));
  if (v === undefined || v === '*') return { all: true, cidrs: [] };
  return { all: false, cidrs: v };
}

function interfaces(r: Reader, s: CaptureSettings): void {
  const A = ANNOTATIONS;
  const exclude = r.get(A.excludeInterfaces, parseInterfaceList) ?? [];
  s.excludeInterfaces = exclude;
  if (exclude.length > 0)
    r.unsupported.push(
      `${A.excludeInterfaces} is enforced for inbound only: outbound connections are decided at connect(), before an output interface is known (interfaces: ${exclude.join(',')})`,
    );
  // the new name wins when both are set (Istio's injection template)
  const rerouteName = r.has(A.rerouteVirtualInterfaces) ? A.rerouteVirtualInterfaces : A.kubevirtInterfaces;
  const reroute = r.get(rerouteName, parseInterfaceList) ?? [];
  s.rerouteInterfaces = reroute;
  if (reroute.length > 0) r.unsupported.push(notEnforced(rerouteName, reroute));
}

function notEnforced(name: string, list: string[]): string {
  return `${name} is not enforced by meshlane: it captures traffic forwarded through the pod, which no socket hook sees (interfaces: ${list.join(',')})`;
}

interface ProxyConfigBits {
  interceptionMode?: InterceptionMode;
  dnsCapture?: boolean;
  /** ISTIO_META_DNS_CAPTURE given but not a boolean: Istio's validator lets it through (proxyMetadata
   *  is a map of strings) and reads it later as false, so the rest of the annotation still applies */
  dnsProblem?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The parts of proxy.istio.io/config (a ProxyConfig in YAML or JSON) that change capture. */
export function parseProxyConfig(text: string): Result<ProxyConfigBits> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    return fail(`not valid YAML or JSON: ${firstLine(e)}`);
  }
  if (doc === null || doc === undefined) return ok({});
  if (!isRecord(doc)) return fail('not a mapping');
  const out: ProxyConfigBits = {};
  if (doc.interceptionMode !== undefined) {
    const m = typeof doc.interceptionMode === 'string' ? parseInterceptionMode(doc.interceptionMode) : undefined;
    if (!m?.ok) return fail('interceptionMode must be one of REDIRECT, TPROXY, NONE');
    out.interceptionMode = m.value;
  }
  const meta = doc.proxyMetadata;
  if (meta !== undefined && meta !== null) {
    if (!isRecord(meta)) return fail('proxyMetadata is not a mapping');
    const dns = meta[DNS_CAPTURE_ENV];
    if (dns !== undefined) {
      if (typeof dns !== 'string') return fail(`proxyMetadata.${DNS_CAPTURE_ENV} must be a string`);
      const b = parseGoBool(dns);
      if (b.ok) out.dnsCapture = b.value;
      else out.dnsProblem = `proxyMetadata.${DNS_CAPTURE_ENV}: ${b.reason}`;
    }
  }
  return ok(out);
}

export function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split('\n')[0] ?? '').trim();
}

/** The istio-proxy container's literal ISTIO_META_DNS_CAPTURE env (what istio-cni reads), if any. */
function dnsFromEnv(pod: PodLike, errors: string[]): boolean | undefined {
  const env: unknown = proxyContainer(pod)?.env;
  if (env === undefined || env === null) return undefined;
  if (!Array.isArray(env)) {
    errors.push(`invalid value '${JSON.stringify(env) ?? String(env)}' for ${PROXY_FIELD}.env: not a list; DNS capture is off, the default`);
    return undefined;
  }
  const e = (env as unknown[]).find((x): x is Record<string, unknown> => isRecord(x) && x.name === DNS_CAPTURE_ENV);
  if (!e || e.value === undefined || e.value === null) return undefined;
  const where = `env ${DNS_CAPTURE_ENV} of container '${PROXY_CONTAINER}'`;
  if (typeof e.value !== 'string') {
    errors.push(`invalid value '${JSON.stringify(e.value) ?? String(e.value)}' for ${where}: not a string; DNS capture is off, the default`);
    return undefined;
  }
  const b = parseGoBool(e.value);
  if (b.ok) return b.value;
  errors.push(`invalid value '${e.value}' for ${where}: ${b.reason}`);
  return undefined;
}

function modeAndDns(r: Reader, pod: PodLike, s: CaptureSettings): void {
  const pc = r.get(ANNOTATIONS.proxyConfig, parseProxyConfig) ?? {};
  if (pc.dnsProblem) r.report(ANNOTATIONS.proxyConfig, pc.dnsProblem);
  const mode = r.get(ANNOTATIONS.interceptionMode, parseInterceptionMode) ?? pc.interceptionMode ?? 'REDIRECT';
  s.interceptionMode = mode;
  if (mode === 'TPROXY') {
    r.unsupported.push(`${ANNOTATIONS.interceptionMode} TPROXY is handled as REDIRECT`);
  }
  const enabled = dnsFromEnv(pod, r.errors) ?? pc.dnsCapture ?? false;
  s.dns = { enabled, captureAll: false };
}

/** Reads every capture annotation of `pod` (capture-spec section 1). Pure; never throws. */
export function parseCaptureSettings(pod: PodLike): ParsedCaptureSettings {
  const annotations = pod.metadata?.annotations;
  const r = new Reader(isRecord(annotations) ? annotations : {});
  const A = ANNOTATIONS;
  const s = defaultCaptureSettings();
  const ids = proxyIds(pod, r.errors);
  s.proxyUids = ids.uids;
  s.proxyGids = ids.gids;
  s.inboundPorts = inboundPorts(r);
  s.outboundInclude = outboundInclude(r);
  s.outboundExclude = r.get(A.excludeOutboundIPRanges, (v) => parseCidrList(v, 'excludeOutboundIPRanges')) ?? [];
  s.includeOutboundPorts = r.get(A.includeOutboundPorts, (v) => parsePortList(v, 'includeOutboundPorts')) ?? [];
  s.excludeOutboundPorts = r.get(A.excludeOutboundPorts, (v) => parsePortList(v, 'excludeOutboundPorts')) ?? [];
  interfaces(r, s);
  modeAndDns(r, pod, s);
  return { settings: s, errors: r.errors, unsupported: r.unsupported };
}
