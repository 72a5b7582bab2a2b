// A reflector, as client-go's (tools/cache/reflector.go) for one resource: list, then watch from the
// list's resourceVersion, and keep doing that for ever. client-node 1.4's informer stops for good after
// an abrupt close, a reset or a 503, re-watches in a hot loop on an ERROR event other than 410, and
// never asks for bookmarks (test/unit/kube-server.test.ts measures each); this one:
// - lists in pages (limit/continue), the first time from the watch cache (resourceVersion=0) as
//   client-go does, after a 410 or an ERROR event from the latest state (resourceVersion unset);
// - watches with allowWatchBookmarks=true and timeoutSeconds (random in [T, 2T), as client-go), so the
//   server ends every watch after a while and a quiet watch still moves its resourceVersion along;
// - re-watches at once from the last resourceVersion after a clean end; relists after a 410 (the
//   history is gone) and after any other ERROR event (a server that lost its state answers 504
//   "too large resource version": watching the same version again would loop); after a failed request
//   or a broken stream it waits (jittered exponential backoff, reset by the first event or bookmark of a
//   watch) and re-watches from the last resourceVersion, relisting only if that comes back as 410;
// - gives up on a watch that sent nothing for its timeoutSeconds plus a slack (the staleness watchdog:
//   the server had to end it by then, so the connection is dead), also while it waits for the headers;
// - re-reads the credentials after a 401 (a rotated service account token).
// What it delivers: `listed` with every item of a complete list (never a partial one), then `upsert` /
// `remove` per watch event, each object the API's own JSON with kind and apiVersion set (list items come
// without them).
import { KubeRequestError, linked, type KubeClient } from './client.js';

export type KubeObject = Record<string, unknown> & { metadata?: Record<string, unknown> };

export interface Tuning {
  /** watches end (server side) after a random time in [T, 2T) seconds; client-go: 5 min */
  watchTimeoutSeconds: number;
  /** the watchdog gives up on a watch that sent nothing for its timeout plus this long */
  staleSlackMs: number;
  /** a list page gives up after this long */
  requestTimeoutMs: number;
  /** items per list page */
  pageSize: number;
  /** the first wait after a failure; doubles per failure in a row, up to backoffMaxMs; each wait is
   * between half and all of that (jitter) */
  backoffInitialMs: number;
  backoffMaxMs: number;
}

export const DEFAULT_TUNING: Tuning = {
  watchTimeoutSeconds: 300,
  staleSlackMs: 30_000,
  requestTimeoutMs: 60_000,
  pageSize: 500,
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
};

/** a clean end this soon after the start, with nothing received, counts as a failure (client-go: "very short watch") */
const SHORT_WATCH_MS = 1000;

export interface ResourceSpec {
  /** 'Pod' */
  kind: string;
  /** 'pods', for messages */
  resource: string;
  /** '/api/v1/pods' */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
}

export interface ReflectorSink {
  /** a complete list: the whole current state of the resource */
  listed(items: KubeObject[]): void;
  upsert(obj: KubeObject): void;
  remove(obj: KubeObject): void;
  /** watching or error changed */
  changed(): void;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** an ERROR watch event: the watch cannot go on from its resourceVersion */
class WatchErrorEvent extends KubeRequestError {}

/** The wait after `failures` failures in a row: initial x 2^(failures-1), at most max, of which a random
 * half to all (jitter, so that the agents of a cluster do not come back all at once). */
export function backoffDelay(failures: number, t: Pick<Tuning, 'backoffInitialMs' | 'backoffMaxMs'>, random: () => number = Math.random): number {
  const n = Math.max(1, failures);
  const cap = Math.min(t.backoffMaxMs, t.backoffInitialMs * 2 ** Math.min(n - 1, 30));
  return cap / 2 + (random() * cap) / 2;
}

/** setTimeout as a promise that an abort ends early */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

export class Reflector {
  /** a watch is open (answered 200) */
  watching = false;
  /** the current problem, a phrase without the server ("unreachable (ECONNREFUSED)"); cleared by the next success */
  error: string | undefined;
  /** ms since the epoch of the last answer or line from the server */
  lastContact: number | undefined;
  /** lists and watches started so far, complete lists, watches answered 200, and failures (tests, status, metrics) */
  readonly counts = { lists: 0, watches: 0, listed: 0, opened: 0, failures: 0 };
  private rv: string | undefined;
  /** resourceVersion of the next list: 0 (the watch cache) until the first one succeeded, then unset (the latest) */
  private listFrom = '0';
  private failures = 0;
  private readonly stopCtl = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    private readonly client: KubeClient,
    readonly spec: ResourceSpec,
    private readonly sink: ReflectorSink,
    private readonly tuning: Tuning,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopCtl.abort();
    await this.running;
  }

