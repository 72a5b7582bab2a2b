import { Command, Option } from 'commander';
import {
  CniConfigWatcher,
  DEFAULT_CNI_BIN_DIR,
  DEFAULT_CNI_CONF_DIR,
  cniInstall,
  cniUninstall,
  type CniInstallReport,
  type CniUninstallReport,
} from '../../cni/install.js';
import { DEFAULT_CNI_SOCKET } from '../../cni/protocol.js';
import { makeLogger } from '../../util/log.js';

// The CNI options, shared with `meshlane uninstall` and (for --cni-socket) the agent.
export const cniSocketOption = (): Option =>
  new Option('--cni-socket <path>', 'unix socket where the agent serves meshlane-cni (only root can open it)').default(DEFAULT_CNI_SOCKET);
export const cniBinDirOption = (dflt = true): Option => {
  const o = new Option('--cni-bin-dir <dir>', `CNI plugin executables directory${dflt ? '' : ` (default ${DEFAULT_CNI_BIN_DIR})`}`);
  return dflt ? o.default(DEFAULT_CNI_BIN_DIR) : o;
};
export const cniConfDirOption = (dflt = true): Option => {
  const o = new Option('--cni-conf-dir <dir>', `CNI network config directory${dflt ? '' : ` (default ${DEFAULT_CNI_CONF_DIR})`}`);
  return dflt ? o.default(DEFAULT_CNI_CONF_DIR) : o;
};

export function installLines(r: CniInstallReport, socket: string): string[] {
  return [
    r.binaryChanged ? `installed ${r.binary}` : `${r.binary} is up to date`,
    r.config.convertedFrom ? `converted ${r.config.convertedFrom} into ${r.config.file}` : '',
    r.config.changed ? `inserted meshlane-cni (socket ${socket}) into ${r.config.file}` : `${r.config.file} already chains meshlane-cni (socket ${socket})`,
  ].filter(Boolean);
}

export function uninstallLines(r: CniUninstallReport, binDir: string, confDir: string): string[] {
  return [
    ...(r.configs.length ? r.configs.map((f) => `removed meshlane-cni from ${f}`) : [`no config in ${confDir} chains meshlane-cni`]),
    r.binaryRemoved ? `removed ${binDir}/meshlane-cni` : `no meshlane-cni in ${binDir}`,
  ];
}

interface InstallOpts {
  cniBinDir: string;
  cniConfDir: string;
  cniSocket: string;
  watch?: boolean;
  logLevel: string;
}

/** A command with subcommands: main.ts's output and exit settings reach the subcommands too. */
class CommandGroup extends Command {
  override copyInheritedSettings(source: Command): this {
    super.copyInheritedSettings(source);
    for (const c of this.commands) c.copyInheritedSettings(this);
    return this;
  }
}

export function cniCommand(): Command {
  const cni = new CommandGroup('cni').description('install or remove meshlane-cni, the chained CNI plugin that enrolls pods before they start');
  cni
    .command('install')
    .description('copy meshlane-cni into the CNI bin directory and chain it in the primary network config')
    .addOption(cniBinDirOption())
    .addOption(cniConfDirOption())
    .addOption(cniSocketOption())
    .option('--watch', 'keep running: insert it again whenever the primary CNI rewrites its config (waits for one to appear)')
    .addOption(new Option('--log-level <level>', 'log level (--watch)').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action(async (o: InstallOpts) => {
      const opts = { binDir: o.cniBinDir, confDir: o.cniConfDir, socket: o.cniSocket };
      if (!o.watch) {
        process.stdout.write(installLines(cniInstall(opts), o.cniSocket).join('\n') + '\n');
        return;
      }
      const log = makeLogger(o.logLevel);
      const w = new CniConfigWatcher({ ...opts, log });
      w.start();
      log.info({ confDir: o.cniConfDir, binDir: o.cniBinDir }, 'cni: watching the CNI config');
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          w.stop();
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
  cni
    .command('uninstall')
    .description('take meshlane-cni out of every network config in the conf directory, and remove the executable')
    .addOption(cniBinDirOption())
    .addOption(cniConfDirOption())
    .action((o: { cniBinDir: string; cniConfDir: string }) => {
      const r = cniUninstall({ binDir: o.cniBinDir, confDir: o.cniConfDir });
      process.stdout.write(uninstallLines(r, o.cniBinDir, o.cniConfDir).join('\n') + '\n');
    });
  return cni;
}
