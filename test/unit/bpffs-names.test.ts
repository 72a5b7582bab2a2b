// The names meshlane gives its pins (src/dataplane/bpffs.ts): uninstall and the stale-pin sweep remove only
// names of this shape, so every map and program must have one, and the shapes must not take in what
// others put in a bpffs (libbpf's default pin names, bpftool's, the kernel's preloaded iterators). And the
// reading of the capability set that decides "root without capabilities".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COOKIE_PIN, MAP_PIN, PROGRAM_PIN } from '../../src/dataplane/bpffs.js';
import { MAPS, MAP_NAMES } from '../../src/dataplane/layouts.js';
import { OBJECTS } from '../../src/dataplane/programs.js';
import { mapPinName } from '../../src/dataplane/dataplane.js';
import { AGENT_CAPS, effectiveCaps, missingCaps } from '../../src/dataplane/features.js';

test('every map pin and program name of meshlane has the shape uninstall removes', () => {
  for (const n of MAP_NAMES) assert.match(mapPinName(MAPS[n]), MAP_PIN, n);
  for (const o of OBJECTS) for (const p of o.programs) assert.match(p.name, PROGRAM_PIN, p.name);
});

test("names that are not meshlane's do not have its shapes", () => {
  for (const f of ['maps.debug', 'progs.debug', 'netns', 'cilium_calls_65535', 'tc', 'pods', 'pods_v', 'Pods_v1', 'pods_v1.old', '.pods_v1', 'pods_v1/x']) {
    assert.doesNotMatch(f, MAP_PIN, f);
  }
  for (const f of ['connect4', 'meshlane_', 'meshlane-connect4', 'xmeshlane_connect4', 'meshlane_connect4.bak', 'netns'])
    assert.doesNotMatch(f, PROGRAM_PIN, f);
  for (const f of ['0', '012', '-1', '1a', '', ' 1']) assert.doesNotMatch(f, COOKIE_PIN, JSON.stringify(f));
  assert.match('4096', COOKIE_PIN);
});

test('the effective capability set is read from /proc/self/status; missing ones are named', () => {
  const status = (eff: string): string => `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t${eff}\nCapEff:\t${eff}\nCapBnd:\t${eff}\n`;
  assert.equal(effectiveCaps(status('000001fffeffffff')), 0x1fffeffffffn);
  // this machine's root lacks CAP_SYS_RESOURCE (bit 24): meshlane does not need it
  assert.deepEqual(missingCaps(AGENT_CAPS, effectiveCaps(status('000001fffeffffff'))), []);
  assert.deepEqual(missingCaps(AGENT_CAPS, 0n), ['CAP_SYS_ADMIN', 'CAP_NET_ADMIN', 'CAP_SYS_PTRACE']);
  assert.deepEqual(missingCaps(AGENT_CAPS, 0x1fffeffffffn & ~(1n << 19n)), ['CAP_SYS_PTRACE']);
  assert.throws(() => effectiveCaps('Name:\tnode\n'));
});
