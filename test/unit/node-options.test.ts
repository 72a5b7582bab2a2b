// How the agent's process runs (src/cli/node-options.ts): the image sets exactly that environment, node takes
// the options in NODE_OPTIONS (it refuses many V8 flags there), and they do what they say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_ENV } from '../../src/cli/node-options.js';
import { packageRoot } from '../../src/util/paths.js';

/** The runtime stage's ENV settings (`ENV K=V K2=V2` lines; values without spaces or quotes). */
function runtimeEnv(): Map<string, string> {
  const lines = readFileSync(join(packageRoot(), 'Dockerfile'), 'utf8').split('\n');
  const runtime = lines.slice(lines.map((l) => l.startsWith('FROM ')).lastIndexOf(true));
  const env = new Map<string, string>();
  for (const l of runtime.filter((l) => l.startsWith('ENV '))) {
    for (const kv of l.slice(4).trim().split(/\s+/)) {
      const eq = kv.indexOf('=');
      assert.ok(eq > 0, `ENV ${kv}: the K=V form`);
      env.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
  }
  return env;
}

test("the image's runtime stage sets the agent's environment", () => {
  const env = runtimeEnv();
  for (const [k, v] of Object.entries(AGENT_ENV)) assert.equal(env.get(k), v, `ENV ${k}`);
});

test('node takes the options in NODE_OPTIONS, and the young generation stays at its cap under allocation', () => {
  const script = `
    let keep = [];
    for (let i = 0; i < 2e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 20000) keep = []; }
    const ns = require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stdout.write(String(ns.space_size));`;
  const run = (env: Record<string, string>): number => {
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 0, `node with ${JSON.stringify(env)}: ${r.stderr}`);
    return Number(r.stdout);
  };
  const semi = Number(/--max-semi-space-size=(\d+)/.exec(AGENT_ENV.NODE_OPTIONS)?.[1]);
  assert.ok(semi >= 1, 'the options cap the semi-space');
  const capped = run(AGENT_ENV);
  // new space is two semi-spaces; without the cap the same allocation grows it past that
  assert.ok(capped <= 2 * semi * 1048576, `new space ${capped} bytes with ${AGENT_ENV.NODE_OPTIONS}`);
  assert.ok(run({ NODE_OPTIONS: '' }) > capped, 'without the cap the young generation grows (the option is what keeps it small)');
});
