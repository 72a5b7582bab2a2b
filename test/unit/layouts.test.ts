// Layout versions that cannot drift. A pinned map outlives the agent and can change neither its key
// and value layout nor its type, capacity or flags, and its pin is named by its layout version: so
// every (map, version) of MAPS must be in the append-only lock (src/dataplane/layouts.lock) with the
// fingerprint of exactly what it is now, and no line of the lock may ever change. Pure: no root, no
// BPF build (the checks against the compiled objects are test/kernel/layouts-btf.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAPS, Stat, type MapDef } from '../../src/dataplane/layouts.js';
import { APPEND_COMMAND, LOCK_PATH, appendToLock, checkLock, lockLine, mapFingerprint, missingLines, parseLock } from '../../src/dataplane/layout-lock.js';
import { struct, u16, u32, u64, scalar } from '../../src/dataplane/struct.js';
import { MapFlags, MapType } from '../../src/dataplane/uapi.js';
import { packageRoot } from '../../src/util/paths.js';

const DEFS = Object.values(MAPS) as MapDef[];
const lockFile = join(packageRoot(), LOCK_PATH);
const lockText = (): string => readFileSync(lockFile, 'utf8');

/** A made-up map for the tests of the check itself. */
const base: MapDef = {
  name: 'demo',
  key: scalar(u64),
  value: struct('demo_value', { a: u32, b: u16 }),
  type: MapType.HASH,
  maxEntries: 1024,
  flags: 0,
  version: 1,
  carry: 'state',
  what: 'a test map',
};
const lockOf = (...defs: MapDef[]): string => `# a comment\n\n${defs.map(lockLine).join('\n')}\n`;

// ---- the real maps against the real lock -------------------------------------------------------

test('every (map, version) of MAPS is in the lock with its current fingerprint', () => {
  assert.deepEqual(checkLock(DEFS, lockText()), []);
});

test('the lock is well formed and has no (map, version) twice', () => {
  const { entries, problems } = parseLock(lockText());
  assert.deepEqual(problems, []);
  assert.ok(entries.length >= DEFS.length);
});

test('map names in MAPS match their keys, and the kind flags match the map type', () => {
  for (const [k, d] of Object.entries(MAPS) as Array<[string, MapDef]>) {
    assert.equal(d.name, k);
    assert.equal(d.percpu === true, d.type === MapType.PERCPU_ARRAY, `${k}: percpu`);
    assert.equal(d.skStorage === true, d.type === MapType.SK_STORAGE, `${k}: skStorage`);
    assert.equal(d.sockets === true, d.type === MapType.SOCKHASH, `${k}: sockets`);
    assert.equal(d.maxEntries === 0, d.type === MapType.SK_STORAGE, `${k}: only socket local storage has no max_entries`);
  }
  assert.equal(MAPS.stats.maxEntries, Stat.length, 'one counter per Stat');
});

/**
 * Append-only, from git: every entry the lock file ever had in a commit of the mainline history of HEAD
 * (git rev-list --first-parent HEAD -- <lock>, then git show of each) must still be in the file as it is
 * now, same (map,
 * version, fingerprint); the working file is what is compared, so an uncommitted edit is caught too.
 * Returns the entries lost, or a note when there is no history to compare (not a git checkout, the
 * file in no commit yet, git missing). First parents only: what a merged branch had on its own commits
 * (two branches that both drafted version N of a map) was never a release, so the merge decides; what
 * the mainline committed is fixed for ever.
 */
