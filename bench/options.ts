// The benchmark's command line: the modes it can measure, its options and their defaults, the help text.
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { packageRoot } from '../src/util/paths.js';

/** `meshlane` is the agent as it runs by default (splicing on, bounded, where the kernel allows it);
 * `meshlane-nosplice` the same with --no-splice. */
export const MODES = ['none', 'iptables', 'meshlane', 'meshlane-nosplice'] as const;
/** Not in the default run: meshlane with the agent stopped once capture is set up (programs and maps stay
 * pinned), to tell the cost of the data path from the CPU the agent process takes; the agent with a
 * splice budget nothing reaches (--splice-budget 1GiB: splicing as it was before the bound); and
 * meshlane-base, the meshlane mode run with another build (--base DIR), to measure a change side by side
 * with its base. */
export const EXTRA_MODES = ['meshlane-pinned', 'meshlane-nosplice-pinned', 'meshlane-unbounded', 'meshlane-base'] as const;
export type Mode = (typeof MODES)[number] | (typeof EXTRA_MODES)[number];
const ALL_MODES: readonly string[] = [...MODES, ...EXTRA_MODES];

export const HELP = `usage: node dist/bench/bench.js [options]   (or: bash bench/run.sh [options])
  --quick              one round, 2 s per figure, concurrency 16 only (about a minute)
  --rounds N           interleaved rounds per mode (default 3)
  --duration S         seconds per measurement (default 3)
  --conc LIST          keep-alive concurrency levels (default 1,16,64)
  --cps-conc N         connections in flight for the new-connections figures (default 16)
  --quiet-wait S       before each mode's slot, wait up to S seconds for other load on the machine to
                       stop (default 30; 0 = do not wait)
  --modes LIST         which of ${ALL_MODES.join(',')}
                       (default: ${MODES.join(',')}; meshlane is the default agent, the -pinned ones stop
                       the agent once capture is set up, -unbounded has a splice budget nothing reaches,
                       meshlane-base is the meshlane mode with the build given by --base)
  --meshlane DIR       benchmark the meshlane build in DIR (a built checkout; default: this tree)
  --base DIR           the build meshlane-base runs (a built checkout, e.g. the export of --base-commit)
  --json FILE          also write every raw measurement as JSON
  --markdown FILE      also write the result tables as Markdown
  --help`;

export interface Options {
  rounds: number;
  duration: number;
  conc: number[];
  cpsConc: number;
  quietWait: number;
  modes: Mode[];
  json?: string;
  markdown?: string;
  quick: boolean;
  /** the `meshlane` CLI (dist/src/cli/main.js) to run */
  cli: string;
  /** the CLI of the build the meshlane-base mode runs */
  baseCli?: string;
}

/** A malformed command line: main prints `bench: <message>` and exits 2. */
export class UsageError extends Error {}

/** The `meshlane` CLI of a built checkout. */
const cliOf = (root: string): string => join(root, 'dist', 'src', 'cli', 'main.js');

/** The options, or 'help' for --help. Throws UsageError on a value out of range or an unknown mode. */
export function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      conc: { type: 'string' },
      'cps-conc': { type: 'string' },
      'quiet-wait': { type: 'string' },
      modes: { type: 'string' },
      json: { type: 'string' },
      meshlane: { type: 'string' },
      base: { type: 'string' },
      markdown: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) return 'help';
  const int = (s: string | undefined, def: number, what: string, min = 1, max = 1000): number => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${what} must be an integer in ${min}..${max}`);
    return n;
  };
  const quick = values.quick === true;
  const conc = (values.conc ?? (quick ? '16' : '1,16,64')).split(',').map((c) => int(c, 0, 'conc', 1, 1000));
  const modes = (values.modes ?? MODES.join(',')).split(',').map((m) => {
    if (!ALL_MODES.includes(m)) throw new UsageError(`--modes: unknown mode '${m}' (${ALL_MODES.join(', ')})`);
    return m as Mode;
  });
  if (modes.includes('meshlane-base') !== (values.base !== undefined)) throw new UsageError('--modes meshlane-base and --base DIR go together');
  return {
    quick,
    rounds: int(values.rounds, quick ? 1 : 3, 'rounds', 1, 20),
    duration: int(values.duration, quick ? 2 : 3, 'duration', 1, 60),
    conc,
    cpsConc: int(values['cps-conc'], 16, 'cps-conc', 1, 1000),
    quietWait: int(values['quiet-wait'], quick ? 10 : 30, 'quiet-wait', 0, 600),
    modes,
    json: values.json,
    markdown: values.markdown,
    cli: cliOf(values.meshlane ?? packageRoot()),
    ...(values.base === undefined ? {} : { baseCli: cliOf(values.base) }),
  };
}
