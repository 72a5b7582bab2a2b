#!/usr/bin/env node
// Runs the compiled tests with node's test runner, one file at a time (kernel tests share the
// machine's cgroups, netns and bpffs), and FAILS WHEN ANY TEST WAS SKIPPED OR LEFT TODO: on the machines
// meshlane is built and tested on every feature is present, so a skip would hide a failure.
//
// Usage: node scripts/run-tests.mjs [unit|kernel|all|<file or directory>...]   (default all)
//   unit    dist/test/unit: pure tests, no root, no BPF objects, no addon (npm run test:unit)
//   kernel  dist/test/kernel: real BPF, netns, cgroups, iptables; root (npm run test:kernel)
//   all     both
// A path runs that test file (whatever its name) or every *.test.js under that directory.
// node --test on Node 20 does not expand globs: the files are collected here.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SUITES = { unit: ['dist/test/unit'], kernel: ['dist/test/kernel'], all: ['dist/test/unit', 'dist/test/kernel'] };

const args = process.argv.slice(2);
const targets = (args.length ? args : ['all']).flatMap((a) => SUITES[a]?.map((d) => join(root, d)) ?? [resolve(a)]);

const files = [];
function walk(dir) {
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names.sort()) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith('.test.js')) files.push(p);
  }
}
for (const t of targets) {
  let st;
  try {
    st = statSync(t);
  } catch {
    continue; // a suite not built: reported below if nothing is left
  }
  if (st.isDirectory()) walk(t);
  else files.push(t);
}
if (files.length === 0) {
  console.error(`run-tests: no test files under ${targets.join(', ')}: build first (npx tsc -p tsconfig.json)`);
  process.exit(1);
}

const tmp = mkdtempSync(join(tmpdir(), 'meshlane-run-tests-'));
const skipsFile = join(tmp, 'skips.jsonl');
// Every request the suite's Kubernetes API servers get, for the RBAC test (test/kernel/rbac-requests.test.ts),
// which holds deploy/rbac.yaml against the agent's requests of the kube test files that ran before it.
const kubeRequestLog = join(tmp, 'kube-requests.jsonl');
let status;
try {
  const r = spawnSync(
    process.execPath,
    [
      '--test',
      '--test-concurrency=1',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${join(root, 'scripts', 'skip-reporter.mjs')}`,
      `--test-reporter-destination=${skipsFile}`,
      ...files,
    ],
    { stdio: 'inherit', env: { ...process.env, MESHLANE_KUBE_REQUEST_LOG: process.env.MESHLANE_KUBE_REQUEST_LOG ?? kubeRequestLog } },
  );
  status = r.status ?? 1;
  let skipped = [];
  try {
    skipped = readFileSync(skipsFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  } catch {
    /* no file: the reporter never ran (node failed before any test) and status says so */
  }
  if (skipped.length) {
    console.error(`\nrun-tests: ${skipped.length} test(s) skipped or todo; on these machines every feature is present, so this run FAILS:`);
    for (const s of skipped)
      console.error(`  ${s.kind}  ${s.file.startsWith(root) ? s.file.slice(root.length + 1) : s.file}: ${s.name}${s.reason ? ` (${s.reason})` : ''}`);
    if (status === 0) status = 1;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(status);
