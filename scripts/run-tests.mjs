#!/usr/bin/env node
// node --test on Node 20 does not expand globs: collect the compiled test files ourselves.
// Usage: node scripts/run-tests.mjs [unit|kernel|all] (default all)
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const which = process.argv[2] ?? 'all';
const roots = which === 'all' ? ['dist/test/unit', 'dist/test/kernel'] : [`dist/test/${which}`];
const files = [];
function walk(dir) {
  let names;
  try { names = readdirSync(dir); } catch { return; }
  for (const n of names.sort()) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith('.test.js')) files.push(p);
  }
}
roots.forEach(walk);
if (files.length === 0) {
  console.error(`no test files under ${roots.join(', ')}: run the build first`);
  process.exit(1);
}
// Kernel tests share one machine (cgroups, netns, bpffs): run files one at a time.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
