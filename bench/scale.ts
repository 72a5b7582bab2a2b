// The node-scale benchmark: 10,000 pods in the cluster, 250 of them on this node, on both sources (a cluster
// file; the suite's Kubernetes API server, in this process, serving them over HTTPS with list/watch). The 250
// are real sandbox pods (each its own network namespace with a veth, kubelet cgroups, a sandbox process), so
// the agent locates and enrolls 250 pods for real: netns cookies, pods entries, an sk_lookup link per netns.
// None of them has a proxy listening (inbound capture is on by default): the case where listener adoption
// used to re-read /proc for every pod once a second.
//
// Measured per source, with the real `meshlane agent` as a subprocess:
//   initial sync     spawn -> all 250 pods in the pinned `pods` map; and, from the agent's log, the source's
//                    complete state -> applied
//   idle CPU         the agent's utime+stime over IDLE_S seconds with nothing changing, once the start-up
//                    listener adoption (one /proc/<pid>/net/tcp read per pod after the attach) is over and
//                    SETTLE_S seconds after it (their CPU is a row of its own: JIT and GC of the start-up);
//                    that adoption's duration is its own row
//   event to map     an annotation change of one pod (excludeOutboundPorts gets a new port; the file
//                    rewritten and renamed over, or a merge patch through the API) from the event (the rename;
//                    the patch) until the pinned pod_ports map holds the new port under that pod's current pod
//                    id; one change at a time, --changes of them, p50/p99
//   RSS              the agent's VmRSS after the sync, every 100 changes, after the last one
// Run: bash bench/scale.sh [--changes N] [--gap-ms MS] [--sources file,kube] [--pods N] [--on-node N] [--listening]
// (as root). --listening: each pod's proxy (a stand-in as uid 1337) listens on 15001 and 15006 before the agent starts.
// --gap-ms spreads the changes out (MS between one change reaching the maps and the next), so that RSS under
// changes is seen over minutes, with the agent's collections in between, and not over a burst.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writevSync, createWriteStream } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from '../src/sandbox/sandbox.js';
import { PYTHON } from '../test/support/stuck-proxy.js';
import { machineCpu, stealCores } from './measure.js';
import { PinnedMaps, uninstall } from '../src/dataplane/dataplane.js';
import { PortKind } from '../src/dataplane/layouts.js';
import { readStatus } from '../src/agent/status.js';
import { packageRoot } from '../src/util/paths.js';
import { AGENT_ENV } from '../src/cli/node-options.js';
import { KubeApiServer } from '../test/support/kube/server.js';
import type { KubeObject } from '../test/support/kube/resources.js';
import { Store } from '../test/support/kube/store.js';
import { log } from './log.js';

const NODE = 'scale-node';
const BPFFS = '/sys/fs/bpf/meshlane-bench-scale';
const IDLE_S = 20;
/** where the cluster file is written (a tmpfs; see where it is used) */
const FILE_TMPFS = '/dev/shm';
/** after the adoption, before the idle window (see where it is used) */
const SETTLE_S = 30;
const CLI = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
const MERGE = 'application/merge-patch+json';
/** at most this many buffers per writev (Linux's UIO_MAXIOV) */
const IOV_MAX = 1024;
const PORTS_ANN = 'traffic.sidecar.istio.io/excludeOutboundPorts';

interface Opts {
  pods: number;
  onNode: number;
  namespaces: number;
  changes: number;
  /** ms between one change reaching the maps and the next change (0: at once) */
  gapMs: number;
  /** agent starts per source: the first starts - 1 measure the initial sync alone */
  starts: number;
  sources: Array<'file' | 'kube'>;
  /** every pod's proxy listening on 15001 and 15006 (uid 1337, in its istio-proxy container) before the agent
   * starts: the pods the start-up adoption finds listening */
  listening: boolean;
  json?: string;
  markdown?: string;
}

