// The agent's CNI endpoint: a unix socket that only root can open, where meshlane-cni (run by the
// container runtime for every pod) sends its one request and waits for the answer. The server decodes
// and checks the request (protocol.ts) and hands ADD, CHECK and DEL to an injected CniHandler: what the
// agent does for a pod lives there, not here. Requests are served concurrently, each bounded in time.
//
// The socket path is trusted by root processes (the runtime runs the plugin as root), so the server is
// careful with it: its directory must be ours and not writable by others (created 0755 if missing), a
// symlink or anything that is not a socket is refused, and only a stale socket (nobody listening) is
// removed. The socket is created 0600 (umask during bind, then chmod): that, not the directory, keeps
// everyone but root out. It is removed again on close.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, mkdirSync, unlinkSync, type Stats } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import { pino } from 'pino';
import type { Logger } from '../util/log.js';
import { UserError, isErrno } from '../util/errors.js';
import {
  CniCode,
  CniError,
  FALLBACK_CNI_VERSION,
  MAX_REQUEST_BYTES,
  decodeRequest,
  encodeResponse,
  errorBody,
  resultBody,
  type CniAddRequest,
  type CniCheckRequest,
  type CniDelRequest,
  type CniFailure,
  type CniRequest,
  type CniResult,
} from './protocol.js';

/** What ADD answers: the result to print (for a chained plugin, the prevResult, maybe amended) or an error. */
export type CniAddOutcome = { result: CniResult } | { error: CniFailure };
/** What CHECK answers: fine (no output) or an error. */
export type CniCheckOutcome = { ok: true } | { error: CniFailure };

/**
 * What the agent does for a pod. `signal` aborts when the request's time is up, the plugin went away or
 * the server closes; a handler should stop waiting then. A handler may also throw a CniError to answer
 * with that error; any other exception becomes an AgentFailure error (ADD, CHECK) or is logged (DEL).
 */
export interface CniHandler {
  /** Enroll the pod (if it is to be captured) and only then resolve; `req.prevResult` is what to return. */
  add(req: CniAddRequest, signal: AbortSignal): Promise<CniAddOutcome>;
  check(req: CniCheckRequest, signal: AbortSignal): Promise<CniCheckOutcome>;
  /** Release the pod. Best effort: whatever happens, the plugin is told DEL succeeded. */
  del(req: CniDelRequest, signal: AbortSignal): Promise<void>;
}

/** What the server reports per ADD, CHECK and DEL (src/metrics implements it). */
export interface CniObserver {
  /** ok: the handler answered success (an ADD or CHECK that answered an error, or threw, is not ok) */
  served(command: 'ADD' | 'CHECK' | 'DEL', ok: boolean, seconds: number): void;
}

export interface CniServerOptions {
  socketPath: string;
  handler: CniHandler;
  log?: Logger;
  observer?: CniObserver;
  /**
   * How long ADD, CHECK and DEL may take in the handler (default 25 s). Keep it below the plugin's
   * timeout (30 s unless the conflist entry sets "timeoutSeconds") so that ADD gets our clear message,
   * and above the handler's own bounded wait for the pod to show in the API.
   */
  handlerTimeoutMs?: number;
  /** How long a connection may take to send its request line (default 10 s). */
  readTimeoutMs?: number;
  /** Connections served at once (default 128); the kernel's backlog queues the rest. */
  maxConnections?: number;
}

export const DEFAULT_HANDLER_TIMEOUT_MS = 25_000;
const DEFAULT_READ_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_CONNECTIONS = 128;
const STALE_PROBE_MS = 1_000;
const CLOSE_GRACE_MS = 2_000;
const SUN_PATH_MAX = 107; // sizeof(sockaddr_un.sun_path) - 1

const podName = (r: CniAddRequest | CniCheckRequest | CniDelRequest): string =>
  r.pod ? `${r.pod.namespace}/${r.pod.name}` : `(no K8S_POD_* in CNI_ARGS; container ${r.containerId})`;

class Timeout extends Error {}

