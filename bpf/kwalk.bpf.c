// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test-only: a Reno congestion control that, on every cong_avoid, walks the subflows of the Linux
 * kernel's MPTCP connection its socket belongs to (kmptcp.h) and records what it saw: the walk
 * the coupled controls for the kernel's own MPTCP sockets (kcc.bpf.c) stand on, checked on its
 * own. Not loaded by the daemon. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "ktypes.h"
#include "kmptcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;
extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;

/* What the walks saw, for the test. */
struct kwalk_stats {
	__u64 calls;      /* cong_avoid calls */
	__u64 not_mptcp;  /* calls on a socket that is no MPTCP subflow */
	__u64 self_found; /* walks that met the calling socket among the subflows */
	__u64 truncated;  /* walks that stopped at KMPTCP_MAX_SUBS */
	__u32 max_subs;   /* the most subflows one walk found */
	__u32 last_subs;  /* subflows the last walk found */
	__u32 last_cwnd_sum;
	__u32 last_srtt_min;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kwalk_stats);
} kwalk_out SEC(".maps");

static __always_inline void walk(struct sock *sk, struct kwalk_stats *st)
{
	struct mptcp_subflow_context___k *sub;
	struct kmptcp_walk w;
	__u32 n = 0, cwnd_sum = 0, srtt_min = ~0U, i;
	int self = 0;

	if (!kmptcp_is_subflow(sk)) {
		__sync_fetch_and_add(&st->not_mptcp, 1);
		return;
	}
	if (!kmptcp_walk_start(sk, &w))
		return;
	for (i = 0; i < KMPTCP_MAX_SUBS; i++) {
		struct tcp_sock *tp;
		struct sock *ssk;
		__u32 srtt;

		sub = kmptcp_walk_next(&w);
		if (!sub)
			break;
		ssk = BPF_CORE_READ(sub, tcp_sock);
		if (!ssk)
			continue;
		tp = (void *)ssk;
		n++;
		cwnd_sum += BPF_CORE_READ(tp, snd_cwnd);
		srtt = BPF_CORE_READ(tp, srtt_us);
		if (srtt < srtt_min)
			srtt_min = srtt;
		if (ssk == sk)
			self = 1;
	}
	if (kmptcp_walk_more(&w))
		__sync_fetch_and_add(&st->truncated, 1);
	if (self)
		__sync_fetch_and_add(&st->self_found, 1);
	if (n > st->max_subs)
		st->max_subs = n;
	st->last_subs = n;
	st->last_cwnd_sum = cwnd_sum;
	st->last_srtt_min = srtt_min;
}

SEC("struct_ops")
void BPF_PROG(kwalk_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	__u32 zero = 0;
	struct kwalk_stats *st = bpf_map_lookup_elem(&kwalk_out, &zero);

	if (st) {
		__sync_fetch_and_add(&st->calls, 1);
		walk(sk, st);
	}
	tcp_reno_cong_avoid(sk, ack, acked);
}

SEC("struct_ops")
__u32 BPF_PROG(kwalk_ssthresh, struct sock *sk)
{
	return tcp_reno_ssthresh(sk);
}

SEC("struct_ops")
__u32 BPF_PROG(kwalk_undo_cwnd, struct sock *sk)
{
	return tcp_reno_undo_cwnd(sk);
}

/* TCP_CONG_NON_RESTRICTED: any socket may select it with TCP_CONGESTION. */
#define TCP_CONG_NON_RESTRICTED 0x1

SEC(".struct_ops.link")
struct tcp_congestion_ops kwalk = {
	.ssthresh = (void *)kwalk_ssthresh,
	.cong_avoid = (void *)kwalk_cong_avoid,
	.undo_cwnd = (void *)kwalk_undo_cwnd,
	.flags = TCP_CONG_NON_RESTRICTED,
	.name = "mptcpgo_kwalk",
};
