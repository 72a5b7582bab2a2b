// The object store behind the test API server, modelled on etcd plus the apiserver's watch cache:
// one global revision counter (every write bumps it and stamps the object's metadata.resourceVersion),
// a history of changes that watches replay from and that can be compacted (a watch from before the
// compacted revision gets 410 Expired), and watchers that see a change through their namespace and
// selectors the way the real cacher shows it (an object leaving a selector's view is DELETED, one
// entering is ADDED).
//
// Tests write through these methods directly (pods created/updated/deleted "by the cluster" while the
// agent watches); the HTTP layer calls the same methods with the REST strategy's options.
import { randomBytes, randomUUID } from 'node:crypto';
import { applyPatch, type Json, type PatchType } from './patch.js';
import { CORE_V1, type KubeObject, type ResourceType, type StoredObject } from './resources.js';
import { parseFieldSelector, parseLabelSelector, type FieldSelector, type LabelSelector } from './selectors.js';
import { StatusError } from './status.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Change {
  rv: number;
  type: WatchEventType;
  resource: string;
  /** the object after the change; for DELETED its last state stamped with the deletion's revision */
  object: StoredObject;
  /** the object before the change (MODIFIED, DELETED) */
  prev?: StoredObject;
}

export interface WatchEvent {
  type: WatchEventType | 'BOOKMARK' | 'ERROR';
  object: KubeObject;
}

export interface Selection {
  /** only this namespace (namespaced resources); all namespaces when absent */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface ListOptions extends Selection {
  resourceVersion?: string;
  resourceVersionMatch?: string;
  limit?: number;
  continue?: string;
}

export interface ListResult {
  kind: string;
  apiVersion: string;
  metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
  items: KubeObject[];
}

export interface WriteOptions {
  /** write only `status` (the status subresource) */
  subresource?: 'status';
  /** keep the current status (what an update of the main resource does for types with a status subresource) */
  keepStatus?: boolean;
}

export interface DeleteOptions {
  preconditions?: { uid?: string; resourceVersion?: string };
  /**
   * Two-phase deletion as for a pod on a node: the first delete only sets deletionTimestamp (a
   * MODIFIED event; a namespace turns Terminating), a second delete removes the object.
   */
  graceful?: boolean;
  gracePeriodSeconds?: number;
}

export interface StoreOptions {
  resources?: readonly ResourceType[];
  /** namespaces that exist from the start (default: the four a fresh cluster has) */
  namespaces?: readonly string[];
  /** the history keeps at most this many changes; older ones are compacted (default 100000) */
  historyLimit?: number;
}

export interface Watcher {
  /** false when the watch ended at once (an ERROR event was sent): the stream should end */
  readonly open: boolean;
  close(): void;
}

interface WatcherEntry {
  resource: ResourceType;
  namespace?: string;
  label?: LabelSelector;
  field?: FieldSelector;
  send(ev: WatchEvent): void;
}

/** RFC 3339 to the second, as metav1.Time serialises */
export const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

const clone = <T>(o: T): T => structuredClone(o);
const keyOf = (namespace: string | undefined, name: string): string => (namespace ? `${namespace}/${name}` : name);
const GENERATE_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

function parseRV(v: string, what = 'resourceVersion'): number {
  if (!/^\d+$/.test(v)) throw StatusError.badRequest(`${what}: Invalid value: "${v}": strconv.ParseUint: parsing "${v}": invalid syntax`);
  return Number(v);
}

function tooLarge(rv: number, current: number): StatusError {
  return new StatusError(504, `Too large resource version: ${rv}, current: ${current}`, 'Timeout', {
    causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
    retryAfterSeconds: 1,
  });
}

export class Store {
  readonly resources: ReadonlyMap<string, ResourceType>;
  private readonly objects = new Map<string, Map<string, StoredObject>>();
  private readonly history: Change[] = [];
  private readonly watchers = new Set<WatcherEntry>();
  private readonly historyLimit: number;
  private revision = 0;
  /** every change after this revision is still in the history */
  private compactedRev = 0;

  constructor(opts: StoreOptions = {}) {
    this.resources = new Map((opts.resources ?? CORE_V1).map((r) => [r.plural, r]));
    for (const r of this.resources.keys()) this.objects.set(r, new Map());
    this.historyLimit = opts.historyLimit ?? 100_000;
    if (this.resources.has('namespaces')) {
      for (const ns of opts.namespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
        this.create('namespaces', { metadata: { name: ns } }, { prepare: true });
      }
    }
  }

