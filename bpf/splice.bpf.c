// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: same-node socket splicing with a bounded backlog per direction.
 *
 * sockops (meshlane_splice_sockops) puts an established socket of a captured pod
 * whose peer is on this node into sock_pairs. The sk_msg program (meshlane_splice)
 * hands each of its sends straight to the peer's receive queue
 * (bpf_msg_redirect_hash, BPF_F_INGRESS), skipping TCP/IP and lo or veth.
 *
 * Byte order. A redirected message lands on the peer's ingress queue, which its
 * recvmsg drains BEFORE the TCP receive queue. Going from the stack to the
 * redirect could overtake bytes still unread there; going from the redirect to
 * the stack is safe. So the rule is sticky, per socket (one direction): once a
 * send went through the stack, every later one does.
 *
 * The bound. Redirected bytes have no TCP flow control: a fast writer behind a
 * slow reader would pile up everything it writes. Before each redirect the
 * program reads what the peer is charged for, sk_rmem_alloc (the redirected bytes
 * it has not read, plus its TCP receive queue), through the socket the helper
 * picked (bpf_cast_to_kern_ctx(msg)->sk_redir); if this message would take it
 * past global.splice_budget, the direction goes to the stack for good, where
 * TCP's flow control holds the writer back. The crossing message must not
 * reach the peer either: once the helper has set a redirect, SK_PASS still means
 * "redirect", so it is re-targeted at the sender's own TCP send path (an egress
 * redirect to its own entry), which keeps the order.
 *
 * A direction that falls back marks its peer (splice_marks[peer key]); the peer's
 * program notices at its next send (it looks only when splice_gen moved) and
 * follows: the whole connection goes to the stack. Then both sockets leave
 * sock_pairs (sockops, at the segments they receive from then on), because a
 * socket that stays keeps tcp_bpf's send and receive paths: slower than TCP, and
 * tcp_bpf_recvmsg returns EAGAIN to a blocking reader on any wakeup without data
 * (a kernel bug; see the README). Leaving frees the socket's unread redirected
 * bytes and makes a redirect still on its way to it fail, so a socket leaves
 * only when its own ingress queue is empty and its peer can no longer redirect
 * to it: the peer's psock is gone, or the peer is on the stack for good (marked,
 * or it marked us) and has no send in progress (its psock refcnt is the map's
 * one reference, or global.splice_grace_ns passed since the mark).
 *
 * Never used here: bpf_msg_apply_bytes and bpf_msg_cork_bytes. apply_bytes carries
 * over into later sends without running the program (a redirect past a
 * fallback); a cork holds bytes charged to the sender.
 *
 * Needs kfuncs of 6.2 and the receiver charging of 6.13 (or a stable kernel with
 * the Dec 2024 tcp_bpf patches); the agent checks both before it loads this
 * object (src/dataplane/splice.ts) and leaves splicing off otherwise.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "pod.h"
#include "splice.h"
#include "kern.h"

#define OK 1
#define ML_SK_USER_DATA_PSOCK 4UL /* include/net/sock.h: sk_user_data is a psock */

/* ---- kernel sockets, read through untrusted pointers (PROBE_MEM loads) ---- */

static __always_inline __u64 sock_cookie(struct sock___ml *sk)
{
	return sk->__sk_common.skc_cookie.counter;
}

/* A socket known by its address. TCP sockets are SLAB_TYPESAFE_BY_RCU: the
 * memory stays a socket, and its cookie tells whether it is still the same one. */
static __always_inline struct sock___ml *sock_at(__u64 addr)
{
	return bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct sock___ml));
}

static __always_inline struct sk_psock___ml *psock_of(struct sock___ml *sk)
{
	__u64 ud = (__u64)sk->sk_user_data;

	if (!(ud & ML_SK_USER_DATA_PSOCK))
		return NULL;
	ud &= ML_SK_USER_DATA_PTRMASK;
	if (!ud)
		return NULL;
	return bpf_rdonly_cast((void *)ud, bpf_core_type_id_kernel(struct sk_psock___ml));
}

