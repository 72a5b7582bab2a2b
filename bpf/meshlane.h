/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the map key/value layouts shared by every BPF program and by the agent.
 *
 * This header is the single source of truth for layouts. The agent's encoders
 * (src/dataplane/layouts.ts) are checked against the compiled objects' BTF by
 * test/unit/layouts.test.ts, so C and TypeScript cannot drift. Any change to a
 * struct here needs a new layout version for its map in layouts.ts (the test
 * fails until it gets one), because pinned maps outlive the agent.
 *
 * Byte order: addresses and the original destination port are kept in network
 * order (as the kernel hands them to the hooks); every other port and id is in
 * host order.
 */
#ifndef MESHLANE_H
#define MESHLANE_H

#include <linux/types.h>

/* Limits */
#define MESHLANE_MAX_PROXY_IDS 8 /* entries in -u / -g lists */
#define MESHLANE_MAX_PODS 4096
#define MESHLANE_MAX_PORT_ENTRIES 65536
#define MESHLANE_MAX_CIDR_ENTRIES 65536
#define MESHLANE_MAX_INFLIGHT 65536 /* connections between connect() and accept() */
/* handover: a counter per pod network namespace (and the node's); room for the pods' and for those of
 * pods released while connections of theirs were still in flight (the agent removes them once drained) */
#define MESHLANE_MAX_HANDOVER_NETNS (2 * MESHLANE_MAX_PODS + 1)
/* in-flight connections one pod may hold in orig_by_tuple when the agent sets no other limit: a share of
 * the capacity, so that one pod whose proxy stops accepting cannot exhaust it for the others */
#define MESHLANE_HANDOVER_DEFAULT_PER_POD (MESHLANE_MAX_INFLIGHT / 16)
/* the node refuses new redirected connects this far below the capacity: connects between the check
 * (connect4/6) and the insert (TCP_CONNECT_CB) cannot overrun it */
#define MESHLANE_HANDOVER_HEADROOM 1024
#define MESHLANE_MAX_LISTENERS 16384
#define MESHLANE_MAX_PAIRS 131072   /* spliced sockets on the node */
#define MESHLANE_MAX_SPLICE_MARKS 16384 /* connections between a fallback and leaving sock_pairs */
#define MESHLANE_MAX_SET_ENTRIES 16384

/* Constants from libc / the kernel that BPF programs cannot include. */
#define ML_AF_INET 2
#define ML_AF_INET6 10
#define ML_SOL_IP 0
#define ML_SOL_IPV6 41
#define ML_SO_ORIGINAL_DST 80 /* also IP6T_SO_ORIGINAL_DST */
#define ML_TCP_CLOSE 7
#define ML_SOCK_STREAM 1
#define ML_SOCK_DGRAM 2
#define ML_IPPROTO_TCP 6
#define ML_IPPROTO_UDP 17
#define ML_ALLOW 1 /* a cgroup sock_addr program's verdict: let the call go on */
#define ML_REFUSE 0 /* ... or fail it with EPERM */
/* errno of a map insert that found the map full (a hash or sockhash at max_entries; uapi errno-base.h) */
#define ML_E2BIG 7
#define ML_SOL_SOCKET 1
#define ML_SO_MARK 36

/* Ports */
#define ML_DNS_PORT 53
/* Istio's default proxy ports: a listener on one of them is registered even
 * before its pod is captured (the agent may learn of the pod after the proxy
 * started). A captured pod's own ports are in pod_config. */
#define ML_DEFAULT_OUTBOUND_PORT 15001
#define ML_DEFAULT_INBOUND_PORT 15006
#define ML_DEFAULT_DNS_PORT 15053

/* The socket mark that gives a redirected socket already bound to the wildcard address its pod IP
 * as the source (connect.bpf.c): the agent installs, in each captured pod's network namespace, a
 * rule for this mark, ahead of the local table, into a table whose only routes are 127.0.0.1 and ::1
 * with the pod IPs as their preferred source (src/dataplane/pod-netns.ts; layouts.ts SourceRouting has the same numbers,
 * test/unit/netlink.test.ts checks they agree). */
