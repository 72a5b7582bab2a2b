/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the per-pod lookups, each once: the pod of a network namespace, and
 * the pod's port, interface, CIDR and DNS-server sets. Each is one hash or
 * LPM-trie lookup (the pod id is part of every key), whatever the set's size.
 */
#ifndef MESHLANE_POD_H
#define MESHLANE_POD_H

#include "maps.h"

/* The capture settings of the pod whose network namespace has this cookie. */
static __always_inline struct pod_config *pod_of_netns(__u64 netns)
{
	return bpf_map_lookup_elem(&pods, &netns);
}

/* The pod of a hook's socket (every hook but sk_lookup can read the cookie). */
static __always_inline struct pod_config *pod_of(void *ctx)
{
	return pod_of_netns(bpf_get_netns_cookie(ctx));
}

/* The pod has no entries of a set (enum pod_flags POD_NO_*): its lookup would miss. */
static __always_inline bool pod_set_empty(const struct pod_config *pod, __u32 no_flag)
{
	return pod->flags & no_flag;
}

/* port: host order; kind: enum port_kind */
static __always_inline bool pod_has_port(const struct pod_config *pod, __u16 port, __u8 kind)
{
	struct port_key key = { .pod_id = pod->pod_id, .port = port, .kind = kind };

	return bpf_map_lookup_elem(&pod_ports, &key) != NULL;
}

/* kind: enum iface_kind */
static __always_inline bool pod_iface_is(const struct pod_config *pod, __u32 ifindex, __u8 kind)
{
	struct iface_key key = { .pod_id = pod->pod_id, .ifindex = ifindex, .kind = kind };

	return bpf_map_lookup_elem(&pod_ifaces, &key) != NULL;
}

/* Is addr in one of the pod's IPv4 CIDRs of `kind` (enum cidr_kind)? */
static __always_inline bool pod_cidr4_has(const struct pod_config *pod, __u32 kind, __be32 addr)
{
	struct cidr4_key key = {
		.prefixlen = CIDR_KEY_FIXED_BITS + 32,
		.pod_id = pod->pod_id,
		.kind = kind,
		.addr = addr,
	};

	return bpf_map_lookup_elem(&pod_cidrs4, &key) != NULL;
}

/* The same for a 16-byte IPv6 address. */
static __always_inline bool pod_cidr6_has(const struct pod_config *pod, __u32 kind, const void *addr)
{
	struct cidr6_key key = {
		.prefixlen = CIDR_KEY_FIXED_BITS + 128,
		.pod_id = pod->pod_id,
		.kind = kind,
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&pod_cidrs6, &key) != NULL;
}

/* Is addr (IPv6 or v4-mapped) one of the pod's resolv.conf nameservers? */
static __always_inline bool pod_has_dns_server(const struct pod_config *pod, const void *addr)
{
	struct dns_key key = { .pod_id = pod->pod_id };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&pod_dns, &key) != NULL;
}

#endif /* MESHLANE_POD_H */
