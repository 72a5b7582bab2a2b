// Where the Kubernetes API is and how to authenticate to it: a kubeconfig file (--kubeconfig) or the
// in-cluster service account (KUBERNETES_SERVICE_HOST/PORT and the files kubelet mounts). client-node
// does the parsing and the authentication (tokens, token files, client certificates, exec plugins,
// CAs); this module checks up front what it would otherwise only trip over at the first request, and
// turns every problem into one line that names the cause and the fix.
//
// A connection can be loaded again (`load()`): after a 401 the client re-reads the credentials at once
// instead of waiting for client-node's token file cache (FileAuth re-reads the file only every 60 s).
import { existsSync, readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { dirname } from 'node:path';
import { KubeConfig } from './client-node.js';
import { UserError, isErrno } from '../util/errors.js';

/** where kubelet mounts the service account (client-node's loadFromCluster reads the same paths) */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnection {
  /** the API server's URL, e.g. https://10.96.0.1:443 */
  readonly server: string;
  /** for logs and status: "Kubernetes API https://10.96.0.1:443 (in-cluster)" */
  readonly description: string;
  /** A fresh client configuration, credentials read again. Throws UserError. */
  load(): KubeConfig;
}

const firstLine = (e: unknown): string => ((e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '').trim();

/** The checks client-node leaves to the first request, as one-line errors about `where`. */
function checkConfig(kc: KubeConfig, where: string): string {
  if (kc.getContexts().length === 0)
    throw new UserError(`${where} has no contexts (is it a kubeconfig?): give a kubeconfig with clusters, users, contexts and current-context`);
  const ctxName = kc.getCurrentContext();
  if (!ctxName) throw new UserError(`${where} has no current-context: set one (kubectl config use-context NAME --kubeconfig FILE)`);
  const ctx = kc.getContextObject(ctxName);
  if (!ctx) throw new UserError(`${where}: the current-context '${ctxName}' is not among its contexts: fix current-context`);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new UserError(`${where}: context '${ctxName}' names cluster '${ctx.cluster}', which is not in the file: add it or fix the context`);
  if (ctx.user && !kc.getCurrentUser())
    throw new UserError(`${where}: context '${ctxName}' names user '${ctx.user}', which is not in the file: add it or fix the context`);
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch {
    throw new UserError(`${where}: cluster '${cluster.name}' has server '${cluster.server}', which is not a URL: give https://HOST:PORT`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new UserError(`${where}: cluster '${cluster.name}' has server '${cluster.server}': give https://HOST:PORT`);
  if (url.protocol === 'http:' && !cluster.skipTLSVerify) {
    // client-node 1.x refuses this at every request; say so once, at start
    throw new UserError(
      `${where}: cluster '${cluster.name}' has a plain http:// server: use https://, or set insecure-skip-tls-verify: true for a plain-HTTP test server`,
    );
  }
  const files: Array<[string, string | undefined]> = [
    ['certificate-authority', cluster.caFile],
    ['client-certificate', kc.getCurrentUser()?.certFile],
    ['client-key', kc.getCurrentUser()?.keyFile],
  ];
  for (const [field, file] of files) {
    if (file !== undefined && file !== '' && !existsSync(file))
      throw new UserError(`${where}: ${field} ${file} does not exist: fix the path or use ${field}-data`);
  }
  return cluster.server;
}

/** --kubeconfig FILE */
export function kubeconfigConnection(file: string): KubeConnection {
  const load = (): KubeConfig => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT'))
        throw new UserError(`cannot read kubeconfig ${file}: file not found: give the path of a kubeconfig (e.g. kubectl config view --minify --raw > FILE)`);
      throw new UserError(`cannot read kubeconfig ${file}: ${firstLine(e)}`);
    }
    if (text.trim() === '')
      throw new UserError(`cannot read kubeconfig ${file}: the file is empty: give a kubeconfig with clusters, users, contexts and current-context`);
    const kc = new KubeConfig();
    try {
      // loadFromFile, with the text we already read (it resolves relative paths against the file's directory)
      kc.loadFromString(text);
      kc.makePathsAbsolute(dirname(file));
    } catch (e) {
      throw new UserError(`cannot read kubeconfig ${file}: ${firstLine(e)}: give a kubeconfig with clusters, users, contexts and current-context`);
    }
    checkConfig(kc, `kubeconfig ${file}`);
    return kc;
  };
  const server = checkConfig(load(), `kubeconfig ${file}`);
  return { server, description: `Kubernetes API ${server} (kubeconfig ${file})`, load };
}

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * In-cluster: what client-node's KubeConfig.loadFromCluster() builds (same cluster, user and context:
 * the token file goes through its FileAuth), from `env` rather than process.env, after checking that
 * the service account is actually mounted.
 */
export function inClusterConnection(env: Env): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST ?? '';
  const port = env.KUBERNETES_SERVICE_PORT ?? '';
  const where = 'in-cluster config';
  if (host === '') throw new UserError(`${where}: KUBERNETES_SERVICE_HOST is not set: run the agent in a pod, or give --kubeconfig FILE`);
  if (!/^\d{1,5}$/.test(port))
    throw new UserError(
      `${where}: KUBERNETES_SERVICE_PORT is ${port === '' ? 'not set' : `'${port}', not a port`}: run the agent in a pod (kubelet sets it), or give --kubeconfig FILE`,
    );
  // loadFromCluster's rules: plain http on the usual insecure ports, brackets around an IPv6 address
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  const server = `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
  const token = `${SERVICE_ACCOUNT_DIR}/token`;
  const ca = `${SERVICE_ACCOUNT_DIR}/ca.crt`;
  const nsFile = `${SERVICE_ACCOUNT_DIR}/namespace`;
  const load = (): KubeConfig => {
    for (const [what, file] of [
      ['service account token', token],
      ['service account CA', ca],
    ] as const) {
      if (!existsSync(file))
        throw new UserError(`${where}: no ${what} at ${file}: mount the service account (automountServiceAccountToken: true), or give --kubeconfig FILE`);
    }
    const kc = new KubeConfig();
    const namespace = existsSync(nsFile) ? readFileSync(nsFile, 'utf8') : undefined;
    kc.loadFromOptions({
      clusters: [{ name: 'inCluster', caFile: ca, server, skipTLSVerify: false }],
      users: [{ name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile: token } } }],
      contexts: [{ cluster: 'inCluster', name: 'inClusterContext', user: 'inClusterUser', ...(namespace !== undefined ? { namespace } : {}) }],
      currentContext: 'inClusterContext',
    });
    checkConfig(kc, where);
    return kc;
  };
  load(); // fail at start, not at the first request
  return { server, description: `Kubernetes API ${server} (in-cluster)`, load };
}
