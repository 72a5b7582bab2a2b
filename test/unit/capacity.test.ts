// Map capacity (src/dataplane/capacity.ts): every map's max_entries from the node's limits. At the
// default limits every map is exactly what layouts.ts (and bpf/maps.h) declare, so an install without
// the options runs as before and the layout lock is unchanged; other limits scale the maps they size, and
// nothing else. The options' validation is here too (the CLI's one line); the kernel side is
// test/kernel/capacity.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { MAPS, MAP_NAMES, MapLimits, Stat } from '../../src/dataplane/layouts.js';
import { FULL_LOG_EVERY_MS, KERNEL_FULL, KernelFullWatch } from '../../src/dataplane/full-watch.js';
import type { Logger } from '../../src/util/log.js';
import {
  DEFAULT_LIMITS,
  LIMIT_RANGE,
  allowance,
  capacityOf,
  capacityOption,
  fillingMaps,
  handoverBounds,
  keptLine,
  mapCapacities,
  parseLimit,
  sizedBy,
} from '../../src/dataplane/capacity.js';
import { inflightLimit } from '../../src/cli/commands/agent.js';
import { UserError } from '../../src/util/errors.js';
import { packageRoot } from '../../src/util/paths.js';

test('at the default limits every map has the capacity layouts.ts declares (the lock fingerprints it)', () => {
  assert.deepEqual(DEFAULT_LIMITS, { maxPods: 4096, maxConnections: 65536 });
  const caps = mapCapacities(DEFAULT_LIMITS);
  for (const n of MAP_NAMES) assert.equal(caps[n], MAPS[n].maxEntries, n);
});

test('what sets each map: pods, connections, or nothing (arrays and socket storage are fixed)', () => {
  const byPods = ['pods', 'pod_info', 'pod_by_ip4', 'pod_by_ip6', 'pod_ports', 'pod_cidrs4', 'pod_cidrs6', 'pod_ifaces', 'pod_dns', 'listeners', 'handover'];
  const byConnections = ['orig_by_tuple', 'sock_pairs', 'splice_marks'];
  assert.deepEqual(MAP_NAMES.filter((n) => sizedBy(n) === 'maxPods').sort(), byPods.sort());
  assert.deepEqual(MAP_NAMES.filter((n) => sizedBy(n) === 'maxConnections').sort(), byConnections.sort());
  // every map that fills up has an option that sizes it: nothing is left at a compiled size
  assert.deepEqual(
    fillingMaps()
      .map((d) => d.name)
      .filter((n) => !sizedBy(n)),
    [],
  );
  assert.equal(capacityOption('pods'), '--max-pods');
  assert.equal(capacityOption('orig_by_tuple'), '--max-connections');
  assert.equal(capacityOption('stats'), undefined);
  // the per-unit allowances the compiled capacities stand for
  assert.equal(allowance('pods'), 1);
  assert.equal(allowance('pod_ports'), 16);
  assert.equal(allowance('pod_cidrs4'), 16);
  assert.equal(allowance('pod_dns'), 4);
  assert.equal(allowance('listeners'), 4);
  assert.equal(allowance('handover'), 2);
  assert.equal(allowance('orig_by_tuple'), 1);
  assert.equal(allowance('sock_pairs'), 2);
  assert.equal(allowance('splice_marks'), 0.25);
});

test('other limits scale the maps they size, and only those', () => {
  const small = mapCapacities({ maxPods: 2, maxConnections: 16 });
  assert.equal(small.pods, 2);
  assert.equal(small.pod_info, 2);
  assert.equal(small.pod_by_ip4, 2);
  assert.equal(small.handover, 5, 'two per pod netns and the node');
  assert.equal(small.pod_ports, 32);
  assert.equal(small.pod_ifaces, 8);
  assert.equal(small.listeners, 8);
  assert.equal(small.orig_by_tuple, 16);
  assert.equal(small.sock_pairs, 32);
  assert.equal(small.splice_marks, 4);
  for (const n of MAP_NAMES) if (!sizedBy(n)) assert.equal(small[n], MAPS[n].maxEntries, `${n} is fixed`);
  const big = mapCapacities({ maxPods: 16384, maxConnections: 1 << 20 });
  assert.equal(big.pods, 16384);
  assert.equal(big.handover, 2 * 16384 + 1);
  assert.equal(big.orig_by_tuple, 1 << 20);
  assert.equal(big.sock_pairs, 2 << 20);
  // never below one entry
  assert.equal(capacityOf('splice_marks', { maxPods: 1, maxConnections: 1 }), 1);
});

