import { Command } from 'commander';
import { uninstall } from '../../dataplane/dataplane.js';
import { bpffsOption, requireRoot } from '../options.js';

export function uninstallCommand(): Command {
  return new Command('uninstall')
    .description('detach every program and remove every pin meshlane made (capture stops)')
    .addOption(bpffsOption())
    .action((o: { bpffs: string }) => {
      requireRoot('meshlane uninstall');
      const removed = uninstall(o.bpffs);
      process.stdout.write(removed.length ? `removed ${removed.length} pins under ${o.bpffs}:\n${removed.map((r) => `  ${r}\n`).join('')}` : `nothing pinned under ${o.bpffs}\n`);
    });
}