function lockHistoryLosses(root: string, path: string): { lost: string[]; commits: number } | { note: string } {
  const git = (...args: string[]): string => execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  let commits: string[];
  try {
    commits = git('rev-list', '--first-parent', 'HEAD', '--', path).split('\n').filter(Boolean);
  } catch {
    return { note: `${path} is not in a git checkout here (or git is missing): no history to compare` };
  }
  if (commits.length === 0) return { note: `${path} is in no commit yet: no history to compare` };
  const now = parseLock(readFileSync(join(root, path), 'utf8')).entries;
  const lost: string[] = [];
  for (const c of commits) {
    for (const e of parseLock(git('show', `${c}:${path}`)).entries) {
      if (!now.some((x) => x.map === e.map && x.version === e.version && x.fingerprint === e.fingerprint)) {
        lost.push(`${e.map} ${e.version} ${e.fingerprint} (line ${e.line} in commit ${c.slice(0, 12)})`);
      }
    }
  }
  return { lost, commits: commits.length };
}

test('no entry of the lock was ever removed or changed since it was committed (git history)', (t) => {
  const r = lockHistoryLosses(packageRoot(), LOCK_PATH);
  if ('note' in r) {
    t.diagnostic(r.note);
    return;
  }
  t.diagnostic(`compared with ${r.commits} committed version(s) of ${LOCK_PATH}`);
  assert.deepEqual(r.lost, [], `entries of ${LOCK_PATH} were removed or changed; the lock is append-only: restore them, and give a changed map a new version`);
});

test('the git history check finds a changed or removed entry, committed or not (a scratch repository)', (t) => {
  const repo = mkdtempSync(join(tmpdir(), 'meshlane-lock-git-'));
  t.after(() => rmSync(repo, { recursive: true, force: true }));
  const git = (...args: string[]): void => void execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { stdio: 'ignore' });
  git('init', '-q');
  const file = join(repo, 'layouts.lock');
  const a = lockLine({ ...base, name: 'a' });
  const b = lockLine({ ...base, name: 'b' });
  writeFileSync(file, `${a}\n`);
  assert.match((lockHistoryLosses(repo, 'layouts.lock') as { note: string }).note, /no history|no commit/);
  git('add', 'layouts.lock');
  git('commit', '-q', '-m', 'lock a');
  writeFileSync(file, `${a}\n${b}\n`);
  assert.deepEqual(lockHistoryLosses(repo, 'layouts.lock'), { lost: [], commits: 1 }, 'an appended line is fine');
  git('commit', '-q', '-am', 'lock b');
  writeFileSync(file, `${lockLine({ ...base, name: 'a', maxEntries: 1 })}\n${b}\n`);
  const changed = lockHistoryLosses(repo, 'layouts.lock') as { lost: string[] };
  assert.equal(changed.lost.length, 2, `a changed line in the working file is found in both commits: ${changed.lost.join('; ')}`);
  git('commit', '-q', '-am', 'rewrite a');
  writeFileSync(file, `${lockLine({ ...base, name: 'a', maxEntries: 1 })}\n`);
  git('commit', '-q', '-am', 'drop b');
  const lost = (lockHistoryLosses(repo, 'layouts.lock') as { lost: string[] }).lost;
  assert.ok(lost.some((l) => l.startsWith('a 1 ')) && lost.some((l) => l.startsWith('b 1 ')), `committed rewrites and removals are found: ${lost.join('; ')}`);
});

// ---- the check itself, on made-up maps -----------------------------------------------------------

test('the fingerprint changes with the key, the value, the type, max_entries and the flags, and only with them', () => {
  const fp = mapFingerprint(base);
  assert.match(fp, /^[0-9a-f]{16}$/);
  assert.equal(mapFingerprint({ ...base }), fp, 'deterministic');
  const renamed: MapDef = { ...base, version: 7, what: 'other words', name: 'renamed' };
  assert.equal(mapFingerprint(renamed), fp, 'version, name and description are not layout');
  const variants: Array<[string, Partial<MapDef>]> = [
    ['key', { key: scalar(u32) }],
    ['value field type', { value: struct('demo_value', { a: u32, b: u32 }) }],
    ['value field name', { value: struct('demo_value', { a: u32, c: u16 }) }],
    ['value field order', { value: struct('demo_value', { b: u16, a: u32 }) }],
    ['type', { type: MapType.LPM_TRIE }],
    ['max_entries', { maxEntries: 2048 }],
    ['flags', { flags: MapFlags.NO_PREALLOC }],
  ];
  const seen = new Set([fp]);
  for (const [what, change] of variants) {
    const other = mapFingerprint({ ...base, ...change });
    assert.notEqual(other, fp, `changing the ${what} must change the fingerprint`);
    seen.add(other);
  }
  assert.equal(seen.size, variants.length + 1, 'every change gives its own fingerprint');
});

