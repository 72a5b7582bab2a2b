// A pod whose proxy stopped accepting, and an app that keeps connecting through it: what the hand-over
// limits are tested with (test/kernel/handover-limit, test/kernel/capacity). The proxy is a real listener
// on 15001 with a backlog of 1 that never accepts, so once its accept queue is full every connect leaves
// its hand-over entry behind (SYN_SENT). The destination is real, and prints every connection it accepts:
// a connect that bypassed the proxy would show there.
import type { ChildProcess } from 'node:child_process';
import { SVC_V4 } from './harness.js';

/** Debian's python3 (setup.sh installs it): a pyenv shim under /root is out of reach of uid 1000/1337 */
export const PYTHON = '/usr/bin/python3';

/** the proxy that stopped accepting: listens (backlog 1), never calls accept() */
export const STUCK_PROXY = `
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 15001))
s.listen(1)
print('ready', flush=True)
time.sleep(3600)
`;

/** the real destination on SVC_V4:`port`: prints `peer <address>` for every connection it accepts */
export const destination = (port: number): string => `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${SVC_V4}', ${port}))
s.listen(1024)
print('ready', flush=True)
while True:
    c, peer = s.accept()
    print('peer', peer[0], flush=True)
`;

/** the app: argv[1] non-blocking connects to SVC_V4:`port`, counted by errno and printed as one JSON line;
 * the sockets stay open until stdin closes */
export const connects = (port: number): string => `
import socket, errno, json, sys
res, socks = {}, []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.setblocking(False)
    e = s.connect_ex(('${SVC_V4}', ${port}))
    name = errno.errorcode.get(e, str(e))
    res[name] = res.get(name, 0) + 1
    socks.append(s)
print(json.dumps(res), flush=True)
sys.stdin.read()
`;

/** The first line `proc` prints, parsed as JSON; rejects when it exits before printing one. */
export function firstJsonLine<T>(proc: ChildProcess, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as T);
    });
    proc.once('exit', (code) => reject(new Error(`${what} exited (${code}) before it reported: ${out} ${err}`)));
  });
}
