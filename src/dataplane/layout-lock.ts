// The layout lock: src/dataplane/layouts.lock holds, for every (map, layout version) meshlane ever
// shipped, a fingerprint of everything a pinned map cannot change: key layout, value layout, map type,
// max_entries, map flags. A pin is named by its version (maps/<map>_v<version>), so a version must mean
// one layout forever: the lock is append-only, and test/unit/layouts.test.ts fails when MAPS and the
// lock disagree (a layout changed without a new version, a version not appended yet) or when a line
// of the lock was ever changed or removed. `npm run layouts:lock` appends missing entries and never
// rewrites one.
//
// max_entries here is the compiled capacity (layouts.ts, bpf/maps.h), which is the capacity at the default
// --max-pods and --max-connections. The agent sets every map's capacity at run time from those options
// (capacity.ts): that is a parameter of one layout version, not another layout, so it needs no version
// and no line here; changing the compiled capacity still does.
//
// Line format (after '#' is a comment for people; only the first three fields are compared):
//   <map> <version> <fingerprint>  # <type>, key <n> B, value <n> B, max_entries <n>, flags <n>
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { fingerprint } from './struct.js';
import { MapType } from './uapi.js';
import type { MapDef } from './layouts.js';

/** Where the lock lives, from the package root. */
export const LOCK_PATH = 'src/dataplane/layouts.lock';
/** What appends missing entries. */
export const APPEND_COMMAND = 'npm run layouts:lock';

export interface LockEntry {
  map: string;
  version: number;
  fingerprint: string;
  /** 1-based line in the lock file */
  line: number;
}

/**
 * The fingerprint of one map at one version: key and value layout (struct.fingerprint: names,
 * offsets, kinds, sizes), map type, max_entries and flags. Never change what goes into it: every
 * locked entry depends on it (a change would flag every map as changed).
 */
export function mapFingerprint(def: Pick<MapDef, 'key' | 'value' | 'type' | 'maxEntries' | 'flags'>): string {
  const text = `layout=${fingerprint(def.key, def.value)};type=${def.type};max_entries=${def.maxEntries};flags=${def.flags}`;
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

const typeName = (t: number): string =>
  Object.entries(MapType)
    .find(([, v]) => v === t)?.[0]
    ?.toLowerCase() ?? `type ${t}`;

/** The lock line for a map at its current version. */
export function lockLine(def: MapDef): string {
  return `${def.name} ${def.version} ${mapFingerprint(def)}  # ${typeName(def.type)}, key ${def.key.size} B, value ${def.value.size} B, max_entries ${def.maxEntries}, flags ${def.flags}`;
}

const LINE = /^(\S+) ([1-9]\d*) ([0-9a-f]{16})$/;

/** Parse the lock: entries, and what is wrong with it (malformed lines, a (map, version) twice). */
export function parseLock(text: string): { entries: LockEntry[]; problems: string[] } {
  const entries: LockEntry[] = [];
  const problems: string[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const body = raw.replace(/#.*$/, '').trim();
    if (body === '') return;
    const m = LINE.exec(body);
    if (!m) {
      problems.push(`${LOCK_PATH}:${i + 1}: not '<map> <version> <16 hex digits>': ${raw}`);
      return;
    }
    const e: LockEntry = { map: m[1]!, version: Number(m[2]), fingerprint: m[3]!, line: i + 1 };
    const key = `${e.map} ${e.version}`;
    const first = seen.get(key);
    if (first !== undefined)
      problems.push(`${LOCK_PATH}:${e.line}: map ${e.map} version ${e.version} is already locked at line ${first}: each (map, version) has one line`);
    else seen.set(key, e.line);
    entries.push(e);
  });
  return { entries, problems };
}

/** Everything that disagrees between the maps and the lock; empty when they agree. */
export function checkLock(defs: MapDef[], lockText: string): string[] {
  const { entries, problems } = parseLock(lockText);
  for (const def of defs) {
    const want = mapFingerprint(def);
    const e = entries.find((x) => x.map === def.name && x.version === def.version);
    if (!e) {
      problems.push(`map ${def.name} version ${def.version} is not in ${LOCK_PATH}: run ${APPEND_COMMAND} to append it (and commit the lock)`);
    } else if (e.fingerprint !== want) {
      problems.push(
        `layout of map ${def.name} changed without a new version: bump its version in layouts.ts and run ${APPEND_COMMAND} (version ${def.version} is locked to ${e.fingerprint} at ${LOCK_PATH}:${e.line}; the layout now gives ${want})`,
      );
    }
  }
  return problems;
}

/**
 * The lines to append for maps whose (map, version) is not locked yet. Throws, appending nothing,
 * when the lock is malformed or a locked version's layout changed (that needs a new version, not a
 * new line).
 */
export function missingLines(defs: MapDef[], lockText: string): string[] {
  const { entries, problems } = parseLock(lockText);
  for (const def of defs) {
    const e = entries.find((x) => x.map === def.name && x.version === def.version);
    if (e && e.fingerprint !== mapFingerprint(def)) {
      problems.push(`layout of map ${def.name} changed without a new version: bump its version in layouts.ts, then run ${APPEND_COMMAND} again`);
    }
  }
  if (problems.length) throw new Error(`${LOCK_PATH} left unchanged:\n  ${problems.join('\n  ')}`);
  return defs.filter((d) => !entries.some((x) => x.map === d.name && x.version === d.version)).map(lockLine);
}

const HEADER = `# meshlane map layout lock: one line per (map, layout version), APPEND-ONLY.
# A pinned map is named <map>_v<version> and outlives the agent, so a version means one layout forever.
# Never edit or remove a line: change a map's layout, type, capacity or flags in layouts.ts, bump its
# version, and run '${APPEND_COMMAND}'. test/unit/layouts.test.ts checks all of this.
`;

/** Append the missing entries to the lock file at `path` (created if absent). Returns what was appended. */
export function appendToLock(path: string, defs: MapDef[]): string[] {
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const lines = missingLines(defs, text);
  if (lines.length === 0) return [];
  const prefix = text === '' ? HEADER : text.endsWith('\n') ? '' : '\n';
  appendFileSync(path, `${prefix}${lines.join('\n')}\n`);
  return lines;
}
