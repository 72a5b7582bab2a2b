// Load / remove the oracle's istio-iptables rules in a test network namespace (`ip netns exec NS ...`).
// Only for namespaces the test itself created.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

import type { IstioRules } from './istio-iptables.js';

const execFileP = promisify(execFile);

export interface ApplyOptions {
  /** use iptables-legacy instead of the default (nft) backend */
  legacy?: boolean;
  /**
   * istio-iptables adds ::6/128 to lo when it writes IPv6 rules (configureIPv6Addresses), so the proxy can
   * bind ::6 for its inbound passthrough connections. Default true when rules.v6 is non-empty.
   */
  addIPv6PassthroughAddress?: boolean;
}

function bins(legacy: boolean | undefined): { v4: string; v6: string; v4restore: string; v6restore: string } {
  return legacy
    ? { v4: 'iptables-legacy', v6: 'ip6tables-legacy', v4restore: 'iptables-legacy-restore', v6restore: 'ip6tables-legacy-restore' }
    : { v4: 'iptables', v6: 'ip6tables', v4restore: 'iptables-restore', v6restore: 'ip6tables-restore' };
}

/** Runs `ip netns exec <netns> <cmd...>` with `input` on stdin; rejects with stderr on failure. */
function runWithInput(netns: string, cmd: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, ...cmd], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`ip netns exec ${netns} ${cmd.join(' ')} failed (${code ?? signal}): ${stderr.trim()}`));
    });
    child.stdin.on('error', () => {
      /* reported via close */
    });
    child.stdin.end(input);
  });
}

async function run(netns: string, cmd: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP('ip', ['netns', 'exec', netns, ...cmd]);
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ip netns exec ${netns} ${cmd.join(' ')} failed: ${(err.stderr ?? err.message).trim()}`);
  }
}

/**
 * Loads both families with `iptables-restore --noflush` / `ip6tables-restore --noflush`, as istio-iptables
 * does (so calling it twice appends twice: call flushIstioRules first to reload). Empty halves are skipped.
 */
export async function applyIstioRules(netns: string, rules: IstioRules, opts: ApplyOptions = {}): Promise<void> {
  const b = bins(opts.legacy);
  if (rules.v4.trim() !== '') await runWithInput(netns, [b.v4restore, '--noflush'], rules.v4);
  if (rules.v6.trim() !== '') {
    if (opts.addIPv6PassthroughAddress ?? true) {
      try {
        await run(netns, ['ip', '-6', 'addr', 'add', '::6/128', 'dev', 'lo']);
      } catch (e) {
        if (!/File exists/i.test((e as Error).message)) throw e;
      }
    }
    await runWithInput(netns, [b.v6restore, '--noflush'], rules.v6);
  }
}

/**
 * Flushes the nat table (all chains, then deletes the user chains) and the raw table's rules (DNS
 * conntrack zones) for both families in that netns. Runs every step and reports all failures at the end.
 */
export async function flushIstioRules(netns: string, opts: Pick<ApplyOptions, 'legacy'> = {}): Promise<void> {
  const b = bins(opts.legacy);
  const errors: string[] = [];
  for (const bin of [b.v4, b.v6]) {
    for (const args of [
      ['-t', 'nat', '-F'],
      ['-t', 'nat', '-X'],
      ['-t', 'raw', '-F'],
    ]) {
      try {
        await run(netns, [bin, ...args]);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  }
  if (errors.length > 0) throw new Error(errors.join('\n'));
}

/** `iptables-save -t <table>` (or ip6tables-save) inside the netns. */
export async function saveTable(netns: string, family: 4 | 6, table = 'nat', opts: Pick<ApplyOptions, 'legacy'> = {}): Promise<string> {
  const b = bins(opts.legacy);
  const save = `${family === 4 ? b.v4 : b.v6}-save`;
  return run(netns, [save, '-t', table]);
}