test('hand-over bounds: the compiled ones at the default, a 16th (headroom and per pod) of a smaller map', () => {
  assert.deepEqual(handoverBounds(MapLimits.INFLIGHT), { refuseFrom: 65536 - 1024, defaultPerPod: 4096, maxPerPod: 65536 - 1024 });
  assert.deepEqual(handoverBounds(1 << 20), { refuseFrom: (1 << 20) - 1024, defaultPerPod: 65536, maxPerPod: (1 << 20) - 1024 });
  assert.deepEqual(handoverBounds(256), { refuseFrom: 240, defaultPerPod: 16, maxPerPod: 240 });
  assert.deepEqual(handoverBounds(16), { refuseFrom: 15, defaultPerPod: 1, maxPerPod: 15 });
});

test('the options: whole numbers in their range, else one line that says what to pass', () => {
  assert.equal(parseLimit('maxPods', '2'), 2);
  assert.equal(parseLimit('maxConnections', '65536'), 65536);
  assert.equal(parseLimit('maxPods', String(LIMIT_RANGE.maxPods[1])), LIMIT_RANGE.maxPods[1]);
  for (const bad of ['0', '-1', '1.5', '1e3', '', ' 2', '0x10', '16385', '99999999999999999999'])
    assert.equal(parseLimit('maxPods', bad), `--max-pods '${bad}' is not a whole number in 1..16384: pass e.g. --max-pods 4096`, bad);
  assert.equal(parseLimit('maxConnections', '15'), "--max-connections '15' is not a whole number in 16..1048576: pass e.g. --max-connections 65536");
  // --max-inflight-per-pod: bounded by what --max-connections leaves below the node's threshold
  assert.equal(inflightLimit('64512'), 64512);
  assert.throws(
    () => inflightLimit('64513'),
    (e: unknown) => e instanceof UserError && /1\.\.64512: pass e\.g\. --max-inflight-per-pod 4096$/.test(e.message),
  );
  assert.equal(inflightLimit('15', 16), 15);
  assert.throws(
    () => inflightLimit('16', 16),
    (e: unknown) =>
      e instanceof UserError &&
      e.message === "--max-inflight-per-pod '16' is not a whole number in 1..15 with --max-connections 16: pass e.g. --max-inflight-per-pod 1",
  );
});

test('a kept pin is told as such', () => {
  assert.equal(
    keptLine({ capacity: 4096, wanted: 2, option: '--max-pods' }),
    'capacity 4096 (wanted 2 by --max-pods, takes effect after `meshlane uninstall`)',
  );
});

test('the CLI: a bad --max-pods or --max-connections is one line and exit 2, before anything else', () => {
  const main = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
  const run = (args: string[]): { code: number; stderr: string } => {
    try {
      execFileSync(process.execPath, [main, 'agent', '--cluster-file', '/nonexistent/cluster.yaml', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      return { code: 0, stderr: '' };
    } catch (e) {
      const x = e as { status: number; stderr: Buffer };
      return { code: x.status, stderr: x.stderr.toString() };
    }
  };
  const cases: Array<[string[], string]> = [
    [['--max-pods', '0'], "meshlane: --max-pods '0' is not a whole number in 1..16384: pass e.g. --max-pods 4096\n"],
    [['--max-connections', 'lots'], "meshlane: --max-connections 'lots' is not a whole number in 16..1048576: pass e.g. --max-connections 65536\n"],
    [
      ['--max-connections', '64', '--max-inflight-per-pod', '64'],
      "meshlane: --max-inflight-per-pod '64' is not a whole number in 1..60 with --max-connections 64: pass e.g. --max-inflight-per-pod 4\n",
    ],
  ];
  for (const [args, want] of cases) {
    const r = run(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.stderr, want, args.join(' '));
  }
});

test("the programs' full-map counters are logged when they move, at most every 30 s with the number since", () => {
  const lines: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  const log = { warn: (fields: Record<string, unknown>, msg: string) => void lines.push({ fields, msg }) } as unknown as Logger;
  const counts: Record<string, bigint> = {};
  const stats = { get: (i: number) => counts[Stat[i]!] ?? 0n };
  const w = new KernelFullWatch(log);
  w.poll(stats, 0);
  assert.equal(lines.length, 0, 'nothing full, nothing logged');
  counts.splice_table_full = 3n;
  w.poll(stats, 1_000);
  counts.splice_table_full = 9n;
  w.poll(stats, 2_000); // within 30 s: not again
  counts.listeners_full = 1n;
  w.poll(stats, 3_000);
  w.poll(stats, 1_000 + FULL_LOG_EVERY_MS);
  assert.deepEqual(
    lines.map((l) => [l.fields.map, l.fields.since]),
    [
      ['sock_pairs', 3],
      ['listeners', 1],
      ['sock_pairs', 6],
    ],
  );
  assert.match(lines[0]!.msg, /^map sock_pairs is full \(sized by --max-connections; README, Map capacity\): sockets not spliced/);
  assert.match(lines[1]!.msg, /^map listeners is full \(sized by --max-pods; README, Map capacity\): proxy listeners not registered/);
  // every counter it reads is one of the stats
  for (const k of KERNEL_FULL) assert.ok(Stat.includes(k.stat), k.stat);
});
