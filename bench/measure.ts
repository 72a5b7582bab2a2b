// Measuring one mode in one round: CPU accounting (the agent, the machine, everyone else), the wait for a
// quiet machine, the load generators (wrk, bulk), and the checks, from the proxies' own session counters,
// that the traffic went through the proxies it should have (and, for `none`, through none of them).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import type { SandboxMember, SandboxPod } from '../src/sandbox/sandbox.js';
import type { BenchAgent, SpliceFlags } from './agent.js';
import { log } from './log.js';
import type { Mode, Options } from './options.js';
import type { Results, Sample } from './results.js';
import { APP_UID, BULK_PORT, HTTP_PORT, SRV_V4, sidecarSessions, type World } from './world.js';

/** What every measurement needs: the world, the agent under test, the options, where results go. */
export interface Bench {
  world: World;
  agent: BenchAgent;
  options: Options;
  results: Results;
  splice: SpliceFlags;
}

// ---- CPU ----------------------------------------------------------------------------------------------

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) a process has used so far, or undefined when it is gone. */
function procCpu(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of proc(5), counted after the comm
  } catch {
    return undefined;
  }
}

/** Busy, stolen and total jiffies of the whole machine (/proc/stat). Steal is time the hypervisor ran
 * something else while this VM wanted the CPU: it is not busy here, but no process here got it either. */
export function machineCpu(): { busy: number; steal: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const steal = f[7] ?? 0;
  return { busy: total - idle - steal, steal, total };
}

/** The hypervisor's steal between two readings of machineCpu(), in cores of this VM. */
export const stealCores = (m0: ReturnType<typeof machineCpu>, m1: ReturnType<typeof machineCpu>): number =>
  ((m1.steal - m0.steal) / Math.max(1, m1.total - m0.total)) * cpus().length;

/** CPU seconds used by everything in a cgroup subtree (cpu.stat exists in every cgroup v2 directory). */
function cgroupCpu(dir: string): number {
  try {
    const m = /usage_usec (\d+)/.exec(readFileSync(join(dir, 'cpu.stat'), 'utf8'));
    return m ? Number(m[1]) / 1e6 : 0;
  } catch {
    return 0;
  }
}

/** All the CPU the benchmark itself accounts for: the sandbox's processes, the agent, this process. */
function ownCpu(b: Bench): number {
  const self = process.cpuUsage();
  return cgroupCpu(b.world.sb.cgroupRoot) + (procCpu(b.agent.pid) ?? 0) + (self.user + self.system) / 1e6;
}

interface CpuReport {
  agentCores?: number;
  machineBusy: number;
  /** CPU (in cores) used by processes that are not part of the benchmark: other users of the machine */
  otherCores: number;
  /** CPU (in cores) the hypervisor took from this VM */
  stealCores: number;
}

/** Runs fn() and reports the agent's CPU use (in cores), the machine's busy share and the CPU of others. */
async function withCpu<T>(b: Bench, fn: () => Promise<T>): Promise<{ value: T } & CpuReport> {
  const pid = b.agent.pid;
  const a0 = procCpu(pid);
  const m0 = machineCpu();
  const o0 = ownCpu(b);
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const a1 = procCpu(pid);
  const m1 = machineCpu();
  const o1 = ownCpu(b);
  const busySecs = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * cpus().length * secs;
  return {
    value,
    agentCores: a0 !== undefined && a1 !== undefined ? (a1 - a0) / secs : undefined,
    machineBusy: (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total),
    // softirq work is charged to whichever task it interrupts, so this is an estimate; it is near 0 on a quiet machine
    otherCores: Math.max(0, (busySecs - (o1 - o0)) / secs),
    stealCores: stealCores(m0, m1),
  };
}

/** The CPU fields of a sample, in the order the samples' JSON has always had them. */
const cpuFields = (c: CpuReport): Pick<Sample, 'agentCores' | 'machineBusy' | 'otherCores' | 'stealCores'> => ({
  agentCores: c.agentCores,
  machineBusy: c.machineBusy,
  otherCores: c.otherCores,
  stealCores: c.stealCores,
});

/**
 * Before each slot: wait (at most maxSecs) until the machine is quiet (others use < 0.15 cores over 1 s).
 * The machine is shared (other people's test suites); a slot that had to start on a busy machine is noted.
 */
export async function waitQuiet(b: Bench, maxSecs: number): Promise<{ waited: number; busy: boolean }> {
  const t0 = Date.now();
  for (;;) {
    const r = await withCpu(b, () => sleep(1000));
    if (r.otherCores < 0.15) return { waited: (Date.now() - t0) / 1000, busy: false };
    if (Date.now() - t0 > maxSecs * 1000) return { waited: (Date.now() - t0) / 1000, busy: true };
  }
}

