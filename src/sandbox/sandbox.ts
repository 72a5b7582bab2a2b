// A Kubernetes node with pods, emulated without a cluster: network namespaces on a bridge plus a kubelet-shaped
// cgroup tree under a sandbox cgroup (the `cgroupRoot` handed to the agent; never the machine's root cgroup).
// Used by the kernel tests and `meshlane demo`. Everything it makes is removed by destroy(), also after a
// partial create, and a later create() with the same prefix removes what a crashed run left behind.
//
// Layout (prefix P, at most 9 characters so every name stays within IFNAMSIZ-1 = 15):
//   netns  P-node          bridge mlbr0 with the first address of each pod subnet (default 10.244.0.1/24
//                          fd00:244::1/64), forwarding on; ln-<Q> to the node netns of sandbox Q after link(Q)
//   netns  P-p<n>          a pod: lo (+ ::6/128 unless asked not to), eth0 (veth peer of vp<n> on mlbr0), default routes via the node
//   netns  P-h<n>          a host meshlane does not manage (veth vh<n>), extra addresses on lo routed via it
//   cgroup <cgroup2>/P/kubepods.slice/...   (systemd driver)  or  <cgroup2>/P/kubepods/... (cgroupfs driver)
//   cgroup <cgroup2>/P/hosts/<name>, <cgroup2>/P/node      for processes of hosts and of the node itself
//
// Every pod has a sandbox process, as real pods have their pause container: started by addPod before anything
// else of the pod, in its own container cgroup ('pause'), holding the pod's netns until the sandbox is destroyed
// (or recreateSandbox() plays kubelet replacing a dead sandbox).

import { execFile as execFileCb, execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cgroup2Mount } from '../util/cgroup.js';
import { formatIp, parseIp, parsePrefix, type Family } from '../util/ip.js';
import { onTermination } from '../util/process-hooks.js';

const execFile = promisify(execFileCb);

export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

export const BRIDGE = 'mlbr0';
/** The pod subnets of a sandbox made without SandboxOptions.podCIDRs, and the node's addresses in them. */
export const DEFAULT_POD_CIDRS: PodCIDRs = { ipv4: '10.244.0.0/24', ipv6: 'fd00:244::/64' };
export const NODE_IPV4 = '10.244.0.1';
export const NODE_IPV6 = 'fd00:244::1';
/** The proxy's inbound passthrough source addresses (Istio's InboundPassthroughClusterIpv4/6). */
export const INBOUND_PASSTHROUGH_V4 = '127.0.0.6';
export const INBOUND_PASSTHROUGH_V6 = '::6';
/** Container name used by spawn()/exec() on a pod when none is given. */
export const DEFAULT_CONTAINER = 'app';
/** Container of a pod's sandbox ("pause") process, which addPod starts first and which holds the pod's netns. */
export const SANDBOX_CONTAINER = 'pause';
/** The user registry.k8s.io/pause runs as (USER 65535:65535). */
const PAUSE_UID = 65535;
/** how long a new sandbox process may take to be in its netns */
const SANDBOX_START_MS = 5000;

const PREFIX_RE = /^[a-z][a-z0-9-]{0,8}$/;
/** Per-netns files that `ip netns exec` bind-mounts over /etc (resolv.conf of sandbox pods). */
const ETC_NETNS = '/etc/netns';
/** teardown: how long processes get between SIGTERM and SIGKILL, and how long SIGKILLed ones get to go */
const TERM_GRACE_MS = 500;
const KILL_WAIT_MS = 3000;
/** destroy(): how long to wait for node to reap the children it spawned */
const CHILD_EXIT_WAIT_MS = 1000;
const HOST_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export interface SandboxOptions {
  /** Short name for everything this sandbox makes: 1-9 chars, [a-z][a-z0-9-]*. */
  prefix: string;
  /** kubelet cgroup driver whose layout is emulated; default 'systemd'. */
  cgroupDriver?: CgroupDriver;
  /**
   * The node's pod subnets (its Node's spec.podCIDRs); default DEFAULT_POD_CIDRS. The node takes the first
   * address of each, pods and hosts take theirs inside them. Two sandboxes joined by link() need disjoint ones.
   */
  podCIDRs?: PodCIDRs;
}

export interface PodCIDRs {
  /** an IPv4 prefix of at most /30 */
  ipv4: string;
  /** an IPv6 prefix of at most /126 */
  ipv6: string;
}

