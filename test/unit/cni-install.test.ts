// meshlane cni install/uninstall on the filesystem, in directories this test makes (never /opt/cni or
// /etc/cni of this machine): which file is the primary network's, the entry inserted once, a .conf turned
// into a .conflist, configs that do not parse left alone, the watcher re-inserting after the primary CNI
// rewrites its file, and uninstall giving back exactly the other plugins.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniConfigWatcher, cniInstall, cniUninstall, findPrimaryConfig, withPlugin, withoutPlugin, type CniInstallReport } from '../../src/cni/install.js';
import { UserError } from '../../src/util/errors.js';

const SOCKET = '/var/run/meshlane/cni.sock';

// What the bridge + portmap setup of a kind / containerd node writes (10-containerd-net.conflist).
const BRIDGE_CONFLIST = {
  cniVersion: '1.0.0',
  name: 'containerd-net',
  plugins: [
    {
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      ipMasq: true,
      promiscMode: true,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.88.0.0/16' }], [{ subnet: '2001:4860:4860::/64' }]],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
      },
    },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

// A single-plugin config as flannel-era or hand-made setups have it.
const PTP_CONF = {
  cniVersion: '0.4.0',
  name: 'ptp-net',
  type: 'ptp',
  ipMasq: true,
  ipam: { type: 'host-local', subnet: '10.1.1.0/24' },
};

let root = '';
let source = '';
let n = 0;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'meshlane-cni-install-'));
  source = join(root, 'meshlane-cni.built');
  writeFileSync(source, '#!/bin/sh\n# stands in for the built executable\n');
});

after(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A fresh bin and conf directory pair. */
function dirs(files: Record<string, string | object> = {}): {
  bin: string;
  conf: string;
  opts: { binDir: string; confDir: string; socket: string; source: string };
} {
  const d = join(root, `case-${++n}`);
  const bin = join(d, 'bin');
  const conf = join(d, 'net.d');
  mkdirSync(bin, { recursive: true });
  mkdirSync(conf, { recursive: true });
  for (const [name, content] of Object.entries(files))
    writeFileSync(join(conf, name), typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return { bin, conf, opts: { binDir: bin, confDir: conf, socket: SOCKET, source } };
}

const readJson = (f: string): { plugins: Record<string, unknown>[] } & Record<string, unknown> =>
  JSON.parse(readFileSync(f, 'utf8')) as { plugins: Record<string, unknown>[] } & Record<string, unknown>;
const types = (f: string): unknown[] => readJson(f).plugins.map((p) => p.type);

function userError(fn: () => unknown, re: RegExp): string {
  let msg = '';
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `not a UserError: ${String(e)}`);
    msg = e.message;
    assert.match(e.message, re);
    assert.doesNotMatch(e.message, /\n/, 'one line');
    return true;
  });
  return msg;
}

test('a bridge conflist: our entry at the end of its plugins, the executable copied 0755, the file mode kept', () => {
  const { bin, conf, opts } = dirs({ '10-containerd-net.conflist': BRIDGE_CONFLIST });
  const file = join(conf, '10-containerd-net.conflist');
  chmodSync(file, 0o640);
  const r = cniInstall(opts);
  assert.equal(r.config.file, file);
  assert.ok(r.config.changed && r.binaryChanged);
  const doc = readJson(file);
  assert.deepEqual(doc.plugins.slice(0, 2), BRIDGE_CONFLIST.plugins, 'the other plugins unchanged');
  assert.deepEqual(doc.plugins[2], { type: 'meshlane-cni', socket: SOCKET });
  assert.equal(doc.name, 'containerd-net');
  assert.equal(doc.cniVersion, '1.0.0');
  assert.equal(statSync(file).mode & 0o777, 0o640);
  const exe = join(bin, 'meshlane-cni');
  assert.equal(statSync(exe).mode & 0o777, 0o755);
  assert.deepEqual(readFileSync(exe), readFileSync(source));
  // no temp file left where the runtime (or anyone) would look
  assert.deepEqual(readdirSync(conf), ['10-containerd-net.conflist']);
  assert.deepEqual(readdirSync(bin), ['meshlane-cni']);
});

test('installing twice changes nothing the second time; a new socket updates the entry in place', () => {
  const { conf, opts } = dirs({ '10-containerd-net.conflist': BRIDGE_CONFLIST });
  const file = join(conf, '10-containerd-net.conflist');
  cniInstall(opts);
  const first = readFileSync(file, 'utf8');
  const again = cniInstall(opts);
  assert.equal(again.config.changed, false);
  assert.equal(again.binaryChanged, false);
  assert.equal(readFileSync(file, 'utf8'), first);
  cniInstall({ ...opts, socket: '/run/other/cni.sock' });
  const doc = readJson(file);
  assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni'], 'never twice');
  assert.equal(doc.plugins[2]!.socket, '/run/other/cni.sock');
});