/* No redirected message waits on this psock: list_empty(&psock->ingress_msg). */
static __always_inline bool ingress_empty(struct sk_psock___ml *ps)
{
	__u64 head = (__u64)ps + bpf_core_field_offset(struct sk_psock___ml, ingress_msg);

	return (__u64)ps->ingress_msg.next == head;
}

/* ---- sk_msg ---- */

/* Keys of a socket that sockops did not set up (the agent's start-up probe puts
 * its own sockets into a private map): from the message. */
static __always_inline void keys_from_msg(struct sk_msg_md *msg, struct splice_state *s)
{
	CTX_SOCK_ENDS(msg, s->self.local, &s->self.local_port, s->self.remote, &s->self.remote_port);
	s->self.pad = 0;
	s->self.netns_cookie = splice_cookie(&s->self, bpf_get_netns_cookie(msg));
	splice_swap(&s->peer, &s->self);
	s->flags |= SPLICE_SK_KEYS;
}

/* This message goes through the stack. A redirect set on it (by this run, to
 * learn the peer, or by an earlier run on the same message) would still be
 * taken on SK_PASS: re-target it at this socket's own TCP send path. */
static __always_inline int to_stack(struct sk_msg_md *msg, struct splice_state *s, struct sk_msg___ml *k)
{
	if (!k->sk_redir)
		return SK_PASS;
	if (bpf_msg_redirect_hash(msg, &sock_pairs, &s->self, 0) != SK_PASS)
		stat_inc(STAT_SPLICE_RETARGET_FAIL); /* it goes to the peer: one message past the bound, order kept */
	return SK_PASS;
}

/* The connection-wide fallback: remember the peer (the socket the redirect
 * helper picked) and mark it, so that it follows at its next send. */
static __always_inline void mark_peer(struct splice_state *s, struct sk_msg___ml *k)
{
	struct sock___ml *peer = k->sk_redir, *self = k->sk;
	struct splice_mark m = {};
	__u32 zero = 0;
	__u64 *gen;

	if (!peer || !self)
		return;
	s->peer_sk = (__u64)peer;
	s->peer_cookie = sock_cookie(peer);
	m.sk = (__u64)self;
	m.cookie = sock_cookie(self);
	m.since_ns = bpf_ktime_get_ns();
	m.target_cookie = s->peer_cookie;
	if (bpf_map_update_elem(&splice_marks, &s->peer, &m, BPF_ANY))
		return;
	gen = bpf_map_lookup_elem(&splice_gen, &zero);
	/* A fetching atomic (its result is used): a full barrier, so the mark is
	 * visible before the leave check reads the peer's refcnt. */
	if (gen)
		s->seen_gen = __sync_fetch_and_add(gen, 1) + 1;
}

/* Did the peer fall back and mark this socket? Looked up only when splice_gen
 * moved since this socket last looked. */
static __always_inline bool marked(struct splice_state *s, struct sock___ml *self)
{
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&splice_gen, &zero);
	struct splice_mark *m;
	__u64 now;

	if (!gen || !self)
		return false;
	now = *(volatile __u64 *)gen;
	if (now == s->seen_gen)
		return false;
	s->seen_gen = now;
	m = bpf_map_lookup_elem(&splice_marks, &s->self);
	if (!m || m->target_cookie != sock_cookie(self))
		return false;
	s->peer_sk = m->sk;
	s->peer_cookie = m->cookie;
	return true;
}

static __always_inline int stack_path(struct sk_msg_md *msg, struct splice_state *s, struct sk_msg___ml *k)
{
	/* On the stack without having seen the peer (none in the map at the first
	 * send yet, or the switch went off first): look for it now, so that both can
	 * leave sock_pairs. The redirect this sets is re-targeted. */
	if (!s->peer_sk && bpf_msg_redirect_hash(msg, &sock_pairs, &s->peer, BPF_F_INGRESS) == SK_PASS)
		mark_peer(s, k);
	return to_stack(msg, s, k);
}

