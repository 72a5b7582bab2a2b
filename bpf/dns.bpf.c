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
 * A connected socket's peer (getpeername) is peername.bpf.c's.
 *
 * v4-mapped destinations on v6 sockets follow the IPv4 rules. One original per
 * socket: a socket that queries several servers at once sees every reply as
 * coming from the last one it asked.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "pod.h"
#include "outbound.h"
#include "redirect.h"

/* Only DNS is decided: a captured pod's other datagrams pay this test and no
 * more (no owner, no lookup). */
static __always_inline __u16 decide_sendmsg(const struct pod_config *pod, __u16 dport, const void *dst16)
{
	struct conn c = {};
	__u32 why; /* not counted: unconnected datagrams are not connect decisions */

	if (!dns_captured(pod, dport))
		return 0;
	conn_init(&c, pod, dport, dst16);
	return decide_udp(pod, &c, &why);
}

SEC("cgroup/sendmsg4")
int meshlane_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct pod_config *pod = pod_of(ctx);
	__u32 dst16[4];
	__be32 dst, src;
	__u16 port;

	if (!pod || !ctx->sk)
		return ML_ALLOW;
	dst = ctx->user_ip4;
	addr_set_v4mapped(dst16, dst);
	port = decide_sendmsg(pod, user_port(ctx->user_port), dst16);
	if (!port)
		return ML_ALLOW;
	remember(ctx, dst16, (__be16)ctx->user_port, CAPTURE_DNS);
	/* The source routing picks for the server (REDIRECT keeps it); the kernel
	 * would pick 127.0.0.1 for the rewritten destination. */
	if (ctx->msg_src_ip4 == 0 && redirect_source4(pod, dst, &src))
		ctx->msg_src_ip4 = src;
	redirect_to4(ctx, port);
	stat_inc(STAT_DNS_CAPTURED);
	return ML_ALLOW;
}

SEC("cgroup/sendmsg6")
int meshlane_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct pod_config *pod = pod_of(ctx);
	__u32 dst[4], src[4];
	__u16 port;
	int mapped;

	if (!pod || !ctx->sk)
		return ML_ALLOW;
	CTX_IP6_LOAD(dst, ctx->user_ip6);
	port = decide_sendmsg(pod, user_port(ctx->user_port), dst);
	if (!port)
		return ML_ALLOW;
	remember(ctx, dst, (__be16)ctx->user_port, CAPTURE_DNS);
	/* (The kernel hands a v4-mapped destination to sendmsg4; kept for safety,
	 * without touching the source.) */
	mapped = addr_is_v4mapped(dst);
	CTX_IP6_LOAD(src, ctx->msg_src_ip6);
	if (!mapped && ip6_is_any(src) && redirect_source6(pod, dst, src))
		CTX_IP6_STORE(ctx, msg_src_ip6, src);
	redirect_to6(ctx, mapped, port);
	stat_inc(STAT_DNS_CAPTURED);
	return ML_ALLOW;
}

SEC("cgroup/recvmsg4")
int meshlane_recvmsg4(struct bpf_sock_addr *ctx)
{
	restore4(ctx, 1);
	return ML_ALLOW;
}

SEC("cgroup/recvmsg6")
int meshlane_recvmsg6(struct bpf_sock_addr *ctx)
{
	restore6(ctx, 1);
	return ML_ALLOW;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
