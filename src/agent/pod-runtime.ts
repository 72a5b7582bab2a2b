// What the agent reads from inside a located pod: the nameservers of its resolv.conf (DNS capture
// without capture-all) and its interfaces (excludeInterfaces / rerouteVirtualInterfaces by ifindex).
// Read through a process of the pod (/proc/<pid>/root, /proc/<pid>/ns/net), cached per process.
import { readFileSync } from 'node:fs';
import * as native from '../native/addon.js';
import type { PodRuntime } from './desired.js';
import { parseResolvConf } from './resolv-conf.js';

export { parseResolvConf };

const TTL_MS = 5_000;

interface Entry {
  at: number;
  runtime: PodRuntime;
}

export class PodRuntimeReader {
  private readonly cache = new Map<string, Entry>();

  constructor(private readonly now: () => number = Date.now) {}

  /** The runtime facts of the pod that process `pid` belongs to. Never throws: unknown is empty. */
  read(pid: number, want: { dns: boolean; ifaces: boolean }): PodRuntime {
    const key = `${pid}:${want.dns}:${want.ifaces}`;
    const hit = this.cache.get(key);
    if (hit && this.now() - hit.at < TTL_MS) return hit.runtime;
    let dnsServers: string[] = [];
    let ifaces: Record<string, number> = {};
    if (want.dns) {
      try {
        dnsServers = parseResolvConf(readFileSync(`/proc/${pid}/root/etc/resolv.conf`, 'utf8'));
      } catch {
        /* the process is gone, or has no resolv.conf: no servers */
      }
    }
    if (want.ifaces) {
      try {
        ifaces = native.netnsInterfaces(`/proc/${pid}/ns/net`);
      } catch {
        /* gone */
      }
    }
    const runtime: PodRuntime = { dnsServers, ifindex: (name) => ifaces[name] };
    this.cache.set(key, { at: this.now(), runtime });
    return runtime;
  }

  /** Forget processes that are not current any more. */
  retain(pids: Set<number>): void {
    for (const key of this.cache.keys()) if (!pids.has(Number(key.split(':')[0]))) this.cache.delete(key);
  }
}
