// A pod's resolv.conf, parsed (pure: no kernel, no addon, so the unit tests can import it).
import { isIP } from 'node:net';

/** The `nameserver` lines of a resolv.conf, valid addresses only, in order (scope ids dropped). */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const addr = m?.[1]?.replace(/%.*$/, '');
    if (addr && isIP(addr) && !out.includes(addr)) out.push(addr);
  }
  return out;
}
