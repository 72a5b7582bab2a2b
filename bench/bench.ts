// The meshlane benchmark: the same sandbox node, the same real proxy (HAProxy as uid 1337, forwarding to
// SO_ORIGINAL_DST), the same HTTP server and load generator (wrk), measured side by side under
//   none             A's app -> B's app directly (proxies idle, no rules): the physical limit
//   iptables         the nat rules istio-iptables writes, in both pods (REDIRECT to 15001 / 15006)
//   meshlane           the meshlane agent as it runs by default (splicing on, bounded, where the kernel allows it)
//   meshlane-nosplice  the meshlane agent with --no-splice
// in interleaved rounds (round-robin, the start rotating each round) to spread the noise of a 2-core machine
// evenly over the modes. Every measurement checks, from the proxies' own session counters, that its traffic
// went through the proxies it should have (and, for `none`, through none of them).
//
// The pieces: options.ts (command line), world.ts (the sandbox node, its proxies and servers), agent.ts (the
// agent under test), measure.ts (one mode in one round), report.ts (the tables), results.ts (what is collected).
//
// Run it with `bash bench/run.sh [--quick]` (as root); `--help` lists the options. BENCH_DEBUG_HOLD=<secs>
// pauses after each mode is set up (agent running, proxies up) so the sandbox can be inspected;
// BENCH_AGENT_CPU_PROF=<dir> runs the agent with node --cpu-prof (the profile is written when it stops).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { BenchAgent } from './agent.js';
import { log } from './log.js';
import { measureMode, waitQuiet } from './measure.js';
import { HELP, UsageError, parseOptions, type Options } from './options.js';
import { renderReport } from './report.js';
import { newResults } from './results.js';
import { buildWorld, removeSite, type Site } from './world.js';

/** 6 sockets x (tcp_rmem max + tcp_wmem max): what TCP flow control lets the slow-reader path hold. */
function tcpCap(): number | undefined {
  try {
    const max = (f: string): number => Number(readFileSync(`/proc/sys/net/ipv4/${f}`, 'utf8').trim().split(/\s+/)[2]);
    const cap = 6 * (max('tcp_rmem') + max('tcp_wmem'));
    return Number.isFinite(cap) ? cap : undefined;
  } catch {
    return undefined;
  }
}

function fail(msg: string): never {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

/** What the run has made and must remove: the agents' capture, the sandbox. */
interface Made {
  agent: BenchAgent;
  /** the build of the meshlane-base mode */
  base?: BenchAgent;
  site?: Site;
}

/** The one teardown: at the end of the run and on process 'exit' (no event loop left: nothing waits). */
function teardown(made: Made): void {
  made.agent.stopSync();
  made.base?.stopSync();
  const site = made.site;
  made.site = undefined;
  if (site) removeSite(site);
}

/** The same, after letting the agent and the sandbox's processes stop on SIGTERM (the agent writes a --cpu-prof). */
async function cleanup(made: Made): Promise<void> {
  await made.agent.stop().catch((e) => log(`stopping the agent: ${(e as Error).message}`));
  await made.base?.stop().catch((e) => log(`stopping the base agent: ${(e as Error).message}`));
  await made.site?.sb.destroy();
  teardown(made);
}

/** The checkout the CLI belongs to, and its revision. */
function revisionOf(cli: string): { root: string; revision: string } {
  const root = join(cli, '..', '..', '..', '..');
  const revFile = join(root, 'REVISION'); // written by run.sh --commit into its clean export
  if (existsSync(revFile)) return { root, revision: `commit ${readFileSync(revFile, 'utf8').trim()}` };
  const rev = spawnSync('git', ['-C', root, 'describe', '--always', '--dirty', '--exclude', '*'], { encoding: 'utf8' });
  return { root, revision: rev.status === 0 ? rev.stdout.trim() : 'not a git checkout' };
}

async function main(): Promise<void> {
  let o: Options;
  try {
    const parsed = parseOptions(process.argv.slice(2));
    if (parsed === 'help') {
      console.log(HELP);
      process.exit(0);
    }
    o = parsed;
  } catch (e) {
    if (e instanceof UsageError) fail(e.message);
    throw e;
  }
  if (!existsSync(o.cli)) fail(`${o.cli} does not exist: build meshlane first (bash scripts/setup.sh)`);
  if (o.baseCli !== undefined && !existsSync(o.baseCli))
    fail(`${o.baseCli} does not exist: build the base first (bash bench/run.sh --base-commit REV builds one)`);
  if (process.getuid?.() !== 0) fail('run as root (network namespaces, cgroups, iptables, BPF)');
  for (const tool of ['haproxy', 'wrk', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) fail(`${tool} is not installed (bash bench/run.sh installs it)`);
  }
  const made: Made = { agent: new BenchAgent(o.cli), base: o.baseCli === undefined ? undefined : new BenchAgent(o.baseCli) };
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: cleaning up`);
    void cleanup(made).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => teardown(made));

  const results = newResults();
  const started = new Date();
  const loadAtStart = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const splice = made.agent.spliceFlags();
  if (splice.note && o.modes.some((m) => m.includes('nosplice') || m === 'meshlane-unbounded')) results.notes.push(splice.note);
  results.tcpCap = tcpCap();
  const baseSplice = made.base?.spliceFlags();
  log(`modes ${o.modes.join(', ')}; ${o.rounds} round(s) of ${o.duration}s per figure; keep-alive c=${o.conc.join(',')}; new connections c=${o.cpsConc}`);
  try {
    log('building the sandbox: pods A, B (bench), Ai, Bi (bench-ipt, iptables rules), C (plain), host srv');
    const world = await buildWorld((site) => (made.site = site));
    const bench = { world, agent: made.agent, options: o, results, splice };
    for (let r = 1; r <= o.rounds; r++) {
      // rotate the order so that no mode always runs first (or right after the same neighbour)
      const order = o.modes.map((_m, i) => o.modes[(i + r - 1) % o.modes.length]!);
      for (const mode of order) {
        const q = await waitQuiet(bench, o.quietWait);
        if (q.busy) results.notes.push(`round ${r} ${mode} started on a busy machine (others used >= 0.15 cores after waiting ${Math.round(q.waited)}s)`);
        else if (q.waited > 1.5) log(`waited ${q.waited.toFixed(0)}s for the machine to be quiet`);
        const t0 = Date.now();
        // meshlane-base: the meshlane mode, with the base build's agent
        const base = mode === 'meshlane-base' && made.base !== undefined && baseSplice !== undefined;
        bench.agent = base ? made.base! : made.agent;
        bench.splice = base ? baseSplice! : splice;
        await measureMode(bench, mode, r);
        log(`round ${r}/${o.rounds} ${mode}: ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      }
    }
  } finally {
    await cleanup(made);
  }
  const kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const firstLine = (cmd: string): string => ((spawnSync(cmd, ['-v'], { encoding: 'utf8' }).stdout ?? '') + '').split('\n')[0] ?? '';
  const { root, revision } = revisionOf(o.cli);
  const md = renderReport(o, results, {
    started,
    finished: new Date(),
    command: process.env.BENCH_COMMAND ?? ['node dist/bench/bench.js', ...process.argv.slice(2)].join(' '),
    meshlane: root,
    revision,
    loadAtStart,
    kernel,
    haproxy: firstLine('haproxy'),
    wrk: firstLine('wrk').trim(),
  });
  console.log(md);
  if (o.markdown) writeFileSync(o.markdown, md);
  const { samples, counters, notes, problems } = results;
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, started, kernel, samples, counters, notes, problems }, null, 2));
  process.exitCode = problems.length > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
});
