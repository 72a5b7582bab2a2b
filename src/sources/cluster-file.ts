// The cluster file source: namespaces and pods from a YAML/JSON file (a `kubectl get -o yaml` List, a
// NamespaceList/PodList, or a multi-document stream), re-read whenever the file changes.
//
// Watching: fs.watch on the directory (so an editor's write-to-temp-then-rename is seen) plus a poll of
// the file's mtime/size/inode as a fallback; events are debounced. A file that does not parse never
// replaces the last good snapshot: an 'error' event carries the UserError and the source keeps watching.

import { EventEmitter } from 'node:events';
import { watch, type FSWatcher, type Stats } from 'node:fs';
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

/** Sorts one object (or list of objects) into the snapshot; unknown kinds are ignored. */
function collect(obj: unknown, out: ClusterSnapshot, itemKind?: 'Namespace' | 'Pod'): void {
  if (Array.isArray(obj)) {
    for (const o of obj) collect(o, out, itemKind);
    return;
  }
  if (!isRecord(obj)) return;
  const kind = typeof obj.kind === 'string' ? obj.kind : itemKind;
  if (kind === 'Namespace') out.namespaces.push(obj);
  else if (kind === 'Pod') out.pods.push(obj);
  else if (kind === 'NamespaceList') collect(obj.items, out, 'Namespace');
  else if (kind === 'PodList') collect(obj.items, out, 'Pod');
  else if (kind === 'List') collect(obj.items, out);
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

/** Parses a cluster file's text. Throws UserError(`cannot read cluster file <file>: <reason>`). */
export function parseClusterFile(text: string, fileName: string): ClusterSnapshot {
  let docs: unknown[];
  try {
    docs = parseDocuments(text);
  } catch (e) {
    throw new UserError(`cannot read cluster file ${fileName}: ${firstLine(e)}`);
  }
  const out: ClusterSnapshot = { namespaces: [], pods: [] };
  for (const d of docs) collect(d, out);
  return out;
}

export interface ClusterFileSourceOptions {
  /** fallback poll of the file's stat, ms (default 500) */
  pollMs?: number;
  /** quiet time after a change event before reading, ms (default 50) */
  debounceMs?: number;
}

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
  private lastGoodText: string | undefined;
  private lastError: string | undefined;
  private snapshot: ClusterSnapshot | undefined;

  constructor(
    readonly path: string,
    opts: ClusterFileSourceOptions = {},
  ) {
    super();
    this.pollMs = opts.pollMs ?? 500;
    this.debounceMs = opts.debounceMs ?? 50;
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
      this.watcher = watch(dirname(this.path), { persistent: true }, (_event, file) => {
        if (file === null || file.toString() === name) this.schedule(this.debounceMs);
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

  private schedule(delayMs: number): void {
    if (!this.running) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.read(), delayMs);
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
  private async read(): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.readAgain = false;
        if (!this.running) return;
        await this.readOnce();
      } while (this.readAgain);
    } finally {
      this.reading = false;
    }
  }

  private async readOnce(): Promise<void> {
    let text: string;
    try {
      const before = await statOrUndefined(this.path);
      if (!before) {
        this.seenSig = 'missing';
        this.fail(new UserError(`cannot read cluster file ${this.path}: file not found`));
        return;
      }
      text = await readFile(this.path, 'utf8');
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
    this.accept(text);
  }

  private accept(text: string): void {
    if (!this.running) return;
    if (text === this.lastGoodText && this.lastError === undefined) return; // touched, not changed
    let snap: ClusterSnapshot;
    try {
      snap = parseClusterFile(text, this.path);
    } catch (e) {
      this.fail(e instanceof UserError ? e : new UserError(`cannot read cluster file ${this.path}: ${firstLine(e)}`));
      return;
    }
    this.lastGoodText = text;
    this.lastError = undefined;
    this.snapshot = snap;
    this.emit('snapshot', snap);
  }

  private fail(err: UserError): void {
    if (!this.running) return;
    if (err.message === this.lastError) return; // already reported
    this.lastError = err.message;
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}