function parse(argv: string[]): Opts {
  const o: Opts = { pods: 10_000, onNode: 250, namespaces: 100, changes: 1000, gapMs: 0, starts: 1, sources: ['file', 'kube'], listening: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--pods') o.pods = Number(v());
    else if (a === '--on-node') o.onNode = Number(v());
    else if (a === '--changes') o.changes = Number(v());
    else if (a === '--gap-ms') o.gapMs = Number(v());
    else if (a === '--starts') o.starts = Number(v());
    else if (a === '--sources') o.sources = v().split(',') as Opts['sources'];
    else if (a === '--listening') o.listening = true;
    else if (a === '--json') o.json = v();
    else if (a === '--markdown') o.markdown = v();
    else throw new Error(`unknown option ${a}`);
  }
  if (!Number.isInteger(o.starts) || o.starts < 1) throw new Error('--starts: a whole number, at least 1');
  if (o.onNode > 250) throw new Error('--on-node: at most 250 (one /24 of sandbox pod addresses)');
  return o;
}

/** the uids the API store gave the pods (the sandbox pods' cgroups are named by them; the file uses them too) */
const UIDS: string[] = [];
const uidOf = (i: number): string => UIDS[i] ?? `5ca1e000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const onNode = (o: Opts, i: number): boolean => i % Math.floor(o.pods / o.onNode) === 0 && i / Math.floor(o.pods / o.onNode) < o.onNode;
const ipOf = (o: Opts, i: number): string =>
  onNode(o, i) ? `10.244.0.${2 + i / Math.floor(o.pods / o.onNode)}` : `10.${100 + ((i >> 16) & 127)}.${(i >> 8) & 255}.${i & 255}`;

/** --listening: what each pod's proxy does (listen on the outbound and inbound ports, accept nothing) */
const LISTENER = `
import socket, time
for port in (15001, 15006):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.listen(16)
    globals()['s%d' % port] = s