export interface PodSpec {
  namespace: string;
  name: string;
  uid: string;
  /** default BestEffort */
  qos?: QosClass;
  /** inside the sandbox's IPv4 pod subnet (default 10.244.0.0/24), not the node's address */
  ipv4: string;
  /** inside its IPv6 pod subnet (default fd00:244::/64) */
  ipv6?: string;
  /**
   * The pod's /etc/resolv.conf: written to /etc/netns/<pod netns>/resolv.conf, which `ip netns exec`
   * bind-mounts over /etc/resolv.conf for every process spawned in the pod. Removed by destroy().
   */
  resolvConf?: string;
  /**
   * Put ::6/128 on lo when the pod has IPv6 (default true), as istio-iptables would have: the proxy binds
   * ::6 for its inbound passthrough connections. false: lo as the CNI leaves it (no ::6), for whoever
   * captures the pod to add.
   */
  passthroughV6?: boolean;
  /**
   * Start the sandbox process now (default true). false plays a runtime that sets the network up first (the
   * CNI plugins, with CNI_NETNS=/var/run/netns/<netns>) and starts the sandbox afterwards: call
   * pod.startSandbox() then. The pod's cgroup exists at once either way (kubelet makes it first).
   */
  startSandbox?: boolean;
}

export interface HostAddrs {
  ipv4: string;
  ipv6?: string;
  /** extra IPv4 addresses (e.g. a Service VIP) put as /32 on the host's lo and routed via it from the node */
  extraV4?: string[];
  /** extra IPv6 addresses, /128 on lo, routed via the host's ipv6 (required then) */
  extraV6?: string[];
}

export interface SpawnOptions {
  /** run as this uid (setpriv --reuid); gid defaults to the uid */
  uid?: number;
  /** run with this gid (setpriv --regid); alone it keeps uid 0 */
  gid?: number;
  /** pods: container whose cgroup leaf the process joins (default 'app'); ignored for hosts */
  container?: string;
  /** added to (and overriding) the parent's environment */
  env?: Record<string, string>;
  /** default ['pipe', 'pipe', 'pipe'] */
  stdio?: StdioOptions;
}

export interface ExecOptions extends SpawnOptions {
  /** kill (SIGKILL) the process after this many ms; default 30000 */
  timeoutMs?: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** exit code, or 128 + signal number when killed by a signal */
  code: number;
}

async function ip(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFile('ip', args);
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

function ipSync(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

/** A pod subnet: its network address and length, and the address the node takes in it (the first). */
interface PodSubnet {
  cidr: string;
  network: string;
  bytes: number[];
  prefix: number;
  node: string;
}

function podSubnet(cidr: string, family: Family): PodSubnet {
  const p = parsePrefix(cidr);
  // room for the node and at least one pod
  const longest = family === 4 ? 30 : 126;
  if (p?.family !== family || p.prefix > longest) throw new Error(`pod CIDR '${cidr}' must be an IPv${family} prefix of at most /${longest}`);
  const bytes = parseIp(p.addr)!.bytes;
  const node = [...bytes];
  node[node.length - 1]! += 1; // the host bits of a network address are 0
  return { cidr: `${p.addr}/${p.prefix}`, network: p.addr, bytes, prefix: p.prefix, node: formatIp(family, node) };
}

function inSubnet(s: PodSubnet, addr: string): boolean {
  const ip = parseIp(addr);
  if (ip?.bytes.length !== s.bytes.length) return false;
  for (let bit = 0; bit < s.prefix; bit++) {
    const mask = 0x80 >> (bit % 8);
    if ((ip.bytes[bit >> 3]! & mask) !== (s.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}

const overlap = (a: PodSubnet, b: PodSubnet): boolean => inSubnet(a, b.network) || inSubnet(b, a.network);

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Poll `done` until it holds or `ms` pass (blocking: teardown runs where no event loop may be left). */
function waitSync(done: () => boolean, ms: number): void {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) sleepSync(25);
}

/** A process that exists and has not exited. A zombie (exited, not yet reaped: node reaps its children only
 * from the event loop, which a synchronous teardown blocks) counts as gone. */
function pidAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // "pid (comm) S ...": the state follows the last ')' (comm may contain anything)
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig === null ? 0 : (osConstants.signals[sig] ?? 0);
}

/** The directories of a cgroup tree, deepest first (children before their parent). */
function cgroupTreeBottomUp(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      try {
        if (statSync(p).isDirectory()) walk(p);
      } catch {
        /* vanished */
      }
    }
    out.push(d);
  };
  walk(dir);
  return out;
}

function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const d of dirs) {
    let text: string;
    try {
      text = readFileSync(join(d, 'cgroup.procs'), 'utf8');
    } catch {
      continue;
    }
    for (const l of text.split('\n')) {
      const n = Number(l);
      if (l !== '' && Number.isInteger(n) && n > 0) pids.add(n);
    }
  }
  return [...pids];
}

/** Common part of pods, hosts and the node: a netns, addresses, and process placement. */
export abstract class SandboxMember {
  constructor(
    protected readonly sandbox: Sandbox,
    readonly netns: string,
    readonly ipv4: string,
    readonly ipv6: string | undefined,
  ) {}

