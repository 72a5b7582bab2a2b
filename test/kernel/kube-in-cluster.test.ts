// In-cluster configuration for real: a process in a private mount namespace (unshare -m, propagation
// private) where a tmpfs covers /run (so /var/run/secrets/kubernetes.io/serviceaccount is ours, not the
// machine's) and a directory of this test is bind-mounted at the service account path, laid out as
// kubelet's projected volume is (..data -> a timestamped directory, token -> ..data/token). With
// KUBERNETES_SERVICE_HOST/PORT pointing at the suite's API server, the probe (test/support/kube/
// source-probe.ts) follows the source that sourceFromOptions() picks: the in-cluster one.
// - without a service account mounted: one line naming the missing token and the fix, exit 2 (the
//   probe, and the CLI itself);
// - our in-cluster configuration is exactly client-node's loadFromCluster();
// - token rotation: the server stops accepting the old token, kubelet swaps the token file, the source
//   keeps working (a 401 re-reads the token at once, not after FileAuth's 60 s).
// Nothing of the machine is touched: the mounts die with the namespace.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { KubeApiServer } from '../support/kube/server.js';
import { pod } from '../support/kube/fixtures.js';
import { CLI } from '../support/harness.js';
import { packageRoot } from '../../src/util/paths.js';

const T = { timeout: 60_000 };
const PROBE = (): string => join(packageRoot(), 'dist', 'test', 'support', 'kube', 'source-probe.js');
const SA = '/var/run/secrets/kubernetes.io/serviceaccount';

/** the script run inside the namespace: an empty /run, the service account (if given) at its path, then the command */
const NS_SCRIPT = `set -e
mount -t tmpfs -o mode=0755 meshlane-test-run /run
if [ -n "$SA_DIR" ]; then mkdir -p ${SA}; mount --bind "$SA_DIR" ${SA}; fi
exec "$@"`;

function nsEnv(s: KubeApiServer | undefined, saDir: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_NAME: 'n1', SA_DIR: saDir ?? '' };
  env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
  env.KUBERNETES_SERVICE_PORT = s ? String(s.port) : '1';
  return env;
}

/** kubelet's projected volume: files in a timestamped directory, reached through ..data */
class ServiceAccountDir {
  private gen = 0;
  constructor(readonly dir: string) {}

