// Where the time of a new connection goes in meshlane's programs: the benchmark's sandbox node and
// sidecars (world.ts), the agent of one or more builds, wrk opening new connections (Connection: close)
// from A to B, and the kernel's own per-program accounting (sysctl kernel.bpf_stats_enabled=1, read back
// as run_time_ns / run_cnt of each program). Builds are measured in interleaved rounds. With --perf FILE,
// round 1 adds a measurement of each build under `perf record -e cpu-clock -a -g` (without bpf_stats),
// written to FILE.<build index>, and one of the iptables pods (Ai -> Bi), written to FILE.iptables.
//
//   node dist/bench/profile.js [--duration 5] [--rounds 3] [--conc 16] [--meshlane DIR,...] [--perf FILE]
//
// bpf_stats costs two clock reads per program run, on the whole machine: it is on only while this
// measures, and put back as it was. The rates printed here are therefore not the benchmark's.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { BpfLink } from '../src/native/handles.js';
import { packageRoot } from '../src/util/paths.js';
import { BenchAgent } from './agent.js';
import { log } from './log.js';
import { newResults } from './results.js';
import { APP_UID, HTTP_PORT, buildWorld, removeSite, type Site, type World } from './world.js';

const BPFFS = '/sys/fs/bpf/meshlane-bench';
const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

interface ProgStat {
  name: string;
  runs: number;
  ns: number;
}

/** The ids of the programs behind the agent's pinned links (cgroup links and the per-netns ones). */
function agentProgIds(): number[] {
  const ids = new Set<number>();
  const walk = (d: string): void => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else {
        using l = BpfLink.open(p);
        ids.add(l.info().progId);
      }
    }
  };
  walk(join(BPFFS, 'links'));
  return [...ids];
}

function progStats(ids: number[]): Map<number, ProgStat> {
  const out = new Map<number, ProgStat>();
  for (const id of ids) {
    const j = JSON.parse(execFileSync('bpftool', ['prog', 'show', 'id', String(id), '-j'], { encoding: 'utf8' })) as {
      name: string;
      run_time_ns?: number;
      run_cnt?: number;
    };
    out.set(id, { name: j.name, runs: j.run_cnt ?? 0, ns: j.run_time_ns ?? 0 });
  }
  return out;
}

