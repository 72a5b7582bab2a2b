/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshlane: address helpers shared by the programs. Map keys hold addresses as
 * 16 bytes: IPv6, or IPv4 v4-mapped (::ffff:a.b.c.d). */
#ifndef MESHLANE_ADDR_H
#define MESHLANE_ADDR_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "meshlane.h"

#define V4MAPPED_PREFIX 0x0000ffff

/* 16-byte address from a hook's family / ip4 / ip6 fields. The ip6 words are
 * copied out of the context by the caller first: the verifier refuses a context
 * load through a pointer the compiler has moved. */
static __always_inline void addr16(__u8 *out, __u32 family, __u32 ip4, const __u32 *ip6)
{
	__u32 *w = (__u32 *)out;

	if (family == ML_AF_INET) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(V4MAPPED_PREFIX);
		w[3] = ip4;
	} else {
		w[0] = ip6[0];
		w[1] = ip6[1];
		w[2] = ip6[2];
		w[3] = ip6[3];
	}
}

#endif /* MESHLANE_ADDR_H */
