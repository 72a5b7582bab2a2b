/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: a redirected socket, as the cgroup sock_addr hooks see it.
 *  - connect4/6 and sendmsg4/6 send it to the pod's proxy on 127.0.0.1 / ::1
 *    (redirect_to4/6), from the source routing would have chosen for the
 *    original destination (redirect_source4/6), and remember that destination
 *    in the socket's local storage (remember);
 *  - getpeername4/6 and recvmsg4/6 report the remembered destination where the
 *    kernel would report the proxy (restore4/6), as conntrack's reverse NAT does
 *    under iptables;
 *  - sockops keeps an inbound capture's original destination (orig_set).
 */
#ifndef MESHLANE_REDIRECT_H
#define MESHLANE_REDIRECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "pod.h"

/* An original destination from a 16-byte address: a v4-mapped one is kept as
 * IPv4 (what a v6 socket dialling IPv4 asked for travels as IPv4). */
static __always_inline void orig_set(struct orig_dst *o, const void *addr16, __be16 port, __u32 kind)
{
	o->port = port;
	o->kind = kind;
	__builtin_memset(o->addr, 0, sizeof(o->addr));
	if (addr_is_v4mapped(addr16)) {
		__be32 a = addr_v4(addr16);

		o->family = ML_AF_INET;
		__builtin_memcpy(o->addr, &a, 4);
	} else {
		o->family = ML_AF_INET6;
		__builtin_memcpy(o->addr, addr16, 16);
	}
}

/* Remember the original destination in the socket's local storage (role app). */
static __always_inline void remember(struct bpf_sock_addr *ctx, const void *addr16, __be16 port, __u32 kind)
{
	struct sock_state *st;

	st = bpf_sk_storage_get(&sock_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->role = ROLE_APP;
	orig_set(&st->orig, addr16, port, kind);
}

/* Under REDIRECT the source is what routing chose for the original destination:
 * 127.0.0.1 for 127/8 (which the kernel picks again for the rewritten
 * 127.0.0.1), the pod IP for everything else. False when the kernel's own
 * choice is that source, else true with *src set. */
static __always_inline bool redirect_source4(const struct pod_config *pod, __be32 dst, __be32 *src)
{
	if (ip4_is_loopback(dst) || !(pod->flags & POD_HAS_IP4))
		return false;
	*src = pod->ip4;
	return true;
}

/* The same for an IPv6 destination: ::6 for ::6 (it is on lo), nothing for ::1
 * (the kernel picks ::1 again), else the pod IP. */
static __always_inline bool redirect_source6(const struct pod_config *pod, const void *dst, void *src)
{
	if (ip6_is_passthrough(dst)) {
		ip6_set_low(src, IP6_PASSTHROUGH_LOW);
		return true;
	}
	if (ip6_is_loopback1(dst) || !(pod->flags & POD_HAS_IP6))
		return false;
	ip6_copy(src, pod->ip6);
	return true;
}

/* Either, for a 16-byte destination (v4-mapped: the IPv4 rule). */
static __always_inline bool redirect_source16(const struct pod_config *pod, const void *dst16, void *src16)
{
	__be32 src4;

	if (!addr_is_v4mapped(dst16))
		return redirect_source6(pod, dst16, src16);
	if (!redirect_source4(pod, addr_v4(dst16), &src4))
		return false;
	addr_set_v4mapped(src16, src4);
	return true;
}

/* Send the connect / datagram to the proxy: 127.0.0.1:port (host order). */
static __always_inline void redirect_to4(struct bpf_sock_addr *ctx, __u16 port)
{
	ctx->user_ip4 = bpf_htonl(IP4_LOOPBACK1);
	ctx->user_port = bpf_htons(port);
}

/* ::1:port, or ::ffff:127.0.0.1:port for a v4-mapped destination. */
static __always_inline void redirect_to6(struct bpf_sock_addr *ctx, int v4mapped, __u16 port)
{
	__u32 proxy[4];

	if (v4mapped)
		addr_set_v4mapped(proxy, bpf_htonl(IP4_LOOPBACK1));
	else
		ip6_set_low(proxy, IP6_LOOPBACK_LOW);
	CTX_IP6_STORE(ctx, user_ip6, proxy);
	ctx->user_port = bpf_htons(port);
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

/* Put the original back where the kernel reports 127.0.0.1:<proxy port>. */
static __always_inline void restore4(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sock_state *st;

	if (!ip4_is_loopback1(ctx->user_ip4))
		return;
	st = redirected_state(ctx, dns_only);
	if (!st || st->orig.family != ML_AF_INET)
		return;
	ctx->user_ip4 = *(__be32 *)st->orig.addr;
	ctx->user_port = st->orig.port;
}

/* The same for ::1 (an IPv6 original) and ::ffff:127.0.0.1 (an IPv4 one). */
static __always_inline void restore6(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sock_state *st;
	__u32 a[4];
	int mapped;

	CTX_IP6_LOAD(a, ctx->user_ip6);
	mapped = addr_is_v4mapped(a);
	if (mapped ? !ip4_is_loopback1(addr_v4(a)) : !ip6_is_loopback1(a))
		return;
	st = redirected_state(ctx, dns_only);
	if (!st)
		return;
	if (mapped && st->orig.family == ML_AF_INET)
		ctx->user_ip6[3] = *(__u32 *)st->orig.addr;
	else if (!mapped && st->orig.family == ML_AF_INET6)
		CTX_IP6_STORE(ctx, user_ip6, st->orig.addr);
	else
		return;
	ctx->user_port = st->orig.port;
}

#endif /* MESHLANE_REDIRECT_H */
