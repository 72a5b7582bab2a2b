// The node options the agent runs with (src/cli/node-options.ts): the image sets exactly these as its
// NODE_OPTIONS, node takes them there (it refuses many V8 flags in NODE_OPTIONS), and they do what they say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_NODE_OPTIONS } from '../../src/cli/node-options.js';
import { packageRoot } from '../../src/util/paths.js';

test("the image's runtime stage sets NODE_OPTIONS to the agent's node options", () => {
  const lines = readFileSync(join(packageRoot(), 'Dockerfile'), 'utf8').split('\n');
  const runtime = lines.slice(lines.map((l) => l.startsWith('FROM ')).lastIndexOf(true));
  const env = runtime.filter((l) => /^ENV\s+NODE_OPTIONS[=\s]/.test(l));
  assert.equal(env.length, 1, 'one ENV NODE_OPTIONS in the runtime stage');
  assert.equal(env[0]!.replace(/^ENV\s+NODE_OPTIONS[=\s]/, '').replace(/^"(.*)"$/, '$1'), AGENT_NODE_OPTIONS);
});

test('node takes the options in NODE_OPTIONS, and the young generation stays at its cap under allocation', () => {
  const script = `
    let keep = [];
    for (let i = 0; i < 2e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 20000) keep = []; }
    const ns = require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stdout.write(String(ns.space_size));`;
  const run = (options: string): number => {
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, NODE_OPTIONS: options }, encoding: 'utf8' });
    assert.equal(r.status, 0, `node with NODE_OPTIONS='${options}': ${r.stderr}`);
    return Number(r.stdout);
  };
  const semi = Number(/--max-semi-space-size=(\d+)/.exec(AGENT_NODE_OPTIONS)?.[1]);
  assert.ok(semi >= 1, 'the options cap the semi-space');
  const capped = run(AGENT_NODE_OPTIONS);
  // new space is two semi-spaces; without the cap the same allocation grows it past that
  assert.ok(capped <= 2 * semi * 1048576, `new space ${capped} bytes with ${AGENT_NODE_OPTIONS}`);
  assert.ok(run('') > capped, 'without the cap the young generation grows (the option is what keeps it small)');
});
