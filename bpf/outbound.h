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
 * UDP (decide_dns_udp) has Istio's nat OUTPUT rules, not ISTIO_OUTPUT: with DNS
 * on, port 53, the proxy uids then gids return, then a resolv.conf server (or
 * any, capture-all) goes to the DNS port. excludeOutboundPorts, 127.0.0.6, the
 * loopback rules and the exclude CIDRs do not apply (Istio 1.22). Other UDP is
 * never captured.
 */
#ifndef MESHLANE_OUTBOUND_H
#define MESHLANE_OUTBOUND_H

#include <bpf/bpf_endian.h>
#include "maps.h"

#define DNS_PORT 53
#define ML_SOCK_DGRAM 2
#define ML_IPPROTO_UDP 17

struct conn {
	__u16 dport;          /* host order */
	__u8 local;           /* destination is an address of the pod's own netns */
	__u8 dst_loopback1;   /* destination is exactly 127.0.0.1 / ::1 */
	__u8 src_passthrough; /* bound to 127.0.0.6 / ::6 */
	__u8 excluded;        /* destination in excludeOutboundIPRanges */
	__u8 included;        /* destination in includeOutboundIPRanges */
	__u8 dns_server;      /* destination is one of the pod's resolv.conf servers (pod_dns) */
	__u32 uid;
	__u32 gid;
};

/* ---- shared by connect.bpf.c and dns.bpf.c ---- */

#define IP4_LOOPBACK1 0x7f000001     /* 127.0.0.1 */
#define IP4_PASSTHROUGH 0x7f000006   /* 127.0.0.6 */
#define IP4_LOOPBACK_NET 0x7f000000  /* 127.0.0.0/8 */
#define IP4_LOOPBACK_MASK 0xff000000
#define IP6_LOOPBACK_LOW 1           /* ::1 */
#define IP6_PASSTHROUGH_LOW 6        /* ::6 */

static __always_inline int is_loopback4(__be32 a)
{
	return (bpf_ntohl(a) & IP4_LOOPBACK_MASK) == IP4_LOOPBACK_NET;
}

static __always_inline int ip6_is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* ::N with N small (::1, ::6) */
static __always_inline int ip6_is_low(const __u32 *a, __u32 n)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(n);
}

static __always_inline void fill_owner(struct conn *c)
{
	__u64 ug = bpf_get_current_uid_gid();

	c->uid = (__u32)ug;
	c->gid = (__u32)(ug >> 32);
}

/* Remember the original destination in the socket's local storage (role app). */
static __always_inline void remember(struct bpf_sock_addr *ctx, __u16 family, const void *addr,
				     __u32 addr_len, __be16 port, __u32 kind)
{
	struct sock_state *st;

	st = bpf_sk_storage_get(&sock_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->role = ROLE_APP;
	st->orig.family = family;
	st->orig.port = port;
	st->orig.kind = kind;
	__builtin_memset(st->orig.addr, 0, sizeof(st->orig.addr));
	if (addr_len == 4)
		__builtin_memcpy(st->orig.addr, addr, 4);
	else
		__builtin_memcpy(st->orig.addr, addr, 16);
}

static __always_inline int pod_has_port(const struct pod_config *pod, __u16 port, __u8 kind)
{
	struct port_key key = { .pod_id = pod->pod_id, .port = port, .kind = kind };

	return bpf_map_lookup_elem(&pod_ports, &key) != NULL;
}

enum owner_verdict {
	OWNER_CONTINUE = 0,
	OWNER_BYPASS = 1,
	OWNER_INBOUND = 2,
};

/* One iteration of the uid (or gid) loop of istio-iptables. Istio skips TCP 53
 * (with DNS capture) in rule (a) of the uid loop only, never of the gid loop. */
static __always_inline int owner_rule(const struct pod_config *pod, const struct conn *c,
				      __u32 owner, __u32 id, int is_uid)
{
	int dns = pod->flags & POD_DNS_CAPTURE;
	int dns_port = dns && c->dport == DNS_PORT;

	if (c->local && !c->dst_loopback1 && c->dport != pod->tunnel_port &&
	    !(is_uid && dns_port) && owner == id)
		return OWNER_INBOUND;
	if (!(pod->flags & POD_OUT_INCLUDE_LOOPBACK) && c->local && !dns_port && owner != id)
		return OWNER_BYPASS;
	if (owner == id)
		return OWNER_BYPASS;
	return OWNER_CONTINUE;
}

static __always_inline int owner_rules(const struct pod_config *pod, const struct conn *c)
{
	int v;

#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_uids)
			break;
		v = owner_rule(pod, c, c->uid, pod->uids[i], 1);
		if (v != OWNER_CONTINUE)
			return v;
	}
#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_gids)
			break;
		v = owner_rule(pod, c, c->gid, pod->gids[i], 0);
		if (v != OWNER_CONTINUE)
			return v;
	}
	return OWNER_CONTINUE;
}

/* Step 5: DNS to a resolv.conf server, or to any address with capture-all. */
static __always_inline int dns_redirected(const struct pod_config *pod, const struct conn *c)
{
	if (!(pod->flags & POD_DNS_CAPTURE) || c->dport != DNS_PORT)
		return 0;
	return (pod->flags & POD_DNS_CAPTURE_ALL) || c->dns_server;
}

/* pod_dns lookup; addr is IPv6 or v4-mapped. Only needed for DNS on, port 53,
 * without capture-all: otherwise no lookup. */
static __always_inline int is_dns_server(const struct pod_config *pod, __u16 dport, const void *addr16)
{
	struct dns_key key = { .pod_id = pod->pod_id };

	if (!(pod->flags & POD_DNS_CAPTURE) || (pod->flags & POD_DNS_CAPTURE_ALL) || dport != DNS_PORT)
		return 0;
	__builtin_memcpy(key.addr, addr16, 16);
	return bpf_map_lookup_elem(&pod_dns, &key) != NULL;
}

/* UDP: Istio's nat OUTPUT DNS rules. Returns the DNS port or 0. */
static __always_inline __u16 decide_dns_udp(const struct pod_config *pod, const struct conn *c)
{
	if (!(pod->flags & POD_DNS_CAPTURE) || c->dport != DNS_PORT)
		return 0;
#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_uids)
			break;
		if (c->uid == pod->uids[i])
			return 0;
	}
#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_gids)
			break;
		if (c->gid == pod->gids[i])
			return 0;
	}
	return dns_redirected(pod, c) ? pod->dns_port : 0;
}

/* Returns the port to redirect a TCP connect to (host order), or 0. The CIDR
 * flags in *c must be filled in by the caller (one LPM lookup each). */
static __always_inline __u16 decide_outbound_tcp(const struct pod_config *pod, const struct conn *c)
{
	if (pod_has_port(pod, c->dport, PORT_OUT_EXCLUDE))
		return 0;
	if (c->local && c->src_passthrough)
		return 0;
	switch (owner_rules(pod, c)) {
	case OWNER_INBOUND:
		return pod->inbound_port;
	case OWNER_BYPASS:
		return 0;
	}
	if (dns_redirected(pod, c))
		return pod->dns_port;
	if (c->dst_loopback1)
		return 0;
	if (c->excluded)
		return 0;
	if (pod_has_port(pod, c->dport, PORT_OUT_INCLUDE))
		return pod->outbound_port;
	if ((pod->flags & POD_OUT_INCLUDE_ALL) || c->included)
		return pod->outbound_port;
	return 0;
}

#endif /* MESHLANE_OUTBOUND_H */