  write(files: Record<string, string>): void {
    const ts = `..2026_12_01_10_00_${String(this.gen++).padStart(2, '0')}.000000000`;
    mkdirSync(join(this.dir, ts));
    for (const [n, text] of Object.entries(files)) writeFileSync(join(this.dir, ts, n), text, { mode: 0o644 });
    symlinkSync(ts, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data')); // the atomic swap
    for (const n of Object.keys(files)) {
      try {
        symlinkSync(join('..data', n), join(this.dir, n));
      } catch {
        // the link exists from the first write: it follows ..data
      }
    }
  }
}

class Probe {
  readonly lines: Array<Record<string, unknown>> = [];
  private readonly waiters = new Set<() => void>();
  stderr = '';
  exited: number | null | undefined;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        this.lines.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        this.lines.push({ raw: l });
      }
      for (const w of [...this.waiters]) w();
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.on('exit', (code) => {
      this.exited = code;
      for (const w of [...this.waiters]) w();
    });
  }

  waitFor(what: string, ok: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = this.lines.find(ok);
        if (hit) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve(hit);
        } else if (this.exited !== undefined) {
          clearTimeout(timer);
          this.waiters.delete(check);
          reject(new Error(`the probe exited (${this.exited}) before: ${what}\n${this.dump()}`));
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`not within ${timeoutMs} ms: ${what}\n${this.dump()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  dump(): string {
    return `stdout:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}\nstderr:\n${this.stderr}`;
  }
}

function startProbe(t: TestContext, env: NodeJS.ProcessEnv, args: string[] = []): Probe {
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', NS_SCRIPT, 'sh', process.execPath, PROBE(), ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = new Probe(child);
  t.after(async () => {
    if (p.exited !== undefined || child.pid === undefined) return;
    child.kill('SIGTERM');
    const gone = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!gone) child.kill('SIGKILL');
  });
  return p;
}

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'meshlane-in-cluster-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('in-cluster without a service account mounted: one line naming the token path and the fix (the probe and the CLI), exit 2', T, async (t) => {
  const p = startProbe(t, nsEnv(undefined, undefined));
  const line = await p.waitFor('a start error', (l) => 'startError' in l);
  assert.equal(
    line.startError,
    `in-cluster config: no service account token at ${SA}/token: mount the service account (automountServiceAccountToken: true), or give --kubeconfig FILE`,
  );
  await p.waitFor('exit', () => p.exited !== undefined).catch(() => undefined);
  assert.equal(p.exited, 2);

  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', NS_SCRIPT, 'sh', process.execPath, CLI(), 'agent'], {
    env: nsEnv(undefined, undefined),
    encoding: 'utf8',
    timeout: 15_000,
    killSignal: 'SIGKILL',
  });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(
    r.stderr,
    `meshlane: in-cluster config: no service account token at ${SA}/token: mount the service account (automountServiceAccountToken: true), or give --kubeconfig FILE\n`,
  );
  assert.equal(r.stdout, '');
});

test(
  'in-cluster: the configuration is client-node’s loadFromCluster(); the source syncs; a rotated token is picked up after the old one is refused',
  T,
  async (t) => {
    const s = await KubeApiServer.start({ token: 'token-one' });
    t.after(() => s.close());
    s.store.create('pods', pod({ name: 'mine', node: 'n1' }));
    s.store.create('pods', pod({ name: 'theirs', node: 'n2' }));
    const sa = new ServiceAccountDir(tmp(t));
    sa.write({ token: 'token-one', 'ca.crt': s.certs.caPem, namespace: 'meshlane' });

    const p = startProbe(t, nsEnv(s, sa.dir), ['--compare-in-cluster']);
    const cmp = await p.waitFor('the configurations compared', (l) => 'inCluster' in l || 'compareError' in l);
    assert.equal(cmp.compareError, undefined, p.dump());
    assert.deepEqual(cmp.inCluster, cmp.loadFromCluster, 'ours is loadFromCluster() with the environment given');
    const desc = await p.waitFor('the description', (l) => 'description' in l);
    assert.equal(desc.description, `Kubernetes API https://127.0.0.1:${s.port} (in-cluster)`);
    const first = await p.waitFor('the first replace', (l) => (l.event as { type?: string } | undefined)?.type === 'replace');
    assert.deepEqual((first.event as { pods: string[] }).pods, ['default/mine']);
    assert.ok(s.requests.length > 0 && s.requests.every((r) => r.user === 'meshlane-test'), 'authenticated with the mounted token');

    // the old token is refused from now on (a server that knows only the new one, same store and port)
    await s.close();
    const rotated = new KubeApiServer({ port: s.port, certs: s.certs, store: s.store, token: 'token-two' });
    t.after(() => rotated.close());
    await rotated.start();
    await p.waitFor('a 401 reported', (l) => typeof l.error === 'string' && /refused the credentials \(401 Unauthorized\)/.test(l.error));
    assert.ok(rotated.requests.some((r) => r.status === 401));
    // kubelet rotates the token: the source keeps working without a restart
    sa.write({ token: 'token-two', 'ca.crt': s.certs.caPem, namespace: 'meshlane' });
    s.store.create('pods', pod({ name: 'after-rotation', node: 'n1' }));
    await p.waitFor('the pod created after the rotation', (l) => {
      const e = l.event as { type?: string; name?: string; pods?: string[] } | undefined;
      return (e?.type === 'upsert' && e.name === 'default/after-rotation') || (e?.type === 'replace' && (e.pods ?? []).includes('default/after-rotation'));
    });
    const ok = rotated.requests.filter((r) => r.status !== 401);
    assert.ok(ok.length > 0 && ok.every((r) => r.user === 'meshlane-test'), 'the new token is used');
    assert.equal(p.exited, undefined, 'still running');
  },
);
