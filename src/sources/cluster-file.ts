// The cluster file source: namespaces and pods from a YAML/JSON file (a `kubectl get -o yaml` List, a
// NamespaceList/PodList, or a multi-document stream), re-read whenever the file changes. Only a
// well-formed file replaces the state (see below); anything else is an error that names the cause.
//
// Watching: fs.watch on the directory (so an editor's write-to-temp-then-rename is seen) plus a poll of
// the file's mtime/size/inode as a fallback; events are debounced. A file that is not well formed never
// replaces the last good snapshot: an 'error' event carries the UserError and the source keeps watching.

import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { closeSync, openSync, readSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { UserError, isErrno } from '../util/errors.js';

export interface ClusterSnapshot {
  namespaces: unknown[];
  pods: unknown[];
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split('\n')[0] ?? '').trim();
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// What a cluster file must be (anything else is an error and the last good state stays, so that no
// file releases capture by accident: an empty file, the gap of a shell `>` rewrite, an HTML error page,
// text that happens to parse as a YAML scalar, a file cut short):
// - one JSON document, or a YAML stream of documents (empty documents are skipped), at least one;
// - every document a Kubernetes object: a mapping with a string `apiVersion` and `kind`;
// - a `List`, `PodList` or `NamespaceList` has an `items` array; every item is an object with its own
//   `apiVersion` and `kind` (in a PodList / NamespaceList the kind may be left out, as the API server
//   does, and is then the list's item kind);
// - a Pod has metadata.name, spec.containers (a list) and a status (the API server always writes one;
//   a pod cut short loses it first); a Namespace has metadata.name;
// - other kinds (a Service next to the pods, as `kubectl get all -o yaml` gives) are ignored, but a
//   file with no Namespace or Pod at all is an error: an explicit empty List (`items: []`) is the one
//   way to release every pod.
// A truncation is caught when it removes something required: the List's own `kind` (kubectl prints
// it after the items), the tail of the last object. A cut inside a value (a label cut short) is valid
// YAML that no reader can tell from an intended value.

const LIST_ITEM_KIND: Record<string, 'Pod' | 'Namespace' | undefined> = { List: undefined, PodList: 'Pod', NamespaceList: 'Namespace' };
const FIX =
  'write a List of Namespaces and Pods (kubectl get namespaces,pods -A -o yaml), whole (to a temporary file, then rename it over); an empty List releases every pod';

class Shape extends Error {}

function what(v: unknown): string {
  if (v === null || v === undefined) return 'empty';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return /^\s*</.test(v) ? 'text that looks like HTML: an error page saved in its place?' : 'a string';
  return `a ${typeof v}`;
}

const isName = (v: unknown): v is string => typeof v === 'string' && v !== '';

interface Walk {
  out: ClusterSnapshot;
  /** kinds other than Pod and Namespace, in the order seen */
  others: Set<string>;
  /** an explicit empty List / PodList / NamespaceList was seen */
  emptyList: boolean;
  /** pods that pass the checks but are not kept (another node's) */
  keep?: ((pod: unknown) => boolean) | undefined;
  /** pods checked (kept or not) */
  seenPods: number;
}

/** Checks one object (and a list's items) and sorts it into the snapshot; throws Shape on a bad one. */
function collect(obj: unknown, where: string, w: Walk, itemKind?: 'Pod' | 'Namespace'): void {
  if (!isRecord(obj)) throw new Shape(`${where} is not a Kubernetes object (${what(obj)})`);
  let kind: string;
  if (isName(obj.kind)) kind = obj.kind;
  else if (itemKind !== undefined && obj.kind === undefined) kind = itemKind;
  else throw new Shape(`${where} has no kind (not a Kubernetes object, or cut short?)`);
  if (itemKind !== undefined && kind !== itemKind) throw new Shape(`${where} is a ${kind} in a ${itemKind}List`);
  if (itemKind === undefined && !isName(obj.apiVersion)) throw new Shape(`${where} (${kind}) has no apiVersion (a file cut short?)`);
  if (kind in LIST_ITEM_KIND) {
    const items = obj.items;
    if (!Array.isArray(items)) throw new Shape(`${where} (${kind}) has no items list (a file cut short?)`);
    if (items.length === 0) w.emptyList = true;
    items.forEach((item, i) => collect(item, `item ${i + 1} of ${where === 'the file' ? `the ${kind}` : where}`, w, LIST_ITEM_KIND[kind]));
    return;
  }
  if (kind !== 'Pod' && kind !== 'Namespace') {
    w.others.add(kind);
    return;
  }
  const meta = obj.metadata;
  if (!isRecord(meta) || !isName(meta.name)) throw new Shape(`${where}: a ${kind} with no metadata.name (a file cut short?)`);
  if (kind === 'Namespace') {
    w.out.namespaces.push(obj);
    return;
  }
  const pod = `Pod ${isName(meta.namespace) ? meta.namespace : 'default'}/${meta.name}`;
  if (!isRecord(obj.spec) || !Array.isArray(obj.spec.containers)) throw new Shape(`${where}: ${pod} has no spec.containers (a file cut short?)`);
  if (!isRecord(obj.status)) throw new Shape(`${where}: ${pod} has no status (a file cut short?)`);
  w.seenPods++;
  if (w.keep === undefined || w.keep(obj)) w.out.pods.push(obj);
}

function parseDocuments(text: string): unknown[] {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    // JSON first: YAML is stricter about tabs, and JSON's own message is clearer for a JSON file
    try {
      return [JSON.parse(text) as unknown];
    } catch {
      // not JSON after all (e.g. a YAML flow mapping followed by more documents): fall through
    }
  }
  const docs: unknown[] = [];
  for (const doc of parseAllDocuments(text)) {
    const err = doc.errors[0];
    if (err) throw err;
    docs.push(doc.toJS({ maxAliasCount: 1000 }));
  }
  return docs;
}

