// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshlane: cgroup getsockopt. Answers getsockopt(SOL_IP, SO_ORIGINAL_DST) and
 * getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) on a proxy's accepted socket with
 * the address the app dialled, as conntrack does under iptables REDIRECT. Any
 * other socket or option keeps the kernel's own answer (ENOENT, ENOPROTOOPT...).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "meshlane.h"
#include "maps.h"

#define KEEP_KERNEL_ANSWER 1

/* The verifier takes only 4-byte writes to optlen and retval: keep clang from
 * merging the two adjacent stores into one 8-byte store. */
static __always_inline void set_answer(struct bpf_sockopt *ctx, __s32 len)
{
	ctx->optlen = len;
	asm volatile("" ::: "memory");
	ctx->retval = 0;
	stat_inc(STAT_ORIG_DST_SERVED);
}

static __always_inline int answer4(struct bpf_sockopt *ctx, const struct orig_dst *o)
{
	struct sockaddr_in *sa = ctx->optval;

	if ((void *)(sa + 1) > ctx->optval_end)
		return KEEP_KERNEL_ANSWER;
	sa->sin_family = ML_AF_INET;
	sa->sin_port = o->port;
	__builtin_memcpy(&sa->sin_addr, o->addr, 4);
	__builtin_memset(sa->sin_zero, 0, sizeof(sa->sin_zero));
	set_answer(ctx, sizeof(*sa));
	return KEEP_KERNEL_ANSWER;
}

static __always_inline int answer6(struct bpf_sockopt *ctx, const struct orig_dst *o)
{
	struct sockaddr_in6 *sa = ctx->optval;

	if ((void *)(sa + 1) > ctx->optval_end)
		return KEEP_KERNEL_ANSWER;
	sa->sin6_family = ML_AF_INET6;
	sa->sin6_port = o->port;
	sa->sin6_flowinfo = 0;
	__builtin_memcpy(&sa->sin6_addr, o->addr, 16);
	sa->sin6_scope_id = 0;
	set_answer(ctx, sizeof(*sa));
	return KEEP_KERNEL_ANSWER;
}

SEC("cgroup/getsockopt")
int meshlane_getsockopt(struct bpf_sockopt *ctx)
{
	struct sock_state *st;
	struct bpf_sock *sk;

	if (ctx->optname != ML_SO_ORIGINAL_DST)
		return KEEP_KERNEL_ANSWER;
	if (ctx->level != ML_SOL_IP && ctx->level != ML_SOL_IPV6)
		return KEEP_KERNEL_ANSWER;
	sk = ctx->sk;
	if (!sk)
		return KEEP_KERNEL_ANSWER;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || st->role != ROLE_PROXY)
		return KEEP_KERNEL_ANSWER;
	if (ctx->level == ML_SOL_IP && st->orig.family == ML_AF_INET)
		return answer4(ctx, &st->orig);
	if (ctx->level == ML_SOL_IPV6 && st->orig.family == ML_AF_INET6)
		return answer6(ctx, &st->orig);
	return KEEP_KERNEL_ANSWER;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
