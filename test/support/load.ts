#!/usr/bin/env node
// Continuous load for the upgrade and restart tests: new connections every few milliseconds plus long
// byte-exact streams, for as long as a scenario lasts, with every outcome recorded.
//
//   node load.js server --ports 9100 [--host ::]
//       Prints "ready" once every port listens. Each connection sends one line (its id); the server
//       answers {"id","peer":"addr:port"} (peer: the connection's source as the server saw it) and ends.
//   node load.js client --to HOST:PORT [--interval 5] [--timeout 3000] [--max-ms 60000]
//       [--streams N --stream-to HOST:PORT [--rate BYTES_PER_S] [--chunk BYTES] [--seed 1]]
//       Prints "ready" once started. Until a line (or EOF) arrives on stdin, or --max-ms passed: one new connection every
//       --interval ms, each independent of the others (they overlap), each with its own --timeout; and N
//       streams to a `transfer.js server` (echo mode), each sending the deterministic stream of its seed at
//       --rate and reading the echo back. Then: no new connection, the streams half-close and
//       wait for the rest of their echo, and ONE JSON line is printed:
//       {"conns":[{"id","t","ms","ok","peer"?,"error"?}],"streams":[{"id","ok","sent","received",
//        "sentSha","receivedSha","error"?}],"started","stopped"}   (t, started, stopped: epoch ms)
//       Exit code 0 either way (2 on bad usage).
import { createHash } from 'node:crypto';
import { createServer, connect as netConnect } from 'node:net';
import { parseArgs } from 'node:util';
import { StreamReader } from './transfer.js';

export interface ConnResult {
  id: number;
  /** when the connect started (epoch ms) */
  t: number;
  ms: number;
  ok: boolean;
  /** the connection's source as the server saw it (addr:port) */
  peer?: string;
  error?: string;
}

export interface StreamResult {
  id: string;
  ok: boolean;
  sent: number;
  received: number;
  sentSha: string;
  receivedSha: string;
  error?: string;
}

export interface LoadResult {
  conns: ConnResult[];
  streams: StreamResult[];
  started: number;
  stopped: number;
}

function usage(msg: string): never {
  process.stderr.write(`load: ${msg}\n`);
  process.exit(2);
}

const plain = (a: string | undefined): string => (a ?? '').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');

function hostPort(to: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  if (!m) usage(`bad address '${to}' (HOST:PORT or [V6]:PORT)`);
  return { host: m[1]!, port: Number(m[2]) };
}

function runServer(values: { ports?: string; host?: string }): void {
  const ports = (values.ports ?? usage('server needs --ports')).split(',').map(Number);
  let pending = ports.length;
  for (const port of ports) {
    const server = createServer((s) => {
      s.on('error', () => {});
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        s.end(`${JSON.stringify({ id: buf.slice(0, nl), peer: `${plain(s.remoteAddress)}:${s.remotePort}` })}\n`);
      });
    });
    server.on('error', (e) => {
      process.stderr.write(`load: port ${port}: ${e.message}\n`);
      process.exit(1);
    });
    server.listen({ host: values.host ?? '::', port, ipv6Only: false, backlog: 1024 }, () => {
      if (--pending === 0) process.stdout.write('ready\n');
    });
  }
}

/** One short connection: send the id, read the one-line answer. */
function oneConn(host: string, port: number, id: number, timeoutMs: number): Promise<ConnResult> {
  const t = Date.now();
  return new Promise((resolve) => {
    let done = false;
    let buf = '';
    const s = netConnect({ host, port });
    const finish = (r: Partial<ConnResult>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ id, t, ms: Date.now() - t, ok: false, ...r });
    };
    const timer = setTimeout(() => finish({ error: 'ETIMEDOUT' }), timeoutMs);
    s.on('connect', () => s.write(`${id}\n`));
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = JSON.parse(buf.slice(0, nl)) as { id?: string; peer?: string };
        if (r.id !== String(id)) return finish({ error: `answer for ${r.id}` });
        finish({ ok: true, peer: r.peer });
      } catch {
        finish({ error: `bad answer ${JSON.stringify(buf.slice(0, 80))}` });
      }
    });
    s.on('end', () => finish({ error: 'EOF without an answer' }));
    s.on('error', (e: NodeJS.ErrnoException) => finish({ error: e.code ?? e.message }));
  });
}

