/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the inbound decision of istio-iptables (capture-spec section 4) for a
 * TCP connection arriving at a pod from outside its network namespace:
 *  1. arrived on a rerouted (virtual) interface: not decidable here (the rule
 *     applies to forwarded traffic, which never reaches a local socket lookup);
 *     the agent reports that annotation as unsupported.
 *  2. arrived on an excluded interface: not captured.
 *  3. inbound capture off (includeInboundPorts empty): not captured.
 *  4. the tunnel port (15008): not captured.
 *  5. '*': an excluded port is not captured, any other is; a list: a listed
 *     port is captured, any other is not.
 * Returns the proxy port to steer to, or 0.
 */
#ifndef MESHLANE_INBOUND_H
#define MESHLANE_INBOUND_H

#include "meshlane.h"
#include "pod.h"

#define LOOPBACK_IFINDEX 1 /* lo is ifindex 1 in every network namespace */
#define IFINDEX_UNKNOWN 0

/* ifindex: the interface the connection arrived on, or IFINDEX_UNKNOWN. */
static __always_inline __u16 decide_inbound(const struct pod_config *pod, __u16 port, __u32 ifindex)
{
	if (ifindex != IFINDEX_UNKNOWN && !pod_set_empty(pod, POD_NO_EXCLUDE_IFACES) &&
	    pod_iface_is(pod, ifindex, IFACE_EXCLUDE))
		return 0;
	if (!(pod->flags & POD_IN_ENABLED))
		return 0;
	if (port == pod->tunnel_port)
		return 0;
	if (pod->flags & POD_IN_INCLUDE_ALL)
		return pod_has_port(pod, port, PORT_IN_EXCLUDE) ? 0 : pod->inbound_port;
	return pod_has_port(pod, port, PORT_IN_INCLUDE) ? pod->inbound_port : 0;
}

#endif /* MESHLANE_INBOUND_H */