// A JSON List, item by item. JSON.parse of the whole file builds every item of it at once (10,000 pods to
// keep 250 at node scale): all of them live until the parse ends, so V8 moves them out of its young
// generation and the old one grows by 100+ MiB per change (bench/RESULTS.md, "Node scale"). Here the
// List's `items` array is cut into its elements by a scan that follows JSON's strings and brackets, each
// element is parsed and checked on its own and another node's pod is dropped at once. The rest of the
// List (its kind, apiVersion, metadata) is parsed with `[]` in the place of the items, so every byte
// outside the items is JSON.parse's to accept too, and every element is a complete JSON value on its own.
// Whatever is not that simple shape, or fails (bad JSON anywhere, a bad item), goes to the whole-text
// path, which says what is wrong exactly as before.

const enum Ch {
  Quote = 0x22,
  Backslash = 0x5c,
  Comma = 0x2c,
  Colon = 0x3a,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
  OpenBracket = 0x5b,
  CloseBracket = 0x5d,
}

const isWs = (c: number | undefined): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

// The scan reads the file's bytes, not a decoded string: JSON's structure is ASCII, and no byte of a UTF-8
// multi-byte sequence is below 0x80, so element bounds fall between characters and each element is decoded
// on its own (the 17.8 MiB file is never one string).

/** The end (exclusive) of the JSON string opening at `i`, or -1 when the bytes end inside it. */
function stringEnd(b: Buffer, i: number): number {
  for (let j = i + 1; j < b.length; j++) {
    const c = b[j];
    if (c === Ch.Backslash) j++;
    else if (c === Ch.Quote) return j + 1;
  }
  return -1;
}

/** The end (exclusive) of the JSON value starting at `i` (a string, or brackets balanced outside strings; a
 * scalar runs to the next separator). -1 when the bytes end first. Its well-formedness is JSON.parse's. */
function valueEnd(b: Buffer, i: number): number {
  let depth = 0;
  for (let j = i; j < b.length; j++) {
    const c = b[j];
    if (c === Ch.Quote) {
      j = stringEnd(b, j) - 1;
      if (j < 0) return -1;
      if (depth === 0) return j + 1;
    } else if (c === Ch.OpenBrace || c === Ch.OpenBracket) depth++;
    else if (c === Ch.CloseBrace || c === Ch.CloseBracket) {
      if (depth === 0) return j; // a scalar before the enclosing close
      if (--depth === 0) return j + 1;
    } else if (depth === 0 && (c === Ch.Comma || isWs(c))) return j;
  }
  return depth === 0 ? b.length : -1;
}

const skipWs = (b: Buffer, i: number): number => {
  while (i < b.length && isWs(b[i])) i++;
  return i;
};