  /** the current revision (etcd's): the resourceVersion of the latest write */
  get resourceVersion(): number {
    return this.revision;
  }

  /** the oldest revision a watch may start from */
  get compactedRevision(): number {
    return this.compactedRev;
  }

  /** the changes still in the history (oldest first) */
  changes(): readonly Change[] {
    return this.history;
  }

  resource(plural: string): ResourceType {
    const r = this.resources.get(plural);
    if (!r) throw new StatusError(404, `the server could not find the requested resource (${plural})`, 'NotFound');
    return r;
  }

  // ---- reads ----

  get(resource: string, namespace: string | undefined, name: string): StoredObject {
    const r = this.resource(resource);
    const o = this.map(r).get(keyOf(r.namespaced ? namespace : undefined, name));
    if (!o) throw StatusError.notFound(r.plural, name);
    return clone(o);
  }

  /** the object, or undefined (for tests) */
  find(resource: string, namespace: string | undefined, name: string): StoredObject | undefined {
    const r = this.resource(resource);
    const o = this.map(r).get(keyOf(r.namespaced ? namespace : undefined, name));
    return o && clone(o);
  }

  list(resource: string, opts: ListOptions = {}): ListResult {
    const r = this.resource(resource);
    const match = this.matcher(r, opts);
    let atRev = this.revision;
    let start = '';
    let state: ReadonlyMap<string, StoredObject> = this.map(r);
    const rvMatch = opts.resourceVersionMatch ?? '';
    if (rvMatch && !['Exact', 'NotOlderThan'].includes(rvMatch)) throw StatusError.badRequest(`resourceVersionMatch: Unsupported value: "${rvMatch}"`);
    if (rvMatch && !opts.resourceVersion)
      throw StatusError.badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    if (opts.continue) {
      if (opts.resourceVersion && opts.resourceVersion !== '0') throw StatusError.badRequest('specifying resource version is not allowed when using continue');
      const token = decodeContinue(opts.continue);
      if (token.rv < this.compactedRev) {
        throw StatusError.expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      }
      atRev = token.rv;
      start = token.start;
      state = this.stateAt(r, atRev);
    } else if (opts.resourceVersion) {
      const rv = parseRV(opts.resourceVersion);
      if (rvMatch === 'Exact') {
        if (rv === 0) throw StatusError.badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"');
        if (rv < this.compactedRev) throw StatusError.expired(`The resourceVersion for the provided list is too old.`);
        if (rv > this.revision) throw tooLarge(rv, this.revision);
        atRev = rv;
        state = this.stateAt(r, rv);
      } else if (rv > this.revision) {
        // "not older than": this store is always current, so only a future revision cannot be served
        throw tooLarge(rv, this.revision);
      }
    }
    const keys = [...state.keys()].filter((k) => k >= start).sort();
    const items: KubeObject[] = [];
    let next: string | undefined;
    let remaining = 0;
    for (const k of keys) {
      const o = state.get(k) as StoredObject;
      if (!match(o)) continue;
      if (opts.limit !== undefined && opts.limit > 0 && items.length >= opts.limit) {
        next ??= k;
        remaining++;
        continue;
      }
      // list items carry no kind/apiVersion on the wire (the List's do), as from a real server
      const { kind: _k, apiVersion: _a, ...item } = clone(o);
      items.push(item);
    }
    const metadata: ListResult['metadata'] = { resourceVersion: String(atRev) };
    if (next !== undefined) {
      metadata.continue = encodeContinue(atRev, next);
      // the real server counts the rest only when no selector filters it
      if (!opts.labelSelector && !opts.fieldSelector) metadata.remainingItemCount = remaining;
    }
    return { kind: r.listKind, apiVersion: 'v1', metadata, items };
  }

  // ---- writes ----

