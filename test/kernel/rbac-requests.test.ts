// deploy/rbac.yaml against what the agent really asks: every request the agent's Kubernetes client
// (User-Agent meshlane-agent) made to the suite's API server in the kube tests, decoded as RBAC decodes it
// (test/support/kube/requestinfo.ts), must be allowed by the ClusterRole bound to the DaemonSet's service
// account, and every single grant of that role (verb x group x resource) must have been used: no more, no
// fewer. The suite's API servers append every request to $MESHLANE_KUBE_REQUEST_LOG (scripts/run-tests.mjs
// sets it for the whole run); a kube test file with no line there (this file run alone, or before it) is
// run here, under the same lock, with a log of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import { agentRules } from '../support/deploy.js';
import { notAllowed, unusedGrants } from '../support/kube/rbac.js';
import { REQUEST_LOG_ENV, type RequestLogLine } from '../support/kube/server.js';

/** the test files in which the agent (the CLI, its Kubernetes source, its Event recorder) talks to the API server */
const KUBE_TESTS = ['unit/kube-source.test.js', 'unit/kube-events.test.js', 'kernel/kube-agent.test.js', 'kernel/kube-in-cluster.test.js'];
const AGENT_UA = 'meshlane-agent';

function readLog(file: string | undefined): RequestLogLine[] {
  if (!file || !existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as RequestLogLine);
}

test('deploy/rbac.yaml allows exactly the requests the agent made in the kube tests: each one allowed, each grant used', { timeout: 900_000 }, (t) => {
  const suite = readLog(process.env[REQUEST_LOG_ENV]);
  const lines = [...suite];
  const tmp = mkdtempSync(join(tmpdir(), 'meshlane-rbac-'));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  for (const rel of KUBE_TESTS) {
    const base = rel.split('/')[1]!;
    if (suite.some((l) => l.file === base)) continue;
    const log = join(tmp, `${base}.jsonl`);
    const file = join(packageRoot(), 'dist', 'test', rel);
    // NODE_TEST_CONTEXT would make the nested runner report to this one instead of running the file
    const { NODE_TEST_CONTEXT: _ctx, ...env } = process.env;
    const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=dot', file], {
      env: { ...env, [REQUEST_LOG_ENV]: log },
      encoding: 'utf8',
      timeout: 600_000,
      killSignal: 'SIGKILL',
    });
    t.diagnostic(`ran ${rel} for its requests (exit ${r.status})`);
    lines.push(...readLog(log));
  }
  for (const rel of KUBE_TESTS) {
    const base = rel.split('/')[1]!;
    assert.ok(
      lines.some((l) => l.file === base && l.userAgent === AGENT_UA),
      `the agent made requests in ${rel}`,
    );
  }
  const agent = lines.filter((l) => l.userAgent === AGENT_UA);
  const rules = agentRules();
  assert.ok(rules.length > 0, 'a ClusterRole is bound to the DaemonSet’s service account');
  const kinds = (rs: RequestLogLine[]): string[] =>
    [
      ...new Set(
        rs.map((r) => `${r.verb} ${r.apiGroup || 'core'}/${r.resource}${r.subresource ? `/${r.subresource}` : ''}${r.isResourceRequest ? '' : ` ${r.path}`}`),
      ),
    ].sort();
  t.diagnostic(`${agent.length} requests of the agent: ${kinds(agent).join(', ')}`);
  assert.deepEqual(kinds(notAllowed(rules, agent)), [], 'requests the ClusterRole does not allow');
  assert.deepEqual(unusedGrants(rules, agent), [], 'grants of the ClusterRole no request used');
  // what RBAC cannot express: pods are only ever asked for this node's (a field selector), never all
  for (const r of agent.filter((q) => q.resource === 'pods'))
    assert.match(r.query.fieldSelector ?? '', /^spec\.nodeName=[^,]+$/, `${r.verb} pods without spec.nodeName: ${r.path}`);
});
