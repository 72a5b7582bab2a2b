// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: cgroup connect4 / connect6. For a socket in a captured pod (found by
 * the netns cookie of its network namespace), decide as istio-iptables would and
 * redirect the connect to the pod's proxy on 127.0.0.1 / ::1. The original
 * destination goes into the socket's local storage, for SO_ORIGINAL_DST.
 *
 * The socket is bound to the pod IP first (unless the app bound it already), so
 * the proxy sees podIP:ephemeral as its peer, as it does under iptables REDIRECT.
 *
 * UDP sockets come here only for DNS (connect() to port 53 with DNS capture on,
 * Istio's nat OUTPUT UDP rules); unconnected UDP is dns.bpf.c's sendmsg hooks.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "maps.h"
#include "outbound.h"

#define ALLOW 1

static __always_inline int cidr4_has(const struct pod_config *pod, __u32 kind, __be32 addr)
{
	struct cidr4_key key = {
		.prefixlen = CIDR_KEY_FIXED_BITS + 32,
		.pod_id = pod->pod_id,
		.kind = kind,
		.addr = addr,
	};

	return bpf_map_lookup_elem(&pod_cidrs4, &key) != NULL;
}

static __always_inline int cidr6_has(const struct pod_config *pod, __u32 kind, const __u32 *addr)
{
	struct cidr6_key key = {
		.prefixlen = CIDR_KEY_FIXED_BITS + 128,
		.pod_id = pod->pod_id,
		.kind = kind,
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&pod_cidrs6, &key) != NULL;
}

static __always_inline int ip6_eq(const __u32 *a, const __u8 *b)
{
	const __u32 *w = (const __u32 *)b;

	return a[0] == w[0] && a[1] == w[1] && a[2] == w[2] && a[3] == w[3];
}

/* The IPv4 decision, shared by connect4 and v4-mapped connects on a v6 socket. */
static __always_inline __u16 decide4(const struct pod_config *pod, __be32 dst, __u16 dport,
				     __be32 src, int udp)
{
	__u32 h = bpf_ntohl(dst);
	struct conn c = { .dport = dport };
	__u32 mapped[4] = { 0, 0, bpf_htonl(0x0000ffff), dst };

	c.dns_server = is_dns_server(pod, dport, mapped);
	fill_owner(&c);
	if (udp)
		return decide_dns_udp(pod, &c);

	c.dst_loopback1 = h == IP4_LOOPBACK1;
	c.local = is_loopback4(dst) ||
		  ((pod->flags & POD_HAS_IP4) && dst == pod->ip4);
	c.src_passthrough = bpf_ntohl(src) == IP4_PASSTHROUGH;
	c.excluded = cidr4_has(pod, CIDR_OUT_EXCLUDE, dst);
	c.included = !(pod->flags & POD_OUT_INCLUDE_ALL) && cidr4_has(pod, CIDR_OUT_INCLUDE, dst);
	return decide_outbound_tcp(pod, &c);
}

static __always_inline __u32 kind_of(const struct pod_config *pod, __u16 port)
{
	if (port == pod->outbound_port)
		return CAPTURE_OUTBOUND;
	if (port == pod->dns_port)
		return CAPTURE_DNS;
	return CAPTURE_INBOUND;
}

static __always_inline __u32 stat_of(const struct pod_config *pod, __u16 port)
{
	if (port == pod->outbound_port)
		return STAT_CAPTURED_OUTBOUND;
	if (port == pod->dns_port)
		return STAT_DNS_CAPTURED;
	return STAT_CAPTURED_INBOUND;
}

enum sock_kind {
	SOCK_OTHER = 0, /* left alone */
	SOCK_TCP = 1,
	SOCK_UDP = 2,   /* connected UDP: only DNS is decided (spec 3 step 5) */
};

static __always_inline enum sock_kind sock_kind(const struct bpf_sock_addr *ctx)
{
	if (ctx->type == ML_SOCK_STREAM)
		return SOCK_TCP;
	if (ctx->type == ML_SOCK_DGRAM && ctx->protocol == ML_IPPROTO_UDP)
		return SOCK_UDP;
	return SOCK_OTHER;
}

SEC("cgroup/connect4")
int meshlane_connect4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	struct pod_config *pod;
	struct bpf_sock *sk;
	__be32 dst, src;
	__u16 port;
	enum sock_kind kind;

	pod = bpf_map_lookup_elem(&pods, &cookie);
	if (!pod)
		return ALLOW;
	kind = sock_kind(ctx);
	if (kind == SOCK_OTHER)
		return ALLOW;
	sk = ctx->sk;
	if (!sk)
		return ALLOW;
	stat_inc(STAT_CONNECT_SEEN);
	dst = ctx->user_ip4;
	src = sk->src_ip4;
	port = decide4(pod, dst, bpf_ntohs((__u16)ctx->user_port), src, kind == SOCK_UDP);
	if (!port) {
		stat_inc(STAT_BYPASSED);
		return ALLOW;
	}
	remember(ctx, ML_AF_INET, &dst, 4, (__be16)ctx->user_port, kind_of(pod, port));
	/* Under REDIRECT the source is what routing chose for the original
	 * destination: 127.0.0.1 for 127/8 (which the kernel picks again for
	 * the rewritten 127.0.0.1), the pod IP for everything else. */
	if (src == 0 && !is_loopback4(dst) && (pod->flags & POD_HAS_IP4)) {
		struct sockaddr_in sa = { .sin_family = ML_AF_INET, .sin_addr.s_addr = pod->ip4 };

		/* Fails harmlessly (the kernel then picks 127.0.0.1) if the socket is bound. */
		bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	ctx->user_ip4 = bpf_htonl(IP4_LOOPBACK1);
	ctx->user_port = bpf_htons(port);
	stat_inc(stat_of(pod, port));
	return ALLOW;
}

static __always_inline __u16 decide6(const struct pod_config *pod, const __u32 *dst, __u16 dport,
				     const __u32 *src, int udp)
{
	struct conn c = { .dport = dport };

	c.dns_server = is_dns_server(pod, dport, dst);
	fill_owner(&c);
	if (udp)
		return decide_dns_udp(pod, &c);

	c.dst_loopback1 = ip6_is_low(dst, IP6_LOOPBACK_LOW);
	c.local = c.dst_loopback1 || ip6_is_low(dst, IP6_PASSTHROUGH_LOW) ||
		  ((pod->flags & POD_HAS_IP6) && ip6_eq(dst, pod->ip6));
	/* iptables sees the source routing chose before nat OUTPUT: an unbound
	 * socket dialling ::6 (an address of lo) gets ::6 itself. */
	c.src_passthrough = ip6_is_low(src, IP6_PASSTHROUGH_LOW) ||
			    (!(src[0] | src[1] | src[2] | src[3]) && ip6_is_low(dst, IP6_PASSTHROUGH_LOW));
	c.excluded = cidr6_has(pod, CIDR_OUT_EXCLUDE, dst);
	c.included = !(pod->flags & POD_OUT_INCLUDE_ALL) && cidr6_has(pod, CIDR_OUT_INCLUDE, dst);
	return decide_outbound_tcp(pod, &c);
}

SEC("cgroup/connect6")
int meshlane_connect6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	struct pod_config *pod;
	struct bpf_sock *sk;
	__u32 dst[4], src[4];
	__u16 port, dport;
	enum sock_kind kind;
	int mapped;

	pod = bpf_map_lookup_elem(&pods, &cookie);
	if (!pod)
		return ALLOW;
	kind = sock_kind(ctx);
	if (kind == SOCK_OTHER)
		return ALLOW;
	sk = ctx->sk;
	if (!sk)
		return ALLOW;
	stat_inc(STAT_CONNECT_SEEN);
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	src[0] = sk->src_ip6[0];
	src[1] = sk->src_ip6[1];
	src[2] = sk->src_ip6[2];
	src[3] = sk->src_ip6[3];
	dport = bpf_ntohs((__u16)ctx->user_port);
	/* A v4-mapped destination travels as IPv4: the IPv4 rules decide it. */
	mapped = ip6_is_v4mapped(dst);
	if (mapped)
		port = decide4(pod, dst[3], dport, ip6_is_v4mapped(src) ? src[3] : 0, kind == SOCK_UDP);
	else
		port = decide6(pod, dst, dport, src, kind == SOCK_UDP);
	if (!port) {
		stat_inc(STAT_BYPASSED);
		return ALLOW;
	}
	if (mapped)
		remember(ctx, ML_AF_INET, &dst[3], 4, (__be16)ctx->user_port, kind_of(pod, port));
	else
		remember(ctx, ML_AF_INET6, dst, 16, (__be16)ctx->user_port, kind_of(pod, port));

	/* The source routing would have chosen for the original destination
	 * (see connect4): ::6 for ::6 (it is on lo), nothing for ::1 and
	 * 127/8 (the kernel picks ::1 / 127.0.0.1 again), else the pod IP. */
	if (!(src[0] | src[1] | src[2] | src[3])) {
		struct sockaddr_in6 sa = { .sin6_family = ML_AF_INET6 };

		if (mapped) {
			if (!is_loopback4(dst[3]) && (pod->flags & POD_HAS_IP4)) {
				sa.sin6_addr.in6_u.u6_addr32[2] = bpf_htonl(0x0000ffff);
				sa.sin6_addr.in6_u.u6_addr32[3] = pod->ip4;
				bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
			}
		} else if (ip6_is_low(dst, IP6_PASSTHROUGH_LOW)) {
			sa.sin6_addr.in6_u.u6_addr32[3] = bpf_htonl(IP6_PASSTHROUGH_LOW);
			bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		} else if (!ip6_is_low(dst, IP6_LOOPBACK_LOW) && (pod->flags & POD_HAS_IP6)) {
			__builtin_memcpy(&sa.sin6_addr, pod->ip6, 16);
			bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		}
	}
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = bpf_htonl(IP4_LOOPBACK1);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(IP6_LOOPBACK_LOW);
	}
	ctx->user_port = bpf_htons(port);
	stat_inc(stat_of(pod, port));
	return ALLOW;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
