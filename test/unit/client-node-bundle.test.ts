// The agent's KubeConfig is @kubernetes/client-node's, bundled without the package's generated API by the build
// (scripts/bundle-client-node.mjs): this checks that the build did bundle it, and that the bundle behaves as the
// package does for what the agent asks of it (load a kubeconfig, give the TLS and auth options of a request).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as pkg from '@kubernetes/client-node';
import { KubeConfig } from '../../src/kube/client-node.js';

test('KubeConfig is the bundle of the unmodified package, without its generated API', () => {
  const text = readFileSync(fileURLToPath(new URL('../../src/kube/client-node.js', import.meta.url)), 'utf8');
  assert.match(text, /^\/\/ @kubernetes\/client-node 1\.4\.\d+ \(KubeConfig and what it uses\), bundled/, 'built by scripts/bundle-client-node.mjs');
  assert.doesNotMatch(text, /from\s*["']@kubernetes\/client-node/, 'does not load the package (and with it every generated API)');
  assert.ok(!/CoreV1Api|ObservableAPI|PromiseAPI/.test(text), 'no generated API classes');
  assert.notEqual(KubeConfig, pkg.KubeConfig);
});

test('the bundled KubeConfig gives the same request options as the package: token, token file, client certificate, CA, skip-verify', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-kc-'));
  try {
    writeFileSync(join(dir, 'token'), 'from-a-file\n');
    writeFileSync(join(dir, 'ca.crt'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const users = [
      '{name: u, user: {token: abc}}',
      `{name: u, user: {tokenFile: ${join(dir, 'token')}}}`,
      '{name: u, user: {client-certificate-data: Y2VydA==, client-key-data: a2V5}}',
    ];
    const clusters = ['{insecure-skip-tls-verify: true}', `{certificate-authority: ${join(dir, 'ca.crt')}}`, '{certificate-authority-data: Y2E=}'];
    for (const user of users) {
      for (const c of clusters) {
        const yaml = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", ${c.slice(1, -1)}}}]
users: [${user}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;
        const options = async (K: typeof KubeConfig): Promise<unknown> => {
          const kc = new K();
          kc.loadFromString(yaml);
          const o: Record<string, unknown> = {};
          await kc.applyToHTTPSOptions(o);
          delete o.agent; // an https.Agent of each copy's own
          return { o, server: kc.getCurrentCluster()?.server, user: kc.getCurrentUser()?.name };
        };
        assert.deepEqual(await options(KubeConfig), await options(pkg.KubeConfig), `${user} ${c}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
