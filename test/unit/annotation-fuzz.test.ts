// A seeded fuzz of every capture annotation, judged against Istio's own validation rules
// (test/support/istio-validation.ts, a transcription of Istio's and Go's code): a value Istio rejects
// is an error for that annotation and leaves its setting at the default (never a wider bypass); a
// value Istio accepts is applied exactly as Istio applies it. Deterministic: the seed is fixed (set
// MESHLANE_FUZZ_SEED to explore others) and printed with every failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { ANNOTATIONS, parseCaptureSettings } from '../../src/model/annotations.js';
import { goIsSpace, goTrimSpace } from '../../src/model/go-strings.js';
import { parseIp } from '../../src/util/ip.js';
import type { CaptureSettings } from '../../src/model/types.js';
import {
  ANN,
  prefixKey,
  referenceSettings,
  sortedSet,
  strconvParseBool,
  stringsTrimSpace,
  unicodeIsSpace,
  validateInterceptionMode,
  type InterceptionMode,
  type RefSettings,
} from '../support/istio-validation.js';

const SEED = Number(process.env.MESHLANE_FUZZ_SEED ?? 0x1571c0);
const CASES = 20_000;

/** mulberry32: small, seedable, good enough to spread cases. */
function prng(seed: number): { int(n: number): number; chance(p: number): boolean; pick<T>(xs: readonly T[]): T } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    int: (n) => Math.floor(next() * n),
    chance: (p) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
  };
}

// ---- Go's white space --------------------------------------------------------------------------

test("goIsSpace is Go's unicode.IsSpace for every code unit; it differs from JavaScript only in U+FEFF and U+0085", () => {
  const onlyJs: number[] = [];
  const onlyGo: number[] = [];
  for (let c = 0; c <= 0xffff; c++) {
    assert.equal(goIsSpace(c), unicodeIsSpace(c), `U+${c.toString(16)}`);
    const js = /\s/.test(String.fromCharCode(c));
    if (js && !goIsSpace(c)) onlyJs.push(c);
    if (!js && goIsSpace(c)) onlyGo.push(c);
  }
  assert.deepEqual(onlyJs, [0xfeff], 'JavaScript trims the BOM, Go keeps it');
  assert.deepEqual(onlyGo, [0x85], 'Go trims NEL, JavaScript keeps it');
  const r = prng(SEED);
  const alphabet = [' ', '\t', '\u0085', '\u00a0', '\ufeff', '\u200b', '\u2028', '\u3000', 'a', '8', ',', '\ud83d\ude00', '\ud800'];
  for (let i = 0; i < 2000; i++) {
    const s = Array.from({ length: r.int(8) }, () => r.pick(alphabet)).join('');
    assert.equal(goTrimSpace(s), stringsTrimSpace(s), `seed ${SEED} case ${i}: ${JSON.stringify(s)}`);
  }
});

test("the issue's two cases: \\ufeff80 is not a port (no bypass), \\u008580 is port 80", () => {
  const bom = parseCaptureSettings({ metadata: { annotations: { [ANNOTATIONS.excludeOutboundPorts]: '\ufeff80' } } });
  assert.deepEqual(bom.settings.excludeOutboundPorts, []);
  assert.equal(bom.errors.length, 1);
  const nel = parseCaptureSettings({ metadata: { annotations: { [ANNOTATIONS.excludeOutboundPorts]: '\u008580,\u00a090\u3000' } } });
  assert.deepEqual(nel.settings.excludeOutboundPorts, [80, 90]);
  assert.deepEqual(nel.errors, []);
});

// ---- generators ----------------------------------------------------------------------------------

type R = ReturnType<typeof prng>;

const GO_SPACES = [
  ' ',
  '\t',
  '\n',
  '\v',
  '\f',
  '\r',
  '\u0085',
  '\u00a0',
  '\u1680',
  '\u2000',
  '\u2007',
  '\u200a',
  '\u2028',
  '\u2029',
  '\u202f',
  '\u205f',
  '\u3000',
];
const NOT_SPACES = ['\ufeff', '\u200b', '\u180e', '\u0000', '\u00ad', '\u2060'];

