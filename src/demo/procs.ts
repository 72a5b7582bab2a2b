// Small helpers for the demo's processes: a line log over a child's stdout, readiness, one connection.
import type { ChildProcess } from 'node:child_process';
import type { SandboxMember, SpawnOptions } from '../sandbox/sandbox.js';

/** Every line a child printed on stdout, with a way to wait for the next matching one. */
export class LineLog {
  readonly lines: string[] = [];
  private partial = '';
  private waiters = new Set<() => void>();

  constructor(child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      const parts = (this.partial + d).split('\n');
      this.partial = parts.pop() ?? '';
      for (const l of parts) if (l.trim() !== '') this.lines.push(l.trim());
      for (const w of [...this.waiters]) w();
    });
  }

  /** The first line at index >= from that `pred` accepts, waiting up to timeoutMs; undefined if none came. */
  wait(from: number, pred: (line: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const hit = this.lines.slice(from).find(pred);
        if (hit === undefined) return false;
        done(hit);
        return true;
      };
      const done = (v: string | undefined): void => {
        clearTimeout(timer);
        this.waiters.delete(onData);
        resolve(v);
      };
      const onData = (): void => void check();
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.waiters.add(onData);
      check();
    });
  }
}

/**
 * Resolves once the child printed `ready` (the endpoint does when every port listens). The promise is marked
 * handled at once: the caller may await it only after other steps, which can fail (or be interrupted) first.
 */
export function waitReady(child: ChildProcess, log: LineLog, what: string, timeoutMs = 10_000): Promise<void> {
  const p = readiness(child, log, what, timeoutMs);
  p.catch(() => {});
  return p;
}

async function readiness(child: ChildProcess, log: LineLog, what: string, timeoutMs = 10_000): Promise<void> {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, sig) => resolve(`${what} exited (${code ?? sig}) before it was ready: ${stderr.trim()}`)),
  );
  const ready = log
    .wait(0, (l) => l === 'ready', timeoutMs)
    .then((l) => (l === undefined ? `${what} not ready after ${timeoutMs} ms: ${stderr.trim()}` : undefined));
  const err = await Promise.race([ready, exited]);
  if (err !== undefined) throw new Error(err);
}

export interface Reply {
  tag: string;
  port: number;
  local: string;
  peer: string;
  orig?: { address?: string; port?: number; error?: string };
}

export interface ConnectResult {
  ok: boolean;
  error?: string;
  reply?: Reply;
  /** the client's own address:port */
  local?: string;
}

/** One connection with the endpoint's connect mode, run inside `member` with the given identity. */
export async function connectFrom(member: SandboxMember, endpoint: string, to: string, opts: SpawnOptions): Promise<ConnectResult> {
  const r = await member.exec(process.execPath, [endpoint, 'connect', '--to', to, '--timeout', '2000'], { ...opts, timeoutMs: 10_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ConnectResult;
  } catch {
    return { ok: false, error: `client printed no result (exit ${r.code}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n')[0]}` : ''})` };
  }
}