async function wrkCps(world: World, conc: number, secs: number, pair: ['A', 'B'] | ['Ai', 'Bi'] = ['A', 'B']): Promise<number> {
  const url = `http://${world.pods[pair[1]]!.ipv4}:${HTTP_PORT}/`;
  const r = await world.pods[pair[0]]!.exec('wrk', ['-t1', `-c${conc}`, `-d${secs}s`, '-s', world.report, '-H', 'Connection: close', url], {
    uid: APP_UID,
    gid: APP_UID,
    container: 'app',
    timeoutMs: secs * 1000 + 20_000,
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (r.code !== 0 || line === undefined) throw new Error(`wrk failed (${r.code}): ${r.stdout}${r.stderr}`);
  return (JSON.parse(line.slice(8)) as { requests: number }).requests;
}

interface Row {
  build: string;
  round: number;
  conns: number;
  progs: Array<{ name: string; runsPerConn: number; nsPerRun: number; nsPerConn: number }>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      rounds: { type: 'string' },
      conc: { type: 'string' },
      meshlane: { type: 'string' },
      perf: { type: 'string' },
      json: { type: 'string' },
    },
  });
  const secs = Number(values.duration ?? 5);
  const rounds = Number(values.rounds ?? 3);
  const conc = Number(values.conc ?? 16);
  const roots = (values.meshlane ?? packageRoot()).split(',');
  const builds = roots.map((root) => ({ root, agent: new BenchAgent(join(root, 'dist', 'src', 'cli', 'main.js')) }));
  for (const b of builds) if (!existsSync(b.agent.cli)) throw new Error(`${b.agent.cli} does not exist: build it first`);
  const statsBefore = readFileSync(STATS_SYSCTL, 'utf8').trim();
  let site: Site | undefined;
  const rows: Row[] = [];
  const cleanup = (): void => {
    writeFileSync(STATS_SYSCTL, statsBefore);
    for (const b of builds) b.agent.stopSync();
    if (site) removeSite(site);
    site = undefined;
  };
  process.on('exit', cleanup);
  try {
    const world = await buildWorld((s) => (site = s));
    const results = newResults();
    if (values.perf !== undefined) {
      // the same under the iptables rules (pods Ai, Bi), for comparison
      await wrkCps(world, conc, 1, ['Ai', 'Bi']);
      const file = `${values.perf}.iptables`;
      const perf = spawn('perf', ['record', '-e', 'cpu-clock', '-a', '-g', '-o', file, '--', 'sleep', String(secs)], { stdio: 'ignore' });
      const n = await wrkCps(world, conc, secs, ['Ai', 'Bi']);
      await new Promise((res) => perf.once('exit', res));
      log(`perf: ${file} (iptables, ${n} connections in ${secs}s)`);
    }
    for (let r = 1; r <= rounds; r++) {
      for (let i = 0; i < builds.length; i++) {
        // rotate the order, as bench.ts does
        const idx = (i + r - 1) % builds.length;
        const build = builds[idx]!;
        await build.agent.start(world, build.agent.spliceFlags().off, results);
        try {
          await wrkCps(world, conc, 1); // warm-up
          const ids = agentProgIds();
          writeFileSync(STATS_SYSCTL, '1');
          const s0 = progStats(ids);
          const conns = await wrkCps(world, conc, secs);
          const s1 = progStats(ids);
          writeFileSync(STATS_SYSCTL, statsBefore);
          if (values.perf !== undefined && r === 1) {
            // a measurement of its own, without bpf_stats (whose clock reads would show in the profile)
            const file = `${values.perf}.${idx}`;
            const perf = spawn('perf', ['record', '-e', 'cpu-clock', '-a', '-g', '-o', file, '--', 'sleep', String(secs)], { stdio: 'ignore' });
            const n = await wrkCps(world, conc, secs);
            await new Promise((res) => perf.once('exit', res));
            log(`perf: ${file} (${build.root}, ${n} connections in ${secs}s)`);
          }
          const progs = ids
            .map((id) => {
              const a = s0.get(id)!;
              const z = s1.get(id)!;
              const runs = z.runs - a.runs;
              const ns = z.ns - a.ns;
              return { name: z.name, runsPerConn: runs / conns, nsPerRun: runs ? ns / runs : 0, nsPerConn: ns / conns };
            })
            .sort((x, y) => y.nsPerConn - x.nsPerConn);
          rows.push({ build: build.root, round: r, conns, progs });
          log(`round ${r} ${build.root}: ${conns} connections, ${progs.reduce((t, p) => t + p.nsPerConn, 0).toFixed(0)} ns of BPF per connection`);
        } finally {
          await build.agent.stop();
        }
      }
    }
  } finally {
    await site?.sb.destroy();
    cleanup();
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(rows, null, 2));
  // per build: the median over the rounds of each program's figures
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  for (const root of roots) {
    const mine = rows.filter((x) => x.build === root);
    const names = [...new Set(mine.flatMap((x) => x.progs.map((p) => p.name)))];
    console.log(`\n${root} (${mine.length} rounds, median; c=${conc}, ${secs}s each)`);
    console.log('| program | runs / conn | ns / run | ns / conn |\n|---|---:|---:|---:|');
    let total = 0;
    for (const n of names) {
      const ps = mine.map((x) => x.progs.find((p) => p.name === n)!).filter(Boolean);
      const nsPerConn = median(ps.map((p) => p.nsPerConn));
      total += nsPerConn;
      console.log(`| ${n} | ${median(ps.map((p) => p.runsPerConn)).toFixed(2)} | ${median(ps.map((p) => p.nsPerRun)).toFixed(0)} | ${nsPerConn.toFixed(0)} |`);
    }
    console.log(`| total | | | ${total.toFixed(0)} |`);
  }
}

await main();