test('an entry of ours that is not last keeps its place and its other fields (no fight with istio-cni appending after us)', () => {
  const list = {
    ...BRIDGE_CONFLIST,
    plugins: [...BRIDGE_CONFLIST.plugins, { type: 'meshlane-cni', socket: '/old.sock', timeoutSeconds: 40 }, { type: 'istio-cni' }],
  };
  const { conf, opts } = dirs({ '10-containerd-net.conflist': list });
  const file = join(conf, '10-containerd-net.conflist');
  cniInstall(opts);
  const doc = readJson(file);
  assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni', 'istio-cni']);
  assert.deepEqual(doc.plugins[2], { type: 'meshlane-cni', socket: SOCKET, timeoutSeconds: 40 });
  // two entries of ours (a hand edit): one stays
  const twice = withPlugin({ plugins: [{ type: 'bridge' }, { type: 'meshlane-cni', socket: SOCKET }, { type: 'meshlane-cni', socket: SOCKET }] }, SOCKET);
  assert.ok(twice.changed);
  assert.deepEqual(twice.list.plugins, [{ type: 'bridge' }, { type: 'meshlane-cni', socket: SOCKET }]);
});

test('a plain .conf becomes a .conflist (as libcni reads it), the .conf goes', () => {
  const { conf, opts } = dirs({ '10-ptp.conf': PTP_CONF });
  const r = cniInstall(opts);
  const file = join(conf, '10-ptp.conflist');
  assert.equal(r.config.file, file);
  assert.equal(r.config.convertedFrom, join(conf, '10-ptp.conf'));
  assert.deepEqual(readdirSync(conf), ['10-ptp.conflist']);
  assert.deepEqual(readJson(file), { cniVersion: '0.4.0', name: 'ptp-net', plugins: [PTP_CONF, { type: 'meshlane-cni', socket: SOCKET }] });
  // and from now on it is an ordinary conflist
  assert.equal(cniInstall(opts).config.changed, false);
});

test('the primary config is the lexically first .conf/.conflist/.json; other files are not looked at', () => {
  const { conf, opts } = dirs({
    '20-second.conflist': BRIDGE_CONFLIST,
    '10-first.json': PTP_CONF,
    '05-notes.txt': 'not a config',
    '00-backup.conflist.bak': 'nor this',
  });
  mkdirSync(join(conf, '01-dir.conflist'));
  assert.equal(findPrimaryConfig(conf), join(conf, '10-first.json'));
  const r = cniInstall(opts);
  assert.equal(r.config.file, join(conf, '10-first.conflist'));
  assert.deepEqual(types(join(conf, '10-first.conflist')), ['ptp', 'meshlane-cni']);
  assert.deepEqual(readJson(join(conf, '20-second.conflist')), BRIDGE_CONFLIST, 'the second network is not touched');
  assert.ok(!existsSync(join(conf, '10-first.json')));
});

test('a symlinked conflist is written through the link (the link stays)', () => {
  const { conf, opts } = dirs();
  const real = join(conf, '..', 'calico.conflist');
  writeFileSync(real, JSON.stringify(BRIDGE_CONFLIST));
  symlinkSync(real, join(conf, '10-calico.conflist'));
  cniInstall(opts);
  assert.deepEqual(types(real), ['bridge', 'portmap', 'meshlane-cni']);
  assert.equal(readFileSync(join(conf, '10-calico.conflist'), 'utf8'), readFileSync(real, 'utf8'));
});

test('no config at all: a one-line error, nothing installed', () => {
  const { bin, opts } = dirs({ README: 'x' });
  userError(() => cniInstall(opts), /no CNI network config .* in .*net\.d: install the primary CNI first, or pass --cni-conf-dir/);
  assert.deepEqual(readdirSync(bin), []);
  userError(() => cniInstall({ ...opts, confDir: join(root, 'nope') }), /does not exist/);
});

test('a primary config that does not parse is never overwritten, and nothing is installed', () => {
  const cases: Record<string, string> = {
    '10-broken.conflist': '{"cniVersion": "1.0.0", "plugins": [ {"type": "bridge"',
    '10-noplugins.conflist': '{"cniVersion": "1.0.0", "name": "x"}',
    '10-emptyplugins.conflist': '{"cniVersion": "1.0.0", "name": "x", "plugins": []}',
    '10-array.conflist': '[1,2]',
    '10-notype.conf': JSON.stringify(BRIDGE_CONFLIST), // a conflist in a .conf file
  };
  for (const [name, text] of Object.entries(cases)) {
    const { bin, conf, opts } = dirs({ [name]: text, '20-good.conflist': BRIDGE_CONFLIST });
    userError(() => cniInstall(opts), new RegExp(`${name.replace('.', '\\.')} .*: fix or remove it; meshlane does not overwrite`));
    assert.equal(readFileSync(join(conf, name), 'utf8'), text, name);
    assert.deepEqual(readJson(join(conf, '20-good.conflist')), BRIDGE_CONFLIST, `${name}: the runtime would not use the second file, nor do we`);
    assert.deepEqual(readdirSync(bin), [], name);
  }
});

