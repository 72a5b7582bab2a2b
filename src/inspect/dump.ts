// `meshlane dump` as text: the decoded maps (dataplane/describe.ts) rendered one row per line. Shared by the
// CLI and the demo.
import { MAP_TITLES, type Row } from '../dataplane/describe.js';
import { MAP_NAMES, type MapName } from '../dataplane/layouts.js';

export function renderTable(rows: Row[]): string {
  if (rows.length === 0) return '  (empty)\n';
  return rows
    .map(
      (r) =>
        '  ' +
        Object.entries(r)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v.join(',')}]` : String(v)}`)
          .join(' ') +
        '\n',
    )
    .join('');
}

export function renderDump(d: Partial<Record<MapName, Row[] | string>>): string {
  let s = '';
  for (const n of MAP_NAMES) {
    const v = d[n];
    if (v === undefined) continue;
    s += `${MAP_TITLES[n]}\n${typeof v === 'string' ? `  ${v}\n` : renderTable(v)}`;
  }
  return s;
}