/** Where the top-level object's one `items` array is, and its elements: undefined for any other shape. */
function listItems(b: Buffer): { open: number; close: number; items: Array<[number, number]> } | undefined {
  let i = skipWs(b, 0);
  if (b[i] !== Ch.OpenBrace) return undefined;
  i = skipWs(b, i + 1);
  let found: { open: number; close: number; items: Array<[number, number]> } | undefined;
  while (b[i] === Ch.Quote) {
    const keyEnd = stringEnd(b, i);
    if (keyEnd < 0) return undefined;
    let key: unknown;
    try {
      key = JSON.parse(b.toString('utf8', i, keyEnd));
    } catch {
      return undefined;
    }
    i = skipWs(b, keyEnd);
    if (b[i] !== Ch.Colon) return undefined;
    i = skipWs(b, i + 1);
    if (key === 'items') {
      // a second `items` (JSON.parse keeps the last) or one that is no array: the whole-text path
      if (found || b[i] !== Ch.OpenBracket) return undefined;
      const items: Array<[number, number]> = [];
      const open = i;
      i = skipWs(b, i + 1);
      if (b[i] !== Ch.CloseBracket) {
        for (;;) {
          const end = valueEnd(b, i);
          if (end < 0) return undefined;
          items.push([i, end]);
          i = skipWs(b, end);
          if (b[i] === Ch.CloseBracket) break;
          if (b[i] !== Ch.Comma) return undefined;
          i = skipWs(b, i + 1);
        }
      }
      found = { open, close: i, items };
      i = skipWs(b, i + 1);
    } else {
      const end = valueEnd(b, i);
      if (end < 0) return undefined;
      i = skipWs(b, end);
    }
    if (b[i] !== Ch.Comma) break;
    i = skipWs(b, i + 1);
  }
  return found;
}

/** What one item of a JSON List came to, to be applied again when its bytes come again unchanged. Another
 * node's pod keeps nothing of itself (at node scale those are nearly all of the file). */
type ItemResult = { readonly ns: unknown } | { readonly pod: unknown } | { readonly dropped: true } | { readonly other: string };
const DROPPED: ItemResult = { dropped: true };

/**
 * The last good JSON List: its bytes, where its items are, and what each came to. A file rewritten whole for
 * one changed pod (a controller's dump, the node-scale benchmark) is compared with it byte for byte (native
 * memcmp, from both ends); only the items in between the equal head and tail are scanned, parsed and
 * checked, and the others are what they were. Every item in a snapshot was checked once, with exactly these
 * bytes; what cannot be narrowed that way (the List's own fields changed) is read whole, and even then an
 * item whose bytes are those of the item at its place is not parsed again. See bench/RESULTS.md, "Node scale".
 * A memo is used up by a parse that succeeds with it (the new memo may be written over its arrays); one that
 * fails leaves it as it was.
 */
export interface ListMemo {
  readonly bytes: Buffer;
  readonly kind: string;
  /** the offsets of the items array's `[` and `]` */
  readonly open: number;
  readonly close: number;
  /** each item's first byte and the byte after it */
  readonly starts: Int32Array;
  readonly ends: Int32Array;
  readonly results: readonly ItemResult[];
}

function apply(r: ItemResult, w: Walk): void {
  if ('ns' in r) w.out.namespaces.push(r.ns);
  else if ('pod' in r) {
    w.seenPods++;
    w.out.pods.push(r.pod);
  } else if ('dropped' in r) w.seenPods++;
  else w.others.add(r.other);
}

/** Parses and checks one item (collect) and says what it came to. */
function parseItem(b: Buffer, start: number, end: number, n: number, kind: string, w: Walk): ItemResult {
  const obj = JSON.parse(b.toString('utf8', start, end)) as unknown;
  const ns = w.out.namespaces.length;
  const pods = w.out.pods.length;
  const seen = w.seenPods;
  collect(obj, `item ${n + 1} of the ${kind}`, w, LIST_ITEM_KIND[kind]);
  if (w.out.namespaces.length > ns) return { ns: obj };
  if (w.seenPods > seen) return w.out.pods.length > pods ? { pod: obj } : DROPPED;
  return { other: (obj as { kind: string }).kind };
}

/** The List's own fields, checked: its kind, or undefined when it is not a List / PodList / NamespaceList. */
function listKind(b: Buffer, open: number, close: number): string | undefined {
  let list: unknown;
  try {
    list = JSON.parse(`${b.toString('utf8', 0, open)}[]${b.toString('utf8', close + 1)}`);
  } catch {
    return undefined;
  }
  if (!isRecord(list) || !isName(list.kind) || !(list.kind in LIST_ITEM_KIND) || !isName(list.apiVersion)) return undefined;
  if (!Array.isArray(list.items) || list.items.length !== 0) return undefined;
  return list.kind;
}

