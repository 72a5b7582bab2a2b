// The agent's HTTP client for the Kubernetes API: client-node's configuration and authentication
// (KubeConfig.applyToHTTPSOptions: CA, client certificate, bearer token / token file / exec plugin,
// proxy agent) under node:http(s) requests of our own. Why not client-node's generated API and Watch:
// - its Watch cannot be aborted before the response headers arrive (watch() returns the controller
//   only then), so a request that hangs on a dead connection could never be given up;
// - its list calls return deserialised objects (Date timestamps, unknown fields dropped) where the watch
//   gives the plain JSON: the two shapes differ, and a source must deliver one (the API's own JSON);
// - a failed watch request loses the Status body (only the status code survives).
// Here every request has an AbortSignal and a deadline, errors keep the server's Status, and a 401
// re-reads the credentials at once (a rotated service account token) instead of after FileAuth's 60 s.
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeConnection } from './config.js';

export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

export interface KubeErrorInfo {
  /** the HTTP status, when the server answered */
  status?: number;
  /** the Status reason (Expired, Unauthorized, Forbidden, ...) */
  reason?: string;
  /** the Node error code of a failed connection (ECONNREFUSED, ECONNRESET, ...) */
  code?: string;
  /** the deadline passed (a request timeout, the watch's staleness watchdog) */
  timeout?: boolean;
  /** given up by the caller (stop) */
  aborted?: boolean;
}

/** A request that failed; the message is a short phrase: "unreachable (ECONNREFUSED)", "answered 503 ServiceUnavailable: ..." */
export class KubeRequestError extends Error {
  constructor(
    message: string,
    readonly info: KubeErrorInfo = {},
  ) {
    super(message);
    this.name = 'KubeRequestError';
  }
}

const TLS_CODES = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS_CERT|ERR_SSL)/;

/** A failed connection as one phrase that says what it means. */
export function describeNetworkError(e: unknown): KubeRequestError {
  if (e instanceof KubeRequestError) return e;
  const code = typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : undefined;
  const msg = e instanceof Error ? e.message : String(e);
  let what: string;
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT' || code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    what = `unreachable (${code})`;
  // node's word for a response whose connection closed (or was reset) before its end: a watch without
  // the terminating chunk
  else if (code === 'ECONNRESET' && msg === 'aborted') what = `cut the connection mid-answer (${code})`;
  else if (code === 'ECONNRESET' || code === 'EPIPE') what = `dropped the connection (${code})`;
  else if (code === 'ERR_STREAM_PREMATURE_CLOSE') what = `closed the stream mid-way (${code})`;
  else if (code !== undefined && TLS_CODES.test(code))
    what = `has a certificate the configured CA does not accept (${code}): check certificate-authority in the kubeconfig (in a pod: the service account's ca.crt)`;
  else what = `failed (${code ?? (msg.split('\n')[0] ?? '').trim()})`;
  return new KubeRequestError(what, code !== undefined ? { code } : {});
}

interface Status {
  reason?: unknown;
  message?: unknown;
  code?: unknown;
}

function statusError(status: number, body: string): KubeRequestError {
  let s: Status = {};
  try {
    const parsed = JSON.parse(body) as unknown;
    if (typeof parsed === 'object' && parsed !== null) s = parsed as Status;
  } catch {
    // not a Status (a proxy's HTML page, an empty 401): the status code says enough
  }
  const reason = typeof s.reason === 'string' && s.reason !== '' ? s.reason : undefined;
  const message = typeof s.message === 'string' ? (s.message.split('\n')[0] ?? '').slice(0, 200) : '';
  const info: KubeErrorInfo = { status };
  if (reason) info.reason = reason;
  return new KubeRequestError(`answered ${status}${reason ? ` ${reason}` : ''}${message && message !== reason ? `: ${message}` : ''}`, info);
}

async function readAll(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res) text += chunk as string;
  return text;
}

export interface RequestOpts {
  query?: Query;
  body?: unknown;
  /** default application/json; a patch names its type */
  contentType?: string;
  signal?: AbortSignal;
  /** give up after this long (the whole request: connect, headers, body) */
  timeoutMs?: number;
}

export interface WatchOpts {
  signal: AbortSignal;
  /** the server answered 200: the stream is open */
  onOpen(): void;
  /** one watch event ({type, object}) as the server sent it; a KubeRequestError thrown here ends the
   * watch with that error */
  onEvent(ev: unknown): void;
}

export class KubeClient {
  private kc: KubeConfig;

  /** Throws UserError when the connection cannot be loaded. */
  constructor(readonly connection: KubeConnection) {
    this.kc = connection.load();
  }

