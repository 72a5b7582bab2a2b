// Test oracle: a TypeScript port of the rule generation of Istio's `istio-iptables` (REDIRECT mode, the
// nat table, plus optionally the raw-table conntrack-zone rules of DNS capture), so tests can load the
// real rules into a test network namespace and compare meshlane's decisions with them.
//
// Ported from istio/istio tag 1.22.0 (behaviour identical since 1.19.0; the 1.19 -> 1.22 diff of these
// files is a refactor plus the ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR knob, default 127.0.0.1/32):
//   - tools/istio-iptables/pkg/capture/run.go      (IptablesConfigurator.Run, handleInboundPortsInclude,
//     handleOutboundIncludeRules, shortCircuit*, handleOutboundPortsInclude, handleCaptureByOwnerGroup,
//     HandleDNSUDP, addConntrackZoneDNSUDP, separateV4V6)
//   - tools/istio-iptables/pkg/builder/iptables_builder_impl.go (append/insert, AppendVersionedRule,
//     buildRestore: `-N` lines for non-built-in chains in first-use order, then rules in call order)
//   - tools/istio-iptables/pkg/constants/constants.go, pkg/config/{config,types}.go (defaults, Split)
// Istio is Apache-2.0; this is a re-implementation of its logic, not a copy of its code.
//
// Expected output checked against tools/istio-iptables/pkg/capture/testdata/*.golden and
// cni/pkg/plugin/testdata/*.txt.golden of 1.22.0 (see test/unit/oracle.test.ts).
//
// Things that are Istio's behaviour (and differ from, or sharpen, /work/shared/capture-spec.md):
//  * The per-gid "proxy calls its own pod IP" rule (-> ISTIO_IN_REDIRECT) never excludes TCP port 53,
//    even with DNS capture on; only the per-uid rule uses `-m multiport ! --dports 53,<tunnel>`.
//    (Spec 3.4a says "nor 53 with DNS on" for both.)
//  * excludeOutboundPorts is written only as `-p tcp --dport P -j RETURN` in ISTIO_OUTPUT (which only TCP
//    reaches). The UDP DNS rules in nat OUTPUT ignore it: with DNS on and 53 in excludeOutboundPorts,
//    UDP :53 to a resolv.conf server (or any, with capture-all) is still redirected to 15053.
//    (Spec 1 / 3.2 say "TCP+UDP ports never captured".)
//  * "Loopback in include ranges" is decided per prefix *as written* (netip.Prefix.Addr().IsLoopback())
//    and across families: a loopback v4 CIDR also removes the `-o lo ... ! --uid-owner/! --gid-owner
//    -j RETURN` rules from the IPv6 rules, and vice versa. 0.0.0.0/0 does not count as loopback.
//    meshlane's Cidr is normalised (host bits cleared), so for a non-canonical input such as
//    127.1.2.3/1 Istio would see "loopback" and we see 0.0.0.0/1 (not loopback).
//  * The 127.0.0.1 checks (3.4a and 3.6) are an exact /32 (HostIPv4LoopbackCidr): the proxy calling
//    127.0.0.2:8080 over lo IS sent to 15006; an app calling 127.0.0.2 returns only via the
//    "-o lo ! --uid-owner" rule (so with a loopback include CIDR, 127.0.0.2 goes on to 3.7-3.9).
//  * Reroute (kubevirt) interfaces: `-I PREROUTING 1 -i X -j RETURN` first, later `-I PREROUTING 1
//    -i X [-d C] -j ISTIO_REDIRECT`, so the redirect rules end up before the RETURN, in reverse order.
//    With no outbound include (empty -i) traffic on them is only RETURNed; with only v4 include CIDRs,
//    v6 traffic on them is RETURNed. Reroute rules sit before the excludeInterfaces rules.
//  * The DNS listener port is a constant 15053 in Istio (constants.IstioAgentDNSListenerPort); this port
//    uses s.dnsPort so that a non-default value is meshlane's extension, not Istio's.
//  * DNS: UDP rules live in nat OUTPUT (not in ISTIO_OUTPUT): per-uid / per-gid `--dport 53 RETURN`,
//    then `REDIRECT --to-port 15053` for each resolv.conf server (or for all with capture-all). They come
//    after every TCP rule and ignore `-o lo`, 127.0.0.6, exclude CIDRs and excludeOutboundPorts.
//    istio-init reads the servers from /etc/resolv.conf (capture-all off unless asked); the istio-cni
//    plugin always sets CaptureAllDNS = RedirectDNS.
//  * istio-cni (not istio-init) adds `-o 15020` (excludeOutboundPorts defaults to the status port) and
//    always appends 15020,15021,15090 to the inbound exclusions (order 15020,15021,15090); istio-init's
//    injection template passes `-d 15090,15021,<status port>` and no `-o` unless annotated.
//  * IPv6 rules are written only when istio-iptables sees an IPv6 pod address (EnableInboundIPv6; with
//    --dual-stack off it looks at the first non-loopback address only). This function always returns
//    both; the caller decides whether the v6 half applies. istio-iptables also adds ::6/128 to lo for v6
//    (see apply.ts).
//  * TPROXY is not ported (mangle table): it throws. Interception mode NONE means the injector writes no
//    istio-init container at all, so we return empty rule sets.
//  * Istio's "owner groups" filter (ISTIO_OUTBOUND_OWNER_GROUPS, default "*") has no CaptureSettings knob;
//    its default writes no rules, so it is omitted. DROP_INVALID (mangle) is likewise omitted.