  /** The cgroup directory (absolute) a process of `container` is placed in; created on demand. */
  protected abstract leafCgroup(container: string | undefined): string;

  /**
   * Start `command args` in this member's netns, as uid/gid if given, inside its cgroup leaf. The process joins
   * the cgroup before it enters the netns (ip netns exec remounts /sys) and before it execs the command; the
   * pid stays the same through the exec chain, so killing the returned child kills the command.
   */
  spawn(command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const cg = this.leafCgroup(opts.container);
    const argv = ['-c', 'echo $$ > "$1" || exit 125; shift; exec "$@"', 'meshlane-sandbox', join(cg, 'cgroup.procs'), 'ip', 'netns', 'exec', this.netns];
    if (opts.uid !== undefined || opts.gid !== undefined) {
      argv.push('setpriv');
      if (opts.uid !== undefined) argv.push('--reuid', String(opts.uid));
      argv.push('--regid', String(opts.gid ?? opts.uid), '--clear-groups', '--');
    }
    argv.push(command, ...args);
    return this.sandbox.track(
      spawn('/bin/sh', argv, {
        env: { ...process.env, ...opts.env },
        stdio: opts.stdio ?? ['pipe', 'pipe', 'pipe'],
      }),
    );
  }

  /** spawn() and wait for the exit; stdin is closed at once. */
  exec(command: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const child = this.spawn(command, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ stdout, stderr, code: code ?? 128 + signalNumber(signal) });
      });
    });
  }
}

export class SandboxPod extends SandboxMember {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly qos: QosClass;
  /** Pod-level cgroup directory (absolute path), per the kubelet layout of the sandbox's driver. */
  readonly cgroupDir: string;
  /** Host end of the pod's veth, in the node netns. */
  readonly hostVeth: string;

  constructor(sandbox: Sandbox, spec: PodSpec & { netns: string; hostVeth: string; cgroupDir: string }) {
    super(sandbox, spec.netns, spec.ipv4, spec.ipv6);
    this.namespace = spec.namespace;
    this.name = spec.name;
    this.uid = spec.uid;
    this.qos = spec.qos ?? 'BestEffort';
    this.cgroupDir = spec.cgroupDir;
    this.hostVeth = spec.hostVeth;
  }

  private sandboxProc: ChildProcess | undefined;

  /** pid of the pod's sandbox ("pause") process: its oldest process, in the pod's netns. */
  get sandboxPid(): number {
    const pid = this.sandboxProc?.pid;
    if (pid === undefined) throw new Error(`pod ${this.namespace}/${this.name} has no sandbox process`);
    return pid;
  }

  /** The path a runtime passes as CNI_NETNS for this pod's netns. */
  get netnsPath(): string {
    return `/var/run/netns/${this.netns}`;
  }

  /** Start the sandbox process (as the pause image does: uid 65535, sleeps forever); resolves once it is in the
   * pod's netns. addPod does it, unless told not to (PodSpec.startSandbox). */
  async startSandbox(): Promise<void> {
    const want = statSync(`/run/netns/${this.netns}`).ino;
    const p = this.spawn('sleep', ['infinity'], { container: SANDBOX_CONTAINER, uid: PAUSE_UID, stdio: 'ignore' });
    this.sandboxProc = p;
    const end = Date.now() + SANDBOX_START_MS;
    // placement happens in the exec chain (cgroup, then netns, then uid, then sleep): done once it is sleep
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`pod ${this.netns}: the sandbox process exited (${p.exitCode ?? p.signalCode})`);
      try {
        if (p.pid !== undefined && readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim() === 'sleep' && statSync(`/proc/${p.pid}/ns/net`).ino === want) return;
      } catch {
        /* not there yet */
      }
      if (Date.now() > end) throw new Error(`pod ${this.netns}: the sandbox process is not in the pod's netns after ${SANDBOX_START_MS} ms`);
      await sleep(20);
    }
  }

  /**
   * What kubelet does when a pod's sandbox dies: every process of the pod is killed, the sandbox is made
   * anew in a new network namespace (same name, interfaces and addresses here; the CNI plugin's work in a real
   * node) and a new sandbox process starts in it. No container is restarted: the caller starts what it needs.
   */
  async recreateSandbox(): Promise<void> {
    this.sandbox.killCgroupTree(this.cgroupDir);
    await this.sandbox.replumbPod(this);
    await this.startSandbox();
  }

  /** A stable 64-hex container id for a container name (what containerd would have made up). */
  containerId(container: string): string {
    return createHash('sha256').update(`${this.uid}/${container}`).digest('hex');
  }

  /** Absolute path of the container's leaf cgroup (systemd: cri-containerd-<id>.scope, cgroupfs: <id>). */
  containerCgroup(container: string): string {
    const id = this.containerId(container);
    return join(this.cgroupDir, this.sandbox.cgroupDriver === 'systemd' ? `cri-containerd-${id}.scope` : id);
  }

  protected override leafCgroup(container: string | undefined): string {
    const dir = this.containerCgroup(container ?? DEFAULT_CONTAINER);
    this.sandbox.mkdirCgroupSync(dir);
    return dir;
  }
}

