// The seam between where Kubernetes objects come from and the agent's pipeline. A source produces plain
// Kubernetes objects (Namespaces and Pods, JSON as the API serves them) and nothing else: the pod model decides
// what they mean. Two implementations: the cluster file (src/sources/cluster-file.ts) and the Kubernetes API
// (src/sources/kube.ts). Both deliver the same objects for the same cluster, so every step after this one is
// the same for both.
import type { UserError } from '../util/errors.js';

export type ObjectKind = 'Namespace' | 'Pod';

export type SourceEvent =
  /** The complete current state: everything delivered before is replaced (the initial list, a relist after a
   * watch could not resume, a re-read cluster file). Objects absent here are gone. */
  | { type: 'replace'; namespaces: unknown[]; pods: unknown[] }
  /** One object added or changed. */
  | { type: 'upsert'; kind: ObjectKind; object: unknown }
  /** One object gone (the object as last seen, or at least its metadata). */
  | { type: 'delete'; kind: ObjectKind; object: unknown };

export interface SourceHandlers {
  event(e: SourceEvent): void;
  /** A problem the source is working around (unreachable API server, a cluster file that does not parse):
   * the last good state stays in force. One line, naming the cause and the fix. */
  error(err: UserError): void;
}

export interface SourceHealth {
  /** a complete state ('replace') has been delivered at least once */
  synced: boolean;
  /** following changes right now (false while the API is unreachable or a watch is being re-established) */
  connected: boolean;
  /** the current problem, if any (cleared when it goes away) */
  error?: string;
  /** when the source last heard from its origin (ms since the epoch), for staleness */
  lastContact?: number;
}

/** What a source offers for telling pod owners about problems (Kubernetes Events); a no-op where there is
 * no API (the cluster file). */
export interface PodEventSink {
  warn(pod: { namespace: string; name: string; uid: string }, reason: string, message: string): void;
}

/** Requests of a source that lists and watches (the Kubernetes API), per kind. */
export interface SourceCounts {
  /** lists and watches started */
  lists: number;
  watches: number;
  /** lists that completed, watches the server answered (200) */
  listed: number;
  opened: number;
  /** lists and watches that failed */
  failures: number;
}

export interface Source {
  /** For status and logs, e.g. "cluster file /etc/meshlane/cluster.yaml" or "Kubernetes API https://10.0.0.1:443". */
  readonly description: string;
  /**
   * Validate the configuration and begin following. Rejects with a UserError only for what retrying cannot fix
   * (a malformed kubeconfig; a cluster file that is missing or malformed at start). An origin that is merely
   * unreachable is retried for ever: start() resolves, health() says not connected, the first 'replace' comes
   * when it can. Until the first 'replace' the agent removes nothing from the maps.
   */
  start(h: SourceHandlers): Promise<void>;
  /** Stop following; no events after it resolves. */
  stop(): Promise<void>;
  health(): SourceHealth;
  readonly events: PodEventSink;
  /** metadata.resourceVersion is the origin's (the API server's): an object with the same one is unchanged.
   * Absent or false (a cluster file, edited by hand): objects are compared field by field. */
  readonly resourceVersions?: boolean;
  /** lists and watches per kind, for a source that makes them (metrics: relists, watch restarts) */
  readonly counts?: Record<ObjectKind, SourceCounts>;
}
