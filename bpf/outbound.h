/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the outbound decision of istio-iptables (capture-spec section 3),
 * family-neutral. The caller describes the connection in a struct conn; the
 * decision returns the port to redirect to, or 0 for "not captured".
 *
 * Rules, first match wins (the numbers are the spec's):
 *  1. output interface in excludeInterfaces: not decidable at connect time;
 *     the agent reports that annotation as unsupported.
 *  2. destination port in excludeOutboundPorts: not captured.
 *  3. local destination from 127.0.0.6 / ::6: not captured.
 *  4. per proxy uid, then per proxy gid, in order: (a) local, not exactly
 *     127.0.0.1, not the tunnel port (nor TCP 53 with DNS, uid loop only):
 *     owner is the id -> inbound port;
 *     (b) local, owner is not the id, no loopback CIDR included: not captured;
 *     (c) owner is the id: not captured.
 *  5. DNS on, port 53, destination a resolv.conf server (pod_dns) or any with
 *     capture-all: the DNS port (15053). Before 6 and 7: "DNS comes before
 *     the exclusions", as Istio's TCP DNS rule sits before them.
 *  6. destination 127.0.0.1 / ::1: not captured.
 *  7. destination in excludeOutboundIPRanges: not captured.
 *  8. TCP port in includeOutboundPorts: outbound port.
 *  9. includeOutboundIPRanges '*' or destination in it: outbound port.
 * 10. otherwise not captured.
 *
 * UDP (decide_udp) has Istio's nat OUTPUT rules, not ISTIO_OUTPUT: with DNS
 * on, port 53, the proxy uids then gids return, then a resolv.conf server (or
 * any, capture-all) goes to the DNS port. excludeOutboundPorts, 127.0.0.6, the
 * loopback rules and the exclude CIDRs do not apply (Istio 1.22). Other UDP is
 * never captured.
 *
 * Both take the destination's port in host order and its address as 16 bytes
 * (IPv6 or v4-mapped) for the pod_dns and CIDR lookups; the TCP caller fills in
 * the address facts of struct conn (addr.h, pod.h). Each set is looked up only
 * when its rule is reached, and not at all when the pod's set is empty.
 */
#ifndef MESHLANE_OUTBOUND_H
#define MESHLANE_OUTBOUND_H

#include "meshlane.h"
#include "addr.h"
#include "pod.h"

struct conn {
	__u16 dport;          /* host order */
	__u8 local;           /* destination is an address of the pod's own netns */
	__u8 dst_loopback1;   /* destination is exactly 127.0.0.1 / ::1 */
	__u8 src_passthrough; /* bound to 127.0.0.6 / ::6 */
	__u8 dns_server;      /* destination is one of the pod's resolv.conf servers (pod_dns) */
	__u32 uid;
	__u32 gid;
	const __u32 *dst;     /* the destination, 16 bytes (v4-mapped for IPv4): the CIDR lookups */
};

/* DNS capture is on and this is the DNS port. */
static __always_inline bool dns_captured(const struct pod_config *pod, __u16 dport)
{
	return (pod->flags & POD_DNS_CAPTURE) && dport == ML_DNS_PORT;
}

/* pod_dns lookup. Only needed for DNS on, port 53, without capture-all:
 * otherwise no lookup. */
static __always_inline bool is_dns_server(const struct pod_config *pod, __u16 dport, const void *dst16)
{
	if (!dns_captured(pod, dport) || (pod->flags & POD_DNS_CAPTURE_ALL))
		return false;
	return pod_has_dns_server(pod, dst16);
}

/* What every decision needs: the port, the server test and the owner (the task
 * that calls connect() / sendmsg()). */
static __always_inline void conn_init(struct conn *c, const struct pod_config *pod, __u16 dport,
				      const void *dst16)
{
	__u64 ug;

	c->dport = dport;
	c->dst = dst16;
	c->dns_server = is_dns_server(pod, dport, dst16);
	ug = bpf_get_current_uid_gid();
	c->uid = (__u32)ug;
	c->gid = (__u32)(ug >> 32);
}

enum owner_verdict {
	OWNER_CONTINUE = 0,
	OWNER_BYPASS = 1,       /* (c): the proxy's own connection */
	OWNER_INBOUND = 2,
	OWNER_BYPASS_LOCAL = 3, /* (b): a local destination, not the proxy's */
};

/* One iteration of the uid (or gid) loop of istio-iptables. Istio skips TCP 53
 * (with DNS capture) in rule (a) of the uid loop only, never of the gid loop. */
static __always_inline int owner_rule(const struct pod_config *pod, const struct conn *c,
				      __u32 owner, __u32 id, int is_uid)
{
	int dns_port = dns_captured(pod, c->dport);

	if (c->local && !c->dst_loopback1 && c->dport != pod->tunnel_port &&
	    !(is_uid && dns_port) && owner == id)
		return OWNER_INBOUND;
	if (!(pod->flags & POD_OUT_INCLUDE_LOOPBACK) && c->local && !dns_port && owner != id)
		return OWNER_BYPASS_LOCAL;
	if (owner == id)
		return OWNER_BYPASS;
	return OWNER_CONTINUE;
}

/* The loop over one id list (-u or -g), in order. n is read where the loop
 * reads it (a pointer into the pod's entry): one less register to keep. */
static __always_inline int owner_list(const struct pod_config *pod, const struct conn *c, __u32 owner,
				      const __u32 *ids, const __u32 *n, int is_uid)
{
	int v;

#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= *n)
			break;
		v = owner_rule(pod, c, owner, ids[i], is_uid);
		if (v != OWNER_CONTINUE)
			return v;
	}
	return OWNER_CONTINUE;
}