export class SandboxHost extends SandboxMember {
  /** The host's own cgroup leaf: <cgroupRoot>/hosts/<name>, or <cgroupRoot>/node for the node. */
  readonly cgroupDir: string;
  readonly hostVeth: string | undefined;

  constructor(
    sandbox: Sandbox,
    readonly name: string,
    netns: string,
    ipv4: string,
    ipv6: string | undefined,
    cgroupDir: string,
    hostVeth?: string,
  ) {
    super(sandbox, netns, ipv4, ipv6);
    this.cgroupDir = cgroupDir;
    this.hostVeth = hostVeth;
  }

  protected override leafCgroup(): string {
    this.sandbox.mkdirCgroupSync(this.cgroupDir);
    return this.cgroupDir;
  }
}

export class Sandbox {
  readonly prefix: string;
  readonly cgroupDriver: CgroupDriver;
  /** Where cgroup v2 is mounted on this machine. */
  readonly cgroup2Mount: string;
  /** <cgroup2Mount>/<prefix>: the cgroup root to hand to the agent. */
  readonly cgroupRoot: string;
  /** The kubelet's kubepods root: <cgroupRoot>/kubepods.slice or <cgroupRoot>/kubepods. */
  readonly kubepodsDir: string;
  readonly nodeNetns: string;
  /** The node itself (the bridge side): processes here play kubelet probes or host-network clients. */
  readonly node: SandboxHost;
  /** The pod subnets, as prefixes in canonical text. */
  readonly podCIDRs: PodCIDRs;

  private readonly children = new Set<ChildProcess>();
  private readonly pods: SandboxPod[] = [];
  private readonly hosts: SandboxHost[] = [];
  private readonly usedAddrs = new Set<string>();
  private readonly v4: PodSubnet;
  private readonly v6: PodSubnet;
  /** this node's ends of the links made by link() */
  private readonly linkDevs = new Set<string>();
  private nextIndex = 0;
  private destroyed = false;
  private destroying: Promise<string[]> | undefined;

  private constructor(opts: Required<SandboxOptions>, cgroup2Mount: string) {
    this.prefix = opts.prefix;
    this.cgroupDriver = opts.cgroupDriver;
    this.cgroup2Mount = cgroup2Mount;
    this.cgroupRoot = join(cgroup2Mount, opts.prefix);
    this.kubepodsDir = join(this.cgroupRoot, opts.cgroupDriver === 'systemd' ? 'kubepods.slice' : 'kubepods');
    this.nodeNetns = `${opts.prefix}-node`;
    this.v4 = podSubnet(opts.podCIDRs.ipv4, 4);
    this.v6 = podSubnet(opts.podCIDRs.ipv6, 6);
    this.podCIDRs = { ipv4: this.v4.cidr, ipv6: this.v6.cidr };
    this.node = new SandboxHost(this, 'node', this.nodeNetns, this.v4.node, this.v6.node, join(this.cgroupRoot, 'node'));
    this.usedAddrs.add(this.v4.node).add(this.v6.node);
  }

  static async create(opts: SandboxOptions): Promise<Sandbox> {
    if (!PREFIX_RE.test(opts.prefix)) {
      throw new Error(`sandbox prefix '${opts.prefix}' must match ${PREFIX_RE} (names must fit in 15 characters)`);
    }
    const sb = new Sandbox({ prefix: opts.prefix, cgroupDriver: opts.cgroupDriver ?? 'systemd', podCIDRs: opts.podCIDRs ?? DEFAULT_POD_CIDRS }, cgroup2Mount());
    // Leftovers of an earlier run with the same prefix (crashed, or killed with SIGKILL).
    const leftovers = sb.teardown(TERM_GRACE_MS);
    if (leftovers.length > 0) console.error(`sandbox ${sb.prefix}: while removing leftovers: ${leftovers.join('; ')}`);
    try {
      await sb.setup();
    } catch (e) {
      await sb.destroy();
      throw e;
    }
    return sb;
  }

