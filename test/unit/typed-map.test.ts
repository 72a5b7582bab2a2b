// The map types come from the layouts (KeyOf / ValueOf of MAPS): a key or value of the wrong shape is
// a compile error. The `@ts-expect-error` lines are the test: tsc fails the build if one of them
// compiles. Nothing here touches a map at run time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MapsView } from '../../src/dataplane/dataplane.js';
import type { KeyOf, ValueOf } from '../../src/dataplane/typed-map.js';
import type { Op } from '../../src/agent/plan.js';

function typeChecks(maps: MapsView): unknown[] {
  const portKey: KeyOf<'pod_ports'> = { pod_id: 1, port: 80, kind: 1, pad: 0 };
  maps.pod_ports.set(portKey, 1);
  // @ts-expect-error a pod_ports key needs kind and pad
  maps.pod_ports.set({ pod_id: 1, port: 80 }, 1);
  // @ts-expect-error a CIDR key is no port key
  maps.pod_ports.delete({ prefixlen: 72, pod_id: 1, kind: 1, addr: '10.0.0.0' });
  // @ts-expect-error pods is keyed by the netns cookie, a bigint
  maps.pods.get(1);
  // @ts-expect-error global[0] is { flags, pad }
  maps.global.set(0, { flags: 1 });
  // @ts-expect-error listeners is keyed by netns cookie, port and family
  maps.listeners.get({ netns_cookie: 1n, port: 15006 });
  const flags: number | undefined = maps.global.get(0)?.flags;
  const counter: bigint | null = maps.stats.get(0);
  const info: ValueOf<'pod_info'> | null = maps.pod_info.get(1);
  // @ts-expect-error a set op pairs its map with that map's own key
  const op: Op = { map: 'pod_dns', op: 'set', key: portKey };
  return [flags, counter, info, op];
}

test('a wrong key shape is a compile error (the @ts-expect-error lines above)', () => {
  assert.equal(typeof typeChecks, 'function');
});