#define MESHLANE_SOURCE_MARK 0x4d4c0000
#define MESHLANE_SOURCE_TABLE 19788 /* 0x4d4c */

/* pod_config.flags */
enum pod_flags {
	POD_OUT_INCLUDE_ALL = 1 << 0,      /* includeOutboundIPRanges is '*' */
	POD_OUT_INCLUDE_LOOPBACK = 1 << 1, /* an included CIDR is a loopback one */
	POD_DNS_CAPTURE = 1 << 2,          /* --redirect-dns (enforced with the DNS hooks) */
	POD_DNS_CAPTURE_ALL = 1 << 3,      /* --capture-all-dns */
	POD_HAS_IP4 = 1 << 4,              /* pod_config.ip4 is set */
	POD_HAS_IP6 = 1 << 5,              /* pod_config.ip6 is set */
	POD_IN_ENABLED = 1 << 6,           /* inbound capture on (includeInboundPorts not empty) */
	POD_IN_INCLUDE_ALL = 1 << 7,       /* includeInboundPorts is '*' */
	/* A pod's sets that are empty, so the programs skip lookups that could only miss. Each says "none"
	 * (an entry without them, from an older agent, decides the same with the lookups). */
	POD_NO_OUT_EXCLUDE_PORTS = 1 << 8, /* no excludeOutboundPorts */
	POD_NO_OUT_INCLUDE_PORTS = 1 << 9, /* no includeOutboundPorts */
	POD_NO_OUT_EXCLUDE_CIDRS = 1 << 10, /* no excludeOutboundIPRanges (either family) */
	POD_NO_OUT_INCLUDE_CIDRS = 1 << 11, /* no includeOutboundIPRanges CIDR (either family) */
	POD_NO_EXCLUDE_IFACES = 1 << 12,   /* no excludeInterfaces */
};

/* pods: netns cookie of the pod's network namespace -> its capture settings. */
struct pod_config {
	__u32 pod_id; /* index into pod_ports / pod_cidrs* / pod_info */
	__u32 flags;  /* enum pod_flags */
	__u16 outbound_port; /* -p, 15001 */
	__u16 inbound_port;  /* -z, 15006 */
	__u16 tunnel_port;   /* -e, 15008 */
	__u16 dns_port;      /* 15053 */
	__be32 ip4;          /* the pod's IPv4 address */
	__u8 ip6[16];        /* the pod's IPv6 address */
	__u32 n_uids;
	__u32 n_gids;
	__u32 uids[MESHLANE_MAX_PROXY_IDS]; /* -u, in order */
	__u32 gids[MESHLANE_MAX_PROXY_IDS]; /* -g, in order */
};

/* pod_ports: per-pod port sets. */
enum port_kind {
	PORT_OUT_EXCLUDE = 1, /* -o excludeOutboundPorts (TCP and UDP) */
	PORT_OUT_INCLUDE = 2, /* -q includeOutboundPorts */
	PORT_IN_INCLUDE = 3,  /* -b includeInboundPorts (a list) */
	PORT_IN_EXCLUDE = 4,  /* -d excludeInboundPorts (with '*') */
};

struct port_key {
	__u32 pod_id;
	__u16 port; /* host order */
	__u8 kind;  /* enum port_kind */
	__u8 pad;
};

/* pod_cidrs4 / pod_cidrs6: per-pod CIDR sets as LPM tries. The pod id and the kind
 * are part of the prefix, so prefixlen = 64 + the CIDR's own length. */
enum cidr_kind {
	CIDR_OUT_EXCLUDE = 1, /* -x excludeOutboundIPRanges */
	CIDR_OUT_INCLUDE = 2, /* -i includeOutboundIPRanges */
};
#define CIDR_KEY_FIXED_BITS 64

