// The sandbox node the benchmark measures on: its pods and host, the HAProxy sidecars and apps in them
// (with their admin sockets, to read session counters), the bulk tool, and the cluster file the agent gets.
//
// Topology (sandbox prefix `mlb`):
//   namespace bench (istio-injection=enabled): pod A (client, 10.244.0.10) and pod B (server, 10.244.0.11)
//   namespace bench-ipt (labelled too):        pods Ai (.20) and Bi (.21), the same, for the iptables mode
//   namespace plain (not labelled):            pod C (.30), never captured, for the cost of the hooks
//   host srv (.40): an HTTP server for C
// The iptables mode has its own pod pair because nat rules, once loaded, leave conntrack hooked into the
// netns even after a flush: the same pods would carry conntrack into the later modes.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Sandbox, type SandboxHost, type SandboxMember, type SandboxPod } from '../src/sandbox/sandbox.js';
import { packageRoot } from '../src/util/paths.js';
import { defaultCaptureSettings } from '../src/model/annotations.js';
import { namespaceObject, podObject, waitFor, waitReady } from '../test/support/harness.js';
import { istioIptablesRules } from '../test/oracle/istio-iptables.js';
import { applyIstioRules } from '../test/oracle/apply.js';

const PREFIX = 'mlb';
export const APP_UID = 1000;
const PROXY_UID = 1337;
export const HTTP_PORT = 8080;
export const BULK_PORT = 9000;

interface PodDef {
  key: string;
  namespace: string;
  name: string;
  uid: string;
  ipv4: string;
  ipv6: string;
}
const POD_DEFS: PodDef[] = [
  { key: 'A', namespace: 'bench', name: 'client', uid: 'b0000000-0000-4000-8000-00000000000a', ipv4: '10.244.0.10', ipv6: 'fd00:244::10' },
  { key: 'B', namespace: 'bench', name: 'server', uid: 'b0000000-0000-4000-8000-00000000000b', ipv4: '10.244.0.11', ipv6: 'fd00:244::11' },
  { key: 'Ai', namespace: 'bench-ipt', name: 'client', uid: 'b0000000-0000-4000-8000-0000000000a1', ipv4: '10.244.0.20', ipv6: 'fd00:244::20' },
  { key: 'Bi', namespace: 'bench-ipt', name: 'server', uid: 'b0000000-0000-4000-8000-0000000000b1', ipv4: '10.244.0.21', ipv6: 'fd00:244::21' },
  { key: 'C', namespace: 'plain', name: 'other', uid: 'b0000000-0000-4000-8000-00000000000c', ipv4: '10.244.0.30', ipv6: 'fd00:244::30' },
];
/** The pods the agent is to capture (A and B; the iptables pair is not in its cluster file). */
export const CAPTURED_UIDS = [POD_DEFS[0]!.uid, POD_DEFS[1]!.uid];
export const SRV_V4 = '10.244.0.40';

/** What a run must remove, known from the moment the sandbox exists (so that a half-built world goes too). */
export interface Site {
  sb: Sandbox;
  /** HAProxy configs and admin sockets */
  dir: string;
}

export interface World extends Site {
  pods: Record<string, SandboxPod>;
  srv: SandboxHost;
  /** the admin socket of each meshed pod's sidecar (to read its session counters) */
  sidecars: Record<string, string>;
  /** dist/bench/bulk */
  bulk: string;
  /** the wrk report script */
  report: string;
}

/** global and defaults, the same for every HAProxy here but for the mode; `rest` follows the defaults. */
function haproxyConfig(sock: string, mode: 'tcp' | 'http', rest: string): string {
  return `global
  nbthread 1
  maxconn 8192
  stats socket ${sock} mode 666 level admin
defaults
  mode ${mode}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
${rest}`;
}

function sidecarConfig(sock: string): string {
  // One thread, like a sidecar on a small node; tcp mode: forward to SO_ORIGINAL_DST (`0.0.0.0:0`),
  // inbound from 127.0.0.6 like Envoy's InboundPassthroughCluster.
  return haproxyConfig(
    sock,
    'tcp',
    `frontend outbound
  bind :15001
  default_backend orig_out
backend orig_out
  server s 0.0.0.0:0
frontend inbound
  bind :15006
  default_backend orig_in
backend orig_in
  server s 0.0.0.0:0 source 127.0.0.6
`,
  );
}

function appConfig(sock: string): string {
  return haproxyConfig(
    sock,
    'http',
    `  timeout http-keep-alive 120s
frontend app
  bind :${HTTP_PORT}
  http-request return status 200 content-type text/plain string ok
`,
  );
}

/** `show stat` on an HAProxy admin socket: stot (cumulative sessions) per "proxy/server". */
function haproxyStot(sock: string): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    let out = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`${sock}: no answer to show stat`));
    }, 3000);
    s.on('connect', () => s.end('show stat\n'));
    s.setEncoding('utf8').on('data', (d: string) => (out += d));
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      const lines = out.split('\n').filter((l) => l.trim() !== '');
      const header = (lines.shift() ?? '').replace(/^# /, '').split(',');
      const px = header.indexOf('pxname');
      const sv = header.indexOf('svname');
      const stot = header.indexOf('stot');
      if (px < 0 || stot < 0) return reject(new Error(`${sock}: unexpected show stat output: ${out.slice(0, 200)}`));
      const m = new Map<string, number>();
      for (const l of lines) {
        const f = l.split(',');
        m.set(`${f[px]}/${f[sv]}`, Number(f[stot] ?? 0));
      }
      resolve(m);
    });
  });
}

