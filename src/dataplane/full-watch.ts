// What the programs could not insert because a map was full (README, Map capacity): the kernel counts it
// (stats: splice_table_full, listeners_full) and the agent logs it once a second at most, rate-limited
// (never a line per socket), as the hand-over watch does for orig_by_tuple (handover.ts).
import { Stat } from './layouts.js';
import type { MapsView } from './dataplane.js';
import type { Logger } from '../util/log.js';

/** The counters of inserts the programs made into a full map, what each map is, and what it costs. */
export const KERNEL_FULL = [
  {
    stat: 'splice_table_full',
    map: 'sock_pairs',
    option: '--max-connections',
    cost: 'sockets not spliced: those connections go through TCP/IP, captured as ever',
  },
  {
    stat: 'listeners_full',
    map: 'listeners',
    option: '--max-pods',
    cost: 'proxy listeners not registered: inbound connections to them are dropped, never delivered around the proxy',
  },
] as const satisfies ReadonlyArray<{ stat: (typeof Stat)[number]; map: string; option: string; cost: string }>;

/** a counter that goes on moving is logged again at most this often (with the number since) */
export const FULL_LOG_EVERY_MS = 30_000;

export class KernelFullWatch {
  private readonly logged = new Map<string, { count: number; at: number }>();

  constructor(private readonly log: Logger) {}

  /** Read the counters and log what moved; never throws (an unreadable counter is skipped). */
  poll(stats: Pick<MapsView['stats'], 'get'>, now = Date.now()): void {
    for (const k of KERNEL_FULL) {
      let n: number;
      try {
        n = Number(stats.get(Stat.indexOf(k.stat)) ?? 0n);
      } catch {
        continue;
      }
      const b = this.logged.get(k.stat) ?? { count: 0, at: -Infinity };
      if (n <= b.count || now - b.at < FULL_LOG_EVERY_MS) continue;
      this.log.warn({ map: k.map, [k.stat]: n, since: n - b.count }, `map ${k.map} is full (sized by ${k.option}; README, Map capacity): ${k.cost}`);
      this.logged.set(k.stat, { count: n, at: now });
    }
  }
}