function pad(r: R, s: string): string {
  const side = (): string =>
    r.chance(0.25) ? Array.from({ length: 1 + r.int(2) }, () => (r.chance(0.7) ? r.pick(GO_SPACES) : r.pick(NOT_SPACES))).join('') : '';
  return side() + s + side();
}

function portItem(r: R): string {
  const n = r.pick([0, 1, 22, 53, 80, 443, 3306, 8080, 9090, 15006, 15008, 15020, 15021, 15090, 65535, r.int(65536)]);
  const s = r.pick([
    () => String(n),
    () => String(n),
    () => String(n),
    () => '0'.repeat(1 + r.int(25)) + String(n),
    () => r.pick(['65536', '99999', '100000', '1' + '0'.repeat(20), '9'.repeat(40), '18446744073709551616']),
    () => r.pick(['+', '-']) + String(n),
    () => r.pick(['0x50', '0o17', '0b1', '8_0', '80.0', '8e1', '80 80', '٨٠', '８０', 'abc', '*', '', 'NaN', 'Infinity']),
  ])();
  return pad(r, s);
}

function list(r: R, item: (r: R) => string, max: number): string {
  const items = Array.from({ length: r.int(max + 1) }, () => item(r));
  let s = items.join(r.chance(0.05) ? ',,' : ',');
  if (r.chance(0.05)) s = `,${s}`;
  if (r.chance(0.05)) s = `${s},`;
  return r.chance(0.1) ? pad(r, s) : s;
}

function octet(r: R): string {
  return r.pick([
    () => String(r.int(256)),
    () => String(r.int(256)),
    () => String(r.int(256)),
    () => '0' + String(r.int(256)),
    () => String(256 + r.int(800)),
    () => '',
  ])();
}

function v4(r: R): string {
  const parts = Array.from({ length: r.chance(0.9) ? 4 : r.pick([3, 5]) }, () => octet(r));
  return parts.join('.');
}

function group(r: R): string {
  const v = r.chance(0.4) ? 0 : r.int(0x10000);
  const s = v.toString(16);
  return r.pick([() => s, () => s, () => s.toUpperCase(), () => s.padStart(4, '0'), () => s.padStart(5, '0'), () => 'g1', () => ''])();
}

function v6(r: R): string {
  const n = 1 + r.int(8);
  const gs = Array.from({ length: n }, () => group(r));
  if (r.chance(0.15)) gs.splice(gs.length - (r.chance(0.5) ? 1 : 0), r.chance(0.5) ? 1 : 0, v4(r));
  let s: string;
  if (n === 8 && r.chance(0.5)) s = gs.join(':');
  else {
    const at = r.int(gs.length + 1);
    s = `${gs.slice(0, at).join(':')}::${gs.slice(at).join(':')}`;
  }
  if (r.chance(0.05)) s = s.replace('::', ':::');
  if (r.chance(0.05)) s += `%${r.pick(['eth0', '1', ''])}`;
  if (r.chance(0.03)) s = r.pick(['::', '::1', '::6', '::ffff:10.1.2.3', '1::2::3', ':1::', '1:2:3:4:5:6:7:8::']);
  return s;
}

function cidrItem(r: R): string {
  const six = r.chance(0.4);
  const addr = six ? v6(r) : v4(r);
  const max = six ? 128 : 32;
  const bits = r.pick([
    () => String(r.int(max + 1)),
    () => String(r.int(max + 1)),
    () => String(max + 1 + r.int(100)),
    () => '0' + String(r.int(max + 1)),
    () => '+' + String(r.int(max + 1)),
    () => '-1',
    () => '',
    () => '٨',
    () => '1'.repeat(30),
  ])();
  const s = r.pick([
    () => `${addr}/${bits}`,
    () => `${addr}/${bits}`,
    () => `${addr}/${bits}`,
    () => addr,
    () => `${addr}/${bits}/${bits}`,
    () => '*',
    () => '',
  ])();
  return r.chance(0.1) ? pad(r, s) : s;
}

