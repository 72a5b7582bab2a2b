// The Kubernetes API source: the Namespaces of the cluster (their labels decide capture) and the Pods of
// this node (fieldSelector spec.nodeName=<node>), each followed by a reflector (src/kube/reflector.ts:
// list, watch from the list's resourceVersion with bookmarks, resume, relist on 410, backoff, staleness
// watchdog), and the pods' Warning Events (src/kube/events.ts).
//
// Delivery:
// - nothing until both kinds have been listed once (health: synced=false): the agent removes nothing
//   from the maps before it knows the whole state;
// - then 'replace' with both kinds, and again after every relist of either kind (with the other kind's
//   current state: a replace always carries the whole state);
// - 'upsert' / 'delete' per watch event in between.
// An API server that is unreachable, answers errors or goes silent changes nothing that was delivered:
// the source retries for ever, health() says not connected and names the problem, and the capture the
// agent has pinned stays as it is.
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { KubeClient } from '../kube/client.js';
import type { KubeConnection } from '../kube/config.js';
import { EventRecorder, type EventRecorderOptions } from '../kube/events.js';
import { DEFAULT_TUNING, Reflector, type KubeObject, type ResourceSpec, type Tuning } from '../kube/reflector.js';
import type { ObjectKind, Source, SourceCounts, SourceEvent, SourceHandlers, SourceHealth } from './source.js';

export interface KubeSourceOptions {
  connection: KubeConnection;
  /** spec.nodeName of the pods to follow */
  nodeName: string;
  log?: Logger;
  tuning?: Partial<Tuning>;
  /** called whenever synced, connected or error changes (readiness; tests) */
  onHealth?: (h: SourceHealth) => void;
  /** for the Event recorder (a clock, limits) */
  events?: Omit<EventRecorderOptions, 'nodeName' | 'log'>;
}

const meta = (o: KubeObject): Record<string, unknown> => (typeof o.metadata === 'object' && o.metadata !== null ? o.metadata : {});

/** namespace/name of a pod, name of a namespace; undefined for an object without a name */
function keyOf(kind: ObjectKind, o: KubeObject): string | undefined {
  const m = meta(o);
  if (typeof m.name !== 'string' || m.name === '') return undefined;
  return kind === 'Pod' ? `${typeof m.namespace === 'string' ? m.namespace : ''}/${m.name}` : m.name;
}

export class KubeSource implements Source {
  readonly description: string;
  readonly resourceVersions = true;
  readonly events: EventRecorder;
  private readonly tuning: Tuning;
  private client: KubeClient | undefined;
  private readonly reflectors = new Map<ObjectKind, Reflector>();
  private readonly state: Record<ObjectKind, Map<string, KubeObject>> = { Namespace: new Map(), Pod: new Map() };
  private readonly listed = new Set<ObjectKind>();
  private synced = false;
  private handlers: SourceHandlers | undefined;
  private stopped = false;
  private lastHealth = '';
  private reported: string | undefined;

  constructor(private readonly opts: KubeSourceOptions) {
    this.description = opts.connection.description;
    this.tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.events = new EventRecorder({ ...opts.events, nodeName: opts.nodeName, ...(opts.log ? { log: opts.log } : {}) });
  }

  /** The API server's URL. */
  get server(): string {
    return this.opts.connection.server;
  }

  /** Lists and watches made so far, and those that failed, per kind (tests; status; metrics). */
  get counts(): Record<ObjectKind, SourceCounts> {
    return {
      Namespace: { ...(this.reflectors.get('Namespace')?.counts ?? { lists: 0, watches: 0, listed: 0, opened: 0, failures: 0 }) },
      Pod: { ...(this.reflectors.get('Pod')?.counts ?? { lists: 0, watches: 0, listed: 0, opened: 0, failures: 0 }) },
    };
  }

  async start(h: SourceHandlers): Promise<void> {
    if (this.handlers) throw new Error('KubeSource: start() called twice');
    this.handlers = h;
    // a connection that cannot be loaded (the kubeconfig broke since the flags were checked) is final;
    // an API server that does not answer is not: that is retried below for ever
    this.client = new KubeClient(this.opts.connection);
    this.events.attach(this.client);
    const specs: Array<[ObjectKind, ResourceSpec]> = [
      ['Namespace', { kind: 'Namespace', resource: 'namespaces', path: '/api/v1/namespaces' }],
      ['Pod', { kind: 'Pod', resource: 'pods', path: '/api/v1/pods', fieldSelector: `spec.nodeName=${this.opts.nodeName}` }],
    ];
    for (const [kind, spec] of specs) {
      const r = new Reflector(
        this.client,
        spec,
        {
          listed: (items) => this.onListed(kind, items),
          upsert: (o) => this.onChange(kind, 'upsert', o),
          remove: (o) => this.onChange(kind, 'delete', o),
          changed: () => this.healthChanged(),
        },
        this.tuning,
      );
      this.reflectors.set(kind, r);
    }
    for (const r of this.reflectors.values()) r.start();
    this.healthChanged();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.reflectors.values()].map((r) => r.stop()));
    await this.events.stop();
  }

  health(): SourceHealth {
    const rs = [...this.reflectors.values()];
    const connected = rs.length > 0 && rs.every((r) => r.watching);
    const problem = rs.map((r) => r.error).find((e) => e !== undefined);
    const contacts = rs.map((r) => r.lastContact).filter((t): t is number => t !== undefined);
    const h: SourceHealth = { synced: this.synced, connected };
    if (problem !== undefined) h.error = `Kubernetes API ${this.server} ${problem}: retrying; capture stays as it is`;
    if (contacts.length > 0) h.lastContact = Math.max(...contacts);
    return h;
  }

  private deliver(e: SourceEvent): void {
    if (this.stopped || !this.handlers) return;
    try {
      this.handlers.event(e);
    } catch (err) {
      // the consumer's bug must not stop the reflector
      this.opts.log?.error({ err: (err as Error).message }, 'the consumer of the Kubernetes source failed on an event');
    }
  }

  private onListed(kind: ObjectKind, items: KubeObject[]): void {
    const m = new Map<string, KubeObject>();
    for (const o of items) {
      const k = keyOf(kind, o);
      if (k !== undefined) m.set(k, o);
    }
    this.state[kind] = m;
    this.listed.add(kind);
    if (this.listed.size < 2) return; // the other kind is not known yet: no partial state
    this.synced = true;
    this.deliver({ type: 'replace', namespaces: [...this.state.Namespace.values()], pods: [...this.state.Pod.values()] });
    this.healthChanged();
  }

  private onChange(kind: ObjectKind, type: 'upsert' | 'delete', o: KubeObject): void {
    const k = keyOf(kind, o);
    if (k === undefined) return;
    if (type === 'upsert') this.state[kind].set(k, o);
    else this.state[kind].delete(k);
    // before the first replace the change is kept in the state and goes out with it
    if (this.synced) this.deliver({ type, kind, object: o });
  }

  private healthChanged(): void {
    if (this.stopped) return;
    const h = this.health();
    const key = JSON.stringify([h.synced, h.connected, h.error]);
    if (key === this.lastHealth) return;
    this.lastHealth = key;
    if (h.error !== undefined && h.error !== this.reported) this.handlers?.error(new UserError(h.error));
    this.reported = h.error;
    this.opts.onHealth?.(h);
  }
}
