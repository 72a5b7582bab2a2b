#!/usr/bin/env node
// meshlane's command line. Errors a user can cause print one line and exit 2; bugs keep their stack.
import { Command, CommanderError } from 'commander';
import { UserError } from '../util/errors.js';
import { agentCommand } from './commands/agent.js';
import { dumpCommand } from './commands/dump.js';
import { statusCommand } from './commands/status.js';
import { uninstallCommand } from './commands/uninstall.js';
import { demoCommand } from './commands/demo.js';
import { cniCommand } from './commands/cni.js';

export function program(): Command {
  const p = new Command('meshlane')
    .description('eBPF traffic capture for Istio sidecars: the istio-iptables decisions, without iptables')
    .version('0.1.0')
    .exitOverride()
    // commander's usage errors become one `meshlane: ...` line like every other user error
    .configureOutput({ outputError: (msg, write) => write(`meshlane: ${msg.replace(/^error: /, '').trim()} (see --help)\n`) });
  for (const c of [agentCommand(), dumpCommand(), statusCommand(), demoCommand(), uninstallCommand(), cniCommand()]) p.addCommand(c.copyInheritedSettings(p));
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof UserError) {
      process.stderr.write(`meshlane: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
      if (process.env.MESHLANE_DEBUG && e.cause) process.stderr.write(`cause: ${(e.cause as Error).stack ?? String(e.cause)}\n`);
      return 2;
    }
    throw e;
  }
}

// A failure exits at once with its status: whatever a failed command left scheduled (a watcher, a
// timer) must not keep the process running (a DaemonSet pod would sit in Running with no capture).
// Success ends when the event loop is empty, as commands that stream output expect. stderr and
// stdout are synchronous for files and pipes on Linux, so nothing written is lost.
main(process.argv).then(
  (code) => {
    if (code !== 0) process.exit(code);
    process.exitCode = 0;
  },
  (e: unknown) => {
    process.stderr.write(`meshlane: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
