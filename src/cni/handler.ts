// What the agent does for meshlane-cni's requests (the CniServer's handler): all CNI policy lives here, the
// plugin only carries bytes. The pipeline is reached through its enrolment seam (src/agent/enroller.ts).
//
// ADD   The pod named in CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID) is looked up in the source,
//       waiting up to `podWaitMs` for it to show. To be captured: its netns (CNI_NETNS) is bound as the pod's
//       by the highest authority, enrolled in the maps and given its per-netns programs, and only then is the
//       prevResult returned: no container of the pod runs before capture is in place. Not to be captured: the
//       prevResult at once. Not shown within the wait, or not enrolled: ADD fails (fail closed, as istio-cni),
//       the pod does not start and the runtime retries. A container the runtime names no Kubernetes pod for
//       (no K8S_POD_* in CNI_ARGS) is not a pod of ours: passed through, as istio-cni does.
//       ADD also waits for the agent's start to finish (programs attached) before it answers.
// DEL   Releases the pod that holds this netns (found by the container's CNI binding, else by the netns's
//       cookie while the netns still opens) and always succeeds: an unknown pod, a netns already gone or the
//       agent down are no error (the plugin succeeds by itself when it cannot reach us).
// CHECK The pod is captured in exactly this netns when it is to be captured; else an error.
// VERSION is answered by the plugin itself.
import type { CniHandler, CniAddOutcome, CniCheckOutcome } from './server.js';
import { CniCode, CniError, sandboxIps, type CniAddRequest, type CniCheckRequest, type CniDelRequest, type PodIdentity } from './protocol.js';
import type { Enroller } from '../agent/enroller.js';
import type { Logger } from '../util/log.js';

/** How long ADD waits for the source to show the pod, by default (the API lags a pod's creation a little). */
export const DEFAULT_POD_WAIT_MS = 10_000;

export interface AgentCniHandlerOptions {
  /** resolves once the agent's capture is active (programs attached); the seam into its pipeline */
  enroller: Promise<Enroller>;
  log: Logger;
  /** how long ADD and CHECK wait for the source to show the pod (default DEFAULT_POD_WAIT_MS) */
  podWaitMs?: number;
  /** the netns cookie of a netns path (the native addon; a fake in unit tests) */
  netnsCookie: (nsPath: string) => bigint;
}

const podText = (p: PodIdentity): string => `${p.namespace}/${p.name}${p.uid ? ` (uid ${p.uid})` : ''}`;

