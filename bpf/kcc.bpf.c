// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Coupled congestion control for the Linux kernel's own MPTCP sockets, which the kernel lacks:
 * LIA (RFC 6356), OLIA and BALIA as struct_ops congestion controls that an application selects
 * with TCP_CONGESTION on an IPPROTO_MPTCP socket (the kernel hands the choice on to every
 * subflow). They are registered TCP_CONG_NON_RESTRICTED, so that any socket may select them, and
 * loaded by `mptcpctl cc load` (internal/kcc), not by the daemon.
 *
 * Each subflow keeps its coupled state (struct cc_state, coupled_ca.h) at the start of its own
 * icsk_ca_priv, where it alone writes it; the others read it there through the walk of kmptcp.h.
 * A subflow counts in the coupling when it is established, runs the same algorithm, has published
 * a window and an RTT, and is a regular one (or all of them are backups): the kernel's scheduler
 * sends on backups only when no regular subflow is left. A socket that is no MPTCP subflow (the
 * algorithm selected on a plain TCP socket, or a connection that fell back) is Reno. The
 * arithmetic is coupled.h's, the same as our own subflows'. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "coupled_ca.h"
#include "kmptcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TCP_ESTABLISHED 1

/* What the programs did, per CPU, for `mptcpctl cc show` and the tests. */
enum kcc_counter {
	KCC_CONG_AVOID = 0, /* cong_avoid calls */
	KCC_NOT_MPTCP,      /* of them on a socket that is no MPTCP subflow: Reno */
	KCC_ALONE,          /* on a subflow that found no other one to couple with: Reno */
	KCC_COUPLED,        /* on a subflow coupled with at least one other */
	KCC_SUBS_SEEN,      /* subflows the coupled calls counted, summed (÷ KCC_COUPLED: the mean) */
	KCC_TRUNCATED,      /* walks that stopped at KMPTCP_MAX_SUBS subflows */
	KCC_BACKUP_LEFT,    /* backup subflows left out because a regular one was there */
	KCC_SSTHRESH,       /* losses (ssthresh calls) */
	KCC_NR_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KCC_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} kcc_stats SEC(".maps");

/* Keeps the enum in BTF for bpf2go. */
const enum kcc_counter *kcc_counter_btf __attribute__((unused));

static __always_inline void kcc_count(enum kcc_counter c, __u64 n)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&kcc_stats, &k);

	if (v)
		*v += n;
}

static __always_inline struct cc_state *kcc_state(struct sock *sk)
{
	return (struct cc_state *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

/* Per-slot marks of a walk, in cc_path._pad (which no subflow publishes). */
#define KCC_COUNTS 0x1 /* established, same algorithm, state readable */
#define KCC_BACKUP 0x2 /* a backup subflow (either end asked for it) */
#define KCC_SELF 0x4   /* the calling subflow */

/* kcc_select keeps the paths that count among the n slots a walk filled: the regular subflows,
 * or the backups when there is no regular one, moved to the front (cc_compact, which also leaves
 * out a path without a window or an RTT). It returns their number and, in bits 8..15, the
 * caller's index among them (CC_MAX_SUBS when it does not count), as coupled_ca.h wants. A global
 * function, verified once on its own: inlined, the branches on each slot's marks multiplied the
 * walk's verifier states beyond its limit. */
__attribute__((noinline)) __u32 kcc_select(struct cc_paths *ps, __u32 n)
{
	__u32 nreg = 0, self = CC_MAX_SUBS, f;

	if (!ps)
		return 0;
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		f = ps->p[k]._pad;
		if (!(f & KCC_COUNTS)) {
			ps->p[k].cwnd = 0;
			continue;
		}
		if (!(f & KCC_BACKUP))
			nreg++;
		if (f & KCC_SELF)
			self = k;
	}
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n || !nreg)
			break;
		if ((ps->p[k]._pad & (KCC_COUNTS | KCC_BACKUP)) == (KCC_COUNTS | KCC_BACKUP)) {
			ps->p[k].cwnd = 0;
			kcc_count(KCC_BACKUP_LEFT, 1);
		}
	}
	return cc_compact(ps, n, self);
}

/* kcc_gather walks the connection of subflow sk and copies each subflow's published path into
 * its slot of ps, marked; it returns kcc_select's result (cc_avoid_coupled's compaction of it
 * changes nothing), 0 when sk is no MPTCP subflow. Only
 * the loop counter indexes ps: an index the data chose would be a verifier state of its own. */
