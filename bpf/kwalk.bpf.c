// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test-only: a Reno congestion control that, on every cong_avoid, walks the subflows of the Linux
 * kernel's MPTCP connection its socket belongs to and records what it saw. This is the walk the
 * coupled controls for the kernel's own MPTCP sockets need (from one subflow to its siblings'
 * windows and RTTs): icsk_ulp_data is the subflow's mptcp_subflow_context, whose conn is the
 * mptcp_sock, whose conn_list links the contexts of all its subflows (net/mptcp/protocol.h).
 * Every read goes through bpf_probe_read_kernel with CO-RE offsets, which Linux 6.1 allows in
 * a struct_ops program (bpf_rdonly_cast, which would let the verifier follow the pointers, came
 * in 6.2). The walk is bounded. Not loaded by the daemon. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "ktypes.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;
extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;

/* The kernel's types, as far as the walk reads them (the ___k flavour: CO-RE matches the
 * names before the suffix). */
struct list_head___k {
	struct list_head___k *next;
} __attribute__((preserve_access_index));

struct tcp_ulp_ops___k {
	char name[16];
} __attribute__((preserve_access_index));

struct inet_connection_sock___k {
	const struct tcp_ulp_ops___k *icsk_ulp_ops;
	void *icsk_ulp_data;
} __attribute__((preserve_access_index));

struct mptcp_subflow_context___k {
	struct list_head___k node;
	struct sock *tcp_sock;
	struct sock *conn;
} __attribute__((preserve_access_index));

struct mptcp_sock___k {
	struct list_head___k conn_list;
} __attribute__((preserve_access_index));

#define KWALK_MAX_SUBS 8

/* What the walks saw, for the test. */
struct kwalk_stats {
	__u64 calls;      /* cong_avoid calls */
	__u64 not_mptcp;  /* calls on a socket that is no MPTCP subflow */
	__u64 self_found; /* walks that met the calling socket among the subflows */
	__u64 truncated;  /* walks that stopped at KWALK_MAX_SUBS */
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

/* is_mptcp_subflow: the socket's upper layer protocol is the kernel's "mptcp". */
static __always_inline int is_mptcp_subflow(struct inet_connection_sock___k *icsk)
{
	const struct tcp_ulp_ops___k *ops = BPF_CORE_READ(icsk, icsk_ulp_ops);
	char name[8] = {};

	if (!ops)
		return 0;
	if (bpf_probe_read_kernel(name, 6, &ops->name) < 0)
		return 0;
	return name[0] == 'm' && name[1] == 'p' && name[2] == 't' && name[3] == 'c' && name[4] == 'p' && !name[5];
}

static __always_inline void walk(struct sock *sk, struct kwalk_stats *st)
{
	struct inet_connection_sock___k *icsk = (void *)sk;
	struct mptcp_subflow_context___k *ctx, *sub;
	struct list_head___k *head, *pos;
	struct sock *msk, *ssk;
	__u32 n = 0, cwnd_sum = 0, srtt_min = ~0U, node_off, i;
	int self = 0;

	if (!is_mptcp_subflow(icsk)) {
		__sync_fetch_and_add(&st->not_mptcp, 1);
		return;
	}
	ctx = BPF_CORE_READ(icsk, icsk_ulp_data);
	if (!ctx)
		return;
	msk = BPF_CORE_READ(ctx, conn);
	if (!msk)
		return;
	head = __builtin_preserve_access_index(&((struct mptcp_sock___k *)msk)->conn_list);
	node_off = bpf_core_field_offset(struct mptcp_subflow_context___k, node);
	pos = BPF_CORE_READ(head, next);
	for (i = 0; i < KWALK_MAX_SUBS; i++) {
		struct tcp_sock *tp;
		__u32 srtt;

		if (!pos || pos == head)
			break;
		sub = (void *)pos - node_off;
		ssk = BPF_CORE_READ(sub, tcp_sock);
		if (ssk) {
			tp = (void *)ssk;
			n++;
			cwnd_sum += BPF_CORE_READ(tp, snd_cwnd);
			srtt = BPF_CORE_READ(tp, srtt_us);
			if (srtt < srtt_min)
				srtt_min = srtt;
			if (ssk == sk)
				self = 1;
		}
		pos = BPF_CORE_READ(pos, next);
	}
	if (i == KWALK_MAX_SUBS && pos && pos != head)
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