export class CniServer {
  private readonly conns = new Set<{ sock: Socket; abort: AbortController }>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    readonly socketPath: string,
    private readonly ino: number,
    private readonly o: Required<Omit<CniServerOptions, 'log' | 'observer'>> & { log: Logger; observer: CniObserver | undefined },
  ) {}

  /** Prepares the path (see the file comment), listens, and resolves once the socket is there (0600). */
  static async listen(opts: CniServerOptions): Promise<CniServer> {
    const o = {
      socketPath: opts.socketPath,
      handler: opts.handler,
      handlerTimeoutMs: opts.handlerTimeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS,
      readTimeoutMs: opts.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS,
      maxConnections: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      log: opts.log ?? pino({ level: 'silent' }),
      observer: opts.observer,
    };
    await prepareSocketPath(o.socketPath);
    const server = createServer();
    server.maxConnections = o.maxConnections;
    // bind() creates the socket file with 0777 & ~umask: make it 0600 from the first instant (bind runs
    // synchronously inside listen()), then chmod as well in case a umask was not honoured
    const old = process.umask(0o177);
    let listening: Promise<void>;
    try {
      listening = new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(o.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    try {
      await listening;
    } catch (e) {
      throw new UserError(`cannot listen on ${o.socketPath}: ${(e as Error).message}: check --cni-socket`, { cause: e });
    }
    chmodSync(o.socketPath, 0o600);
    const st = lstatSync(o.socketPath);
    const s = new CniServer(server, o.socketPath, st.ino, o);
    server.on('connection', (sock) => s.serve(sock));
    server.on('error', (e) => o.log.error({ err: e, socket: o.socketPath }, 'cni: socket server error'));
    o.log.info({ socket: o.socketPath }, 'cni: serving meshlane-cni requests');
    return s;
  }

  /** Stops accepting, answers requests still in flight with "agent stopping", removes the socket. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns) c.abort.abort(new Error('the meshlane agent is stopping'));
    const grace = setTimeout(() => {
      for (const c of this.conns) c.sock.destroy();
    }, CLOSE_GRACE_MS);
    await closed;
    clearTimeout(grace);
    // libuv unlinks the path when the server closes; make sure, but only if it is still our socket
    try {
      const st = lstatSync(this.socketPath);
      if (st.isSocket() && st.ino === this.ino) unlinkSync(this.socketPath);
    } catch (e) {
      if (!isErrno(e, 'ENOENT')) this.o.log.warn({ err: e, socket: this.socketPath }, 'cni: could not remove the socket');
    }
    this.o.log.info({ socket: this.socketPath }, 'cni: stopped serving');
  }

  private serve(sock: Socket): void {
    const conn = { sock, abort: new AbortController() };
    this.conns.add(conn);
    const chunks: Buffer[] = [];
    let size = 0;
    let got = false; // the request line arrived
    let answered = false;
    const finish = (response: string): void => {
      answered = true;
      clearTimeout(readTimer);
      if (sock.writable) sock.end(response);
    };
    const readTimer = setTimeout(() => {
      this.o.log.warn('cni: a connection sent no request in time; closing it');
      sock.destroy();
    }, this.o.readTimeoutMs);
    sock.on('data', (chunk: Buffer) => {
      if (got) return; // one request per connection; anything after the line is ignored
      const nl = chunk.indexOf(0x0a);
      const part = nl < 0 ? chunk : chunk.subarray(0, nl);
      size += part.length;
      if (size > MAX_REQUEST_BYTES) {
        got = true;
        this.o.log.warn({ bytes: size }, 'cni: request too large');
        finish(encodeResponse(1, errorBody(FALLBACK_CNI_VERSION, { code: CniCode.InvalidConfig, msg: 'request too large', details: `more than ${MAX_REQUEST_BYTES} bytes` })));
        return;
      }
      chunks.push(part);
      if (nl < 0) return;
      got = true;
      clearTimeout(readTimer);
      this.answer(Buffer.concat(chunks).toString('utf8'), conn.abort.signal).then(
        (response) => finish(response),
        (e: unknown) => {
          // a bug in the server itself: say so to the plugin rather than leave it waiting
          this.o.log.error({ err: e }, 'cni: internal error answering a request');
          finish(encodeResponse(1, errorBody(FALLBACK_CNI_VERSION, { code: CniCode.AgentFailure, msg: 'meshlane agent internal error', details: String(e) })));
        },
      );
    });
    sock.on('end', () => {
      // the plugin went away (timed out, killed) before we answered: stop the handler's wait
      if (!answered) conn.abort.abort(new Error('meshlane-cni closed the connection before the answer (it timed out or was killed)'));
    });
    sock.on('error', (e) => this.o.log.debug({ err: e }, 'cni: connection error'));
    sock.on('close', () => {
      clearTimeout(readTimer);
      if (!answered) conn.abort.abort(new Error('the connection closed'));
      this.conns.delete(conn);
    });
  }

  /** The wire response for one request line. */
  private async answer(line: string, connSignal: AbortSignal): Promise<string> {
    const d = decodeRequest(line);
    const log = this.o.log;
    if (!d.ok) {
      if (d.command === 'DEL' || d.command === 'GC') {
        log.warn({ command: d.command, failure: d.failure }, 'cni: bad request; DEL always succeeds');
        return encodeResponse(0);
      }
      log.warn({ command: d.command, failure: d.failure }, 'cni: refused a request');
      return encodeResponse(1, errorBody(d.cniVersion, d.failure));
    }
    const req: CniRequest = d.request;
    switch (req.command) {
      case 'GC': // CNI 1.1: nothing to collect here, the agent releases a pod when its netns goes
      case 'STATUS': // CNI 1.1: we answer, so we can service ADD
        return encodeResponse(0);
      case 'ADD': {
        const v = req.config.cniVersion;
        try {
          const out = await this.run('ADD', req, connSignal, (s) => this.o.handler.add(req, s));
          if ('error' in out) {
            log.info({ pod: podName(req), containerId: req.containerId, failure: out.error }, 'cni: ADD failed');
            return encodeResponse(1, errorBody(v, out.error));
          }
          log.info({ pod: podName(req), containerId: req.containerId, netns: req.netns }, 'cni: ADD done');
          return encodeResponse(0, resultBody(v, out.result));
        } catch (e) {
          const f = this.failureOf('ADD', req, e);
          log.warn({ pod: podName(req), containerId: req.containerId, failure: f }, 'cni: ADD failed');
          return encodeResponse(1, errorBody(v, f));
        }
      }
      case 'CHECK': {
        const v = req.config.cniVersion;
        try {
          const out = await this.run('CHECK', req, connSignal, (s) => this.o.handler.check(req, s));
          if ('error' in out) return encodeResponse(1, errorBody(v, out.error));
          return encodeResponse(0);
        } catch (e) {
          const f = this.failureOf('CHECK', req, e);
          log.warn({ pod: podName(req), containerId: req.containerId, failure: f }, 'cni: CHECK failed');
          return encodeResponse(1, errorBody(v, f));
        }
      }
      case 'DEL':
        try {
          await this.run('DEL', req, connSignal, (s) => this.o.handler.del(req, s));
          log.info({ pod: podName(req), containerId: req.containerId }, 'cni: DEL done');
        } catch (e) {
          log.warn({ pod: podName(req), containerId: req.containerId, err: e }, 'cni: DEL failed in the agent; the plugin is told it succeeded');
        }
        return encodeResponse(0);
    }
  }

  /** Runs a handler call bounded by handlerTimeoutMs and by the connection (plugin gone, server closing). */
  private run<T>(what: 'ADD' | 'CHECK' | 'DEL', req: CniAddRequest | CniCheckRequest | CniDelRequest, connSignal: AbortSignal, call: (s: AbortSignal) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const served = (ok: boolean): void => this.o.observer?.served(what, ok, (performance.now() - t0) / 1000);
    return this.runBounded(what, req, connSignal, call).then(
      (v) => {
        served(!(typeof v === 'object' && v !== null && 'error' in v));
        return v;
      },
      (e: unknown) => {
        served(false);
        throw e;
      },
    );
  }

  private runBounded<T>(what: string, req: CniAddRequest | CniCheckRequest | CniDelRequest, connSignal: AbortSignal, call: (s: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    const ms = this.o.handlerTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const stop = (why: Error): void => {
        clearTimeout(timer);
        connSignal.removeEventListener('abort', onConn);
        ac.abort(why);
        reject(why);
      };
      const timer = setTimeout(() => stop(new Timeout(`${what} for pod ${podName(req)} did not finish within ${ms / 1000} s`)), ms);
      const onConn = (): void => stop(connSignal.reason instanceof Error ? connSignal.reason : new Error(String(connSignal.reason)));
      if (connSignal.aborted) return onConn();
      connSignal.addEventListener('abort', onConn, { once: true });
      call(ac.signal).then(
        (v) => {
          clearTimeout(timer);
          connSignal.removeEventListener('abort', onConn);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          connSignal.removeEventListener('abort', onConn);
          reject(e);
        },
      );
    });
  }

  private failureOf(what: string, req: CniAddRequest | CniCheckRequest, e: unknown): CniFailure {
    if (e instanceof CniError) return e.details === undefined ? { code: e.code, msg: e.msg } : { code: e.code, msg: e.msg, details: e.details };
    if (e instanceof Timeout) return { code: CniCode.TryAgainLater, msg: 'meshlane agent timed out', details: e.message };
    const msg = e instanceof Error ? e.message : String(e);
    if (this.closing) return { code: CniCode.TryAgainLater, msg: 'meshlane agent is stopping', details: `${what} for pod ${podName(req)}: ${msg}` };
    return { code: CniCode.AgentFailure, msg: `meshlane agent failed to ${what === 'ADD' ? 'set up' : 'check'} the pod`, details: `${podName(req)}: ${msg}` };
  }
}

