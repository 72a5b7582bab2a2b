// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: cgroup connect4 / connect6. For a socket in a captured pod (found by
 * the netns cookie of its network namespace), decide as istio-iptables would and
 * redirect the connect to the pod's proxy on 127.0.0.1 / ::1. The original
 * destination goes into the socket's local storage, for SO_ORIGINAL_DST.
 *
 * The socket gets the pod IP as its source first (bound to it, or marked for the
 * pod's source routing when the app bound it to the wildcard address already), so
 * the proxy sees podIP:port as its peer, as it does under iptables REDIRECT.
 *
 * A TCP redirect the pod has no room to hand over (handover.h: the pod holds its
 * limit of connections between connect() and accept(), or the node is near the
 * capacity of orig_by_tuple) is refused: connect() fails with EPERM.
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
#include "addr.h"
#include "pod.h"
#include "outbound.h"
#include "redirect.h"
#include "handover.h"

/* The address facts of the IPv4 rules (connect4, and a v4-mapped destination
 * on a v6 socket: it travels as IPv4). */
static __always_inline void facts4(struct conn *c, const struct pod_config *pod, __be32 dst, __be32 src)
{
	c->dst_loopback1 = ip4_is_loopback1(dst);
	c->local = ip4_is_local(pod, dst);
	c->src_passthrough = ip4_is_passthrough(src);
}

static __always_inline void facts6(struct conn *c, const struct pod_config *pod, const __u32 *dst,
				   const __u32 *src)
{
	c->dst_loopback1 = ip6_is_loopback1(dst);
	c->local = ip6_is_local(pod, dst);
	/* iptables sees the source routing chose before nat OUTPUT: an unbound
	 * socket dialling ::6 (an address of lo) gets ::6 itself. */
	c->src_passthrough = ip6_is_passthrough(src) || (ip6_is_any(src) && ip6_is_passthrough(dst));
}

/* What a redirect to `port` captures: its kind (kept with the original) and
 * its counter. */
static __always_inline void capture_of(const struct pod_config *pod, __u16 port, __u32 *kind, __u32 *stat)
{
	if (port == pod->outbound_port) {
		*kind = CAPTURE_OUTBOUND;
		*stat = STAT_CAPTURED_OUTBOUND;
	} else if (port == pod->dns_port) {
		*kind = CAPTURE_DNS;
		*stat = STAT_DNS_CAPTURED;
	} else {
		*kind = CAPTURE_INBOUND;
		*stat = STAT_CAPTURED_INBOUND;
	}
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

/* The pod of a connecting socket meshlane decides for (TCP, or UDP for DNS),
 * or NULL: left alone. */
static __always_inline struct pod_config *connect_pod(struct bpf_sock_addr *ctx, __u64 netns, enum sock_kind *kind,
						      struct bpf_sock **sk)
{
	struct pod_config *pod = pod_of_netns(netns);

	if (!pod)
		return NULL;
	*kind = sock_kind(ctx);
	*sk = ctx->sk;
	if (*kind == SOCK_OTHER || !*sk)
		return NULL;
	stat_inc(STAT_CONNECT_SEEN);
	return pod;
}

/* Decide for a destination and a bound source as 16 bytes (IPv4 v4-mapped: a
 * v4-mapped destination on a v6 socket travels as IPv4, so the IPv4 rules
 * decide it). Returns the proxy port, with the original destination
 * remembered and the capture counted; 0: not captured (the reason counted); REFUSED: captured, but
 * a TCP connect whose hand-over the pod has no room for (handover.h). */
#define REFUSED 0xffffffff
static __always_inline __u32 connect_decide(struct bpf_sock_addr *ctx, const struct pod_config *pod, __u64 netns,
					    enum sock_kind kind, const __u32 *dst, const __u32 *src)
{
	struct conn c = {};
	__u32 capture, stat, why = BYPASS_NOT_INCLUDED;
	__u16 port;

	conn_init(&c, pod, user_port(ctx->user_port), dst);
	if (kind == SOCK_UDP) {
		port = decide_udp(pod, &c, &why);
	} else {
		if (addr_is_v4mapped(dst))
			facts4(&c, pod, addr_v4(dst), addr_is_v4mapped(src) ? addr_v4(src) : 0);
		else
			facts6(&c, pod, dst, src);
		port = decide_outbound_tcp(pod, &c, &why);
	}
	if (!port) {
		stat_inc(STAT_BYPASSED);
		bypass_inc(why);
		return 0;
	}
	if (kind == SOCK_TCP && !handover_room(netns))
		return REFUSED;
	capture_of(pod, port, &capture, &stat);
	remember(ctx, dst, (__be16)ctx->user_port, capture);
	stat_inc(stat);
	return port;
}

/*
 * Give a redirected socket the source routing would have chosen for the original destination (the
 * pod IP), as REDIRECT keeps it:
 *  - unbound (no port yet): bind it to that address now (bpf_bind, no port is taken);
 *  - already bound to the wildcard address with a port (bind() before connect(): dig over TCP,
 *    `curl --local-port`, Python's bind(("0.0.0.0", 0)), node's dgram): it cannot be bound again, and
 *    the kernel would pick 127.0.0.1 / ::1 for the proxy's address. It gets MESHLANE_SOURCE_MARK
 *    instead: the pod's policy routing for that mark (the agent's, src/dataplane/pod-netns.ts) has the
 *    pod IP as the preferred source of 127.0.0.1 and ::1. The proxy then sees the same peer and local
 *    address as under REDIRECT, whatever address its listener is bound to (the DNS proxy listens on
 *    loopback only). A socket with a mark of its own keeps it (and, as before, a loopback source).
 * Only the pod IP is given by the mark: any other wanted source (::6) is bound or nothing.
 * One context read decides; a helper call either way.
 */
static __always_inline void source_bind_or_mark(struct bpf_sock_addr *ctx, const struct bpf_sock *sk, void *sa,
						int len, bool pod_ip)
{
	int mark = MESHLANE_SOURCE_MARK;

	if (!sk->src_port) {
		bpf_bind(ctx, sa, len);
		return;
	}
	if (pod_ip && !sk->mark)
		bpf_setsockopt(ctx, ML_SOL_SOCKET, ML_SO_MARK, &mark, sizeof(mark));
}

/* After the decision: give an unbound or wildcard-bound socket its source, then send it to the proxy. */
static __always_inline void connect_to_proxy4(struct bpf_sock_addr *ctx, const struct bpf_sock *sk,
					      const struct pod_config *pod, const __u32 *dst, const __u32 *src,
					      __u16 port)
{
	if (addr_v4(src) == 0) {
		struct sockaddr_in sa = { .sin_family = ML_AF_INET };

		if (redirect_source4(pod, addr_v4(dst), &sa.sin_addr.s_addr))
			source_bind_or_mark(ctx, sk, &sa, sizeof(sa), true);
	}
	redirect_to4(ctx, port);
}

static __always_inline void connect_to_proxy6(struct bpf_sock_addr *ctx, const struct bpf_sock *sk,
					      const struct pod_config *pod, const __u32 *dst, const __u32 *src,
					      __u16 port)
{
	if (ip6_is_any(src)) {
		struct sockaddr_in6 sa = { .sin6_family = ML_AF_INET6 };

		if (redirect_source16(pod, dst, &sa.sin6_addr))
			source_bind_or_mark(ctx, sk, &sa, sizeof(sa), addr_is_pod_ip(pod, &sa.sin6_addr));
	}
	redirect_to6(ctx, addr_is_v4mapped(dst), port);
}

/* connect4 and connect6; family is a constant, so each program keeps only its
 * own family's context accesses. */
static __always_inline int connect_hook(struct bpf_sock_addr *ctx, __u32 family)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	enum sock_kind kind;
	struct bpf_sock *sk;
	struct pod_config *pod = connect_pod(ctx, netns, &kind, &sk);
	__u32 dst[4], src[4];
	__u32 port;

	if (!pod)
		return ML_ALLOW;
	if (family == ML_AF_INET) {
		addr_set_v4mapped(dst, ctx->user_ip4);
		addr_set_v4mapped(src, sk->src_ip4);
	} else {
		CTX_IP6_LOAD(dst, ctx->user_ip6);
		CTX_IP6_LOAD(src, sk->src_ip6);
	}
	port = connect_decide(ctx, pod, netns, kind, dst, src);
	if (!port)
		return ML_ALLOW;
	if (port == REFUSED)
		return ML_REFUSE; /* connect() fails with EPERM: never a bypass */
	if (family == ML_AF_INET)
		connect_to_proxy4(ctx, sk, pod, dst, src, port);
	else
		connect_to_proxy6(ctx, sk, pod, dst, src, port);
	return ML_ALLOW;
}

SEC("cgroup/connect4")
int meshlane_connect4(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, ML_AF_INET);
}

SEC("cgroup/connect6")
int meshlane_connect6(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, ML_AF_INET6);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