test('a layout changed without a new version fails, naming the map and the fix', () => {
  for (const change of [{ maxEntries: 2048 }, { flags: MapFlags.NO_PREALLOC }, { type: MapType.LPM_TRIE }, { value: scalar(u64) }] as Array<Partial<MapDef>>) {
    const problems = checkLock([{ ...base, ...change }], lockOf(base));
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.match(problems[0]!, /^layout of map demo changed without a new version: bump its version in layouts\.ts and run npm run layouts:lock/);
  }
});

test('a new version that is not locked yet fails with the command that appends it', () => {
  const problems = checkLock([{ ...base, version: 2, maxEntries: 2048 }], lockOf(base));
  assert.deepEqual(problems, [`map demo version 2 is not in ${LOCK_PATH}: run ${APPEND_COMMAND} to append it (and commit the lock)`]);
  assert.deepEqual(checkLock([{ ...base, version: 2, maxEntries: 2048 }], lockOf(base, { ...base, version: 2, maxEntries: 2048 })), [], 'passes once appended');
});

test('a map not in the lock at all fails the same way', () => {
  assert.match(checkLock([base, { ...base, name: 'other' }], lockOf(base)).join('\n'), /map other version 1 is not in .*npm run layouts:lock/);
});

test('a (map, version) twice in the lock fails, even with the same fingerprint', () => {
  const problems = checkLock([base], lockOf(base, base));
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /:4: map demo version 1 is already locked at line 3/);
});

test('a malformed line fails', () => {
  assert.match(checkLock([base], `${lockOf(base)}demo 2 xyz\n`).join('\n'), /:4: not '<map> <version> <16 hex digits>'/);
  assert.match(checkLock([base], `${lockOf(base)}demo 0 ${mapFingerprint(base)}\n`).join('\n'), /not '<map>/, 'versions start at 1');
});

test('appending (npm run layouts:lock) adds only the missing lines and never rewrites one', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'layouts.lock');
  assert.deepEqual(appendToLock(path, [base]), [lockLine(base)], 'a new lock gets a header and the entry');
  const first = readFileSync(path, 'utf8');
  assert.match(first, /^# meshlane map layout lock: .*APPEND-ONLY/);
  assert.deepEqual(appendToLock(path, [base]), [], 'nothing missing: nothing appended');
  assert.equal(readFileSync(path, 'utf8'), first);

  const v2 = { ...base, version: 2, flags: MapFlags.NO_PREALLOC };
  assert.deepEqual(appendToLock(path, [v2, { ...base, name: 'other' }]), [lockLine(v2), lockLine({ ...base, name: 'other' })]);
  const second = readFileSync(path, 'utf8');
  assert.ok(second.startsWith(first), 'the old text is kept byte for byte');
  assert.deepEqual(checkLock([v2], second), []);
  assert.deepEqual(checkLock([base], second), [], 'the old version stays locked');

  // a locked version whose layout changed is refused, and the file is left alone
  assert.throws(() => appendToLock(path, [{ ...v2, maxEntries: 1 }]), /layout of map demo changed without a new version: bump its version/);
  assert.equal(readFileSync(path, 'utf8'), second);

  // a hand-edited last line without a newline: the next entry goes on a line of its own
  writeFileSync(path, second.trimEnd());
  appendToLock(path, [{ ...base, version: 3 }]);
  assert.deepEqual(parseLock(readFileSync(path, 'utf8')).problems, []);
  assert.deepEqual(missingLines([base, v2, { ...base, version: 3 }], readFileSync(path, 'utf8')), []);
});
