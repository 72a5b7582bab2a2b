// `meshlane demo` end to end, as a user runs it: a subprocess of the built CLI. It must show the capture
// (listener 15001, the pod IP as the proxy's peer, the VIP as SO_ORIGINAL_DST), the flip to direct, exit 0,
// and leave nothing behind; interrupted with SIGINT right after its first capture it must still clean up.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from '../../src/sandbox/sandbox.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { uninstall } from '../../src/dataplane/dataplane.js';
import { packageRoot } from '../../src/util/paths.js';
import { skipUnless } from '../support/features.js';

const PREFIX = 'mldemo';
const BPFFS = '/sys/fs/bpf/meshlane-demo';
const CLI = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

function startDemo(): Run {
  const child = spawn(process.execPath, [CLI, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Wait for the exit, killing the demo (by its pid) after timeoutMs; undefined when it had to be killed. */
async function exitWithin(r: Run, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  const res = await Promise.race([r.exited, timeout]);
  clearTimeout(timer);
  if (res === undefined) {
    r.child.kill('SIGKILL');
    await r.exited;
  }
  return res;
}

function leftovers(): string[] {
  const out: string[] = [];
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(PREFIX));
  if (netns.length) out.push(`netns ${netns.join(' ')}`);
  if (existsSync(BPFFS)) out.push(BPFFS);
  const cg = join(cgroup2Mount(), PREFIX);
  if (existsSync(cg)) out.push(cg);
  return out;
}

// Whatever a failed run left: stop it, then remove its netns, cgroups and pins.
after(async () => {
  for (const c of running) c.kill('SIGKILL');
  if (leftovers().length === 0) return;
  try {
    uninstall(BPFFS);
  } catch {
    /* reported by the assertions */
  }
  const sb = await Sandbox.create({ prefix: PREFIX }); // removes what an earlier run left
  await sb.destroy();
});

test('meshlane demo shows the capture, the flip, and cleans up', { skip: skipUnless('root'), timeout: 150_000 }, async () => {
  assert.deepEqual(leftovers(), [], 'leftovers before the demo ran');
  const r = startDemo();
  const res = await exitWithin(r, 120_000);
  const out = r.stdout();
  const ctx = `\n--- stdout\n${out}\n--- stderr\n${r.stderr()}`;
  assert.ok(res, `demo did not finish within 120 s${ctx}`);
  assert.equal(res.code, 0, `exit code${ctx}`);

  const [beforeFlip = '', afterFlip = ''] = out.split(/\[5\/6\] flip/);
  // the app's connection to the VIP went through the proxy: listener 15001, peer = pod IP, original dst = VIP
  assert.match(
    beforeFlip,
    /app \(uid 1000\) -> 10\.96\.0\.10:80\n.*\n\s+proxy saw: +listener 15001, peer 10\.244\.0\.10, SO_ORIGINAL_DST 10\.96\.0\.10:80;.*\n\s+=> captured/,
    ctx,
  );
  assert.match(
    beforeFlip,
    /app \(uid 1000\) -> \[fd00:96::10\]:80\n.*\n\s+proxy saw: +listener 15001, peer fd00:244::10, SO_ORIGINAL_DST \[fd00:96::10\]:80;.*\n\s+=> captured/,
    ctx,
  );
  assert.match(beforeFlip, /proxy \(uid 1337\) -> 10\.96\.0\.10:80\n.*\n\s+proxy saw: +nothing\n\s+=> direct/, ctx);
  assert.match(beforeFlip, /ratings app .* -> 10\.96\.0\.10:80\n.*come from 10\.244\.0\.20\n\s+proxy saw: +nothing\n\s+=> direct/, ctx);
  assert.match(beforeFlip, /iptables nat rules in productpage's netns: 0/, ctx);
  assert.match(beforeFlip, /links: .*meshlane_connect4/, ctx);
  // after the annotation the VIP is direct, IPv6 still captured
  assert.match(afterFlip, /exclude-out=10\.96\.0\.0\/16/, ctx);
  assert.match(afterFlip, /app \(uid 1000\) -> 10\.96\.0\.10:80\n.*\n\s+proxy saw: +nothing\n\s+=> direct/, ctx);
  assert.match(afterFlip, /app \(uid 1000\) -> \[fd00:96::10\]:80\n.*\n\s+proxy saw: +listener 15001.*\n\s+=> captured/, ctx);
  assert.match(out, /\[6\/6\] cleanup/, ctx);
  const log = /^agent log: (\S+)/m.exec(out)?.[1];
  assert.ok(log && existsSync(log), `agent log kept${ctx}`);
  rmSync(log, { force: true });
  assert.doesNotMatch(out, /^\s*\{"/m, `no JSON noise on stdout${ctx}`);
  assert.deepEqual(leftovers(), [], 'leftovers after the demo');
});

test('meshlane demo interrupted with SIGINT after its first capture cleans up', { skip: skipUnless('root'), timeout: 150_000 }, async () => {
  assert.deepEqual(leftovers(), [], 'leftovers before the demo ran');
  const r = startDemo();
  const seen = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 60_000);
    const check = (): void => {
      if (/=> captured/.test(r.stdout())) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    r.child.stdout!.on('data', check);
    void r.exited.then(() => {
      clearTimeout(timer);
      resolve(/=> captured/.test(r.stdout()));
    });
  });
  const ctx = (): string => `\n--- stdout\n${r.stdout()}\n--- stderr\n${r.stderr()}`;
  assert.ok(seen, `no capture line within 60 s${ctx()}`);
  const t0 = Date.now();
  r.child.kill('SIGINT');
  const res = await exitWithin(r, 20_000);
  assert.ok(res, `demo still running 20 s after SIGINT${ctx()}`);
  assert.ok(res.signal === 'SIGINT' || res.code !== 0, `an interrupted demo must not report success (${JSON.stringify(res)})${ctx()}`);
  assert.match(r.stdout(), /interrupted \(SIGINT\): cleaning up/, ctx());
  const log = /agent log: (\S+)\)/.exec(r.stdout())?.[1];
  if (log) rmSync(log, { force: true });
  assert.deepEqual(leftovers(), [], `leftovers after SIGINT (exit after ${Date.now() - t0} ms)${ctx()}`);
});
