import { Command, Option } from 'commander';
import { Agent } from '../../agent/agent.js';
import { cgroup2Mount } from '../../util/cgroup.js';
import { makeLogger } from '../../util/log.js';
import { bpffsOption, requireRoot, stateDirOption } from '../options.js';

export function agentCommand(): Command {
  return new Command('agent')
    .description('run the node agent: keep the BPF maps in line with the pods of this node')
    .requiredOption('--cluster-file <file>', 'a Kubernetes List (YAML or JSON) of Namespaces and Pods, followed as it changes')
    .option('--cgroup-root <dir>', 'cgroup v2 directory to attach to (default: the cgroup2 mount)')
    .addOption(bpffsOption())
    .addOption(stateDirOption())
    .option('--node-name <name>', 'only pods with this spec.nodeName (default: all pods in the file)')
    .option('--splice', 'splice same-node connections of captured pods socket to socket (sk_msg); off by default: see README, Same-node splicing')
    .option('--no-splice', 'do not splice (the default): same-node connections go through TCP/IP')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    // TEST ONLY, hidden from --help: load the BPF objects from another directory, so a kernel test can
    // make a start fail in the verifier after other objects loaded (test/kernel/cli-errors.test.ts)
    .addOption(new Option('--test-bpf-objects <dir>', 'test only: load the BPF objects from <dir>').hideHelp())
    .action(async (o: { clusterFile: string; cgroupRoot?: string; bpffs: string; stateDir: string; nodeName?: string; logLevel: string; splice?: boolean; testBpfObjects?: string }) => {
      requireRoot('meshlane agent');
      const log = makeLogger(o.logLevel);
      const agent = new Agent({
        clusterFile: o.clusterFile,
        cgroupRoot: o.cgroupRoot ?? cgroup2Mount(),
        bpffs: o.bpffs,
        stateDir: o.stateDir,
        nodeName: o.nodeName,
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
