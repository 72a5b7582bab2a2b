/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshlane: the few kernel-internal fields the bounded splice reads (splice.bpf.c
 * only), declared for CO-RE: libbpf relocates every access against the kernel's
 * BTF at load time, and the load fails if a field is missing. The agent checks
 * the same fields in the kernel's BTF first, for a precise message
 * (src/dataplane/features.ts SPLICE_BTF), then loads and runs the program once
 * (src/dataplane/splice.ts), because what a field means cannot be seen in BTF.
 * The ___ml suffix keeps these apart from uapi names; libbpf ignores it when
 * matching kernel types.
 */
#ifndef MESHLANE_KERN_H
#define MESHLANE_KERN_H

#include <linux/types.h>

typedef struct { int counter; } ml_atomic_t;
typedef struct { long long counter; } ml_atomic64_t;

struct list_head___ml {
	struct list_head___ml *next;
	struct list_head___ml *prev;
} __attribute__((preserve_access_index));

struct sock_common___ml {
	ml_atomic64_t skc_cookie;
} __attribute__((preserve_access_index));

struct sock___ml {
	struct sock_common___ml __sk_common;
	struct {
		/* sk_rmem_alloc: what the receiver is charged for, its TCP receive
		 * queue and (since the Dec 2024 tcp_bpf patches, 6.13 and stable)
		 * the bytes redirected to it */
		ml_atomic_t rmem_alloc;
	} sk_backlog;
	void *sk_user_data; /* the psock, tagged in the low bits */
} __attribute__((preserve_access_index));

struct sk_psock___ml {
	struct list_head___ml ingress_msg; /* redirected messages not read yet */
	struct {
		ml_atomic_t refs;
	} refcnt; /* refcount_t: one per map the socket is in, plus one per send, recv or ioctl in progress */
} __attribute__((preserve_access_index));

/* The kernel's sk_msg: what bpf_cast_to_kern_ctx(sk_msg_md) points at. */
struct sk_msg___ml {
	struct sock___ml *sk_redir; /* the socket a redirect helper picked for this message */
	struct sock___ml *sk;       /* the sender */
} __attribute__((preserve_access_index));

struct bpf_sock_ops_kern___ml {
	struct sock___ml *sk;
} __attribute__((preserve_access_index));

/* include/net/sock.h: SK_USER_DATA_NOCOPY | SK_USER_DATA_BPF | SK_USER_DATA_PSOCK */
#define ML_SK_USER_DATA_PTRMASK (~7UL)

/* Since 6.2 (fd264ca02094, a35b9af4ec2c). */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#endif /* MESHLANE_KERN_H */
