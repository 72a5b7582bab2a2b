// `meshlane status` as text: what the agent last published (status.json) plus what the pins say. Shared by
// the CLI and the demo.
import { PinnedMaps } from '../dataplane/dataplane.js';
import { GlobalFlags, Stat } from '../dataplane/layouts.js';
import { formatSize } from '../dataplane/splice.js';
import { statusPath, type AgentStatus, type PodNetnsStatus } from '../agent/status.js';
import type { CaptureSettings } from '../model/types.js';
import type { NodeHandover } from '../dataplane/handover.js';
import { LIMIT_OPTION, fillingMaps, keptLine, sizedBy } from '../dataplane/capacity.js';

export function settingsLine(s: CaptureSettings): string {
  const cidrs = (l: { addr: string; prefix: number }[]): string => l.map((c) => `${c.addr}/${c.prefix}`).join(',');
  const inbound = s.inboundPorts.mode === 'all' ? `* except ${s.inboundPorts.exclude.join(',')}` : s.inboundPorts.include.join(',') || '(none)';
  return [
    `out=${s.outboundPort} in=${s.inboundPort} uids=${s.proxyUids.join(',')} gids=${s.proxyGids.join(',')}`,
    `include-out=${s.outboundInclude.all ? '*' : cidrs(s.outboundInclude.cidrs) || '(none)'}`,
    s.outboundExclude.length ? `exclude-out=${cidrs(s.outboundExclude)}` : '',
    s.includeOutboundPorts.length ? `include-out-ports=${s.includeOutboundPorts.join(',')}` : '',
    s.excludeOutboundPorts.length ? `exclude-out-ports=${s.excludeOutboundPorts.join(',')}` : '',
    `inbound-ports=${inbound}`,
    s.dns.enabled ? `dns=${s.dns.captureAll ? 'all' : 'on'}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

export interface DataplaneFacts {
  splice: boolean;
  /** global[0].splice_budget (bytes) */
  spliceBudget: number;
  counters: Record<string, bigint>;
  /** the maps that fill up (capacity.ts fillingMaps): entries (undefined: unreadable, churning) and capacity */
  maps: Record<string, { entries?: number; capacity: number }>;
}

/** Splicing switch and counters from the pinned maps; undefined when there are none or we may not read them. */
export function dataplaneFacts(bpffs: string, pinned: boolean): DataplaneFacts | undefined {
  if (!pinned) return undefined;
  let maps: PinnedMaps | undefined;
  try {
    maps = new PinnedMaps(bpffs);
    const g = maps.maps.global?.get(0);
    const counters: Record<string, bigint> = {};
    Stat.forEach((name, i) => {
      const v = maps!.maps.stats?.get(i);
      if (v !== undefined && v !== null) counters[name] = v;
    });
    const sizes: DataplaneFacts['maps'] = {};
    const views: Partial<Record<string, { handle: { info: { maxEntries: number }; keys(): Buffer[] } }>> = maps.maps;
    for (const d of fillingMaps()) {
      const m = views[d.name];
      if (!m) continue;
      let entries: number | undefined;
      try {
        entries = m.handle.keys().length;
      } catch {
        // churning too fast for a walk: shown as unknown
      }
      sizes[d.name] = { ...(entries !== undefined ? { entries } : {}), capacity: m.handle.info.maxEntries };
    }
    return { splice: ((g?.flags ?? 0) & GlobalFlags.SPLICE) !== 0, spliceBudget: Number(g?.splice_budget ?? 0n), counters, maps: sizes };
  } catch {
    return undefined; // not root: the agent's status.json is still shown
  } finally {
    maps?.close();
  }
}

/** `netns=<inode> via sandbox process <pid>` and the like: which netns is the pod's, and how that is known. */
export function netnsLine(n: PodNetnsStatus): string {
  const proc = n.pid !== undefined ? `sandbox process ${n.pid}` : 'no process';
  const how = n.how === 'cni' ? 'via cni' : n.how === 'pins' ? `restored from pins, confirmed by ${proc}` : `via ${proc}`;
  const held = n.heldBy !== undefined ? ` (${n.pid !== undefined ? 'gone; ' : ''}held by process ${n.heldBy})` : '';
  return `netns=${n.inode} ${how}${held}`;
}

/** The node's hand-over map (orig_by_tuple): how full, the limits, what was refused. */
export function handoverLine(h: NodeHandover): string {
  const refused =
    h.refusedPodLimit + h.refusedNodeFull > 0 ? `; refused: ${h.refusedPodLimit} at a pod's limit, ${h.refusedNodeFull} with the map near full` : '';
  const full = h.handoverFull > 0 ? `; not stored (map full): ${h.handoverFull}` : '';
  return `hand-over map: ${h.inflight} of ${h.capacity} connections between connect() and accept() (new ones refused from ${h.refuseFrom}); per pod at most ${h.perPodLimit}${refused}${full}`;
}

/**
 * Every map that fills up: entries of capacity (from the pins), FULL when it is, and the option that sized
 * it with its value (from the agent's status); a pin that kept another capacity than the options want says
 * so (README, Map capacity).
 */
export function mapLines(dp: DataplaneFacts | undefined, st: AgentStatus | undefined): string[] {
  const names = new Set([...Object.keys(dp?.maps ?? {}), ...Object.keys(st?.capacity?.maps ?? {})]);
  if (names.size === 0) return [];
  const out = ['maps (entries of capacity):'];
  for (const name of fillingMaps().map((d) => d.name)) {
    if (!names.has(name)) continue;
    const pinned = dp?.maps[name];
    const agent = st?.capacity?.maps[name];
    const capacity = pinned?.capacity ?? agent?.capacity;
    const entries = pinned?.entries;
    const full = entries !== undefined && capacity !== undefined && entries >= capacity ? ' FULL' : '';
    const by = sizedBy(name);
    const limit = by && st?.capacity ? ` (sized by ${LIMIT_OPTION[by]} ${st.capacity.limits[by]})` : by ? ` (sized by ${LIMIT_OPTION[by]})` : '';
    const kept = agent?.wanted !== undefined && capacity !== undefined ? `; ${keptLine({ capacity, wanted: agent.wanted, option: agent.option })}` : '';
    out.push(`  ${name}: ${entries ?? '?'} of ${capacity ?? '?'}${full}${limit}${kept}`);
  }
  return out;
}

/** The per-pod part of `meshlane status`: captured pods with settings and errors, then the others. */
export function podStatusLines(st: AgentStatus): string[] {
  const out = [`pods (${st.pods.length}):`];
  for (const p of st.pods) {
    const via = p.via === 'cni' ? ' via=cni' : p.via === 'cgroup-tree' ? ' via=cgroup-tree' : '';
    out.push(`  ${p.ref.namespace}/${p.ref.name} ${p.state}${p.reason ? ` (${p.reason})` : ''} ips=${p.ips.join(',')}${p.podId ? ` id=${p.podId}` : ''}${via}`);
    if (p.netns) out.push(`    ${netnsLine(p.netns)}`);
    out.push(`    ${settingsLine(p.settings)}`);
    if (p.handover) {
      const h = p.handover;
      const refused =
        h.refusedAtLimit + h.refusedNodeFull > 0 ? `; refused: ${h.refusedAtLimit} at its limit, ${h.refusedNodeFull} with the node's map near full` : '';
      out.push(`    connections between connect() and accept(): ${h.inflight} (limit ${h.limit})${refused}`);
    }
    for (const e of p.errors) out.push(`    error: ${e}`);
    for (const u of p.unsupported) out.push(`    unsupported: ${u}`);
  }
  if (st.skipped.length) {
    out.push(`not captured (${st.skipped.length}):`);
    for (const s of st.skipped) out.push(`  ${s.ref.namespace}/${s.ref.name}: ${s.reason}`);
  }
  return out;
}

export interface StatusInput {
  bpffs: string;
  stateDir: string;
  /** link pins found under bpffs */
  links: string[];
  dataplane: DataplaneFacts | undefined;
  status: AgentStatus | undefined;
  agentRunning: boolean;
}

/**
 * Splicing as the agent decided it at start (with the reason when off), checked against the switch in
 * the pins: they differ when the pins were changed after the agent started (another agent, a restart).
 */
export function spliceLine(dp: DataplaneFacts | undefined, st: AgentStatus | undefined): string {
  const pinned = dp ? (dp.splice ? `on, budget ${formatSize(dp.spliceBudget)} per direction` : 'off') : undefined;
  if (!st?.splice) return pinned ?? 'unknown (no agent status, pins not readable)';
  if (dp && dp.splice !== st.splice.on) return `${pinned} in the pins; the agent (pid ${st.pid}) decided: ${st.splice.reason}`;
  return st.splice.reason;
}

/** The whole text of `meshlane status`. */
export function renderStatus(i: StatusInput): string {
  const out: string[] = [];
  out.push(`capture: ${i.links.length ? `active (${i.links.length} programs linked under ${i.bpffs})` : `not installed (nothing linked under ${i.bpffs})`}`);
  const st = i.status;
  out.push(`splicing: ${spliceLine(i.dataplane, st)}`);
  if (i.dataplane)
    out.push(
      `counters: ${Object.entries(i.dataplane.counters)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}`,
    );
  if (!st) {
    out.push(`agent: no status at ${statusPath(i.stateDir)} (the agent has not run with --state-dir ${i.stateDir})`);
  } else {
    out.push(
      `agent: ${i.agentRunning ? `running (pid ${st.pid})` : `not running (last seen pid ${st.pid} at ${st.updatedAt})`}; source: ${st.source}; cgroup root: ${st.cgroupRoot}`,
    );
    if (st.sourceError) out.push(`source error: ${st.sourceError}`);
    if (st.handover) out.push(handoverLine(st.handover));
  }
  out.push(...mapLines(i.dataplane, st));
  if (st) out.push(...podStatusLines(st));
  return out.join('\n') + '\n';
}
