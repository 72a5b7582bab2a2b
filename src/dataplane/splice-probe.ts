// Same-node splicing, the kernel check: can this kernel bound the splice backlog?
//
// Why a probe and not a version check: the bound reads sk_rmem_alloc of the receiving socket, and the
// bytes redirected to it are charged there only since the Dec 2024 tcp_bpf patches (54f89b3178d5,
// d888b7af7c14: 6.13, and stable series that took both; a series that took only the first never
// increments it). BTF shows the field on every kernel, not what it counts. So after the BTF check
// (splice.ts SPLICE_BTF: a precise reason) the probe loads splice.bpf.o privately (its own maps, nothing
// pinned, nothing attached to a cgroup), puts a TCP pair over 127.0.0.1 of the agent's own network
// namespace into its own sockhash, and checks that with a budget of two messages the first two are
// redirected and the third crosses it: it falls back, through the sender's TCP, in order. About 0.1 s.
import { existsSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import * as native from '../native/addon.js';
import { BpfObject, type BpfProgram } from '../native/handles.js';
import { Btf } from './btf.js';
import { GlobalFlags, Stat } from './layouts.js';
import { decideSplice, spliceBtfMissing, SPLICE_BUDGET_DEFAULT, SPLICE_GRACE_NS, type SpliceDecision, type SpliceProbe, type SpliceWant } from './splice.js';
import { typedMap, type TypedMap, type KeyOf, type ValueOf } from './typed-map.js';
import { AttachType } from './uapi.js';
import { packageRoot } from '../util/paths.js';

const KiB = 1024;
/** The probe's budget: two of its messages fit, the third does not. */
const PROBE_MSG = 16 * KiB;
const PROBE_BUDGET = 40_000;
const PROBE_TIMEOUT_MS = 3000;

const stat = (name: (typeof Stat)[number]): number => Stat.indexOf(name);

/** Can this kernel bound the splice backlog? BTF first (a precise reason), then load, then behaviour. */
export async function probeSpliceBound(objDir = join(packageRoot(), 'bpf', 'build')): Promise<SpliceProbe> {
  const no = (reason: string): SpliceProbe => ({ ok: false, reason });
  const path = join(objDir, 'splice.bpf.o');
  if (!existsSync(path)) return no(`the BPF object ${path} is missing (run the setup command from the README)`);
  let btf: Btf;
  try {
    btf = Btf.vmlinux();
  } catch (e) {
    return no(`its BTF (/sys/kernel/btf/vmlinux) cannot be read: ${(e as Error).message}`);
  }
  const missing = spliceBtfMissing(btf);
  if (missing.length > 0) return no(`its BTF lacks ${missing.join(', ')}`);
  const made: Array<{ close(): void }> = [];
  try {
    let prog: BpfProgram;
    let maps: {
      pairs: TypedMap<KeyOf<'sock_pairs'>, ValueOf<'sock_pairs'>>;
      global: TypedMap<KeyOf<'global'>, ValueOf<'global'>>;
      stats: TypedMap<KeyOf<'stats'>, ValueOf<'stats'>>;
    };
    try {
      // a private instance: its own maps, closed (and freed) at the end
      using obj = new BpfObject(path);
      obj.load();
      prog = obj.program('meshlane_splice');
      made.push(prog);
      const mapOf = <N extends 'sock_pairs' | 'global' | 'stats'>(name: N): TypedMap<KeyOf<N>, ValueOf<N>> => {
        const h = obj.map(name);
        made.push(h);
        return typedMap(name, h);
      };
      maps = { pairs: mapOf('sock_pairs'), global: mapOf('global'), stats: mapOf('stats') };
    } catch (e) {
      return no(`the splice programs do not load: ${firstLine(e)}`);
    }
    prog.attachTo(maps.pairs.handle, AttachType.SK_MSG_VERDICT);
    maps.global.set(0, { flags: GlobalFlags.SPLICE, pad: 0, splice_budget: BigInt(PROBE_BUDGET), splice_grace_ns: SPLICE_GRACE_NS });
    const counter = (name: (typeof Stat)[number]): bigint => maps.stats.get(stat(name)) ?? 0n;
    return await withTimeout(
      loopbackCheck(maps.pairs, counter),
      PROBE_TIMEOUT_MS,
      `the probe's transfer over 127.0.0.1 did not finish within ${PROBE_TIMEOUT_MS} ms`,
    );
  } catch (e) {
    return no(`the probe failed: ${firstLine(e)}`);
  } finally {
    for (const h of made.reverse()) h.close();
  }
}

/** Three messages of PROBE_MSG through a TCP pair in the probe's sockhash; the receiver reads only after. */
async function loopbackCheck(
  pairs: TypedMap<KeyOf<'sock_pairs'>, ValueOf<'sock_pairs'>>,
  counter: (name: (typeof Stat)[number]) => bigint,
): Promise<SpliceProbe> {
  const server: Server = createServer({ pauseOnConnect: true });
  let client: Socket | undefined;
  let peer: Socket | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const port = (server.address() as { port: number }).port;
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    client = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      client!.once('connect', resolve);
      client!.once('error', reject);
    });
    peer = await accepted;
    for (const s of [client, peer]) {
      const fd = socketFd(s);
      pairs.set(
        { netns_cookie: native.socketNetnsCookie(fd), local: '127.0.0.1', remote: '127.0.0.1', local_port: s.localPort!, remote_port: s.remotePort!, pad: 0 },
        BigInt(fd),
      );
    }
    const data = Buffer.alloc(3 * PROBE_MSG);
    for (let i = 0; i < data.length; i++) data[i] = (i * 131 + (i >> 9)) & 0xff;
    const received: Buffer[] = [];
    let got = 0;
    const all = new Promise<void>((resolve, reject) => {
      peer!.on('data', (d: Buffer) => {
        received.push(d);
        got += d.length;
        if (got >= data.length) resolve();
      });
      peer!.once('error', reject);
      peer!.once('end', () => reject(new Error(`EOF after ${got} of ${data.length} bytes`)));
    });
    const send = (i: number): Promise<void> =>
      new Promise((resolve, reject) => client!.write(data.subarray(i * PROBE_MSG, (i + 1) * PROBE_MSG), (e) => (e ? reject(e) : resolve())));
    // one write at a time, each one sendmsg and one run of the program
    await send(0);
    const first = { fallback: counter('splice_fallback'), noPeer: counter('splice_no_peer') };
    await send(1);
    await send(2);
    const after = { fallback: counter('splice_fallback'), retargetFail: counter('splice_retarget_fail'), noPeer: counter('splice_no_peer') };
    peer.resume();
    await all;
    const inOrder = Buffer.concat(received).subarray(0, data.length).equals(data) && got === data.length;
    if (first.noPeer > 0n || after.noPeer > 0n)
      return { ok: false, reason: 'the probe could not redirect between its own sockets (bpf_msg_redirect_hash found no peer)' };
    if (first.fallback > 0n)
      return {
        ok: false,
        reason: `one message of ${PROBE_MSG} bytes already crossed a budget of ${PROBE_BUDGET}: the receiver is charged more than the bytes redirected to it`,
      };
    if (after.fallback === 0n)
      return {
        ok: false,
        reason: 'redirected bytes are not charged to the receiving socket (sk_rmem_alloc stays 0: it lacks the Dec 2024 tcp_bpf patches of Linux 6.13)',
      };
    if (after.retargetFail > 0n) return { ok: false, reason: "the message that crossed the budget could not be re-targeted at the sender's own TCP path" };
    if (!inOrder) return { ok: false, reason: 'the bytes arrived out of order after the fallback' };
    return { ok: true };
  } finally {
    client?.destroy();
    peer?.destroy();
    server.close();
  }
}

/** The fd number of a connected net.Socket (borrowed: libuv owns and closes it). */
function socketFd(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('no fd on the probe socket');
  return fd;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(what)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

const firstLine = (e: unknown): string => ((e as Error).message ?? String(e)).split('\n')[0]!;

/** Check the kernel once and decide: what the agent calls at start. */
export async function spliceAtStart(o: { want: SpliceWant; budget?: number; objDir?: string }): Promise<SpliceDecision> {
  // --no-splice still loads the programs where the kernel can bound the backlog: the switch is a map
  // entry, so a later start without --no-splice turns splicing on for new connections at once
  return decideSplice(o.want, await probeSpliceBound(o.objDir), o.budget ?? SPLICE_BUDGET_DEFAULT);
}
