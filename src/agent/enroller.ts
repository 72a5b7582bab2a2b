// The seam between the CNI handler (the agent's end of meshlane-cni, src/cni/) and the pipeline: what the
// handler asks when the runtime runs the plugin for a pod. Implemented by Pipeline; Agent.enroller gives
// it once the agent has started.
//
// ADD, in the handler:
//   const w = await enroller.wanted({ namespace, name, uid }, timeoutMs, signal);
//     capture: true      -> const st = await enroller.enroll(w.uid, { nsPath: CNI_NETNS, how: 'cni' }, signal);
//                           st?.state === 'captured': the pod's maps entries and netns links are in place, the
//                           pod may start; otherwise st.reason / st.errors say why (fail closed: CNI error)
//     capture: false     -> the pod is not to be captured (w.reason): ADD passes the prevResult through
//     capture: 'unknown' -> the source did not show the pod within timeoutMs (the API lags, or is down): the
//                           handler decides (fail closed for a pod of a captured namespace)
// The netns handed over is the highest authority for the pod's netns (pod-locator.ts bind()): it replaces
// whatever the sandbox process said, and holds until the pod leaves the source.
import type { CniNetns } from './pod-locator.js';
import type { PodStatus } from './status.js';

export type Wanted = { capture: true; uid: string } | { capture: false; uid: string; reason: string } | { capture: 'unknown'; reason: string };

export interface Enroller {
  /**
   * Is the pod to be captured? Resolves as soon as the source shows the pod (by uid, or by namespace/name
   * when the runtime passed no uid) and the pipeline has decided it, or after `timeoutMs` with 'unknown'.
   */
  wanted(pod: { uid?: string; namespace: string; name: string }, timeoutMs: number, signal?: AbortSignal): Promise<Wanted>;
  /**
   * Enroll pod `uid` with this netns now; resolves once the pipeline has handled the pod: its status
   * (state 'captured' with the maps entries and netns links in place, or 'pending' with the reason), or
   * undefined when the pod is not to be captured or the agent stops. `signal` gives up waiting.
   */
  enroll(uid: string, ns: CniNetns, signal?: AbortSignal): Promise<PodStatus | undefined>;
}
