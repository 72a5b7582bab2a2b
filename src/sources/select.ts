// Which source the agent follows, from its flags and environment: exactly one of
//   --cluster-file FILE                      a file of Namespaces and Pods
//   --kubeconfig FILE                        the Kubernetes API, from outside the cluster
//   neither, with KUBERNETES_SERVICE_HOST    the Kubernetes API from inside a pod (the service account)
// --node-name defaults to NODE_NAME (the DaemonSet sets it from the downward API, fieldRef
// spec.nodeName); the Kubernetes API source needs it (it lists the pods of this node only). Anything else
// is a one-line UserError that names the three ways.
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Env, KubeConnection } from '../kube/config.js';
import type { Tuning } from '../kube/reflector.js';
import { ClusterFileSource, type ClusterSnapshot } from './cluster-file.js';
import { KubeSource } from './kube.js';
import type { PodEventSink, Source, SourceHandlers, SourceHealth } from './source.js';

export interface SourceOptions {
  clusterFile?: string;
  kubeconfig?: string;
  nodeName?: string;
}

export type SourceChoice =
  { kind: 'cluster-file'; file: string; nodeName?: string } | { kind: 'kubeconfig'; file: string; nodeName: string } | { kind: 'in-cluster'; nodeName: string };

const WAYS = 'give exactly one of --cluster-file FILE or --kubeconfig FILE, or neither in a pod (in-cluster config, when KUBERNETES_SERVICE_HOST is set)';

// a node name is a DNS subdomain (what the API server accepts for a Node); anything else would also
// break the field selector (a ',' or '=' in it)
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The choice the flags and environment make; throws UserError. Pure (reads no file). */
export function chooseSource(opts: SourceOptions, env: Env): SourceChoice {
  if (opts.clusterFile === '') throw new UserError(`--cluster-file is empty: give the file's path`);
  if (opts.kubeconfig === '') throw new UserError(`--kubeconfig is empty: give the file's path`);
  if (opts.nodeName === '')
    throw new UserError(`--node-name is empty: give this node's name (as kubectl get nodes shows it), or leave the flag out to use NODE_NAME`);
  const fromFlag = opts.nodeName !== undefined;
  const nodeName = opts.nodeName ?? (env.NODE_NAME === '' ? undefined : env.NODE_NAME);
  if (nodeName !== undefined && (nodeName.length > 253 || !NODE_NAME.test(nodeName))) {
    throw new UserError(
      `${fromFlag ? '--node-name' : 'NODE_NAME'} '${nodeName.slice(0, 80)}' is not a node name (lowercase letters, digits, '-' and '.'): give this node's name as kubectl get nodes shows it`,
    );
  }
  if (opts.clusterFile !== undefined && opts.kubeconfig !== undefined) throw new UserError(`--cluster-file and --kubeconfig both given: ${WAYS}`);
  if (opts.clusterFile !== undefined)
    return nodeName !== undefined ? { kind: 'cluster-file', file: opts.clusterFile, nodeName } : { kind: 'cluster-file', file: opts.clusterFile };
  const inCluster = opts.kubeconfig === undefined && (env.KUBERNETES_SERVICE_HOST ?? '') !== '';
  if (opts.kubeconfig === undefined && !inCluster) throw new UserError(`no source of pods: ${WAYS}`);
  if (nodeName === undefined) {
    throw new UserError(
      `the Kubernetes API source (${inCluster ? 'in-cluster' : '--kubeconfig'}) needs this node's name: give --node-name NAME, or set NODE_NAME (in the DaemonSet from the downward API: fieldRef spec.nodeName)`,
    );
  }
  return opts.kubeconfig !== undefined ? { kind: 'kubeconfig', file: opts.kubeconfig, nodeName } : { kind: 'in-cluster', nodeName };
}

export interface SourceExtras {
  log?: Logger;
  /** the Kubernetes source's timings (tests shorten them) */
  tuning?: Partial<Tuning>;
  onHealth?: (h: SourceHealth) => void;
}

