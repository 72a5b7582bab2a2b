// Same-node splicing, the pure part: the budget (its default, its parsing), what the bounded splice needs
// from the kernel's BTF, the decision (on, off, why) from what the user asked and what the kernel can
// do, and the switch and budget as the `global` map holds them. The kernel check itself is
// splice-probe.ts; the agent calls spliceAtStart() there once, before it loads anything.
import { release } from 'node:os';
import type { Btf } from './btf.js';
import { GlobalFlags } from './layouts.js';
import type { KeyOf, TypedMap, ValueOf } from './typed-map.js';
import { UserError } from '../util/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/**
 * The default budget: 4 MiB unread per direction. It is the default tcp_wmem maximum and under the
 * default tcp_rmem maximum (6 MiB), so a spliced direction holds no more than a default TCP connection
 * would before it throttles the writer; on the whole path of the issue (2 sidecars, 6 spliced sockets,
 * a reader stalled 3 s) it gave the peak TCP memory of no splicing. It is far above one sk_msg (17
 * fragments of 32 KiB at most), so a single large write never falls back on an empty queue.
 */
export const SPLICE_BUDGET_DEFAULT = 4 * MiB;
/** Below this, one large write (up to ~544 KiB per sk_msg) could fall back on an idle connection. */
export const SPLICE_BUDGET_MIN = 1 * MiB;
export const SPLICE_BUDGET_MAX = 1 * GiB;
/** After a fallback, how long a socket waits for its peer's sends in progress before it leaves. */
export const SPLICE_GRACE_NS = 1_000_000_000n;

/** 4MiB, 512KiB, 1GiB, 4194304 (bytes); K/M/G and KB/MB/GB mean the same powers of 1024. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = m[2]!.toLowerCase()[0];
  const n = Number(m[1]) * (unit === 'k' ? KiB : unit === 'm' ? MiB : unit === 'g' ? GiB : 1);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The budget of --splice-budget, or a UserError naming the fix. */
export function parseSpliceBudget(text: string): number {
  const n = parseSize(text);
  const fix = `give a size from ${formatSize(SPLICE_BUDGET_MIN)} to ${formatSize(SPLICE_BUDGET_MAX)}, e.g. --splice-budget 4MiB (the default)`;
  if (n === undefined) throw new UserError(`--splice-budget '${text}' is not a size: ${fix}`);
  if (n < SPLICE_BUDGET_MIN || n > SPLICE_BUDGET_MAX) throw new UserError(`--splice-budget ${text} is out of range: ${fix}`);
  return n;
}

export function formatSize(n: number): string {
  for (const [unit, size] of [
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', KiB],
  ] as const)
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  return `${n} bytes`;
}

// ---- what the kernel must have ------------------------------------------------------------------------

/**
 * What the bounded splice reads in the kernel (bpf/kern.h, CO-RE) and the kfuncs it calls, as the
 * kernel's BTF must show them. A kernel without one cannot load splice.bpf.o; checking BTF first gives
 * the reason in words. What BTF cannot show (whether redirected bytes are charged to the receiver) is
 * the behavioural probe of splice-probe.ts.
 */
export const SPLICE_BTF: ReadonlyArray<{ struct: string; path: string[] }> = [
  { struct: 'sk_msg', path: ['sk_redir'] },
  { struct: 'sk_msg', path: ['sk'] },
  { struct: 'sock', path: ['sk_backlog', 'rmem_alloc'] },
  { struct: 'sock', path: ['__sk_common', 'skc_cookie'] },
  { struct: 'sock', path: ['sk_user_data'] },
  { struct: 'sk_psock', path: ['ingress_msg'] },
  { struct: 'sk_psock', path: ['refcnt', 'refs'] },
  { struct: 'bpf_sock_ops_kern', path: ['sk'] },
];
/** Since Linux 6.2 (fd264ca02094, a35b9af4ec2c). */
export const SPLICE_KFUNCS: readonly string[] = ['bpf_cast_to_kern_ctx', 'bpf_rdonly_cast'];

/** What the kernel's BTF lacks of SPLICE_BTF and SPLICE_KFUNCS, in words ([] when nothing). */
export function spliceBtfMissing(btf: Btf): string[] {
  const missing: string[] = [];
  for (const f of SPLICE_KFUNCS) if (!btf.hasFunc(f)) missing.push(`the kfunc ${f} (Linux 6.2)`);
  for (const m of SPLICE_BTF) if (!btf.hasMember(m.struct, m.path)) missing.push(`struct ${m.struct} member ${m.path.join('.')}`);
  return missing;
}

/** What the kernel check found. */
export interface SpliceProbe {
  /** this kernel can bound the splice backlog */
  ok: boolean;
  /** why not, in words (when !ok) */
  reason?: string;
}

// ---- the decision -----------------------------------------------------------------------------------

/** What the user asked for: --splice (on), --no-splice (off), neither (auto: on where the kernel can bound it). */
export type SpliceWant = 'auto' | 'on' | 'off';

export interface SpliceDecision {
  /** load splice.bpf.o and attach its programs (the kernel can bound the backlog) */
  load: boolean;
  /** the switch: splice new connections (and keep splicing live ones) */
  on: boolean;
  /** bytes unread per direction before it falls back */
  budget: number;
  /** for status and the log: on, or why off */
  reason: string;
}

export function wantOf(flag: boolean | undefined): SpliceWant {
  return flag === undefined ? 'auto' : flag ? 'on' : 'off';
}

/**
 * On where the kernel can bound the backlog, unless --no-splice; an explicit --splice on a kernel that
 * cannot is a UserError (never unbounded splicing, never silently off when asked for).
 */
export function decideSplice(want: SpliceWant, probe: SpliceProbe, budget = SPLICE_BUDGET_DEFAULT, kernel = release()): SpliceDecision {
  const bounded = `bounded: at most ${formatSize(budget)} unread per direction, then that connection goes through TCP`;
  if (!probe.ok) {
    const why = `kernel ${kernel} cannot bound the splice backlog: ${probe.reason ?? 'unknown'}`;
    if (want === 'on') throw new UserError(`--splice: ${why}: run without --splice (splicing stays off), or on Linux 6.13 or newer`);
    return { load: false, on: false, budget, reason: `off: ${why}` };
  }
  if (want === 'off') return { load: true, on: false, budget, reason: 'off (--no-splice)' };
  return { load: true, on: true, budget, reason: `on (${bounded})` };
}

/** The switch and the budget into global[0], other flags kept; before the programs go live. */
export function writeSpliceConfig(global: TypedMap<KeyOf<'global'>, ValueOf<'global'>>, d: SpliceDecision): void {
  const cur = global.get(0)?.flags ?? 0;
  const flags = d.on ? cur | GlobalFlags.SPLICE : cur & ~GlobalFlags.SPLICE;
  global.set(0, { flags, pad: 0, splice_budget: BigInt(d.budget), splice_grace_ns: SPLICE_GRACE_NS });
}
