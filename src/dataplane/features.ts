// What meshlane needs from the kernel, checked before anything is loaded, so a node that lacks a
// feature gets one line naming it (instead of a verifier log). Splicing is optional and checked on its
// own (splice.ts, what it needs; splice-probe.ts, the check): a kernel without it runs meshlane with
// splicing off.
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import * as native from '../native/addon.js';
import { MapType, ProgType } from './uapi.js';
import { UserError } from '../util/errors.js';

const MIN_KERNEL: [number, number] = [5, 15];

export interface FeatureReport {
  kernel: string;
  missing: string[];
}

export function probeFeatures(): FeatureReport {
  const missing: string[] = [];
  const kernel = release();
  const [maj = 0, min = 0] = kernel.split(/[.-]/).map(Number);
  if (maj < MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min < MIN_KERNEL[1])) missing.push(`Linux ${MIN_KERNEL.join('.')} or newer`);
  if (!existsSync('/sys/kernel/btf/vmlinux')) missing.push('kernel BTF (CONFIG_DEBUG_INFO_BTF)');
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
  return { kernel, missing };
}

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}

export function requireFeatures(): void {
  const r = probeFeatures();
  if (r.missing.length) {
    throw new UserError(`kernel ${r.kernel} lacks what meshlane needs: ${r.missing.join(', ')}; run it on Linux 5.15 or newer with BTF and CONFIG_CGROUP_BPF`);
  }
}

