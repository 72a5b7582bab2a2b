// Replaces dist/src/kube/client-node.js (tsc's output of src/kube/client-node.ts: a re-export of the one part
// of @kubernetes/client-node the agent uses, KubeConfig) with that export and what it needs, bundled and
// tree-shaken by esbuild from the unmodified package. Importing the package loads its whole generated API
// (21 MB of JavaScript: every API group's classes and models), whose sources V8 keeps in the heap for lazy
// compilation: about 57 MiB of the agent's RSS, for a class that reads kubeconfigs and credentials. The
// bundle holds only the code KubeConfig reaches (bench/RESULTS.md, "Node scale"). The package's own
// dependencies stay external (loaded from node_modules as they are).
// Run after tsc: node scripts/bundle-client-node.mjs [DIST_DIR]
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = process.argv[2] ?? join(root, 'dist');
const out = join(dist, 'src', 'kube', 'client-node.js');
const pkg = JSON.parse(readFileSync(join(root, 'node_modules', '@kubernetes', 'client-node', 'package.json'), 'utf8'));
await build({
  stdin: { contents: "export { KubeConfig } from '@kubernetes/client-node';", resolveDir: root, loader: 'js' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // the package's dependencies as they are installed (node_modules); only its own files are bundled
  external: Object.keys(pkg.dependencies ?? {}),
  treeShaking: true,
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'none',
  banner: { js: `// @kubernetes/client-node ${pkg.version} (KubeConfig and what it uses), bundled by scripts/bundle-client-node.mjs` },
  outfile: out,
  logLevel: 'warning',
});
