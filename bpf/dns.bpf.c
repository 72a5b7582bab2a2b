// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: UDP DNS capture (capture-spec section 3 step 5, as Istio's nat
 * OUTPUT UDP rules of --redirect-dns / --capture-all-dns).
 *
 *  - cgroup/sendmsg4, sendmsg6: an unconnected UDP datagram of a captured pod to
 *    port 53 (a resolv.conf server, or any with capture-all; not from a proxy
 *    uid/gid) is sent to 127.0.0.1 / ::1 :dns_port instead. Its source is what
 *    routing would have chosen for the server (the pod IP), as under REDIRECT,
 *    unless the app bound one. The server asked for is kept in the socket's
 *    local storage (role app, kind CAPTURE_DNS). Connected UDP is decided in
 *    connect.bpf.c (connect4/6) with the same rules.
 *  - cgroup/recvmsg4, recvmsg6: a datagram arriving on such a socket from the
 *    proxy's 127.0.0.1 / ::1 :dns_port is reported as coming from the server the
 *    app asked (conntrack's reverse NAT under iptables).
 *  - cgroup/getpeername4, getpeername6: a socket redirected to the proxy (TCP
 *    outbound, the hairpin to 15006, DNS over UDP or TCP) reports the address
 *    the app dialled as its peer, not the proxy (conntrack does this under
 *    iptables).
 *
 * v4-mapped destinations on v6 sockets follow the IPv4 rules. One original per
 * socket: a socket that queries several servers at once sees every reply as
 * coming from the last one it asked.
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

static __always_inline struct pod_config *pod_of(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&pods, &cookie);
}

/* The UDP decision for a destination given as IPv6 or v4-mapped. */
static __always_inline __u16 decide_udp(const struct pod_config *pod, const __u32 *dst16, __u16 dport)
{
	struct conn c = { .dport = dport };

	if (!(pod->flags & POD_DNS_CAPTURE) || dport != DNS_PORT)
		return 0;
	c.dns_server = is_dns_server(pod, dport, dst16);
	fill_owner(&c);
	return decide_dns_udp(pod, &c);
}

SEC("cgroup/sendmsg4")
int meshlane_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct pod_config *pod = pod_of(ctx);
	__u32 dst16[4];
	__be32 dst;
	__u16 port;

	if (!pod || !ctx->sk)
		return ALLOW;
	dst = ctx->user_ip4;
	dst16[0] = 0;
	dst16[1] = 0;
	dst16[2] = bpf_htonl(0x0000ffff);
	dst16[3] = dst;
	port = decide_udp(pod, dst16, bpf_ntohs((__u16)ctx->user_port));
	if (!port)
		return ALLOW;
	remember(ctx, ML_AF_INET, &dst, 4, (__be16)ctx->user_port, CAPTURE_DNS);
	/* The source routing picks for the server (REDIRECT keeps it); the kernel
	 * would pick 127.0.0.1 for the rewritten destination. */
	if (ctx->msg_src_ip4 == 0 && !is_loopback4(dst) && (pod->flags & POD_HAS_IP4))
		ctx->msg_src_ip4 = pod->ip4;
	ctx->user_ip4 = bpf_htonl(IP4_LOOPBACK1);
	ctx->user_port = bpf_htons(port);
	stat_inc(STAT_DNS_CAPTURED);
	return ALLOW;
}

