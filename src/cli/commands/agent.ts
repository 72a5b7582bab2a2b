import { Command, Option } from 'commander';
import { Agent } from '../../agent/agent.js';
import { chooseSource, sourceFromOptions } from '../../sources/select.js';
import { cgroup2Mount } from '../../util/cgroup.js';
import { UserError } from '../../util/errors.js';
import { makeLogger } from '../../util/log.js';
import { formatSize, parseSpliceBudget, SPLICE_BUDGET_DEFAULT } from '../../dataplane/splice.js';
import { bpffsOption, requireRoot, stateDirOption } from '../options.js';
import { DEFAULT_PER_POD, MAX_PER_POD } from '../../dataplane/handover.js';
import { DEFAULT_LIMITS, LIMIT_RANGE, handoverBounds, parseLimit, type NodeLimits } from '../../dataplane/capacity.js';

/** --max-pods, --max-connections: a whole number in its range (capacity.ts), else a one-line error. */
const limitFlag =
  (which: keyof NodeLimits) =>
  (v: string): number => {
    const n = parseLimit(which, v);
    if (typeof n === 'string') throw new UserError(n);
    return n;
  };

/** --max-inflight-per-pod: an integer in 1..what --max-connections allows, else a one-line error. */
export function inflightLimit(v: string, maxConnections: number = DEFAULT_LIMITS.maxConnections): number {
  const n = Number(v);
  const { maxPerPod, defaultPerPod } = handoverBounds(maxConnections);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > maxPerPod) {
    const cap = maxConnections === DEFAULT_LIMITS.maxConnections ? '' : ` with --max-connections ${maxConnections}`;
    throw new UserError(`--max-inflight-per-pod '${v}' is not a whole number in 1..${maxPerPod}${cap}: pass e.g. --max-inflight-per-pod ${defaultPerPod}`);
  }
  return n;
}
import { DEFAULT_CNI_SOCKET } from '../../cni/protocol.js';
import { DEFAULT_METRICS_ADDRESS, metricsFromFlag, serveAgent } from '../../metrics/server.js';

interface AgentFlags {
  clusterFile?: string;
  kubeconfig?: string;
  cgroupRoot?: string;
  bpffs: string;
  stateDir: string;
  nodeName?: string;
  logLevel: string;
  splice?: boolean;
  spliceBudget?: string;
  maxInflightPerPod?: string;
  maxPods: number;
  maxConnections: number;
  testBpfObjects?: string;
  cniSocket: string;
  cniPodWait: string;
  metricsAddress: string;
}

/** --cni-pod-wait: whole seconds, below the plugin's own 30 s (its default "timeoutSeconds") less our margin */
const MAX_CNI_POD_WAIT_S = 20;
function cniPodWaitMs(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > MAX_CNI_POD_WAIT_S) {
    throw new UserError(`--cni-pod-wait ${v} is not a whole number of seconds from 1 to ${MAX_CNI_POD_WAIT_S}: pass e.g. --cni-pod-wait 10`);
  }
  return Number(v) * 1000;
}

