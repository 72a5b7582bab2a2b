// The meshlane agent under test: the build given by --meshlane (or this tree), run as a subprocess on the
// world's cluster file with its own bpffs dir, stopped with or without removing its capture, and its own
// counters read back.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { readStatus } from '../src/agent/status.js';
import { clusterList, waitFor } from '../test/support/harness.js';
import { log } from './log.js';
import type { Results } from './results.js';
import { CAPTURED_UIDS, clusterItems, type World } from './world.js';

const BPFFS = '/sys/fs/bpf/meshlane-bench';

/** How this build of the agent switches splicing: `off` for the -nosplice modes, `unbounded` for
 * meshlane-unbounded; the meshlane modes run the agent as it is by default. */
export interface SpliceFlags {
  off: string[];
  unbounded: string[];
  note?: string;
}

export class BenchAgent {
  /** the running agent (or the one stopped with its capture kept) and its temp dir */
  private run: { proc: ChildProcess; dir: string } | undefined;

  /** @param cli the `meshlane` CLI (dist/src/cli/main.js) of the build under test */
  constructor(readonly cli: string) {}

  /** The agent's pid while it runs (and after stopKeepingCapture(), until stop()). */
  get pid(): number | undefined {
    return this.run?.proc.pid;
  }

  private meshlane(args: string[]): { code: number; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [this.cli, ...args], { encoding: 'utf8', timeout: 30_000 });
    return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Detach every program and remove every pin under the bench's bpffs dir (what `meshlane uninstall` does). */
  uninstall(): void {
    if (!existsSync(BPFFS)) return;
    const r = this.meshlane(['uninstall', '--bpffs', BPFFS]);
    if (r.code !== 0) throw new Error(`meshlane uninstall --bpffs ${BPFFS} failed: ${r.stderr}`);
  }

  /** How this build of the agent switches splicing, from `meshlane agent --help`. */
  /** A build that serves meshlane-cni gets a socket in the run's own directory, never the node's default
   * (/var/run/meshlane); an older build (meshlane-base) has no such flag. */
  private cniArgs(dir: string): string[] {
    this.hasCni ??= this.meshlane(['agent', '--help']).stdout.includes('--cni-socket');
    return this.hasCni ? ['--cni-socket', join(dir, 'cni.sock')] : [];
  }
  private hasCni: boolean | undefined;

  spliceFlags(): SpliceFlags {
    const help = this.meshlane(['agent', '--help']).stdout;
    const hasOn = /(^|\s)--splice\b/m.test(help);
    const hasOff = help.includes('--no-splice');
    const hasBudget = help.includes('--splice-budget');
    const notes: string[] = [];
    if (!hasOff) notes.push('`meshlane agent` has no --no-splice in this build: the -nosplice modes ran the default agent');
    if (!hasBudget) notes.push('`meshlane agent` has no --splice-budget in this build: meshlane-unbounded ran it with --splice (unbounded in such a build)');
    return {
      off: hasOff ? ['--no-splice'] : [],
      unbounded: hasBudget ? ['--splice', '--splice-budget', '1GiB'] : hasOn ? ['--splice'] : [],
      note: notes.length ? notes.join('; ') : undefined,
    };
  }

  /** Start the agent with `extra` arguments and wait until it has captured pods A and B. */
  private async startOnce(world: World, extra: string[]): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'meshlane-bench-agent-'));
    const clusterFile = join(dir, 'cluster.json');
    writeFileSync(`${clusterFile}.tmp`, clusterList(clusterItems()));
    renameSync(`${clusterFile}.tmp`, clusterFile);
    const stateDir = join(dir, 'state');
    const logFile = join(dir, 'agent.log');
    const out = createWriteStream(logFile);
    const profile = process.env.BENCH_AGENT_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_AGENT_CPU_PROF] : [];
    const proc = spawn(
      process.execPath,
      [
        ...profile,
        this.cli,
        'agent',
        '--cluster-file',
        clusterFile,
        '--cgroup-root',
        world.sb.cgroupRoot,
        '--bpffs',
        BPFFS,
        '--state-dir',
        stateDir,
        ...this.cniArgs(dir),
        '--log-level',
        'info',
        ...extra,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    proc.stdout?.pipe(out);
    proc.stderr?.pipe(out);
    this.run = { proc, dir };
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${readFileSync(logFile, 'utf8').slice(-3000)}`);
        const st = readStatus(stateDir);
        if (st === undefined || st.pid !== proc.pid) return false;
        // ready too (a build without health in its status: captured is all it says): the proxies' listeners,
        // older than the programs, adopted; until then inbound to B is refused
        if (st.health !== undefined && !st.health.ready) return false;
        return CAPTURED_UIDS.every((u) => st.pods.some((p) => p.ref.uid === u && p.state === 'captured'));
      },
      20_000,
      'the agent to capture pods A and B and be ready',
    );
  }

  /** Start the agent; one retry after a failed start (noted in the results, never hidden). */
  async start(world: World, extra: string[], results: Results): Promise<void> {
    try {
      await this.startOnce(world, extra);
    } catch (e) {
      const first = (e as Error).message.split('\n')[0]!.slice(0, 400);
      results.notes.push(`the agent failed to start once and was restarted: ${first}`);
      log(`agent start failed, retrying: ${first}`);
      await this.stop();
      await sleep(1000);
      await this.startOnce(world, extra);
    }
  }

  /** Stop the agent process; its programs and maps stay pinned (by design: capture goes on without it). */
  async stopKeepingCapture(): Promise<void> {
    const p = this.run?.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    // SIGTERM: the agent stops and leaves capture in place, as after SIGKILL (and a --cpu-prof gets written)
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }

  /** Stop the agent and remove its capture (pins survive the agent by design: detach every program). */
  async stop(): Promise<void> {
    const a = this.run;
    if (!a) return;
    await this.stopKeepingCapture();
    this.run = undefined;
    this.uninstall();
    // BENCH_KEEP_LOGS=DIR: keep a copy of every agent's log (the run's directory goes)
    const keep = process.env.BENCH_KEEP_LOGS;
    if (keep) spawnSync('cp', [join(a.dir, 'agent.log'), join(keep, `agent-${Date.now()}.log`)]);
    rmSync(a.dir, { recursive: true, force: true });
  }

  /** The same without waiting, for process 'exit': SIGKILL, then uninstall (best effort, errors logged). */
  stopSync(): void {
    const a = this.run;
    this.run = undefined;
    if (a && a.proc.exitCode === null) {
      try {
        process.kill(a.proc.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    try {
      this.uninstall();
    } catch (e) {
      log((e as Error).message);
    }
    if (a) rmSync(a.dir, { recursive: true, force: true });
  }

  /** The agent's per-CPU stats map, summed (`meshlane dump stats`); empty when it cannot be read. */
  counters(): Record<string, number> {
    try {
      const r = this.meshlane(['dump', 'stats', '--json', '--bpffs', BPFFS]);
      const stats = (JSON.parse(r.stdout) as { maps?: Record<string, unknown> }).maps?.stats as Array<{ counter: string; value: unknown }> | undefined;
      if (!Array.isArray(stats)) return {};
      return Object.fromEntries(stats.map((s) => [String(s.counter), Number(s.value)]));
    } catch {
      return {};
    }
  }
}
