import { Command } from 'commander';
import { requireRoot } from '../options.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description("capture a sandbox pod's traffic into its proxy, show what happened, clean up (no cluster needed)")
    .option('--keep', 'keep the temp dir (cluster file, agent status) besides the agent log')
    .action(async (o: { keep?: boolean }) => {
      requireRoot('meshlane demo');
      const { runDemo } = await import('../../demo/demo.js');
      await runDemo({ keep: o.keep === true });
    });
}
