// PodRuntimeReader against the running kernel: a pod's interfaces are read from inside its netns
// (setns through the native addon: root), its resolv.conf through /proc/<pid>/root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PodRuntimeReader } from '../../src/agent/pod-runtime.js';

test('a process that cannot be read yields no servers and no interfaces, never an error', () => {
  const r = new PodRuntimeReader().read(2 ** 22 + 12345, { dns: true, ifaces: true });
  assert.deepEqual(r.dnsServers, []);
  assert.equal(r.ifindex('eth0'), undefined);
});

test('runtime facts are cached per process for a while', () => {
  let now = 0;
  const reader = new PodRuntimeReader(() => now);
  const a = reader.read(process.pid, { dns: true, ifaces: true });
  assert.equal(reader.read(process.pid, { dns: true, ifaces: true }), a);
  now = 10_000;
  assert.notEqual(reader.read(process.pid, { dns: true, ifaces: true }), a);
  assert.equal(typeof a.ifindex('lo'), 'number', 'the interfaces of our own netns are read');
});

test('the cache keeps apart what was asked for (a pod that starts needing interfaces gets them)', () => {
  const reader = new PodRuntimeReader(() => 0);
  assert.equal(reader.read(process.pid, { dns: false, ifaces: false }).ifindex('lo'), undefined);
  assert.equal(typeof reader.read(process.pid, { dns: false, ifaces: true }).ifindex('lo'), 'number');
});
