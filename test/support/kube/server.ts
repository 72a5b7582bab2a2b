// The Kubernetes API server of the test suite: HTTPS on loopback with a run-time CA, bearer tokens,
// core/v1 namespaces, pods and events with the real list/watch protocol (resourceVersion semantics,
// chunked watch streams with one JSON event per line, bookmarks, 410 as an ERROR event, label and field
// selectors), create/update/patch/delete, discovery and /version; plus what tests need around it: a
// log of every request decoded as RBAC sees it, and faults (watches ended gracefully or abruptly,
// connections reset, 503s, delays, history compaction, the server stopped and started again on the
// same port with the same certificate).
//
// Use:
//   const api = await KubeApiServer.start();            // https://127.0.0.1:<free port>, fresh CA
//   writeFileSync(path, api.kubeconfig());              // or api.writeKubeconfig(path); the agent reads it
//   api.store.create('pods', pod({ name: 'p', node: 'n1' }));   // the cluster changes while watches run
//   api.endWatches('abrupt'); api.fail({ count: 1, match: (r) => r.verb === 'watch' }); api.compact();
//   await api.stop(); await api.start();                // down and up again: same port, CA, store
//   api.requests                                        // verb/resource/namespace/... of every request
//   MESHLANE_KUBE_REQUEST_LOG=<file>                    // every server of the process also appends each
//                                                       // request to <file> (JSON lines, see RequestLogLine):
//                                                       // the requests of a whole suite, for the RBAC test
//   await api.close();
//
// What is simplified (and where a client could tell):
// - One store, always current: a list "not older than N" is served at the latest revision, and a
//   watch or list from a future revision is answered at once (504 ResourceVersionTooLarge) where the
//   real server first waits up to 3 s for the revision to arrive.
// - DELETE through the API removes at once (no grace period, finalizers or propagation; a namespace takes
//   its contents with it). Tests that need the two-phase pod deletion use store.delete(..., { graceful }).
// - Strategic merge patch is a JSON merge patch (see patch.ts). Server-side apply (415), dryRun and
//   streaming lists (sendInitialEvents) are refused with a message that says so, not served as something
//   else. JSON only: Accept is not looked at (no protobuf, no tables).
// - Authentication only: every known token may do everything. Authorization is checked after the fact,
//   from the request log, with rbac.ts (what a ClusterRole would have allowed).
// - No admission or schema validation beyond names, namespaces and resourceVersions.
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { basename } from 'node:path';
import { kubeconfigYaml, writeKubeconfig, type KubeconfigOptions } from './kubeconfig.js';
import { isPatchType, PATCH_TYPES } from './patch.js';
import { isTrue, requestInfo, type RequestInfo } from './requestinfo.js';
import type { KubeObject, ResourceType } from './resources.js';
import { status, StatusError } from './status.js';
import { Store, type ListOptions, type Selection, type StoreOptions, type WatchEvent, type Watcher } from './store.js';
import { makeServerCerts, type ServerCerts } from './tls.js';

export interface KubeApiServerOptions {
  /** 0 (default): a free port, kept across stop()/start() */
  port?: number;
  host?: string;
  /** the token of user `meshlane-test` (default: random) */
  token?: string;
  /** made at construction when not given */
  certs?: ServerCerts;
  store?: Store | StoreOptions;
  /** period of BOOKMARK events on watches that allow them (default 1000 ms; 0: only sendBookmarks()) */
  bookmarkIntervalMs?: number;
  /** end watches that give no timeoutSeconds after this long (the real server picks 30-60 min); default never */
  watchTimeoutSeconds?: number;
}

export interface KubeconfigFor {
  token?: string;
  insecureSkipTlsVerify?: boolean;
  namespace?: string;
}

export interface RequestRecord extends RequestInfo {
  /** 1, 2, 3... in arrival order */
  seq: number;
  /** when it arrived (performance.now() of this process) */
  at: number;
  method: string;
  query: Record<string, string>;
  /** the authenticated user; undefined when the token was missing or wrong (or a fault answered first) */
  user?: string;
  /** the HTTP status sent (undefined while pending, or when a fault hung up / reset instead) */
  status?: number;
  /** a fault that took the request: 'fail', 'reset', 'hangup', 'delay' */
  fault?: string;
  remotePort: number;
  /** the User-Agent header (meshlane's client sends `meshlane-agent`) */
  userAgent?: string;
}