SEC("cgroup/sendmsg6")
int meshlane_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct pod_config *pod = pod_of(ctx);
	__u32 dst[4], src[4];
	__u16 port;
	int mapped;

	if (!pod || !ctx->sk)
		return ALLOW;
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	port = decide_udp(pod, dst, bpf_ntohs((__u16)ctx->user_port));
	if (!port)
		return ALLOW;
	/* (The kernel hands a v4-mapped destination to sendmsg4; kept for safety.) */
	mapped = ip6_is_v4mapped(dst);
	if (mapped)
		remember(ctx, ML_AF_INET, &dst[3], 4, (__be16)ctx->user_port, CAPTURE_DNS);
	else
		remember(ctx, ML_AF_INET6, dst, 16, (__be16)ctx->user_port, CAPTURE_DNS);
	src[0] = ctx->msg_src_ip6[0];
	src[1] = ctx->msg_src_ip6[1];
	src[2] = ctx->msg_src_ip6[2];
	src[3] = ctx->msg_src_ip6[3];
	if (!mapped && !(src[0] | src[1] | src[2] | src[3])) {
		if (ip6_is_low(dst, IP6_PASSTHROUGH_LOW)) {
			ctx->msg_src_ip6[3] = bpf_htonl(IP6_PASSTHROUGH_LOW);
		} else if (!ip6_is_low(dst, IP6_LOOPBACK_LOW) && (pod->flags & POD_HAS_IP6)) {
			const __u32 *p = (const __u32 *)pod->ip6;

			ctx->msg_src_ip6[0] = p[0];
			ctx->msg_src_ip6[1] = p[1];
			ctx->msg_src_ip6[2] = p[2];
			ctx->msg_src_ip6[3] = p[3];
		}
	}
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0x0000ffff) : 0;
	ctx->user_ip6[3] = mapped ? bpf_htonl(IP4_LOOPBACK1) : bpf_htonl(IP6_LOOPBACK_LOW);
	ctx->user_port = bpf_htons(port);
	stat_inc(STAT_DNS_CAPTURED);
	return ALLOW;
}

/* The proxy port a capture of `kind` went to. */
static __always_inline __u16 redirect_port(const struct pod_config *pod, __u32 kind)
{
	switch (kind) {
	case CAPTURE_OUTBOUND:
		return pod->outbound_port;
	case CAPTURE_INBOUND:
		return pod->inbound_port;
	case CAPTURE_DNS:
		return pod->dns_port;
	}
	return 0;
}

/* The original of a redirected socket, if the address the kernel reports (a
 * datagram's source, or the socket's peer) is the proxy it was redirected to.
 * dns_only: datagrams (recvmsg) come back only from the DNS proxy; a connected
 * socket's peer (getpeername) is restored for every capture, as conntrack's
 * reverse NAT does under iptables. */
static __always_inline struct sock_state *redirected_state(struct bpf_sock_addr *ctx, int dns_only)
{
	struct pod_config *pod;
	struct sock_state *st;

	if (!ctx->sk)
		return NULL;
	st = bpf_sk_storage_get(&sock_state, ctx->sk, 0, 0);
	if (!st || st->role != ROLE_APP || (dns_only && st->orig.kind != CAPTURE_DNS))
		return NULL;
	pod = pod_of(ctx);
	if (!pod || ctx->user_port != bpf_htons(redirect_port(pod, st->orig.kind)))
		return NULL;
	return st;
}

static __always_inline int restore4(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sock_state *st;

	if (ctx->user_ip4 != bpf_htonl(IP4_LOOPBACK1))
		return ALLOW;
	st = redirected_state(ctx, dns_only);
	if (!st || st->orig.family != ML_AF_INET)
		return ALLOW;
	ctx->user_ip4 = *(__be32 *)st->orig.addr;
	ctx->user_port = st->orig.port;
	return ALLOW;
}

static __always_inline int restore6(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sock_state *st;
	__u32 a[4];
	int mapped;

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	mapped = ip6_is_v4mapped(a);
	if (mapped ? a[3] != bpf_htonl(IP4_LOOPBACK1) : !ip6_is_low(a, IP6_LOOPBACK_LOW))
		return ALLOW;
	st = redirected_state(ctx, dns_only);
	if (!st)
		return ALLOW;
	if (mapped && st->orig.family == ML_AF_INET) {
		ctx->user_ip6[3] = *(__u32 *)st->orig.addr;
	} else if (!mapped && st->orig.family == ML_AF_INET6) {
		const __u32 *o = (const __u32 *)st->orig.addr;

		ctx->user_ip6[0] = o[0];
		ctx->user_ip6[1] = o[1];
		ctx->user_ip6[2] = o[2];
		ctx->user_ip6[3] = o[3];
	} else {
		return ALLOW;
	}
	ctx->user_port = st->orig.port;
	return ALLOW;
}

SEC("cgroup/recvmsg4")
int meshlane_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx, 1);
}

SEC("cgroup/recvmsg6")
int meshlane_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx, 1);
}

SEC("cgroup/getpeername4")
int meshlane_getpeername4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx, 0);
}

SEC("cgroup/getpeername6")
int meshlane_getpeername6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