/** Whether b[start, end) has the bytes of the memo's item k (false when there is no item k). */
function isOldItem(b: Buffer, start: number, end: number, old: ListMemo, k: number): boolean {
  if (k < 0 || k >= old.starts.length) return false;
  const os = old.starts[k]!;
  const oe = old.ends[k]!;
  return end - start === oe - os && b.compare(old.bytes, os, oe, start, end) === 0;
}

/** A JSON List read whole, item by item (see above); undefined: not that shape, or not well formed. An item
 * whose bytes are those of the memo's item at its place (one added or removed moves the place by one) is
 * not parsed again. */
function collectJsonList(b: Buffer, w: Walk, memo: ListMemo | undefined): ListMemo | undefined {
  const at = listItems(b);
  if (!at) return undefined;
  const kind = listKind(b, at.open, at.close);
  if (kind === undefined) return undefined;
  const old = memo?.kind === kind ? memo : undefined;
  const count = at.items.length;
  const same = (n: number, m: number): boolean => old !== undefined && n < count && isOldItem(b, at.items[n]![0], at.items[n]![1], old, m);
  const results: ItemResult[] = [];
  try {
    // m: the old item expected next. Anything but one item changed, added or removed at a time (a reordered
    // file) is parsed item by item from there, which is always right, only slower.
    let m = 0;
    for (let n = 0; n < count; n++) {
      if (same(n, m)) {
        apply(old!.results[m]!, w);
        results.push(old!.results[m++]!);
      } else if (same(n, m + 1)) {
        apply(old!.results[m + 1]!, w); // old item m was removed
        results.push(old!.results[m + 1]!);
        m += 2;
      } else {
        const [start, end] = at.items[n]!;
        results.push(parseItem(b, start, end, n, kind, w));
        if (!same(n + 1, m)) m++; // item n took old item m's place (else it was added before it)
      }
    }
  } catch {
    return undefined; // bad JSON in an item, or a bad item: the whole-text path reports it (in the order it always has)
  }
  if (count === 0) w.emptyList = true;
  const starts = new Int32Array(count);
  const ends = new Int32Array(count);
  at.items.forEach(([s, e], n) => ((starts[n] = s), (ends[n] = e)));
  return { bytes: b, kind, open: at.open, close: at.close, starts, ends, results };
}

const CHUNK = 64 * 1024;

/** A List's new bytes made from the memo's in place (readPatched): its equal head (p) and tail (s). */
export interface Patched {
  readonly p: number;
  readonly s: number;
}

/** A changed file read into the memo's buffer: the memo it came from (its items; its bytes are the new ones now)
 * and where the two differ. */
interface PatchedRead {
  readonly memo: ListMemo;
  readonly at: Patched;
}

const READ_CHUNK = 1024 * 1024;

/** Reads len bytes at pos into buf at off; false when the file ends first (it is being written). */
function readFully(fd: number, buf: Buffer, off: number, len: number, pos: number): boolean {
  while (len > 0) {
    const bytesRead = readSync(fd, buf, off, len, pos);
    if (bytesRead === 0) return false;
    off += bytesRead;
    len -= bytesRead;
    pos += bytesRead;
  }
  return true;
}

/**
 * Reads a file of `size` bytes (by its stat) against the last good List's bytes `old`, which lie at the start
 * of `base` (a buffer with room to spare, or `old` itself): the equal head is compared chunk by chunk as it is
 * read, then the equal tail from the end, and only the bytes in between are kept, written into `base` in place
 * (the tail moved to its new place; a larger buffer only when the file outgrew it). A change of a file
 * rewritten whole then costs one pass of reads and compares over it, and no second copy of it in memory
 * (17.8 MiB at 10,000 pods). `old`'s bytes are the new file's afterwards, whatever the caller makes of them.
 * Synchronous: 17.8 MiB compared in one go hold the event loop for about 10 ms. Asynchronous reads (a hop to
 * libuv's pool and back for each chunk) took event to map from p50/p99 15/79 to 18/114 ms in bench/scale.ts.
 * undefined: the file ended before its stat said (being written).
 */