function ifaceItem(r: R): string {
  return r.pick([
    () => r.pick(['eth0', 'eth1', 'net1', 'net1.100', 'a-b_c', 'tap0', 'lo', 'veth12345678901']),
    () => 'a'.repeat(14 + r.int(4)),
    () => r.pick(['0eth', 'eth+', 'eth*', 'éth0', 'eth 0', 'eth/0', '-eth', '.eth', '']),
    () => pad(r, 'eth0'),
  ])();
}

function mode(r: R): string {
  return pad(r, r.pick(['REDIRECT', 'TPROXY', 'NONE', 'redirect', 'Tproxy', 'none', '', 'REDIRECT,NONE', 'IPTABLES']));
}

const BOOLISH = [
  '1',
  't',
  'T',
  'true',
  'TRUE',
  'True',
  '0',
  'f',
  'F',
  'false',
  'FALSE',
  'False',
  'yes',
  'no',
  'tRue',
  ' true',
  'true ',
  '\ufefftrue',
  'on',
  '',
];

/** proxy.istio.io/config with the two fields that change capture (interceptionMode as a string). */
function proxyConfig(r: R): string {
  const lines: string[] = [];
  if (r.chance(0.6)) lines.push(`interceptionMode: ${JSON.stringify(r.pick(['REDIRECT', 'TPROXY', 'NONE', 'redirect', 'BOGUS', '']))}`);
  if (r.chance(0.8)) lines.push('proxyMetadata:', `  ISTIO_META_DNS_CAPTURE: ${JSON.stringify(r.pick(BOOLISH))}`);
  if (r.chance(0.05)) lines.push(r.pick(['proxyMetadata: 5', '[1, 2]', '{']));
  return lines.join('\n');
}

const PROXY_CONFIG = ANNOTATIONS.proxyConfig;

const GENERATORS: ReadonlyArray<[string, (r: R) => string]> = [
  [ANN.includeInboundPorts, (r) => (r.chance(0.1) ? r.pick(['*', ' *', '* ', '*,80']) : list(r, portItem, 4))],
  [ANN.excludeInboundPorts, (r) => list(r, portItem, 4)],
  [ANN.statusPort, portItem],
  [ANN.excludeOutboundPorts, (r) => list(r, portItem, 4)],
  [ANN.includeOutboundPorts, (r) => list(r, portItem, 4)],
  [ANN.includeOutboundIPRanges, (r) => (r.chance(0.1) ? r.pick(['*', ' *', '*,10.0.0.0/8']) : list(r, cidrItem, 3))],
  [ANN.excludeOutboundIPRanges, (r) => list(r, cidrItem, 3)],
  [ANN.excludeInterfaces, (r) => list(r, ifaceItem, 3)],
  [ANN.rerouteVirtualInterfaces, (r) => list(r, ifaceItem, 3)],
  [ANN.interceptionMode, mode],
  [PROXY_CONFIG, proxyConfig],
];

// ---- the judge -----------------------------------------------------------------------------------

/** meshlane's settings in the reference's comparable form. */
function comparable(s: CaptureSettings): RefSettings {
  const key = (c: { family: 4 | 6; addr: string; prefix: number }): string => prefixKey(c.family, parseIp(c.addr)!.bytes, c.prefix);
  return {
    inbound:
      s.inboundPorts.mode === 'all'
        ? { mode: 'all', exclude: sortedSet(s.inboundPorts.exclude) }
        : { mode: 'list', include: sortedSet(s.inboundPorts.include) },
    outboundInclude: { all: s.outboundInclude.all, cidrs: [...new Set(s.outboundInclude.cidrs.map(key))].sort() },
    outboundExclude: [...new Set(s.outboundExclude.map(key))].sort(),
    includeOutboundPorts: sortedSet(s.includeOutboundPorts),
    excludeOutboundPorts: sortedSet(s.excludeOutboundPorts),
    excludeInterfaces: [...new Set(s.excludeInterfaces)].sort(),
    rerouteInterfaces: [...new Set(s.rerouteInterfaces)].sort(),
    interceptionMode: s.interceptionMode,
  };
}

/**
 * proxy.istio.io/config: validateProxyConfig applies the YAML to a ProxyConfig (protomarshal.ApplyYAML:
 * a mapping; interceptionMode an enum name) and validates it; ISTIO_META_DNS_CAPTURE is a free string
 * there, read later with strconv.ParseBool (an invalid one reads as false).
 */
