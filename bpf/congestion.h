/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Our subflows' congestion control (struct_ops tcp_congestion_ops, defined in datapath.bpf.c).
 *
 * Congestion avoidance is the kernel's CUBIC, called through its kfuncs. What we add: a pure ACK
 * on demand. A plain TCP socket has nothing to send when the peer's DATA_FIN needs a DATA_ACK or
 * Go's data-level state moved, so the datapath asks for an ACK (sub_st.ack_pending, or the
 * sub_ctl.ack_req doorbell) and in_ack_event sends it. Go rings the doorbell from process context
 * by switching the socket between our two identical algorithms (A and B): the switch runs init(),
 * which answers the doorbell under the socket lock. Coupled congestion control lives here later.
 */
#ifndef MPTCPGO_CONGESTION_H
#define MPTCPGO_CONGESTION_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "datapath_common.h"
#include "ktypes.h"

extern void cubictcp_init(struct sock *sk) __ksym;
extern __u32 cubictcp_recalc_ssthresh(struct sock *sk) __ksym;
extern void cubictcp_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern void cubictcp_state(struct sock *sk, __u8 new_state) __ksym;
extern void cubictcp_cwnd_event(struct sock *sk, enum tcp_ca_event event) __ksym;
extern void cubictcp_acked(struct sock *sk, const struct ack_sample *sample) __ksym;
extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;

/* ack_on_demand sends a pure ACK when the datapath or Go asked for one. */
static __always_inline void ack_on_demand(struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct sk_sub *s = bpf_sk_storage_get(&sk_subs, sk, 0, 0);
	struct sub *sb;
	__u32 req;

	if (!s || s->state != SUB_MPTCP)
		return;
	sb = sub_of(s);
	if (!sb)
		return;
	req = sb->ctl.ack_req;
	if (!sb->st.ack_pending && req == sb->st.ack_done)
		return;
	sb->st.ack_pending = 0;
	sb->st.ack_done = req;
	bpf_tcp_send_ack(tp, tp->rcv_nxt);
	dp_count(DP_AckOnDemand);
}

#endif
