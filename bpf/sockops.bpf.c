// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: sockops. Hands the original destination of a redirected connection
 * from the app's socket to the proxy's accepted socket:
 *  - TCP_CONNECT_CB (app side, source port now known): publish the original
 *    destination in orig_by_tuple under the connection's 4-tuple and netns.
 *  - PASSIVE_ESTABLISHED_CB (proxy side, a socket accepted on 127.0.0.1 / ::1
 *    and a proxy port of a captured pod): move it into the accepted socket's
 *    local storage, where getsockopt(SO_ORIGINAL_DST) finds it, and delete the
 *    tuple entry.
 *  - STATE_CB, TCP_CLOSE (app side): delete the tuple entry if the connection
 *    never reached the proxy (refused, reset, never accepted).
 * Every entry added and every entry removed moves its pod's count (handover.h),
 * which connect4/6 hold against the pod's limit.
 * And registers the proxies' listening sockets (TCP_LISTEN_CB) in `listeners`,
 * where the inbound sk_lookup program finds them.
 * Splicing has its own sockops program (splice.bpf.c): it needs kernel features
 * this one must not depend on.
 * Nothing is left to LRU eviction: storage dies with its socket.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "pod.h"
#include "redirect.h"
#include "inbound.h"
#include "handover.h"

#define OK 1

/* The key as the connecting side sees it: src = local, dst = remote. */
static __always_inline void key_active(struct bpf_sock_ops *skops, struct tuple_key *k)
{
	k->netns_cookie = bpf_get_netns_cookie(skops);
	CTX_SOCK_ENDS(skops, k->src, &k->src_port, k->dst, &k->dst_port);
	k->pad = 0;
}

static __always_inline struct sock_state *app_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sock_state *st;

	if (!sk)
		return NULL;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || st->role != ROLE_APP)
		return NULL;
	return st;
}

static __always_inline void on_connect(struct bpf_sock_ops *skops)
{
	struct sock_state *st = app_state(skops);
	struct tuple_key k = {};

	if (!st)
		return;
	key_active(skops, &k);
	/* A new entry is counted for its pod (handover.h); an entry already under this key (a tuple
	 * left by a connection that went without its TCP_CLOSE) is replaced, and counted already. */
	if (bpf_map_update_elem(&orig_by_tuple, &k, &st->orig, BPF_NOEXIST) == 0)
		handover_count(k.netns_cookie, 1);
	else if (bpf_map_update_elem(&orig_by_tuple, &k, &st->orig, BPF_EXIST))
		stat_inc(STAT_HANDOVER_FULL);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* Delete a hand-over entry; the pod's count follows when there was one. */
static __always_inline void handover_delete(const struct tuple_key *k)
{
	if (bpf_map_delete_elem(&orig_by_tuple, k) == 0)
		handover_count(k->netns_cookie, -1);
}

/* Where connect4/6 send a redirected connection: 127.0.0.1 / ::1 (v4-mapped for a v4-mapped
 * destination) on one of the pod's proxy ports. Only a connection accepted there can have a hand-over. */
static __always_inline bool redirect_target(const struct pod_config *pod, const struct tuple_key *k)
{
	const void *local = k->dst;

	if (k->dst_port != pod->outbound_port && k->dst_port != pod->inbound_port && k->dst_port != pod->dns_port)
		return false;
	return addr_is_v4mapped(local) ? ip4_is_loopback1(addr_v4(local)) : ip6_is_loopback1(local);
}

/*
 * A connection from outside the pod, accepted without a hand-over: if the
 * inbound rules capture its port, sk_lookup steered it to the proxy's listener
 * (nothing else can accept it), and its original destination is its own local
 * address. Deciding again here keeps no per-SYN state that a SYN flood could fill.
 */
static __always_inline void on_accept_inbound(struct bpf_sock_ops *skops, const struct pod_config *pod,
					      const struct tuple_key *k)
{
	struct bpf_sock *sk = skops->sk;
	struct sock_state *st;

	/* from inside the pod (decided at connect), or not to the pod's own IP */
	if (!sk || addr_is_local(pod, k->src) || !addr_is_pod_ip(pod, k->dst))
		return;
	if (!decide_inbound(pod, k->dst_port, IFINDEX_UNKNOWN))
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->role = ROLE_PROXY;
	orig_set(&st->orig, k->dst, bpf_htons(k->dst_port), CAPTURE_INBOUND);
}

/*
 * PASSIVE_ESTABLISHED: sockets of pods that are not captured are left at once
 * (one `pods` lookup: nothing was redirected to them). The hand-over is looked
 * up only for a socket accepted where connect4/6 redirect to; everything else
 * is a connection from outside (or the proxy's forward to the app), decided by
 * the inbound rules.
 */
static __always_inline void on_accept(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};
	struct pod_config *pod;
	struct orig_dst *orig;
	struct sock_state *st;

	k.netns_cookie = bpf_get_netns_cookie(skops);
	pod = pod_of_netns(k.netns_cookie);
	if (!pod)
		return;
	CTX_SOCK_ENDS(skops, k.dst, &k.dst_port, k.src, &k.src_port);
	if (redirect_target(pod, &k)) {
		orig = bpf_map_lookup_elem(&orig_by_tuple, &k);
		if (orig) {
			if (skops->sk) {
				st = bpf_sk_storage_get(&sock_state, skops->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
				if (st) {
					st->role = ROLE_PROXY;
					st->orig = *orig;
				}
			}
			handover_delete(&k);
			return;
		}
	}
	if (k.dst_port == pod->outbound_port || k.dst_port == pod->inbound_port)
		stat_inc(STAT_PROXY_PORT_UNCAPTURED);
	else
		on_accept_inbound(skops, pod, &k);
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};

	if (!app_state(skops))
		return;
	key_active(skops, &k);
	handover_delete(&k);
}

/* A proxy port of the pod, or before its pod is captured one of Istio's
 * defaults (the agent may learn of the pod after the proxy started). */
static __always_inline bool listener_port(const struct pod_config *pod, __u16 port)
{
	if (pod)
		return port == pod->inbound_port || port == pod->outbound_port || port == pod->dns_port;
	return port == ML_DEFAULT_INBOUND_PORT || port == ML_DEFAULT_OUTBOUND_PORT ||
	       port == ML_DEFAULT_DNS_PORT;
}

static __always_inline void on_listen(struct bpf_sock_ops *skops)
{
	struct listener_key k = {
		.netns_cookie = bpf_get_netns_cookie(skops),
		.port = (__u16)skops->local_port,
		.family = (__u16)skops->family,
	};
	struct pod_config *pod = pod_of_netns(k.netns_cookie);

	if (!listener_port(pod, k.port))
		return;
	/* Leaves the map by itself when the listener closes. A full map (--max-pods sized
	 * it) leaves the listener out: inbound to it is dropped (never delivered around
	 * the proxy), and counted here. */
	if (bpf_sock_hash_update(skops, &listeners, &k, BPF_ANY) == -ML_E2BIG)
		stat_inc(STAT_LISTENERS_FULL);
}

SEC("sockops")
int meshlane_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		on_connect(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_accept(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		on_listen(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == ML_TCP_CLOSE)
			on_close(skops);
		break;
	}
	return OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
