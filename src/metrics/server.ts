// The agent's HTTP endpoint (--metrics-address HOST:PORT, default 127.0.0.1:9464; `off`: none):
//   GET /metrics  Prometheus text format (metrics.ts)
//   GET /healthz  liveness: 200 while the process serves and the agent has not stopped (an event loop
//                 that is stuck answers nothing, and the probe times out)
//   GET /readyz   readiness: 200 when the agent is ready (health.ts: programs attached, pins adopted,
//                 first sync done, source connected, and every registered condition, e.g. the CNI
//                 socket serving); else 503 with one reason per line
// Plain node:http: three read-only routes need no framework. The server listens before the agent
// loads anything, so /readyz answers 503 during start-up, and a bad address or a port in use fails the
// start with one line before anything is pinned.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/paths.js';
import { AgentMetrics } from './metrics.js';

export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9464';
export const METRICS_OFF = 'off';

export interface ListenAddress {
  host: string;
  port: number;
}

const FIX = `give --metrics-address HOST:PORT (an IP address and a port 1-65535, e.g. ${DEFAULT_METRICS_ADDRESS} or [::1]:9464), or ${METRICS_OFF}`;

/** --metrics-address: HOST:PORT ([v6]:PORT for IPv6), or `off` (undefined). Throws a UserError. */
export function parseMetricsAddress(s: string): ListenAddress | undefined {
  if (s === METRICS_OFF) return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) throw new UserError(`--metrics-address ${JSON.stringify(s)} is not HOST:PORT: ${FIX}`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (m[1] !== undefined ? isIP(host) !== 6 : isIP(host) !== 4) {
    throw new UserError(
      `--metrics-address ${JSON.stringify(s)}: ${JSON.stringify(host)} is not an IP${m[1] !== undefined ? 'v6' : 'v4'} address (a name would need a lookup at start): ${FIX}`,
    );
  }
  if (port < 1 || port > 65535) throw new UserError(`--metrics-address ${JSON.stringify(s)}: port ${port} is out of range: ${FIX}`);
  return { host, port };
}

export const formatAddress = (a: ListenAddress): string => (isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

export interface HealthView {
  /** the process works (false once the agent stopped) */
  live(): boolean;
  /** ready, or the reasons why not */
  readiness(): { ready: boolean; reasons: string[] };
}

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    readonly address: ListenAddress,
  ) {}

  /** Listens on `address`; a port in use or an address not of this host is a UserError. */
  static async listen(address: ListenAddress, metrics: AgentMetrics, health: HealthView, log?: Logger): Promise<MetricsServer> {
    const server = createServer((req, res) => void handle(req, res, metrics, health, log));
    // a scraper that keeps its connection open must not keep a stopping agent alive
    server.keepAliveTimeout = 5_000;
    const where = formatAddress(address);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const why =
          e.code === 'EADDRINUSE'
            ? `${where} is in use by another process: stop it, or give another --metrics-address HOST:PORT (or ${METRICS_OFF})`
            : e.code === 'EADDRNOTAVAIL'
              ? `${address.host} is not an address of this host: give one of its addresses in --metrics-address (or ${METRICS_OFF})`
              : e.code === 'EACCES'
                ? `port ${address.port} needs privileges this process does not have: give a port above 1023 in --metrics-address`
                : `${e.message}: check --metrics-address (or ${METRICS_OFF})`;
        reject(new UserError(`cannot serve metrics on ${where}: ${why}`, { cause: e }));
      });
      server.listen({ host: address.host, port: address.port, exclusive: true }, () => resolve());
    });
    server.on('error', (e) => log?.error({ err: e.message }, 'metrics: server error'));
    // no log line here: a start that fails after this prints its one error line and nothing else
    return new MetricsServer(server, address);
  }

  /** The info line, once the agent has started. */
  announce(log: Logger): void {
    log.info({ address: formatAddress(this.address) }, 'serving /metrics, /healthz, /readyz');
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, metrics: AgentMetrics, health: HealthView, log?: Logger): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const send = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
    res.writeHead(code, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(405, 'only GET and HEAD\n');
  }
  try {
    switch (path) {
      case '/metrics':
        return send(200, await metrics.scrape(), metrics.contentType);
      case '/healthz':
        return health.live() ? send(200, 'ok\n') : send(503, 'stopping\n');
      case '/readyz': {
        const r = health.readiness();
        return r.ready ? send(200, 'ready\n') : send(503, `not ready:\n${r.reasons.map((x) => `- ${x}\n`).join('')}`);
      }
      default:
        return send(404, 'not found: /metrics, /healthz, /readyz\n');
    }
  } catch (e) {
    log?.error({ err: (e as Error).message, path }, 'metrics: request failed');
    send(500, `error: ${(e as Error).message}\n`);
  }
}

/** The agent as the endpoint sees it. */
export interface ServedAgent {
  live(): boolean;
  health(): { ready: boolean; reasons: string[] };
}

/** The CLI's part, before anything is loaded: the address (a UserError if malformed) and the registry; undefined for `off`. */
export function metricsFromFlag(flag: string): { address: ListenAddress; metrics: AgentMetrics } | undefined {
  const address = parseMetricsAddress(flag);
  return address ? { address, metrics: new AgentMetrics({ version: packageVersion() }) } : undefined;
}

/** Listen for the agent (before agent.start(), so that /readyz says 503 while it starts). */
export function serveAgent(
  m: { address: ListenAddress; metrics: AgentMetrics } | undefined,
  agent: ServedAgent,
  log?: Logger,
): Promise<MetricsServer | undefined> {
  if (!m) return Promise.resolve(undefined);
  return MetricsServer.listen(m.address, m.metrics, { live: () => agent.live(), readiness: () => agent.health() }, log);
}

function packageVersion(): string {
  try {
    const v = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}