test('the built executable missing: says how to build it', () => {
  const { opts } = dirs({ '10-containerd-net.conflist': BRIDGE_CONFLIST });
  userError(() => cniInstall({ ...opts, source: join(root, 'not-built') }), /scripts\/setup\.sh/);
});

test('a bin dir that is not a directory', () => {
  const { opts } = dirs({ '10-containerd-net.conflist': BRIDGE_CONFLIST });
  userError(() => cniInstall({ ...opts, binDir: source }), /is not a directory: pass --cni-bin-dir/);
});

test('uninstall takes out our entry (and only ours) from every config, and the executable', () => {
  const withIstio = { ...BRIDGE_CONFLIST, plugins: [...BRIDGE_CONFLIST.plugins, { type: 'istio-cni', log_level: 'info' }] };
  const { bin, conf, opts } = dirs({ '10-containerd-net.conflist': withIstio });
  cniInstall(opts);
  // a file that was the primary before (ours in it too), and one that does not parse
  writeFileSync(join(conf, '30-old.conflist'), JSON.stringify({ cniVersion: '0.4.0', name: 'old', plugins: [{ type: 'ptp' }, { type: 'meshlane-cni' }] }));
  writeFileSync(join(conf, '05-broken.json'), '{');
  const r = cniUninstall({ binDir: bin, confDir: conf });
  assert.deepEqual(r.configs.sort(), [join(conf, '10-containerd-net.conflist'), join(conf, '30-old.conflist')]);
  assert.ok(r.binaryRemoved);
  assert.deepEqual(readJson(join(conf, '10-containerd-net.conflist')), withIstio, 'exactly the other plugins, in order');
  assert.deepEqual(types(join(conf, '30-old.conflist')), ['ptp']);
  assert.equal(readFileSync(join(conf, '05-broken.json'), 'utf8'), '{', 'a broken file is not touched');
  assert.deepEqual(readdirSync(bin), []);
  // again: nothing to do
  assert.deepEqual(cniUninstall({ binDir: bin, confDir: conf }), { configs: [], binaryRemoved: false });
  // directories that do not exist: nothing to do either
  assert.deepEqual(cniUninstall({ binDir: join(root, 'nope-bin'), confDir: join(root, 'nope-conf') }), { configs: [], binaryRemoved: false });
});

test('withoutPlugin with nothing of ours changes nothing', () => {
  const list = { plugins: [{ type: 'bridge' }] };
  assert.deepEqual(withoutPlugin(list), { list, changed: false });
});

/** The watcher's next write (or a failure after a bounded wait for it). */
function nextInstall(reports: CniInstallReport[], count: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 15_000;
    const poll = (): void => {
      if (reports.length >= count) return resolve();
      if (Date.now() > deadline) return reject(new Error(`the watcher did not ${what}`));
      setTimeout(poll, 20);
    };
    poll();
  });
}

test('the watcher re-inserts the entry when the primary CNI rewrites its file (temp + rename, as installers do)', async () => {
  const { conf, opts } = dirs({ '10-containerd-net.conflist': BRIDGE_CONFLIST });
  const file = join(conf, '10-containerd-net.conflist');
  const reports: CniInstallReport[] = [];
  // a long recheck: the directory events must do it
  const w = new CniConfigWatcher({ ...opts, recheckMs: 600_000, onInstalled: (r) => reports.push(r) });
  try {
    w.start();
    assert.equal(reports.length, 1);
    assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni']);
    // the primary CNI restarts and writes its own config again
    writeFileSync(join(conf, '.tmp-primary'), JSON.stringify(BRIDGE_CONFLIST));
    renameSync(join(conf, '.tmp-primary'), file);
    await nextInstall(reports, 2, 're-insert after a rename over the file');
    assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni']);
    // and once more, written in place
    writeFileSync(file, JSON.stringify(BRIDGE_CONFLIST));
    await nextInstall(reports, 3, 're-insert after an in-place write');
    assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni']);
    // our own writes do not make it write again
    assert.equal(w.check(), undefined);
  } finally {
    w.stop();
  }
});

test('the watcher waits for a primary config to appear, and for a broken one to be fixed; the periodic check alone finds them', async () => {
  const { conf, opts } = dirs();
  const file = join(conf, '10-containerd-net.conflist');
  const reports: CniInstallReport[] = [];
  const w = new CniConfigWatcher({ ...opts, recheckMs: 50, onInstalled: (r) => reports.push(r) });
  try {
    w.start();
    assert.equal(reports.length, 0);
    writeFileSync(file, '{"plugins": [');
    await new Promise((r) => setTimeout(r, 300)); // several checks see the broken file
    assert.equal(readFileSync(file, 'utf8'), '{"plugins": [', 'never overwritten');
    assert.equal(reports.length, 0);
    writeFileSync(file, JSON.stringify(BRIDGE_CONFLIST));
    await nextInstall(reports, 1, 'install once the config is fixed');
    assert.deepEqual(types(file), ['bridge', 'portmap', 'meshlane-cni']);
  } finally {
    w.stop();
  }
});
