// Route netlink messages (linux/rtnetlink.h, linux/fib_rules.h), built here and sent inside a pod's
// network namespace by the addon (native.netnsNetlink), which only numbers them and asks for the ack.
// Pure: each builder returns one message, host byte order as the kernel reads it (little-endian on
// every machine meshlane runs on), addresses in network order.
import { isIPv4 } from 'node:net';
import { AF_INET, AF_INET6, ipToBytes } from '../util/ip.js';

export const RTM = { NEWADDR: 20, NEWROUTE: 24, NEWRULE: 32, DELRULE: 33 } as const;
export const NLM_F = { REQUEST: 0x1, ACK: 0x4, REPLACE: 0x100, EXCL: 0x200, CREATE: 0x400 } as const;
const IFA = { ADDRESS: 1, LOCAL: 2 } as const;
const RTA = { DST: 1, OIF: 4, PREFSRC: 7, TABLE: 15 } as const;
const FRA = { PRIORITY: 6, FWMARK: 10, TABLE: 15, FWMASK: 16 } as const;
const FR_ACT_TO_TBL = 1;
const RTN_LOCAL = 2;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_HOST = 254;
const RTPROT_STATIC = 4;
export const RT_TABLE_LOCAL = 255;
/** lo is ifindex 1 in every network namespace */
export const LOOPBACK_IFINDEX = 1;

const NLMSG_HDRLEN = 16;
const align4 = (n: number): number => (n + 3) & ~3;

/** An attribute: struct rtattr { u16 len; u16 type } and its payload, padded to 4 bytes. */
function attr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(align4(4 + payload.length));
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

const u32Attr = (type: number, v: number): Buffer => {
  const p = Buffer.alloc(4);
  p.writeUInt32LE(v >>> 0, 0);
  return attr(type, p);
};

/** struct nlmsghdr (seq and pid are the addon's) + the family header + attributes */
function message(type: number, flags: number, header: Buffer, attrs: Buffer[]): Buffer {
  const body = Buffer.concat([header, ...attrs]);
  const m = Buffer.alloc(NLMSG_HDRLEN + body.length);
  m.writeUInt32LE(m.length, 0);
  m.writeUInt16LE(type, 4);
  m.writeUInt16LE(flags | NLM_F.REQUEST, 6);
  body.copy(m, NLMSG_HDRLEN);
  return m;
}

const familyOf = (address: string): number => (isIPv4(address) ? AF_INET : AF_INET6);
const addrBytes = (address: string): Buffer => ipToBytes(address, isIPv4(address) ? 4 : 6);

/**
 * RTM_NEWADDR with NLM_F_CREATE | NLM_F_EXCL (EEXIST when present): what `ip addr add ADDR/PLEN dev
 * IFINDEX` sends, and what istio-iptables' netlink.AddrAdd sends (no flags, scope 0: the kernel
 * derives an IPv6 address's scope from the address itself).
 */
export function addrAdd(ifindex: number, address: string, prefixLen: number): Buffer {
  const h = Buffer.alloc(8); // struct ifaddrmsg
  h.writeUInt8(familyOf(address), 0);
  h.writeUInt8(prefixLen, 1);
  h.writeUInt8(0, 2); // ifa_flags
  h.writeUInt8(RT_SCOPE_UNIVERSE, 3);
  h.writeUInt32LE(ifindex, 4);
  const a = addrBytes(address);
  return message(RTM.NEWADDR, NLM_F.CREATE | NLM_F.EXCL, h, [attr(IFA.LOCAL, a), attr(IFA.ADDRESS, a)]);
}

export interface Rule {
  family: number;
  priority: number;
  table: number;
  /** match the socket / packet mark (mask: all bits) */
  fwmark?: number;
}

function ruleMessage(type: number, flags: number, r: Rule): Buffer {
  const h = Buffer.alloc(12); // struct fib_rule_hdr
  h.writeUInt8(r.family, 0);
  h.writeUInt8(r.table < 256 ? r.table : 0, 4);
  h.writeUInt8(FR_ACT_TO_TBL, 7);
  const attrs = [u32Attr(FRA.PRIORITY, r.priority), u32Attr(FRA.TABLE, r.table)];
  if (r.fwmark !== undefined) attrs.push(u32Attr(FRA.FWMARK, r.fwmark), u32Attr(FRA.FWMASK, 0xffffffff));
  return message(type, flags, h, attrs);
}

/** RTM_NEWRULE with NLM_F_CREATE | NLM_F_EXCL: EEXIST when the same rule is there (`ip rule add`). */
export const ruleAdd = (r: Rule): Buffer => ruleMessage(RTM.NEWRULE, NLM_F.CREATE | NLM_F.EXCL, r);
/** RTM_DELRULE of the rule with exactly this priority and table (ENOENT when there is none). */
export const ruleDel = (r: Rule): Buffer => ruleMessage(RTM.DELRULE, 0, r);

/**
 * RTM_NEWROUTE with NLM_F_CREATE | NLM_F_REPLACE: `ip route replace local DST/PLEN dev IFINDEX src
 * PREFSRC table TABLE` (a local route: delivered here, PREFSRC chosen as the source for DST).
 */
export function localRouteReplace(dst: string, prefixLen: number, ifindex: number, prefsrc: string, table: number): Buffer {
  if (familyOf(dst) !== familyOf(prefsrc)) throw new TypeError(`route to ${dst} with source ${prefsrc}: the families differ`);
  const h = Buffer.alloc(12); // struct rtmsg
  h.writeUInt8(familyOf(dst), 0);
  h.writeUInt8(prefixLen, 1);
  h.writeUInt8(table < 256 ? table : 0, 4);
  h.writeUInt8(RTPROT_STATIC, 5);
  h.writeUInt8(RT_SCOPE_HOST, 6);
  h.writeUInt8(RTN_LOCAL, 7);
  return message(RTM.NEWROUTE, NLM_F.CREATE | NLM_F.REPLACE, h, [
    attr(RTA.DST, addrBytes(dst)),
    u32Attr(RTA.OIF, ifindex),
    attr(RTA.PREFSRC, addrBytes(prefsrc)),
    u32Attr(RTA.TABLE, table),
  ]);
}
