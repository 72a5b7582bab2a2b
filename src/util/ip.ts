// IP addresses, once: parsing (the rules of Go's net/netip, which is what Istio validates with),
// canonical text, the 16-byte form the maps key by, and prefixes. Used by the annotation parser, the
// pod model, the struct codecs and `meshlane dump`.
//
// Parsing follows netip.ParseAddr / netip.ParsePrefix: IPv4 is exactly four decimal octets with no
// leading zeros; IPv6 is up to eight hex groups of at most four digits, one `::`, an embedded IPv4
// address only at the end; no zones (netip.ParsePrefix refuses them, and a pod IP has none); the
// prefix length has no sign and no leading zeros. The family is what the text says: `::ffff:10.0.0.1`
// is an IPv6 address (netip's Is6), never silently an IPv4 one.

export type Family = 4 | 6;

/** The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] as const;

/** Linux address families (<sys/socket.h>), as the kernel's structs carry them. */
export const AF_INET = 2;
export const AF_INET6 = 10;

export interface ParsedIp {
  family: Family;
  /** 4 bytes for IPv4, 16 for IPv6, network order */
  bytes: number[];
}

/** A prefix, normalised: `addr` is the network address (host bits cleared) in canonical text. */
export interface IpPrefix {
  family: Family;
  addr: string;
  prefix: number;
}

const OCTET = /^(0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4Bytes(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!OCTET.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

/** The 16-bit groups of one side of `::` (an embedded IPv4 address counts as two groups). */
function parseV6Groups(side: string): number[] | undefined {
  if (side === '') return [];
  const out: number[] = [];
  const parts = side.split(':');
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as string;
    if (i === parts.length - 1 && p.includes('.')) {
      const v4 = parseIpv4Bytes(p);
      if (!v4) return undefined;
      out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
      continue;
    }
    if (!HEX_GROUP.test(p)) return undefined;
    out.push(parseInt(p, 16));
  }
  return out;
}

function parseIpv6Bytes(s: string): number[] | undefined {
  if (s.includes('%')) return undefined; // zones are not allowed in prefixes (nor in pod IPs)
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const head = parseV6Groups(halves[0] as string);
  const tail = halves.length === 2 ? parseV6Groups(halves[1] as string) : [];
  if (!head || !tail) return undefined;
  // an embedded IPv4 address may only end the address
  if (halves.length === 2 && (halves[0] as string).includes('.')) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined; // `::` stands for at least one group
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    groups = head;
  }
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/** An IP address (no zone, no leading zeros in IPv4 octets) as its family and bytes. */
export function parseIp(s: string): ParsedIp | undefined {
  if (s.includes(':')) {
    const bytes = parseIpv6Bytes(s);
    return bytes ? { family: 6, bytes } : undefined;
  }
  const bytes = parseIpv4Bytes(s);
  return bytes ? { family: 4, bytes } : undefined;
}

/** The family of an address text, or undefined when it is not one. */
export function ipFamily(s: string): Family | undefined {
  return parseIp(s)?.family;
}

/** Canonical text: dotted quad for IPv4; RFC 5952 for IPv6 (lower case, the first longest run of two
 *  or more zero groups compressed), which is also what Node's WHATWG URL parser prints (IPv4-mapped
 *  addresses stay in hex: `::ffff:a00:1`). */
export function formatIp(family: Family, bytes: ArrayLike<number>): string {
  if (family === 4) return Array.from(bytes).slice(0, 4).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never compressed
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** An IP address in canonical text, or undefined when it is not one. */
export function canonicalIp(s: string): { family: Family; addr: string } | undefined {
  const ip = parseIp(s);
  return ip ? { family: ip.family, addr: formatIp(ip.family, ip.bytes) } : undefined;
}

/**
 * The bytes of an address for a field of `family`: 4 bytes for an IPv4 field; 16 for an IPv6 field,
 * where IPv4 text becomes IPv4-mapped (`::ffff:a.b.c.d`, the form the maps key IPv4 by). Throws
 * TypeError for text that is not an address of the family.
 */
export function ipToBytes(text: string, family: Family): Buffer {
  const ip = parseIp(text);
  if (family === 4) {
    if (ip?.family !== 4) throw new TypeError(`not an IPv4 address: ${text}`);
    return Buffer.from(ip.bytes);
  }
  if (!ip) throw new TypeError(`not an IPv6 address: ${text}`);
  if (ip.family === 4) return Buffer.from([...V4_MAPPED_PREFIX, ...ip.bytes]);
  return Buffer.from(ip.bytes);
}

/** Any address as the text a 16-byte field reads back (IPv4 as IPv4-mapped IPv6), or undefined. */
export function ip6Text(text: string): string | undefined {
  const ip = parseIp(text);
  if (!ip) return undefined;
  return formatIp(6, ip.family === 4 ? [...V4_MAPPED_PREFIX, ...ip.bytes] : ip.bytes);
}

/** 16 address bytes as canonical IPv6 text (IPv4-mapped ones included: `::ffff:a00:1`). */
export function bytesToIp6(b: ArrayLike<number>): string {
  if (b.length !== 16) throw new RangeError(`an IPv6 address has 16 bytes, got ${b.length}`);
  return formatIp(6, b);
}

function isV4Mapped(b: ArrayLike<number>): boolean {
  return b.length === 16 && V4_MAPPED_PREFIX.every((x, i) => b[i] === x);
}

/** 16 address bytes as a person reads them: IPv4-mapped ones as the dotted quad, others as IPv6. */
export function bytesToPlainIp(b: ArrayLike<number>): string {
  return isV4Mapped(b) ? formatIp(4, Array.from(b).slice(12)) : bytesToIp6(b);
}

/** IPv6 text as a person reads it: an IPv4-mapped address as its dotted quad; anything else unchanged. */
export function plainIp(text: string): string {
  const ip = parseIp(text);
  return ip?.family === 6 && isV4Mapped(ip.bytes) ? formatIp(4, ip.bytes.slice(12)) : text;
}

/** A prefix `addr/bits` as netip.ParsePrefix reads it (the `/bits` part is required), host bits
 *  cleared (netip's Masked). Undefined when it is not one. */
export function parsePrefix(s: string): IpPrefix | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(s.slice(0, slash));
  const bitsText = s.slice(slash + 1);
  if (!ip || !OCTET.test(bitsText)) return undefined;
  const prefix = Number(bitsText);
  if (prefix > ip.bytes.length * 8) return undefined;
  const masked = ip.bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
  return { family: ip.family, addr: formatIp(ip.family, masked), prefix };
}
