// The agent's end of the meshlane-cni wire protocol, and the CNI data it carries. Pure: no I/O.
//
// The plugin (cni/meshlane-cni.c) is a thin client: it sends the CNI invocation as it got it, the CNI_*
// environment and the config text from stdin, and prints what we answer. Everything a CNI plugin must
// check (versions, CNI_ARGS, container id and interface name, prevResult) is checked here, so the C
// stays trivial and the rules are tested in one place (test/unit/cni-protocol.test.ts).
//
// Wire protocol, version 1 (the plugin's header comment says the same):
//   request   one line: a JSON object and "\n":
//             {"v":1,"command":"ADD|DEL|CHECK|GC|STATUS","containerId"?,"netns"?,"ifname"?,"args"?,"path"?,
//              "config":"<the plugin's stdin as a JSON string>"}   (unset env variables are left out)
//   response  "<exit code>\n" then the bytes the plugin prints on stdout, until the agent closes.
// The plugin answers VERSION itself and keeps its end open until the answer; EOF from it means it gave up.
import { z } from 'zod';

export const PLUGIN_TYPE = 'meshlane-cni';
export const DEFAULT_CNI_SOCKET = '/var/run/meshlane/cni.sock';
export const WIRE_VERSION = 1;
/** What the plugin answers to VERSION; keep in line with SUPPORTED_VERSIONS in cni/meshlane-cni.c. */
export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
/** For error results when the config names no (usable) version; the plugin uses the same. */
export const FALLBACK_CNI_VERSION = '1.0.0';
/** The plugin reads at most 1 MiB of config; escaped, that is at most 6 MiB, plus the environment. */
export const MAX_REQUEST_BYTES = 8 * 1024 * 1024;

/** CNI spec error codes (SPEC.md, Section 5 "Error"); 100 and up are ours. */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginUnavailable: 50,
  /** the agent's handler failed in a way it did not classify */
  AgentFailure: 100,
} as const;

/** A CNI error result, less the cniVersion (the server adds the config's). */
export interface CniFailure {
  code: number;
  msg: string;
  details?: string;
}

/** What a handler throws to answer with a specific CNI error. Any other error becomes AgentFailure. */
export class CniError extends Error implements CniFailure {
  constructor(
    readonly code: number,
    readonly msg: string,
    readonly details?: string,
  ) {
    super(details ? `${msg}: ${details}` : msg);
    this.name = 'CniError';
  }
}

const failure = (code: number, msg: string, details?: string): CniFailure => (details === undefined ? { code, msg } : { code, msg, details });

// ---- the CNI data ----

/**
 * A CNI result (SPEC.md, Section 5), loosely: what we read of it is typed, the rest passes through as it
 * came (0.3.x/0.4.0 results carry `ips[].version`, 1.0.0 ones do not; we never convert).
 */
export const CniResultShape = z.looseObject({
  cniVersion: z.string().optional(),
  interfaces: z.array(z.looseObject({ name: z.string(), mac: z.string().optional(), sandbox: z.string().optional() })).optional(),
  ips: z
    .array(z.looseObject({ address: z.string(), gateway: z.string().optional(), interface: z.number().int().nonnegative().optional() }))
    .optional(),
  routes: z.array(z.looseObject({ dst: z.string(), gw: z.string().optional() })).optional(),
  dns: z.looseObject({}).optional(),
});
export type CniResult = z.infer<typeof CniResultShape>;

/** The network config a chained plugin gets (SPEC.md, Section 1 and 3): ours is `{"type":"meshlane-cni","socket":...}`. */
const NetConfCore = z.looseObject({
  cniVersion: z.string().min(1),
  name: z.string().min(1),
  type: z.string().min(1),
  /** read by the plugin: where the agent listens */
  socket: z.string().optional(),
  /** read by the plugin: how long it waits for the agent's answer */
  timeoutSeconds: z.number().int().min(1).max(600).optional(),
  runtimeConfig: z.looseObject({}).optional(),
});
/** The config with prevResult, which is present for a chained plugin (ADD, CHECK, usually DEL). */
export const NetConfShape = NetConfCore.extend({ prevResult: z.unknown().optional() });
/** The config less prevResult (the request carries that decoded, on its own). */
export type NetConf = z.infer<typeof NetConfCore>;

