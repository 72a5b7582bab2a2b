import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The package root (the directory holding package.json), from src/ or from the compiled dist/src/. */
export function packageRoot(): string {
  if (root) return root;
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('meshlane: cannot find package.json above ' + fileURLToPath(import.meta.url));
    d = up;
  }
  root = d;
  return d;
}

export const DEFAULT_BPFFS = '/sys/fs/bpf/meshlane';
