/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshlane: every map, defined once. Each object includes this; the agent pins
 * each map once and hands the same map to every object (bpf_map__reuse_fd), so
 * all programs share one set. Layouts are in meshlane.h. */
#ifndef MESHLANE_MAPS_H
#define MESHLANE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshlane.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_PODS);
	__type(key, __u64); /* netns cookie */
	__type(value, struct pod_config);
} pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_PORT_ENTRIES);
	__type(key, struct port_key);
	__type(value, __u8);
} pod_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MESHLANE_MAX_CIDR_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr4_key);
	__type(value, __u8);
} pod_cidrs4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MESHLANE_MAX_CIDR_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr6_key);
	__type(value, __u8);
} pod_cidrs6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_INFLIGHT);
	__type(key, struct tuple_key);
	__type(value, struct orig_dst);
} orig_by_tuple SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_HANDOVER_NETNS);
	__type(key, __u64); /* netns cookie, or HANDOVER_NODE_KEY */
	__type(value, struct handover_count);
} handover SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct limits_config);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_PODS);
	__type(key, __u32); /* pod_id */
	__type(value, struct pod_info);
} pod_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_PODS);
	__type(key, __be32);
	__type(value, __u64); /* netns cookie */
} pod_by_ip4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_PODS);
	__type(key, struct ip6_key);
	__type(value, __u64); /* netns cookie */
} pod_by_ip6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MESHLANE_MAX_LISTENERS);
	__type(key, struct listener_key);
	__type(value, __u64);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_SET_ENTRIES);
	__type(key, struct iface_key);
	__type(value, __u8);
} pod_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLANE_MAX_SET_ENTRIES);
	__type(key, struct dns_key);
	__type(value, __u8);
} pod_dns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MESHLANE_MAX_PAIRS);
	__type(key, struct pair_key);
	__type(value, __u64);
} sock_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct global_config);
} global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct splice_state);
} splice_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESHLANE_MAX_SPLICE_MARKS);
	__type(key, struct pair_key);
	__type(value, struct splice_mark);
} splice_marks SEC(".maps");

/* One counter, bumped with every mark: a spliced socket looks itself up in
 * splice_marks only when it moved since its last look. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} splice_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BYPASS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} bypass_stats SEC(".maps");

static __always_inline void stat_inc(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);

	if (v)
		*v += 1;
}

/* One decision not to capture, by the rule that made it (enum bypass_reason). */
static __always_inline void bypass_inc(__u32 why)
{
	__u64 *v = bpf_map_lookup_elem(&bypass_stats, &why);

	if (v)
		*v += 1;
}

#endif /* MESHLANE_MAPS_H */
