import { Command } from 'commander';
import { listPins } from '../../dataplane/dataplane.js';
import { readStatus } from '../../agent/status.js';
import { dataplaneFacts, renderStatus } from '../../inspect/status.js';
import { bpffsOption, jsonOption, stateDirOption, toJson } from '../options.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function statusCommand(): Command {
  return new Command('status')
    .description('captured pods with their settings and errors, as the agent last saw them')
    .addOption(bpffsOption())
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action((o: { bpffs: string; stateDir: string; json?: boolean }) => {
      const st = readStatus(o.stateDir);
      const pins = listPins(o.bpffs);
      const running = st ? alive(st.pid) : false;
      const dp = dataplaneFacts(o.bpffs, pins.maps.length > 0);
      if (o.json) {
        process.stdout.write(toJson({ agentRunning: running, pins, dataplane: dp ?? null, status: st ?? null }) + '\n');
        return;
      }
      process.stdout.write(renderStatus({ bpffs: o.bpffs, stateDir: o.stateDir, links: pins.links, dataplane: dp, status: st, agentRunning: running }));
    });
}
