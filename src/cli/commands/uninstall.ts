import { Command } from 'commander';
import { uninstall } from '../../dataplane/dataplane.js';
import { bpffsOption, requireRoot } from '../options.js';
import { cniBinDirOption, cniConfDirOption, uninstallLines } from './cni.js';
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, cniUninstall } from '../../cni/install.js';

export function uninstallCommand(): Command {
  return new Command('uninstall')
    .description('detach every program and remove every pin meshlane made (capture stops); with a --cni-* flag also meshlane-cni')
    .addOption(bpffsOption())
    .addOption(cniBinDirOption(false))
    .addOption(cniConfDirOption(false))
    .action((o: { bpffs: string; cniBinDir?: string; cniConfDir?: string }) => {
      requireRoot('meshlane uninstall');
      if (o.cniBinDir !== undefined || o.cniConfDir !== undefined) {
        // the CNI plugin first: new pods stop calling an agent that is going away
        const binDir = o.cniBinDir ?? DEFAULT_CNI_BIN_DIR;
        const confDir = o.cniConfDir ?? DEFAULT_CNI_CONF_DIR;
        process.stdout.write(uninstallLines(cniUninstall({ binDir, confDir }), binDir, confDir).join('\n') + '\n');
      }
      const removed = uninstall(o.bpffs);
      process.stdout.write(removed.length ? `removed ${removed.length} pins under ${o.bpffs}:\n${removed.map((r) => `  ${r}\n`).join('')}` : `nothing pinned under ${o.bpffs}\n`);
    });
}