/* Step 4: the uid loop, then the gid loop. For a conn without the local facts
 * (UDP: Istio's nat OUTPUT rules know no local destination), rules (a) and (b)
 * never match, so a proxy id returns, as those rules say. */
static __always_inline int owner_rules(const struct pod_config *pod, const struct conn *c)
{
	int v = owner_list(pod, c, c->uid, pod->uids, &pod->n_uids, 1);

	if (v != OWNER_CONTINUE)
		return v;
	return owner_list(pod, c, c->gid, pod->gids, &pod->n_gids, 0);
}

/* Step 5: DNS to a resolv.conf server, or to any address with capture-all. */
static __always_inline bool dns_redirected(const struct pod_config *pod, const struct conn *c)
{
	if (!dns_captured(pod, c->dport))
		return false;
	return (pod->flags & POD_DNS_CAPTURE_ALL) || c->dns_server;
}

/* A decision not to capture, and why (enum bypass_reason, for bypass_stats). */
static __always_inline __u16 bypass(__u32 *why, __u32 reason)
{
	*why = reason;
	return 0;
}

/* UDP: Istio's nat OUTPUT DNS rules, for a conn from conn_init. Returns the DNS
 * port, or 0 with *why set. */
static __always_inline __u16 decide_udp(const struct pod_config *pod, const struct conn *c, __u32 *why)
{
	if (!dns_captured(pod, c->dport))
		return bypass(why, BYPASS_UDP_NOT_DNS);
	if (owner_rules(pod, c) != OWNER_CONTINUE)
		return bypass(why, BYPASS_PROXY_OWNER);
	return dns_redirected(pod, c) ? pod->dns_port : bypass(why, BYPASS_DNS_NOT_SERVER);
}

/* The destination in one of the pod's CIDR sets of `kind` (one LPM lookup; none for a pod whose set
 * is empty, flag `none`). The sets are looked up only where a rule reaches them: the proxy's own
 * connects and local destinations return before. */
static __always_inline bool conn_in_cidrs(const struct pod_config *pod, const struct conn *c, __u32 kind,
					  __u32 none)
{
	if (pod_set_empty(pod, none))
		return false;
	if (addr_is_v4mapped(c->dst))
		return pod_cidr4_has(pod, kind, addr_v4(c->dst));
	return pod_cidr6_has(pod, kind, c->dst);
}

/* The destination port in one of the pod's port sets (none for an empty one). */
static __always_inline bool conn_port_in(const struct pod_config *pod, const struct conn *c, __u8 kind, __u32 none)
{
	return !pod_set_empty(pod, none) && pod_has_port(pod, c->dport, kind);
}

/* Returns the port to redirect a TCP connect to (host order), or 0 with *why
 * set (the rule that decided). *c comes from conn_init, with the address facts
 * filled in by the caller. */
static __always_inline __u16 decide_outbound_tcp(const struct pod_config *pod, const struct conn *c, __u32 *why)
{
	if (conn_port_in(pod, c, PORT_OUT_EXCLUDE, POD_NO_OUT_EXCLUDE_PORTS))
		return bypass(why, BYPASS_EXCLUDED_PORT);
	if (c->local && c->src_passthrough)
		return bypass(why, BYPASS_PASSTHROUGH);
	switch (owner_rules(pod, c)) {
	case OWNER_INBOUND:
		return pod->inbound_port;
	case OWNER_BYPASS:
		return bypass(why, BYPASS_PROXY_OWNER);
	case OWNER_BYPASS_LOCAL:
		return bypass(why, BYPASS_LOCAL);
	}
	if (dns_redirected(pod, c))
		return pod->dns_port;
	if (c->dst_loopback1)
		return bypass(why, BYPASS_LOOPBACK);
	if (conn_in_cidrs(pod, c, CIDR_OUT_EXCLUDE, POD_NO_OUT_EXCLUDE_CIDRS))
		return bypass(why, BYPASS_EXCLUDED_CIDR);
	if (conn_port_in(pod, c, PORT_OUT_INCLUDE, POD_NO_OUT_INCLUDE_PORTS))
		return pod->outbound_port;
	if (pod->flags & POD_OUT_INCLUDE_ALL)
		return pod->outbound_port;
	if (conn_in_cidrs(pod, c, CIDR_OUT_INCLUDE, POD_NO_OUT_INCLUDE_CIDRS))
		return pod->outbound_port;
	return bypass(why, BYPASS_NOT_INCLUDED);
}

#endif /* MESHLANE_OUTBOUND_H */
