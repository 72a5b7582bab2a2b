#!/usr/bin/env node
// A small TCP endpoint for the sandbox: the app server, a stand-in proxy and the client.
//
//   node endpoint.js serve --ports 8080,9090 [--tag app] [--echo]
//       Listen on [::]:port (dual-stack) for each port; every connection gets ONE JSON line and is closed
//       (with --echo it stays open and echoes what it receives):
//       {"tag","port","local","peer","orig":{"address","port"} | {"error":"ENOENT"}}
//       orig is getsockopt(SO_ORIGINAL_DST) through the native addon (error "ENOADDON" when it is not built).
//   node endpoint.js proxy [--outbound 15001] [--inbound 15006] [--status 15020,15021,15090] [--forward]
//       Like serve on the capture ports (tags proxy-outbound / proxy-inbound; status ports: proxy-status).
//       With --forward it acts like Envoy: pipes each connection to its SO_ORIGINAL_DST (inbound from
//       127.0.0.6 / ::6, outbound from the default source). Logs one JSON line per connection on stdout.
//   node endpoint.js connect --to HOST:PORT|[V6]:PORT [--from ADDR] [--from-port N] [--timeout 2000] [--send TEXT]
//       --from / --from-port bind the socket before connect() (to ADDR, default the wildcard address of
//       the family, and port N, default 0: a port is taken at bind, as dig, curl --local-port and
//       Python's bind(("0.0.0.0", 0)) do).
//       Prints ONE JSON line: {"ok":true,"reply":<JSON or text>,"local":"addr:port"} or
//       {"ok":false,"error":"ECONNREFUSED"|"ETIMEDOUT"|...}. Exit code 0 either way (2 on bad usage).
//   node endpoint.js session --to HOST:PORT [--rounds 20] [--interval 100]
//       One long-lived connection to an --echo server: pings every interval; ONE JSON line at the end.
//   node endpoint.js udp-serve --ports 53,5353 [--tag svc] [--addrs A,B,...]
//       UDP: answers each datagram with ONE JSON datagram {"tag","port","local","peer"} (peer: the
//       sender as this server saw it). Binds [::]:port dual-stack, or each of --addrs (then replies leave
//       from the address that was asked, as a DNS server bound per address does).
//   node endpoint.js udp-query --to HOST:PORT|[V6]:PORT [--connected] [--from ADDR] [--timeout 2000]
//       Sends one datagram and prints ONE JSON line: {"ok":true,"reply":<JSON>,"from":"addr:port","local":"addr:port"}
//       where from is where the reply came from as the app sees it (recvmsg's address) and local the
//       socket's own address (getsockname; node binds the socket to the wildcard address and a port
//       before its first send or connect, whether --from is given or not); with --connected the
//       socket is connect()ed first and "peer" is its getpeername(). {"ok":false,"error":...} on timeout.
//   proxy --dns 15053 adds a DNS listener like istio-agent's: UDP and TCP on 127.0.0.1 and [::1] (tag
//       proxy-dns); a UDP query is answered from the proxy's own socket with {"tag","port","peer"}.
// serve, udp-serve and proxy print "ready" once every port listens.

import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, connect as netConnect, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

type OrigResult = { address: string; port: number } | { error: string };
type OriginalDstFn = (fd: number, family: 4 | 6) => { address: string; port: number };

let originalDst: OriginalDstFn | undefined;

/** The addon is loaded lazily so the endpoint also runs (orig = {"error":"ENOADDON"}) before native/ is built. */
async function loadAddon(): Promise<void> {
  try {
    originalDst = (await import('../native/addon.js')).originalDst;
  } catch (e) {
    if (process.env.MESHLANE_ENDPOINT_DEBUG) process.stderr.write(`endpoint: native addon not loaded: ${String(e)}\n`);
  }
}

/** '::ffff:10.0.0.1' -> '10.0.0.1' */
export function normalizeAddr(a: string | undefined): string {
  if (a === undefined) return '';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m ? m[1]! : a;
}

function hostPort(addr: string | undefined, port: number | undefined): string {
  const a = normalizeAddr(addr);
  return isIPv4(a) || a === '' ? `${a}:${port ?? ''}` : `[${a}]:${port ?? ''}`;
}

function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

function familyOf(localAddr: string): 4 | 6 {
  return isIPv4(normalizeAddr(localAddr)) ? 4 : 6;
}

