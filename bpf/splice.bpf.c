// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: same-node socket splicing. An sk_msg program on sock_pairs: every
 * send on a socket in that map (sockops put it there) is handed straight to the
 * receive queue of its peer socket (bpf_msg_redirect_hash with BPF_F_INGRESS),
 * skipping TCP/IP and the loopback or veth device. A socket whose peer is not in
 * the map sends through the stack as usual.
 *
 * Byte order across the two paths. A redirected message lands on the peer's
 * ingress message queue, which its recvmsg drains BEFORE the TCP receive queue.
 * So going from the stack to the redirect could overtake bytes still unread in
 * the peer's TCP queue (e.g. sent before the peer's PASSIVE_ESTABLISHED put it in
 * the map), while going from the redirect to the stack is safe. Hence a sticky
 * per-socket rule: once a socket has sent one message through the stack, it
 * never redirects again. The `global` switch is read on every message, so turning
 * splicing off moves live pairs back to the stack (the safe direction).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshlane.h"
#include "maps.h"
#include "addr.h"
#include "splice.h"

enum splice_state {
	SPLICE_NEW = 0,    /* no message sent yet: peer key not computed */
	SPLICE_REDIR = 1,  /* sends go to the peer */
	SPLICE_STACK = 2,  /* a message went through the stack: stays there */
};

struct splice_sk {
	__u32 state; /* enum splice_state */
	__u32 pad;
	struct pair_key peer;
};

/* Private to this object (not pinned, not shared): dies with the socket. A
 * restarted agent's new program gets a new map; sockets already in sock_pairs
 * keep the program (and this map) they were added with. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct splice_sk);
} splice_sk SEC(".maps");

/* The peer's key: this socket's key with the ends swapped, the same cookie rule. */
static __always_inline void peer_key(struct sk_msg_md *msg, struct pair_key *p)
{
	CTX_SOCK_ENDS(msg, p->remote, &p->remote_port, p->local, &p->local_port);
	p->pad = 0;
	p->netns_cookie = splice_cookie(p, bpf_get_netns_cookie(msg));
}

SEC("sk_msg")
int meshlane_splice(struct sk_msg_md *msg)
{
	__u32 zero = 0;
	struct global_config *g;
	struct splice_sk *s;
	struct bpf_sock *sk = msg->sk;

	if (!sk)
		return SK_PASS;
	s = bpf_sk_storage_get(&splice_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		return SK_PASS; /* no memory: the stack, this once (and from now on, as below) */
	if (s->state == SPLICE_STACK)
		return SK_PASS;
	g = bpf_map_lookup_elem(&global, &zero);
	if (!g || !(g->flags & GLOBAL_SPLICE)) {
		s->state = SPLICE_STACK;
		return SK_PASS;
	}
	if (s->state == SPLICE_NEW) {
		peer_key(msg, &s->peer);
		s->state = SPLICE_REDIR;
	}
	/* SK_PASS with a redirect set means "redirect"; without, "the stack". The
	 * helper returns SK_DROP when the peer is not in the map: never return that
	 * (the sender would get EACCES). */
	if (bpf_msg_redirect_hash(msg, &sock_pairs, &s->peer, BPF_F_INGRESS) != SK_PASS)
		s->state = SPLICE_STACK;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
