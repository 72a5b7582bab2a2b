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
#include <bpf/bpf_helpers.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "pod.h"
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
static __always_inline bool from_inside(const struct bpf_sk_lookup *ctx, const struct pod_config *pod)
{
	__u32 r[4];

	if (ctx->family == ML_AF_INET)
		return ip4_is_local(pod, ctx->remote_ip4);
	CTX_IP6_LOAD(r, ctx->remote_ip6);
	return addr_is_local(pod, r);
}

SEC("sk_lookup")
int meshlane_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct pod_config *pod;
	__u64 *cookie;
	__u16 port;

	if (ctx->protocol != ML_IPPROTO_TCP || ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return SK_PASS;
	cookie = pod_cookie(ctx);
	if (!cookie)
		return SK_PASS;
	pod = pod_of_netns(*cookie);
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
