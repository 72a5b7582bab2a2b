import { Command, Option } from 'commander';
import { Agent } from '../../agent/agent.js';
import { chooseSource, sourceFromOptions } from '../../sources/select.js';
import { cgroup2Mount } from '../../util/cgroup.js';
import { makeLogger } from '../../util/log.js';
import { bpffsOption, requireRoot, stateDirOption } from '../options.js';

interface AgentFlags {
  clusterFile?: string;
  kubeconfig?: string;
  cgroupRoot?: string;
  bpffs: string;
  stateDir: string;
  nodeName?: string;
  logLevel: string;
  splice?: boolean;
  testBpfObjects?: string;
}

export function agentCommand(): Command {
  return new Command('agent')
    .description('run the node agent: keep the BPF maps in line with the pods of this node')
    .option('--cluster-file <file>', 'follow a Kubernetes List (YAML or JSON) of Namespaces and Pods as it changes')
    .option('--kubeconfig <file>', 'follow the Kubernetes API with this kubeconfig (from outside the cluster)')
    .addHelpText(
      'after',
      '\nSource of pods: exactly one of --cluster-file FILE or --kubeconfig FILE, or neither in a pod: then the\n' +
        'in-cluster service account is used (KUBERNETES_SERVICE_HOST set). The Kubernetes API needs --node-name or NODE_NAME.',
    )
    .option('--cgroup-root <dir>', 'cgroup v2 directory to attach to (default: the cgroup2 mount)')
    .addOption(bpffsOption())
    .addOption(stateDirOption())
    .option('--node-name <name>', "this node: only pods with this spec.nodeName (default: $NODE_NAME; required with the Kubernetes API; a cluster file without it: all its pods)")
    .option('--splice', 'splice same-node connections of captured pods socket to socket (sk_msg); off by default: see README, Same-node splicing')
    .option('--no-splice', 'do not splice (the default): same-node connections go through TCP/IP')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    // TEST ONLY, hidden from --help: load the BPF objects from another directory, so a kernel test can
    // make a start fail in the verifier after other objects loaded (test/kernel/cli-errors.test.ts)
    .addOption(new Option('--test-bpf-objects <dir>', 'test only: load the BPF objects from <dir>').hideHelp())
    .action(async (o: AgentFlags) => {
      // the source's flags and configuration first: a wrong one is a one-line error whoever runs it
      const choice = chooseSource(o, process.env);
      const log = makeLogger(o.logLevel);
      const source = await sourceFromOptions(o, process.env, { log });
      requireRoot('meshlane agent');
      const agent = new Agent({
        source,
        cgroupRoot: o.cgroupRoot ?? cgroup2Mount(),
        bpffs: o.bpffs,
        stateDir: o.stateDir,
        nodeName: choice.nodeName,
        splice: o.splice,
        objDir: o.testBpfObjects,
        log,
      });
      // a start that fails has stopped its source and timers and removed what it pinned; the error
      // goes up to main(), which prints its one line and exits 2
      await agent.start();
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          log.info({ signal: sig }, 'stopping; capture stays in place (pinned)');
          void agent.stop().then(resolve);
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
    });
}