export function agentCommand(): Command {
  return (
    new Command('agent')
      .description('run the node agent: keep the BPF maps in line with the pods of this node')
      .option('--cluster-file <file>', 'follow a Kubernetes List (YAML or JSON) of Namespaces and Pods as it changes')
      .option('--kubeconfig <file>', 'follow the Kubernetes API with this kubeconfig (from outside the cluster)')
      .addHelpText(
        'after',
        '\nSource of pods: exactly one of --cluster-file FILE or --kubeconfig FILE, or neither in a pod: then the\n' +
          'in-cluster service account is used (KUBERNETES_SERVICE_HOST set). The Kubernetes API needs --node-name or NODE_NAME.\n' +
          '\nCNI: the agent serves meshlane-cni (installed by `meshlane cni install`) on --cni-socket. On ADD it waits up to\n' +
          '--cni-pod-wait for the pod to show, enrolls its netns before any container runs and only then lets the pod start;\n' +
          'a captured pod it cannot enroll, or does not know, does not start (fail closed). Pods started without the plugin\n' +
          'are found through the cgroup tree; `meshlane status` says which way each pod came in (via=cni / via=cgroup-tree).',
      )
      .option('--cgroup-root <dir>', 'cgroup v2 directory to attach to (default: the cgroup2 mount)')
      .addOption(bpffsOption())
      .addOption(stateDirOption())
      .option(
        '--node-name <name>',
        'this node: only pods with this spec.nodeName (default: $NODE_NAME; required with the Kubernetes API; a cluster file without it: all its pods)',
      )
      .option(
        '--splice',
        'splice same-node connections of captured pods socket to socket (sk_msg), and fail where this kernel cannot bound the backlog (default: on where it can; see README, Same-node splicing)',
      )
      .option('--no-splice', 'do not splice: same-node connections go through TCP/IP')
      .option(
        '--splice-budget <size>',
        `bytes a spliced direction may leave unread on its receiver before that connection goes through TCP (1MiB to 1GiB; default ${formatSize(SPLICE_BUDGET_DEFAULT).replace(' ', '')})`,
      )
      .option(
        '--max-inflight-per-pod <n>',
        `connections one pod may hold between connect() and its proxy's accept; more are refused (EPERM), so one pod whose proxy stops accepting cannot use up the node's hand-over map (1..${MAX_PER_POD} at the default --max-connections; default: a 16th of --max-connections, ${DEFAULT_PER_POD})`,
      )
      .addOption(
        new Option(
          '--max-pods <n>',
          `captured pods this node can hold: sizes the per-pod maps (README, Map capacity); a pod beyond it is not enrolled (its CNI ADD fails) (${LIMIT_RANGE.maxPods.join('..')})`,
        )
          .argParser(limitFlag('maxPods'))
          .default(DEFAULT_LIMITS.maxPods),
      )
      .addOption(
        new Option(
          '--max-connections <n>',
          `connections node-wide between connect() and the proxy's accept: sizes the hand-over and splice maps; more are refused (EPERM), never passed uncaptured (${LIMIT_RANGE.maxConnections.join('..')})`,
        )
          .argParser(limitFlag('maxConnections'))
          .default(DEFAULT_LIMITS.maxConnections),
      )
      .option('--cni-socket <path>', 'serve the meshlane-cni plugin on this unix socket (root only, 0600; its directory is made 0755)', DEFAULT_CNI_SOCKET)
      .option('--cni-pod-wait <seconds>', `how long a CNI ADD waits for the pod to show in the source before it fails (1-${MAX_CNI_POD_WAIT_S})`, '10')
      .option(
        '--metrics-address <host:port>',
        "serve /metrics, /healthz and /readyz on this address ([v6]:port for IPv6); 'off': none",
        DEFAULT_METRICS_ADDRESS,
      )
      .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
      // TEST ONLY, hidden from --help: load the BPF objects from another directory, so a kernel test can
      // make a start fail in the verifier after other objects loaded (test/kernel/cli-errors.test.ts)
      .addOption(new Option('--test-bpf-objects <dir>', 'test only: load the BPF objects from <dir>').hideHelp())
      .action(async (o: AgentFlags) => {
        // the source's flags and configuration first: a wrong one is a one-line error whoever runs it
        const choice = chooseSource(o, process.env);
        const spliceBudget = o.spliceBudget === undefined ? undefined : parseSpliceBudget(o.spliceBudget);
        const podWait = cniPodWaitMs(o.cniPodWait);
        const maxInflightPerPod = o.maxInflightPerPod === undefined ? undefined : inflightLimit(o.maxInflightPerPod, o.maxConnections);
        const log = makeLogger(o.logLevel);
        const source = await sourceFromOptions(o, process.env, { log });
        const metrics = metricsFromFlag(o.metricsAddress);
        requireRoot('meshlane agent');
        const agent = new Agent({
          source,
          cgroupRoot: o.cgroupRoot ?? cgroup2Mount(),
          bpffs: o.bpffs,
          stateDir: o.stateDir,
          nodeName: choice.nodeName,
          splice: o.splice,
          spliceBudget,
          maxInflightPerPod,
          limits: { maxPods: o.maxPods, maxConnections: o.maxConnections },
          objDir: o.testBpfObjects,
          cniSocket: o.cniSocket,
          cniPodWaitMs: podWait,
          log,
          metrics: metrics?.metrics,
        });
        // listening first: a port in use fails before anything is loaded, and /readyz says 503 while starting
        const server = await serveAgent(metrics, agent, log);
        // SIGTERM / SIGINT from here on, also while starting: a stop during the start ends it (nothing new
        // stays pinned) and the process exits 0, as after a start; capture already pinned stays in place
        let stopping: Promise<void> | undefined;
        const stopped = new Promise<void>((resolve) => {
          const stop = (sig: string): void => {
            if (stopping) return;
            log.info({ signal: sig }, 'stopping; capture stays in place (pinned)');
            stopping = agent
              .stop()
              .then(() => server?.close())
              .then(resolve);
          };
          process.once('SIGINT', () => stop('SIGINT'));
          process.once('SIGTERM', () => stop('SIGTERM'));
        });
        // a start that fails has stopped its source and timers and removed what it pinned; the error
        // goes up to main(), which prints its one line and exits 2
        try {
          await agent.start();
        } catch (e) {
          if (stopping) return stopping;
          await server?.close();
          throw e;
        }
        server?.announce(log);
        await stopped;
      })
  );
}
