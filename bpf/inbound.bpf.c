// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: sk_lookup, attached to each captured pod's network namespace. A TCP
 * connection that arrives from outside the pod (not on lo: local connections
 * were decided at connect time, as iptables decides them in OUTPUT, never in
 * PREROUTING) and that istio-iptables would redirect to 15006 is handed to the
 * proxy's listening socket with bpf_sk_assign. Nothing is rewritten: the proxy
 * sees the real client as its peer, and the accepted socket's own local address
 * is the original destination (sockops marks it for SO_ORIGINAL_DST).
 *
 * sk_lookup cannot read the netns cookie: the pod is found by the destination
 * address (pod_by_ip4/6). No proxy listener: the SYN is dropped, never handed
 * to the app.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "maps.h"
#include "inbound.h"

static __always_inline __u64 *pod_cookie(const struct bpf_sk_lookup *ctx)
{
	struct ip6_key k6;

	if (ctx->family == ML_AF_INET) {
		__be32 a = ctx->local_ip4;

		return bpf_map_lookup_elem(&pod_by_ip4, &a);
	}
	__builtin_memcpy(k6.addr, (const void *)ctx->local_ip6, sizeof(k6.addr));
	return bpf_map_lookup_elem(&pod_by_ip6, &k6);
}

/* The proxy's listener on `port`: one of the connection's own family, or a
 * dual-stack IPv6 one for IPv4. Returns 0 when assigned. */
static __always_inline int assign(struct bpf_sk_lookup *ctx, __u64 cookie, __u16 port)
{
	struct listener_key key = { .netns_cookie = cookie, .port = port, .family = ctx->family };
	struct bpf_sock *sk;
	long err;

	sk = bpf_map_lookup_elem(&listeners, &key);
	if (!sk && ctx->family == ML_AF_INET) {
		key.family = ML_AF_INET6;
		sk = bpf_map_lookup_elem(&listeners, &key);
	}
	if (!sk)
		return -1;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? -1 : 0;
}

/* A connection from one of the pod's own addresses was made inside the pod:
 * iptables decides those in OUTPUT (at connect time here), never in PREROUTING.
 * Traffic to the pod's own IP does not arrive with lo's ifindex, so the source
 * is the test. */
static __always_inline int from_inside(const struct bpf_sk_lookup *ctx, const struct pod_config *pod)
{
	if (ctx->family == ML_AF_INET) {
		__be32 r = ctx->remote_ip4;

		return (bpf_ntohl(r) >> 24) == 127 || ((pod->flags & POD_HAS_IP4) && r == pod->ip4);
	}
	__u32 r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1], r2 = ctx->remote_ip6[2], r3 = ctx->remote_ip6[3];
	const __u32 *p6 = (const __u32 *)pod->ip6;

	if (r0 == 0 && r1 == 0 && r2 == 0 && (r3 == bpf_htonl(1) || r3 == bpf_htonl(6)))
		return 1;
	if (r0 == 0 && r1 == 0 && r2 == bpf_htonl(0x0000ffff))
		return (bpf_ntohl(r3) >> 24) == 127 || ((pod->flags & POD_HAS_IP4) && r3 == pod->ip4);
	return (pod->flags & POD_HAS_IP6) && r0 == p6[0] && r1 == p6[1] && r2 == p6[2] && r3 == p6[3];
}

SEC("sk_lookup")
int meshlane_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct pod_config *pod;
	__u64 *cookie;
	__u16 port;

	if (ctx->protocol != IPPROTO_TCP || ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return SK_PASS;
	cookie = pod_cookie(ctx);
	if (!cookie)
		return SK_PASS;
	pod = bpf_map_lookup_elem(&pods, cookie);
	if (!pod || from_inside(ctx, pod))
		return SK_PASS;
	port = decide_inbound(pod, (__u16)ctx->local_port, ctx->ingress_ifindex);
	if (!port)
		return SK_PASS;
	if (assign(ctx, *cookie, port)) {
		stat_inc(STAT_INBOUND_NO_LISTENER);
		return SK_DROP;
	}
	stat_inc(STAT_INBOUND_CAPTURED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