SEC("sk_msg")
int meshlane_splice(struct sk_msg_md *msg)
{
	struct sk_msg___ml *k = bpf_cast_to_kern_ctx(msg);
	struct bpf_sock *sk = msg->sk;
	struct global_config *g;
	struct splice_state *s;
	struct sock___ml *peer;
	__u32 zero = 0;
	__u64 unread;

	if (!sk)
		return SK_PASS;
	/* sockops creates the state before it adds a socket to sock_pairs: only
	 * the probe's sockets get it here (and if that fails, nothing is set on
	 * the message yet: the stack) */
	s = bpf_sk_storage_get(&splice_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		return SK_PASS;
	if (!(s->flags & SPLICE_SK_KEYS))
		keys_from_msg(msg, s);
	if (s->state != SPLICE_STACK && marked(s, k->sk)) {
		s->state = SPLICE_STACK;
		stat_inc(STAT_SPLICE_FALLBACK_PEER);
	}
	if (s->state == SPLICE_STACK)
		return stack_path(msg, s, k);
	g = bpf_map_lookup_elem(&global, &zero);
	if (!g || !(g->flags & GLOBAL_SPLICE)) {
		s->state = SPLICE_STACK;
		stat_inc(STAT_SPLICE_SWITCHED_OFF);
		return stack_path(msg, s, k);
	}
	/* The helper returns SK_DROP when the peer is not in the map: never return
	 * that (the sender would get EACCES). */
	if (bpf_msg_redirect_hash(msg, &sock_pairs, &s->peer, BPF_F_INGRESS) != SK_PASS) {
		s->state = SPLICE_STACK;
		stat_inc(STAT_SPLICE_NO_PEER);
		return stack_path(msg, s, k);
	}
	peer = k->sk_redir;
	if (!peer) {
		s->state = SPLICE_STACK; /* cannot happen after SK_PASS; SK_PASS alone is the stack */
		return SK_PASS;
	}
	unread = (__u32)peer->sk_backlog.rmem_alloc.counter;
	if (unread + CTX(msg->size) > g->splice_budget) {
		s->state = SPLICE_STACK;
		stat_inc(STAT_SPLICE_FALLBACK);
		mark_peer(s, k);
		return to_stack(msg, s, k);
	}
	s->state = SPLICE_REDIR;
	return SK_PASS;
}

/* ---- sockops ---- */

/* The peer counts as on this node when it is netns-local or a captured pod's IP
 * (the pod's own included). */
static __always_inline bool splice_peer_local(const struct pair_key *k)
{
	struct ip6_key k6;
	__be32 k4;

	if (addr_is_netns_local(k->remote))
		return true;
	if (addr_is_v4mapped(k->remote)) {
		k4 = addr_v4(k->remote);
		return bpf_map_lookup_elem(&pod_by_ip4, &k4) != NULL;
	}
	__builtin_memcpy(k6.addr, k->remote, 16);
	return bpf_map_lookup_elem(&pod_by_ip6, &k6) != NULL;
}

/* An established socket of a captured pod whose peer is on this node goes into
 * sock_pairs under its own key, with its splice state. Other sockets pay the
 * `global` lookup and the `pods` lookup, no more. BPF_NOEXIST: never evict a live
 * socket (eviction would drop the data queued on it). The entry leaves the map
 * by itself when the socket closes. */
static __always_inline void on_established(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct global_config *g = bpf_map_lookup_elem(&global, &zero);
	struct bpf_sock *sk = skops->sk;
	struct splice_state *s;
	struct pair_key k = {};
	__u64 netns, *gen;
	long err;

	if (!g || !(g->flags & GLOBAL_SPLICE) || !sk)
		return;
	netns = bpf_get_netns_cookie(skops);
	if (!pod_of_netns(netns))
		return;
	CTX_SOCK_ADDRS(skops, k.local, k.remote);
	if (!splice_peer_local(&k))
		return;
	k.netns_cookie = splice_cookie(&k, netns);
	CTX_SOCK_PORTS(skops, &k.local_port, &k.remote_port);
	s = bpf_sk_storage_get(&splice_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		return; /* the sticky rule lives there: no state, no splicing */
	s->state = SPLICE_NEW;
	s->flags = SPLICE_SK_KEYS;
	s->self = k;
	splice_swap(&s->peer, &k);
	gen = bpf_map_lookup_elem(&splice_gen, &zero);
	if (gen)
		s->seen_gen = *gen;
	/* A mark left for an earlier socket on this key (no mark for this one can
	 * exist yet: its peer finds it only once it is in sock_pairs). */
	bpf_map_delete_elem(&splice_marks, &k);
	bpf_get_socket_cookie(skops); /* marks and the leave check compare cookies: make sure it exists */
	err = bpf_sock_hash_update(skops, &sock_pairs, &k, BPF_NOEXIST);
	if (err == 0) {
		stat_inc(STAT_SPLICED);
		/* sockops at every segment it receives, for the leave check: a spliced
		 * socket receives next to none, so this costs nothing until a fallback */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
	} else if (err == -ML_E2BIG) {
		/* --max-connections sized it: this socket is not spliced (its peer finds
		 * no pair and goes through TCP/IP), captured as ever; counted */
		stat_inc(STAT_SPLICE_TABLE_FULL);
	}
}

/* Every TCP segment a spliced socket receives: once it is on the stack (or its
 * peer is), may it leave sock_pairs? */
static __always_inline void on_segment(struct bpf_sock_ops *skops)
{
	struct bpf_sock_ops_kern___ml *kk = bpf_cast_to_kern_ctx(skops);
	struct splice_mark *by_peer, *ours = NULL;
	struct sock___ml *self = kk->sk, *peer;
	struct bpf_sock *sk = skops->sk;
	struct sk_psock___ml *ps;
	struct splice_state *s;
	struct global_config *g;
	__u32 zero = 0;
	__u64 since;

	if (!sk || !self)
		return;
	s = bpf_sk_storage_get(&splice_state, sk, 0, 0);
	if (!s || (s->flags & SPLICE_SK_LEFT) || !(s->flags & SPLICE_SK_KEYS))
		return;
	/* splice_marks[our key]: our peer fell back; it never redirects to us again */
	by_peer = bpf_map_lookup_elem(&splice_marks, &s->self);
	if (by_peer && by_peer->target_cookie != sock_cookie(self))
		by_peer = NULL;
	if (s->state != SPLICE_STACK && !by_peer)
		return; /* spliced both ways: the end of the handshake, a FIN, a keepalive */
	if (by_peer) {
		s->peer_sk = by_peer->sk;
		s->peer_cookie = by_peer->cookie;
	}
	if (!s->peer_sk)
		return; /* the peer is unknown: it may still redirect here */
	peer = sock_at(s->peer_sk);
	ps = sock_cookie(peer) == s->peer_cookie ? psock_of(peer) : NULL; /* another cookie: gone, memory reused */
	if (ps) {
		/* The peer still has its psock. It must be on the stack for good (it
		 * marked us, or our mark on it is in place: it follows at its next
		 * send), and none of its sends that started before may still be on
		 * the way to our queue: refcnt 1 is the map's reference only, else
		 * wait out the grace period since the mark. */
		if (!by_peer) {
			ours = bpf_map_lookup_elem(&splice_marks, &s->peer);
			if (!ours || ours->target_cookie != s->peer_cookie)
				return; /* our mark was evicted: wait until the peer is gone */
		}
		since = by_peer ? by_peer->since_ns : ours->since_ns;
		g = bpf_map_lookup_elem(&global, &zero);
		if (ps->refcnt.refs.counter > 1 && (!g || bpf_ktime_get_ns() - since < g->splice_grace_ns))
			return;
	}
	ps = psock_of(self);
	if (ps && !ingress_empty(ps))
		return; /* our app has not read all the peer redirected: leaving would free it */
	bpf_map_delete_elem(&sock_pairs, &s->self);
	if (by_peer)
		bpf_map_delete_elem(&splice_marks, &s->self);
	s->flags |= SPLICE_SK_LEFT;
	stat_inc(STAT_SPLICE_LEFT);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
}

SEC("sockops")
int meshlane_splice_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_established(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		on_segment(skops);
		break;
	}
	return OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