/**
 * The source the flags and environment name, its configuration checked (a kubeconfig that is missing,
 * does not parse or has no current context; an in-cluster environment without a service account):
 * rejects with UserError. Nothing is contacted before start().
 *
 * The Kubernetes configuration (kube/config.ts, over @kubernetes/client-node) is loaded only for a
 * Kubernetes source: loading client-node costs about 57 MiB of RSS (30 MiB of heap), more than half of an
 * agent that follows a cluster file.
 */
export async function sourceFromOptions(opts: SourceOptions, env: Env, extras: SourceExtras = {}): Promise<Source> {
  const choice = chooseSource(opts, env);
  if (choice.kind === 'cluster-file') return new ClusterFileSourceAdapter(choice.file, choice.nodeName);
  const { inClusterConnection, kubeconfigConnection } = await import('../kube/config.js');
  const kube = (connection: KubeConnection, nodeName: string): KubeSource =>
    new KubeSource({
      connection,
      nodeName,
      ...(extras.log ? { log: extras.log } : {}),
      ...(extras.tuning ? { tuning: extras.tuning } : {}),
      ...(extras.onHealth ? { onHealth: extras.onHealth } : {}),
    });
  return choice.kind === 'kubeconfig' ? kube(kubeconfigConnection(choice.file), choice.nodeName) : kube(inClusterConnection(env), choice.nodeName);
}

/** A pod whose spec.nodeName is another node's name (a nodeName that cannot be read is not known to be). */
export function onOtherNode(pod: unknown, nodeName: string): boolean {
  const spec = (pod as { spec?: { nodeName?: unknown } } | null)?.spec;
  const n = typeof spec === 'object' && spec !== null ? spec.nodeName : undefined;
  return typeof n === 'string' && n !== '' && n !== nodeName;
}

/**
 * The cluster file as a Source (until ClusterFileSource implements the interface itself): every good
 * read is a 'replace'; a file that is missing or malformed at start rejects start(); later problems are
 * errors and the last good state stays. No Events: there is no API to post them to.
 */
export class ClusterFileSourceAdapter implements Source {
  readonly description: string;
  readonly events: PodEventSink = { warn: () => undefined };
  private file: ClusterFileSource | undefined;
  private synced = false;
  private error: string | undefined;
  private lastContact: number | undefined;

  /** @param nodeName this node: pods the file places on another node are left out here, as the API's field
   * selector leaves them out (the model would skip them anyway; at node scale they are most of the file) */
  constructor(
    readonly path: string,
    readonly nodeName?: string,
  ) {
    this.description = `cluster file ${path}`;
  }

  start(h: SourceHandlers): Promise<void> {
    // pods of other nodes are dropped while the file is read, so the snapshot holds this node's only
    const node = this.nodeName;
    const file = new ClusterFileSource(this.path, node === undefined ? {} : { keep: (p) => !onOtherNode(p, node) });
    this.file = file;
    return new Promise((resolve, reject) => {
      let first = true;
      file.on('snapshot', (s: ClusterSnapshot) => {
        this.synced = true;
        this.error = undefined;
        this.lastContact = Date.now();
        h.event({ type: 'replace', namespaces: s.namespaces, pods: s.pods });
        if (first) {
          first = false;
          resolve();
        }
      });
      file.on('error', (e: unknown) => {
        const err = e instanceof UserError ? e : new UserError(String((e as Error)?.message ?? e));
        if (first) {
          first = false;
          file.stop();
          reject(err);
          return;
        }
        this.error = err.message;
        h.error(err);
      });
      file.start();
    });
  }

  async stop(): Promise<void> {
    this.file?.stop();
  }

  health(): SourceHealth {
    const h: SourceHealth = { synced: this.synced, connected: this.file !== undefined };
    if (this.error !== undefined) h.error = this.error;
    if (this.lastContact !== undefined) h.lastContact = this.lastContact;
    return h;
  }
}