export function readPatched(fd: number, size: number, old: Buffer, base: Buffer, chunk: Buffer): { bytes: Buffer; base: Buffer; patched: Patched } | undefined {
  const n = Math.min(old.length, size);
  let p = 0;
  while (p < n) {
    const len = Math.min(chunk.length, n - p);
    if (!readFully(fd, chunk, 0, len, p)) return undefined;
    if (chunk.compare(old, p, p + len, 0, len) === 0) {
      p += len;
      continue;
    }
    let i = 0;
    while (chunk[i] === old[p + i]) i++;
    p += i;
    break;
  }
  const most = n - p;
  let s = 0;
  while (s < most) {
    const len = Math.min(chunk.length, most - s);
    if (!readFully(fd, chunk, 0, len, size - s - len)) return undefined;
    if (chunk.compare(old, old.length - s - len, old.length - s, 0, len) === 0) {
      s += len;
      continue;
    }
    let i = 0;
    while (i < len && chunk[len - 1 - i] === old[old.length - 1 - s - i]) i++;
    s += i;
    break;
  }
  const mid = Buffer.allocUnsafe(size - p - s);
  if (!readFully(fd, mid, 0, mid.length, p)) return undefined;
  let target = base;
  if (size > base.length) {
    target = Buffer.allocUnsafeSlow(size + Math.max(READ_CHUNK, size >> 4));
    old.copy(target, 0, 0, p);
    old.copy(target, size - s, old.length - s, old.length);
  } else base.copyWithin(size - s, old.length - s, old.length); // the tail to its new place (a memmove)
  mid.copy(target, p);
  return { bytes: target.subarray(0, size), base: target, patched: { p, s } };
}