function readOrig(socket: Socket): OrigResult {
  if (originalDst === undefined) return { error: 'ENOADDON' };
  const fd = socketFd(socket);
  if (fd === undefined) return { error: 'EBADF' };
  try {
    const r = originalDst(fd, familyOf(socket.localAddress ?? ''));
    return { address: normalizeAddr(r.address), port: r.port };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return { error: typeof code === 'string' ? code : String(e) };
  }
}

/** The port of the listener that accepted each socket. */
const listenPorts = new WeakMap<Socket, number>();

function describe(socket: Socket, tag: string, listen: number | undefined = listenPorts.get(socket)): Record<string, unknown> {
  return {
    tag,
    // the port the server listens on (which listener took it) and the accepted socket's local port
    // (they differ when a connection was steered to a listener without rewriting, e.g. sk_lookup)
    listen: listen ?? socket.localPort,
    port: socket.localPort,
    local: normalizeAddr(socket.localAddress),
    peer: normalizeAddr(socket.remoteAddress),
    orig: readOrig(socket),
  };
}

function out(line: unknown): void {
  process.stdout.write(typeof line === 'string' ? `${line}\n` : `${JSON.stringify(line)}\n`);
}

function parsePorts(s: string, what: string): number[] {
  const ports = s
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map(Number);
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) usage(`bad port in --${what}: '${s}'`);
  return ports;
}

function usage(msg: string): never {
  process.stderr.write(`endpoint: ${msg}\n`);
  process.exit(2);
}

function listenAll(
  specs: Array<{ port: number; onConnection: (s: Socket) => void; allowHalfOpen?: boolean; host?: string }>,
  ready: () => void = () => out('ready'),
): void {
  let pending = specs.length;
  const servers: Server[] = [];
  for (const spec of specs) {
    const server = createServer({ allowHalfOpen: spec.allowHalfOpen ?? false }, (s) => {
      s.on('error', () => {});
      listenPorts.set(s, spec.port);
      spec.onConnection(s);
    });
    server.on('error', (e) => {
      process.stderr.write(`endpoint: port ${spec.port}: ${(e as Error).message}\n`);
      process.exit(1);
    });
    server.listen({ host: spec.host ?? '::', port: spec.port, ipv6Only: false }, () => {
      if (--pending === 0) ready();
    });
    servers.push(server);
  }
}

function replyOnce(tag: string, log: boolean, echo = false): (s: Socket) => void {
  return (s) => {
    const info = describe(s, tag);
    if (log) out(info);
    if (echo) {
      // keep the connection: the JSON line first, then every byte back (session mode's peer)
      s.write(`${JSON.stringify(info)}\n`);
      s.pipe(s);
      return;
    }
    s.end(`${JSON.stringify(info)}\n`);
  };
}

function forward(direction: 'outbound' | 'inbound'): (s: Socket) => void {
  const tag = `proxy-${direction}`;
  return (client) => {
    const info = describe(client, tag);
    const orig = info.orig as OrigResult;
    if ('error' in orig) {
      out({ ...info, error: `no original destination: ${orig.error}` });
      client.destroy();
      return;
    }
    const localAddress = direction === 'inbound' ? (isIPv4(orig.address) ? '127.0.0.6' : '::6') : undefined;
    const upstream = netConnect({ host: orig.address, port: orig.port, localAddress, allowHalfOpen: true });
    let logged = false;
    upstream.once('connect', () => {
      logged = true;
      out({ ...info, upstream: { local: hostPort(upstream.localAddress, upstream.localPort) } });
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.on('error', (e) => {
      if (!logged) out({ ...info, error: (e as NodeJS.ErrnoException).code ?? e.message });
      logged = true;
      client.destroy();
    });
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  };
}

function runConnect(values: { to?: string; from?: string; 'from-port'?: string; timeout?: string; send?: string }): void {
  const to = values.to ?? usage('connect needs --to HOST:PORT');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  if (!m) usage(`bad --to '${to}' (HOST:PORT or [V6]:PORT)`);
  const host = m[1]!;
  const port = Number(m[2]);
  const timeoutMs = Number(values.timeout ?? '2000');
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage(`bad --timeout '${values.timeout}'`);
  const localPort = values['from-port'] === undefined ? undefined : parsePorts(values['from-port'], 'from-port')[0];

  let done = false;
  let local = '';
  const chunks: Buffer[] = [];
  const finish = (line: Record<string, unknown>): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(0));
  };
  const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), timeoutMs);
  const sock = netConnect({ host, port, localAddress: values.from, localPort });
  sock.on('connect', () => {
    local = hostPort(sock.localAddress, sock.localPort);
    if (values.send !== undefined) sock.end(values.send);
  });
  const settle = (): void => {
    const text = Buffer.concat(chunks).toString('utf8');
    let reply: unknown = text;
    try {
      reply = JSON.parse(text.trim());
    } catch {
      /* raw text */
    }
    // what the app sees as its peer (getpeername): the address it dialled, even when captured
    finish({ ok: true, reply, local, remote: hostPort(sock.remoteAddress, sock.remotePort) });
  };
  sock.on('data', (d: Buffer) => {
    chunks.push(d);
    // one line is the whole answer (an echoing server keeps the connection open)
    if (d.includes(0x0a)) settle();
  });
  sock.on('end', settle);
  sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
}

