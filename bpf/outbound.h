/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the outbound decision of istio-iptables (capture-spec section 3),
 * family-neutral. The caller describes the connection in a struct conn; the
 * decision returns the port to redirect to, or 0 for "not captured".
 *
 * Rules, first match wins (the numbers are the spec's):
 *  1. output interface in excludeInterfaces: not decidable at connect time;
 *     the agent reports that annotation as unsupported.
 *  2. destination port in excludeOutboundPorts: not captured.
 *  3. local destination from 127.0.0.6 / ::6: not captured.
 *  4. per proxy uid, then per proxy gid, in order: (a) local, not exactly
 *     127.0.0.1, not the tunnel port (nor TCP 53 with DNS, uid loop only):
 *     owner is the id -> inbound port;
 *     (b) local, owner is not the id, no loopback CIDR included: not captured;
 *     (c) owner is the id: not captured.
 *  5. DNS (with the DNS hooks).
 *  6. destination 127.0.0.1 / ::1: not captured.
 *  7. destination in excludeOutboundIPRanges: not captured.
 *  8. TCP port in includeOutboundPorts: outbound port.
 *  9. includeOutboundIPRanges '*' or destination in it: outbound port.
 * 10. otherwise not captured.
 */
#ifndef MESHLANE_OUTBOUND_H
#define MESHLANE_OUTBOUND_H

#include "maps.h"

#define DNS_PORT 53

struct conn {
	__u16 dport;          /* host order */
	__u8 local;           /* destination is an address of the pod's own netns */
	__u8 dst_loopback1;   /* destination is exactly 127.0.0.1 / ::1 */
	__u8 src_passthrough; /* bound to 127.0.0.6 / ::6 */
	__u8 excluded;        /* destination in excludeOutboundIPRanges */
	__u8 included;        /* destination in includeOutboundIPRanges */
	__u32 uid;
	__u32 gid;
};

static __always_inline int pod_has_port(const struct pod_config *pod, __u16 port, __u8 kind)
{
	struct port_key key = { .pod_id = pod->pod_id, .port = port, .kind = kind };

	return bpf_map_lookup_elem(&pod_ports, &key) != NULL;
}

enum owner_verdict {
	OWNER_CONTINUE = 0,
	OWNER_BYPASS = 1,
	OWNER_INBOUND = 2,
};

/* One iteration of the uid (or gid) loop of istio-iptables. Istio skips TCP 53
 * (with DNS capture) in rule (a) of the uid loop only, never of the gid loop. */
static __always_inline int owner_rule(const struct pod_config *pod, const struct conn *c,
				      __u32 owner, __u32 id, int is_uid)
{
	int dns = pod->flags & POD_DNS_CAPTURE;
	int dns_port = dns && c->dport == DNS_PORT;

	if (c->local && !c->dst_loopback1 && c->dport != pod->tunnel_port &&
	    !(is_uid && dns_port) && owner == id)
		return OWNER_INBOUND;
	if (!(pod->flags & POD_OUT_INCLUDE_LOOPBACK) && c->local && !dns_port && owner != id)
		return OWNER_BYPASS;
	if (owner == id)
		return OWNER_BYPASS;
	return OWNER_CONTINUE;
}

static __always_inline int owner_rules(const struct pod_config *pod, const struct conn *c)
{
	int v;

#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_uids)
			break;
		v = owner_rule(pod, c, c->uid, pod->uids[i], 1);
		if (v != OWNER_CONTINUE)
			return v;
	}
#pragma unroll
	for (int i = 0; i < MESHLANE_MAX_PROXY_IDS; i++) {
		if (i >= pod->n_gids)
			break;
		v = owner_rule(pod, c, c->gid, pod->gids[i], 0);
		if (v != OWNER_CONTINUE)
			return v;
	}
	return OWNER_CONTINUE;
}

/* Returns the port to redirect a TCP connect to (host order), or 0. The CIDR
 * flags in *c must be filled in by the caller (one LPM lookup each). */
static __always_inline __u16 decide_outbound_tcp(const struct pod_config *pod, const struct conn *c)
{
	if (pod_has_port(pod, c->dport, PORT_OUT_EXCLUDE))
		return 0;
	if (c->local && c->src_passthrough)
		return 0;
	switch (owner_rules(pod, c)) {
	case OWNER_INBOUND:
		return pod->inbound_port;
	case OWNER_BYPASS:
		return 0;
	}
	if (c->dst_loopback1)
		return 0;
	if (c->excluded)
		return 0;
	if (pod_has_port(pod, c->dport, PORT_OUT_INCLUDE))
		return pod->outbound_port;
	if ((pod->flags & POD_OUT_INCLUDE_ALL) || c->included)
		return pod->outbound_port;
	return 0;
}

#endif /* MESHLANE_OUTBOUND_H */
