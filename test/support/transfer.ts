#!/usr/bin/env node
// Byte-exact transfer tool for the splicing tests: moves N bytes of deterministic pseudo-random data
// over TCP and checks every byte with sha256, so a lost, duplicated or reordered byte cannot pass.
//
//   node transfer.js server --ports 9000[,9001] [--host ::]
//       Prints "ready" once every port listens. Each connection starts with one JSON header line
//       from the client, then:
//         {"id","mode":"sink"[,"slowMs"]}   read everything until EOF (pausing slowMs after each read),
//                                           reply {"bytes","sha256"}\n, then end
//         {"id","mode":"source","bytes","seed"[,"chunk"]}   send `bytes` of stream(seed), then end
//         {"id","mode":"echo"}              send back every byte; end after the client's EOF
//       and logs ONE JSON line per connection on stdout when it closes:
//         {"id","mode","received","receivedSha","sent","end":"eof"|"error","error"?}
//   node transfer.js client --to HOST:PORT|[V6]:PORT --mode sink|source|echo --bytes N
//       [--chunk 65536] [--seed 1] [--concurrency 1] [--read-size BYTES] [--slow-ms MS] [--half-close]
//       [--reset-after BYTES] [--server-slow-ms MS] [--stall-ms MS] [--pause-after BYTES --pause-ms MS]
//       [--hold-until FILE [--pause-after BYTES]] [--mark-after BYTES --mark-file FILE]
//       [--timeout 30000] [--id PREFIX]
//       Prints ONE JSON line: {"ok":bool,"results":[{id,ok,mode,sent,sentSha,received,receivedSha,
//       expectedSha,reply,error,reset,ms}]}. Exit code 0 either way (2 on bad usage).
//       --read-size: read through a fixed buffer of this size (partial reads of an odd size);
//       --slow-ms: pause that long after every read (a slow reader); --half-close (source): shut the
//       write side down right after the header and keep reading; --reset-after: after that many bytes
//       sent (sink, echo) or received (source), destroy the socket with RST; --stall-ms (source, echo):
//       read nothing for that long after the header (the writer runs ahead); --pause-after/--pause-ms:
//       once that many bytes are in, read nothing for that long, then go on (a reader that stalls and
//       resumes). --hold-until FILE: the same, but until FILE exists instead of for a time (from the
//       header on, or from --pause-after bytes in); sink and echo also stop writing once --pause-after
//       bytes are out, until FILE exists. A test creates FILE when the kernel shows the state it waits
//       for (a fallback, a restarted agent), so that no outcome depends on how fast anything ran.
//       --mark-after/--mark-file: create FILE once that many bytes are in (source, echo) or out (sink):
//       the test knows the transfer is under way.
import { createHash, type Hash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type NetConnectOpts, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

export const BLOCK = 64 * 1024;

/** Block `i` of the pseudo-random stream `seed` (xorshift32, 64 KiB per block). */
export function streamBlock(seed: number, i: number): Buffer {
  const b = Buffer.allocUnsafe(BLOCK);
  let x = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35)) >>> 0 || 1;
  for (let o = 0; o < BLOCK; o += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, o);
  }
  return b;
}

/** The stream `seed` read sequentially. */
export class StreamReader {
  private block = -1;
  private buf: Buffer = Buffer.alloc(0);
  private off = 0; // absolute offset
  constructor(private readonly seed: number) {}

  next(n: number): Buffer {
    const i = Math.floor(this.off / BLOCK);
    if (i !== this.block) {
      this.block = i;
      this.buf = streamBlock(this.seed, i);
    }
    const start = this.off % BLOCK;
    const take = Math.min(n, BLOCK - start);
    this.off += take;
    return this.buf.subarray(start, start + take);
  }
}

/** sha256 (hex) of the first `n` bytes of stream `seed`. */
export function streamSha(seed: number, n: number): string {
  const h = createHash('sha256');
  const r = new StreamReader(seed);
  for (let left = n; left > 0;) {
    const b = r.next(Math.min(left, BLOCK));
    h.update(b);
    left -= b.length;
  }
  return h.digest('hex');
}

function usage(msg: string): never {
  process.stderr.write(`transfer: ${msg}\n`);
  process.exit(2);
}

function out(line: unknown): void {
  process.stdout.write(typeof line === 'string' ? `${line}\n` : `${JSON.stringify(line)}\n`);
}

