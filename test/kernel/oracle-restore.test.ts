// The oracle's rules are real: iptables-restore / ip6tables-restore accept them inside a test network
// namespace, and iptables-save lists them back. Needs root, `ip`, iptables (nft backend by default).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

import type { CaptureSettings, Cidr } from '../../src/model/types.js';
import { applyIstioRules, flushIstioRules, saveTable } from '../oracle/apply.js';
import { defaultSettings } from '../oracle/defaults.js';
import { istioIptablesRules, restoreLines, type IstioRulesOptions } from '../oracle/istio-iptables.js';
import { skipUnless } from '../support/features.js';

const execFileP = promisify(execFile);

function cidr(text: string): Cidr {
  const [addr, prefix] = text.split('/');
  if (addr === undefined || prefix === undefined) throw new Error(`bad cidr ${text}`);
  return { family: addr.includes(':') ? 6 : 4, addr, prefix: Number(prefix) };
}

const skip = skipUnless('root'); // ip netns, iptables

const cases: { name: string; settings: CaptureSettings; opts?: IstioRulesOptions }[] = [
  { name: 'default', settings: defaultSettings() },
  {
    name: 'DNS on, resolv.conf servers',
    settings: { ...defaultSettings(), dns: { enabled: true, captureAll: false } },
    opts: { dnsServersV4: ['10.96.0.10'], dnsServersV6: ['fd00::a'] },
  },
  { name: 'DNS on, capture all', settings: { ...defaultSettings(), dns: { enabled: true, captureAll: true } } },
  {
    name: 'include CIDRs with a loopback one, exclude CIDRs, ports',
    settings: {
      ...defaultSettings(),
      outboundInclude: { all: false, cidrs: [cidr('127.1.2.3/32'), cidr('10.96.0.0/12'), cidr('fd00::/8')] },
      outboundExclude: [cidr('10.0.0.0/8'), cidr('fd00:1::/32')],
      includeOutboundPorts: [3306],
      excludeOutboundPorts: [5555, 6666],
    },
  },
  {
    name: 'multiple uids/gids with DNS',
    settings: { ...defaultSettings(), proxyUids: [3, 4], proxyGids: [1, 2], dns: { enabled: true, captureAll: false } },
    opts: { dnsServersV4: ['127.0.0.53'], dnsServersV6: ['::127.0.0.53'] },
  },
  {
    name: 'include inbound list, interfaces',
    settings: {
      ...defaultSettings(),
      inboundPorts: { mode: 'list', include: [8080, 9090] },
      excludeInterfaces: ['ex0'],
      rerouteInterfaces: ['eth1', 'eth2'],
    },
  },
  {
    name: 'no inbound, no outbound',
    settings: { ...defaultSettings(), inboundPorts: { mode: 'list', include: [] }, outboundInclude: { all: false, cidrs: [] } },
  },
];

async function ip(...args: string[]): Promise<void> {
  await execFileP('ip', args);
}

/** Rule lines (`-A ...`) of an iptables-save table dump. */
function savedRules(save: string): string[] {
  return save.split('\n').filter((l) => l.startsWith('-A '));
}

for (const c of cases) {
  test(`oracle rules load into a netns: ${c.name}`, { skip }, async (t) => {
    const ns = `ml-oracle-${randomBytes(4).toString('hex')}`;
    await ip('netns', 'add', ns);
    t.after(async () => {
      await ip('netns', 'del', ns).catch(() => undefined);
    });

    const rules = istioIptablesRules(c.settings, { ...c.opts, rawTable: true });
    await applyIstioRules(ns, rules);

    for (const family of [4, 6] as const) {
      const text = family === 4 ? rules.v4 : rules.v6;
      const nat = await saveTable(ns, family, 'nat');
      assert.match(nat, /^:ISTIO_OUTPUT /m, `IPv${family} nat lists ISTIO_OUTPUT`);
      for (const chain of ['ISTIO_INBOUND', 'ISTIO_REDIRECT', 'ISTIO_IN_REDIRECT']) {
        assert.match(nat, new RegExp(`^:${chain} `, 'm'), `IPv${family} nat lists ${chain}`);
      }
      const want = restoreLines(text, 'nat').filter((l) => !l.startsWith('-N '));
      assert.equal(savedRules(nat).length, want.length, `IPv${family} nat rule count\n${nat}`);
      // Inserted rules (-I PREROUTING 1) end up first in PREROUTING, in reverse order of insertion.
      const inserted = want.filter((l) => l.startsWith('-I PREROUTING 1 ')).map((l) => l.slice('-I PREROUTING 1 '.length));
      if (inserted.length > 0) {
        const prerouting = savedRules(nat).filter((l) => l.startsWith('-A PREROUTING '));
        const firstIfaces = prerouting.slice(0, inserted.length).map((l) => /-i (\S+)/.exec(l)?.[1]);
        assert.deepEqual(
          firstIfaces,
          inserted.reverse().map((l) => /-i (\S+)/.exec(l)?.[1]),
        );
      }
      const wantRaw = restoreLines(text, 'raw');
      if (wantRaw.length > 0) {
        assert.equal(savedRules(await saveTable(ns, family, 'raw')).length, wantRaw.length, `IPv${family} raw rule count`);
      }
    }

    if (c.settings.dns.enabled || c.settings.excludeOutboundPorts.length > 0) {
      // spot-check one rule's semantics survived the round trip
      const nat4 = await saveTable(ns, 4, 'nat');
      assert.match(nat4, /-A ISTIO_OUTPUT .*-o lo -s 127\.0\.0\.6\/32 .*-j RETURN|-A ISTIO_OUTPUT -s 127\.0\.0\.6\/32 -o lo .*-j RETURN/);
    }
    if (rules.v6 !== '') {
      const { stdout } = await execFileP('ip', ['netns', 'exec', ns, 'ip', '-6', 'addr', 'show', 'dev', 'lo']);
      assert.match(stdout, /inet6 ::6\/128/, '::6 added to lo, as istio-iptables does');
    }

    await flushIstioRules(ns);
    for (const family of [4, 6] as const) {
      const nat = await saveTable(ns, family, 'nat');
      assert.doesNotMatch(nat, /ISTIO_/, `IPv${family} nat flushed`);
      assert.equal(savedRules(await saveTable(ns, family, 'raw')).length, 0, `IPv${family} raw flushed`);
    }
  });
}
