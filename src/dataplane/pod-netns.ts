// What a captured pod's network namespace needs besides the programs, set up once at enrolment
// (idempotent; route netlink inside the namespace, native.netnsNetlink):
//
//  - ::6/128 on lo when the pod has IPv6, as istio-iptables' configureIPv6Addresses adds it
//    (`ip -6 addr add ::6/128 dev lo`): the proxy binds ::6 for its inbound passthrough connections to
//    the app (IPv4 needs nothing: lo's 127.0.0.1/8 covers 127.0.0.6). Never removed: once added it is
//    the pod's own address, as under istio-iptables.
//  - source routing for sockets bound before connect() (connect.bpf.c): a socket already bound to the
//    wildcard address cannot be bound to the pod IP again, so the connect hook marks it with
//    MESHLANE_SOURCE_MARK, and this routing gives a marked socket the pod IP as the source of 127.0.0.1
//    / ::1, where the proxy listens: the proxy sees the same peer (podIP:port) and local address
//    (127.0.0.1:15001) as under REDIRECT, also behind a loopback-only listener (the DNS proxy). Per
//    family with a pod IP:
//        rule  pref 0   fwmark MESHLANE_SOURCE_MARK lookup MESHLANE_SOURCE_TABLE
//        rule  pref 1   lookup local      (the kernel's pref-0 local rule, moved behind it)
//        route table MESHLANE_SOURCE_TABLE: local 127.0.0.1/32 (::1/128) dev lo src <pod IP>
//    Only marked sockets ever reach that table, and for any other destination it has no route, so the
//    lookup goes on to the local and main tables as before. The local rule is moved (a rule cannot be
//    put ahead of another of the same priority): a rule at pref 1 is added before the pref-0 one goes,
//    so every lookup finds the local table throughout. Left in place when the pod is released (inert:
//    nothing marks sockets then); it goes with the namespace.
import * as native from '../native/addon.js';
import type { Logger } from '../util/log.js';
import { AF_INET, AF_INET6 } from '../util/ip.js';
import { PodFlags, SourceRouting } from './layouts.js';
import type { MapsView } from './dataplane.js';
import { LOOPBACK_IFINDEX, RT_TABLE_LOCAL, addrAdd, localRouteReplace, ruleAdd, ruleDel, type Rule } from './netlink.js';

export const SOURCE_MARK = SourceRouting.MARK;
export const SOURCE_TABLE = SourceRouting.TABLE;
/** where the kernel's local rule goes, right behind meshlane's rule at 0 */
export const LOCAL_RULE_PRIORITY = 1;
export const PASSTHROUGH_V6 = '::6';

const EEXIST = 17;
const ENOENT = 2;

export interface PodAddresses {
  ip4?: string;
  ip6?: string;
}

type Requests = native.NetlinkRequest[];

const passthroughRequests = (): Requests => [{ message: addrAdd(LOOPBACK_IFINDEX, PASSTHROUGH_V6, 128), tolerate: [EEXIST] }];

function sourceRoutingRequests(family: number, loopback: string, podIp: string): Requests {
  const ours: Rule = { family, priority: 0, table: SOURCE_TABLE, fwmark: SOURCE_MARK };
  return [
    { message: localRouteReplace(loopback, family === AF_INET ? 32 : 128, LOOPBACK_IFINDEX, podIp, SOURCE_TABLE) },
    { message: ruleAdd({ family, priority: LOCAL_RULE_PRIORITY, table: RT_TABLE_LOCAL }), tolerate: [EEXIST] },
    { message: ruleAdd(ours), tolerate: [EEXIST] },
    { message: ruleDel({ family, priority: 0, table: RT_TABLE_LOCAL }), tolerate: [ENOENT] },
  ];
}

function routingRequests(ips: PodAddresses): Requests {
  return [
    ...(ips.ip4 !== undefined ? sourceRoutingRequests(AF_INET, '127.0.0.1', ips.ip4) : []),
    ...(ips.ip6 !== undefined ? sourceRoutingRequests(AF_INET6, '::1', ips.ip6) : []),
  ];
}

/** istio-iptables' configureIPv6Addresses: ::6/128 on lo. Returns true when it was added, false when
 * it was there already. Throws BpfError (a missing namespace, no permission). */
export function ensurePassthroughAddress(nsPath: string): boolean {
  return native.netnsNetlink(nsPath, passthroughRequests())[0] === 0;
}

/** The source routing for marked sockets, for each family the pod has an address of. Idempotent. */
export function ensureSourceRouting(nsPath: string, ips: PodAddresses): void {
  const reqs = routingRequests(ips);
  if (reqs.length > 0) native.netnsNetlink(nsPath, reqs);
}

/** Both (::6 only with IPv6), in one visit to the namespace. Returns whether ::6 was added now. */
export function ensurePodNetns(nsPath: string, ips: PodAddresses): { addedPassthrough: boolean } {
  const v6 = ips.ip6 !== undefined;
  const reqs = [...(v6 ? passthroughRequests() : []), ...routingRequests(ips)];
  if (reqs.length === 0) return { addedPassthrough: false };
  const res = native.netnsNetlink(nsPath, reqs);
  return { addedPassthrough: v6 && res[0] === 0 };
}

/** The pod's addresses as its pods entry has them. */
export function podAddresses(cfg: { flags: number; ip4: string; ip6: string }): PodAddresses {
  return {
    ip4: cfg.flags & PodFlags.HAS_IP4 ? cfg.ip4 : undefined,
    ip6: cfg.flags & PodFlags.HAS_IP6 ? cfg.ip6 : undefined,
  };
}

/** netns cookie -> the addresses it was prepared for (cookies are never reused); bounded by the pod
 * limit (when it outgrows it, it starts over: the work is idempotent) */
const prepared = new Map<bigint, string>();
/** netns cookie -> the last error logged for it (a failure is logged when it changes, retried on
 * every pass) */
const failed = new Map<bigint, string>();

/**
 * The agent's hook, called where a pod's netns programs are attached: prepare the namespace of the
 * captured pod `cookie` (its pods entry written) once for its addresses. Never throws: a failure is
 * logged and tried again on the next pass.
 */
export function preparePodNetns(pods: MapsView['pods'], cookie: bigint, nsPath: string, log: Logger): void {
  const cfg = pods.get(cookie);
  if (cfg === null) return;
  const ips = podAddresses(cfg);
  const key = JSON.stringify(ips);
  if (prepared.get(cookie) === key) return;
  try {
    const r = ensurePodNetns(nsPath, ips);
    // bounded by the pods map's own capacity (--max-pods): at most one entry per pod it can hold
    if (prepared.size >= pods.handle.info.maxEntries) prepared.clear();
    prepared.set(cookie, key);
    failed.delete(cookie);
    log.debug({ netns: nsPath, ...ips, addedPassthrough: r.addedPassthrough }, 'pod network namespace prepared (::6 on lo, source routing for bound sockets)');
  } catch (e) {
    const msg = (e as Error).message;
    if (failed.get(cookie) !== msg)
      log.warn({ netns: nsPath, err: msg }, 'preparing the pod network namespace failed (::6 on lo, source routing); retrying on the next pass');
    if (failed.size >= pods.handle.info.maxEntries) failed.clear();
    failed.set(cookie, msg);
  }
}
