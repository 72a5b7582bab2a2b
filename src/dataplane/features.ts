// What meshlane needs from the kernel and from its own process, checked before anything is loaded, so
// a node that lacks a feature, or a process that lacks a capability, gets one line naming it (instead
// of a verifier log). The capabilities come first: without them every probe fails too, and the probes
// alone would blame the kernel. Splicing is optional and checked on its own (splice.ts, what it needs;
// splice-probe.ts, the check): a kernel without it runs meshlane with splicing off.
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import * as native from '../native/addon.js';
import { MapType, ProgType } from './uapi.js';
import { UserError } from '../util/errors.js';

const MIN_KERNEL: [number, number] = [5, 15];

/** Capability numbers (linux/capability.h) meshlane names. */
export const Cap = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapName = keyof typeof Cap;

/**
 * What the agent needs, and why. CAP_SYS_ADMIN also grants what CAP_BPF and CAP_PERFMON grant (the
 * kernel's bpf_capable() and perfmon_capable() accept it), and it is needed on its own anyway.
 */
export const AGENT_CAPS: ReadonlyArray<[CapName, string]> = [
  ['CAP_SYS_ADMIN', 'bpf(), mounting bpffs, entering pod network namespaces'],
  ['CAP_NET_ADMIN', 'attaching to cgroups (kernels before 6.x ask for it alone)'],
  ['CAP_SYS_PTRACE', "opening pods' network namespaces and proxy listeners (pidfd_getfd)"],
];

/** The effective capability set of this process (CapEff in /proc/self/status). */
export function effectiveCaps(status = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!m) throw new Error('no CapEff line in /proc/self/status');
  return BigInt(`0x${m[1]}`);
}

export function missingCaps(want: ReadonlyArray<[CapName, string]> = AGENT_CAPS, eff = effectiveCaps()): CapName[] {
  return want.filter(([name]) => !(eff & (1n << BigInt(Cap[name])))).map(([name]) => name);
}

const CAPS_FIX = 'give meshlane these capabilities (a privileged container, or securityContext.capabilities.add; not a reduced capability bounding set)';

/** The missing capabilities as one line's cause and fix, or undefined when none is missing. */
export function capsMessage(want: ReadonlyArray<[CapName, string]> = AGENT_CAPS): string | undefined {
  const missing = missingCaps(want);
  if (missing.length === 0) return undefined;
  return `missing capabilities ${missing.join(', ')} (CapEff ${effectiveCaps().toString(16).padStart(16, '0')}): ${CAPS_FIX}`;
}

export function requireCapabilities(): void {
  const m = capsMessage();
  if (m) throw new UserError(m);
}

export interface FeatureReport {
  kernel: string;
  missing: string[];
  /** bpf() refused even the simplest map: not a missing feature but something in the way */
  bpfRefused: boolean;
}

export function probeFeatures(): FeatureReport {
  const missing: string[] = [];
  const kernel = release();
  const [maj = 0, min = 0] = kernel.split(/[.-]/).map(Number);
  if (maj < MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min < MIN_KERNEL[1])) missing.push(`Linux ${MIN_KERNEL.join('.')} or newer`);
  if (!existsSync('/sys/kernel/btf/vmlinux')) missing.push('kernel BTF (CONFIG_DEBUG_INFO_BTF)');
  // every kernel with bpf() has hash maps: if even that fails, the probes below say nothing about features
  const bpfRefused = !safe(() => native.probeMapType(MapType.HASH));
  const progs: Array<[string, number]> = [
    ['cgroup sock_addr programs (CONFIG_CGROUP_BPF)', ProgType.CGROUP_SOCK_ADDR],
    ['sockops programs', ProgType.SOCK_OPS],
    ['cgroup sockopt programs', ProgType.CGROUP_SOCKOPT],
  ];
  const maps: Array<[string, number]> = [
    ['LPM trie maps', MapType.LPM_TRIE],
    ['socket local storage (BPF_MAP_TYPE_SK_STORAGE)', MapType.SK_STORAGE],
  ];
  for (const [what, t] of progs) if (!safe(() => native.probeProgType(t))) missing.push(what);
  for (const [what, t] of maps) if (!safe(() => native.probeMapType(t))) missing.push(what);
  return { kernel, missing, bpfRefused };
}

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}

/** The capabilities first (their lack makes every probe fail), then the kernel's features. */
export function requireFeatures(): void {
  requireCapabilities();
  const r = probeFeatures();
  if (r.bpfRefused) {
    throw new UserError(
      `the kernel refuses bpf() to meshlane although it has the capabilities: a seccomp profile, an LSM or a user namespace is in the way; run it in the host's user namespace without a seccomp filter (a privileged container)`,
    );
  }
  if (r.missing.length) {
    throw new UserError(`kernel ${r.kernel} lacks what meshlane needs: ${r.missing.join(', ')}; run it on Linux 5.15 or newer with BTF and CONFIG_CGROUP_BPF`);
  }
}
