// Options shared by every command that touches the pins, so each takes them the same way.
import { Option } from 'commander';
import { DEFAULT_BPFFS } from '../util/paths.js';
import { DEFAULT_STATE_DIR } from '../agent/status.js';
import { UserError } from '../util/errors.js';

export const bpffsOption = (): Option => new Option('--bpffs <dir>', "bpffs directory for meshlane's pinned maps and links").default(DEFAULT_BPFFS);
export const stateDirOption = (): Option => new Option('--state-dir <dir>', 'where the agent publishes status.json').default(DEFAULT_STATE_DIR);
export const jsonOption = (): Option => new Option('--json', 'machine-readable output');

export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UserError(`${what} needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo or in a privileged container`);
  }
}

/** JSON with bigints as strings. */
export const toJson = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
