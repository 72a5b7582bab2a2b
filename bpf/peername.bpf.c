// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: cgroup/getpeername4, getpeername6. A socket redirected to the proxy
 * (TCP outbound, the hairpin to 15006, DNS over UDP or TCP) reports the address
 * the app dialled as its peer, not the proxy, as conntrack's reverse NAT does
 * under iptables. They serve every redirect (connect.bpf.c and dns.bpf.c), so
 * they are an object of their own. The link pins are named after the programs:
 * an older install that had them in dns.bpf.o is updated in place.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshlane.h"
#include "redirect.h"

SEC("cgroup/getpeername4")
int meshlane_getpeername4(struct bpf_sock_addr *ctx)
{
	restore4(ctx, 0);
	return ML_ALLOW;
}

SEC("cgroup/getpeername6")
int meshlane_getpeername6(struct bpf_sock_addr *ctx)
{
	restore6(ctx, 0);
	return ML_ALLOW;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