function referenceProxyConfig(text: string): { rejected: boolean; mode?: InterceptionMode; dns: boolean } {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch {
    return { rejected: true, dns: false };
  }
  if (doc === null || doc === undefined) return { rejected: false, dns: false };
  if (typeof doc !== 'object' || Array.isArray(doc)) return { rejected: true, dns: false };
  const d = doc as { interceptionMode?: unknown; proxyMetadata?: unknown };
  let mode: InterceptionMode | undefined;
  if (d.interceptionMode !== undefined) {
    mode = typeof d.interceptionMode === 'string' ? validateInterceptionMode(d.interceptionMode) : undefined;
    if (mode === undefined) return { rejected: true, dns: false };
  }
  const meta = d.proxyMetadata;
  if (meta !== undefined && meta !== null && (typeof meta !== 'object' || Array.isArray(meta))) return { rejected: true, dns: false };
  const dnsText = (meta as Record<string, unknown> | null | undefined)?.ISTIO_META_DNS_CAPTURE;
  const dns = typeof dnsText === 'string' ? (strconvParseBool(dnsText) ?? false) : false;
  return { rejected: false, mode, dns };
}

const show = (x: unknown): string => JSON.stringify(x);

test(`every capture annotation, ${CASES} seeded cases, judged against Istio's validation rules`, () => {
  const r = prng(SEED);
  const seen = new Map<string, { accepted: number; rejected: number }>(GENERATORS.map(([name]) => [name, { accepted: 0, rejected: 0 }]));
  for (let i = 0; i < CASES; i++) {
    const annotations: Record<string, string> = {};
    const n = 1 + r.int(3);
    for (let k = 0; k < n; k++) {
      const [name, gen] = r.pick(GENERATORS);
      annotations[name] = gen(r);
    }
    const got = parseCaptureSettings({ metadata: { annotations }, spec: { containers: [{ name: 'istio-proxy' }] } });
    const { [PROXY_CONFIG]: pcText, ...plain } = annotations;
    const ref = referenceSettings(plain);
    const pc = pcText === undefined ? undefined : referenceProxyConfig(pcText);
    const want = { ...ref.settings };
    if (!(ANN.interceptionMode in plain) || ref.rejected.includes(ANN.interceptionMode)) want.interceptionMode = pc?.mode ?? 'REDIRECT';
    const wantRejected = [...ref.rejected, ...(pc?.rejected ? [PROXY_CONFIG] : [])].sort();
    const where = `seed ${SEED} case ${i}: annotations ${show(annotations)}`;

    const errored = [...new Set(got.errors.map((e) => /for annotation '([^']+)'/.exec(e)?.[1] ?? `? ${e}`))].sort();
    // an ISTIO_META_DNS_CAPTURE that is not a boolean is reported by meshlane, while Istio's validator
    // does not look at it (it reads as false later): both keep DNS capture off
    const pcDnsNote = pcText !== undefined && !pc!.rejected && errored.includes(PROXY_CONFIG);
    assert.deepEqual(
      errored.filter((e) => !(pcDnsNote && e === PROXY_CONFIG)),
      wantRejected,
      `${where}: the annotations with an error (meshlane ${show(got.errors)})`,
    );
    assert.deepEqual(comparable(got.settings), want, `${where}: the settings`);
    assert.equal(got.settings.dns.enabled, pc !== undefined && !pc.rejected && pc.dns, `${where}: DNS capture`);
    for (const name of Object.keys(annotations)) seen.get(name)![wantRejected.includes(name) ? 'rejected' : 'accepted']++;
  }
  // the generators must produce both kinds in earnest for every annotation, or the fuzz proves little
  if (process.env.MESHLANE_FUZZ_STATS) console.log(JSON.stringify([...seen]));
  for (const [name, c] of seen) {
    assert.ok(c.accepted >= 300 && c.rejected >= 300, `seed ${SEED}: ${name}: ${c.accepted} accepted, ${c.rejected} rejected`);
  }
});
