/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: what one pod may hold of orig_by_tuple, the node-wide hand-over map.
 *
 * An entry lives from the app's TCP_CONNECT_CB to the proxy's PASSIVE_ESTABLISHED (or to the app
 * socket's TCP_CLOSE when the connection never gets there): microseconds, unless the pod's proxy
 * stops accepting, when every new connection of the pod leaves one behind until the app gives up.
 * So each pod's entries are counted (handover, keyed by its netns cookie, with the node's total
 * under HANDOVER_NODE_KEY), every insert and every delete that removed an entry moving both
 * counts, and connect4/6 refuse a pod's new TCP redirect (EPERM: never a bypass) while it holds
 * its limit (limits[0], default MESHLANE_HANDOVER_DEFAULT_PER_POD), or while the node's entries
 * are within a headroom of the map's capacity (limits[0].handover_node, which the agent derives from
 * the capacity it gave the map; default: MESHLANE_HANDOVER_HEADROOM below the compiled one). Another pod's connections keep their room.
 * The check and the insert are apart (connect4 / TCP_CONNECT_CB), so connects in progress can pass
 * a limit by their number; the headroom keeps them within the map.
 */
#ifndef MESHLANE_HANDOVER_H
#define MESHLANE_HANDOVER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshlane.h"
#include "maps.h"

/* The counter of `netns` (or of the node), made on first use when `create`; NULL when there is
 * none (or no room for one: then nothing is counted for that netns, and nothing is refused). */
static __always_inline struct handover_count *handover_of(__u64 netns, bool create)
{
	struct handover_count *c = bpf_map_lookup_elem(&handover, &netns);
	struct handover_count zero = {};

	if (c || !create)
		return c;
	bpf_map_update_elem(&handover, &netns, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&handover, &netns);
}

/* An entry of `netns` was added (+1) to or removed (-1) from orig_by_tuple. */
static __always_inline void handover_count(__u64 netns, __s64 d)
{
	struct handover_count *c = handover_of(netns, d > 0);

	if (c)
		__sync_fetch_and_add(&c->inflight, d);
	c = handover_of(HANDOVER_NODE_KEY, d > 0);
	if (c)
		__sync_fetch_and_add(&c->inflight, d);
}

/* May a new TCP connect of the pod in `netns` be redirected (its hand-over stored)? Counts a
 * refusal, per pod and per reason. Two lookups (and the limits' array slot). The node's threshold
 * (limits[0].handover_node) fits the capacity the agent gave orig_by_tuple (--max-connections);
 * 0 in either field: the compiled default. */
static __always_inline bool handover_room(__u64 netns)
{
	struct handover_count *pod = handover_of(netns, false);
	struct handover_count *node = handover_of(HANDOVER_NODE_KEY, false);
	__u32 zero = 0;
	struct limits_config *l = bpf_map_lookup_elem(&limits, &zero);
	__s64 per_pod = l && l->handover_per_pod ? l->handover_per_pod : MESHLANE_HANDOVER_DEFAULT_PER_POD;
	__s64 node_max = l && l->handover_node ? l->handover_node : MESHLANE_MAX_INFLIGHT - MESHLANE_HANDOVER_HEADROOM;

	if (node && node->inflight >= node_max) {
		stat_inc(STAT_REFUSED_NODE_FULL);
		pod = pod ? pod : handover_of(netns, true);
		if (pod)
			__sync_fetch_and_add(&pod->refused_node, 1);
		return false;
	}
	if (pod && pod->inflight >= per_pod) {
		stat_inc(STAT_REFUSED_POD_LIMIT);
		__sync_fetch_and_add(&pod->refused_pod, 1);
		return false;
	}
	return true;
}

#endif /* MESHLANE_HANDOVER_H */