/** Write `n` bytes of stream `seed` in `chunk`-sized writes, honouring backpressure. `stopAt` stops early. */
function sendStream(
  s: Socket,
  seed: number,
  n: number,
  chunk: number,
  hash: Hash | undefined,
  onSent: (total: number) => boolean,
  gate?: { after: number; open: () => Promise<void> },
): Promise<void> {
  return new Promise((resolve) => {
    const r = new StreamReader(seed);
    let sent = 0;
    let gated = gate !== undefined;
    const pump = (): void => {
      while (sent < n) {
        if (s.destroyed) return resolve();
        if (gated && sent >= gate!.after) {
          gated = false;
          void gate!.open().then(pump);
          return;
        }
        const parts: Buffer[] = [];
        let len = 0;
        const upTo = gated ? Math.min(n, gate!.after) : n;
        while (len < chunk && sent + len < upTo) {
          const b = r.next(Math.min(chunk - len, upTo - sent - len));
          parts.push(b);
          len += b.length;
        }
        const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        hash?.update(data);
        sent += len;
        const more = s.write(data);
        if (!onSent(sent)) return resolve();
        if (!more) {
          s.once('drain', pump);
          return;
        }
      }
      resolve();
    };
    pump();
  });
}

// ---- server ----------------------------------------------------------------------------------

interface Header {
  id?: string;
  mode?: string;
  bytes?: number;
  seed?: number;
  chunk?: number;
  slowMs?: number;
}

function serveConnection(s: Socket): void {
  let header: Header | undefined;
  let head = Buffer.alloc(0);
  const h = createHash('sha256');
  let received = 0;
  let sent = 0;
  let error: string | undefined;
  let logged = false;
  const log = (end: 'eof' | 'error'): void => {
    if (logged) return;
    logged = true;
    out({ id: header?.id, mode: header?.mode, received, receivedSha: h.copy().digest('hex'), sent, end, error });
  };
  s.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code ?? e.message;
    log('error');
  });
  s.on('close', (hadError) => log(hadError ? 'error' : 'eof'));
  const onBody = (d: Buffer): void => {
    received += d.length;
    h.update(d);
    if (header?.mode === 'echo') {
      sent += d.length;
      if (!s.write(d)) {
        s.pause();
        s.once('drain', () => s.resume());
      }
    } else if (header?.slowMs) {
      s.pause();
      setTimeout(() => s.resume(), header.slowMs);
    }
  };
  const start = (): void => {
    const m = header!.mode;
    if (m === 'source') {
      void sendStream(s, header!.seed ?? 1, header!.bytes ?? 0, header!.chunk ?? BLOCK, undefined, (t) => {
        sent = t;
        return true;
      }).then(() => {
        if (!s.destroyed) s.end();
      });
    } else if (m !== 'sink' && m !== 'echo') {
      error = `bad mode ${String(m)}`;
      s.destroy();
    }
  };
  s.on('data', (d: Buffer) => {
    if (header) return onBody(d);
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(0x0a);
    if (nl < 0) {
      if (head.length > 4096) s.destroy();
      return;
    }
    try {
      header = JSON.parse(head.subarray(0, nl).toString('utf8')) as Header;
    } catch {
      error = 'bad header';
      s.destroy();
      return;
    }
    start();
    const rest = head.subarray(nl + 1);
    if (rest.length > 0) onBody(rest);
  });
  s.on('end', () => {
    if (header?.mode === 'sink') s.end(`${JSON.stringify({ bytes: received, sha256: h.copy().digest('hex') })}\n`);
    else if (header?.mode === 'echo') s.end();
  });
}

function runServer(values: { ports?: string; host?: string }): void {
  const ports = (values.ports ?? usage('server needs --ports')).split(',').map(Number);
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) usage(`bad port in --ports '${values.ports}'`);
  let pending = ports.length;
  for (const port of ports) {
    const server = createServer({ allowHalfOpen: true }, serveConnection);
    server.on('error', (e) => {
      process.stderr.write(`transfer: port ${port}: ${e.message}\n`);
      process.exit(1);
    });
    server.listen({ host: values.host ?? '::', port, ipv6Only: false, backlog: 1024 }, () => {
      if (--pending === 0) out('ready');
    });
  }
}

// ---- client ----------------------------------------------------------------------------------

export interface ClientResult {
  id: string;
  ok: boolean;
  mode: string;
  sent: number;
  sentSha?: string;
  received: number;
  receivedSha?: string;
  expectedSha?: string;
  reply?: { bytes: number; sha256: string };
  reset?: boolean;
  error?: string;
  end?: 'eof' | 'error';
  ms: number;
}

interface ClientOpts {
  host: string;
  port: number;
  mode: 'sink' | 'source' | 'echo';
  bytes: number;
  chunk: number;
  seed: number;
  readSize?: number;
  slowMs: number;
  halfClose: boolean;
  resetAfter?: number;
  serverSlowMs: number;
  stallMs: number;
  pauseAfter?: number;
  pauseMs: number;
  holdUntil?: string;
  markAfter?: number;
  markFile?: string;
  id: string;
}