/** The pod a runtime names in CNI_ARGS (containerd and CRI-O pass these for Kubernetes pods). */
export interface PodIdentity {
  namespace: string;
  name: string;
  /** K8S_POD_UID; older runtimes do not pass it */
  uid?: string;
  /** K8S_POD_INFRA_CONTAINER_ID: the sandbox (pause) container */
  infraContainerId?: string;
}

interface CniRequestBase {
  containerId: string;
  ifname: string;
  /** CNI_ARGS, parsed */
  args: Record<string, string>;
  /** from CNI_ARGS; undefined when the runtime did not name a Kubernetes pod */
  pod?: PodIdentity;
  /** CNI_PATH, if set (we delegate to no plugin, so it is informational) */
  cniPath?: string;
  config: NetConf;
}

export interface CniAddRequest extends CniRequestBase {
  command: 'ADD';
  /** CNI_NETNS: the pod's network namespace, e.g. /var/run/netns/cni-... */
  netns: string;
  /** the result of the plugins before us; what ADD returns unless the handler changes it */
  prevResult: CniResult;
}

export interface CniCheckRequest extends CniRequestBase {
  command: 'CHECK';
  netns: string;
  prevResult: CniResult;
}

export interface CniDelRequest extends CniRequestBase {
  command: 'DEL';
  /** DEL may come after the netns is gone: then the runtime may leave it out */
  netns?: string;
  prevResult?: CniResult;
}

/** GC and STATUS (CNI 1.1, which we do not claim): the server answers them itself. */
export interface CniOtherRequest {
  command: 'GC' | 'STATUS';
  config?: NetConf;
}

export type CniRequest = CniAddRequest | CniCheckRequest | CniDelRequest | CniOtherRequest;
export type CniCommand = CniRequest['command'];

// ---- CNI_ARGS ----

/**
 * CNI_ARGS: `K=V;K=V` (SPEC.md, Section 2). A value may hold '='; empty segments (a trailing ';') are
 * skipped; a later key wins, as in libcni. A segment without '=' or with an empty key is an error (libcni:
 * "ARGS: invalid pair").
 */
export function parseCniArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const seg of s.split(';')) {
    if (seg === '') continue;
    const eq = seg.indexOf('=');
    if (eq <= 0) throw new CniError(CniCode.InvalidEnvironment, 'invalid CNI_ARGS', `"${seg}" is not KEY=VALUE`);
    out[seg.slice(0, eq)] = seg.slice(eq + 1);
  }
  return out;
}

/** The Kubernetes pod named in CNI_ARGS, if namespace and name are both there. */
export function podFromArgs(args: Record<string, string>): PodIdentity | undefined {
  const namespace = args.K8S_POD_NAMESPACE;
  const name = args.K8S_POD_NAME;
  if (!namespace || !name) return undefined;
  const pod: PodIdentity = { namespace, name };
  if (args.K8S_POD_UID) pod.uid = args.K8S_POD_UID;
  if (args.K8S_POD_INFRA_CONTAINER_ID) pod.infraContainerId = args.K8S_POD_INFRA_CONTAINER_ID;
  return pod;
}

// ---- versions ----