  private async setup(): Promise<void> {
    await mkdir(this.cgroupRoot);
    const qosDirs = this.cgroupDriver === 'systemd' ? ['kubepods-besteffort.slice', 'kubepods-burstable.slice'] : ['besteffort', 'burstable'];
    await mkdir(this.kubepodsDir);
    for (const d of qosDirs) await mkdir(join(this.kubepodsDir, d));
    await mkdir(join(this.cgroupRoot, 'hosts'));
    await mkdir(this.node.cgroupDir);

    const ns = this.nodeNetns;
    await ip('netns', 'add', ns);
    await this.netnsDefaults(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'link', 'add', BRIDGE, 'type', 'bridge', 'mcast_snooping', '0');
    await ip('-n', ns, 'addr', 'add', `${this.v4.node}/${this.v4.prefix}`, 'dev', BRIDGE);
    await ip('-n', ns, 'addr', 'add', `${this.v6.node}/${this.v6.prefix}`, 'dev', BRIDGE, 'nodad');
    await ip('-n', ns, 'link', 'set', BRIDGE, 'up');
    await sysctlIn(
      ns,
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      // pods and hosts share one segment: the node forwarding pod -> Service VIP -> host must not redirect
      'net.ipv4.conf.all.send_redirects=0',
      `net.ipv4.conf.${BRIDGE}.send_redirects=0`,
    );
  }

  /** Cgroup path of a pod per the kubelet layout (absolute). */
  podCgroupDir(uid: string, qos: QosClass = 'BestEffort'): string {
    const q = qos.toLowerCase();
    if (this.cgroupDriver === 'systemd') {
      const u = uid.replace(/-/g, '_');
      return qos === 'Guaranteed'
        ? join(this.kubepodsDir, `kubepods-pod${u}.slice`)
        : join(this.kubepodsDir, `kubepods-${q}.slice`, `kubepods-${q}-pod${u}.slice`);
    }
    return qos === 'Guaranteed' ? join(this.kubepodsDir, `pod${uid}`) : join(this.kubepodsDir, q, `pod${uid}`);
  }

  async addPod(spec: PodSpec): Promise<SandboxPod> {
    this.checkAlive();
    if (!/^[A-Za-z0-9-]+$/.test(spec.uid)) throw new Error(`pod uid '${spec.uid}' is not a uid`);
    this.claimAddrs(spec.ipv4, spec.ipv6);
    const idx = this.nextIndex++;
    const pod = new SandboxPod(this, {
      ...spec,
      netns: `${this.prefix}-p${idx}`,
      hostVeth: `vp${idx}`,
      cgroupDir: this.podCgroupDir(spec.uid, spec.qos),
    });
    this.pods.push(pod);
    await mkdir(pod.cgroupDir);
    await this.plumb(pod.netns, pod.hostVeth, spec.ipv4, spec.ipv6);
    if (spec.ipv6 !== undefined && spec.passthroughV6 !== false)
      await ip('-n', pod.netns, 'addr', 'add', `${INBOUND_PASSTHROUGH_V6}/128`, 'dev', 'lo', 'nodad');
    if (spec.resolvConf !== undefined) {
      mkdirSync(join(ETC_NETNS, pod.netns), { recursive: true });
      writeFileSync(join(ETC_NETNS, pod.netns, 'resolv.conf'), spec.resolvConf);
    }
    await this.waitNotTentative(pod.netns);
    if (spec.startSandbox !== false) await pod.startSandbox();
    return pod;
  }

  /** @internal A new netns for a pod whose processes are all gone (recreateSandbox). */
  async replumbPod(pod: SandboxPod): Promise<void> {
    this.checkAlive();
    // The same MAC on the new eth0: the neighbour caches of the node and the other pods stay right, as a
    // gratuitous ARP would make them (a stale entry would black-hole the first connections to the pod).
    const [eth0] = JSON.parse(await ip('-j', '-n', pod.netns, 'link', 'show', 'dev', 'eth0')) as Array<{ address?: string }>;
    // the veth first: a deleted netns is torn down asynchronously, and with it the old pair
    await ip('-n', this.nodeNetns, 'link', 'del', pod.hostVeth);
    await ip('netns', 'del', pod.netns);
    await this.plumb(pod.netns, pod.hostVeth, pod.ipv4, pod.ipv6, eth0?.address);
    if (pod.ipv6 !== undefined) await ip('-n', pod.netns, 'addr', 'add', `${INBOUND_PASSTHROUGH_V6}/128`, 'dev', 'lo', 'nodad');
    await this.waitNotTentative(pod.netns);
  }

  /** @internal SIGKILL every process of a cgroup subtree of this sandbox and wait (bounded) until they are gone. */
  killCgroupTree(dir: string): void {
    this.checkAlive();
    const alive = (): number[] => cgroupPids(cgroupTreeBottomUp(dir)).filter((p) => p !== process.pid && pidAlive(p));
    // again on every round: a process may fork while its siblings die
    waitSync(() => {
      const pids = alive();
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
      return pids.length === 0;
    }, KILL_WAIT_MS);
    const left = alive();
    if (left.length > 0) throw new Error(`processes of ${dir} still running: ${left.join(' ')}`);
  }