print('ready', flush=True)
time.sleep(86400)
`;
const PROXY_UID = 1337;

/** A pod as the API server serves it (the fields a real injected pod has, without managedFields). */
function podOf(o: Opts, i: number, annotations: Record<string, string> = {}): KubeObject {
  const ns = `ns-${i % o.namespaces}`;
  const ip = ipOf(o, i);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `app-${i}-7d9f8c6b5-x2k4p`,
      namespace: ns,
      uid: uidOf(i),
      resourceVersion: String(1000 + i),
      creationTimestamp: '2026-12-01T10:00:00Z',
      labels: {
        app: `app-${i % 50}`,
        'pod-template-hash': '7d9f8c6b5',
        'security.istio.io/tlsMode': 'istio',
        'service.istio.io/canonical-name': `app-${i % 50}`,
      },
      annotations: {
        'sidecar.istio.io/status':
          '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}',
        'kubectl.kubernetes.io/default-container': 'app',
        'prometheus.io/port': '15020',
        ...annotations,
      },
      ownerReferences: [
        {
          apiVersion: 'apps/v1',
          kind: 'ReplicaSet',
          name: `app-${i}-7d9f8c6b5`,
          uid: 'aaaaaaaa-0000-4000-8000-000000000000',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      nodeName: onNode(o, i) ? NODE : `node-${i % 40}`,
      serviceAccountName: 'default',
      containers: [
        {
          name: 'app',
          image: 'registry.example/app:1.2.3',
          ports: [{ containerPort: 8080, protocol: 'TCP' }],
          resources: { requests: { cpu: '100m', memory: '128Mi' } },
        },
        {
          name: 'istio-proxy',
          image: 'docker.io/istio/proxyv2:1.22.0',
          args: ['proxy', 'sidecar', '--domain', '$(POD_NAMESPACE).svc.cluster.local'],
          ports: [{ containerPort: 15090, name: 'http-envoy-prom', protocol: 'TCP' }],
          securityContext: { runAsUser: 1337, runAsGroup: 1337 },
        },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: '192.168.0.1',
      podIP: ip,
      podIPs: [{ ip }],
      qosClass: 'BestEffort',
      startTime: '2026-12-01T10:00:01Z',
      conditions: [
        { type: 'Ready', status: 'True', lastTransitionTime: '2026-12-01T10:00:05Z' },
        { type: 'ContainersReady', status: 'True', lastTransitionTime: '2026-12-01T10:00:05Z' },
        { type: 'PodScheduled', status: 'True', lastTransitionTime: '2026-12-01T10:00:00Z' },
      ],
    },
  };
}

const nsOf = (i: number): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: `ns-${i}`, labels: { 'istio-injection': 'enabled', 'kubernetes.io/metadata.name': `ns-${i}` } },
});

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime, stime (fields 14, 15)
}

/** perf record of the agent's CPU (cpu-clock: hardware counters do not work here) into `out`, until SIGINT or `until` ends */
const perfRecord = (out: string, pid: number, until: string[] = []): ChildProcess =>
  spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-g', '-o', out, '-p', String(pid), ...until], { stdio: 'inherit' });

/** VmRSS split as the kernel counts it (anonymous: the heap and malloc; file: node's own text, mapped), for the log */
function rssParts(pid: number): string {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): string => ((Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1]) || 0) / 1024).toFixed(0);
  return `RSS ${kb('VmRSS')} MiB (anon ${kb('RssAnon')}, file ${kb('RssFile')}, shmem ${kb('RssShmem')})`;
}

/** BENCH_HEAP=1: the agent's V8 heap by space, from its metrics endpoint (the default 127.0.0.1:9464) */
async function logHeap(source: string): Promise<void> {
  try {
    const body = await (await fetch('http://127.0.0.1:9464/metrics')).text();
    const mib = (v: string): string => (Number(v) / 1048576).toFixed(1);
    const lines = body.split('\n').filter((l) => /^nodejs_(heap_space_size_(used|total)_bytes|heap_size_(used|total)_bytes|external_memory_bytes)/.test(l));
    log(
      `${source}: heap ${lines
        .map((l) =>
          l
            .replace(/^nodejs_/, '')
            .replace(/_bytes/, '')
            .replace(/ (\S+)$/, (_, v: string) => ` ${mib(v)}`),
        )
        .join('; ')}`,
    );
  } catch (e) {
    log(`${source}: no heap figures: ${(e as Error).message}`);
  }
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const CLK_TCK = 100;
/** How often a change's map entry is looked for (BENCH_POLL_MS, default 1; 0 looks on every turn of the event
 * loop). A look at every turn keeps one of this 2-core machine's cores busy, the one the agent's GC helpers,
 * libuv pool and the kernel's page freeing would use: on the same build, the cluster file's p99 was 47.0 ms
 * with it and 30.4 ms with a 1 ms timer (p50 14.1 and 14.9). The timer adds up to about 1 ms to each figure. */
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface SourceResult {
  source: string;
  startToAllMs: number;
  stateToAppliedMs: number | undefined;
  syncMs: number | undefined;
  /** the sync of every start (--starts), in order; the last one is syncMs */
  syncs: number[];
  /** the steal of each of those starts (cores) */
  syncSteals: number[];
  /** the start-up listener adoption (after the attach), from the agent's log */
  adoptMs: number | undefined;
  /** the SETTLE_S seconds after the adoption, before the idle window */
  settleCpuPct: number;
  idleCpuPct: number;
  /** the hypervisor's steal (cores of this VM) during the idle window and during the changes */
  steal: { idle: number; changes: number };
  changes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  rss: { afterSync: number; samples: number[]; peak: number; end: number };
  fileMiB?: number;
}

/** One start of the agent, up to every on-node pod in the maps. */
interface Started {
  proc: ChildProcess;
  pid: number;
  logFile: string;
  startToAllMs: number;
  stateToAppliedMs: number | undefined;
  syncMs: number | undefined;
  /** the hypervisor's steal from the spawn until every pod was in the maps, in cores */
  steal: number;
}

/** The pinned maps, read by this process (no agent involvement). */
class Pins {
  private maps: PinnedMaps | undefined;
  get m(): PinnedMaps {
    if (!this.maps) this.maps = new PinnedMaps(BPFFS);
    return this.maps;
  }
  close(): void {
    this.maps?.close();
    this.maps = undefined;
  }
}

async function runSource(o: Opts, source: 'file' | 'kube', cgroupRoot: string, nodeIdx: number[]): Promise<SourceResult> {
  const dir = mkdtempSync(join(tmpdir(), `meshlane-scale-${source}-`));
  // The cluster file on tmpfs, as a ConfigMap volume holds it: on ext4 a rename over a file writes the new
  // file's 17.8 MiB back inside the rename (auto_da_alloc), 20-30 ms of the writer's CPU on a 2-core machine,
  // in the middle of the agent's read.
  const fileDir = source === 'file' ? mkdtempSync(join(FILE_TMPFS, 'meshlane-scale-')) : undefined;
  let api: KubeApiServer | undefined;
  let proc: ChildProcess | undefined;
  const pins = new Pins();
  try {
    const annotations = new Map<number, Record<string, string>>();
    // the source of the world
    /** makes the change; returns when it happened (performance.now()) */
    let change: (i: number) => number;
    let args: string[];
    let fileMiB: number | undefined;
    if (source === 'file') {
      const file = join(fileDir!, 'cluster.json');
      // the file's pieces as bytes, each item with the comma before it (the first without), written with
      // writev: the writer makes no 17.8 MiB string and buffer per change, whose collection in this process
      // (which also polls the map) would be timed as the agent's
      const item = (n: number, x: unknown): Buffer => Buffer.from((n === 0 ? '' : ',') + JSON.stringify(x));
      const items = [...Array.from({ length: o.namespaces }, (_, i) => nsOf(i)), ...Array.from({ length: o.pods }, (_, i) => podOf(o, i))].map((x, n) =>
        item(n, x),
      );
      const head = Buffer.from('{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[');
      const tail = Buffer.from(']}');
      const write = (): number => {
        const parts = [head, ...items, tail];
        fileMiB = parts.reduce((n, b) => n + b.length, 0) / 1048576;
        const fd = openSync(`${file}.tmp`, 'w');
        try {
          for (let k = 0; k < parts.length; k += IOV_MAX) writevSync(fd, parts.slice(k, k + IOV_MAX));
        } finally {
          closeSync(fd);
        }
        // the change is the rename (the writing before it is the writer's time)
        const at = performance.now();
        renameSync(`${file}.tmp`, file); // as an editor or a controller writes it: whole, then renamed over
        return at;
      };
      write();
      change = (i) => {
        items[o.namespaces + i] = item(o.namespaces + i, podOf(o, i, annotations.get(i)));
        return write();
      };
      args = ['--cluster-file', file];
    } else {
      api = await KubeApiServer.start({ bookmarkIntervalMs: 5000, store: STORE });
      const kc = api.writeKubeconfig(join(dir, 'kubeconfig'));
      change = (i) => {
        const p = podOf(o, i);
        const at = performance.now();
        api!.store.patch('pods', p.metadata!.namespace, p.metadata!.name!, MERGE, { metadata: { annotations: annotations.get(i) } });
        return at;
      };
      args = ['--kubeconfig', kc];
    }
    const perfOut = process.env.BENCH_PERF_IDLE ? `${process.env.BENCH_PERF_IDLE}.${source}` : undefined;
    const perfStartOut = process.env.BENCH_PERF_START ? `${process.env.BENCH_PERF_START}.${source}` : undefined;
    /** One start of the agent (pins removed first), until every on-node pod is in the pinned pods map. */
    const startAgent = async (k: number, cli = CLI): Promise<Started> => {
      uninstall(BPFFS);
      const logFile = join(dir, k === 0 ? 'agent.log' : `agent-${k}.log`);
      const out = createWriteStream(logFile);
      const t0 = performance.now();
      const m0 = machineCpu();
      // (not node --cpu-prof: its SIGPROF every millisecond interrupts the verifier, and the agent's start fails
      // with 'the verifier refused program meshlane_connect4'; BENCH_PERF_IDLE=FILE records the idle window
      // with perf record -e cpu-clock -g, the agent started with node --perf-basic-prof for the symbols;
      // BENCH_AGENT_NODE_ARGS: more node flags for the agent, e.g. --trace-opt)
      // BENCH_PERF_START=FILE: the same from the spawn until every pod is in the maps (the initial sync)
      const perfAny = perfOut !== undefined || perfStartOut !== undefined;
      const child = spawn(
        process.execPath,
        [
          ...(perfAny ? ['--perf-basic-prof'] : []),
          ...(process.env.BENCH_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
          cli,
          'agent',
          ...args,
          '--node-name',
          NODE,
          '--cgroup-root',
          cgroupRoot,
          '--bpffs',
          BPFFS,
          '--state-dir',
          join(dir, k === 0 ? 'state' : `state-${k}`),
          // the run's own CNI socket, removed with its directory: never the node's /var/run/meshlane/cni.sock
          '--cni-socket',
          join(dir, 'cni.sock'),
          // info: the start's milestones are info lines; debug's line per pod would be the agent's cost, not the
          // production agent's
          '--log-level',
          'info',
        ],
        // as the image runs it (its environment: src/cli/node-options.ts)
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...AGENT_ENV } },
      );
      proc = child; // stopped by the finally below if this start fails
      child.stdout!.pipe(out);
      child.stderr!.pipe(out);
      const pid = child.pid!;
      const perfStart = perfStartOut && k === 0 ? perfRecord(perfStartOut, pid) : undefined;
      // initial sync: every on-node pod in the pinned pods map. Looked at every 20 ms: this process shares the
      // machine's 2 cores with the agent, and reading the whole map every 5 ms took CPU from the start it times.
      for (;;) {
        if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
        try {
          if (pins.m.maps.pods!.entries().length >= o.onNode) break;
        } catch {
          pins.close(); // not pinned yet
        }
        if (performance.now() - t0 > 120_000)
          throw new Error(`not all ${o.onNode} pods in the maps after 120 s: ${readFileSync(logFile, 'utf8').slice(-3000)}`);
        await sleep(20);
      }
      const startToAllMs = performance.now() - t0;
      const steal = stealCores(m0, machineCpu());
      if (perfStart) {
        const gone = new Promise((r) => perfStart.once('exit', r));
        perfStart.kill('SIGINT');
        await gone;
      }
      await sleep(500);
      const lines = readFileSync(logFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          try {
            return JSON.parse(l) as { msg?: string; time?: number };
          } catch {
            return {};
          }
        });
      const line = (msg: string): { time?: number; ms?: number } | undefined => lines.find((l) => l.msg === msg);
      const began = line('source: starting')?.time;
      const gotLogged = line('source: complete state')?.time;
      const loadMs = line('programs loaded')?.ms;
      const applied = line('first complete state applied')?.time;
      const stateToAppliedMs = gotLogged !== undefined && applied !== undefined ? applied - gotLogged : undefined;
      // The initial sync's own work: from the source's start to the complete state applied, less the BPF load
      // (loading and verifying the programs, the same for 1 pod or 10,000: the row above has it). The load runs
      // on libuv's pool from the source's start on, while the file is parsed or the API's lists answered: this
      // is how much longer than the load the start takes to have every pod in the maps.
      const syncMs = began !== undefined && loadMs !== undefined && applied !== undefined ? applied - began - loadMs : undefined;
      log(
        `${source}: start ${k + 1}: all ${o.onNode} pods in the maps ${startToAllMs.toFixed(0)} ms after spawn; complete state -> applied ${stateToAppliedMs} ms; BPF load ${loadMs} ms; sync (source start -> applied, less the load) ${syncMs} ms; steal ${steal.toFixed(2)} cores`,
      );
      return { proc: child, pid, logFile, startToAllMs, stateToAppliedMs, syncMs, steal };
    };
    // --starts N: the first N - 1 starts are for the sync figures alone (it varies from one start to the next
    // on this machine); the last one goes on to the idle and change figures
    // BENCH_AGENT_CLI_B=PATH (another build's dist/src/cli/main.js): each of those starts is followed by one of
    // that build's, so that two builds' syncs are compared side by side on the same pods and the same machine
    const cliB = process.env.BENCH_AGENT_CLI_B;
    const syncs: number[] = [];
    const syncSteals: number[] = [];
    const syncsB: number[] = [];
    /** One start for the sync figures alone, stopped once every pod is in the maps. */
    const once = async (k: number, cli: string): Promise<Started> => {
      const s = await startAgent(k, cli);
      const gone = new Promise((r) => s.proc.once('exit', r));
      s.proc.kill('SIGKILL');
      await gone;
      pins.close();
      return s;
    };
    for (let k = 1; k < o.starts; k++) {
      const s = await once(k, CLI);
      if (s.syncMs !== undefined) syncs.push(s.syncMs);
      syncSteals.push(s.steal);
      if (cliB) {
        const b = await once(o.starts + k, cliB);
        if (b.syncMs !== undefined) syncsB.push(b.syncMs);
      }
    }
    if (cliB)
      log(
        `${source}: sync of ${cliB}, ${syncsB.length} starts: median ${pct(syncsB, 50).toFixed(0)} ms (${syncsB.map((x) => x.toFixed(0)).join(', ')}); this build's, before the last start: ${pct(syncs, 50).toFixed(0)} ms (${syncs.map((x) => x.toFixed(0)).join(', ')})`,
      );
    const started = await startAgent(0);
    const { pid, logFile, startToAllMs, stateToAppliedMs, syncMs } = started;
    if (syncMs !== undefined) syncs.push(syncMs);
    syncSteals.push(started.steal);
    // cookies of the on-node pods
    let st = readStatus(join(dir, 'state'));
    for (let k = 0; k < 100 && (st?.pods.filter((p) => p.state === 'captured').length ?? 0) < o.onNode; k++) {
      await sleep(100);
      st = readStatus(join(dir, 'state'));
    }
    const cookie = new Map<string, bigint>((st?.pods ?? []).filter((p) => p.netnsCookie).map((p) => [p.ref.uid, BigInt(p.netnsCookie!)]));
    if (cookie.size < o.onNode) throw new Error(`status lists ${cookie.size} captured pods, not ${o.onNode}`);
    // idle CPU, once the start-up work is over: listener adoption after the attach reads every pod's
    // /proc/<pid>/net/tcp{,6} (a walk of the node's TCP table each), one pod per turn of the event loop
    let adoptMs: number | undefined;
    for (let k = 0; k < 600 && adoptMs === undefined; k++) {
      const done = readFileSync(logFile, 'utf8')
        .split('\n')
        .find((l) => l.includes('"listener adoption done"'));
      if (done) adoptMs = (JSON.parse(done) as { ms?: number }).ms;
      else await sleep(100);
    }
    log(`${source}: start-up listener adoption ${adoptMs === undefined ? 'not reported within 60 s' : `took ${adoptMs.toFixed(0)} ms`}`);
    // the start-up's tail first, measured on its own: V8 optimises the code of the periodic passes (the
    // binding checks, the resync) as they come round, and its memory reducer runs mark-compacts over the
    // start-up's garbage some 8 s after the allocation rate drops (a few hundred ms of CPU each here);
    // idle is what the agent costs after that, with nothing changing
    const s0 = cpuTicks(pid);
    const sw0 = performance.now();
    await sleep(SETTLE_S * 1000);
    const settleCpuPct = ((cpuTicks(pid) - s0) / CLK_TCK / ((performance.now() - sw0) / 1000)) * 100;
    log(`${source}: CPU ${settleCpuPct.toFixed(2)}% of a core in the ${SETTLE_S} s after the adoption`);
    const perf = perfOut ? perfRecord(perfOut, pid, ['--', 'sleep', String(IDLE_S)]) : undefined;
    const c0 = cpuTicks(pid);
    const w0 = performance.now();
    const m0 = machineCpu();
    await sleep(IDLE_S * 1000);
    const idleSteal = stealCores(m0, machineCpu());
    const idleCpuPct = ((cpuTicks(pid) - c0) / CLK_TCK / ((performance.now() - w0) / 1000)) * 100;
    log(`${source}: idle CPU ${idleCpuPct.toFixed(2)}% of a core over ${IDLE_S} s`);
    if (perf && perf.exitCode === null) await new Promise((r) => perf.once('exit', r));
    // changes, one at a time: event -> the pinned map holds it
    const afterSync = rssMiB(pid);
    log(`${source}: after the idle window: ${rssParts(pid)}`);
    if (process.env.BENCH_HEAP) await logHeap(source);
    const samples: number[] = [];
    let peak = afterSync;
    const lat: number[] = [];
    /** BENCH_TRACE_CHANGES=FILE: each change's start (epoch ms, as the agent's log times its lines) and its
     * time to the map, to lay beside the agent's 'maps updated' lines */
    const trace: Array<{ n: number; pod: number; at: number; ms: number }> = [];
    let port = 20000;
    const mc0 = machineCpu();
    for (let n = 0; n < o.changes; n++) {
      const i = nodeIdx[n % nodeIdx.length]!;
      const p = ++port;
      annotations.set(i, { [PORTS_ANN]: String(p) });
      const c = cookie.get(uidOf(i))!;
      const t = change(i);
      for (;;) {
        const id = pins.m.maps.pods!.get(c)?.pod_id;
        if (id !== undefined && pins.m.maps.pod_ports!.get({ pod_id: id, port: p, kind: PortKind.OUT_EXCLUDE, pad: 0 }) !== null) break;
        if (performance.now() - t > 30_000) throw new Error(`change ${n} (pod ${i}, port ${p}) not in the maps after 30 s`);
        await (POLL_MS > 0 ? sleep(POLL_MS) : new Promise((r) => setImmediate(r)));
      }
      lat.push(performance.now() - t);
      if (process.env.BENCH_TRACE_CHANGES) trace.push({ n, pod: i, at: performance.timeOrigin + t, ms: lat[lat.length - 1]! });
      if ((n + 1) % 100 === 0) {
        const r = rssMiB(pid);
        samples.push(Math.round(r));
        peak = Math.max(peak, r);
        log(`${source}: ${n + 1} changes, p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms, RSS ${r.toFixed(0)} MiB`);
      }
      peak = Math.max(peak, n % 10 === 0 ? rssMiB(pid) : 0);
      if (o.gapMs > 0) await sleep(o.gapMs);
    }
    const changesSteal = stealCores(mc0, machineCpu());
    if (process.env.BENCH_TRACE_CHANGES) writeFileSync(`${process.env.BENCH_TRACE_CHANGES}.${source}`, JSON.stringify(trace));
    await sleep(2000);
    const end = rssMiB(pid);
    log(`${source}: after the last change: ${rssParts(pid)}`);
    if (process.env.BENCH_HEAP) await logHeap(source);
    return {
      source: source === 'file' ? `cluster file (JSON, ${fileMiB?.toFixed(1)} MiB)` : 'Kubernetes API (test server, HTTPS, list/watch)',
      startToAllMs,
      stateToAppliedMs,
      syncMs,
      syncs,
      syncSteals,
      adoptMs,
      settleCpuPct,
      idleCpuPct,
      steal: { idle: idleSteal, changes: changesSteal },
      changes: o.changes,
      p50Ms: pct(lat, 50),
      p99Ms: pct(lat, 99),
      maxMs: Math.max(...lat),
      rss: { afterSync: Math.round(afterSync), samples, peak: Math.round(peak), end: Math.round(end) },
      ...(fileMiB !== undefined ? { fileMiB } : {}),
    };
  } finally {
    pins.close();
    if (proc && proc.exitCode === null) {
      const gone = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    }
    try {
      uninstall(BPFFS);
    } catch (e) {
      log(`uninstall: ${(e as Error).message}`);
    }
    await api?.close();
    if (process.env.BENCH_KEEP_LOG) {
      try {
        writeFileSync(`${process.env.BENCH_KEEP_LOG}.${source}`, readFileSync(join(dir, 'agent.log')));
      } catch {
        /* no log */
      }
    }
    rmSync(dir, { recursive: true, force: true });
    if (fileDir) rmSync(fileDir, { recursive: true, force: true });
  }
}