  create(resource: string, obj: KubeObject, opts: { namespace?: string; prepare?: boolean } = {}): StoredObject {
    const r = this.resource(resource);
    const o = clone(obj) as StoredObject;
    o.metadata = { ...(o.metadata ?? {}) } as StoredObject['metadata'];
    const m = o.metadata;
    if (r.namespaced) {
      const ns = opts.namespace ?? m.namespace;
      if (opts.namespace && m.namespace && m.namespace !== opts.namespace)
        throw StatusError.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      if (!ns) throw StatusError.badRequest('an empty namespace may not be set during creation');
      if (!this.map(this.resource('namespaces')).has(ns)) throw StatusError.notFound('namespaces', ns);
      m.namespace = ns;
    } else delete m.namespace;
    if (!m.name) {
      if (!m.generateName) throw StatusError.invalid(r.kind, '', 'metadata.name', 'Required value: name or generateName is required');
      m.name = m.generateName + Array.from(randomBytes(5), (b) => GENERATE_CHARS[b % GENERATE_CHARS.length]).join('');
    }
    const key = keyOf(m.namespace, m.name);
    if (this.map(r).has(key)) throw StatusError.alreadyExists(r.plural, m.name);
    o.apiVersion = 'v1';
    o.kind = r.kind;
    m.uid = randomUUID();
    m.creationTimestamp = now();
    delete m.deletionTimestamp;
    delete m.deletionGracePeriodSeconds;
    if (opts.prepare) r.prepareForCreate?.(o);
    r.normalize?.(o);
    return clone(this.commit(r, 'ADDED', key, o));
  }

  /** PUT: replace the object; a set metadata.resourceVersion must be the current one (409 otherwise) */
  update(resource: string, obj: KubeObject, opts: WriteOptions & { namespace?: string } = {}): StoredObject {
    const r = this.resource(resource);
    const name = obj.metadata?.name;
    if (!name) throw StatusError.invalid(r.kind, '', 'metadata.name', 'Required value: name is required');
    const ns = r.namespaced ? (opts.namespace ?? obj.metadata?.namespace) : undefined;
    if (r.namespaced && opts.namespace && obj.metadata?.namespace && obj.metadata.namespace !== opts.namespace)
      throw StatusError.badRequest('the namespace of the provided object does not match the namespace sent on the request');
    const cur = this.current(r, ns, name);
    const rv = obj.metadata?.resourceVersion;
    if (rv && rv !== cur.metadata.resourceVersion) throw StatusError.conflict(r.plural, name);
    const uid = obj.metadata?.uid;
    if (uid && uid !== cur.metadata.uid)
      throw new StatusError(409, `Precondition failed: UID in precondition: ${cur.metadata.uid}, UID in object meta: ${uid}`, 'Conflict', {
        name,
        kind: r.plural,
      });
    return this.replace(r, cur, clone(obj), opts);
  }

  /** PATCH: apply the patch to the current object; a resourceVersion the patch sets is a precondition */
  patch(resource: string, namespace: string | undefined, name: string, type: PatchType, patch: unknown, opts: WriteOptions = {}): StoredObject {
    const r = this.resource(resource);
    const cur = this.current(r, r.namespaced ? namespace : undefined, name);
    // on a copy: a merge keeps the untouched parts by reference, and `cur` stays in the history
    const next = applyPatch(type, clone(cur) as unknown as Json, patch as Json);
    if (typeof next !== 'object' || next === null || Array.isArray(next)) throw StatusError.badRequest('the patch does not leave an object');
    const o = next as unknown as KubeObject;
    const rv = o.metadata?.resourceVersion;
    if (rv && rv !== cur.metadata.resourceVersion) throw StatusError.conflict(r.plural, name);
    return this.replace(r, cur, o, opts);
  }

  delete(resource: string, namespace: string | undefined, name: string, opts: DeleteOptions = {}): StoredObject {
    const r = this.resource(resource);
    const cur = this.current(r, r.namespaced ? namespace : undefined, name);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== cur.metadata.uid)
      throw new StatusError(409, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${cur.metadata.uid}`, 'Conflict', {
        name,
        kind: r.plural,
      });
    if (pre?.resourceVersion && pre.resourceVersion !== cur.metadata.resourceVersion)
      throw new StatusError(
        409,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${cur.metadata.resourceVersion}`,
        'Conflict',
        { name, kind: r.plural },
      );
    if (opts.graceful && !cur.metadata.deletionTimestamp) {
      const o = clone(cur);
      o.metadata.deletionTimestamp = now();
      o.metadata.deletionGracePeriodSeconds = opts.gracePeriodSeconds ?? 30;
      if (r.plural === 'namespaces') o.status = { ...(o.status as object | undefined), phase: 'Terminating' };
      return clone(this.commit(r, 'MODIFIED', keyOf(cur.metadata.namespace, name), o, cur));
    }
    if (r.plural === 'namespaces') {
      // the namespace controller's work, done at once: everything in the namespace goes first
      for (const other of this.resources.values()) {
        if (!other.namespaced) continue;
        for (const o of [...this.map(other).values()].filter((x) => x.metadata.namespace === name)) this.remove(other, o);
      }
    }
    return clone(this.remove(r, cur));
  }

