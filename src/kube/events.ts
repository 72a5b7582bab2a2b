// Kubernetes Events on a pod, so a problem reaches the pod's owner (`kubectl describe pod`, `kubectl
// get events`) and not only the agent's log. Recorded the way kubelet records them, after client-go's
// tools/record (events_cache.go, event.go):
// - correlation (eventLogger.eventObserve): an Event is keyed by source (component, host), the involved
//   object (kind, namespace, name, uid, apiVersion), type, reason and message. The first occurrence is
//   created (count 1, firstTimestamp = lastTimestamp = now, name `<pod>.<unix nanoseconds in hex>`);
//   a repeat of the same key updates that Event with a strategic merge patch of count+1, lastTimestamp
//   and message, instead of creating another object. If the Event is gone meanwhile (the API server
//   keeps Events an hour), the patch answers 404 and the Event is created again under the same name,
//   with the count carried on. The key cache is an LRU of 4096 entries, as client-go's.
// - spam filter (EventSourceObjectSpamFilter): a token bucket per source and object, burst 25, one
//   token back every 300 s; an Event over it is dropped (logged at debug).
// - not taken over: client-go's aggregation of 10 Events that differ only by message into one
//   "(combined from similar events)" Event. The messages here are one per malformed setting of a pod,
//   a handful at most, and the spam filter bounds them per pod anyway.
// - sending: one request at a time from a bounded queue; transport errors and 5xx/429 are retried a
//   few times, other answers are final (as client-go's recordToSink, with fewer tries); a failure is
//   logged and never reaches the caller: Events are best effort.
// When to record is the caller's business; PodWarnings below records a pod's errors when they change,
// not on every pass of the agent.
import type { Logger } from '../util/log.js';
import type { PodEventSink } from '../sources/source.js';
import { KubeRequestError, type KubeClient } from './client.js';
import { Lru } from './lru.js';
import { sleep } from './reflector.js';

export const COMPONENT = 'meshlane';
const MAX_MESSAGE = 1024;
const MAX_NAME = 253;

export interface PodRefLike {
  namespace: string;
  name: string;
  uid: string;
}

export interface EventRecorderOptions {
  /** source.host and reportingInstance */
  nodeName: string;
  log?: Logger;
  /** the clock (tests move it to see lastTimestamp move) */
  now?: () => Date;
  /** correlation and spam-filter cache entries (default 4096, as client-go) */
  cacheSize?: number;
  /** Events per pod in a burst (default 25) and tokens back per second (default 1/300), as client-go */
  spamBurst?: number;
  spamRefillPerSecond?: number;
  /** Events waiting to be sent at most (default 1000); more are dropped */
  maxQueue?: number;
  /** tries per Event on transport errors, 5xx and 429 (default 3), this far apart times the try (default 1000 ms) */
  maxTries?: number;
  retryDelayMs?: number;
  requestTimeoutMs?: number;
}

interface Item {
  pod: PodRefLike;
  reason: string;
  message: string;
}