function markdown(o: Opts, rs: SourceResult[], command: string, started: string): string {
  const row = (name: string, f: (r: SourceResult) => string, target: string): string => `| ${name} | ${rs.map(f).join(' | ')} | ${target} |`;
  return [
    `Run ${started}: \`${command}\` (${cpus().length} CPUs, node ${process.version})`,
    '',
    `${o.pods} pods in ${o.namespaces} namespaces (all labelled istio-injection=enabled), ${o.onNode} on this node as real sandbox pods; ${o.listening ? 'every proxy listening on 15001 and 15006 before the agent starts (--listening)' : 'no proxy listening (inbound capture on: the adoption case)'}.`,
    '',
    `| figure | ${rs.map((r) => r.source).join(' | ')} | target |`,
    `|---|${rs.map(() => '---:').join('|')}|---|`,
    row('agent spawn -> all pods in the maps (ms; includes loading and verifying the BPF programs)', (r) => r.startToAllMs.toFixed(0), ''),
    row('complete state received -> applied to the maps (ms; includes waiting for the BPF load)', (r) => (r.stateToAppliedMs ?? NaN).toFixed(0), ''),
    row('initial sync: source started -> complete state applied, less the BPF load (ms)', (r) => (r.syncMs ?? NaN).toFixed(0), '< 1000'),
    ...(o.starts > 1
      ? [
          row(
            `initial sync of each of ${o.starts} starts, median first (ms)`,
            (r) => `${pct(r.syncs, 50).toFixed(0)}: ${r.syncs.map((x) => x.toFixed(0)).join(', ')}`,
            '< 1000',
          ),
          row(`the hypervisor's steal during each of those starts (cores)`, (r) => r.syncSteals.map((x) => x.toFixed(2)).join(', '), ''),
        ]
      : []),
    row('start-up listener adoption, after the attach (ms; before the idle figure)', (r) => (r.adoptMs ?? NaN).toFixed(0), ''),
    row(`CPU in the ${SETTLE_S} s after the adoption (% of a core; V8 optimising, collecting the start-up's garbage)`, (r) => r.settleCpuPct.toFixed(2), ''),
    row(`idle CPU (% of a core, the ${IDLE_S} s after those)`, (r) => r.idleCpuPct.toFixed(2), '< 1'),
    row(`event -> map p50 (ms; the map looked at ${POLL_MS > 0 ? `every ${POLL_MS} ms` : 'on every turn of the event loop'})`, (r) => r.p50Ms.toFixed(1), ''),
    row('event -> map p99 (ms)', (r) => r.p99Ms.toFixed(1), '< 50'),
    row('event -> map max (ms)', (r) => r.maxMs.toFixed(1), ''),
    row(
      "the hypervisor's steal during the idle window / the changes (cores of this VM's CPUs; time no process here got)",
      (r) => `${r.steal.idle.toFixed(2)} / ${r.steal.changes.toFixed(2)}`,
      '',
    ),
    row('RSS after the sync (MiB)', (r) => String(r.rss.afterSync), '< 100'),
    row(`RSS every 100 of ${o.changes} changes (MiB)`, (r) => r.rss.samples.join(', '), 'not growing'),
    row('RSS peak / after the last change (MiB)', (r) => `${r.rss.peak} / ${r.rss.end}`, '< 100'),
  ].join('\n');
}