  /** Forget the history up to `rev` (default: all of it): a watch from before then gets 410. */
  compact(rev = this.revision): void {
    if (rev > this.revision) throw new Error(`cannot compact to ${rev}: the current revision is ${this.revision}`);
    if (rev <= this.compactedRev) return;
    this.compactedRev = rev;
    const keep = this.history.findIndex((c) => c.rv > rev);
    this.history.splice(0, keep < 0 ? this.history.length : keep);
  }

  // ---- watch ----

  /**
   * Start a watch. `resourceVersion` '' or '0': synthetic ADDED events for what exists now, then the
   * changes; 'N': the changes after N from the history (410 ERROR if N is compacted; 504 ERROR if N is
   * in the future). Events go to `send` synchronously, initial ones before this returns.
   */
  watch(resource: string, opts: Selection & { resourceVersion?: string }, send: (ev: WatchEvent) => void): Watcher {
    const r = this.resource(resource);
    const w: WatcherEntry = { resource: r, send };
    if (r.namespaced && opts.namespace) w.namespace = opts.namespace;
    if (opts.labelSelector) w.label = parseLabelSelector(opts.labelSelector);
    if (opts.fieldSelector) w.field = parseFieldSelector(opts.fieldSelector, r.fieldLabels);
    const rvText = opts.resourceVersion ?? '';
    const close = (): void => {
      this.watchers.delete(w);
    };
    const opened = (): boolean => this.watchers.has(w);
    if (rvText === '' || rvText === '0') {
      const match = this.entryMatcher(w);
      const keys = [...this.map(r).keys()].sort();
      for (const k of keys) {
        const o = this.map(r).get(k) as StoredObject;
        if (match(o)) send({ type: 'ADDED', object: clone(o) });
      }
    } else {
      const rv = parseRV(rvText);
      if (rv < this.compactedRev) {
        // as the cacher: past authn/authz and parsing, a watch error is an ERROR event, not an HTTP status
        send({ type: 'ERROR', object: StatusError.expired(`too old resource version: ${rv} (${this.compactedRev})`).status as unknown as KubeObject });
        return { open: false, close };
      }
      if (rv > this.revision) {
        send({ type: 'ERROR', object: tooLarge(rv, this.revision).status as unknown as KubeObject });
        return { open: false, close };
      }
      for (const c of this.history) {
        if (c.rv <= rv || c.resource !== r.plural) continue;
        const ev = this.view(w, c);
        if (ev) send(ev);
      }
    }
    this.watchers.add(w);
    return {
      get open() {
        return opened();
      },
      close,
    };
  }

  /** validate a selection (throws the 400 a bad selector gets) without watching */
  checkSelection(resource: string, sel: Selection): void {
    this.matcher(this.resource(resource), sel);
  }

  // ---- internals ----

  private map(r: ResourceType): Map<string, StoredObject> {
    return this.objects.get(r.plural) as Map<string, StoredObject>;
  }

  private current(r: ResourceType, namespace: string | undefined, name: string): StoredObject {
    const o = this.map(r).get(keyOf(namespace, name));
    if (!o) throw StatusError.notFound(r.plural, name);
    return o;
  }

  private matcher(r: ResourceType, sel: Selection): (o: StoredObject) => boolean {
    const w: WatcherEntry = { resource: r, send: () => undefined };
    if (r.namespaced && sel.namespace) w.namespace = sel.namespace;
    if (sel.labelSelector) w.label = parseLabelSelector(sel.labelSelector);
    if (sel.fieldSelector) w.field = parseFieldSelector(sel.fieldSelector, r.fieldLabels);
    return this.entryMatcher(w);
  }

  private entryMatcher(w: WatcherEntry): (o: StoredObject) => boolean {
    return (o) =>
      (!w.namespace || o.metadata.namespace === w.namespace) &&
      (!w.label || w.label.matches(o.metadata.labels)) &&
      (!w.field || w.field.matches(w.resource.fields(o)));
  }

