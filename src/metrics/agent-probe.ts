// What a scrape reads from the running agent (the MetricsProbe of metrics.ts), over its parts: the
// dataplane's maps (absent until loaded), the pipeline, the source. Nothing here writes or waits.
//
// Map entries: the maps the pipeline writes are counted from its mirror (no syscall); the maps the
// kernel writes (orig_by_tuple, listeners, sock_pairs, ...) by a walk of their keys, which is a syscall
// per entry (sock_pairs at its capacity, 131,072 entries, takes ~0.1 s): done at most once per
// KERNEL_COUNT_INTERVAL_MS, the scrapes in between get the last count. The walk is bounded by the
// addon (a map that churns under it ends the walk with an error: that map is left out of the scrape).
import type { Dataplane } from '../dataplane/dataplane.js';
import { BypassReason, Stat } from '../dataplane/layouts.js';
import type { Source } from '../sources/source.js';
import { countedMaps, type MetricsProbe, type PodState } from './metrics.js';

export const KERNEL_COUNT_INTERVAL_MS = 5_000;

export interface ProbedAgent {
  dataplane(): Dataplane | undefined;
  pipeline(): { podCounts(): { states: Record<PodState, number>; errors: Record<string, number> }; mapEntries(): Record<string, number> } | undefined;
  source: Source;
  sourceStarted(): boolean;
  ready(): boolean;
}

interface KeyWalk {
  handle: { keys(): Buffer[] };
}

export function agentProbe(a: ProbedAgent, now: () => number = Date.now): MetricsProbe {
  let kernelCounts: Record<string, number> = {};
  let countedAt = -Infinity;
  let countedFrom: Dataplane | undefined;
  const counted = countedMaps();
  return {
    stats: () => {
      const maps = a.dataplane()?.maps;
      return maps ? Stat.map((_, i) => maps.stats.get(i)) : undefined;
    },
    bypass: () => {
      const maps = a.dataplane()?.maps;
      return maps ? BypassReason.map((_, i) => maps.bypass_stats.get(i)) : undefined;
    },
    mapEntries: () => {
      const dp = a.dataplane();
      const mirror = a.pipeline()?.mapEntries();
      if (!dp || !mirror) return undefined;
      if (now() - countedAt >= KERNEL_COUNT_INTERVAL_MS || countedFrom !== dp) {
        const next: Record<string, number> = {};
        const views: Partial<Record<string, KeyWalk>> = dp.maps;
        for (const d of counted) {
          if (mirror[d.name] !== undefined) continue;
          try {
            const m = views[d.name];
            if (m) next[d.name] = m.handle.keys().length;
          } catch {
            // churning too fast for a walk: left out of this scrape
          }
        }
        kernelCounts = next;
        countedAt = now();
        countedFrom = dp;
      }
      return { ...kernelCounts, ...mirror };
    },
    mapCapacity: () => {
      const caps = a.dataplane()?.capacities;
      return caps && Object.fromEntries(caps.map((c) => [c.map, c.capacity]));
    },
    pods: () => a.pipeline()?.podCounts(),
    kube: () => {
      const c = a.source.counts;
      // labelled by the API's resource names, as the API server's own metrics are
      return c ? { pods: c.Pod, namespaces: c.Namespace } : undefined;
    },
    source: () => (a.sourceStarted() ? a.source.health() : undefined),
    ready: () => a.ready(),
  };
}
