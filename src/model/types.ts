// The pod model's output: what capture a pod should get. Every source (cluster file today, the
// Kubernetes API later) produces Kubernetes objects; the model turns them into these values; the
// reconciler turns these into map entries. Nothing here touches the kernel.

import type { IpPrefix } from '../util/ip.js';

export type { Family } from '../util/ip.js';
export type InterceptionMode = 'REDIRECT' | 'TPROXY' | 'NONE';

/** A CIDR, normalised: `addr` is the network address (host bits cleared) in canonical text form. */
export type Cidr = IpPrefix;

export type InboundPorts =
  /** `*`: every TCP port except `exclude` (which already holds 15090, 15021, 15020 and the status port). */
  | { mode: 'all'; exclude: number[] }
  /** an explicit list; an empty list means no inbound capture at all. */
  | { mode: 'list'; include: number[] };

/** Per-pod capture settings: exactly the knobs of istio-iptables (capture-spec section 1). */
export interface CaptureSettings {
  /** -p */ outboundPort: number;
  /** -z */ inboundPort: number;
  /** -e */ inboundTunnelPort: number;
  /** DNS listener of the proxy */ dnsPort: number;
  /** -u, in order (order matters: the rules are evaluated per uid, then per gid) */ proxyUids: number[];
  /** -g, in order */ proxyGids: number[];
  /** -m */ interceptionMode: InterceptionMode;
  /** -b / -d */ inboundPorts: InboundPorts;
  /** -i: `all` is `*`; with all=false and include=[] there is no outbound capture */
  outboundInclude: { all: boolean; cidrs: Cidr[] };
  /** -x */ outboundExclude: Cidr[];
  /** -q */ includeOutboundPorts: number[];
  /** -o */ excludeOutboundPorts: number[];
  /** -c */ excludeInterfaces: string[];
  /** -k */ rerouteInterfaces: string[];
  /** --redirect-dns / --capture-all-dns */ dns: { enabled: boolean; captureAll: boolean };
}

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

/** One pod that should be captured, with its settings. */
export interface DesiredPod {
  ref: PodRef;
  /** status.podIPs / podIP (at most one per family), canonical text. Empty when the pod gave IPs but
   *  none was valid: it is captured by its network namespace, with no inbound steering (keyed by IP). */
  ips: string[];
  qosClass: QosClass;
  settings: CaptureSettings;
  /** `invalid value '<v>' for annotation '<name>': <reason>` and similar; never widen the bypass */
  errors: string[];
  /** annotations that were understood but that meshlane cannot enforce yet, e.g. excludeInterfaces */
  unsupported: string[];
}

/** A pod the model looked at and decided not to capture, with the reason (for `meshlane status`). */
export interface SkippedPod {
  ref: PodRef;
  reason: string;
}

export interface ModelResult {
  captured: DesiredPod[];
  skipped: SkippedPod[];
}
