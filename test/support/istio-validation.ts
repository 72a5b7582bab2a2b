// A reference for the capture annotations: Istio's own Go validation rules, transcribed as literally
// as TypeScript allows, with the Go function each piece comes from. It shares no code with src/ on
// purpose: the annotation fuzz (test/unit/annotation-fuzz.test.ts) judges meshlane against it.
//
// Sources (istio/istio, golang/go):
//   pkg/kube/inject/validate.go     AnnotationValidation: validateInterceptionMode, validateStatusPort,
//                                   ValidateIncludeIPRanges, ValidateExcludeIPRanges,
//                                   ValidateIncludeInboundPorts, ValidateExcludeInboundPorts,
//                                   ValidateExcludeOutboundPorts, validateCIDRList, parsePort, parsePorts
//   cni/pkg/plugin/redirect.go      the same parsePorts for includeOutboundPorts (which the injector does
//                                   not validate), and 15020,15021,15090 always added to the inbound
//                                   exclusions (NewRedirect)
//   tools/istio-iptables            split(): interface lists drop empty items, each name goes to iptables
//   go: strings.TrimSpace + unicode.IsSpace (unicode/graphic.go, the White_Space table in tables.go),
//       strconv.ParseUint, strconv.Atoi, strconv.ParseBool, net/netip ParseAddr/parseIPv4/parseIPv6/
//       ParsePrefix/Masked
//
// Where Istio rejects a value, the injection fails; meshlane instead reports the error and keeps the
// default for that setting. So `settings` below is "what Istio applies" for accepted values and the
// default for rejected ones.

export type Family = 4 | 6;

// ---- unicode.IsSpace / strings.TrimSpace ----------------------------------------------------------

/** Go's unicode.White_Space RangeTable (tables.go), entries {lo, hi, stride}. */
export const GO_WHITE_SPACE: ReadonlyArray<[number, number, number]> = [
  [0x0009, 0x000d, 1],
  [0x0020, 0x0085, 101],
  [0x00a0, 0x1680, 5600],
  [0x2000, 0x200a, 1],
  [0x2028, 0x2029, 1],
  [0x202f, 0x205f, 48],
  [0x3000, 0x3000, 1],
];

/** unicode.IsSpace(r): the Latin-1 special case, then the White_Space table. */
export function unicodeIsSpace(r: number): boolean {
  if (r <= 0xff) {
    switch (r) {
      case 0x09:
      case 0x0a:
      case 0x0b:
      case 0x0c:
      case 0x0d:
      case 0x20:
      case 0x85:
      case 0xa0:
        return true;
    }
    return false;
  }
  for (const [lo, hi, stride] of GO_WHITE_SPACE) {
    if (r < lo) return false;
    if (r <= hi) return (r - lo) % stride === 0;
  }
  return false;
}

/** strings.TrimSpace(s), rune by rune (a lone surrogate is not a space, as Go's RuneError is not). */
export function stringsTrimSpace(s: string): string {
  const runes = Array.from(s);
  let start = 0;
  let stop = runes.length;
  while (start < stop && unicodeIsSpace(runes[start]!.codePointAt(0)!)) start++;
  while (stop > start && unicodeIsSpace(runes[stop - 1]!.codePointAt(0)!)) stop--;
  return runes.slice(start, stop).join('');
}

/** strings.Split(s, ","): as JavaScript's split for a one-character separator ("" gives [""]). */
export const stringsSplit = (s: string, sep: string): string[] => s.split(sep);

// ---- strconv ------------------------------------------------------------------------------------

/** strconv.ParseUint(s, 10, bitSize): no sign, no underscore (only with base 0), ASCII digits. */
export function strconvParseUint(s: string, bitSize: number): number | undefined {
  if (s === '') return undefined; // syntax error
  const maxVal = 2 ** bitSize - 1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return undefined; // syntax error
    const n1 = n * 10 + (c - 0x30);
    if (n1 > maxVal) return undefined; // range error
    n = n1;
  }
  return n;
}