// ---- load generators ----------------------------------------------------------------------------------

interface WrkResult {
  requests: number;
  duration_us: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  mean_us: number;
  max_us: number;
  err_connect: number;
  err_read: number;
  err_write: number;
  err_status: number;
  err_timeout: number;
}

type WrkRun = WrkResult & { rps: number; errors: number };

async function wrk(from: SandboxMember, url: string, conns: number, secs: number, close: boolean, report: string): Promise<WrkRun> {
  const args = ['-t1', `-c${conns}`, `-d${secs}s`, '--latency', '-s', report, ...(close ? ['-H', 'Connection: close'] : []), url];
  const r = await from.exec('wrk', args, { uid: APP_UID, gid: APP_UID, container: 'app', timeoutMs: secs * 1000 + 20_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (r.code !== 0 || line === undefined) throw new Error(`wrk ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
  const w = JSON.parse(line.slice(8)) as WrkResult;
  const errors = w.err_connect + w.err_read + w.err_write + w.err_status + w.err_timeout;
  return { ...w, rps: w.requests / (w.duration_us / 1e6), errors };
}

/** The wrk fields of a sample. */
const wrkFields = (w: WrkRun): Pick<Sample, 'value' | 'p50_us' | 'p99_us' | 'errors'> => ({
  value: w.rps,
  p50_us: w.p50_us,
  p99_us: w.p99_us,
  errors: w.errors,
});

/** The node's TCP memory (/proc/net/sockstat `TCP: ... mem N`, in pages: node-wide, every netns), in bytes. */
function tcpMemBytes(): number {
  const f =
    readFileSync('/proc/net/sockstat', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('TCP:'))
      ?.split(/\s+/) ?? [];
  const i = f.indexOf('mem');
  return i < 0 ? 0 : Number(f[i + 1]) * PAGE;
}
const PAGE = Number(spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).stdout.trim()) || 4096;

/** The slow reader of the issue: SLOW_BYTES from B's bulk server by a reader that reads nothing for the first
 * SLOW_STALL_MS. Returns the peak growth of the node's TCP memory while it runs (sampled every 5 ms). */
export const SLOW_BYTES = 512 * 1024 * 1024;
export const SLOW_STALL_MS = 3000;
async function slowReader(world: World, from: SandboxPod, to: string): Promise<number> {
  const base = tcpMemBytes();
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, tcpMemBytes())), 5);
  try {
    const r = await from.exec(world.bulk, ['stall', to, String(BULK_PORT), String(SLOW_BYTES), String(SLOW_STALL_MS)], {
      uid: APP_UID,
      gid: APP_UID,
      container: 'app',
      timeoutMs: 120_000,
    });
    if (r.code !== 0) throw new Error(`bulk stall ${to} failed (${r.code}): ${r.stderr}`);
  } finally {
    clearInterval(t);
  }
  return peak - base;
}

async function bulk(world: World, from: SandboxPod, to: string, secs: number): Promise<number> {
  const r = await from.exec(world.bulk, ['recv', to, String(BULK_PORT), String(secs)], {
    uid: APP_UID,
    gid: APP_UID,
    container: 'app',
    timeoutMs: secs * 1000 + 20_000,
  });
  if (r.code !== 0) throw new Error(`bulk recv ${to} failed (${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim()) as { bytes: number; seconds: number };
  if (j.seconds < secs * 0.9) throw new Error(`bulk recv ${to}: stream ended after ${j.seconds}s: ${r.stderr}`);
  return j.bytes / j.seconds;
}

// ---- one mode -----------------------------------------------------------------------------------------

/** Sessions the client's outbound listener and the server's inbound listener took during fn(). */
async function viaProxies<T>(b: Bench, client: string, server: string, fn: () => Promise<T>): Promise<{ value: T; out: number; in: number } & CpuReport> {
  const out0 = await sidecarSessions(b.world, client, 'outbound');
  const in0 = await sidecarSessions(b.world, server, 'inbound');
  const r = await withCpu(b, fn);
  return { ...r, out: (await sidecarSessions(b.world, client, 'outbound')) - out0, in: (await sidecarSessions(b.world, server, 'inbound')) - in0 };
}

/** A problem when a measurement's traffic did not go through the proxies its mode puts in the path. */
function check(problems: string[], mode: Mode, s: Sample, inboundCaptured: boolean): void {
  if (s.out === undefined || s.conns === undefined) return;
  const label = `${mode} round ${s.round} ${s.figure}`;
  if (mode === 'none') {
    if (s.out !== 0 || (s.in ?? 0) !== 0) problems.push(`${label}: went through a proxy (out ${s.out}, in ${s.in}) in the no-proxy mode`);
    return;
  }
  // wrk may open a few more connections than -c (reconnects after errors), never fewer when captured
  if (s.out < s.conns) problems.push(`${label}: only ${s.out} of ${s.conns} connections went through A's outbound proxy: the benchmark bypassed the proxy`);
  if (inboundCaptured && (s.in ?? 0) < s.conns) problems.push(`${label}: only ${s.in} of ${s.conns} connections went through B's inbound proxy`);
}

export async function measureMode(b: Bench, mode: Mode, round: number): Promise<void> {
  const { world, agent, options: o, results } = b;
  const ipt = mode === 'iptables';
  const client = ipt ? 'Ai' : 'A';
  const server = ipt ? 'Bi' : 'B';
  const from = world.pods[client]!;
  const target = world.pods[server]!.ipv4;
  const url = `http://${target}:${HTTP_PORT}/`;
  const meshMode = mode.startsWith('meshlane');
  const pinnedMode = mode.endsWith('-pinned');
  if (meshMode) {
    await agent.start(world, mode.startsWith('meshlane-nosplice') ? b.splice.off : mode === 'meshlane-unbounded' ? b.splice.unbounded : [], results);
    if (pinnedMode) await agent.stopKeepingCapture();
  }
  try {
    const hold = Number(process.env.BENCH_DEBUG_HOLD ?? 0);
    if (hold > 0) {
      log(`BENCH_DEBUG_HOLD: ${mode} is set up; holding ${hold}s`);
      await sleep(hold * 1000);
    }
    // warm-up (not recorded); also tells whether the server pod's inbound is captured in this mode
    const warm = await viaProxies(b, client, server, () => wrk(from, url, 4, 1, false, world.report));
    const inboundCaptured = warm.in > 0;
    if (mode !== 'none' && !inboundCaptured) {
      const n = `${mode}: the server pod's inbound was not captured (B's proxy on 15006 took no connection): only the client side went through a proxy`;
      if (!results.notes.includes(n)) results.notes.push(n);
    }
    const add = (s: Sample): void => {
      results.samples.push(s);
      check(results.problems, mode, s, mode === 'iptables' || inboundCaptured);
    };
    for (const c of o.conc) {
      const r = await viaProxies(b, client, server, () => wrk(from, url, c, o.duration, false, world.report));
      add({ round, mode, figure: `ka-c${c}`, ...wrkFields(r.value), out: r.out, in: r.in, conns: c, ...cpuFields(r) });
    }
    const cps = await viaProxies(b, client, server, () => wrk(from, url, o.cpsConc, o.duration, true, world.report));
    add({ round, mode, figure: 'cps', ...wrkFields(cps.value), out: cps.out, in: cps.in, conns: Math.floor(cps.value.requests * 0.99), ...cpuFields(cps) });
    // A bulk transfer that breaks is a result, not a crash of the benchmark: record it and go on.
    try {
      const bb = await viaProxies(b, client, server, () => bulk(world, from, target, o.duration));
      add({ round, mode, figure: 'bulk', value: bb.value, out: bb.out, in: bb.in, conns: 1, ...cpuFields(bb) });
    } catch (e) {
      results.notes.push(`${mode}, round ${round}: the bulk transfer broke: ${(e as Error).message.split('\n')[0]}`);
    }
    // the slow reader behind the same bulk server: how much of the download the path piles up in the kernel
    try {
      const sr = await viaProxies(b, client, server, () => slowReader(world, from, target));
      add({ round, mode, figure: 'slow-reader', value: sr.value, out: sr.out, in: sr.in, conns: 1, ...cpuFields(sr) });
    } catch (e) {
      results.notes.push(`${mode}, round ${round}: the slow-reader transfer broke: ${(e as Error).message.split('\n')[0]}`);
    }
    // the non-captured pod C: new connections to srv, no proxy anywhere; only whether meshlane is loaded differs
    const hookUrl = `http://${SRV_V4}:${HTTP_PORT}/`;
    const hook = async (figure: string): Promise<void> => {
      const r = await withCpu(b, () => wrk(world.pods.C!, hookUrl, o.cpsConc, o.duration, true, world.report));
      results.samples.push({ round, mode, figure, ...wrkFields(r.value), ...cpuFields(r) });
    };
    await hook('hook-cps');
    if (meshMode) {
      (results.counters[mode] ??= []).push(agent.counters());
      if (!pinnedMode) {
        // the same with the agent stopped: its programs stay attached (pinned links), so this separates the
        // cost of the BPF hooks from the CPU the agent process takes from a 2-core machine
        await agent.stopKeepingCapture();
        await hook('hook-cps-pinned');
      }
      // and right after, with meshlane gone: a baseline adjacent in time, so that the ratio of this pair is
      // not moved by whatever else the machine did minutes apart
      await agent.stop();
      await hook('hook-cps-unloaded');
    }
  } finally {
    if (meshMode) await agent.stop();
  }
}