/** Sessions a frontend (`outbound` on 15001, `inbound` on 15006) of pod `key`'s sidecar has taken so far. */
export async function sidecarSessions(world: World, key: string, frontend: 'outbound' | 'inbound'): Promise<number> {
  return (await haproxyStot(world.sidecars[key]!)).get(`${frontend}/FRONTEND`) ?? 0;
}

/** Start an HAProxy and wait until it answers on its admin socket; returns the socket's path. */
async function startHaproxy(
  member: SandboxMember,
  dir: string,
  name: string,
  config: (sock: string) => string,
  uid: number,
  container: string,
): Promise<string> {
  const sock = join(dir, `${name}.sock`);
  const cfg = join(dir, `${name}.cfg`);
  writeFileSync(cfg, config(sock), { mode: 0o644 });
  const proc = member.spawn('haproxy', ['-db', '-f', cfg], { uid, gid: uid, container, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const what = `haproxy ${name}`;
  await waitFor(
    () => {
      if (proc.exitCode !== null) throw new Error(`${what} exited ${proc.exitCode}: ${err}`);
      return existsSync(sock);
    },
    10_000,
    `${what} to start`,
  );
  await haproxyStot(sock); // answers: config loaded, listeners bound
  return sock;
}

/** Compile bench/bulk.c into dist/bench/bulk when it is missing or older than the source. */
function buildBulk(): string {
  const root = packageRoot();
  const src = join(root, 'bench', 'bulk.c');
  const out = join(root, 'dist', 'bench', 'bulk');
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs) {
    execFileSync('cc', ['-O2', '-Wall', '-o', out, src], { stdio: 'inherit' });
  }
  return out;
}

function sysctls(ns: string): void {
  // Same in every netns: the new-connection figures open some 30,000 connections per measurement, more than
  // the ephemeral ports left free by TIME_WAIT; keep ephemeral ports off the service ports and let TIME_WAIT
  // ports be reused (timestamps make it safe). TIME_WAIT itself stays on, as on a real node (checked: five
  // back-to-back measurements with 22,000 TIME_WAIT sockets give the same rate).
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=20000 65000', 'net.ipv4.tcp_tw_reuse=1']);
}

/**
 * Build the sandbox node with everything running in it. `adopt` gets the site as soon as the sandbox exists,
 * so that the caller removes it also when the build fails or is interrupted half-way.
 */
export async function buildWorld(adopt: (site: Site) => void): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'meshlane-bench-'));
  chmodSync(dir, 0o1777); // HAProxy as 1337 / 1000 creates its admin socket here
  const sb = await Sandbox.create({ prefix: PREFIX });
  adopt({ sb, dir });
  const bulk = buildBulk();
  const pods: Record<string, SandboxPod> = {};
  for (const d of POD_DEFS) {
    pods[d.key] = await sb.addPod({ namespace: d.namespace, name: d.name, uid: d.uid, ipv4: d.ipv4, ipv6: d.ipv6 });
  }
  const srv = await sb.addHost('srv', { ipv4: SRV_V4 });
  for (const m of [...Object.values(pods), srv]) sysctls(m.netns);

  // Sidecars in the four meshed pods; HTTP and bulk servers in B, Bi and srv.
  const sidecars: Record<string, string> = {};
  for (const k of ['A', 'B', 'Ai', 'Bi']) {
    sidecars[k] = await startHaproxy(pods[k]!, dir, `sidecar-${k}`, sidecarConfig, PROXY_UID, 'istio-proxy');
  }
  const servers: Array<[string, SandboxMember]> = [
    ['B', pods.B!],
    ['Bi', pods.Bi!],
    ['srv', srv],
  ];
  for (const [k, m] of servers) {
    await startHaproxy(m, dir, `app-${k}`, appConfig, APP_UID, 'app');
    if (k !== 'srv') {
      const b = m.spawn(bulk, ['serve', String(BULK_PORT)], { uid: APP_UID, gid: APP_UID, container: 'app', stdio: ['ignore', 'pipe', 'pipe'] });
      await waitReady(b, `bulk server in ${k}`);
    }
  }

  // The iptables pods get the rules once, for good (see the header comment).
  const rules = istioIptablesRules(defaultCaptureSettings());
  for (const k of ['Ai', 'Bi']) await applyIstioRules(pods[k]!.netns, rules, { addIPv6PassthroughAddress: false });
  return { sb, dir, pods, srv, sidecars, bulk, report: join(packageRoot(), 'bench', 'report.lua') };
}

/** Remove the sandbox (every process in it, its netns and cgroups) and the config dir. Synchronous, so that
 * process 'exit' can run it; after a destroy() it removes only the dir. */
export function removeSite(site: Site): void {
  site.sb.destroySync();
  rmSync(site.dir, { recursive: true, force: true });
}

/** The cluster file's objects: the labelled namespace `bench` with A and B, the unlabelled `plain` with C. */
export function clusterItems(): object[] {
  const items: object[] = [namespaceObject('bench', { 'istio-injection': 'enabled' }), namespaceObject('plain', {})];
  for (const d of POD_DEFS) {
    if (d.key !== 'A' && d.key !== 'B' && d.key !== 'C') continue;
    items.push(podObject({ namespace: d.namespace, name: d.name, uid: d.uid, ipv4: d.ipv4, ipv6: d.ipv6 }));
  }
  return items;
}
