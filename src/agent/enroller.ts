// The seam between the CNI handler (the agent's end of meshlane-cni, src/cni/handler.ts) and the pipeline:
// what the handler asks when the runtime runs the plugin for a pod. Implemented by Pipeline; Agent gives it
// to the handler once capture is active (programs attached).
//
// ADD, in the handler:
//   const w = await enroller.wanted({ namespace, name, uid }, timeoutMs, signal, { ips: <prevResult's> });
//     capture: true      -> const st = await enroller.enroll(w.uid, { nsPath: CNI_NETNS, how: 'cni', containerId }, signal);
//                           st?.state === 'captured': the pod's maps entries and netns links are in place, the
//                           pod may start; otherwise st.reason / st.errors say why (fail closed: CNI error)
//     capture: false     -> the pod is not to be captured (w.reason): ADD passes the prevResult through
//     capture: 'unknown' -> the source did not show the pod within timeoutMs (the API lags, or is down): the
//                           handler fails ADD (fail closed)
// The IPs of the prevResult stand in for status.podIPs while the API shows none: at ADD time kubelet has not
// reported the pod's IPs yet (the network plugin just made them), and a pod without IPs is otherwise not
// captured ("no pod IP yet"). Once the API shows IPs, those count.
// The netns handed over is the highest authority for the pod's netns (pod-locator.ts bind()): it replaces
// whatever the sandbox process said, and holds until the pod leaves the source or a DEL releases it.
import type { CniNetns } from './pod-locator.js';
import type { PodStatus } from './status.js';

export type Wanted = { capture: true; uid: string } | { capture: false; uid: string; reason: string } | { capture: 'unknown'; reason: string };

/** The pod a runtime names in CNI_ARGS. */
export interface CniPodRef {
  uid?: string;
  namespace: string;
  name: string;
}

/** What a DEL names: the sandbox container, the pod if CNI_ARGS said, the netns cookie if it still opens. */
export interface CniRelease {
  containerId: string;
  pod?: CniPodRef;
  netnsCookie?: bigint;
}

export interface Enroller {
  /**
   * Is the pod to be captured? Resolves as soon as the source shows the pod (by uid when the runtime passed
   * one, else by namespace/name) and the pipeline has decided it (with `hints` applied), or after `timeoutMs`
   * with 'unknown'.
   */
  wanted(pod: CniPodRef, timeoutMs: number, signal?: AbortSignal, hints?: { ips?: string[] }): Promise<Wanted>;
  /**
   * Enroll pod `uid` with this netns now; resolves once the pipeline has handled the pod: its status
   * (state 'captured' with the maps entries and netns links in place, or 'pending' with the reason), or
   * undefined when the pod is not to be captured or the agent stops. `signal` gives up waiting.
   */
  enroll(uid: string, ns: CniNetns, signal?: AbortSignal): Promise<PodStatus | undefined>;
  /**
   * A DEL: the pod whose netns this is (by the container's CNI binding, else by the netns cookie) leaves the
   * maps and its netns links go; resolves with the pod's uid once done, or undefined when no pod of ours had
   * it (nothing to do).
   */
  unenroll(r: CniRelease, signal?: AbortSignal): Promise<string | undefined>;
  /** The status of one pod (CHECK). */
  status(uid: string): PodStatus | undefined;
}