struct cidr4_key {
	__u32 prefixlen;
	__u32 pod_id;
	__u32 kind;
	__be32 addr;
};

struct cidr6_key {
	__u32 prefixlen;
	__u32 pod_id;
	__u32 kind;
	__u8 addr[16];
};

/* What a captured connection was redirected from. Kept in socket local storage
 * (freed with the socket): on the app's socket from connect() on, then on the
 * proxy's accepted socket, where getsockopt(SO_ORIGINAL_DST) reads it. */
enum capture_kind {
	CAPTURE_NONE = 0,
	CAPTURE_OUTBOUND = 1, /* redirected to the outbound port (15001) */
	CAPTURE_INBOUND = 2,  /* redirected to the inbound port (15006) */
	CAPTURE_DNS = 3,      /* redirected to the DNS port (15053), TCP or UDP */
};

struct orig_dst {
	__u16 family; /* ML_AF_INET or ML_AF_INET6 */
	__be16 port;
	__u32 kind; /* enum capture_kind */
	__u8 addr[16]; /* v4: the first 4 bytes */
};

enum sock_role {
	ROLE_NONE = 0,
	ROLE_APP = 1,   /* the redirected socket of the app (or of the proxy, hairpinning) */
	ROLE_PROXY = 2, /* the proxy's accepted socket: SO_ORIGINAL_DST answers here */
};

struct sock_state {
	__u32 role; /* enum sock_role */
	__u32 pad;
	struct orig_dst orig;
};

/* orig_by_tuple: the hand-over from the connecting socket to the accepted one.
 * Written at connect (when the source port is known), moved into the accepted
 * socket's storage when the handshake completes, deleted when either happens
 * or the connecting socket closes first. Addresses are IPv6 or v4-mapped. */
struct tuple_key {
	__u64 netns_cookie;
	__u8 src[16];
	__u8 dst[16];
	__u16 src_port; /* host order */
	__u16 dst_port; /* host order */
	__u32 pad;
};

/* pod_by_ip4 / pod_by_ip6: a pod's address -> the netns cookie of its network
 * namespace. sk_lookup cannot read the netns cookie: it finds the pod by the
 * destination address of the incoming connection. Keys: __be32 / struct ip6_key. */
struct ip6_key {
	__u8 addr[16];
};

/* listeners: the listening sockets of the pods' proxies, put there by sockops at
 * TCP_LISTEN_CB (a SOCKHASH; entries leave by themselves when a listener closes). */
struct listener_key {
	__u64 netns_cookie;
	__u16 port;   /* host order */
	__u16 family; /* ML_AF_INET or ML_AF_INET6: the listener's own family */
	__u32 pad;
};

/* pod_ifaces: per-pod interface sets (ifindex inside the pod's netns). */
enum iface_kind {
	IFACE_EXCLUDE = 1, /* -c excludeInterfaces */
	IFACE_REROUTE = 2, /* -k rerouteVirtualInterfaces */
};

struct iface_key {
	__u32 pod_id;
	__u32 ifindex;
	__u8 kind; /* enum iface_kind */
	__u8 pad[3];
};

/* pod_dns: the pod's resolv.conf nameservers (DNS capture without capture-all).
 * IPv4 addresses are v4-mapped. */
struct dns_key {
	__u32 pod_id;
	__u8 addr[16];
};

/* sock_pairs: established TCP sockets of captured pods whose peer is on this node
 * (a SOCKHASH for sk_msg splicing). The netns cookie keeps loopback pairs of two
 * pods apart; pairs between pod IPs (unique on the node) use cookie 0 so the
 * peer's key can be computed from either side. */
struct pair_key {
	__u64 netns_cookie;
	__u8 local[16];  /* v6 or v4-mapped */
	__u8 remote[16];
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u32 pad;
};

/* global: one entry of node-wide switches written by the agent. */
enum global_flags {
	GLOBAL_SPLICE = 1 << 0, /* splice local socket pairs with sk_msg */
};

