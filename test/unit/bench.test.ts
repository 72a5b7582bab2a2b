// The benchmark's pure parts: its command line and the arithmetic of its report (medians, ratios to
// iptables, the paired hook-cost ratios, the targets). The measuring itself runs only in bench/run.sh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseOptions, UsageError, type Mode, type Options } from '../../bench/options.js';
import { median, pairedRatios, renderReport, targets } from '../../bench/report.js';
import { newResults, type Results, type Sample } from '../../bench/results.js';
import { packageRoot } from '../../src/util/paths.js';

const opts = (argv: string[]): Options => {
  const o = parseOptions(argv);
  assert.notEqual(o, 'help');
  return o as Options;
};

test('bench options: the full run by default, --quick shortens every default but what is given', () => {
  assert.deepEqual(opts([]), {
    quick: false,
    rounds: 3,
    duration: 3,
    conc: [1, 16, 64],
    cpsConc: 16,
    quietWait: 30,
    modes: ['none', 'iptables', 'meshlane', 'meshlane-nosplice'],
    json: undefined,
    markdown: undefined,
    cli: join(packageRoot(), 'dist', 'src', 'cli', 'main.js'),
  });
  const q = opts(['--quick', '--rounds', '2']);
  assert.deepEqual([q.rounds, q.duration, q.conc, q.quietWait], [2, 2, [16], 10]);
  assert.equal(opts(['--meshlane', '/tmp/build']).cli, '/tmp/build/dist/src/cli/main.js');
  assert.deepEqual(opts(['--modes', 'meshlane-pinned,none']).modes, ['meshlane-pinned', 'none']);
  const b = opts(['--modes', 'iptables,meshlane,meshlane-base', '--base', '/tmp/base']);
  assert.deepEqual([b.modes, b.baseCli], [['iptables', 'meshlane', 'meshlane-base'], '/tmp/base/dist/src/cli/main.js']);
  assert.equal(parseOptions(['--help']), 'help');
});

test('bench options: a value out of range or an unknown mode is a UsageError naming the option', () => {
  const usage = (argv: string[], msg: string): void =>
    assert.throws(
      () => parseOptions(argv),
      (e: unknown) => e instanceof UsageError && e.message === msg,
    );
  usage(['--rounds', '0'], '--rounds must be an integer in 1..20');
  usage(['--conc', '1,x'], '--conc must be an integer in 1..1000');
  usage(['--quiet-wait', '1.5'], '--quiet-wait must be an integer in 0..600');
  usage(
    ['--modes', 'none,envoy'],
    "--modes: unknown mode 'envoy' (none, iptables, meshlane, meshlane-nosplice, meshlane-pinned, meshlane-nosplice-pinned, meshlane-unbounded, meshlane-base)",
  );
  usage(['--modes', 'meshlane-base'], '--modes meshlane-base and --base DIR go together');
  usage(['--base', '/tmp/base'], '--modes meshlane-base and --base DIR go together');
});