import type { CaptureSettings, Cidr, Family } from '../../src/model/types.js';

export interface IstioRulesOptions {
  /** nameservers of the pod's /etc/resolv.conf (used when DNS is on and capture-all is off) */
  dnsServersV4?: string[];
  dnsServersV6?: string[];
  /** also emit the `*raw` table (DNS conntrack zones) after the nat table; default false */
  rawTable?: boolean;
}

export interface IstioRules {
  v4: string;
  v6: string;
}

type Table = 'nat' | 'raw';

interface Rule {
  table: Table;
  chain: string;
  /** rule text without the table, e.g. `-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN` */
  params: string[];
}

const BUILT_IN = new Set(['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING']);

const ISTIO_OUTPUT = 'ISTIO_OUTPUT';
const ISTIO_INBOUND = 'ISTIO_INBOUND';
const ISTIO_REDIRECT = 'ISTIO_REDIRECT';
const ISTIO_IN_REDIRECT = 'ISTIO_IN_REDIRECT';

/** Per-family values that Istio substitutes via AppendVersionedRule / separate V4/V6 calls. */
interface FamilyConsts {
  family: Family;
  /** HostIPv4LoopbackCidr default / "::1/128" */
  loopback: string;
  /** "127.0.0.6/32" / "::6/128": source of the proxy's inbound passthrough connections */
  inboundPassthroughSrc: string;
  /** host prefix length for DNS servers (s+"/32" / s+"/128") */
  hostBits: number;
}

const V4: FamilyConsts = { family: 4, loopback: '127.0.0.1/32', inboundPassthroughSrc: '127.0.0.6/32', hostBits: 32 };
const V6: FamilyConsts = { family: 6, loopback: '::1/128', inboundPassthroughSrc: '::6/128', hostBits: 128 };

interface NetworkRange {
  isWildcard: boolean;
  cidrs: string[];
  hasLoopbackIP: boolean;
}

function cidrText(c: Cidr): string {
  return `${c.addr}/${c.prefix}`;
}

/** netip.Addr.IsLoopback of the prefix's address (v4: 127/8; v6: ::1, or an IPv4-mapped 127/8). */
function isLoopbackAddr(c: Cidr): boolean {
  if (c.family === 4) return c.addr.split('.')[0] === '127';
  const a = c.addr.toLowerCase();
  return a === '::1' || /^::ffff:127\./.test(a);
}

/** separateV4V6 for the include list (`*` is wildcard for both families). */
function separateInclude(s: CaptureSettings, fam: Family): NetworkRange {
  if (s.outboundInclude.all) return { isWildcard: true, cidrs: [], hasLoopbackIP: false };
  const mine = s.outboundInclude.cidrs.filter((c) => c.family === fam);
  return { isWildcard: false, cidrs: mine.map(cidrText), hasLoopbackIP: mine.some(isLoopbackAddr) };
}