struct global_config {
	__u32 flags; /* enum global_flags */
	__u32 pad;
	/* Bytes a spliced direction may leave unread on its receiver (the
	 * receiver's sk_rmem_alloc). A send that would go past it moves that
	 * direction to the stack for good. Read on every send: a change is live. */
	__u64 splice_budget;
	/* After a fallback, how long a socket waits for its peer's sends in
	 * progress (a second writer thread, or a reader blocked in recv, which
	 * holds a reference too) before it leaves sock_pairs anyway (ns). */
	__u64 splice_grace_ns;
};

/* splice_state: per spliced socket (socket local storage, shared by the sk_msg
 * and the sockops program of splice.bpf.c, pinned so that a restarted agent's
 * programs see the state of sockets spliced before). */
enum splice_dir {
	SPLICE_NEW = 0,   /* nothing sent yet */
	SPLICE_REDIR = 1, /* this socket's sends go to its peer's receive queue */
	SPLICE_STACK = 2, /* a send went through the stack: every later one does */
};

enum splice_sk_flags {
	SPLICE_SK_KEYS = 1 << 0, /* self and peer are set */
	SPLICE_SK_LEFT = 1 << 1, /* left sock_pairs after a fallback */
};

struct splice_state {
	__u32 state; /* enum splice_dir */
	__u32 flags; /* enum splice_sk_flags */
	__u64 seen_gen;    /* splice_gen[0] when this socket last looked for a mark */
	__u64 peer_sk;     /* the peer's struct sock (kernel address), known after a fallback */
	__u64 peer_cookie; /* its socket cookie: another value there means the peer is gone */
	struct pair_key self;
	struct pair_key peer;
};

/* splice_marks: a socket whose peer fell back, keyed by the marked socket's own
 * pair_key: it follows to the stack at its next send, and both can leave
 * sock_pairs. An LRU: a mark lost to eviction only delays leaving. */
struct splice_mark {
	__u64 sk;            /* the socket that fell back (kernel address) */
	__u64 cookie;        /* its socket cookie */
	__u64 since_ns;      /* bpf_ktime_get_ns() at the fallback */
	__u64 target_cookie; /* the marked socket's cookie: a later socket on the same key is not it */
};

/* handover: netns cookie of a pod (HANDOVER_NODE_KEY: the whole node) -> its entries in orig_by_tuple
 * and its refused connects. Only the programs write it (atomic adds); the agent reads it for status and
 * removes the entries of released pods once they hold nothing. */
#define HANDOVER_NODE_KEY 0 /* no network namespace has cookie 0 */
struct handover_count {
	__s64 inflight;     /* entries in orig_by_tuple (signed: a count the agent removed may come back below 0) */
	__u64 refused_pod;  /* TCP connects refused: the pod held its limit */
	__u64 refused_node; /* TCP connects refused: the node's entries were near the capacity */
};

/* limits[0]: node-wide limits written by the agent. */
struct limits_config {
	__u32 handover_per_pod; /* in-flight connections per pod (0: MESHLANE_HANDOVER_DEFAULT_PER_POD) */
	/* new redirects are refused (every pod) from this many node-wide entries on: orig_by_tuple's
	 * capacity is set at run time (--max-connections), so the agent writes the threshold that fits
	 * it (0: MESHLANE_MAX_INFLIGHT - MESHLANE_HANDOVER_HEADROOM, the compiled capacity's) */
	__u32 handover_node;
};

/* pod_info: read by `meshlane dump` / `status` only; never by the programs. */
#define POD_INFO_NAMESPACE_LEN 64
#define POD_INFO_NAME_LEN 256
#define POD_INFO_UID_LEN 48
struct pod_info {
	char namespace_[POD_INFO_NAMESPACE_LEN];
	char name[POD_INFO_NAME_LEN];
	char uid[POD_INFO_UID_LEN];
};

