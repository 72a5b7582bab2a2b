// Step 2 of the pipeline: the current objects of the source (namespaces by name, pods by key) and, for
// every event, which pods' inputs changed. Pure (no I/O): what the source delivers in, dirty pod keys out.
//
// A pod's inputs are its own object and its namespace's labels, so the dirty set of an event is:
//   upsert/delete Pod        that pod, when it differs from what the store held;
//   upsert/delete Namespace  every pod of that namespace, when its labels changed (its other fields do not
//                            matter to the model; a namespace that comes or goes changes them);
//   replace                  the pods that came, went or changed, and the pods of the namespaces that did,
//                            each compared with what the store held: by resourceVersion when both have one
//                            and the source's are the API server's, else field by field.
// Pods are keyed as the pod model names them (metadata.uid, or `<namespace>/<name>` without one).
import { isDeepStrictEqual } from 'node:util';
import { podKey, podNamespace } from '../model/pod-model.js';
import type { SourceEvent } from '../sources/source.js';

type Obj = Record<string, unknown>;
const isRecord = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const metaOf = (o: unknown): Obj => (isRecord(o) && isRecord(o.metadata) ? o.metadata : {});

function nameOf(o: unknown): string | undefined {
  const n = metaOf(o).name;
  return typeof n === 'string' && n !== '' ? n : undefined;
}

function resourceVersion(o: unknown): string | undefined {
  const rv = metaOf(o).resourceVersion;
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}

/** The same object for the pipeline: with `byVersion` (the source's resourceVersions are the API server's),
 * the same resourceVersion when both have one; else equal field by field (a file edited by hand keeps the
 * resourceVersions it was exported with). */
export function sameObject(a: unknown, b: unknown, byVersion = false): boolean {
  if (a === b) return true;
  const ra = resourceVersion(a);
  const rb = resourceVersion(b);
  if (byVersion && ra !== undefined && rb !== undefined) return ra === rb;
  return isDeepStrictEqual(a, b);
}

/** What of a namespace the model reads: its labels. */
const nsLabels = (o: unknown): unknown => metaOf(o).labels;

export class ObjectStore {
  readonly namespaces = new Map<string, unknown>();
  readonly pods = new Map<string, unknown>();
  /** namespace name -> keys of its pods */
  private readonly byNamespace = new Map<string, Set<string>>();
  /** pod key -> its namespace (as it was filed) */
  private readonly nsOf = new Map<string, string>();
  /** a complete state ('replace') has been applied */
  synced = false;

  /** @param byVersion the source's resourceVersions are the API server's (see sameObject) */
  constructor(private readonly byVersion = false) {}

  /** Apply one event; returns the keys of the pods whose inputs changed (gone ones included). */
  apply(e: SourceEvent): Set<string> {
    const dirty = new Set<string>();
    switch (e.type) {
      case 'replace':
        this.replace(e.namespaces, e.pods, dirty);
        this.synced = true;
        break;
      case 'upsert':
        if (e.kind === 'Pod') this.putPod(e.object, dirty);
        else this.putNamespace(e.object, dirty);
        break;
      case 'delete':
        if (e.kind === 'Pod') this.removePod(podKey(e.object), dirty);
        else {
          const name = nameOf(e.object);
          if (name !== undefined) this.removeNamespace(name, dirty);
        }
        break;
    }
    return dirty;
  }

  /** The keys of the pods of namespace `name`. */
  podsOf(name: string): ReadonlySet<string> {
    return this.byNamespace.get(name) ?? new Set();
  }

  private replace(namespaces: unknown[], pods: unknown[], dirty: Set<string>): void {
    const nsSeen = new Set<string>();
    for (const n of namespaces) {
      const name = nameOf(n);
      if (name === undefined) continue;
      nsSeen.add(name);
      this.putNamespace(n, dirty);
    }
    for (const name of [...this.namespaces.keys()]) if (!nsSeen.has(name)) this.removeNamespace(name, dirty);
    const podSeen = new Set<string>();
    for (const p of pods) {
      const key = podKey(p);
      // a second pod with the same key in one state: the first stays (the model would call it a duplicate)
      if (podSeen.has(key)) continue;
      podSeen.add(key);
      this.putPod(p, dirty);
    }
    for (const key of [...this.pods.keys()]) if (!podSeen.has(key)) this.removePod(key, dirty);
  }

  private putNamespace(o: unknown, dirty: Set<string>): void {
    const name = nameOf(o);
    if (name === undefined) return;
    const had = this.namespaces.has(name);
    const old = this.namespaces.get(name);
    this.namespaces.set(name, o);
    if (had && isDeepStrictEqual(nsLabels(old), nsLabels(o))) return;
    for (const k of this.podsOf(name)) dirty.add(k);
  }

  private removeNamespace(name: string, dirty: Set<string>): void {
    if (!this.namespaces.delete(name)) return;
    for (const k of this.podsOf(name)) dirty.add(k);
  }

  private putPod(o: unknown, dirty: Set<string>): void {
    const key = podKey(o);
    const old = this.pods.get(key);
    if (old !== undefined && sameObject(old, o, this.byVersion)) {
      this.pods.set(key, o); // the newer copy (equal): nothing to do downstream
      return;
    }
    const ns = podNamespace(o);
    const was = this.nsOf.get(key);
    if (was !== undefined && was !== ns) this.byNamespace.get(was)?.delete(key);
    this.nsOf.set(key, ns);
    let set = this.byNamespace.get(ns);
    if (!set) this.byNamespace.set(ns, (set = new Set()));
    set.add(key);
    this.pods.set(key, o);
    dirty.add(key);
  }

  private removePod(key: string, dirty: Set<string>): void {
    if (!this.pods.delete(key)) return;
    const ns = this.nsOf.get(key);
    this.nsOf.delete(key);
    if (ns !== undefined) {
      const set = this.byNamespace.get(ns);
      set?.delete(key);
      if (set && set.size === 0) this.byNamespace.delete(ns);
    }
    dirty.add(key);
  }
}
