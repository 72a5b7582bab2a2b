// Pods are found under the cgroup root the way kubelet lays them out, with either cgroup driver and
// every QoS class (Guaranteed pods sit one level up). One sandbox per layout; the agent must find the
// pod's processes there and capture it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { podCgroupCandidates } from '../../src/agent/pod-locator.js';
import {
  APP,
  POD_UID,
  SVC_V4,
  makeTopology,
  destroyTopology,
  namespaceObject,
  podObject,
  runCase,
  startAgent,
  cleanupAgent,
  waitFor,
  type Topology,
  type AgentRun,
} from '../support/harness.js';

const layouts = [
  { driver: 'systemd', qos: 'Guaranteed' },
  { driver: 'systemd', qos: 'Burstable' },
  { driver: 'cgroupfs', qos: 'Guaranteed' },
  { driver: 'cgroupfs', qos: 'BestEffort' },
] as const;

for (const [i, l] of layouts.entries()) {
  test(`${l.driver} driver, ${l.qos} pod`, async () => {
    let topo: Topology | undefined;
    let agent: AgentRun | undefined;
    try {
      topo = await makeTopology({ prefix: `mlcg${i}`, cgroupDriver: l.driver, qos: l.qos });
      const dir = podCgroupCandidates(topo.sb.cgroupRoot, POD_UID, l.qos).find((d) => existsSync(d));
      assert.equal(dir, topo.pod.cgroupDir, 'the locator derives the directory the sandbox (kubelet) made');
      agent = await startAgent(topo.sb, [namespaceObject('demo', { 'istio-injection': 'enabled' }), podObject({ qos: l.qos })], `cg${i}`);
      await waitFor(() => agent!.status()?.pods[0]?.state === 'captured', 10_000, 'the pod captured');
      const r = await runCase(topo.pod, { name: 'vip', uid: APP, gid: APP, to: `${SVC_V4}:80` });
      assert.match(r, /^proxy-outbound:15001 /);
    } finally {
      await cleanupAgent(agent);
      await destroyTopology(topo);
    }
  });
}
