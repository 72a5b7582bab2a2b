// `meshlane cni install|uninstall` and `meshlane uninstall --cni-*`, the real CLI as a subprocess, in
// directories this test makes (never /opt/cni or /etc/cni of this machine): what it prints, the one-line
// errors (no config, a config that does not parse, a bin dir uid 1000 may not write), `install --watch`
// putting the entry back when the primary CNI rewrites its file, and uninstall taking it out again.
// Root: setpriv. (test/unit/cni-install.test.ts covers the file logic case by case.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../support/harness.js';
import { builtPlugin } from '../../src/cni/install.js';

const UNPRIVILEGED = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups'];
const TIMEOUT_MS = 20_000;
const SOCKET = '/var/run/meshlane/cni.sock';

const BRIDGE = {
  cniVersion: '1.0.0',
  name: 'containerd-net',
  plugins: [
    {
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      ipMasq: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/16' }]], routes: [{ dst: '0.0.0.0/0' }] },
    },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

let tmp = '';
let n = 0;

before(() => {
  assert.ok(existsSync(builtPlugin()), `${builtPlugin()} is not built: run scripts/setup.sh`);
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-cni-cli-'));
  chmodSync(tmp, 0o755); // uid 1000 reads the conf dir, and is refused only by the bin dir
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function dirs(files: Record<string, string | object> = {}): { bin: string; conf: string; flags: string[] } {
  const d = join(tmp, `case-${++n}`);
  const bin = join(d, 'bin');
  const conf = join(d, 'net.d');
  mkdirSync(bin, { recursive: true, mode: 0o755 });
  mkdirSync(conf, { recursive: true, mode: 0o755 });
  for (const [name, c] of Object.entries(files)) writeFileSync(join(conf, name), typeof c === 'string' ? c : JSON.stringify(c, null, 2), { mode: 0o644 });
  return { bin, conf, flags: ['--cni-bin-dir', bin, '--cni-conf-dir', conf] };
}

type Run = SpawnSyncReturns<string>;
const cli = (...args: string[]): Run => spawnSync(process.execPath, [CLI(), ...args], { encoding: 'utf8', timeout: TIMEOUT_MS, killSignal: 'SIGKILL' });
const cliAs1000 = (...args: string[]): Run =>
  spawnSync(UNPRIVILEGED[0]!, [...UNPRIVILEGED.slice(1), process.execPath, CLI(), ...args], { encoding: 'utf8', timeout: TIMEOUT_MS, killSignal: 'SIGKILL' });
const show = (r: Run): string => `exit ${r.status} ${r.signal ?? ''}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
const types = (f: string): unknown[] => (JSON.parse(readFileSync(f, 'utf8')) as { plugins: { type: unknown }[] }).plugins.map((p) => p.type);

/** The project rule: exit 2, one line `meshlane: <cause>: <fix>`, no stack. */
function oneLine(r: Run, re: RegExp): void {
  assert.equal(r.status, 2, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, show(r));
  assert.match(r.stderr, /^meshlane: [^\n]+\n$/, show(r));
  assert.match(r.stderr, re, show(r));
}

test('cni install: copies the executable, chains it in the bridge conflist, says so; twice changes nothing', () => {
  const { bin, conf, flags } = dirs({ '10-containerd-net.conflist': BRIDGE });
  const file = join(conf, '10-containerd-net.conflist');
  const r = cli('cni', 'install', ...flags);
  assert.equal(r.status, 0, show(r));
  assert.equal(r.stdout, `installed ${bin}/meshlane-cni\ninserted meshlane-cni (socket ${SOCKET}) into ${file}\n`);
  assert.deepEqual(readFileSync(join(bin, 'meshlane-cni')), readFileSync(builtPlugin()));
  assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni']);
  // the installed copy runs (static, no agent needed for VERSION)
  const v = spawnSync(join(bin, 'meshlane-cni'), { input: '{"cniVersion":"1.0.0"}', env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /"supportedVersions"/);
  const before = readFileSync(file, 'utf8');
  const again = cli('cni', 'install', ...flags);
  assert.equal(again.status, 0, show(again));
  assert.equal(again.stdout, `${bin}/meshlane-cni is up to date\n${file} already chains meshlane-cni (socket ${SOCKET})\n`);
  assert.equal(readFileSync(file, 'utf8'), before);
  // another socket: updated in place
  const moved = cli('cni', 'install', ...flags, '--cni-socket', '/run/meshlane-x/cni.sock');
  assert.equal(moved.status, 0, show(moved));
  const doc = JSON.parse(readFileSync(file, 'utf8')) as { plugins: { type: string; socket?: string }[] };
  assert.deepEqual(doc.plugins.slice(2), [{ type: 'meshlane-cni', socket: '/run/meshlane-x/cni.sock' }]);
});

test('cni install: a plain .conf is converted', () => {
  const { conf, flags } = dirs({ '10-ptp.conf': { cniVersion: '0.4.0', name: 'ptp', type: 'ptp', ipam: { type: 'host-local', subnet: '10.1.1.0/24' } } });
  const r = cli('cni', 'install', ...flags);
  assert.equal(r.status, 0, show(r));
  assert.match(r.stdout, /converted .*10-ptp\.conf into .*10-ptp\.conflist/);
  assert.deepEqual(readdirSync(conf), ['10-ptp.conflist']);
  assert.deepEqual(types(join(conf, '10-ptp.conflist')), ['ptp', 'meshlane-cni']);
});

test('cni install errors: no config, a config that does not parse (left as it is), a bin dir uid 1000 may not write', () => {
  const none = dirs();
  oneLine(
    cli('cni', 'install', ...none.flags),
    /^meshlane: no CNI network config \(\*\.conflist, \*\.conf, \*\.json\) in .*: install the primary CNI first, or pass --cni-conf-dir\n$/,
  );
  oneLine(cli('cni', 'install', '--cni-conf-dir', join(tmp, 'nowhere'), '--cni-bin-dir', none.bin), /does not exist/);

  const broken = dirs({ '10-containerd-net.conflist': '{"plugins": [{"type": "bridge"},' });
  oneLine(cli('cni', 'install', ...broken.flags), /10-containerd-net\.conflist is not valid JSON .*: fix or remove it; meshlane does not overwrite/);
  assert.equal(readFileSync(join(broken.conf, '10-containerd-net.conflist'), 'utf8'), '{"plugins": [{"type": "bridge"},');
  assert.deepEqual(readdirSync(broken.bin), []);

  const ro = dirs({ '10-containerd-net.conflist': BRIDGE });
  oneLine(cliAs1000('cni', 'install', ...ro.flags), /cannot write meshlane-cni in .*bin \(EACCES\): run as root, or pass a writable --cni-bin-dir/);
  assert.deepEqual(readdirSync(ro.bin), []);
  assert.deepEqual(
    types(join(ro.conf, '10-containerd-net.conflist')),
    ['bridge', 'portmap'],
    'the config is not touched when the executable cannot be installed',
  );

  oneLine(cli('cni', 'install', '--bogus'), /unknown option '--bogus'/);
});

test('cni install --watch: puts the entry back each time the primary CNI rewrites its file; stops on SIGTERM', async () => {
  const { conf, flags } = dirs({ '10-containerd-net.conflist': BRIDGE });
  const file = join(conf, '10-containerd-net.conflist');
  const p = spawn(process.execPath, [CLI(), 'cni', 'install', '--watch', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 300; i++) {
      if (ok()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(`${what}; watcher log:\n${stderr}`);
  };
  const chained = (): boolean => {
    try {
      return JSON.stringify(types(file)) === JSON.stringify(['bridge', 'portmap', 'meshlane-cni']);
    } catch {
      return false; // between the primary's write and ours
    }
  };
  try {
    await until('not installed at start', chained);
    for (let i = 0; i < 3; i++) {
      // the primary CNI's installer writes its config again (temp file + rename), without us
      writeFileSync(join(conf, '.primary.tmp'), JSON.stringify(BRIDGE));
      renameSync(join(conf, '.primary.tmp'), file);
      await until(`not re-inserted after rewrite ${i + 1}`, chained);
    }
  } finally {
    p.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /meshlane-cni \(re\)installed/);
});

test('cni uninstall and meshlane uninstall --cni-*: take out our entry and the executable, the rest exactly as it was', () => {
  for (const how of ['cni uninstall', 'uninstall']) {
    const withIstio = { ...BRIDGE, plugins: [...BRIDGE.plugins, { type: 'istio-cni', log_level: 'info' }] };
    const { bin, conf, flags } = dirs({ '10-containerd-net.conflist': withIstio });
    const file = join(conf, '10-containerd-net.conflist');
    assert.equal(cli('cni', 'install', ...flags).status, 0);
    assert.deepEqual(types(file), ['bridge', 'portmap', 'istio-cni', 'meshlane-cni']);
    const r = how === 'uninstall' ? cli('uninstall', '--bpffs', join(tmp, 'no-bpffs-here'), ...flags) : cli('cni', 'uninstall', ...flags);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, new RegExp(`removed meshlane-cni from ${file}\nremoved ${bin}/meshlane-cni\n`));
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), withIstio, how);
    assert.deepEqual(readdirSync(bin), []);
    if (how === 'uninstall') assert.match(r.stdout, /nothing pinned under/);
  }
  // without a --cni-* flag, meshlane uninstall leaves the CNI alone
  const { bin, conf, flags } = dirs({ '10-containerd-net.conflist': BRIDGE });
  assert.equal(cli('cni', 'install', ...flags).status, 0);
  const r = cli('uninstall', '--bpffs', join(tmp, 'no-bpffs-here'));
  assert.equal(r.status, 0, show(r));
  assert.deepEqual(types(join(conf, '10-containerd-net.conflist')), ['bridge', 'portmap', 'meshlane-cni']);
  assert.deepEqual(readdirSync(bin), ['meshlane-cni']);
});
