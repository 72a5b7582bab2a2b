/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the sock_pairs key rule, shared by the sockops side of splice.bpf.c
 * (which adds a socket under its own key) and its sk_msg side (which computes
 * the peer's key).
 *
 * A pair is keyed by the netns cookie when one end is a netns-local address
 * (127/8, ::1, ::6: the same addresses exist in every pod), and by cookie 0 when
 * both ends are pod IPs (unique on the node), so both sockets of a pair between
 * two pods compute the same key for each other although their netns differ.
 */
#ifndef MESHLANE_SPLICE_H
#define MESHLANE_SPLICE_H

#include <linux/types.h>
#include "meshlane.h"
#include "addr.h"

/* The cookie part of a key: the netns when either end is netns-local, else 0. */
static __always_inline __u64 splice_cookie(const struct pair_key *k, __u64 netns)
{
	return addr_is_netns_local(k->local) || addr_is_netns_local(k->remote) ? netns : 0;
}

/* The peer's key from a socket's own: the ends swapped, the same cookie. */
static __always_inline void splice_swap(struct pair_key *p, const struct pair_key *k)
{
	ip6_copy(p->local, k->remote);
	ip6_copy(p->remote, k->local);
	p->local_port = k->remote_port;
	p->remote_port = k->local_port;
	p->pad = 0;
	p->netns_cookie = k->netns_cookie;
}

#endif /* MESHLANE_SPLICE_H */
