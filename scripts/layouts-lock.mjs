#!/usr/bin/env node
// npm run layouts:lock: append the (map, version) entries that src/dataplane/layouts.lock lacks.
// Never rewrites or removes a line (see src/dataplane/layout-lock.ts); refuses, changing nothing, when
// a locked version's layout changed (bump the version in layouts.ts instead). Runs the compiled
// TypeScript: `npm run layouts:lock` compiles first.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { appendToLock, LOCK_PATH } = await import(join(root, 'dist', 'src', 'dataplane', 'layout-lock.js'));
const { MAPS } = await import(join(root, 'dist', 'src', 'dataplane', 'layouts.js'));
try {
  const added = appendToLock(join(root, LOCK_PATH), Object.values(MAPS));
  if (added.length === 0) console.log(`${LOCK_PATH}: every (map, version) is locked already`);
  else console.log(`${LOCK_PATH}: appended\n  ${added.join('\n  ')}\ncommit it with the layout change`);
} catch (e) {
  console.error(`layouts:lock: ${e.message}`);
  process.exit(2);
}
