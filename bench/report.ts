// The report: per figure and mode the median over the rounds with its spread, the ratios to iptables, the
// hook cost on the non-captured pod, CPU, the proof that traffic went through the proxies, meshlane's own
// counters, and the targets of the issue. Markdown, the format of bench/RESULTS.md.
import { cpus } from 'node:os';

import type { Mode, Options } from './options.js';
import type { Results, Sample } from './results.js';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type Field = 'value' | 'p50_us' | 'p99_us';

/** One field of every sample of a mode and figure (the rounds). */
function pick(samples: Sample[], mode: Mode, figure: string, field: Field = 'value'): number[] {
  return samples.filter((s) => s.mode === mode && s.figure === figure && s[field] !== undefined).map((s) => s[field]!);
}

/** median, and the spread (max-min) relative to it */
export function stat(xs: number[]): { med: number; spread: number } | undefined {
  if (xs.length === 0) return undefined;
  const med = median(xs);
  return { med, spread: med === 0 ? 0 : (Math.max(...xs) - Math.min(...xs)) / med };
}

/** Per round: figure / hook-cps-unloaded of the same mode and round (measured seconds apart). */
export function pairedRatios(samples: Sample[], mode: Mode, figure: string): number[] {
  const out: number[] = [];
  for (const s of samples.filter((x) => x.mode === mode && x.figure === figure)) {
    const base = samples.find((x) => x.mode === mode && x.round === s.round && x.figure === 'hook-cps-unloaded');
    if (base && base.value > 0) out.push(s.value / base.value);
  }
  return out;
}

const MiB = 1024 * 1024;

function fmt(n: number, unit: string): string {
  if (unit === 'ms') return n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n.toFixed(1);
  if (unit === 'MiB') return n < 10 ? n.toFixed(1) : n.toFixed(0);
  if (unit === 'Gbit/s') return n.toFixed(2);
  return n >= 1000 ? Math.round(n).toLocaleString('en-US') : n.toFixed(0);
}

/** A median as formatted, with its spread as ± half of it (in %). */
const withSpread = (formatted: string, s: { spread: number }): string => `${formatted} ±${Math.round((s.spread * 100) / 2)}%`;

interface Row {
  label: string;
  figure: string;
  field: Field;
  unit: string;
  scale: number;
  /** higher is better */
  higher: boolean;
}

