// The planner's cost against a pod's CIDRs (issue: 48 ms for 5,000, 13.1 s for 40,000 before the incremental
// pipeline). Pure code, no kernel: a pod object with N exclude CIDRs goes through the pod model, the compiler
// and the per-pod planner, fresh (a new pod) and again with one CIDR fewer (a change: a new generation and
// the old one's cleanup). Linear means the cost per entry stays flat as N grows; the ratio column says it.
//   node dist/bench/planner.js [--sizes 5000,10000,20000,40000] [--rounds 5]
import { performance } from 'node:perf_hooks';
import { decideOne, namespaceInfo } from '../src/model/pod-model.js';
import { compilePod } from '../src/agent/desired.js';
import { Mirror, planPod } from '../src/agent/plan.js';
import { writePod, type MapWriter } from '../src/agent/reconcile.js';
import type { DesiredPod } from '../src/model/types.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
};
const sizes = arg('--sizes', '5000,10000,20000,40000').split(',').map(Number);
const rounds = Number(arg('--rounds', '5'));

const ns = namespaceInfo({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio-injection': 'enabled' } } })!.info;
const cidrs = (n: number): string => Array.from({ length: n }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`).join(',');
const pod = (n: number): unknown => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name: 'big',
    namespace: 'shop',
    uid: 'uid-big',
    annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}', 'traffic.sidecar.istio.io/excludeOutboundIPRanges': cidrs(n) },
  },
  spec: { nodeName: 'n1', containers: [{ name: 'istio-proxy', securityContext: { runAsUser: 1337 } }] },
  status: { podIP: '10.244.0.10', podIPs: [{ ip: '10.244.0.10' }], qosClass: 'BestEffort' },
});

// the writer's bookkeeping (the mirror) without a kernel: every op accepted
const nowhere: MapWriter = { apply: () => undefined };

function desiredOf(raw: unknown): DesiredPod {
  const d = decideOne(raw, ns);
  if (!('settings' in d)) throw new Error(`the benchmark's pod is not captured: ${d.reason}`);
  return d;
}

async function once(n: number): Promise<{ fresh: number; change: number; entries: number }> {
  const objs = [pod(n), pod(n - 1)];
  const mirror = new Mirror();
  const t0 = performance.now();
  const plan = planPod(1n, compilePod(desiredOf(objs[0])), undefined, mirror.ids);
  const t1 = performance.now();
  await writePod(nowhere, mirror, plan, { capacity: () => Number.MAX_SAFE_INTEGER });
  const t2 = performance.now();
  planPod(1n, compilePod(desiredOf(objs[1])), mirror.pods.get(1n), mirror.ids);
  const t3 = performance.now();
  return { fresh: t1 - t0, change: t3 - t2, entries: plan.sets.length };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: Array<{ n: number; entries: number; fresh: number; change: number }> = [];
await once(sizes[0]!); // warm up the JIT
for (const n of sizes) {
  const r: Array<{ fresh: number; change: number; entries: number }> = [];
  for (let i = 0; i < rounds; i++) r.push(await once(n));
  rows.push({ n, entries: r[0]!.entries, fresh: median(r.map((x) => x.fresh)), change: median(r.map((x) => x.change)) });
}
const base = rows[0]!;
console.log('| CIDRs | entries written | new pod (ms) | change (ms) | µs per entry (new) | per-entry cost vs the smallest |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  const per = (r.fresh * 1000) / r.entries;
  const basePer = (base.fresh * 1000) / base.entries;
  console.log(`| ${r.n} | ${r.entries} | ${r.fresh.toFixed(1)} | ${r.change.toFixed(1)} | ${per.toFixed(2)} | ${(per / basePer).toFixed(2)}x |`);
}