/** Resolves once `file` exists (looked at every 10 ms). */
function whenExists(file: string): Promise<void> {
  return new Promise((resolve) => {
    const look = (): void => {
      if (existsSync(file)) resolve();
      else setTimeout(look, 10);
    };
    look();
  });
}

function oneClient(o: ClientOpts): Promise<ClientResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const r: ClientResult = { id: o.id, ok: false, mode: o.mode, sent: 0, received: 0, ms: 0 };
    const rh = createHash('sha256');
    const sh = createHash('sha256');
    let replyBuf = '';
    let done = false;
    const finish = (patch: Partial<ClientResult>): void => {
      if (done) return;
      done = true;
      Object.assign(r, patch);
      r.receivedSha = rh.digest('hex');
      if (r.sentSha === undefined && r.sent > 0) r.sentSha = sh.digest('hex');
      r.ms = Date.now() - t0;
      if (!r.error && !r.reset) {
        if (o.mode === 'sink') r.ok = r.reply?.bytes === o.bytes && r.reply.sha256 === r.sentSha && r.sent === o.bytes;
        else if (o.mode === 'source') {
          r.expectedSha = streamSha(o.seed, o.bytes);
          r.ok = r.received === o.bytes && r.receivedSha === r.expectedSha;
        } else r.ok = r.received === o.bytes && r.sent === o.bytes && r.receivedSha === r.sentSha;
      }
      if (!s.destroyed) s.destroy();
      resolve(r);
    };
    const paused = { v: false };
    /** read nothing for `ms` (a pause of the reader, not of the writer) */
    let held = false;
    const hold = (ms: number | string): void => {
      held = true;
      s.pause();
      const resume = (): void => {
        held = false;
        if (!paused.v) s.resume();
      };
      if (typeof ms === 'string') void whenExists(ms).then(resume);
      else setTimeout(resume, ms);
    };
    let pausedOnce = false;
    let marked = false;
    const mark = (n: number): void => {
      if (marked || o.markFile === undefined || n < (o.markAfter ?? 0)) return;
      marked = true;
      writeFileSync(o.markFile, `${n}\n`);
    };
    const onData = (d: Buffer): void => {
      if (o.mode === 'sink') {
        replyBuf += d.toString('utf8');
        return;
      }
      r.received += d.length;
      rh.update(d);
      mark(r.received);
      if (o.mode === 'source' && o.resetAfter !== undefined && r.received >= o.resetAfter) {
        s.resetAndDestroy();
        finish({ reset: true });
        return;
      }
      if (o.mode === 'echo' && !o.halfClose && r.received >= o.bytes) {
        finish({});
        return;
      }
      if (o.pauseAfter !== undefined && !pausedOnce && r.received >= o.pauseAfter) {
        pausedOnce = true;
        hold(o.holdUntil ?? o.pauseMs);
      }
      if (o.slowMs > 0 && !paused.v) {
        paused.v = true;
        s.pause();
        setTimeout(() => {
          paused.v = false;
          if (!held) s.resume();
        }, o.slowMs);
      }
    };
    const readBuf = o.readSize ? Buffer.alloc(o.readSize) : undefined;
    const opts: NetConnectOpts = { host: o.host, port: o.port, allowHalfOpen: true };
    // a fixed read buffer: every read is at most readSize bytes (partial reads)
    if (readBuf)
      (opts as { onread?: unknown }).onread = { buffer: readBuf, callback: (n: number, b: Uint8Array) => void onData(Buffer.from(b.subarray(0, n))) };
    const s = netConnect(opts);
    if (!readBuf) s.on('data', onData);
    s.on('error', (e: NodeJS.ErrnoException) => finish({ error: e.code ?? e.message, end: 'error' }));
    s.on('end', () => {
      r.end = 'eof';
      if (o.mode === 'sink') {
        try {
          r.reply = JSON.parse(replyBuf.trim()) as ClientResult['reply'];
        } catch {
          return finish({ error: `EOF without a reply (${JSON.stringify(replyBuf.slice(0, 100))})` });
        }
        return finish({});
      }
      if (r.received < o.bytes) return finish({ error: `EOF after ${r.received} of ${o.bytes} bytes` });
      finish({});
    });
    s.on('close', () => finish({ error: r.error ?? 'closed early' }));
    s.on('connect', () => {
      const header: Header = { id: o.id, mode: o.mode };
      if (o.mode === 'source') Object.assign(header, { bytes: o.bytes, seed: o.seed, chunk: o.chunk });
      if (o.mode === 'sink' && o.serverSlowMs > 0) header.slowMs = o.serverSlowMs;
      s.write(`${JSON.stringify(header)}\n`);
      if (o.stallMs > 0 && o.mode !== 'sink') hold(o.stallMs);
      else if (o.holdUntil !== undefined && o.pauseAfter === undefined && o.mode !== 'sink') hold(o.holdUntil);
      if (o.mode === 'source') {
        if (o.halfClose) s.end();
        return;
      }
      const gate = o.holdUntil !== undefined && o.pauseAfter !== undefined ? { after: o.pauseAfter, open: () => whenExists(o.holdUntil!) } : undefined;
      void sendStream(
        s,
        o.seed,
        o.bytes,
        o.chunk,
        sh,
        (t) => {
          r.sent = t;
          if (o.mode === 'sink') mark(t);
          if (o.resetAfter !== undefined && t >= o.resetAfter) {
            r.sentSha = sh.digest('hex');
            s.resetAndDestroy();
            finish({ reset: true });
            return false;
          }
          return true;
        },
        gate,
      ).then(() => {
        if (done || s.destroyed) return;
        r.sentSha = sh.digest('hex');
        // sink: EOF tells the server we are done; echo: half-close when asked, else read the echo back first
        if (o.mode === 'sink' || o.halfClose) s.end();
      });
    });
  });
}