/** How many bytes from the start (p) and, not overlapping those, from the end (s) `a` and `b` have in common. */
export function commonEnds(a: Buffer, b: Buffer): { p: number; s: number } {
  const n = Math.min(a.length, b.length);
  let p = 0;
  while (p < n) {
    const e = Math.min(n, p + CHUNK);
    if (a.compare(b, p, e, p, e) === 0) p = e;
    else {
      while (a[p] === b[p]) p++;
      break;
    }
  }
  const most = n - p;
  let s = 0;
  while (s < most) {
    const len = Math.min(CHUNK, most - s);
    if (a.compare(b, b.length - s - len, b.length - s, a.length - s - len, a.length - s) === 0) s += len;
    else {
      while (s < most && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
      break;
    }
  }
  return { p, s };
}

/** The first index whose value is > x in an ascending array (its length when none). */
function firstAbove(xs: Int32Array, x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The memo's List with only its middle rewritten: `b` equals the memo's bytes but for one run of bytes
 * inside the items array. The items before that run are the memo's (same bytes, same place), the scan starts
 * after the last of them in the state the memo's scan had there (after an item), and it stops at the first
 * item end in the equal tail that is an item end of the memo's too: from there on both texts are the same
 * bytes read from the same state, so the rest are the memo's items, moved by the difference in length.
 * undefined: the change is not of that kind (the List's own fields, the tail after its items), or the
 * middle is not well formed (the whole-text path says what is wrong).
 */
function collectChangedMiddle(b: Buffer, w: Walk, old: ListMemo, patched?: Patched): ListMemo | undefined {
  // patched: `b` was made from the memo's own bytes in place (readPatched), so the equal head and tail are
  // known and the memo's bytes are not there to compare with any more (only their length is)
  const { p, s } = patched ?? commonEnds(old.bytes, b);
  if (p <= old.open || old.bytes.length - s > old.close) return undefined;
  const d = b.length - old.bytes.length;
  const tail = b.length - s; // new offsets from here on are the memo's + d, byte for byte
  const a = firstAbove(old.ends, p); // old items 0..a-1 lie in the equal head
  const starts: number[] = [];
  const ends: number[] = [];
  const results: ItemResult[] = [];
  for (let k = 0; k < a; k++) apply(old.results[k]!, w);
  let i = a > 0 ? old.ends[a - 1]! : old.open + 1;
  let afterItem = a > 0;
  let resume = -1; // the old item the equal tail resumes with
  let m = a;
  try {
    for (;;) {
      i = skipWs(b, i);
      if (afterItem) {
        if (b[i] === Ch.CloseBracket) break;
        if (b[i] !== Ch.Comma) return undefined;
        i = skipWs(b, i + 1);
      } else if (b[i] === Ch.CloseBracket) break;
      const end = valueEnd(b, i);
      if (end < 0) return undefined;
      const n = a + starts.length;
      starts.push(i);
      ends.push(end);
      // an item of the middle that is the old one at its place (changes further apart than one item each
      // make one long middle): not parsed again; m is the old item expected next, as in collectJsonList
      const hit = patched ? undefined : [m, m + 1, m - 1].find((k) => k >= a && isOldItem(b, i, end, old, k));
      if (hit !== undefined) {
        apply(old.results[hit]!, w);
        results.push(old.results[hit]!);
        m = hit + 1;
      } else {
        results.push(parseItem(b, i, end, n, old.kind, w));
        m++;
      }
      i = end;
      afterItem = true;
      if (end >= tail) {
        const k = firstAbove(old.ends, end - d - 1); // the old item ending at end - d, if any
        if (k < old.ends.length && old.ends[k] === end - d) {
          resume = k + 1;
          break;
        }
      }
    }
  } catch {
    return undefined;
  }
  const count = a + starts.length + (resume >= 0 ? old.ends.length - resume : 0);
  const close = resume >= 0 ? old.close + d : i;
  if (resume < 0 && close - d !== old.close) return undefined; // the items end elsewhere: read it whole
  const tailFrom = resume >= 0 ? resume : old.ends.length; // old items a..tailFrom-1 are the middle's
  for (let k = tailFrom; k < old.results.length; k++) apply(old.results[k]!, w);
  let s2: Int32Array;
  let e2: Int32Array;
  let all: ItemResult[];
  if (tailFrom - a === starts.length) {
    // as many items as before (a pod changed): the old memo's arrays, written over in place (the old memo is
    // the caller's to drop; a new 10,000-item array per change is what V8 would promote and keep collecting)
    s2 = old.starts;
    e2 = old.ends;
    all = old.results as ItemResult[];
    s2.set(starts, a);
    e2.set(ends, a);
    for (let j = 0; j < results.length; j++) all[a + j] = results[j]!;
    if (d !== 0) {
      for (let k = tailFrom; k < count; k++) {
        s2[k] = s2[k]! + d;
        e2[k] = e2[k]! + d;
      }
    }
  } else {
    s2 = new Int32Array(count);
    e2 = new Int32Array(count);
    s2.set(old.starts.subarray(0, a));
    e2.set(old.ends.subarray(0, a));
    s2.set(starts, a);
    e2.set(ends, a);
    all = old.results.slice(0, a).concat(results);
    for (let k = tailFrom, j = a + starts.length; k < old.ends.length; k++, j++) {
      s2[j] = old.starts[k]! + d;
      e2[j] = old.ends[k]! + d;
      all.push(old.results[k]!);
    }
  }
  if (count === 0) w.emptyList = true;
  return { bytes: b, kind: old.kind, open: old.open, close, starts: s2, ends: e2, results: all };
}

/**
 * Parses a cluster file's bytes (UTF-8): a JSON List item by item, anything else (and any JSON List that is
 * not well formed) as parseClusterFile(text) always has. Throws like parseClusterFile. `memo`: the last good
 * read's (parseClusterBytesMemo), whose unchanged items are not parsed again.
 */
export function parseClusterBytes(bytes: Buffer, fileName: string, keep?: (pod: unknown) => boolean): ClusterSnapshot {
  return parseClusterBytesMemo(bytes, fileName, keep).snapshot;
}

/** parseClusterBytes, with the memo of this read for the next (undefined when it was not a JSON List). */
export function parseClusterBytesMemo(
  bytes: Buffer,
  fileName: string,
  keep?: (pod: unknown) => boolean,
  memo?: ListMemo,
  patched?: Patched,
): { snapshot: ClusterSnapshot; memo: ListMemo | undefined } {
  const walk = (): Walk => ({ out: { namespaces: [], pods: [] }, others: new Set(), emptyList: false, keep, seenPods: 0 });
  let w = walk();
  let next = memo ? collectChangedMiddle(bytes, w, memo, patched) : undefined;
  // (patched: the memo's bytes are the new ones now, so it cannot serve the whole read)
  if (!next) next = collectJsonList(bytes, (w = walk()), patched ? undefined : memo);
  if (next) {
    if (w.out.namespaces.length + w.seenPods === 0 && !w.emptyList) {
      throw new UserError(`cannot read cluster file ${fileName}: no Namespace or Pod in it (only ${[...w.others].join(', ')}): ${FIX}`);
    }
    return { snapshot: w.out, memo: next };
  }
  return { snapshot: parseClusterFile(bytes.toString('utf8'), fileName, keep, { wholeText: true }), memo: undefined };
}

/**
 * Parses a cluster file's text. Throws UserError(`cannot read cluster file <file>: <cause>: <fix>`).
 * `keep` leaves pods out of the snapshot (another node's: at node scale they are nearly all of the file);
 * they are checked like every other object all the same, so a file cut short is refused as before.
 */
export function parseClusterFile(text: string, fileName: string, keep?: (pod: unknown) => boolean, opts: { wholeText?: boolean } = {}): ClusterSnapshot {
  // (opts.wholeText: this path only, which the item-by-item one must agree with: the unit tests). A string
  // that UTF-8 cannot carry as it is (a lone surrogate: not from a file) stays on this path.
  if (!opts.wholeText) {
    const bytes = Buffer.from(text, 'utf8');
    if (bytes.toString('utf8') === text) return parseClusterBytes(bytes, fileName, keep);
  }
  let docs: unknown[];
  try {
    docs = parseDocuments(text);
  } catch (e) {
    throw new UserError(`cannot read cluster file ${fileName}: ${firstLine(e)}`);
  }
  const w: Walk = { out: { namespaces: [], pods: [] }, others: new Set(), emptyList: false, keep, seenPods: 0 };
  const present = docs.flatMap((d, i) => (d === null || d === undefined ? [] : [{ d, n: i + 1 }]));
  try {
    if (present.length === 0) throw new Shape('the file is empty (no objects)');
    for (const { d, n } of present) collect(d, docs.length === 1 ? 'the file' : `document ${n}`, w);
    if (w.out.namespaces.length + w.seenPods === 0 && !w.emptyList) {
      throw new Shape(`no Namespace or Pod in it (only ${[...w.others].join(', ')})`);
    }
  } catch (e) {
    if (e instanceof Shape) throw new UserError(`cannot read cluster file ${fileName}: ${e.message}: ${FIX}`);
    throw e;
  }
  return w.out;
}

export interface ClusterFileSourceOptions {
  /** fallback poll of the file's stat, ms (default 500) */
  pollMs?: number;
  /** quiet time after a change event before reading, ms (default 50) */
  debounceMs?: number;
  /** the pods to keep in the snapshot (default all; see parseClusterFile) */
  keep?: (pod: unknown) => boolean;
}

const digestOf = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('base64');

function signature(st: Stats | undefined): string {
  return st ? `${st.ino}:${st.size}:${st.mtimeMs}` : 'missing';
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return undefined;
    throw e;
  }
}

/**
 * Emits 'snapshot' (ClusterSnapshot) at start and after every change that parses, and 'error'
 * (UserError) when the file cannot be read or parsed (the last good snapshot stays in `current`).
 */
export class ClusterFileSource extends EventEmitter {
  private readonly pollMs: number;
  private readonly debounceMs: number;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private running = false;
  private reading = false;
  private readAgain = false;
  /** stat signature when the file was last read (or found missing) */
  private seenSig: string | undefined;
  /** the last good file, when it was a JSON List: a file touched but not changed is not parsed again, and of
   * one rewritten whole only the items that changed are (parseClusterBytesMemo) */
  private memo: ListMemo | undefined;
  /** the buffer the memo's bytes lie at the start of (with room to grow), and readPatched's chunk */
  private base: Buffer | undefined;
  private chunk: Buffer | undefined;
  /** a digest of the last good file's bytes when it was not a JSON List (YAML: its text is not kept) */
  private lastGoodDigest: string | undefined;
  private readonly keep: ((pod: unknown) => boolean) | undefined;
  private lastError: string | undefined;
  private snapshot: ClusterSnapshot | undefined;

  constructor(
    readonly path: string,
    opts: ClusterFileSourceOptions = {},
  ) {
    super();
    this.pollMs = opts.pollMs ?? 500;
    this.debounceMs = opts.debounceMs ?? 50;
    this.keep = opts.keep;
  }

  /** The last good snapshot, if any. */
  get current(): ClusterSnapshot | undefined {
    return this.snapshot;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.startWatcher();
    this.pollTimer = setInterval(() => void this.poll(), this.pollMs);
    this.schedule(0);
  }

  stop(): void {
    this.running = false;
    this.watcher?.close();
    this.watcher = undefined;
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
    this.pollTimer = undefined;
    this.debounceTimer = undefined;
  }

  private startWatcher(): void {
    const name = basename(this.path);
    try {
      this.watcher = watch(dirname(this.path), { persistent: true }, (event, file) => {
        // A rename onto the file's name is a whole new file in place (written to a temporary file, then
        // renamed over): read at once. Writes in place are debounced, and so is a rename that turns out not
        // to parse (the first write after a create), so that a file being written is not reported.
        if (file === null || file.toString() === name) this.schedule(event === 'rename' ? 0 : this.debounceMs, event === 'rename');
      });
      this.watcher.on('error', () => {
        // the directory went away or the watch broke: the poll still covers us
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined; // e.g. the directory does not exist yet: rely on the poll
    }
  }

  private schedule(delayMs: number, quick = false): void {
    if (!this.running) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.read(quick), delayMs);
  }

  private async poll(): Promise<void> {
    if (!this.running || this.reading) return;
    if (!this.watcher) this.startWatcher(); // the directory may exist by now
    try {
      const sig = signature(await statOrUndefined(this.path));
      if (sig !== this.seenSig) this.schedule(0);
    } catch {
      this.schedule(0); // let read() report it
    }
  }

  /** Reads until the file is stable across one read; one read at a time. */
  private async read(quick = false): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.readAgain = false;
        if (!this.running) return;
        await this.readOnce(quick);
        quick = false;
      } while (this.readAgain);
    } finally {
      this.reading = false;
    }
  }

  /** quick: right after a rename event; a file that does not parse is looked at again after the debounce
   * before it is reported */
  private async readOnce(quick: boolean): Promise<void> {
    let bytes: Buffer;
    let patched: PatchedRead | undefined;
    try {
      const before = await statOrUndefined(this.path);
      if (!before) {
        if (quick) return this.schedule(this.debounceMs); // renamed away: an editor may be writing it anew
        this.seenSig = 'missing';
        this.fail(new UserError(`cannot read cluster file ${this.path}: file not found`));
        return;
      }
      if (this.memo && this.base) {
        const memo = this.memo;
        const fd = openSync(this.path, 'r');
        let r: ReturnType<typeof readPatched>;
        try {
          r = readPatched(fd, before.size, memo.bytes, this.base, (this.chunk ??= Buffer.allocUnsafeSlow(READ_CHUNK)));
        } finally {
          closeSync(fd);
        }
        if (!r) return this.schedule(this.debounceMs); // cut short (being written): nothing was written into the memo
        bytes = r.bytes;
        this.base = r.base;
        // The memo's bytes are the new file's now. Unchanged, the memo stays, on the new view; changed, its
        // items serve this read's parse and nothing after it.
        const unchanged = r.patched.p === memo.bytes.length && r.patched.p === bytes.length;
        this.memo = unchanged ? { ...memo, bytes } : undefined;
        if (!unchanged) patched = { memo, at: r.patched };
      } else bytes = await readFile(this.path);
      const after = await statOrUndefined(this.path);
      if (signature(before) !== signature(after)) {
        this.schedule(this.debounceMs); // being written right now: look again once it settles
        return;
      }
      this.seenSig = signature(after);
    } catch (e) {
      this.fail(new UserError(`cannot read cluster file ${this.path}: ${firstLine(e)}`));
      return;
    }
    this.accept(bytes, quick, patched);
  }

  private accept(bytes: Buffer, quick: boolean, patched: PatchedRead | undefined): void {
    if (!this.running) return;
    // touched, not changed (a patched read is a changed one)
    if (this.lastError === undefined && !patched) {
      if (this.memo ? this.memo.bytes === bytes || this.memo.bytes.equals(bytes) : this.lastGoodDigest === digestOf(bytes)) return;
    }
    let got: { snapshot: ClusterSnapshot; memo: ListMemo | undefined };
    try {
      got = parseClusterBytesMemo(bytes, this.path, this.keep, patched?.memo ?? this.memo, patched?.at);
    } catch (e) {
      if (quick) this.schedule(this.debounceMs);
      else this.fail(e instanceof UserError ? e : new UserError(`cannot read cluster file ${this.path}: ${firstLine(e)}`));
      return;
    }
    this.memo = got.memo;
    // the memo's bytes lie at the start of `base` (a whole read's buffer, or the one they were patched into)
    if (got.memo && got.memo.bytes.buffer !== this.base?.buffer) this.base = got.memo.bytes;
    this.lastGoodDigest = got.memo ? undefined : digestOf(bytes);
    this.lastError = undefined;
    this.snapshot = got.snapshot;
    this.emit('snapshot', got.snapshot);
  }

  private fail(err: UserError): void {
    if (!this.running) return;
    if (err.message === this.lastError) return; // already reported
    this.lastError = err.message;
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}
