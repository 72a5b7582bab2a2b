// A process that follows the source sourceFromOptions() builds from its flags and environment, as the
// agent would, and prints what happens as JSON lines on stdout: {"description"}, {"event"}, {"error"},
// {"health"}, or {"startError"} (then exit 2). For tests that need a process of their own, e.g. in a
// private mount namespace with a service account mounted at the in-cluster path.
//   node source-probe.js [--kubeconfig FILE] [--cluster-file FILE] [--node-name NAME] [--compare-in-cluster]
// --compare-in-cluster first prints {"inCluster": <ours>, "loadFromCluster": <client-node's>} (exportConfig).
import { KubeConfig } from '@kubernetes/client-node';
import { inClusterConnection } from '../../../src/kube/config.js';
import { sourceFromOptions, type SourceOptions } from '../../../src/sources/select.js';
import type { SourceEvent } from '../../../src/sources/source.js';

const print = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const name = (o: unknown): string => {
  const m = (o as { metadata?: { namespace?: string; name?: string } }).metadata;
  return m?.namespace ? `${m.namespace}/${m.name}` : (m?.name ?? '');
};

function summary(e: SourceEvent): unknown {
  if (e.type === 'replace') return { type: 'replace', namespaces: e.namespaces.map(name).sort(), pods: e.pods.map(name).sort() };
  return { type: e.type, kind: e.kind, name: name(e.object) };
}

const argv = process.argv.slice(2);
const opts: SourceOptions = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const v = argv[i + 1];
  if (v === undefined) continue;
  if (a === '--kubeconfig') opts.kubeconfig = v;
  else if (a === '--cluster-file') opts.clusterFile = v;
  else if (a === '--node-name') opts.nodeName = v;
  else continue;
  i++;
}

if (argv.includes('--compare-in-cluster')) {
  try {
    const theirs = new KubeConfig();
    theirs.loadFromCluster();
    print({
      inCluster: JSON.parse(inClusterConnection(process.env).load().exportConfig()) as unknown,
      loadFromCluster: JSON.parse(theirs.exportConfig()) as unknown,
    });
  } catch (e) {
    print({ compareError: (e as Error).message });
  }
}

try {
  const src = await sourceFromOptions(opts, process.env, {
    tuning: { watchTimeoutSeconds: 30, staleSlackMs: 5000, requestTimeoutMs: 5000, backoffInitialMs: 20, backoffMaxMs: 250 },
    onHealth: (h) => print({ health: h }),
  });
  print({ description: src.description });
  await src.start({ event: (e) => print({ event: summary(e) }), error: (e) => print({ error: e.message }) });
  const stop = (): void => void src.stop().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (e) {
  print({ startError: (e as Error).message });
  process.exit(2);
}
