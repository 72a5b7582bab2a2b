import { Command } from 'commander';
import { removePins, type UninstallReport } from '../../dataplane/dataplane.js';
import { bpffsOption, requireRoot } from '../options.js';
import { cniBinDirOption, cniConfDirOption, uninstallLines } from './cni.js';
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, cniUninstall } from '../../cni/install.js';

/** What `meshlane uninstall` prints about the pins: what went, and what it left alone and why. */
export function pinLines(r: UninstallReport, bpffs: string): string[] {
  const out: string[] = [];
  if (r.absent) return [`nothing pinned under ${bpffs}`];
  if (!r.meshlane && r.removed.length === 0) out.push(`nothing of meshlane under ${bpffs} (no maps/ or links/ there): left it as it is`);
  else if (r.removed.length === 0) out.push(`nothing pinned under ${bpffs}`);
  else out.push(`removed ${r.removed.length} pins under ${bpffs}:`, ...r.removed.map((p) => `  ${p}`));
  if (r.kept.length) out.push(`left alone under ${bpffs} (not pins meshlane made):`, ...r.kept.map((k) => `  ${k.rel} ${k.why}`));
  return out;
}

export function uninstallCommand(): Command {
  return new Command('uninstall')
    .description('detach every program and remove every pin meshlane made (capture stops), nothing else; with a --cni-* flag also meshlane-cni')
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
      process.stdout.write(pinLines(removePins(o.bpffs), o.bpffs).join('\n') + '\n');
    });
}
