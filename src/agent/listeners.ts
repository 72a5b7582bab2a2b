// A proxy that was already listening when meshlane's sockops program was attached (meshlane installed
// on a node with running pods, or reinstalled) never passed TCP_LISTEN_CB, so its listener is not in
// the `listeners` sockhash and sk_lookup cannot steer to it. The agent adopts such listeners: it finds
// the listening socket's inode in the pod's /proc/<pid>/net/tcp{,6}, finds the process fd that holds
// it, duplicates that fd (pidfd_getfd) and puts it into the sockhash.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import * as native from '../native/addon.js';
import type { MapsView } from '../dataplane/dataplane.js';
import type { KeyOf } from '../dataplane/typed-map.js';
import { AF_INET, AF_INET6 } from '../util/ip.js';

const TCP_LISTEN = '0A';

interface Listening {
  inode: string;
  port: number;
  family: number;
}

/** LISTEN sockets on `ports` in the netns of `pid`, from /proc/<pid>/net/tcp and tcp6. */
export function listeningSockets(pid: number, ports: number[]): Listening[] {
  const out: Listening[] = [];
  for (const [file, family] of [
    ['tcp', AF_INET],
    ['tcp6', AF_INET6],
  ] as const) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      if (!local || f[3] !== TCP_LISTEN) continue;
      const port = parseInt(local.split(':')[1] ?? '', 16);
      if (ports.includes(port) && f[9]) out.push({ inode: f[9], port, family });
    }
  }
  return out;
}

/** The first (pid, fd) among `pids` that holds socket inode `inode`. */
function holder(pids: number[], inode: string): { pid: number; fd: number } | undefined {
  const want = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === want) return { pid, fd: Number(fd) };
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return undefined;
}

/**
 * Make sure the pod's listeners on `ports` are in the sockhash. Returns what it adopted. Never
 * throws: a listener that cannot be adopted now is tried again on a later pass.
 */
export function adoptListeners(map: MapsView['listeners'], cookie: bigint, pids: number[], ports: number[]): Listening[] {
  const first = pids[0];
  if (first === undefined) return [];
  const adopted: Listening[] = [];
  // Reading /proc/<pid>/net/tcp walks every TCP socket of the node: only when a port has no
  // registered listener of either family (the normal case is a registered one, from sockops).
  const registered = (port: number): boolean => [AF_INET, AF_INET6].some((family) => map.get({ netns_cookie: cookie, port, family, pad: 0 }) !== null);
  const missing = ports.filter((p) => !registered(p));
  if (missing.length === 0) return [];
  for (const l of listeningSockets(first, missing)) {
    const key: KeyOf<'listeners'> = { netns_cookie: cookie, port: l.port, family: l.family, pad: 0 };
    if (map.get(key) !== null) continue;
    const h = holder(pids, l.inode);
    if (!h) continue;
    try {
      // the sockhash takes a socket fd as the value (and keeps its own reference to the socket)
      using sock = native.pidfdGetfd(h.pid, h.fd);
      map.set(key, BigInt(sock.fd));
      adopted.push(l);
    } catch {
      /* the process or socket went away */
    }
  }
  return adopted;
}
