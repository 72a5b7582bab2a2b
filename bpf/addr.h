/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: every address and port helper, each once. Pure arithmetic: no map
 * lookups (those are in pod.h).
 *
 * Representations:
 *  - an IPv4 address is a __be32;
 *  - a 16-byte address (map keys, a v6 hook's fields) is four __u32 words in
 *    network order, wherever it lives (a key's __u8[16], words copied out of a
 *    context): IPv6, or IPv4 v4-mapped (::ffff:a.b.c.d), taken as `const void *`.
 *    ip6_* helpers are for IPv6 only (the caller has told v4-mapped apart: a
 *    v4-mapped destination is decided by the IPv4 rules); addr_* helpers take
 *    either and apply the ip4_* test to a v4-mapped one.
 *
 * Predicates return bool: clang 14 compiles the decisions built on them
 * smaller than with int (measured on connect4/6).
 *
 * The addresses that matter to istio-iptables: 127.0.0.1 / ::1 (where the
 * proxy listens, and "exactly loopback", spec 3 rule 6), 127.0.0.6 / ::6 (the
 * proxy's inbound passthrough source, rule 3; istio-iptables puts ::6 on lo),
 * and "local": an address of the pod's own network namespace (127/8, ::1, ::6,
 * the pod's IPs), where a packet would leave on lo.
 */
#ifndef MESHLANE_ADDR_H
#define MESHLANE_ADDR_H

#include <stdbool.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"

#define IP6_V4MAPPED_WORD 0x0000ffff /* the third word of ::ffff:a.b.c.d (host order) */
#define IP4_LOOPBACK1 0x7f000001     /* 127.0.0.1 */
#define IP4_PASSTHROUGH 0x7f000006   /* 127.0.0.6 */
#define IP4_LOOPBACK_NET 0x7f000000  /* 127.0.0.0/8 */
#define IP4_LOOPBACK_MASK 0xff000000
#define IP6_LOOPBACK_LOW 1           /* ::1 */
#define IP6_PASSTHROUGH_LOW 6        /* ::6 */
#define PORT_MAX 0xffff

/* ---- IPv4 (ip4_*: a __be32) ---- */

/* 127.0.0.0/8: netns-local (the same addresses exist in every network
 * namespace, so they mean nothing outside it) */
static __always_inline bool ip4_is_loopback(__be32 a)
{
	return (bpf_ntohl(a) & IP4_LOOPBACK_MASK) == IP4_LOOPBACK_NET;
}

/* exactly 127.0.0.1 */
static __always_inline bool ip4_is_loopback1(__be32 a)
{
	return a == bpf_htonl(IP4_LOOPBACK1);
}

/* 127.0.0.6 */
static __always_inline bool ip4_is_passthrough(__be32 a)
{
	return a == bpf_htonl(IP4_PASSTHROUGH);
}

static __always_inline bool ip4_is_pod_ip(const struct pod_config *pod, __be32 a)
{
	return (pod->flags & POD_HAS_IP4) && a == pod->ip4;
}

/* An address of the pod's own network namespace: 127/8 or the pod IP. */
static __always_inline bool ip4_is_local(const struct pod_config *pod, __be32 a)
{
	return ip4_is_loopback(a) || ip4_is_pod_ip(pod, a);
}

/* ---- IPv6 (ip6_*: 16 bytes the caller knows are not v4-mapped; ip6_is_any,
 * ip6_eq and ip6_copy are plain 16-byte operations) ---- */

/* :: (unbound) */
static __always_inline bool ip6_is_any(const void *a)
{
	const __u32 *w = a;

	return !(w[0] | w[1] | w[2] | w[3]);
}

static __always_inline bool ip6_eq(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* ::N with N small (::1, ::6) */
static __always_inline bool ip6_is_low(const void *a, __u32 n)
{
	const __u32 *w = a;

	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(n);
}

/* exactly ::1 */
static __always_inline bool ip6_is_loopback1(const void *a)
{
	return ip6_is_low(a, IP6_LOOPBACK_LOW);
}

/* ::6 */
static __always_inline bool ip6_is_passthrough(const void *a)
{
	return ip6_is_low(a, IP6_PASSTHROUGH_LOW);
}

/* Netns-local: ::1 and ::6 (the IPv6 addresses of every pod's lo). */
static __always_inline bool ip6_is_netns_local(const void *a)
{
	return ip6_is_loopback1(a) || ip6_is_passthrough(a);
}

static __always_inline bool ip6_is_pod_ip(const struct pod_config *pod, const void *a)
{
	return (pod->flags & POD_HAS_IP6) && ip6_eq(a, pod->ip6);
}

/* An address of the pod's own network namespace: ::1, ::6 or the pod IP. */
static __always_inline bool ip6_is_local(const struct pod_config *pod, const void *a)
{
	return ip6_is_netns_local(a) || ip6_is_pod_ip(pod, a);
}

static __always_inline void ip6_set_low(void *out, __u32 n)
{
	__u32 *w = out;

	w[0] = 0;
	w[1] = 0;
	w[2] = 0;
	w[3] = bpf_htonl(n);
}

static __always_inline void ip6_copy(void *out, const void *a)
{
	__u32 *w = out;
	const __u32 *x = a;

	w[0] = x[0];
	w[1] = x[1];
	w[2] = x[2];
	w[3] = x[3];
}

/* ---- either (addr_*: 16 bytes, IPv6 or v4-mapped IPv4) ---- */

static __always_inline bool addr_is_v4mapped(const void *a)
{
	const __u32 *w = a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(IP6_V4MAPPED_WORD);
}

/* The IPv4 address of a v4-mapped one. */
static __always_inline __be32 addr_v4(const void *a)
{
	return ((const __u32 *)a)[3];
}

static __always_inline void addr_set_v4mapped(void *out, __be32 a)
{
	__u32 *w = out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(IP6_V4MAPPED_WORD);
	w[3] = a;
}

/* 16-byte address from a hook's family / ip4 / ip6 fields, the ip6 words
 * already copied out of the context (CTX_IP6_LOAD). */
static __always_inline void addr16(void *out, __u32 family, __be32 ip4, const __u32 *ip6)
{
	if (family == ML_AF_INET)
		addr_set_v4mapped(out, ip4);
	else
		ip6_copy(out, ip6);
}

/* 127/8, ::1, ::6 */
static __always_inline bool addr_is_netns_local(const void *a)
{
	return addr_is_v4mapped(a) ? ip4_is_loopback(addr_v4(a)) : ip6_is_netns_local(a);
}

/* One of the pod's own IPs. */
static __always_inline bool addr_is_pod_ip(const struct pod_config *pod, const void *a)
{
	return addr_is_v4mapped(a) ? ip4_is_pod_ip(pod, addr_v4(a)) : ip6_is_pod_ip(pod, a);
}

/* An address of the pod's own network namespace: netns-local, or a pod IP. */
static __always_inline bool addr_is_local(const struct pod_config *pod, const void *a)
{
	return addr_is_v4mapped(a) ? ip4_is_local(pod, addr_v4(a)) : ip6_is_local(pod, a);
}
/* ---- reading and writing a hook's context ---- */

/* One 4-byte context load per field: clang would merge neighbouring fields into
 * an 8-byte context load, which the verifier refuses (sk_msg, sock_ops). */
#define CTX(field) (*(volatile __u32 *)&(field))

/* Copy a context's IPv6 field (4 words) out first: the verifier refuses a
 * context load through a pointer the compiler has moved. CTX_IP6_LOAD32 for
 * the contexts that refuse merged loads (sk_msg, sock_ops), with CTX; plain
 * loads elsewhere leave clang free to load a word where it is used. */
#define CTX_IP6_LOAD_WITH(load, w, field)   \
	do {                                \
		(w)[0] = load((field)[0]);  \
		(w)[1] = load((field)[1]);  \
		(w)[2] = load((field)[2]);  \
		(w)[3] = load((field)[3]);  \
	} while (0)
#define CTX_PLAIN(field) (field)
#define CTX_IP6_LOAD(w, field) CTX_IP6_LOAD_WITH(CTX_PLAIN, w, field)
#define CTX_IP6_LOAD32(w, field) CTX_IP6_LOAD_WITH(CTX, w, field)

/* Store a 16-byte address into a context's IPv6 field (ctx->member), one 4-byte
 * store per word. barrier_var: clang would otherwise keep &ctx->member[i] from an
 * earlier load in a register and store through it, a moved context pointer the
 * verifier refuses; after the barrier each store is ctx + a constant offset. */
#define CTX_IP6_STORE(ctx, member, src_)                          \
	do {                                                      \
		const __u32 *w_ = (const __u32 *)(src_);          \
                                                                  \
		barrier_var(ctx);                                 \
		(ctx)->member[0] = w_[0];                         \
		(ctx)->member[1] = w_[1];                         \
		(ctx)->member[2] = w_[2];                         \
		(ctx)->member[3] = w_[3];                         \
	} while (0)

/* bpf_sock_addr.user_port: network order in the low 16 bits. */
static __always_inline __u16 user_port(__u32 field)
{
	return bpf_ntohs((__u16)field);
}

/* bpf_sock_ops.remote_port and sk_msg_md.remote_port are in network order;
 * older kernels put them in the upper 16 bits of the field, newer ones in the
 * lower. (Their local_port is in host order.) */
static __always_inline __u16 remote_port(__u32 field)
{
	return field > PORT_MAX ? (__u16)bpf_ntohl(field) : bpf_ntohs((__u16)field);
}

/* A socket's two ends from a sock_ops or sk_msg context (the two name these
 * fields alike): 16-byte addresses (CTX_SOCK_ADDRS), host-order ports
 * (CTX_SOCK_PORTS), or both. Pass the outputs swapped for the view from the
 * other end. */
#define CTX_SOCK_ADDRS(ctx, local_, remote_)                                     \
	do {                                                                     \
		__u32 l6_[4], r6_[4];                                            \
		__u32 family_ = CTX((ctx)->family);                              \
                                                                                 \
		CTX_IP6_LOAD32(l6_, (ctx)->local_ip6);                           \
		CTX_IP6_LOAD32(r6_, (ctx)->remote_ip6);                          \
		addr16((local_), family_, CTX((ctx)->local_ip4), l6_);           \
		addr16((remote_), family_, CTX((ctx)->remote_ip4), r6_);         \
	} while (0)
#define CTX_SOCK_PORTS(ctx, local_port_, remote_port_)                           \
	do {                                                                     \
		*(local_port_) = (__u16)CTX((ctx)->local_port);                  \
		*(remote_port_) = remote_port(CTX((ctx)->remote_port));          \
	} while (0)
#define CTX_SOCK_ENDS(ctx, local_, local_port_, remote_, remote_port_)           \
	do {                                                                     \
		CTX_SOCK_ADDRS(ctx, local_, remote_);                            \
		CTX_SOCK_PORTS(ctx, local_port_, remote_port_);                  \
	} while (0)

#endif /* MESHLANE_ADDR_H */