async function runClient(values: Record<string, string | boolean | undefined>): Promise<void> {
  const to = (values.to as string | undefined) ?? usage('client needs --to HOST:PORT');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  if (!m) usage(`bad --to '${to}'`);
  const num = (k: string, d: number): number => {
    const v = values[k];
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) usage(`bad --${k} '${String(v)}'`);
    return n;
  };
  const mode = (values.mode as string | undefined) ?? 'sink';
  if (mode !== 'sink' && mode !== 'source' && mode !== 'echo') usage(`--mode must be sink, source or echo`);
  const concurrency = Math.max(1, num('concurrency', 1));
  const timeoutMs = num('timeout', 30_000);
  const base = {
    host: m[1]!,
    port: Number(m[2]),
    mode: mode as ClientOpts['mode'],
    bytes: num('bytes', 1 << 20),
    chunk: Math.max(1, num('chunk', BLOCK)),
    readSize: values['read-size'] !== undefined ? Math.max(1, num('read-size', 0)) : undefined,
    slowMs: num('slow-ms', 0),
    halfClose: values['half-close'] === true,
    resetAfter: values['reset-after'] !== undefined ? num('reset-after', 0) : undefined,
    serverSlowMs: num('server-slow-ms', 0),
    stallMs: num('stall-ms', 0),
    pauseAfter: values['pause-after'] !== undefined ? num('pause-after', 0) : undefined,
    pauseMs: num('pause-ms', 0),
    holdUntil: values['hold-until'] as string | undefined,
    markAfter: values['mark-after'] !== undefined ? num('mark-after', 0) : undefined,
    markFile: values['mark-file'] as string | undefined,
  };
  if (base.markAfter !== undefined && base.markFile === undefined) usage('--mark-after needs --mark-file');
  const seed = num('seed', 1);
  const prefix = (values.id as string | undefined) ?? `c${process.pid}`;
  const runs = Array.from({ length: concurrency }, (_, i) => oneClient({ ...base, seed: seed + i, id: `${prefix}-${i}` }));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), timeoutMs)));
  const all = await Promise.race([Promise.all(runs), timeout]);
  clearTimeout(timer);
  const results: ClientResult[] = all === 'timeout' ? [{ id: prefix, ok: false, mode, sent: 0, received: 0, error: 'ETIMEDOUT', ms: timeoutMs }] : all;
  process.stdout.write(`${JSON.stringify({ ok: results.every((x) => x.ok), results })}\n`, () => process.exit(0));
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      ports: { type: 'string' },
      host: { type: 'string' },
      to: { type: 'string' },
      mode: { type: 'string' },
      bytes: { type: 'string' },
      chunk: { type: 'string' },
      seed: { type: 'string' },
      concurrency: { type: 'string' },
      'read-size': { type: 'string' },
      'slow-ms': { type: 'string' },
      'half-close': { type: 'boolean' },
      'reset-after': { type: 'string' },
      'server-slow-ms': { type: 'string' },
      'stall-ms': { type: 'string' },
      'pause-after': { type: 'string' },
      'pause-ms': { type: 'string' },
      'hold-until': { type: 'string' },
      'mark-after': { type: 'string' },
      'mark-file': { type: 'string' },
      timeout: { type: 'string' },
      id: { type: 'string' },
    },
    strict: true,
  });
  if (mode === 'server') runServer(values);
  else if (mode === 'client') await runClient(values);
  else usage(`mode must be server or client (got '${mode ?? ''}')`);
}

// only as a program (the tests import the stream functions)
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) void main();