/** [major, minor, patch] of "a.b.c" (no pre-release); undefined when it is not one. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = /^(\d{1,4})\.(\d{1,4})\.(\d{1,4})$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (!x || !y) throw new Error(`not a CNI version: ${x ? b : a}`);
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
}

/** Checks the config's cniVersion for `command`, as the CNI skel does; throws a CniError. */
export function checkVersion(cniVersion: string, command: CniCommand): void {
  if (!parseVersion(cniVersion)) throw new CniError(CniCode.DecodingFailure, 'invalid cniVersion', `"${cniVersion}" is not a version (a.b.c)`);
  if (!(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(CniCode.IncompatibleVersion, 'incompatible CNI versions', `config is "${cniVersion}", meshlane-cni supports ${SUPPORTED_CNI_VERSIONS.join(', ')}`);
  }
  // CHECK came with 0.4.0; a runtime must not send it for an older config
  if (command === 'CHECK' && compareVersions(cniVersion, '0.4.0') < 0) throw new CniError(CniCode.IncompatibleVersion, 'config version does not allow CHECK', `config is "${cniVersion}"`);
}

// ---- the environment a runtime passes ----

// libcni's rules (pkg/utils): container ids and interface names the runtime may pass
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAME_MAX = 15; // IFNAMSIZ - 1

function validateContainerId(id: string): void {
  if (!CONTAINER_ID.test(id)) throw new CniError(CniCode.InvalidEnvironment, 'invalid characters in CNI_CONTAINERID', id);
}

function validateIfname(name: string): void {
  const bad =
    name.length > IFNAME_MAX ? `longer than ${IFNAME_MAX} characters` : name === '.' || name === '..' ? 'is "." or ".."' : /[/:\s]/.test(name) ? 'contains "/", ":" or whitespace' : '';
  if (bad) throw new CniError(CniCode.InvalidEnvironment, 'invalid CNI_IFNAME', `"${name}" ${bad}`);
}

// ---- decoding a request ----

const WireRequestShape = z.object({
  v: z.number(),
  command: z.string(),
  containerId: z.string().optional(),
  netns: z.string().optional(),
  ifname: z.string().optional(),
  args: z.string().optional(),
  path: z.string().optional(),
  config: z.string(),
});

export type Decoded =
  | { ok: true; request: CniRequest }
  /** what went wrong, with what the error result needs: the command (DEL always succeeds) and version */
  | { ok: false; command?: string; cniVersion: string; failure: CniFailure };

const zodText = (e: z.ZodError): string => e.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top)'}: ${i.message}`).join('; ');

/** The pieces a decoded request needs whatever the command. */
function decodeConfig(text: string, command: CniCommand): { config: NetConf; prevResult: unknown } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(CniCode.DecodingFailure, 'failed to decode the network config', (e as Error).message);
  }
  const parsed = NetConfShape.safeParse(raw);
  if (!parsed.success) throw new CniError(CniCode.InvalidConfig, 'invalid network config', zodText(parsed.error));
  const { prevResult, ...config } = parsed.data;
  checkVersion(config.cniVersion, command);
  return { config, prevResult };
}

function decodePrevResult(raw: unknown): CniResult {
  const parsed = CniResultShape.safeParse(raw);
  if (!parsed.success) throw new CniError(CniCode.DecodingFailure, 'failed to decode prevResult', zodText(parsed.error));
  // the object as it came (zod's copy puts the known keys first): a chained plugin passes it through
  return raw as CniResult;
}

