// The agent's metrics endpoint as the tests reach it: a free loopback port to give it, and one scrape.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';

/** A loopback TCP port nothing listens on right now (bound to 0, then released). */
export async function freePort(): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** One scrape of http://127.0.0.1:`port`/metrics (asserts 200): series (name{labels}) -> value. */
export async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(r.status, 200);
  const out = new Map<string, number>();
  for (const line of (await r.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