/** strconv.Atoi(s): an optional sign, then ASCII digits (no underscores in base 10). */
export function strconvAtoi(s: string): number | undefined {
  let i = 0;
  let neg = false;
  if (s[0] === '+' || s[0] === '-') {
    neg = s[0] === '-';
    i = 1;
  }
  if (i >= s.length) return undefined;
  let n = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return undefined;
    n = n * 10 + (c - 0x30);
    if (n > 2 ** 63) return undefined; // out of range (only the comparison with 128 matters here)
  }
  return neg ? -n : n;
}

/** strconv.ParseBool. */
export function strconvParseBool(s: string): boolean | undefined {
  switch (s) {
    case '1':
    case 't':
    case 'T':
    case 'true':
    case 'TRUE':
    case 'True':
      return true;
    case '0':
    case 'f':
    case 'F':
    case 'false':
    case 'FALSE':
    case 'False':
      return false;
  }
  return undefined;
}

// ---- net/netip ----------------------------------------------------------------------------------

export interface GoAddr {
  /** 4 for Is4, 6 for Is6 (IPv4-mapped included) */
  family: Family;
  bytes: number[];
  zone: string;
}

/** netip.ParseAddr: the first '.', ':' or '%' decides. */
export function netipParseAddr(s: string): GoAddr | undefined {
  for (let i = 0; i < s.length; i++) {
    switch (s[i]) {
      case '.':
        return parseIPv4(s);
      case ':':
        return parseIPv6(s);
      case '%':
        return undefined; // missing IPv6 address
    }
  }
  return undefined; // unable to parse IP
}

function parseIPv4(s: string): GoAddr | undefined {
  const fields = [0, 0, 0, 0];
  let val = 0;
  let pos = 0;
  let digLen = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (digLen === 1 && val === 0) return undefined; // leading zero
      val = val * 10 + (c - 0x30);
      digLen++;
      if (val > 255) return undefined;
    } else if (s[i] === '.') {
      if (i === 0 || i === s.length - 1 || s[i - 1] === '.') return undefined;
      if (pos === 3) return undefined; // too long
      fields[pos] = val;
      pos++;
      val = 0;
      digLen = 0;
    } else {
      return undefined; // unexpected character
    }
  }
  if (pos < 3) return undefined; // too short
  fields[3] = val;
  return { family: 4, bytes: fields, zone: '' };
}

function parseIPv6(input: string): GoAddr | undefined {
  let s = input;
  let zone = '';
  const z = s.indexOf('%');
  if (z !== -1) {
    zone = s.slice(z + 1);
    s = s.slice(0, z);
    if (zone === '') return undefined; // zone must be a non-empty string
  }
  const ip = new Array<number>(16).fill(0);
  let ellipsis = -1;
  if (s.length >= 2 && s[0] === ':' && s[1] === ':') {
    ellipsis = 0;
    s = s.slice(2);
    if (s.length === 0) return { family: 6, bytes: ip, zone };
  }
  let i = 0;
  while (i < 16) {
    let off = 0;
    let acc = 0;
    for (; off < s.length; off++) {
      const c = s.charCodeAt(off);
      if (c >= 0x30 && c <= 0x39) acc = acc * 16 + (c - 0x30);
      else if (c >= 0x61 && c <= 0x66) acc = acc * 16 + (c - 0x61 + 10);
      else if (c >= 0x41 && c <= 0x46) acc = acc * 16 + (c - 0x41 + 10);
      else break;
      if (off > 3) return undefined; // each group must have 4 or less digits
      if (acc > 0xffff) return undefined;
    }
    if (off === 0) return undefined; // each colon-separated field must have at least one digit
    if (off < s.length && s[off] === '.') {
      if (ellipsis < 0 && i !== 12) return undefined; // embedded IPv4 must replace the final 2 fields
      if (i + 4 > 16) return undefined;
      const ip4 = parseIPv4(s);
      if (!ip4) return undefined;
      ip.splice(i, 4, ...ip4.bytes);
      s = '';
      i += 4;
      break;
    }
    ip[i] = acc >> 8;
    ip[i + 1] = acc & 0xff;
    i += 2;
    s = s.slice(off);
    if (s.length === 0) break;
    if (s[0] !== ':') return undefined; // unexpected character, want colon
    if (s.length === 1) return undefined; // colon must be followed by more characters
    s = s.slice(1);
    if (s[0] === ':') {
      if (ellipsis >= 0) return undefined; // multiple ::
      ellipsis = i;
      s = s.slice(1);
      if (s.length === 0) break;
    }
  }
  if (s.length !== 0) return undefined; // trailing garbage
  if (i < 16) {
    if (ellipsis < 0) return undefined; // too short
    const n = 16 - i;
    for (let j = i - 1; j >= ellipsis; j--) ip[j + n] = ip[j]!;
    for (let j = ellipsis + n - 1; j >= ellipsis; j--) ip[j] = 0;
  } else if (ellipsis >= 0) {
    return undefined; // the :: must expand to at least one field of zeros
  }
  return { family: 6, bytes: ip, zone };
}