/** Generates the rule list for one family, in the exact call order of IptablesConfigurator.Run. */
function buildFamily(s: CaptureSettings, opts: IstioRulesOptions, f: FamilyConsts): Rule[] {
  const rules: Rule[] = [];
  const A = (table: Table, chain: string, ...p: (string | number)[]): void => {
    rules.push({ table, chain, params: ['-A', chain, ...p.map(String)] });
  };
  const I = (table: Table, chain: string, pos: number, ...p: (string | number)[]): void => {
    rules.push({ table, chain, params: ['-I', chain, String(pos), ...p.map(String)] });
  };

  const redirectDNS = s.dns.enabled;
  const dnsPort = s.dnsPort; // Istio: constant 15053
  const tunnel = s.inboundTunnelPort;
  const uids = s.proxyUids;
  const gids = s.proxyGids;
  const kubevirt = s.rerouteInterfaces;
  const excludeV = s.outboundExclude.filter((c) => c.family === f.family).map(cidrText);
  const includeV4 = separateInclude(s, 4);
  const includeV6 = separateInclude(s, 6);
  const includeMine = f.family === 4 ? includeV4 : includeV6;
  // Evaluated over both families, as Istio does.
  const includeHasLoopback = includeV4.hasLoopbackIP || includeV6.hasLoopbackIP;
  const dnsServers = (f.family === 4 ? opts.dnsServersV4 : opts.dnsServersV6) ?? [];

  // shortCircuitExcludeInterfaces
  for (const ifc of s.excludeInterfaces) {
    A('nat', 'PREROUTING', '-i', ifc, '-j', 'RETURN');
    A('nat', 'OUTPUT', '-o', ifc, '-j', 'RETURN');
  }
  // shortCircuitKubeInternalInterface
  for (const ifc of kubevirt) I('nat', 'PREROUTING', 1, '-i', ifc, '-j', 'RETURN');

  // Tunnel port bypass, then the two redirect chains.
  A('nat', ISTIO_INBOUND, '-p', 'tcp', '--dport', tunnel, '-j', 'RETURN');
  A('nat', ISTIO_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', s.outboundPort);
  A('nat', ISTIO_IN_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', s.inboundPort);

  // handleInboundPortsInclude (REDIRECT mode): "" -> nothing; "*" -> exclusions then redirect all;
  // a list -> redirect only those ports (exclusions are ignored).
  const inb = s.inboundPorts;
  const inboundOn = inb.mode === 'all' || inb.include.length > 0;
  if (inboundOn) {
    A('nat', 'PREROUTING', '-p', 'tcp', '-j', ISTIO_INBOUND);
    if (inb.mode === 'all') {
      for (const p of inb.exclude) A('nat', ISTIO_INBOUND, '-p', 'tcp', '--dport', p, '-j', 'RETURN');
      A('nat', ISTIO_INBOUND, '-p', 'tcp', '-j', ISTIO_IN_REDIRECT);
    } else {
      for (const p of inb.include) A('nat', ISTIO_INBOUND, '-p', 'tcp', '--dport', p, '-j', ISTIO_IN_REDIRECT);
    }
  }

  // Outbound: only TCP enters ISTIO_OUTPUT.
  A('nat', 'OUTPUT', '-p', 'tcp', '-j', ISTIO_OUTPUT);
  for (const p of s.excludeOutboundPorts) A('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', p, '-j', 'RETURN');
  A('nat', ISTIO_OUTPUT, '-o', 'lo', '-s', f.inboundPassthroughSrc, '-j', 'RETURN');

  for (const uid of uids) {
    if (redirectDNS) {
      A(
        'nat',
        ISTIO_OUTPUT,
        '-o',
        'lo',
        '!',
        '-d',
        f.loopback,
        '-p',
        'tcp',
        '-m',
        'multiport',
        '!',
        '--dports',
        `53,${tunnel}`,
        '-m',
        'owner',
        '--uid-owner',
        uid,
        '-j',
        ISTIO_IN_REDIRECT,
      );
    } else {
      A(
        'nat',
        ISTIO_OUTPUT,
        '-o',
        'lo',
        '!',
        '-d',
        f.loopback,
        '-p',
        'tcp',
        '!',
        '--dport',
        tunnel,
        '-m',
        'owner',
        '--uid-owner',
        uid,
        '-j',
        ISTIO_IN_REDIRECT,
      );
    }
    if (!includeHasLoopback) {
      if (redirectDNS) {
        A('nat', ISTIO_OUTPUT, '-o', 'lo', '-p', 'tcp', '!', '--dport', 53, '-m', 'owner', '!', '--uid-owner', uid, '-j', 'RETURN');
      } else {
        A('nat', ISTIO_OUTPUT, '-o', 'lo', '-m', 'owner', '!', '--uid-owner', uid, '-j', 'RETURN');
      }
    }
    A('nat', ISTIO_OUTPUT, '-m', 'owner', '--uid-owner', uid, '-j', 'RETURN');
  }

  for (const gid of gids) {
    // NB: no DNS variant here (Istio excludes port 53 only in the uid rule).
    A('nat', ISTIO_OUTPUT, '-o', 'lo', '!', '-d', f.loopback, '-p', 'tcp', '!', '--dport', tunnel, '-m', 'owner', '--gid-owner', gid, '-j', ISTIO_IN_REDIRECT);
    if (!includeHasLoopback) {
      if (redirectDNS) {
        A('nat', ISTIO_OUTPUT, '-o', 'lo', '-p', 'tcp', '!', '--dport', 53, '-m', 'owner', '!', '--gid-owner', gid, '-j', 'RETURN');
      } else {
        A('nat', ISTIO_OUTPUT, '-o', 'lo', '-m', 'owner', '!', '--gid-owner', gid, '-j', 'RETURN');
      }
    }
    A('nat', ISTIO_OUTPUT, '-m', 'owner', '--gid-owner', gid, '-j', 'RETURN');
  }

  // handleCaptureByOwnerGroup: with the default ISTIO_OUTBOUND_OWNER_GROUPS="*" and no exclusions it
  // writes nothing.

  if (redirectDNS) {
    if (s.dns.captureAll) {
      A('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', 53, '-j', 'REDIRECT', '--to-ports', dnsPort);
    } else {
      for (const srv of dnsServers) {
        A('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', 53, '-d', `${srv}/${f.hostBits}`, '-j', 'REDIRECT', '--to-ports', dnsPort);
      }
    }
  }

  A('nat', ISTIO_OUTPUT, '-d', f.loopback, '-j', 'RETURN');
  for (const c of excludeV) A('nat', ISTIO_OUTPUT, '-d', c, '-j', 'RETURN');

  // handleOutboundPortsInclude
  for (const p of s.includeOutboundPorts) A('nat', ISTIO_OUTPUT, '-p', 'tcp', '--dport', p, '-j', ISTIO_REDIRECT);

  // handleOutboundIncludeRules (per family)
  if (includeMine.isWildcard) {
    A('nat', ISTIO_OUTPUT, '-j', ISTIO_REDIRECT);
    for (const ifc of kubevirt) I('nat', 'PREROUTING', 1, '-i', ifc, '-j', ISTIO_REDIRECT);
  } else if (includeMine.cidrs.length > 0) {
    for (const c of includeMine.cidrs) {
      for (const ifc of kubevirt) I('nat', 'PREROUTING', 1, '-i', ifc, '-d', c, '-j', ISTIO_REDIRECT);
      A('nat', ISTIO_OUTPUT, '-d', c, '-j', ISTIO_REDIRECT);
    }
    A('nat', ISTIO_OUTPUT, '-j', 'RETURN');
  }

  if (redirectDNS) dnsUdpRules(s, f, dnsServers, A);
  return rules;
}

/** HandleDNSUDP + addConntrackZoneDNSUDP (AppendOps). */
function dnsUdpRules(s: CaptureSettings, f: FamilyConsts, dnsServers: string[], A: (table: Table, chain: string, ...p: (string | number)[]) => void): void {
  const dnsPort = s.dnsPort;
  for (const uid of s.proxyUids) A('nat', 'OUTPUT', '-p', 'udp', '--dport', 53, '-m', 'owner', '--uid-owner', uid, '-j', 'RETURN');
  for (const gid of s.proxyGids) A('nat', 'OUTPUT', '-p', 'udp', '--dport', 53, '-m', 'owner', '--gid-owner', gid, '-j', 'RETURN');
  // owner-groups filter "*" with no exclusions: no rules.
  if (s.dns.captureAll) {
    A('nat', 'OUTPUT', '-p', 'udp', '--dport', 53, '-j', 'REDIRECT', '--to-port', dnsPort);
  } else {
    for (const srv of dnsServers) {
      A('nat', 'OUTPUT', '-p', 'udp', '--dport', 53, '-d', `${srv}/${f.hostBits}`, '-j', 'REDIRECT', '--to-port', dnsPort);
    }
  }

  // Conntrack zones (raw table). Note Istio uses the literal 15053 for --sport here too.
  for (const uid of s.proxyUids) {
    A('raw', 'OUTPUT', '-p', 'udp', '--dport', 53, '-m', 'owner', '--uid-owner', uid, '-j', 'CT', '--zone', 1);
    A('raw', 'OUTPUT', '-p', 'udp', '--sport', dnsPort, '-m', 'owner', '--uid-owner', uid, '-j', 'CT', '--zone', 2);
  }
  for (const gid of s.proxyGids) {
    A('raw', 'OUTPUT', '-p', 'udp', '--dport', 53, '-m', 'owner', '--gid-owner', gid, '-j', 'CT', '--zone', 1);
    A('raw', 'OUTPUT', '-p', 'udp', '--sport', dnsPort, '-m', 'owner', '--gid-owner', gid, '-j', 'CT', '--zone', 2);
  }
  if (s.dns.captureAll) {
    A('raw', 'OUTPUT', '-p', 'udp', '--dport', 53, '-j', 'CT', '--zone', 2);
    A('raw', 'PREROUTING', '-p', 'udp', '--sport', 53, '-j', 'CT', '--zone', 1);
  } else {
    for (const srv of dnsServers) {
      A('raw', 'OUTPUT', '-p', 'udp', '--dport', 53, '-d', `${srv}/${f.hostBits}`, '-j', 'CT', '--zone', 2);
      A('raw', 'PREROUTING', '-p', 'udp', '--sport', 53, '-s', `${srv}/${f.hostBits}`, '-j', 'CT', '--zone', 1);
    }
  }
}

/** buildRestore: per table, `-N` for each non-built-in chain in order of first use, then the rules. */
function toRestore(rules: Rule[], tables: Table[]): string {
  let out = '';
  for (const table of tables) {
    const mine = rules.filter((r) => r.table === table);
    if (mine.length === 0) continue;
    const lines: string[] = [];
    const seen = new Set<string>();
    for (const r of mine) {
      if (!BUILT_IN.has(r.chain) && !seen.has(r.chain)) {
        seen.add(r.chain);
        lines.push(`-N ${r.chain}`);
      }
    }
    for (const r of mine) lines.push(r.params.join(' '));
    out += `*${table}\n${lines.join('\n')}\nCOMMIT\n`;
  }
  return out;
}

function check(s: CaptureSettings): void {
  const ports = [
    s.outboundPort,
    s.inboundPort,
    s.inboundTunnelPort,
    s.dnsPort,
    ...s.includeOutboundPorts,
    ...s.excludeOutboundPorts,
    ...(s.inboundPorts.mode === 'all' ? s.inboundPorts.exclude : s.inboundPorts.include),
  ];
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new Error(`istio-iptables oracle: bad port ${p}`);
  }
  for (const id of [...s.proxyUids, ...s.proxyGids]) {
    if (!Number.isInteger(id) || id < 0) throw new Error(`istio-iptables oracle: bad uid/gid ${id}`);
  }
}

/**
 * iptables-restore input (`*nat` ... `COMMIT`, plus `*raw` when opts.rawTable and DNS is on) for IPv4 and
 * IPv6, exactly as istio-iptables (1.19-1.22, REDIRECT mode) would write it for these settings. Load with
 * `iptables-restore --noflush` / `ip6tables-restore --noflush` (what Istio does), e.g. via apply.ts.
 */
export function istioIptablesRules(s: CaptureSettings, opts: IstioRulesOptions = {}): IstioRules {
  if (s.interceptionMode === 'TPROXY') {
    throw new Error('istio-iptables oracle: TPROXY (mangle table) is not ported');
  }
  if (s.interceptionMode === 'NONE') return { v4: '', v6: '' };
  check(s);
  const tables: Table[] = opts.rawTable ? ['nat', 'raw'] : ['nat'];
  return {
    v4: toRestore(buildFamily(s, opts, V4), tables),
    v6: toRestore(buildFamily(s, opts, V6), tables),
  };
}

/** The rule lines (no `*table`/`COMMIT`) of one table of a restore text; handy for assertions. */
export function restoreLines(restore: string, table: Table = 'nat'): string[] {
  const out: string[] = [];
  let cur: string | null = null;
  for (const line of restore.split('\n')) {
    if (line.startsWith('*')) cur = line.slice(1).trim();
    else if (line === 'COMMIT') cur = null;
    else if (cur === table && line !== '') out.push(line);
  }
  return out;
}