/** The cniVersion to put in an error result: the config's, when one can be read. */
function versionOf(configText: string | undefined): string {
  try {
    const v = (JSON.parse(configText ?? '') as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string' && parseVersion(v)) return v;
  } catch {
    /* the fallback */
  }
  return FALLBACK_CNI_VERSION;
}

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'] as const;
const isCommand = (c: string): c is CniCommand => (COMMANDS as readonly string[]).includes(c);

/** One request line from the plugin, decoded and checked as a CNI plugin must. */
export function decodeRequest(line: string): Decoded {
  let wire: z.infer<typeof WireRequestShape>;
  try {
    const parsed = WireRequestShape.safeParse(JSON.parse(line));
    if (!parsed.success) throw new Error(zodText(parsed.error));
    wire = parsed.data;
  } catch (e) {
    return { ok: false, cniVersion: FALLBACK_CNI_VERSION, failure: failure(CniCode.DecodingFailure, 'malformed request from meshlane-cni', (e as Error).message) };
  }
  const cniVersion = versionOf(wire.config);
  const bad = (f: CniFailure): Decoded => ({ ok: false, command: wire.command, cniVersion, failure: f });
  if (wire.v !== WIRE_VERSION) {
    return bad(
      failure(CniCode.IncompatibleVersion, 'meshlane-cni and the meshlane agent differ in version', `the plugin speaks wire protocol ${wire.v}, the agent ${WIRE_VERSION}: run \`meshlane cni install\` of this agent's version`),
    );
  }
  const command = wire.command;
  if (!isCommand(command)) return bad(failure(CniCode.InvalidEnvironment, 'unknown CNI_COMMAND', `CNI_COMMAND=${command}`));
  try {
    if (command === 'GC' || command === 'STATUS') {
      // answered without the handler; a config that does not decode does not matter to them
      let config: NetConf | undefined;
      try {
        config = decodeConfig(wire.config, command).config;
      } catch {
        config = undefined;
      }
      return { ok: true, request: config ? { command, config } : { command } };
    }
    const missing = [
      ['CNI_CONTAINERID', wire.containerId],
      ['CNI_IFNAME', wire.ifname],
      ...(command === 'DEL' ? [] : [['CNI_NETNS', wire.netns]]),
    ]
      .filter(([, v]) => !v)
      .map(([k]) => k);
    if (missing.length) throw new CniError(CniCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`, `CNI_COMMAND=${command} needs them`);
    const containerId = wire.containerId!;
    const ifname = wire.ifname!;
    validateContainerId(containerId);
    validateIfname(ifname);
    const args = parseCniArgs(wire.args);
    const { config, prevResult } = decodeConfig(wire.config, command);
    const base: CniRequestBase = { containerId, ifname, args, config };
    const pod = podFromArgs(args);
    if (pod) base.pod = pod;
    if (wire.path) base.cniPath = wire.path;
    if (command === 'DEL') {
      const del: CniDelRequest = { command, ...base };
      if (wire.netns) del.netns = wire.netns;
      if (prevResult !== undefined && prevResult !== null) del.prevResult = decodePrevResult(prevResult);
      return { ok: true, request: del };
    }
    if (prevResult === undefined || prevResult === null) {
      throw new CniError(CniCode.InvalidConfig, 'meshlane-cni must be chained after the network plugin', `the ${command} config has no prevResult: put meshlane-cni after the interface plugin in the conflist's "plugins"`);
    }
    return { ok: true, request: { command, ...base, netns: wire.netns!, prevResult: decodePrevResult(prevResult) } };
  } catch (e) {
    if (e instanceof CniError) return bad(failure(e.code, e.msg, e.details));
    throw e;
  }
}

// ---- encoding an answer ----

/** The wire response: exit code, newline, what the plugin prints. */
export function encodeResponse(exitCode: number, body = ''): string {
  if (!Number.isInteger(exitCode) || exitCode < 0 || exitCode > 255) throw new Error(`exit code ${exitCode} is not 0..255`);
  return `${exitCode}\n${body}`;
}

/** A success result (ADD): the result in the config's version (SPEC.md: "the same version supplied on input"). */
export function resultBody(cniVersion: string, result: CniResult): string {
  const { cniVersion: _prev, ...rest } = result;
  return JSON.stringify({ cniVersion, ...rest }) + '\n';
}

/** A CNI error result. */
export function errorBody(cniVersion: string, f: CniFailure): string {
  return JSON.stringify({ cniVersion, code: f.code, msg: f.msg, details: f.details ?? '' }) + '\n';
}

/** The IP addresses (no prefix) the result assigns to interfaces inside the pod (those with a sandbox). */
export function sandboxIps(result: CniResult): string[] {
  const ifs = result.interfaces ?? [];
  return (result.ips ?? [])
    .filter((ip) => ip.interface === undefined || ifs[ip.interface]?.sandbox)
    .map((ip) => ip.address.replace(/\/\d+$/, ''));
}
