/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* From a subflow of the Linux kernel's own MPTCP to its connection's other subflows, in a
 * congestion control: icsk_ulp_data is the subflow's mptcp_subflow_context, whose conn is the
 * mptcp_sock, whose conn_list links the contexts of all its subflows (net/mptcp/protocol.h).
 * These are internal kernel types: every read goes through bpf_probe_read_kernel with CO-RE
 * offsets, which Linux 6.1 allows in a struct_ops program (bpf_rdonly_cast, which would let the
 * verifier follow the pointers, came in 6.2), and a walk is bounded (KMPTCP_MAX_SUBS). The
 * kernel changes these lists under the connection's lock, which a subflow's congestion control
 * does not hold: a walk may see a subflow that is going away (its socket stays allocated while
 * it is on the list) and must never trust what it read for more than arithmetic. */
#ifndef MPTCPGO_KMPTCP_H
#define MPTCPGO_KMPTCP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* The kernel's types, as far as the walk reads them (the ___k flavour: CO-RE matches the names
 * before the suffix). */
struct list_head___k {
	struct list_head___k *next;
} __attribute__((preserve_access_index));

struct tcp_ulp_ops___k {
	char name[16];
} __attribute__((preserve_access_index));

struct sock_common___k {
	volatile unsigned char skc_state;
} __attribute__((preserve_access_index));

struct sock___k {
	struct sock_common___k __sk_common;
} __attribute__((preserve_access_index));

struct inet_connection_sock___k {
	const void *icsk_ca_ops;
	const struct tcp_ulp_ops___k *icsk_ulp_ops;
	void *icsk_ulp_data;
	__u64 icsk_ca_priv[13];
} __attribute__((preserve_access_index));

struct mptcp_subflow_context___k {
	struct list_head___k node;
	__u32 request_bkup : 1, backup : 1;
	struct sock *tcp_sock;
	struct sock *conn;
} __attribute__((preserve_access_index));

struct mptcp_sock___k {
	struct list_head___k conn_list;
} __attribute__((preserve_access_index));

#define KMPTCP_MAX_SUBS 8

/* kmptcp_is_subflow: the socket's upper layer protocol is the kernel's "mptcp". */
static __always_inline int kmptcp_is_subflow(struct sock *sk)
{
	struct inet_connection_sock___k *icsk = (void *)sk;
	const struct tcp_ulp_ops___k *ops = BPF_CORE_READ(icsk, icsk_ulp_ops);
	char name[8] = {};

	if (!ops)
		return 0;
	if (bpf_probe_read_kernel(name, 6, &ops->name) < 0)
		return 0;
	return name[0] == 'm' && name[1] == 'p' && name[2] == 't' && name[3] == 'c' && name[4] == 'p' && !name[5];
}

/* A walk of one connection's subflows. */
struct kmptcp_walk {
	struct list_head___k *head, *pos;
	__u32 node_off;
};

/* kmptcp_walk_start begins the walk of the connection of subflow sk; 0 when sk is no MPTCP
 * subflow (or its connection is gone). */
static __always_inline int kmptcp_walk_start(struct sock *sk, struct kmptcp_walk *w)
{
	struct inet_connection_sock___k *icsk = (void *)sk;
	struct mptcp_subflow_context___k *ctx;
	struct list_head___k *head;
	struct sock *msk;

	if (!kmptcp_is_subflow(sk))
		return 0;
	ctx = BPF_CORE_READ(icsk, icsk_ulp_data);
	if (!ctx)
		return 0;
	msk = BPF_CORE_READ(ctx, conn);
	if (!msk)
		return 0;
	/* Locals only inside the CO-RE reads: a member of struct kmptcp_walk named there would be
	 * relocated too, against a kernel that has no such type. */
	head = __builtin_preserve_access_index(&((struct mptcp_sock___k *)msk)->conn_list);
	w->head = head;
	w->node_off = bpf_core_field_offset(struct mptcp_subflow_context___k, node);
	w->pos = BPF_CORE_READ(head, next);
	return 1;
}

/* kmptcp_walk_next returns the next subflow's context, or 0 at the end of the list. */
static __always_inline struct mptcp_subflow_context___k *kmptcp_walk_next(struct kmptcp_walk *w)
{
	struct list_head___k *pos = w->pos;

	if (!pos || pos == w->head)
		return 0;
	w->pos = BPF_CORE_READ(pos, next);
	return (void *)pos - w->node_off;
}

/* kmptcp_walk_more reports whether subflows are left after the bound. */
static __always_inline int kmptcp_walk_more(const struct kmptcp_walk *w)
{
	return w->pos && w->pos != w->head;
}

#endif