/* stats: per-CPU counters, index = enum stat. */
enum stat {
	STAT_CONNECT_SEEN = 0,      /* connects in captured pods */
	STAT_CAPTURED_OUTBOUND = 1, /* redirected to the outbound port */
	STAT_CAPTURED_INBOUND = 2,  /* redirected to the inbound port (hairpin) */
	STAT_BYPASSED = 3,          /* decided: not captured */
	STAT_ORIG_DST_SERVED = 4,   /* SO_ORIGINAL_DST answered */
	STAT_PROXY_PORT_UNCAPTURED = 5, /* accepted on a proxy port without a capture (e.g. dialled directly) */
	STAT_HANDOVER_FULL = 6,     /* orig_by_tuple was full */
	STAT_INBOUND_CAPTURED = 7,  /* sk_lookup steered a connection to the inbound listener */
	STAT_INBOUND_NO_LISTENER = 8, /* should be captured, no proxy listener: dropped */
	STAT_DNS_CAPTURED = 9,      /* DNS redirected to the proxy's DNS port */
	STAT_SPLICED = 10,          /* sockets added to sock_pairs */
	STAT_SPLICE_FALLBACK = 11,  /* a spliced direction would have gone past the budget: to the stack */
	STAT_SPLICE_FALLBACK_PEER = 12, /* a direction followed its peer to the stack */
	STAT_SPLICE_NO_PEER = 13,   /* a first send found no peer in sock_pairs: the stack */
	STAT_SPLICE_SWITCHED_OFF = 14, /* a spliced direction went to the stack: the switch is off */
	STAT_SPLICE_LEFT = 15,      /* sockets that left sock_pairs after going to the stack */
	STAT_SPLICE_RETARGET_FAIL = 16, /* a message for the stack stayed redirected (must stay 0) */
	STAT_REFUSED_POD_LIMIT = 17, /* TCP connects refused (EPERM): the pod held its in-flight limit */
	STAT_REFUSED_NODE_FULL = 18, /* TCP connects refused (EPERM): orig_by_tuple near its capacity */
	STAT_SPLICE_TABLE_FULL = 19, /* sock_pairs full: a socket not spliced (it goes through TCP/IP, captured) */
	STAT_LISTENERS_FULL = 20,   /* listeners full: a proxy listener not steered to (inbound to it dropped) */
	STAT_MAX = 21,
};

/* bypass_stats: per-CPU counters of the connect-time decisions not to capture
 * (connect4/6, TCP and connected UDP), index = enum bypass_reason: the rule of
 * outbound.h that decided. Their sum is STAT_BYPASSED. The map has
 * BYPASS_SLOTS entries, more than there are reasons: a new reason takes a free
 * slot without a new layout version of the pinned map. */
enum bypass_reason {
	BYPASS_EXCLUDED_PORT = 0,  /* excludeOutboundPorts (-o) */
	BYPASS_PASSTHROUGH = 1,    /* a local destination from 127.0.0.6 / ::6 */
	BYPASS_PROXY_OWNER = 2,    /* the proxy's own connection (a -u / -g id) */
	BYPASS_LOCAL = 3,          /* a local destination, not the proxy's (no loopback CIDR included) */
	BYPASS_LOOPBACK = 4,       /* to 127.0.0.1 / ::1 */
	BYPASS_EXCLUDED_CIDR = 5,  /* excludeOutboundIPRanges (-x) */
	BYPASS_NOT_INCLUDED = 6,   /* in neither includeOutboundPorts nor includeOutboundIPRanges */
	BYPASS_UDP_NOT_DNS = 7,    /* connected UDP that is not DNS with DNS capture on */
	BYPASS_DNS_NOT_SERVER = 8, /* DNS to a server not in the pod's resolv.conf (no capture-all) */
	BYPASS_MAX = 9,
};
#define BYPASS_SLOTS 32
_Static_assert(BYPASS_MAX <= BYPASS_SLOTS, "bypass_stats has a slot per reason");

#endif /* MESHLANE_H */
