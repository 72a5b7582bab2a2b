/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the sock_pairs key rule, shared by sockops (which adds a socket under
 * its own key) and the sk_msg program (which computes its peer's key).
 *
 * A pair is keyed by the netns cookie when one end is a netns-local address
 * (127/8, ::1, ::6: the same addresses exist in every pod), and by cookie 0 when
 * both ends are pod IPs (unique on the node), so both sockets of a pair between
 * two pods compute the same key for each other although their netns differ.
 */
#ifndef MESHLANE_SPLICE_H
#define MESHLANE_SPLICE_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"
#include "addr.h"

/* One 4-byte context load per field: clang would merge neighbouring fields into
 * an 8-byte context load, which the verifier refuses. */
#define CTX(field) (*(volatile __u32 *)&(field))

static __always_inline int splice_is_v4(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* 127/8 (also v4-mapped), ::1 and ::6 (Istio's inbound passthrough source). */
static __always_inline int splice_netns_local(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	if (splice_is_v4(addr))
		return (w[3] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && (w[3] == bpf_htonl(1) || w[3] == bpf_htonl(6));
}

/* The cookie part of a key: the netns when either end is netns-local, else 0. */
static __always_inline __u64 splice_cookie(const struct pair_key *k, __u64 netns)
{
	return splice_netns_local(k->local) || splice_netns_local(k->remote) ? netns : 0;
}

#endif /* MESHLANE_SPLICE_H */
