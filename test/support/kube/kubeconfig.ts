// The kubeconfig a test hands the agent (or client-node) for the test API server: server URL, the CA
// as certificate-authority-data, a bearer token; or insecure-skip-tls-verify without a CA (client-node
// 1.x also needs that flag for a plain http:// server, which this suite does not run).
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

export interface KubeconfigOptions {
  /** https://127.0.0.1:<port> */
  server: string;
  token: string;
  /** PEM of the CA that signed the server certificate (ignored with insecureSkipTlsVerify) */
  caPem?: string;
  insecureSkipTlsVerify?: boolean;
  /** names in the file (default meshlane-test) */
  name?: string;
  namespace?: string;
}

export function kubeconfigYaml(o: KubeconfigOptions): string {
  const name = o.name ?? 'meshlane-test';
  const cluster: Record<string, string | boolean> = { server: o.server };
  if (o.insecureSkipTlsVerify) cluster['insecure-skip-tls-verify'] = true;
  else if (o.caPem) cluster['certificate-authority-data'] = Buffer.from(o.caPem).toString('base64');
  else throw new Error('kubeconfig: give the CA (caPem) or insecureSkipTlsVerify');
  const context: Record<string, string> = { cluster: name, user: name };
  if (o.namespace) context.namespace = o.namespace;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster }],
    users: [{ name, user: { token: o.token } }],
    contexts: [{ name, context }],
    'current-context': name,
  });
}

/** Write the kubeconfig (mode 0600, it holds a token) and return its path. */
export function writeKubeconfig(path: string, o: KubeconfigOptions): string {
  writeFileSync(path, kubeconfigYaml(o), { mode: 0o600 });
  return path;
}