static __always_inline __u32 kcc_gather(struct sock *sk, struct cc_paths *ps)
{
	struct inet_connection_sock___k *me = (void *)sk;
	const void *ops = BPF_CORE_READ(me, icsk_ca_ops);
	struct mptcp_subflow_context___k *sub;
	struct kmptcp_walk w;
	__u32 i;

	if (!kmptcp_walk_start(sk, &w)) {
		kcc_count(KCC_NOT_MPTCP, 1);
		return 0;
	}
	for (i = 0; i < KMPTCP_MAX_SUBS; i++) {
		struct inet_connection_sock___k *icsk;
		struct cc_path *p = &ps->p[i];
		struct sock *ssk;
		__u32 f = KCC_COUNTS;

		sub = kmptcp_walk_next(&w);
		if (!sub)
			break;
		p->_pad = 0;
		ssk = BPF_CORE_READ(sub, tcp_sock);
		if (!ssk)
			continue;
		icsk = (void *)ssk;
		if (BPF_CORE_READ((struct sock___k *)ssk, __sk_common.skc_state) != TCP_ESTABLISHED)
			continue;
		if (BPF_CORE_READ(icsk, icsk_ca_ops) != ops)
			continue;
		if (bpf_probe_read_kernel(p, sizeof(*p), __builtin_preserve_access_index(&icsk->icsk_ca_priv)) < 0)
			continue;
		if (BPF_CORE_READ_BITFIELD_PROBED(sub, backup) || BPF_CORE_READ_BITFIELD_PROBED(sub, request_bkup))
			f |= KCC_BACKUP;
		if (ssk == sk)
			f |= KCC_SELF;
		p->_pad = f;
	}
	if (kmptcp_walk_more(&w))
		kcc_count(KCC_TRUNCATED, 1);
	return kcc_select(ps, i);
}

static __always_inline void kcc_init(struct sock *sk)
{
	cc_state_init((struct tcp_sock *)sk, kcc_state(sk));
}

static __always_inline void kcc_cong_avoid(struct sock *sk, __u32 acked, __u32 algo)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct cc_state *cs = kcc_state(sk);
	struct cc_paths ps;
	__u32 r, n;

	kcc_count(KCC_CONG_AVOID, 1);
	acked = cc_avoid_begin(tp, cs, acked);
	if (!acked)
		return;
	r = kcc_gather(sk, &ps); /* compacted already: the counts below are the coupling's */
	n = r & 0xff;
	if (n > 1 && (r >> 8) < n) {
		kcc_count(KCC_COUPLED, 1);
		kcc_count(KCC_SUBS_SEEN, n);
	} else if (r) {
		kcc_count(KCC_ALONE, 1);
	}
	cc_avoid_coupled(tp, cs, &ps, r, algo, acked);
}

static __always_inline __u32 kcc_ssthresh(struct sock *sk, __u32 algo)
{
	struct cc_paths ps;

	kcc_count(KCC_SSTHRESH, 1);
	if (algo != CC_BALIA)
		return tcp_reno_ssthresh(sk);
	return cc_balia_ssthresh(sk, &ps, kcc_gather(sk, &ps));
}

/* TCP_CONG_NON_RESTRICTED: any socket may select it with TCP_CONGESTION. */
#define TCP_CONG_NON_RESTRICTED 0x1

/* One algorithm: its programs and its struct_ops map, registered under NAME. */
#define KCC_ALGO(algo_id, id, NAME)                                                              \
	SEC("struct_ops") void BPF_PROG(id##_init, struct sock *sk)                                \
	{                                                                                          \
		kcc_init(sk);                                                                      \
	}                                                                                          \
	SEC("struct_ops") __u32 BPF_PROG(id##_ssthresh, struct sock *sk)                           \
	{                                                                                          \
		return kcc_ssthresh(sk, algo_id);                                                  \
	}                                                                                          \
	SEC("struct_ops") void BPF_PROG(id##_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)  \
	{                                                                                          \
		kcc_cong_avoid(sk, acked, algo_id);                                                \
	}                                                                                          \
	SEC("struct_ops") void BPF_PROG(id##_set_state, struct sock *sk, __u8 new_state)           \
	{                                                                                          \
		cc_set_state(sk, kcc_state(sk), new_state);                                        \
	}                                                                                          \
	SEC("struct_ops") void BPF_PROG(id##_in_ack_event, struct sock *sk, __u32 flags)           \
	{                                                                                          \
		cc_publish((struct tcp_sock *)sk, kcc_state(sk));                                  \
	}                                                                                          \
	SEC("struct_ops") __u32 BPF_PROG(id##_undo_cwnd, struct sock *sk)                          \
	{                                                                                          \
		return tcp_reno_undo_cwnd(sk);                                                     \
	}                                                                                          \
	SEC(".struct_ops.link") struct tcp_congestion_ops id = {                                   \
		.init = (void *)id##_init,                                                         \
		.ssthresh = (void *)id##_ssthresh,                                                 \
		.cong_avoid = (void *)id##_cong_avoid,                                             \
		.set_state = (void *)id##_set_state,                                               \
		.in_ack_event = (void *)id##_in_ack_event,                                         \
		.undo_cwnd = (void *)id##_undo_cwnd,                                               \
		.flags = TCP_CONG_NON_RESTRICTED,                                                  \
		.name = NAME,                                                                      \
	};

KCC_ALGO(CC_LIA, lia, "lia")
KCC_ALGO(CC_OLIA, olia, "olia")
KCC_ALGO(CC_BALIA, balia, "balia")
