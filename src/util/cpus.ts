import { readFileSync } from 'node:fs';

let cached: number | undefined;

/** The number of possible CPUs, as per-CPU BPF maps size their values. */
export function possibleCpus(): number {
  if (cached !== undefined) return cached;
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let n = 0;
  for (const part of text.split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - (a ?? 0) + 1;
  }
  cached = n;
  return n;
}