  /** how one change looks through a watcher's namespace and selectors (the cacher's convertToWatchEvent) */
  private view(w: WatcherEntry, c: Change): WatchEvent | undefined {
    const match = this.entryMatcher(w);
    switch (c.type) {
      case 'ADDED':
        return match(c.object) ? { type: 'ADDED', object: clone(c.object) } : undefined;
      case 'DELETED':
        return match(c.object) ? { type: 'DELETED', object: clone(c.object) } : undefined;
      case 'MODIFIED': {
        const now = match(c.object);
        const before = c.prev !== undefined && match(c.prev);
        if (now && before) return { type: 'MODIFIED', object: clone(c.object) };
        if (now) return { type: 'ADDED', object: clone(c.object) };
        if (before && c.prev) {
          // leaving the view: the old content, at the change's resourceVersion
          const o = clone(c.prev);
          o.metadata.resourceVersion = String(c.rv);
          return { type: 'DELETED', object: o };
        }
        return undefined;
      }
    }
  }

  /** the objects of `r` as they were at revision `rev` (undoing the history after it) */
  private stateAt(r: ResourceType, rev: number): Map<string, StoredObject> {
    const state = new Map(this.map(r));
    for (let i = this.history.length - 1; i >= 0; i--) {
      const c = this.history[i] as Change;
      if (c.rv <= rev) break;
      if (c.resource !== r.plural) continue;
      const key = keyOf(c.object.metadata.namespace, c.object.metadata.name);
      if (c.type === 'ADDED') state.delete(key);
      else if (c.prev) state.set(key, c.prev);
    }
    return state;
  }

  private replace(r: ResourceType, cur: StoredObject, obj: KubeObject, opts: WriteOptions): StoredObject {
    let o: StoredObject;
    if (opts.subresource === 'status') {
      o = clone(cur);
      if (obj.status === undefined) delete o.status;
      else o.status = clone(obj.status);
    } else {
      o = obj as StoredObject;
      // identity is not the client's to change
      o.metadata = {
        ...(obj.metadata ?? {}),
        name: cur.metadata.name,
        uid: cur.metadata.uid,
        creationTimestamp: cur.metadata.creationTimestamp,
        resourceVersion: cur.metadata.resourceVersion,
      };
      if (cur.metadata.namespace) o.metadata.namespace = cur.metadata.namespace;
      if (cur.metadata.deletionTimestamp) o.metadata.deletionTimestamp = cur.metadata.deletionTimestamp;
      else delete o.metadata.deletionTimestamp;
      o.apiVersion = cur.apiVersion;
      o.kind = cur.kind;
      if (opts.keepStatus) {
        if (cur.status === undefined) delete o.status;
        else o.status = clone(cur.status);
      }
    }
    r.normalize?.(o);
    // a write that changes nothing is no write: no new revision, no event (as etcd3's GuaranteedUpdate)
    if (canonical(o) === canonical(cur)) return clone(cur);
    return clone(this.commit(r, 'MODIFIED', keyOf(cur.metadata.namespace, cur.metadata.name), o, cur));
  }

  private remove(r: ResourceType, cur: StoredObject): StoredObject {
    const key = keyOf(cur.metadata.namespace, cur.metadata.name);
    return this.commit(r, 'DELETED', key, clone(cur), cur);
  }

  private commit(r: ResourceType, type: WatchEventType, key: string, o: StoredObject, prev?: StoredObject): StoredObject {
    this.revision++;
    o.metadata.resourceVersion = String(this.revision);
    if (type === 'DELETED') this.map(r).delete(key);
    else this.map(r).set(key, o);
    const c: Change = { rv: this.revision, type, resource: r.plural, object: o };
    if (prev) c.prev = prev;
    this.history.push(c);
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.shift() as Change;
      this.compactedRev = dropped.rv;
    }
    for (const w of [...this.watchers]) {
      if (w.resource !== r || !this.watchers.has(w)) continue;
      const ev = this.view(w, c);
      if (ev) w.send(ev);
    }
    return o;
  }
}

/** JSON with sorted keys, to tell a no-op write */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    typeof x === 'object' && x !== null && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  );
}

// the real token is base64 of {"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}; clients treat it as opaque
function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString()) as { v?: unknown; rv?: unknown; start?: unknown };
    if (t.v === 'meta.k8s.io/v1' && typeof t.rv === 'number' && typeof t.start === 'string') return { rv: t.rv, start: t.start };
  } catch {
    // fall through
  }
  throw StatusError.badRequest('continue key is not valid: the continue token could not be decoded');
}