function tables(o: Options, { samples, counters }: Results): string {
  const rows: Row[] = [];
  for (const c of o.conc) {
    rows.push({ label: `keep-alive c=${c}: requests/s`, figure: `ka-c${c}`, field: 'value', unit: 'req/s', scale: 1, higher: true });
    rows.push({ label: `keep-alive c=${c}: p50 ms`, figure: `ka-c${c}`, field: 'p50_us', unit: 'ms', scale: 1e-3, higher: false });
    rows.push({ label: `keep-alive c=${c}: p99 ms`, figure: `ka-c${c}`, field: 'p99_us', unit: 'ms', scale: 1e-3, higher: false });
  }
  rows.push({ label: `new connections/s (c=${o.cpsConc}, Connection: close)`, figure: 'cps', field: 'value', unit: 'conn/s', scale: 1, higher: true });
  rows.push({ label: `new connections p99 ms`, figure: 'cps', field: 'p99_us', unit: 'ms', scale: 1e-3, higher: false });
  rows.push({ label: 'bulk, one connection: Gbit/s', figure: 'bulk', field: 'value', unit: 'Gbit/s', scale: 8e-9, higher: true });
  rows.push({
    label: 'slow reader (512 MiB, stalls 3 s): peak node TCP memory, MiB',
    figure: 'slow-reader',
    field: 'value',
    unit: 'MiB',
    scale: 1 / MiB,
    higher: false,
  });
  const modes = o.modes;
  const ratioModes = modes.filter((m) => m.startsWith('meshlane') || m === 'none');
  let md = `| figure (median of ${o.rounds} round${o.rounds > 1 ? 's' : ''}, spread) | ${modes.join(' | ')} | ${modes.includes('iptables') ? ratioModes.map((m) => `${m} / iptables`).join(' | ') : ''} |\n`;
  md += `|---|${modes.map(() => '---:').join('|')}|${modes.includes('iptables') ? ratioModes.map(() => '---:').join('|') : ''}|\n`;
  for (const r of rows) {
    const st = Object.fromEntries(modes.map((m) => [m, stat(pick(samples, m, r.figure, r.field))]));
    const cells = modes.map((m) => {
      const s = st[m];
      return s ? withSpread(fmt(s.med * r.scale, r.unit), s) : '-';
    });
    const base = st.iptables?.med;
    const ratios = modes.includes('iptables') ? ratioModes.map((m) => (base && st[m] ? `${(st[m]!.med / base).toFixed(2)}x` : '-')) : [];
    md += `| ${r.label} | ${cells.join(' | ')} | ${ratios.join(' | ')} |\n`;
  }

  // the hook cost: pod C is never captured; compare its connect rate with meshlane loaded vs not
  md += `\nNon-captured pod C, new connections/s to a server on the node (c=${o.cpsConc}), no proxy in the path; ratio to \`none\` (meshlane not loaded). \`iptables\` changes nothing for C either, so its ratio shows the noise.\n\n`;
  md += `| mode | meshlane loaded | conn/s (median, spread) | ratio to none |\n|---|---|---:|---:|\n`;
  const hookBase = stat(pick(samples, 'none', 'hook-cps'))?.med;
  const hookRow = (label: string, loaded: string, xs: number[]): void => {
    const s = stat(xs);
    if (!s) return;
    md += `| ${label} | ${loaded} | ${withSpread(fmt(s.med, 'conn/s'), s)} | ${hookBase ? `${(s.med / hookBase).toFixed(3)}x` : '-'} |\n`;
  };
  for (const m of modes) {
    hookRow(
      m,
      !m.startsWith('meshlane') ? 'no' : m.endsWith('-pinned') ? 'programs attached, agent stopped' : 'yes, agent running',
      pick(samples, m, 'hook-cps'),
    );
    if (m.startsWith('meshlane') && !m.endsWith('-pinned'))
      hookRow(`${m}, agent stopped`, 'programs attached, agent stopped', pick(samples, m, 'hook-cps-pinned'));
  }
  const paired = modes.filter((m) => m.startsWith('meshlane') && pick(samples, m, 'hook-cps-unloaded').length > 0);
  if (paired.length > 0) {
    md += `\nThe same, paired: in each meshlane slot C was measured three times back to back (agent running, then only the programs attached, then meshlane uninstalled); ratios within each slot, median over rounds (min..max):\n\n| mode | agent running / uninstalled | programs only / uninstalled |\n|---|---:|---:|\n`;
    for (const m of paired) {
      const r = (f: string): string => {
        const xs = pairedRatios(samples, m, f);
        return xs.length ? `${median(xs).toFixed(3)}x (${Math.min(...xs).toFixed(3)}..${Math.max(...xs).toFixed(3)})` : '-';
      };
      md += m.endsWith('-pinned') ? `| ${m} | - | ${r('hook-cps')} |\n` : `| ${m} | ${r('hook-cps')} | ${r('hook-cps-pinned')} |\n`;
    }
  }

  // CPU: the agent's own use, and how busy the machine was
  md += `\nCPU during the measurements (median over all measurements of the mode; max in brackets): the agent process in cores; the whole machine's busy share (${cpus().length} CPUs); CPU taken by processes outside the benchmark (other users of the machine; an estimate), in cores; CPU the hypervisor took from this VM (steal: neither busy nor idle here), in cores.\n\n| mode | agent CPU (cores) | machine busy | others (cores) | steal (cores) |\n|---|---:|---:|---:|---:|\n`;
  for (const m of modes) {
    const ss = samples.filter((x) => x.mode === m);
    const ag = ss.filter((x) => x.agentCores !== undefined).map((x) => x.agentCores!);
    const mb = ss.filter((x) => x.machineBusy !== undefined).map((x) => x.machineBusy!);
    const ot = ss.filter((x) => x.otherCores !== undefined).map((x) => x.otherCores!);
    const st = ss.filter((x) => x.stealCores !== undefined).map((x) => x.stealCores!);
    const medMax = (xs: number[]): string => (xs.length ? `${median(xs).toFixed(2)} (${Math.max(...xs).toFixed(2)})` : '-');
    md += `| ${m} | ${medMax(ag)} | ${mb.length ? `${Math.round(median(mb) * 100)}%` : '-'} | ${medMax(ot)} | ${medMax(st)} |\n`;
  }

  // proof that the traffic went where it should
  md += `\nSessions through the proxies (sum over all rounds; "expected" is what wrk/bulk opened):\n\n| mode | client outbound (15001) | server inbound (15006) | expected | wrk errors |\n|---|---:|---:|---:|---:|\n`;
  for (const m of modes) {
    const ss = samples.filter((s) => s.mode === m && s.out !== undefined);
    const sum = (f: (s: Sample) => number): number => ss.reduce((a, s) => a + f(s), 0);
    md += `| ${m} | ${sum((s) => s.out!)} | ${sum((s) => s.in ?? 0)} | ${m === 'none' ? '0' : `>= ${sum((s) => s.conns ?? 0)}`} | ${sum((s) => s.errors ?? 0)} |\n`;
  }
  const cm = Object.entries(counters);
  if (cm.length > 0) {
    const names = ['captured_outbound', 'inbound_captured', 'orig_dst_served', 'spliced', 'splice_fallback', 'splice_fallback_peer', 'splice_left'];
    md += `\nmeshlane's own counters (per-CPU stats map, summed over the agent runs of each mode):\n\n| mode | ${names.join(' | ')} |\n|---|${names.map(() => '---:').join('|')}|\n`;
    for (const [m, list] of cm) md += `| ${m} | ${names.map((n) => String(list!.reduce((a, c) => a + (c[n] ?? 0), 0))).join(' | ')} |\n`;
  }
  return md;
}

