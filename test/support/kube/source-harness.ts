// What the Kubernetes source's tests need around the test API server: a consumer that applies the
// source's events the way the agent does (and records them, the errors and every health change), the
// server's state in the same form (so a test can wait for "the consumer's state = the server's"), and a
// loopback TCP proxy that can freeze (connections stay open, nothing passes: a dead network path).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import type { SourceEvent, SourceHandlers, SourceHealth } from '../../../src/sources/source.js';
import type { KubeApiServer } from './server.js';

type Obj = { metadata?: { name?: string; namespace?: string; resourceVersion?: string } };

const podKey = (o: Obj): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
const nsKey = (o: Obj): string => o.metadata?.name ?? '';
const withRv = (key: string, o: Obj): string => `${key}@${o.metadata?.resourceVersion ?? '?'}`;

export interface StateView {
  namespaces: string[];
  pods: string[];
}

export class Consumer {
  readonly namespaces = new Map<string, Obj>();
  readonly pods = new Map<string, Obj>();
  readonly events: SourceEvent[] = [];
  readonly errors: string[] = [];
  readonly healths: SourceHealth[] = [];
  private readonly waiters = new Set<() => void>();

  readonly handlers: SourceHandlers = {
    event: (e) => this.onEvent(e),
    error: (e) => {
      this.errors.push(e.message);
      this.notify();
    },
  };

  readonly onHealth = (h: SourceHealth): void => {
    this.healths.push(h);
    this.notify();
  };

  private onEvent(e: SourceEvent): void {
    this.events.push(e);
    if (e.type === 'replace') {
      this.namespaces.clear();
      this.pods.clear();
      for (const o of e.namespaces as Obj[]) this.namespaces.set(nsKey(o), o);
      for (const o of e.pods as Obj[]) this.pods.set(podKey(o), o);
    } else {
      const o = e.object as Obj;
      const map = e.kind === 'Pod' ? this.pods : this.namespaces;
      const key = e.kind === 'Pod' ? podKey(o) : nsKey(o);
      if (e.type === 'upsert') map.set(key, o);
      else map.delete(key);
    }
    this.notify();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** what the consumer holds: names with resourceVersions, sorted */
  state(): StateView {
    return {
      namespaces: [...this.namespaces].map(([k, o]) => withRv(k, o)).sort(),
      pods: [...this.pods].map(([k, o]) => withRv(k, o)).sort(),
    };
  }

  /** Resolve when `ok()` holds (checked after every event, error and health change, and now). */
  waitFor(what: string, ok: () => boolean, timeoutMs = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!ok()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `not within ${timeoutMs} ms: ${what}\nevents: ${this.events.map((e) => e.type).join(' ')}\nerrors: ${this.errors.join(' | ')}\nhealth: ${JSON.stringify(this.healths.at(-1))}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Resolve when the consumer holds exactly what the server holds (pods of `node`, every namespace). */
  converged(s: KubeApiServer, node = 'n1', timeoutMs = 15_000): Promise<void> {
    return this.waitFor(
      `the consumer's state equals the server's (${JSON.stringify(serverState(s, node))} / now ${JSON.stringify(this.state())})`,
      () => isDeepStrictEqual(this.state(), serverState(s, node)),
      timeoutMs,
    );
  }
}

/** The server's namespaces and the pods of `node`, in Consumer.state()'s form. */
export function serverState(s: KubeApiServer, node = 'n1'): StateView {
  return {
    namespaces: s.store
      .list('namespaces')
      .items.map((o) => withRv(nsKey(o), o))
      .sort(),
    pods: s.store
      .list('pods', { fieldSelector: `spec.nodeName=${node}` })
      .items.map((o) => withRv(podKey(o), o))
      .sort(),
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of the API server. freeze(): every connection, open or new, stays
 * open and passes nothing either way (what a dead path looks like to both ends); thaw() lets it flow.
 */
export class FreezableProxy {
  private readonly pairs = new Set<{ client: Socket; upstream: Socket; joined: boolean }>();
  private frozen = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<FreezableProxy> {
    // no connection can be handled before `proxy` is set: connections are events, the continuation of
    // the listen() await is a microtask
    const server = createServer((client) => proxy.accept(client, target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const addr = server.address();
    const proxy = new FreezableProxy(server, typeof addr === 'object' && addr ? addr.port : 0);
    return proxy;
  }

  private accept(client: Socket, target: { host: string; port: number }): void {
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream, joined: false };
    this.pairs.add(pair);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    if (!this.frozen) this.join(pair);
    else {
      client.pause();
      upstream.pause();
    }
  }

  private join(p: { client: Socket; upstream: Socket; joined: boolean }): void {
    if (p.joined) return;
    p.joined = true;
    p.client.pipe(p.upstream);
    p.upstream.pipe(p.client);
    p.client.resume();
    p.upstream.resume();
  }

  freeze(): void {
    this.frozen = true;
    for (const p of this.pairs) {
      if (!p.joined) continue;
      p.joined = false;
      p.client.unpipe(p.upstream);
      p.upstream.unpipe(p.client);
      p.client.pause();
      p.upstream.pause();
    }
  }

  thaw(): void {
    this.frozen = false;
    for (const p of this.pairs) this.join(p);
  }

  /** open connections */
  get connections(): number {
    return this.pairs.size;
  }

  async close(): Promise<void> {
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