  get server(): string {
    return this.connection.server;
  }

  /** Read the credentials again (after a 401). Returns the problem if that fails; the old ones stay. */
  reload(): string | undefined {
    try {
      this.kc = this.connection.load();
      return undefined;
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }

  /** One request with a JSON answer; rejects with KubeRequestError. */
  async json(method: string, path: string, opts: RequestOpts = {}): Promise<unknown> {
    const ctl = linked(opts.signal);
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => ctl.abort(new KubeRequestError(`did not answer within ${Math.round(opts.timeoutMs! / 1000)} s`, { timeout: true })), opts.timeoutMs)
        : undefined;
    try {
      const res = await this.send(method, path, opts, ctl.signal);
      const text = await readAll(res);
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 299) throw statusError(status, text);
      const type = String(res.headers['content-type'] ?? '');
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new KubeRequestError(`answered ${status} with ${type || 'no content type'}, not JSON`, { status });
      }
    } catch (e) {
      throw failure(e, ctl.signal);
    } finally {
      clearTimeout(timer);
      ctl.dispose();
    }
  }

  /**
   * A watch: resolves when the server ends the stream cleanly (the terminating chunk, e.g. at
   * timeoutSeconds), rejects with KubeRequestError otherwise (an error answer, a dropped or reset
   * connection, the stream closed mid-way, an unparsable line, the signal).
   */
  async watch(path: string, query: Query, opts: WatchOpts): Promise<void> {
    const ctl = linked(opts.signal);
    try {
      const res = await this.send('GET', path, { query: { ...query, watch: 'true' } }, ctl.signal);
      const status = res.statusCode ?? 0;
      if (status !== 200) throw statusError(status, await readAll(res));
      opts.onOpen();
      res.setEncoding('utf8');
      let buf = '';
      const deliver = (line: string): void => {
        if (line.trim() === '') return;
        let ev: unknown;
        try {
          ev = JSON.parse(line) as unknown;
        } catch {
          throw new KubeRequestError(`sent a watch event that is not JSON: ${line.slice(0, 80)}`, {});
        }
        opts.onEvent(ev);
      };
      for await (const chunk of res) {
        buf += chunk as string;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          deliver(line);
        }
      }
      // node ends the iteration without an error on a clean end only (the terminating chunk); a socket
      // closed mid-body is an error ('aborted' / ECONNRESET)
      if (!res.complete) throw new KubeRequestError('closed the stream mid-way', { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      deliver(buf);
    } catch (e) {
      throw failure(e, ctl.signal);
    } finally {
      ctl.dispose();
    }
  }

  private async send(method: string, path: string, opts: RequestOpts, signal: AbortSignal): Promise<IncomingMessage> {
    const url = new URL(this.connection.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const o: RequestOptions = {};
    try {
      await this.kc.applyToHTTPSOptions(o); // a fresh agent with the CA / client certificate, the Authorization header
    } catch (e) {
      throw new KubeRequestError(`cannot be called: preparing the credentials failed (${(e instanceof Error ? e.message : String(e)).split('\n')[0]})`, {});
    }
    const given = o.headers !== undefined && !Array.isArray(o.headers) ? (o.headers as OutgoingHttpHeaders) : {};
    const headers: OutgoingHttpHeaders = { ...given, Accept: 'application/json', 'User-Agent': 'meshlane-agent' };
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['Content-Type'] = opts.contentType ?? 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { ...o, method, headers, signal }, resolve);
      // a watch can sit idle for minutes: let the kernel notice a peer that is gone
      req.on('socket', (s) => s.setKeepAlive(true, 30_000));
      req.on('error', reject);
      req.end(body);
    });
  }
}

/** An AbortController that follows `parent`; dispose() detaches it. */
export function linked(parent: AbortSignal | undefined): AbortController & { dispose(): void } {
  const ctl = new AbortController() as AbortController & { dispose(): void };
  const onAbort = (): void => ctl.abort(parent?.reason);
  if (parent?.aborted) ctl.abort(parent.reason);
  else parent?.addEventListener('abort', onAbort, { once: true });
  ctl.dispose = () => parent?.removeEventListener('abort', onAbort);
  return ctl;
}

/** The error to report: the abort's reason when we aborted, else what the request said. */
function failure(e: unknown, signal: AbortSignal): KubeRequestError {
  if (signal.aborted) {
    const r: unknown = signal.reason;
    if (r instanceof KubeRequestError) return r;
    return new KubeRequestError('given up (stopping)', { aborted: true });
  }
  return describeNetworkError(e);
}