test('report: median of odd and even counts', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

const s = (round: number, mode: Mode, figure: string, value: number, extra: Partial<Sample> = {}): Sample => ({ round, mode, figure, value, ...extra });

test('report: the hook cost is paired within a round, against that round and mode only', () => {
  const samples = [
    s(1, 'meshlane', 'hook-cps', 90),
    s(1, 'meshlane', 'hook-cps-unloaded', 100),
    s(2, 'meshlane', 'hook-cps', 50),
    s(2, 'meshlane', 'hook-cps-unloaded', 50),
    s(3, 'meshlane', 'hook-cps', 70), // no baseline in round 3: not paired
    s(3, 'meshlane-nosplice', 'hook-cps-unloaded', 10),
  ];
  assert.deepEqual(pairedRatios(samples, 'meshlane', 'hook-cps'), [0.9, 1]);
  assert.deepEqual(pairedRatios(samples, 'meshlane-nosplice', 'hook-cps'), []);
});

function run(modes: Mode[], samples: Sample[]): { o: Options; r: Results } {
  const o = { ...opts(['--quick']), modes };
  return { o, r: { ...newResults(), samples } };
}

test('report: targets are ratios of medians to iptables, p99 lower is better, the hook cost paired, the slow reader against TCP', () => {
  const { o, r } = run(
    ['none', 'iptables', 'meshlane'],
    [
      s(1, 'iptables', 'ka-c16', 1000, { p99_us: 1000 }),
      s(1, 'meshlane', 'ka-c16', 1800, { p99_us: 710 }),
      s(1, 'iptables', 'cps', 100),
      s(1, 'meshlane', 'cps', 119),
      s(1, 'iptables', 'bulk', 100),
      s(1, 'meshlane', 'bulk', 130),
      s(1, 'iptables', 'slow-reader', 50 * 1048576),
      s(1, 'meshlane', 'slow-reader', 25 * 1048576),
      s(1, 'none', 'hook-cps', 1000),
      s(1, 'meshlane', 'hook-cps', 970),
      s(1, 'meshlane', 'hook-cps-pinned', 900),
      s(1, 'meshlane', 'hook-cps-unloaded', 1000),
    ],
  );
  r.tcpCap = 216 * 1048576;
  assert.deepEqual(targets(o, r), [
    'meshlane keep-alive c=16: 1.80x iptables req/s (target >= 1.80: met), p99 0.71x (target <= 0.70: NOT met)',
    'meshlane new connections/s: 1.19x iptables (target >= 1.20: NOT met)',
    'meshlane bulk, one connection: 1.30x iptables (target >= 1.30: met)',
    'meshlane slow reader: peak node TCP memory +25 MiB, 0.50x iptables (target: bounded by what TCP flow control allows the 6 sockets, 216 MiB: met)',
    'meshlane non-captured pod (paired): 0.970x of no meshlane with the agent running, 0.900x with only the programs attached (target >= 0.970: met / NOT met)',
  ]);
  assert.match(
    targets({ ...o, conc: [1] }, { ...r, samples: [s(1, 'iptables', 'ka-c1', 100, { p99_us: 1 }), s(1, 'meshlane', 'ka-c1', 139, { p99_us: 1 })] })[0]!,
    /1\.39x iptables req\/s \(target >= 1\.40: NOT met\)/,
  );
  assert.deepEqual(targets({ ...o, modes: ['none', 'meshlane'] }, r), [], 'no targets without iptables to compare with');
});

test('report: the main table has the median, its spread and the ratio to iptables per mode', () => {
  const { o, r } = run(
    ['iptables', 'meshlane'],
    [s(1, 'iptables', 'ka-c16', 1000), s(2, 'iptables', 'ka-c16', 1200), s(3, 'iptables', 'ka-c16', 1100), s(1, 'meshlane', 'ka-c16', 1650)],
  );
  const info = {
    started: new Date(0),
    finished: new Date(1000),
    command: 'bench',
    meshlane: '/m',
    revision: 'abc',
    loadAtStart: '0 0 0',
    kernel: 'k',
    haproxy: 'h',
    wrk: 'w',
  };
  const md = renderReport({ ...o, rounds: 3 }, r, info);
  const lines = md.split('\n');
  assert.equal(lines[0], 'Run 1970-01-01T00:00:00.000Z - 1970-01-01T00:00:01.000Z: `bench`');
  assert.ok(lines.includes('| figure (median of 3 rounds, spread) | iptables | meshlane | meshlane / iptables |'), md);
  // spread: (1200 - 1000) / 1100, shown as +- half of it
  assert.ok(lines.includes('| keep-alive c=16: requests/s | 1,100 ±9% | 1,650 ±0% | 1.50x |'), md);
  assert.ok(lines.includes('| bulk, one connection: Gbit/s | - | - | - |'), md);
  assert.ok(!md.includes('PROBLEMS'), 'no problems section without problems');
  r.problems.push('p1');
  assert.ok(renderReport(o, r, info).endsWith('\nPROBLEMS (these figures are not valid):\n- p1\n'));
});