  private get stopped(): boolean {
    return this.stopCtl.signal.aborted;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let wait: number;
      try {
        if (this.rv === undefined) await this.list();
        wait = await this.watchOnce();
      } catch (e) {
        if (this.stopped) break;
        wait = this.failed(e instanceof KubeRequestError ? e : new KubeRequestError(String(e)));
      }
      if (wait > 0) await sleep(wait, this.stopCtl.signal);
    }
    this.setWatching(false);
  }

  private backoff(): number {
    return backoffDelay(this.failures, this.tuning, this.random);
  }

  /** What to do after a failed list or watch: how long to wait before the next round. */
  private failed(err: KubeRequestError): number {
    const verb = this.rv === undefined ? 'list' : 'watch';
    this.failures++;
    this.counts.failures++;
    if (err.info.status === 410) {
      // the history (or a list's continue token) is gone: list again, from the latest state; at once
      // the first time (the normal case after a long disconnect), with backoff if it keeps happening
      this.rv = undefined;
      this.listFrom = '';
      return this.failures > 1 ? this.backoff() : 0;
    }
    if (err instanceof WatchErrorEvent) {
      // 504 "too large resource version" (a server that lost its state), 500...: this resourceVersion
      // cannot be resumed; relist (not the hot loop of re-watching it)
      this.rv = undefined;
      this.listFrom = '';
    }
    let problem: string;
    if (err.info.status === 401) {
      const reload = this.client.reload();
      problem = `refused the credentials (401 Unauthorized) to ${verb} ${this.spec.resource}: ${reload ? `re-reading them failed: ${reload}` : 'check the user of the kubeconfig, or the service account token'}`;
    } else if (err.info.status === 403) {
      problem = `forbids ${verb} ${this.spec.resource} (403 Forbidden): the agent's ClusterRole must allow list and watch on pods and namespaces`;
    } else if (err.info.status !== undefined) {
      problem = `${err.message} (${verb} ${this.spec.resource})`;
    } else {
      problem = err.message;
    }
    this.setError(problem);
    return this.backoff();
  }

  private contact(): void {
    this.lastContact = Date.now();
  }

  private progress(): void {
    this.failures = 0;
  }

  private setWatching(w: boolean): void {
    if (this.watching === w) return;
    this.watching = w;
    this.sink.changed();
  }

  private setError(e: string | undefined): void {
    if (this.error === e) return;
    this.error = e;
    this.sink.changed();
  }

  private withKind(o: Record<string, unknown>): KubeObject {
    return { kind: this.spec.kind, apiVersion: 'v1', ...o };
  }

  private async list(): Promise<void> {
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    this.counts.lists++;
    do {
      const query = {
        limit: this.tuning.pageSize,
        fieldSelector: this.spec.fieldSelector,
        labelSelector: this.spec.labelSelector,
        ...(cont !== undefined ? { continue: cont } : { resourceVersion: this.listFrom === '' ? undefined : this.listFrom }),
      };
      const page = await this.client.json('GET', this.spec.path, { query, signal: this.stopCtl.signal, timeoutMs: this.tuning.requestTimeoutMs });
      this.contact();
      const meta = isRecord(page) && isRecord(page.metadata) ? page.metadata : undefined;
      if (!isRecord(page) || !Array.isArray(page.items) || !meta || typeof meta.resourceVersion !== 'string') {
        throw new KubeRequestError(`answered the list of ${this.spec.resource} with something that is not a ${this.spec.kind}List`);
      }
      for (const item of page.items) if (isRecord(item)) items.push(this.withKind(item));
      rv = meta.resourceVersion;
      cont = typeof meta.continue === 'string' && meta.continue !== '' ? meta.continue : undefined;
    } while (cont !== undefined);
    if (this.stopped) return;
    this.rv = rv;
    this.listFrom = '';
    this.setError(undefined);
    // A complete list ends a run of failures: the next one waits from the start of the backoff, not as the n-th
    // of an outage that is over (an API server down at start had the first watch failure after it wait up to
    // 30 s). One is kept, so that a server that answers every watch after a list with 410 gets a backoff, not
    // a loop of lists.
    this.failures = Math.min(this.failures, 1);
    this.counts.listed++;
    this.sink.listed(items);
  }

  /** One watch from this.rv; returns how long to wait before the next. Throws on failure. */
  private async watchOnce(): Promise<number> {
    const t = this.tuning.watchTimeoutSeconds;
    const timeoutSeconds = Math.max(1, Math.floor(t * (1 + this.random())));
    const staleMs = timeoutSeconds * 1000 + this.tuning.staleSlackMs;
    const ctl = linked(this.stopCtl.signal);
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () =>
          ctl.abort(
            new KubeRequestError(`sent nothing on the watch of ${this.spec.resource} for ${Math.round(staleMs / 1000)} s (a dead connection?)`, {
              timeout: true,
            }),
          ),
        staleMs,
      );
    };
    const started = Date.now();
    let received = false;
    arm();
    this.counts.watches++;
    try {
      await this.client.watch(
        this.spec.path,
        { allowWatchBookmarks: true, resourceVersion: this.rv, timeoutSeconds, fieldSelector: this.spec.fieldSelector, labelSelector: this.spec.labelSelector },
        {
          signal: ctl.signal,
          onOpen: () => {
            this.counts.opened++;
            arm();
            this.contact();
            this.setError(undefined);
            this.setWatching(true);
          },
          onEvent: (ev) => {
            arm();
            this.contact();
            this.handle(ev);
            received = true;
            this.progress();
          },
        },
      );
    } finally {
      clearTimeout(timer);
      ctl.dispose();
      this.setWatching(false);
    }
    if (!received && Date.now() - started < SHORT_WATCH_MS) {
      // ended at once with nothing in it: a server that closes watches straight away must not make a loop
      this.failures++;
      this.counts.failures++;
      return this.backoff();
    }
    return 0;
  }

  private handle(ev: unknown): void {
    if (!isRecord(ev) || typeof ev.type !== 'string' || !isRecord(ev.object)) {
      throw new KubeRequestError(`sent a watch event without type or object (watch ${this.spec.resource})`);
    }
    const obj = ev.object;
    const rv = isRecord(obj.metadata) && typeof obj.metadata.resourceVersion === 'string' ? obj.metadata.resourceVersion : undefined;
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        if (rv !== undefined) this.rv = rv;
        this.sink.upsert(this.withKind(obj));
        return;
      case 'DELETED':
        if (rv !== undefined) this.rv = rv;
        this.sink.remove(this.withKind(obj));
        return;
      case 'BOOKMARK':
        if (rv !== undefined) this.rv = rv;
        return;
      case 'ERROR': {
        const code = typeof obj.code === 'number' ? obj.code : undefined;
        const reason = typeof obj.reason === 'string' ? obj.reason : undefined;
        const message = typeof obj.message === 'string' ? obj.message : '';
        const info = { ...(code !== undefined ? { status: code } : {}), ...(reason ? { reason } : {}) };
        throw new WatchErrorEvent(
          `sent an ERROR event${code !== undefined ? ` ${code}` : ''}${reason ? ` ${reason}` : ''}${message ? `: ${message.slice(0, 200)}` : ''}`,
          info,
        );
      }
      default:
        // an event type this client does not know: skip it, as client-go's watch decoder would not
        return;
    }
  }
}