/** Rejects when `signal` aborts: a wait must not outlive its request. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export class AgentCniHandler implements CniHandler {
  private readonly podWaitMs: number;

  constructor(private readonly o: AgentCniHandlerOptions) {
    this.podWaitMs = o.podWaitMs ?? DEFAULT_POD_WAIT_MS;
  }

  async add(req: CniAddRequest, signal: AbortSignal): Promise<CniAddOutcome> {
    const pod = req.pod;
    if (!pod) {
      this.o.log.info({ containerId: req.containerId }, 'cni: ADD for a container that names no Kubernetes pod (no K8S_POD_* in CNI_ARGS): passed through');
      return { result: req.prevResult };
    }
    const enroller = await untilAborted(this.o.enroller, signal);
    this.o.log.debug({ pod: podText(pod), containerId: req.containerId, netns: req.netns }, 'cni: ADD: waiting for the source to show the pod');
    const w = await enroller.wanted(pod, this.podWaitMs, signal, { ips: sandboxIps(req.prevResult) });
    if (w.capture === 'unknown') {
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
      throw new CniError(
        CniCode.TryAgainLater,
        `pod ${pod.namespace}/${pod.name} is not known to the meshlane agent`,
        `the pod source did not show pod ${podText(pod)} on this node within ${this.podWaitMs / 1000} s; the pod does not start uncaptured (fail closed): check that the agent follows the API server (meshlane status) and that the pod is scheduled to this node; the runtime retries`,
      );
    }
    if (w.capture === false) {
      this.o.log.info({ pod: podText(pod), reason: w.reason }, 'cni: ADD for a pod that is not captured: passed through');
      return { result: req.prevResult };
    }
    const cookie = this.cookieOf(req.netns, pod);
    let st;
    try {
      st = await enroller.enroll(w.uid, { nsPath: req.netns, how: 'cni', containerId: req.containerId }, signal);
    } catch (e) {
      throw new CniError(CniCode.AgentFailure, `meshlane could not take CNI_NETNS as the netns of pod ${pod.namespace}/${pod.name}`, `${req.netns}: ${(e as Error).message}`);
    }
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
    const attachFailed = st?.errors.find((e) => e.startsWith('attaching the inbound program'));
    if (!st || st.state !== 'captured' || st.netnsCookie !== cookie.toString() || attachFailed) {
      const why = attachFailed ?? st?.reason ?? (st ? `captured in another netns (cookie ${st.netnsCookie}, CNI_NETNS has ${cookie})` : 'the pod is no longer to be captured, or the agent is stopping');
      throw new CniError(CniCode.AgentFailure, `meshlane could not capture pod ${pod.namespace}/${pod.name}`, `${why}; the pod does not start uncaptured (fail closed)`);
    }
    this.o.log.info({ pod: podText(pod), netns: req.netns, cookie: cookie.toString(), podId: st.podId }, 'cni: pod enrolled before its containers start');
    return { result: req.prevResult };
  }

  async check(req: CniCheckRequest, signal: AbortSignal): Promise<CniCheckOutcome> {
    const pod = req.pod;
    if (!pod) return { ok: true };
    const enroller = await untilAborted(this.o.enroller, signal);
    const w = await enroller.wanted(pod, this.podWaitMs, signal, { ips: sandboxIps(req.prevResult) });
    if (w.capture === 'unknown') return { error: { code: CniCode.TryAgainLater, msg: `pod ${pod.namespace}/${pod.name} is not known to the meshlane agent`, details: w.reason } };
    if (w.capture === false) return { ok: true };
    const cookie = this.cookieOf(req.netns, pod);
    const st = enroller.status(w.uid);
    if (st?.state === 'captured' && st.netnsCookie === cookie.toString()) return { ok: true };
    return {
      error: {
        code: CniCode.AgentFailure,
        msg: `pod ${pod.namespace}/${pod.name} is not captured in CNI_NETNS`,
        details: st ? `${st.state}${st.reason ? `: ${st.reason}` : ''}${st.netnsCookie ? ` (netns cookie ${st.netnsCookie}, CNI_NETNS has ${cookie})` : ''}` : 'the agent has no status for it',
      },
    };
  }

  async del(req: CniDelRequest, signal: AbortSignal): Promise<void> {
    const enroller = await untilAborted(this.o.enroller, signal);
    let netnsCookie: bigint | undefined;
    if (req.netns) {
      try {
        netnsCookie = this.o.netnsCookie(req.netns);
      } catch {
        // the netns is gone already (DEL may come after it): the container's binding still finds the pod
      }
    }
    const uid = await enroller.unenroll({ containerId: req.containerId, ...(req.pod ? { pod: req.pod } : {}), ...(netnsCookie !== undefined ? { netnsCookie } : {}) }, signal);
    this.o.log.info({ pod: req.pod ? podText(req.pod) : undefined, containerId: req.containerId, released: uid }, uid ? 'cni: DEL released the pod' : 'cni: DEL for a netns no pod of ours holds: nothing to do');
  }

  private cookieOf(nsPath: string, pod: PodIdentity): bigint {
    try {
      return this.o.netnsCookie(nsPath);
    } catch (e) {
      throw new CniError(CniCode.InvalidEnvironment, 'CNI_NETNS is not a network namespace', `pod ${podText(pod)}: ${nsPath}: ${(e as Error).message}`);
    }
  }
}