/** The issue's targets for the default agent (keep-alive per concurrency level: req/s at least, p99 at most). */
export const TARGETS = {
  rps: (c: number): number => (c <= 1 ? 1.4 : 1.8),
  p99: 0.7,
  cps: 1.2,
  bulk: 1.3,
  /** the non-captured pod, against no meshlane */
  hook: 0.97,
};

export function targets(o: Options, { samples, tcpCap }: Results): string[] {
  const out: string[] = [];
  if (!o.modes.includes('iptables')) return out;
  const med = (m: Mode, f: string, field: Field = 'value'): number | undefined => stat(pick(samples, m, f, field))?.med;
  const met = (ok: boolean): string => (ok ? 'met' : 'NOT met');
  for (const m of o.modes.filter((x) => x.startsWith('meshlane'))) {
    for (const c of o.conc) {
      const rps = (med(m, `ka-c${c}`) ?? NaN) / (med('iptables', `ka-c${c}`) ?? NaN);
      const p99 = (med(m, `ka-c${c}`, 'p99_us') ?? NaN) / (med('iptables', `ka-c${c}`, 'p99_us') ?? NaN);
      const want = TARGETS.rps(c);
      out.push(
        `${m} keep-alive c=${c}: ${rps.toFixed(2)}x iptables req/s (target >= ${want.toFixed(2)}: ${met(rps >= want)}), p99 ${p99.toFixed(2)}x (target <= ${TARGETS.p99.toFixed(2)}: ${met(p99 <= TARGETS.p99)})`,
      );
    }
    const cps = (med(m, 'cps') ?? NaN) / (med('iptables', 'cps') ?? NaN);
    out.push(`${m} new connections/s: ${cps.toFixed(2)}x iptables (target >= ${TARGETS.cps.toFixed(2)}: ${met(cps >= TARGETS.cps)})`);
    const bulk = (med(m, 'bulk') ?? NaN) / (med('iptables', 'bulk') ?? NaN);
    out.push(`${m} bulk, one connection: ${bulk.toFixed(2)}x iptables (target >= ${TARGETS.bulk.toFixed(2)}: ${met(bulk >= TARGETS.bulk)})`);
    const slow = med(m, 'slow-reader');
    if (slow !== undefined) {
      const ipt = med('iptables', 'slow-reader');
      const vs = ipt ? `, ${(slow / ipt).toFixed(2)}x iptables` : '';
      const cap = tcpCap ? ` (target: bounded by what TCP flow control allows the 6 sockets, ${fmt(tcpCap / MiB, 'MiB')} MiB: ${met(slow <= tcpCap)})` : '';
      out.push(`${m} slow reader: peak node TCP memory +${fmt(slow / MiB, 'MiB')} MiB${vs}${cap}`);
    }
    if (o.modes.includes('none')) {
      const pr = (f: string): number => {
        const xs = pairedRatios(samples, m, f);
        return xs.length ? median(xs) : (med(m, f) ?? NaN) / (med('none', 'hook-cps') ?? NaN);
      };
      const h = pr('hook-cps');
      const hp = m.endsWith('-pinned') ? h : pr('hook-cps-pinned');
      const t = TARGETS.hook.toFixed(3);
      if (m.endsWith('-pinned'))
        out.push(
          `${m} non-captured pod (paired): ${hp.toFixed(3)}x of no meshlane, programs attached, agent stopped (target >= ${t}: ${met(hp >= TARGETS.hook)})`,
        );
      else
        out.push(
          `${m} non-captured pod (paired): ${h.toFixed(3)}x of no meshlane with the agent running, ${hp.toFixed(3)}x with only the programs attached (target >= ${t}: ${met(h >= TARGETS.hook)} / ${met(hp >= TARGETS.hook)})`,
        );
    }
  }
  return out;
}

/** When and on what the run happened: the head of the report. */
export interface RunInfo {
  started: Date;
  finished: Date;
  /** the command line as the user typed it */
  command: string;
  /** the meshlane checkout measured, and its revision */
  meshlane: string;
  revision: string;
  loadAtStart: string;
  kernel: string;
  haproxy: string;
  wrk: string;
}

/** The whole report, as printed and as --markdown writes it. */
export function renderReport(o: Options, results: Results, run: RunInfo): string {
  let md = `Run ${run.started.toISOString()} - ${run.finished.toISOString()}: \`${run.command}\`\n`;
  md += `meshlane: ${run.meshlane} (${run.revision}); load average at the start: ${run.loadAtStart}\n`;
  md += `Machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), kernel ${run.kernel}, ${run.haproxy}, ${run.wrk}, node ${process.version}\n\n`;
  md += tables(o, results);
  const list = (title: string, lines: string[]): string => (lines.length > 0 ? `\n${title}:\n${lines.map((l) => `- ${l}`).join('\n')}\n` : '');
  md += list('Targets', targets(o, results));
  md += list('Notes', results.notes);
  md += list('PROBLEMS (these figures are not valid)', results.problems);
  return md;
}