/**
 * session: one long-lived connection. Reads the server's JSON line, then sends `--rounds` pings, one
 * every `--interval` ms, each of which must come back. Prints one JSON line at the end:
 * {"ok":true,"rounds":N,"reply":<first line>} or {"ok":false,"error":...,"round":i}. Exit code 0 either way.
 */
function runSession(values: { to?: string; rounds?: string; interval?: string }): void {
  const to = values.to ?? usage('session needs --to HOST:PORT');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  if (!m) usage(`bad --to '${to}' (HOST:PORT or [V6]:PORT)`);
  const rounds = Number(values.rounds ?? '20');
  const interval = Number(values.interval ?? '100');
  const sock = netConnect({ host: m[1]!, port: Number(m[2]) });
  let buf = '';
  let reply: unknown;
  let round = 0;
  let expect = '';
  let done = false;
  const finish = (line: Record<string, unknown>): void => {
    if (done) return;
    done = true;
    clearTimeout(watchdog);
    sock.destroy();
    process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(0));
  };
  const watchdog = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT', round }), rounds * interval + 5000);
  const ping = (): void => {
    if (round === rounds) return finish({ ok: true, rounds, reply });
    round++;
    expect = `ping ${round}\n`;
    sock.write(expect);
  };
  sock.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    if (reply === undefined) {
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        reply = JSON.parse(buf.slice(0, nl));
      } catch {
        reply = buf.slice(0, nl);
      }
      buf = buf.slice(nl + 1);
      ping();
      return;
    }
    if (buf.length >= expect.length) {
      if (buf.slice(0, expect.length) !== expect) return finish({ ok: false, error: 'EBADECHO', round, got: buf });
      buf = buf.slice(expect.length);
      setTimeout(ping, interval);
    }
  });
  sock.on('end', () => finish({ ok: false, error: 'EOF', round }));
  sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message, round }));
}

// ---- UDP ----------------------------------------------------------------------------------------

/** Bind one UDP socket per (address, port); each datagram gets one JSON datagram back from that socket. */
function udpListen(binds: Array<{ host: string; port: number }>, tag: string, log: boolean): Promise<UdpSocket[]> {
  return Promise.all(
    binds.map(
      ({ host, port }) =>
        new Promise<UdpSocket>((resolve) => {
          const v6 = isIPv6(host);
          const sock = createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 && host !== '::' });
          sock.on('error', (e) => {
            process.stderr.write(`endpoint: udp ${host} port ${port}: ${e.message}\n`);
            process.exit(1);
          });
          sock.on('message', (_msg, rinfo) => {
            const info = { tag, port, local: normalizeAddr(host), peer: normalizeAddr(rinfo.address) };
            if (log) out({ ...info, proto: 'udp' });
            sock.send(JSON.stringify(info), rinfo.port, rinfo.address);
          });
          sock.bind({ port, address: host, exclusive: true }, () => resolve(sock));
        }),
    ),
  );
}

function splitHostPort(to: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  if (!m) usage(`bad --to '${to}' (HOST:PORT or [V6]:PORT)`);
  return { host: m[1]!, port: Number(m[2]) };
}

