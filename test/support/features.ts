// The one place that decides whether a feature a test needs is present (cilium/ebpf's
// SkipIfNotSupported). Tests pass `skipUnless(...)` as their `skip` option instead of checking by
// themselves. On the machines meshlane is tested on every feature is present, and the test command
// (scripts/run-tests.mjs) fails when any test was skipped: a skip names what is missing, it never hides.
//
// Importing this file never loads the native addon unless it is built (src/native/addon.ts throws at
// import when it is not), so it is safe in any test.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { OBJECTS } from '../../src/dataplane/programs.js';
import { packageRoot } from '../../src/util/paths.js';

export type Feature =
  /** uid 0 (netns, cgroups, bpffs, iptables) */
  | 'root'
  /** the native addon is built (native/build/Release/meshlane.node) */
  | 'addon'
  /** the BPF objects are built (bpf/build/*.bpf.o) */
  | 'bpf-objects'
  /** bpftool on PATH (BTF dumps, cgroup listings) */
  | 'bpftool'
  /** what meshlane needs from the kernel (src/dataplane/features.ts probeFeatures, by loading) */
  | 'kernel';

const addonFile = join(packageRoot(), 'native', 'build', 'Release', 'meshlane.node');

function onPath(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// the kernel probes need the addon: loaded only when it is built
const kernelMissing: string | undefined = existsSync(addonFile)
  ? await import('../../src/dataplane/features.js').then(({ probeFeatures }) => {
      const r = probeFeatures();
      return r.missing.length ? `kernel ${r.kernel} lacks ${r.missing.join(', ')}` : undefined;
    })
  : 'the native addon is not built, so the kernel cannot be probed';

const checks: Record<Feature, () => string | undefined> = {
  root: () => (process.getuid?.() === 0 ? undefined : 'needs root'),
  addon: () => (existsSync(addonFile) ? undefined : `the native addon is not built (${addonFile}): npm run build`),
  'bpf-objects': () => {
    const absent = OBJECTS.map((o) => join(packageRoot(), 'bpf', 'build', o.file)).filter((f) => !existsSync(f));
    return absent.length ? `BPF objects not built (${absent.join(', ')}): npm run build` : undefined;
  },
  bpftool: () => (onPath('bpftool') ? undefined : 'bpftool is not installed (apt-get install bpftool)'),
  kernel: () => kernelMissing,
};

/** Why `feature` is missing on this machine, or undefined when it is present. */
export function whyMissing(feature: Feature): string | undefined {
  return checks[feature]();
}

/**
 * For a test's `skip` option: false when every feature is present, else the reasons. A test that
 * uses it fails the run (scripts/run-tests.mjs) whenever a feature is missing; it only says why.
 */
export function skipUnless(...features: Feature[]): string | false {
  const why = features.map(whyMissing).filter((w): w is string => w !== undefined);
  return why.length ? why.join('; ') : false;
}