export interface GoPrefix {
  family: Family;
  /** the masked address (Prefix.Masked) */
  bytes: number[];
  bits: number;
}

/** netip.ParsePrefix(s), then Masked(). */
export function netipParsePrefix(s: string): GoPrefix | undefined {
  const i = s.lastIndexOf('/');
  if (i < 0) return undefined; // no '/'
  const ip = netipParseAddr(s.slice(0, i));
  if (!ip) return undefined;
  if (ip.family === 6 && ip.zone !== '') return undefined; // IPv6 zones cannot be present in a prefix
  const bitsStr = s.slice(i + 1);
  // "strconv.Atoi accepts a leading sign and leading zeroes, but we don't want that."
  if (bitsStr.length > 1 && (bitsStr.charCodeAt(0) < 0x31 || bitsStr.charCodeAt(0) > 0x39)) return undefined;
  const bits = strconvAtoi(bitsStr);
  if (bits === undefined) return undefined;
  const maxBits = ip.family === 6 ? 128 : 32;
  if (bits < 0 || bits > maxBits) return undefined;
  const bytes = ip.bytes.map((b, k) => {
    const keep = Math.max(0, Math.min(8, bits - k * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
  return { family: ip.family, bytes, bits };
}

// ---- pkg/kube/inject/validate.go ----------------------------------------------------------------

/** parsePort: strconv.ParseUint(strings.TrimSpace(portStr), 10, 16). */
export function parsePort(portStr: string): number | undefined {
  return strconvParseUint(stringsTrimSpace(portStr), 16);
}

/** parsePorts: the whole string trimmed; empty = no ports; else every split item must be a port. */
export function parsePorts(portsString: string): number[] | undefined {
  const s = stringsTrimSpace(portsString);
  const ports: number[] = [];
  if (s.length > 0) {
    for (const portStr of stringsSplit(s, ',')) {
      const port = parsePort(portStr);
      if (port === undefined) return undefined;
      ports.push(port);
    }
  }
  return ports;
}

/** validateCIDRList: if non-empty, every split item must be a prefix (no trimming). */
export function validateCIDRList(cidrs: string): GoPrefix[] | undefined {
  const out: GoPrefix[] = [];
  if (cidrs.length > 0) {
    for (const cidr of stringsSplit(cidrs, ',')) {
      const p = netipParsePrefix(cidr);
      if (!p) return undefined;
      out.push(p);
    }
  }
  return out;
}

export type InterceptionMode = 'REDIRECT' | 'TPROXY' | 'NONE';

/** validateInterceptionMode. */
export function validateInterceptionMode(mode: string): InterceptionMode | undefined {
  return mode === 'REDIRECT' || mode === 'TPROXY' || mode === 'NONE' ? mode : undefined;
}

/** No Istio validator: istio-iptables' split() drops empty items and hands each name to iptables,
 *  which takes a Linux interface name (meshlane's documented rule: a letter, then letters, digits,
 *  `_`, `.`, `-`; at most 15 characters). */
export function interfaceList(text: string): string[] | undefined {
  const out: string[] = [];
  for (const item of stringsSplit(text, ',')) {
    if (item === '') continue;
    if (!/^[a-zA-Z][a-zA-Z0-9_.-]*$/.test(item) || item.length > 15) return undefined;
    out.push(item);
  }
  return out;
}

// ---- annotations -> settings ---------------------------------------------------------------------

export const ANN = {
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  statusPort: 'status.sidecar.istio.io/port',
} as const;

/** The settings, in a form that compares directly (addresses as bytes in hex, sets sorted). */
export interface RefSettings {
  inbound: { mode: 'all'; exclude: number[] } | { mode: 'list'; include: number[] };
  outboundInclude: { all: boolean; cidrs: string[] };
  outboundExclude: string[];
  includeOutboundPorts: number[];
  excludeOutboundPorts: number[];
  excludeInterfaces: string[];
  rerouteInterfaces: string[];
  interceptionMode: InterceptionMode;
}

export interface RefResult {
  settings: RefSettings;
  /** the annotations Istio rejects */
  rejected: string[];
}

const FIXED_EXCLUDES = [15090, 15021, 15020];

export const sortedSet = (xs: number[]): number[] => [...new Set(xs)].sort((a, b) => a - b);
export const prefixKey = (family: Family, bytes: ArrayLike<number>, bits: number): string =>
  `${family}/${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}/${bits}`;
const cidrKeys = (ps: GoPrefix[]): string[] => [...new Set(ps.map((p) => prefixKey(p.family, p.bytes, p.bits)))].sort();

/** What Istio makes of a pod's capture annotations (and meshlane's default where Istio rejects). */
export function referenceSettings(annotations: Record<string, string>): RefResult {
  const rejected: string[] = [];
  const get = <T>(name: string, validate: (v: string) => T | undefined): T | undefined => {
    if (!(name in annotations)) return undefined;
    const v = validate(annotations[name]!);
    if (v === undefined) rejected.push(name);
    return v;
  };
  // ValidateIncludeInboundPorts: "*" exactly, else a port list
  const incIn = get(ANN.includeInboundPorts, (v) => (v === '*' ? ('*' as const) : parsePorts(v)));
  const excIn = get(ANN.excludeInboundPorts, parsePorts) ?? [];
  // validateStatusPort; the injector's excludeInboundPort() adds nothing for port 0 (no status server)
  const status = get(ANN.statusPort, parsePort);
  const inbound: RefSettings['inbound'] =
    incIn !== undefined && incIn !== '*'
      ? { mode: 'list', include: sortedSet(incIn) }
      : { mode: 'all', exclude: sortedSet([...excIn, ...FIXED_EXCLUDES, ...(status ? [status] : [])]) };
  // ValidateIncludeIPRanges: "*" exactly, else a CIDR list
  const incOut = get(ANN.includeOutboundIPRanges, (v) => (v === '*' ? ('*' as const) : validateCIDRList(v)));
  const outboundInclude = incOut === undefined || incOut === '*' ? { all: true, cidrs: [] } : { all: false, cidrs: cidrKeys(incOut) };
  const outboundExclude = cidrKeys(get(ANN.excludeOutboundIPRanges, validateCIDRList) ?? []);
  const includeOutboundPorts = sortedSet(get(ANN.includeOutboundPorts, parsePorts) ?? []);
  const excludeOutboundPorts = sortedSet(get(ANN.excludeOutboundPorts, parsePorts) ?? []);
  const excludeInterfaces = [...new Set(get(ANN.excludeInterfaces, interfaceList) ?? [])].sort();
  const rerouteInterfaces = [...new Set(get(ANN.rerouteVirtualInterfaces, interfaceList) ?? [])].sort();
  const interceptionMode = get(ANN.interceptionMode, validateInterceptionMode) ?? 'REDIRECT';
  return {
    settings: { inbound, outboundInclude, outboundExclude, includeOutboundPorts, excludeOutboundPorts, excludeInterfaces, rerouteInterfaces, interceptionMode },
    rejected: rejected.sort(),
  };
}