  async addHost(name: string, addrs: HostAddrs): Promise<SandboxHost> {
    this.checkAlive();
    if (!HOST_NAME_RE.test(name)) throw new Error(`host name '${name}' must match ${HOST_NAME_RE}`);
    if (this.hosts.some((h) => h.name === name)) throw new Error(`host '${name}' exists already`);
    const extraV4 = addrs.extraV4 ?? [];
    const extraV6 = addrs.extraV6 ?? [];
    for (const a of extraV4) if (!isIPv4(a)) throw new Error(`extraV4 '${a}' is not an IPv4 address`);
    for (const a of extraV6) if (!isIPv6(a)) throw new Error(`extraV6 '${a}' is not an IPv6 address`);
    if (extraV6.length > 0 && addrs.ipv6 === undefined) throw new Error(`host '${name}': extraV6 needs an ipv6`);
    this.claimAddrs(addrs.ipv4, addrs.ipv6, ...extraV4, ...extraV6);
    const idx = this.nextIndex++;
    const host = new SandboxHost(this, name, `${this.prefix}-h${idx}`, addrs.ipv4, addrs.ipv6, join(this.cgroupRoot, 'hosts', name), `vh${idx}`);
    this.hosts.push(host);
    await mkdir(host.cgroupDir);
    await this.plumb(host.netns, `vh${idx}`, addrs.ipv4, addrs.ipv6);
    for (const a of extraV4) {
      await ip('-n', host.netns, 'addr', 'add', `${a}/32`, 'dev', 'lo');
      await ip('-n', this.nodeNetns, 'route', 'add', `${a}/32`, 'via', addrs.ipv4);
    }
    for (const a of extraV6) {
      await ip('-n', host.netns, 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad');
      await ip('-n', this.nodeNetns, '-6', 'route', 'add', `${a}/128`, 'via', addrs.ipv6!);
    }
    await this.waitNotTentative(host.netns);
    return host;
  }

  /**
   * Join this node and `other` as two nodes of one cluster network: a veth pair ln-<other prefix> /
   * ln-<this prefix> between the two node netns, over which each node routes the other's pod subnets. The link
   * has no subnet of its own: each end carries its node's addresses (/32, /128), and the routes go `via` the
   * other node's address `onlink`, so ARP and neighbour discovery find it on the link. Pods reach each other
   * with their own addresses (no NAT), as on a routed pod network. destroy() of either sandbox removes the pair
   * (and with it the other side's routes over it).
   */
  async link(other: Sandbox): Promise<void> {
    this.checkAlive();
    other.checkAlive();
    if (other === this) throw new Error(`sandbox ${this.prefix} cannot be linked to itself`);
    if (overlap(this.v4, other.v4) || overlap(this.v6, other.v6))
      throw new Error(
        `sandboxes ${this.prefix} and ${other.prefix} have overlapping pod subnets (${this.v4.cidr} ${this.v6.cidr}, ${other.v4.cidr} ${other.v6.cidr}): give one other podCIDRs`,
      );
    const ends: Array<[Sandbox, Sandbox]> = [
      [this, other],
      [other, this],
    ];
    await ip('-n', this.nodeNetns, 'link', 'add', `ln-${other.prefix}`, 'type', 'veth', 'peer', 'name', `ln-${this.prefix}`, 'netns', other.nodeNetns);
    for (const [a, b] of ends) a.linkDevs.add(`ln-${b.prefix}`);
    for (const [a, b] of ends) {
      const dev = `ln-${b.prefix}`;
      await ip('-n', a.nodeNetns, 'addr', 'add', `${a.v4.node}/32`, 'dev', dev);
      await ip('-n', a.nodeNetns, 'addr', 'add', `${a.v6.node}/128`, 'dev', dev, 'nodad');
      await ip('-n', a.nodeNetns, 'link', 'set', dev, 'up');
      await ip('-n', a.nodeNetns, 'route', 'add', b.v4.cidr, 'via', b.v4.node, 'dev', dev, 'onlink');
      await ip('-n', a.nodeNetns, '-6', 'route', 'add', b.v6.cidr, 'via', b.v6.node, 'dev', dev, 'onlink');
    }
  }

  /** Pods and hosts added so far. */
  listPods(): readonly SandboxPod[] {
    return this.pods;
  }
  listHosts(): readonly SandboxHost[] {
    return this.hosts;
  }

  private claimAddrs(ipv4: string, ipv6: string | undefined, ...extra: string[]): void {
    if (!isIPv4(ipv4) || !inSubnet(this.v4, ipv4)) throw new Error(`ipv4 '${ipv4}' must be in ${this.v4.cidr}`);
    if (ipv6 !== undefined && (!isIPv6(ipv6) || !inSubnet(this.v6, ipv6))) throw new Error(`ipv6 '${ipv6}' must be in ${this.v6.cidr}`);
    const all = [ipv4, ...(ipv6 === undefined ? [] : [ipv6]), ...extra];
    for (const a of all) if (this.usedAddrs.has(a)) throw new Error(`address ${a} is in use in sandbox ${this.prefix}`);
    for (const a of all) this.usedAddrs.add(a);
  }

  /** A netns on the bridge: lo up, veth (hostIf in the node netns on mlbr0, eth0 inside), addresses, routes. */
  private async plumb(ns: string, hostIf: string, ipv4: string, ipv6: string | undefined, mac?: string): Promise<void> {
    await ip('netns', 'add', ns);
    await this.netnsDefaults(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    // 127.0.0.6 (the proxy's inbound passthrough source) must be bindable: lo's 127.0.0.1/8 covers it.
    const lo = JSON.parse(await ip('-j', '-n', ns, '-4', 'addr', 'show', 'dev', 'lo')) as Array<{
      addr_info?: Array<{ local?: string; prefixlen?: number }>;
    }>;
    const covered = lo.some((l) => l.addr_info?.some((a) => a.local === '127.0.0.1' && a.prefixlen === 8));
    if (!covered) await ip('-n', ns, 'addr', 'add', `${INBOUND_PASSTHROUGH_V4}/32`, 'dev', 'lo');
    await ip('-n', this.nodeNetns, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ip('-n', this.nodeNetns, 'link', 'set', hostIf, 'master', BRIDGE, 'up');
    if (mac !== undefined) await ip('-n', ns, 'link', 'set', 'eth0', 'address', mac);
    await ip('-n', ns, 'addr', 'add', `${ipv4}/${this.v4.prefix}`, 'dev', 'eth0');
    if (ipv6 !== undefined) await ip('-n', ns, 'addr', 'add', `${ipv6}/${this.v6.prefix}`, 'dev', 'eth0', 'nodad');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', this.v4.node);
    if (ipv6 !== undefined) await ip('-n', ns, '-6', 'route', 'add', 'default', 'via', this.v6.node);
  }

  /**
   * Before any interface exists in `ns`: no IPv6 DAD (link-local addresses usable at once; a tentative one
   * swallows the first packets after an ICMPv6 redirect to it) and no accepted redirects (traffic between
   * bridge members always takes the path through the node that the routes say).
   */
  private async netnsDefaults(ns: string): Promise<void> {
    await sysctlIn(
      ns,
      'net.ipv6.conf.default.accept_dad=0',
      'net.ipv6.conf.all.accept_dad=0',
      'net.ipv6.conf.default.accept_redirects=0',
      'net.ipv6.conf.all.accept_redirects=0',
      'net.ipv4.conf.default.accept_redirects=0',
      'net.ipv4.conf.all.accept_redirects=0',
    );
  }

  /** Wait (bounded) until no global IPv6 address in `ns` is tentative. */
  private async waitNotTentative(ns: string): Promise<void> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const out = await ip('-n', ns, '-6', 'addr', 'show', 'tentative', 'scope', 'global');
      if (out.trim() === '') return;
      if (Date.now() > deadline) throw new Error(`netns ${ns}: IPv6 addresses still tentative: ${out.trim()}`);
      await sleep(50);
    }
  }

  /** Create a cgroup directory (sync, for spawn); no error when it exists. */
  mkdirCgroupSync(dir: string): void {
    this.checkAlive();
    try {
      mkdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }

  /** @internal remember a spawned child so destroy() can stop it */
  track(child: ChildProcess): ChildProcess {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  private checkAlive(): void {
    if (this.destroyed || this.destroying) throw new Error(`sandbox ${this.prefix} is destroyed`);
  }

  /** Names of this prefix's netns that exist now (also ones left by an earlier run). */
  private ownNetnsNames(list: string): string[] {
    const re = new RegExp(`^${this.prefix.replace(/-/g, '\\-')}-(node|p\\d+|h\\d+)$`);
    return list
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter((n) => re.test(n));
  }

  /**
   * Stop every process, delete every netns, remove the cgroup tree. Never throws: returns (and logs to stderr)
   * what it could not undo. Safe to call twice and on a half-made sandbox.
   */
  destroy(): Promise<string[]> {
    this.destroying ??= (async () => {
      const errors = this.teardown(TERM_GRACE_MS);
      this.destroyed = true;
      // let node reap the children it spawned, so their 'exit' listeners have run when destroy() resolves
      const end = Date.now() + CHILD_EXIT_WAIT_MS;
      while (this.children.size > 0 && Date.now() < end) await sleep(10);
      if (errors.length > 0) console.error(`sandbox ${this.prefix}: cleanup incomplete: ${errors.join('; ')}`);
      return errors;
    })();
    return this.destroying;
  }

  /**
   * The same teardown for process 'exit' (no event loop left, so no grace period): SIGKILL at once. Returns
   * the errors.
   */
  destroySync(): string[] {
    if (this.destroyed) return [];
    this.destroyed = true;
    const errors = this.teardown(0);
    if (errors.length > 0) console.error(`sandbox ${this.prefix}: cleanup incomplete: ${errors.join('; ')}`);
    return errors;
  }

  /**
   * The one teardown, synchronous so that destroy() and the 'exit' handler share it: SIGTERM every process of
   * the sandbox (our children, its cgroup tree, its netns; by pid only), SIGKILL what is left after `graceMs`
   * (at once when 0), then delete the links to other nodes and the netns (the node last: that removes the bridge
   * and the host ends of the veths) and their /etc/netns entries, then the cgroup tree bottom-up.
   */
  private teardown(graceMs: number): string[] {
    const errors: string[] = [];
    let netnses: string[] = [];
    try {
      netnses = this.ownNetnsNames(ipSync('netns', 'list'));
    } catch (e) {
      errors.push(errText(e));
    }
    netnses.sort((a, b) => Number(a === this.nodeNetns) - Number(b === this.nodeNetns));

    const collectPids = (): number[] => {
      const pids = new Set<number>();
      for (const c of this.children) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) pids.add(c.pid);
      for (const p of cgroupPids(cgroupTreeBottomUp(this.cgroupRoot))) pids.add(p);
      for (const ns of netnses) {
        try {
          for (const l of ipSync('netns', 'pids', ns).split('\n')) if (/^\d+$/.test(l.trim())) pids.add(Number(l));
        } catch {
          /* netns already gone */
        }
      }
      pids.delete(process.pid);
      return [...pids].filter(pidAlive);
    };
    const signalAll = (pids: number[], sig: NodeJS.Signals): void => {
      for (const pid of pids) {
        try {
          process.kill(pid, sig);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ESRCH') errors.push(`kill ${pid} ${sig}: ${errText(e)}`);
        }
      }
    };
    let pids = collectPids();
    if (pids.length > 0) {
      if (graceMs > 0) {
        signalAll(pids, 'SIGTERM');
        waitSync(() => !pids.some(pidAlive), graceMs);
        pids = collectPids();
      }
      signalAll(pids, 'SIGKILL');
      waitSync(() => collectPids().length === 0, KILL_WAIT_MS);
      const left = collectPids();
      if (left.length > 0) errors.push(`processes still running: ${left.join(' ')}`);
    }

    // the links first: a deleted netns is torn down asynchronously, and the other node would keep its end a while
    for (const dev of this.linkDevs) {
      try {
        ipSync('-n', this.nodeNetns, 'link', 'del', dev);
      } catch (e) {
        // gone with the other node already
        if (!/Cannot find device|does not exist/.test(errText(e))) errors.push(errText(e));
      }
    }
    this.linkDevs.clear();
    for (const ns of netnses) {
      try {
        ipSync('netns', 'del', ns);
      } catch (e) {
        errors.push(errText(e));
      }
    }
    errors.push(...this.removeEtcNetns());

    // a dying process can keep a cgroup busy for a moment
    for (const dir of cgroupTreeBottomUp(this.cgroupRoot)) {
      for (let attempt = 0; ; attempt++) {
        try {
          rmdirSync(dir);
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          if (code === 'EBUSY' && attempt < 80) {
            sleepSync(25);
            continue;
          }
          errors.push(`rmdir ${dir}: ${errText(e)}`);
          break;
        }
      }
    }
    return errors;
  }

  /** Remove /etc/netns/<name> of this prefix's namespaces (also ones a crashed run left). */
  private removeEtcNetns(): string[] {
    const errors: string[] = [];
    let names: string[] = [];
    try {
      names = this.ownNetnsNames(readdirSync(ETC_NETNS).join('\n'));
    } catch {
      return errors; // no /etc/netns
    }
    for (const n of names) {
      try {
        rmSync(join(ETC_NETNS, n), { recursive: true, force: true });
      } catch (e) {
        errors.push(`rm ${join(ETC_NETNS, n)}: ${errText(e)}`);
      }
    }
    return errors;
  }
}

/** Set sysctls inside network namespace `ns` (`key=value` each). */
async function sysctlIn(ns: string, ...settings: string[]): Promise<void> {
  await ip('netns', 'exec', ns, 'sysctl', '-q', '-w', ...settings);
}

/**
 * Safety net for long-running users (the demo): on SIGINT / SIGTERM destroy the sandbox and then die of the
 * same signal; on process 'exit' (also after an uncaught exception) run the synchronous cleanup. Returns a
 * function that removes the handlers (call it after a normal destroy()).
 */
export function installCleanupHandlers(sandbox: Sandbox): () => void {
  let running = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (running) return;
    running = true;
    void sandbox.destroy().finally(() => {
      uninstall();
      process.kill(process.pid, sig);
    });
  };
  const uninstall = onTermination(onSignal, () => sandbox.destroySync());
  return uninstall;
}