function runUdpQuery(values: { to?: string; from?: string; timeout?: string; connected?: boolean }): void {
  const { host, port } = splitHostPort(values.to ?? usage('udp-query needs --to HOST:PORT'));
  const timeoutMs = Number(values.timeout ?? '2000');
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage(`bad --timeout '${values.timeout}'`);
  const sock = createSocket({ type: isIPv4(host) ? 'udp4' : 'udp6' });
  let done = false;
  const finish = (line: Record<string, unknown>): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    try {
      sock.close();
    } catch {
      /* closed */
    }
    process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(0));
  };
  const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), timeoutMs);
  sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
  sock.on('message', (msg, rinfo) => {
    let reply: unknown = msg.toString('utf8');
    try {
      reply = JSON.parse(reply as string);
    } catch {
      /* raw text */
    }
    const me = sock.address();
    const line: Record<string, unknown> = { ok: true, reply, from: hostPort(rinfo.address, rinfo.port), local: hostPort(me.address, me.port) };
    if (values.connected) {
      try {
        const r = sock.remoteAddress();
        line.peer = hostPort(r.address, r.port);
      } catch (e) {
        line.peer = (e as NodeJS.ErrnoException).code ?? String(e);
      }
    }
    finish(line);
  });
  const query = Buffer.from('query');
  const send = (): void => {
    if (values.connected) {
      sock.connect(port, host, (err?: Error) => {
        if (err) return finish({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message });
        sock.send(query);
      });
    } else {
      sock.send(query, port, host);
    }
  };
  if (values.from !== undefined) sock.bind({ address: values.from, port: 0 }, send);
  else send();
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      ports: { type: 'string' },
      tag: { type: 'string' },
      outbound: { type: 'string' },
      inbound: { type: 'string' },
      status: { type: 'string' },
      forward: { type: 'boolean' },
      to: { type: 'string' },
      from: { type: 'string' },
      'from-port': { type: 'string' },
      timeout: { type: 'string' },
      send: { type: 'string' },
      echo: { type: 'boolean' },
      rounds: { type: 'string' },
      interval: { type: 'string' },
      dns: { type: 'string' },
      addrs: { type: 'string' },
      connected: { type: 'boolean' },
    },
    strict: true,
  });
  switch (mode) {
    case 'serve': {
      await loadAddon();
      const tag = values.tag ?? 'app';
      const ports = parsePorts(values.ports ?? usage('serve needs --ports'), 'ports');
      listenAll(ports.map((port) => ({ port, onConnection: replyOnce(tag, false, values.echo === true) })));
      break;
    }
    case 'proxy': {
      await loadAddon();
      const outbound = parsePorts(values.outbound ?? '15001', 'outbound');
      const inbound = parsePorts(values.inbound ?? '15006', 'inbound');
      const status = parsePorts(values.status ?? '15020,15021,15090', 'status');
      const fwd = values.forward === true;
      // istio-agent's DNS proxy listens on localhost only: its UDP replies leave from 127.0.0.1 / ::1
      const dnsPorts = values.dns === undefined ? [] : parsePorts(values.dns, 'dns');
      const loopbacks = ['127.0.0.1', '::1'];
      await udpListen(
        dnsPorts.flatMap((port) => loopbacks.map((host) => ({ host, port }))),
        'proxy-dns',
        true,
      );
      listenAll([
        ...dnsPorts.flatMap((port) => loopbacks.map((host) => ({ port, host, onConnection: replyOnce('proxy-dns', true) }))),
        ...outbound.map((port) => ({
          port,
          allowHalfOpen: fwd,
          onConnection: fwd ? forward('outbound') : replyOnce('proxy-outbound', true, values.echo === true),
        })),
        ...inbound.map((port) => ({
          port,
          allowHalfOpen: fwd,
          onConnection: fwd ? forward('inbound') : replyOnce('proxy-inbound', true, values.echo === true),
        })),
        ...status.map((port) => ({ port, onConnection: replyOnce('proxy-status', false) })),
      ]);
      break;
    }
    case 'connect':
      runConnect(values);
      break;
    case 'udp-serve': {
      const tag = values.tag ?? 'app';
      const ports = parsePorts(values.ports ?? usage('udp-serve needs --ports'), 'ports');
      const addrs = values.addrs === undefined ? ['::'] : values.addrs.split(',').filter((a) => a !== '');
      for (const a of addrs) if (!isIPv4(a) && !isIPv6(a)) usage(`bad address in --addrs: '${a}'`);
      await udpListen(
        addrs.flatMap((host) => ports.map((port) => ({ host, port }))),
        tag,
        false,
      );
      out('ready');
      break;
    }
    case 'udp-query':
      runUdpQuery(values);
      break;
    case 'session':
      runSession(values);
      break;
    default:
      usage(`mode must be serve, proxy, connect, session, udp-serve or udp-query (got '${mode ?? ''}')`);
  }
}

void main();