/** One line of the MESHLANE_KUBE_REQUEST_LOG file: a request as RBAC sees it, who sent it, from which test file. */
export type RequestLogLine = Pick<
  RequestRecord,
  'verb' | 'apiGroup' | 'resource' | 'subresource' | 'namespace' | 'name' | 'path' | 'isResourceRequest' | 'method' | 'userAgent'
> & { file: string; query: Record<string, string> };

export const REQUEST_LOG_ENV = 'MESHLANE_KUBE_REQUEST_LOG';

function appendRequestLog(r: RequestRecord): void {
  const file = process.env[REQUEST_LOG_ENV];
  if (!file) return;
  const line: RequestLogLine = {
    file: basename(process.argv[1] ?? ''),
    method: r.method,
    verb: r.verb,
    apiGroup: r.apiGroup,
    resource: r.resource,
    subresource: r.subresource,
    namespace: r.namespace,
    name: r.name,
    path: r.path,
    isResourceRequest: r.isResourceRequest,
    query: r.query,
    ...(r.userAgent !== undefined ? { userAgent: r.userAgent } : {}),
  };
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

export type RequestMatch = (r: RequestRecord) => boolean;

export interface FaultHandle {
  /** requests still to be taken (Infinity for an unbounded fault) */
  readonly remaining: number;
  /** requests taken so far */
  readonly hits: number;
  clear(): void;
}

export interface FailOptions {
  /** an HTTP status answered with a Status body (default 503), or drop the connection: TCP RST / plain close */
  answer?: number | 'reset' | 'hangup';
  /** how many matching requests (default 1; Infinity until cleared) */
  count?: number;
  match?: RequestMatch;
  /** Retry-After header and details.retryAfterSeconds */
  retryAfterSeconds?: number;
}

export interface DelayOptions {
  ms: number;
  /** how many matching requests (default Infinity, until cleared) */
  count?: number;
  match?: RequestMatch;
}

/** How a watch ends: with the terminating chunk, by closing the socket mid-stream, by a TCP reset */
export type EndMode = 'graceful' | 'abrupt' | 'reset';

interface Fault {
  kind: 'fail' | 'delay';
  remaining: number;
  hits: number;
  match: RequestMatch;
  answer: number | 'reset' | 'hangup';
  retryAfterSeconds?: number;
  ms: number;
}

interface WatchSession {
  record: RequestRecord;
  res: ServerResponse;
  socket: TLSSocket;
  resource: ResourceType;
  bookmarks: boolean;
  watcher?: Watcher;
  timers: NodeJS.Timeout[];
}

const MAX_BODY = 3 * 1024 * 1024; // the real server's request size limit

const json = (v: unknown): string => JSON.stringify(v);

export class KubeApiServer {
  readonly store: Store;
  readonly certs: ServerCerts;
  readonly host: string;
  /** the token of user `meshlane-test` */
  readonly token: string;
  private readonly tokens = new Map<string, string>();
  private readonly bookmarkIntervalMs: number;
  private readonly watchTimeoutSeconds: number | undefined;
  private server: Server | undefined;
  private listenPort: number;
  private readonly sockets = new Set<Socket>();
  private readonly rawByPeer = new Map<string, Socket>();
  private readonly sessions = new Set<WatchSession>();
  private readonly faults: Fault[] = [];
  private readonly log: RequestRecord[] = [];
  private readonly recordOf = new WeakMap<ServerResponse, RequestRecord>();
  private readonly waiters = new Set<() => void>();
  private seq = 0;

  constructor(opts: KubeApiServerOptions = {}) {
    this.store = opts.store instanceof Store ? opts.store : new Store(opts.store);
    this.certs = opts.certs ?? makeServerCerts();
    this.host = opts.host ?? '127.0.0.1';
    this.listenPort = opts.port ?? 0;
    this.token = opts.token ?? randomBytes(16).toString('hex');
    this.tokens.set(this.token, 'meshlane-test');
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 1000;
    this.watchTimeoutSeconds = opts.watchTimeoutSeconds;
  }

  /** construct and start listening */
  static async start(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const s = new KubeApiServer(opts);
    await s.start();
    return s;
  }

  get port(): number {
    return this.listenPort;
  }

  get url(): string {
    return `https://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.listenPort}`;
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** another identity (a second agent): its requests are logged with `user` */
  addToken(token: string, user: string): void {
    this.tokens.set(token, user);
  }

  /** a kubeconfig (YAML) for this server: its URL and CA, this server's token or `opts.token` */
  kubeconfig(opts: KubeconfigFor = {}): string {
    return kubeconfigYaml(this.kubeconfigOptions(opts));
  }

  /** the same, written to `path` (mode 0600); returns the path */
  writeKubeconfig(path: string, opts: KubeconfigFor = {}): string {
    return writeKubeconfig(path, this.kubeconfigOptions(opts));
  }

  private kubeconfigOptions(opts: KubeconfigFor): KubeconfigOptions {
    const o: KubeconfigOptions = { server: this.url, token: opts.token ?? this.token, caPem: this.certs.caPem };
    if (opts.insecureSkipTlsVerify) o.insecureSkipTlsVerify = true;
    if (opts.namespace) o.namespace = opts.namespace;
    return o;
  }

  // ---- lifecycle ----

  /** Listen (again): the same port after the first start, the same certificate, the same store. */
  async start(): Promise<void> {
    if (this.server) return;
    const srv = createServer({ key: this.certs.keyPem, cert: this.certs.certPem }, (req, res) => {
      void this.handle(req, res);
    });
    srv.on('connection', (raw: Socket) => {
      // the TCP socket under the TLS one: only it can be reset (resetAndDestroy refuses a TLS handle)
      const peer = `${raw.remoteAddress}:${raw.remotePort}`;
      this.sockets.add(raw);
      this.rawByPeer.set(peer, raw);
      raw.on('error', () => undefined); // a client's reset is its business; the TLS socket reports it
      raw.on('close', () => {
        this.sockets.delete(raw);
        if (this.rawByPeer.get(peer) === raw) this.rawByPeer.delete(peer);
      });
    });
    srv.on('tlsClientError', () => undefined); // a client that resets mid-handshake is not our error
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(this.listenPort, this.host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    const addr = srv.address();
    if (addr && typeof addr === 'object') this.listenPort = addr.port;
    this.server = srv;
  }

  /**
   * Stop listening: end the watches (`watches`, default graceful), then close every connection
   * (in-flight requests and idle keep-alive ones), as a restarted kube-apiserver does. The store stays.
   */
  async stop(opts: { watches?: EndMode } = {}): Promise<void> {
    const srv = this.server;
    if (!srv) return;
    this.server = undefined;
    const mode = opts.watches ?? 'graceful';
    this.endWatches(mode);
    const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
    srv.closeIdleConnections();
    if (mode === 'graceful') {
      // let the terminating chunks and the answers in flight reach the clients before the rest is cut
      await this.socketsClosed(1000);
    }
    for (const s of [...this.sockets]) s.destroy();
    await closed;
  }

  /** stop for good (the end of a test) */
  async close(): Promise<void> {
    this.clearFaults();
    await this.stop({ watches: 'abrupt' });
  }

  // ---- faults ----

  /** End the watches (matching `match`) now; returns how many. */
  endWatches(mode: EndMode = 'graceful', match: RequestMatch = () => true): number {
    let n = 0;
    for (const s of [...this.sessions]) {
      if (!match(s.record)) continue;
      n++;
      this.endSession(s, mode);
    }
    return n;
  }

  /** TCP RST on every open connection (watches, requests in flight, idle keep-alive); returns how many. */
  resetConnections(): number {
    const all = [...this.sockets];
    for (const s of all) this.reset(s);
    for (const s of [...this.sessions]) this.dropSession(s);
    return all.length;
  }

  /** Answer the next `count` matching requests with a status (default 503) or drop them. */
  fail(opts: FailOptions = {}): FaultHandle {
    const f: Fault = {
      kind: 'fail',
      remaining: opts.count ?? 1,
      hits: 0,
      match: opts.match ?? (() => true),
      answer: opts.answer ?? 503,
      ms: 0,
    };
    if (opts.retryAfterSeconds !== undefined) f.retryAfterSeconds = opts.retryAfterSeconds;
    return this.addFault(f);
  }

  /** Hold matching requests `ms` before serving them (watches: before the response headers). */
  delay(opts: DelayOptions): FaultHandle {
    return this.addFault({ kind: 'delay', remaining: opts.count ?? Infinity, hits: 0, match: opts.match ?? (() => true), answer: 0, ms: opts.ms });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Forget the change history up to now: a watch from an older resourceVersion gets 410 Expired. */
  compact(): void {
    this.store.compact();
  }

  /** a BOOKMARK now on every watch that allows them (allowWatchBookmarks=true); returns how many */
  sendBookmarks(): number {
    let n = 0;
    for (const s of this.sessions) if (s.bookmarks && this.bookmark(s)) n++;
    return n;
  }

  // ---- what happened ----

  /** every request so far, in arrival order (a live view) */
  get requests(): readonly RequestRecord[] {
    return this.log;
  }

  clearRequests(): void {
    this.log.length = 0;
  }

  /** the open watches (their requests) */
  watches(match: RequestMatch = () => true): RequestRecord[] {
    return [...this.sessions].map((s) => s.record).filter(match);
  }

  /** Resolve with the first request (from `since`, a seq) that matches, waiting for it if need be. */
  waitForRequest(match: RequestMatch, opts: { since?: number; timeoutMs?: number } = {}): Promise<RequestRecord> {
    const since = opts.since ?? 0;
    return this.waitFor(() => this.log.find((r) => r.seq > since && match(r)), opts.timeoutMs ?? 10_000, 'a matching request');
  }

  /** Resolve once `n` watches matching `match` are open. */
  waitForWatches(n: number, match: RequestMatch = () => true, timeoutMs = 10_000): Promise<RequestRecord[]> {
    return this.waitFor(
      () => {
        const w = this.watches(match);
        return w.length >= n ? w : undefined;
      },
      timeoutMs,
      `${n} open watch(es)`,
    );
  }

  /** the seq of the last request (a mark for waitForRequest's `since`) */
  get lastSeq(): number {
    return this.seq;
  }

  // ---- internals: plumbing ----

  private addFault(f: Fault): FaultHandle {
    this.faults.push(f);
    const faults = this.faults;
    return {
      get remaining() {
        return f.remaining;
      },
      get hits() {
        return f.hits;
      },
      clear: () => {
        const i = faults.indexOf(f);
        if (i >= 0) faults.splice(i, 1);
      },
    };
  }

  private takeFault(kind: Fault['kind'], r: RequestRecord): Fault | undefined {
    const f = this.faults.find((x) => x.kind === kind && x.remaining > 0 && x.match(r));
    if (!f) return undefined;
    f.remaining--;
    f.hits++;
    if (f.remaining <= 0) this.faults.splice(this.faults.indexOf(f), 1);
    return f;
  }

  private waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(poll);
        reject(new Error(`test API server: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const poll = (): void => {
        const v = check();
        if (v === undefined) return;
        clearTimeout(t);
        this.waiters.delete(poll);
        resolve(v);
      };
      this.waiters.add(poll);
      poll();
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private socketsClosed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const open = [...this.sockets].filter((s) => !s.destroyed);
      if (open.length === 0) return resolve();
      const t = setTimeout(resolve, timeoutMs);
      let left = open.length;
      for (const s of open) {
        s.once('close', () => {
          if (--left === 0) {
            clearTimeout(t);
            resolve();
          }
        });
      }
    });
  }

  private rawOf(s: Socket): Socket | undefined {
    return this.rawByPeer.get(`${s.remoteAddress}:${s.remotePort}`);
  }

  private reset(s: Socket): void {
    const raw = this.sockets.has(s) ? s : this.rawOf(s);
    if (raw && !raw.destroyed) raw.resetAndDestroy();
    s.destroy();
  }

  // ---- internals: requests ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://kube');
    const method = req.method ?? 'GET';
    const record: RequestRecord = {
      ...requestInfo(method, url),
      seq: ++this.seq,
      at: performance.now(),
      method,
      query: Object.fromEntries(url.searchParams),
      remotePort: req.socket.remotePort ?? 0,
    };
    const ua = req.headers['user-agent'];
    if (ua !== undefined) record.userAgent = ua;
    this.log.push(record);
    appendRequestLog(record);
    this.recordOf.set(res, record);
    res.on('finish', () => this.notify());
    this.notify();
    try {
      const d = this.takeFault('delay', record);
      if (d) {
        record.fault = 'delay';
        await new Promise((r) => setTimeout(r, d.ms));
        if (res.destroyed) return;
      }
      const f = this.takeFault('fail', record);
      if (f) {
        record.fault = f.answer === 'reset' || f.answer === 'hangup' ? f.answer : 'fail';
        if (f.answer === 'reset') this.reset(req.socket);
        else if (f.answer === 'hangup') req.socket.destroy();
        else {
          const details = f.retryAfterSeconds !== undefined ? { retryAfterSeconds: f.retryAfterSeconds } : undefined;
          const headers: Record<string, string> = f.retryAfterSeconds !== undefined ? { 'Retry-After': String(f.retryAfterSeconds) } : {};
          this.send(res, f.answer, status(f.answer, f.answer === 503 ? 'service unavailable' : `injected failure (${f.answer})`, undefined, details), headers);
        }
        return;
      }
      const user = this.authenticate(req);
      if (user === undefined) {
        this.send(res, 401, status(401, 'Unauthorized'));
        return;
      }
      record.user = user;
      await this.route(req, res, url, record);
    } catch (e) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof StatusError) this.send(res, e.code, e.status);
      else this.send(res, 500, status(500, `test API server: ${(e as Error).message}`));
    }
  }

  private authenticate(req: IncomingMessage): string | undefined {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    return m ? this.tokens.get(m[1] as string) : undefined;
  }

  private send(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = json(body);
    this.answered(res, code);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private', ...headers });
    res.end(text);
  }

  private sendText(res: ServerResponse, code: number, text: string): void {
    this.answered(res, code);
    res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** the status goes into the log before the client can see it */
  private answered(res: ServerResponse, code: number): void {
    const r = this.recordOf.get(res);
    if (r) r.status = code;
    this.notify();
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_BODY) throw new StatusError(413, 'Request entity too large: limit is 3145728', 'BadRequest');
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString();
    if (text.trim() === '') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (e) {
      throw StatusError.badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
    }
  }

  private nonResource(res: ServerResponse, info: RequestInfo): void {
    const p = info.path.replace(/\/+$/, '') || '/';
    if (['/healthz', '/livez', '/readyz'].includes(p)) return this.sendText(res, 200, 'ok');
    if (info.verb !== 'get') throw new StatusError(405, `the server does not allow this method on the requested resource`, 'MethodNotAllowed');
    switch (p) {
      case '/version':
        return this.send(res, 200, {
          major: '1',
          minor: '31',
          gitVersion: 'v1.31.0-meshlane-test',
          gitCommit: '0000000000000000000000000000000000000000',
          gitTreeState: 'clean',
          buildDate: '2026-12-01T00:00:00Z',
          goVersion: 'go1.22.0',
          compiler: 'gc',
          platform: 'linux/amd64',
        });
      case '/api':
        return this.send(res, 200, {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.host}:${this.listenPort}` }],
        });
      case '/api/v1':
        return this.send(res, 200, {
          kind: 'APIResourceList',
          groupVersion: 'v1',
          resources: [...this.store.resources.values()].flatMap((r) => [
            { name: r.plural, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: r.verbs, shortNames: r.shortNames },
            ...r.subresources.map((sub) => ({
              name: `${r.plural}/${sub}`,
              singularName: '',
              namespaced: r.namespaced,
              kind: r.kind,
              verbs: ['get', 'patch', 'update'],
            })),
          ]),
        });
      case '/apis':
        return this.send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
      default:
        throw new StatusError(404, 'the server could not find the requested resource', 'NotFound');
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL, info: RequestRecord): Promise<void> {
    if (!info.isResourceRequest) return this.nonResource(res, info);
    if (info.apiPrefix !== 'api' || info.apiVersion !== 'v1' || !this.store.resources.has(info.resource))
      throw new StatusError(404, 'the server could not find the requested resource', 'NotFound');
    const r = this.store.resource(info.resource);
    const q = url.searchParams;
    if (q.has('dryRun')) throw StatusError.badRequest('meshlane test API server: dryRun is not implemented');
    if (!r.namespaced && info.namespace && !(info.resource === 'namespaces' && info.name === info.namespace))
      throw new StatusError(404, 'the server could not find the requested resource', 'NotFound');
    // a namespace object is named by its own path segment; other cluster-scoped things have no namespace
    const ns = r.namespaced ? info.namespace : undefined;
    if (info.subresource && !r.subresources.includes(info.subresource))
      throw new StatusError(404, 'the server could not find the requested resource', 'NotFound');
    const sub = info.subresource === 'status' ? ({ subresource: 'status' } as const) : {};
    const keepStatus = !info.subresource && r.subresources.includes('status');
    switch (info.verb) {
      case 'list':
        return this.send(res, 200, this.store.list(r.plural, this.listOptions(q, ns)));
      case 'watch':
        return this.watch(req, res, q, r, ns, info);
      case 'get':
        return this.send(res, 200, this.store.get(r.plural, ns, info.name));
      case 'create': {
        if (r.namespaced && !ns) throw new StatusError(405, 'the server does not allow this method on the requested resource', 'MethodNotAllowed');
        const obj = this.objectBody(await this.body(req), r);
        return this.send(res, 201, this.store.create(r.plural, obj, { ...(ns ? { namespace: ns } : {}), prepare: true }));
      }
      case 'update': {
        const obj = this.objectBody(await this.body(req), r);
        if (obj.metadata?.name !== undefined && obj.metadata.name !== info.name)
          throw StatusError.badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${info.name})`);
        obj.metadata = { ...(obj.metadata ?? {}), name: info.name };
        return this.send(res, 200, this.store.update(r.plural, obj, { ...(ns ? { namespace: ns } : {}), ...sub, keepStatus }));
      }
      case 'patch': {
        const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
        if (!isPatchType(type)) {
          throw new StatusError(
            415,
            `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`,
            'UnsupportedMediaType',
          );
        }
        const patch = await this.body(req);
        if (patch === undefined) throw StatusError.badRequest('the patch is empty');
        return this.send(res, 200, this.store.patch(r.plural, ns, info.name, type, patch, { ...sub, keepStatus }));
      }
      case 'delete': {
        const opts = ((await this.body(req)) ?? {}) as { preconditions?: { uid?: string; resourceVersion?: string } };
        return this.send(res, 200, this.store.delete(r.plural, ns, info.name, opts.preconditions ? { preconditions: opts.preconditions } : {}));
      }
      case 'deletecollection': {
        const list = this.store.list(r.plural, this.listOptions(q, ns));
        for (const o of list.items) this.store.delete(r.plural, o.metadata?.namespace, o.metadata?.name ?? '');
        return this.send(res, 200, list);
      }
      default:
        throw new StatusError(405, 'the server does not allow this method on the requested resource', 'MethodNotAllowed');
    }
  }

  private objectBody(body: unknown, r: ResourceType): KubeObject {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw StatusError.badRequest(`the body is not a ${r.kind} object`);
    const o = body as KubeObject;
    if (o.kind !== undefined && o.kind !== r.kind) throw StatusError.badRequest(`the kind of the body (${String(o.kind)}) is not ${r.kind}`);
    return o;
  }

  private listOptions(q: URLSearchParams, namespace: string | undefined): ListOptions {
    const o: ListOptions = {};
    if (namespace) o.namespace = namespace;
    for (const k of ['labelSelector', 'fieldSelector', 'resourceVersion', 'resourceVersionMatch', 'continue'] as const) {
      const v = q.get(k);
      if (v !== null && v !== '') o[k] = v;
    }
    const limit = q.get('limit');
    if (limit !== null && limit !== '') {
      if (!/^\d+$/.test(limit)) throw StatusError.badRequest(`limit: Invalid value: "${limit}"`);
      o.limit = Number(limit);
    }
    return o;
  }

  // ---- internals: watch ----

  private watch(req: IncomingMessage, res: ServerResponse, q: URLSearchParams, r: ResourceType, namespace: string | undefined, record: RequestRecord): void {
    if (isTrue(q.get('sendInitialEvents'))) throw StatusError.badRequest('meshlane test API server: sendInitialEvents (streaming lists) is not implemented');
    const sel = this.listOptions(q, namespace);
    // /api/v1/watch/namespaces/<ns>/pods/<name> (the legacy path) names the object in the path
    if (record.parts.length >= 2 && record.name && !q.get('fieldSelector')?.includes('metadata.name')) {
      sel.fieldSelector = [sel.fieldSelector, `metadata.name=${record.name}`].filter(Boolean).join(',');
    }
    this.store.checkSelection(r.plural, sel); // a bad selector is a 400, before the stream starts
    const timeoutText = q.get('timeoutSeconds');
    const timeout = timeoutText !== null && timeoutText !== '' ? Number(timeoutText) : this.watchTimeoutSeconds;
    if (timeout !== undefined && !(Number.isFinite(timeout) && timeout >= 0)) throw StatusError.badRequest(`timeoutSeconds: Invalid value: "${timeoutText}"`);

    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    this.answered(res, 200);
    res.flushHeaders();
    const s: WatchSession = { record, res, socket: req.socket as TLSSocket, resource: r, bookmarks: isTrue(q.get('allowWatchBookmarks')), timers: [] };
    this.sessions.add(s);
    res.on('close', () => this.dropSession(s));
    const send = (ev: WatchEvent): void => {
      if (!res.writableEnded && !res.destroyed) res.write(`${json(ev)}\n`);
    };
    const watchOpts: Selection & { resourceVersion?: string } = {};
    if (namespace) watchOpts.namespace = namespace;
    if (sel.labelSelector) watchOpts.labelSelector = sel.labelSelector;
    if (sel.fieldSelector) watchOpts.fieldSelector = sel.fieldSelector;
    if (sel.resourceVersion) watchOpts.resourceVersion = sel.resourceVersion;
    const watcher = this.store.watch(r.plural, watchOpts, send);
    s.watcher = watcher;
    if (!watcher.open) {
      // the ERROR event (410 Expired, 504 too large) was sent: the real server ends the stream after it
      this.endSession(s, 'graceful');
      return;
    }
    if (timeout !== undefined && timeout > 0) s.timers.push(setTimeout(() => this.endSession(s, 'graceful'), timeout * 1000));
    if (s.bookmarks && this.bookmarkIntervalMs > 0) s.timers.push(setInterval(() => this.bookmark(s), this.bookmarkIntervalMs));
    this.notify();
  }

  private bookmark(s: WatchSession): boolean {
    if (s.res.writableEnded || s.res.destroyed) return false;
    // a bookmark is an object of the watched kind that carries only its resourceVersion
    const ev = { type: 'BOOKMARK', object: { kind: s.resource.kind, apiVersion: 'v1', metadata: { resourceVersion: String(this.store.resourceVersion) } } };
    s.res.write(`${json(ev)}\n`);
    return true;
  }

  private dropSession(s: WatchSession): void {
    if (!this.sessions.delete(s)) return;
    s.watcher?.close();
    for (const t of s.timers) clearTimeout(t);
    this.notify();
  }

  private endSession(s: WatchSession, mode: EndMode): void {
    this.dropSession(s);
    if (mode === 'graceful')
      s.res.end(); // the terminating zero-length chunk
    else if (mode === 'abrupt')
      s.socket.destroy(); // no terminating chunk: a premature close for the client
    else this.reset(s.socket);
  }
}