let STORE: Store;

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  STORE = new Store();
  for (let i = 0; i < o.namespaces; i++) STORE.create('namespaces', nsOf(i));
  for (let i = 0; i < o.pods; i++) UIDS[i] = STORE.create('pods', podOf(o, i)).metadata.uid;
  const started = new Date().toISOString();
  const command = process.env.BENCH_COMMAND ?? `node dist/bench/scale.js ${process.argv.slice(2).join(' ')}`;
  log(`building ${o.onNode} sandbox pods`);
  const sb = await Sandbox.create({ prefix: 'mlsc', cgroupDriver: 'systemd' });
  const cleanup = (): void => {
    try {
      uninstall(BPFFS);
    } catch {
      /* best effort */
    }
  };
  process.once('exit', cleanup);
  const results: SourceResult[] = [];
  try {
    const nodeIdx: number[] = [];
    for (let i = 0; i < o.pods; i++) if (onNode(o, i)) nodeIdx.push(i);
    for (let k = 0; k < nodeIdx.length; k += 10) {
      await Promise.all(
        nodeIdx
          .slice(k, k + 10)
          .map((i) => sb.addPod({ namespace: `ns-${i % o.namespaces}`, name: `app-${i}-7d9f8c6b5-x2k4p`, uid: uidOf(i), ipv4: ipOf(o, i) })),
      );
    }
    log(`${nodeIdx.length} sandbox pods up`);
    if (o.listening) {
      // one small proxy stand-in per pod, as the sidecar's uid, in its own container's cgroup
      const ready = sb.listPods().map(
        (pod) =>
          new Promise<void>((resolve, reject) => {
            const child = pod.spawn(PYTHON, ['-c', LISTENER], { uid: PROXY_UID, container: 'istio-proxy', stdio: ['ignore', 'pipe', 'inherit'] });
            child.once('error', reject);
            child.once('exit', (code) => reject(new Error(`the proxy stand-in in ${pod.name} exited (${code})`)));
            child.stdout!.once('data', () => resolve());
          }),
      );
      await Promise.all(ready);
      log(`${ready.length} proxies listening on 15001 and 15006`);
    }
    for (const s of o.sources) results.push(await runSource(o, s, sb.cgroupRoot, nodeIdx));
  } finally {
    await sb.destroy();
  }
  const md = markdown(o, results, command, started);
  console.log(md);
  if (o.markdown) writeFileSync(o.markdown, md + '\n');
  if (o.json) writeFileSync(o.json, JSON.stringify({ started, command, options: o, results }, null, 2));
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