/**
 * One long stream: the header of transfer.js echo mode, then the stream of `seed` at `rate` bytes/s
 * until `stopped()`, then a half-close; done when every byte came back (or on an error).
 */
function oneStream(host: string, port: number, id: string, seed: number, rate: number, chunk: number, stopped: () => boolean): Promise<StreamResult> {
  return new Promise((resolve) => {
    const sh = createHash('sha256');
    const rh = createHash('sha256');
    const src = new StreamReader(seed);
    let sent = 0;
    let received = 0;
    let done = false;
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    const s = netConnect({ host, port, allowHalfOpen: true });
    const finish = (error?: string): void => {
      if (done) return;
      done = true;
      clearInterval(timer);
      s.destroy();
      const sentSha = sh.digest('hex');
      const receivedSha = rh.digest('hex');
      resolve({ id, ok: !error && received === sent && sentSha === receivedSha, sent, received, sentSha, receivedSha, error });
    };
    const TICK_MS = 10;
    let credit = 0;
    const pump = (): void => {
      if (done || ended) return;
      if (stopped()) {
        ended = true;
        s.end();
        return;
      }
      credit += (rate * TICK_MS) / 1000;
      while (credit >= chunk && s.writableLength < 4 * chunk) {
        const parts: Buffer[] = [];
        for (let n = 0; n < chunk;) {
          const b = src.next(chunk - n);
          parts.push(b);
          n += b.length;
        }
        const data = Buffer.concat(parts);
        sh.update(data);
        sent += data.length;
        s.write(data);
        credit -= chunk;
      }
    };
    s.on('connect', () => {
      s.write(`${JSON.stringify({ id, mode: 'echo' })}\n`);
      timer = setInterval(pump, TICK_MS);
    });
    s.on('data', (d: Buffer) => {
      received += d.length;
      rh.update(d);
    });
    s.on('end', () => finish(ended ? undefined : `EOF after ${received} of ${sent} bytes, before the stream ended`));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  });
}

async function runClient(values: Record<string, string | undefined>): Promise<void> {
  const num = (k: string, d: number): number => {
    const v = values[k];
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) usage(`bad --${k} '${v}'`);
    return n;
  };
  const { host, port } = hostPort(values.to ?? usage('client needs --to HOST:PORT'));
  const interval = Math.max(1, num('interval', 5));
  const timeoutMs = num('timeout', 3000);
  const maxMs = num('max-ms', 60_000);
  const started = Date.now();
  let stop = false;
  const stopped = (): boolean => stop;
  // stdin, not a file: the client runs as another user, who may not see the test's files
  process.stdin.on('data', () => (stop = true));
  process.stdin.on('end', () => (stop = true));
  const watch = setTimeout(() => (stop = true), maxMs);
  const streams: Array<Promise<StreamResult>> = [];
  const nStreams = num('streams', 0);
  if (nStreams > 0) {
    const st = hostPort(values['stream-to'] ?? usage('--streams needs --stream-to HOST:PORT'));
    const seed = num('seed', 1);
    for (let i = 0; i < nStreams; i++)
      streams.push(oneStream(st.host, st.port, `stream-${i}`, seed + i, num('rate', 512 * 1024), num('chunk', 16 * 1024), stopped));
  }
  process.stdout.write('ready\n');
  const conns: Array<Promise<ConnResult>> = [];
  let id = 0;
  while (!stop) {
    conns.push(oneConn(host, port, ++id, timeoutMs));
    await new Promise((r) => setTimeout(r, interval));
  }
  const stoppedAt = Date.now();
  clearTimeout(watch);
  process.stdin.destroy();
  const result: LoadResult = { conns: await Promise.all(conns), streams: await Promise.all(streams), started, stopped: stoppedAt };
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      ports: { type: 'string' },
      host: { type: 'string' },
      to: { type: 'string' },
      interval: { type: 'string' },
      timeout: { type: 'string' },
      'max-ms': { type: 'string' },
      streams: { type: 'string' },
      'stream-to': { type: 'string' },
      rate: { type: 'string' },
      chunk: { type: 'string' },
      seed: { type: 'string' },
    },
    strict: true,
  });
  if (mode === 'server') runServer(values);
  else if (mode === 'client') await runClient(values);
  else usage(`mode must be server or client (got '${mode ?? ''}')`);
}

// only as a program (the tests import the result types)
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) void main();