const mode = (st: Stats): string => (st.mode & 0o7777).toString(8).padStart(4, '0');
const euid = (): number => (typeof process.geteuid === 'function' ? process.geteuid() : 0);

/** Is anybody listening on the socket at `path`? (false: a stale socket an earlier agent left) */
function listenedOn(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    const t = setTimeout(() => {
      c.destroy();
      resolve(true); // accepted nothing in time: busy, so alive
    }, STALE_PROBE_MS);
    c.once('connect', () => {
      clearTimeout(t);
      c.destroy();
      resolve(true);
    });
    c.once('error', (e) => {
      clearTimeout(t);
      resolve(!(isErrno(e, 'ECONNREFUSED') || isErrno(e, 'ENOENT')));
    });
  });
}

/** A directory we create for the socket: 0755, not 0700. The socket itself is 0600 (only root connects), and
 * the default directory is also the agent's state dir (/run/meshlane), whose status.json anyone may read. */
const SOCKET_DIR_MODE = 0o755;

/** Makes `path` safe to bind: see the file comment. Throws a UserError that says what to fix. */
export async function prepareSocketPath(path: string): Promise<void> {
  if (!isAbsolute(path)) throw new UserError(`the CNI socket path ${path} is not absolute: pass an absolute --cni-socket`);
  if (Buffer.byteLength(path) > SUN_PATH_MAX) throw new UserError(`the CNI socket path ${path} is longer than ${SUN_PATH_MAX} bytes: pass a shorter --cni-socket`);
  const dir = dirname(path);
  let d: Stats | undefined;
  try {
    d = lstatSync(dir);
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw e;
  }
  if (!d) {
    mkdirSync(dir, { recursive: true, mode: SOCKET_DIR_MODE });
    chmodSync(dir, SOCKET_DIR_MODE);
  } else if (d.isSymbolicLink()) {
    throw new UserError(`${dir} (the CNI socket's directory) is a symlink; refusing to follow it: remove it or pass another --cni-socket`);
  } else if (!d.isDirectory()) {
    throw new UserError(`${dir} (the CNI socket's directory) is not a directory: remove it or pass another --cni-socket`);
  } else if (d.uid !== euid()) {
    throw new UserError(`${dir} (the CNI socket's directory) belongs to uid ${d.uid}, not to us (uid ${euid()}): fix its owner or pass another --cni-socket`);
  } else if (d.mode & 0o022) {
    throw new UserError(`${dir} (the CNI socket's directory) is writable by others (mode ${mode(d)}): chmod go-w it or pass another --cni-socket`);
  }
  let s: Stats;
  try {
    s = lstatSync(path);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return;
    throw e;
  }
  if (s.isSymbolicLink()) throw new UserError(`${path} is a symlink; refusing to follow it or to replace it: remove it and start again`);
  if (!s.isSocket()) throw new UserError(`${path} exists and is not a socket; meshlane does not remove it: remove it or pass another --cni-socket`);
  if (s.uid !== euid()) throw new UserError(`${path} is a socket of uid ${s.uid}, not ours; meshlane does not remove it: remove it or pass another --cni-socket`);
  if (await listenedOn(path)) throw new UserError(`another process serves ${path} (a second meshlane agent?): stop it or pass another --cni-socket`);
  unlinkSync(path); // stale: an agent that died left it
}