interface Observation {
  name: string;
  count: number;
  firstTimestamp: string;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** RFC 3339 to the second, as metav1.Time serialises */
const rfc3339 = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

const truncate = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n - 3)}...` : s);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** the pod model names a pod without uid `<namespace>/<name>`: that is no uid to give the API */
const realUid = (uid: string): string | undefined => (uid !== '' && !uid.includes('/') ? uid : undefined);

export class EventRecorder implements PodEventSink {
  private client: KubeClient | undefined;
  private readonly queue: Item[] = [];
  private draining: Promise<void> | undefined;
  private readonly seen: Lru<string, Observation>;
  private readonly spam: Lru<string, Bucket>;
  private readonly stopCtl = new AbortController();
  private seq = 0;
  private idle: Array<() => void> = [];
  private readonly o: Required<Omit<EventRecorderOptions, 'log'>> & { log?: Logger };
  /** what happened to the Events so far (status and tests) */
  readonly counts = { created: 0, patched: 0, dropped: 0, failed: 0 };

  constructor(opts: EventRecorderOptions) {
    this.o = {
      now: () => new Date(),
      cacheSize: 4096,
      spamBurst: 25,
      spamRefillPerSecond: 1 / 300,
      maxQueue: 1000,
      maxTries: 3,
      retryDelayMs: 1000,
      requestTimeoutMs: 10_000,
      ...opts,
    };
    this.seen = new Lru(this.o.cacheSize);
    this.spam = new Lru(this.o.cacheSize);
  }

  /** Start sending (the client exists once the source started); warnings before that wait in the queue. */
  attach(client: KubeClient): void {
    this.client = client;
    this.kick();
  }

  warn(pod: PodRefLike, reason: string, message: string): void {
    if (this.stopCtl.signal.aborted) return;
    if (this.queue.length >= this.o.maxQueue) {
      this.counts.dropped++;
      this.o.log?.debug({ pod: `${pod.namespace}/${pod.name}`, reason }, 'Kubernetes Event dropped: the queue is full');
      return;
    }
    this.queue.push({ pod: { ...pod }, reason, message });
    this.kick();
  }

  /** Resolves once every queued Event has been sent (or given up). */
  flush(): Promise<void> {
    if (!this.draining && (this.queue.length === 0 || !this.client)) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Stop sending; what is still queued is dropped. */
  async stop(): Promise<void> {
    this.stopCtl.abort();
    this.queue.length = 0;
    await this.draining;
    for (const f of this.idle.splice(0)) f();
  }

  private kick(): void {
    if (this.draining || !this.client || this.stopCtl.signal.aborted || this.queue.length === 0) return;
    this.draining = this.drain();
  }

  private async drain(): Promise<void> {
    await Promise.resolve(); // so that this.draining is set before the loop below can end
    while (this.queue.length > 0 && !this.stopCtl.signal.aborted) {
      const item = this.queue.shift() as Item;
      try {
        await this.record(item);
      } catch (e) {
        // never fatal: Events are best effort
        this.counts.failed++;
        this.o.log?.warn(
          { pod: `${item.pod.namespace}/${item.pod.name}`, reason: item.reason, err: (e as Error).message },
          'could not post a Kubernetes Event',
        );
      }
    }
    this.draining = undefined;
    for (const f of this.idle.splice(0)) f();
  }

  private event(item: Item, now: Date): Record<string, unknown> {
    const uid = realUid(item.pod.uid);
    return {
      apiVersion: 'v1',
      kind: 'Event',
      involvedObject: { kind: 'Pod', namespace: item.pod.namespace, name: item.pod.name, apiVersion: 'v1', ...(uid ? { uid } : {}) },
      reason: item.reason,
      message: truncate(item.message, MAX_MESSAGE),
      type: 'Warning',
      source: { component: COMPONENT, host: this.o.nodeName },
      reportingComponent: COMPONENT,
      reportingInstance: this.o.nodeName,
      firstTimestamp: rfc3339(now),
      lastTimestamp: rfc3339(now),
      count: 1,
    };
  }

  /** client-go's getEventKey (joined unambiguously) */
  private key(item: Item, message: string): string {
    return JSON.stringify([
      COMPONENT,
      this.o.nodeName,
      'Pod',
      item.pod.namespace,
      item.pod.name,
      '',
      realUid(item.pod.uid) ?? '',
      'v1',
      'Warning',
      item.reason,
      message,
    ]);
  }

  /** client-go's EventSourceObjectSpamFilter: a token bucket per source + object */
  private allowed(item: Item, now: number): boolean {
    const key = JSON.stringify([COMPONENT, this.o.nodeName, 'Pod', item.pod.namespace, item.pod.name, realUid(item.pod.uid) ?? '', 'v1']);
    const b = this.spam.get(key) ?? { tokens: this.o.spamBurst, at: now };
    const tokens = Math.min(this.o.spamBurst, b.tokens + ((now - b.at) / 1000) * this.o.spamRefillPerSecond);
    const ok = tokens >= 1;
    this.spam.set(key, { tokens: ok ? tokens - 1 : tokens, at: now });
    return ok;
  }

  private name(pod: string, now: Date): string {
    // <pod>.<nanoseconds since the epoch in hex> as client-go's makeEvent; the counter keeps two
    // Events of the same millisecond apart
    const nanos = BigInt(now.getTime()) * 1_000_000n + BigInt(this.seq++ % 1_000_000);
    const suffix = `.${nanos.toString(16)}`;
    return `${pod.slice(0, MAX_NAME - suffix.length)}${suffix}`;
  }

  private async record(item: Item): Promise<void> {
    const client = this.client as KubeClient;
    const now = this.o.now();
    const ev = this.event(item, now);
    const message = ev.message as string;
    if (!this.allowed(item, now.getTime())) {
      this.counts.dropped++;
      this.o.log?.debug(
        { pod: `${item.pod.namespace}/${item.pod.name}`, reason: item.reason },
        'Kubernetes Event dropped: too many for this pod (spam filter)',
      );
      return;
    }
    const key = this.key(item, message);
    const prev = this.seen.get(key);
    const ns = encodeURIComponent(item.pod.namespace);
    const call = async (method: string, path: string, body: unknown, contentType?: string): Promise<unknown> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await client.json(method, path, {
            body,
            signal: this.stopCtl.signal,
            timeoutMs: this.o.requestTimeoutMs,
            ...(contentType ? { contentType } : {}),
          });
        } catch (e) {
          const err = e instanceof KubeRequestError ? e : new KubeRequestError(String(e));
          const s = err.info.status;
          const transient = s === undefined || s >= 500 || s === 429;
          if (!transient || err.info.aborted || attempt >= this.o.maxTries) throw err;
          await sleep(this.o.retryDelayMs * attempt, this.stopCtl.signal);
          if (this.stopCtl.signal.aborted) throw err;
        }
      }
    };
    let stored: unknown;
    let obs: Observation;
    if (prev) {
      obs = { name: prev.name, count: prev.count + 1, firstTimestamp: prev.firstTimestamp };
      try {
        stored = await call(
          'PATCH',
          `/api/v1/namespaces/${ns}/events/${encodeURIComponent(prev.name)}`,
          { count: obs.count, lastTimestamp: ev.lastTimestamp, message },
          'application/strategic-merge-patch+json',
        );
        this.counts.patched++;
      } catch (e) {
        if (!(e instanceof KubeRequestError && e.info.status === 404)) throw e;
        // expired meanwhile: create it again under its name, the count carried on (client-go does the same)
        stored = await call('POST', `/api/v1/namespaces/${ns}/events`, {
          ...ev,
          metadata: { name: prev.name, namespace: item.pod.namespace },
          count: obs.count,
          firstTimestamp: obs.firstTimestamp,
        });
        this.counts.created++;
      }
    } else {
      obs = { name: this.name(item.pod.name, now), count: 1, firstTimestamp: ev.firstTimestamp as string };
      stored = await call('POST', `/api/v1/namespaces/${ns}/events`, { ...ev, metadata: { name: obs.name, namespace: item.pod.namespace } });
      this.counts.created++;
    }
    // the server's word on the count, as client-go's UpdateState
    if (isRecord(stored) && typeof stored.count === 'number') obs.count = stored.count;
    this.seen.set(key, obs);
  }
}

/** The Event for one of a pod's errors from the pod model: the reason, and a message that says the fix. */
export function podErrorEvent(error: string): { reason: string; message: string } {
  if (/ for annotation '/.test(error)) {
    return {
      reason: 'InvalidCaptureAnnotation',
      message: `${error}: meshlane ignores this annotation (its default applies, which never widens the bypass); correct or remove it in the pod's template`,
    };
  }
  return {
    reason: 'InvalidCaptureSetting',
    message: `${error}: meshlane applies the narrowest bypass for this setting until it is fixed in the pod's template`,
  };
}

/**
 * Records a Warning Event for each error of a pod when it appears, not on every pass: call update()
 * with every pod's current errors after each pass of the model. An error that goes away and comes back
 * is recorded again (the same Event, its count raised). Memory: the errors of the pods of the last pass.
 */
export class PodWarnings {
  private last = new Map<string, Set<string>>();

  constructor(private readonly sink: PodEventSink) {}

  update(pods: Iterable<{ ref: PodRefLike; errors: readonly string[] }>): void {
    const next = new Map<string, Set<string>>();
    for (const p of pods) {
      const prev = this.last.get(p.ref.uid);
      const cur = next.get(p.ref.uid) ?? new Set<string>();
      for (const e of p.errors) {
        if (!prev?.has(e) && !cur.has(e)) {
          const { reason, message } = podErrorEvent(e);
          this.sink.warn(p.ref, reason, message);
        }
        cur.add(e);
      }
      next.set(p.ref.uid, cur);
    }
    this.last = next;
  }

  /** The same for one pod (the agent's pipeline handles pods one at a time). */
  updatePod(ref: PodRefLike, errors: readonly string[]): void {
    const prev = this.last.get(ref.uid);
    const cur = new Set<string>();
    for (const e of errors) {
      if (!prev?.has(e) && !cur.has(e)) {
        const { reason, message } = podErrorEvent(e);
        this.sink.warn(ref, reason, message);
      }
      cur.add(e);
    }
    this.last.set(ref.uid, cur);
  }

  /** A pod that is gone. */
  forget(uid: string): void {
    this.last.delete(uid);
  }
}
