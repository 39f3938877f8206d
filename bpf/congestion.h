/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Our subflows' congestion control (struct_ops tcp_congestion_ops, defined in datapath.bpf.c).
 *
 * Each connection names its algorithm (conn_ctl.cc): the kernel's CUBIC through its kfuncs, Reno,
 * or a coupled one (RFC 6356's goal: a multipath connection takes no more of a shared bottleneck
 * than one TCP flow would): LIA, OLIA or BALIA, whose arithmetic is in coupled.h. A coupled
 * subflow publishes its window, RTT and loss interval in its slot (sub_st.cc.path) on every ACK
 * and reads those of the subflows Go lists as coupled (conn_ctl.cc_subs). Slow start, the
 * halving on loss (BALIA's decrease aside) and a lone subflow are Reno's.
 *
 * A pure ACK on demand: a plain TCP socket has nothing to send when the peer's DATA_FIN needs a
 * DATA_ACK or Go's data-level state moved, so the datapath asks for an ACK (sub_st.ack_pending,
 * or the sub_ctl.ack_req doorbell) and in_ack_event sends it. Go rings the doorbell from process
 * context by switching the socket between our two identical algorithms (A and B): the switch
 * runs init(), which answers the doorbell under the socket lock. The switch clears the kernel's
 * per-socket congestion state (icsk_ca_priv): the coupled algorithms keep theirs in the slot,
 * and CUBIC's is saved by release() and put back by init().
 */
#ifndef MPTCPGO_CONGESTION_H
#define MPTCPGO_CONGESTION_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <bpf/bpf_core_read.h>

#include "coupled_ca.h"
#include "datapath_common.h"
#include "ktypes.h"

extern void cubictcp_init(struct sock *sk) __ksym;
extern __u32 cubictcp_recalc_ssthresh(struct sock *sk) __ksym;
extern void cubictcp_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern void cubictcp_state(struct sock *sk, __u8 new_state) __ksym;
extern void cubictcp_cwnd_event(struct sock *sk, enum tcp_ca_event event) __ksym;
extern void cubictcp_acked(struct sock *sk, const struct ack_sample *sample) __ksym;

/* ca_of finds a socket's connection and subflow slots; it returns the connection's algorithm
 * (CUBIC for a socket that has none). */
static __always_inline __u32 ca_of(struct sock *sk, struct sk_sub **sp, struct conn **cp, struct sub **sbp)
{
	struct sk_sub *s = bpf_sk_storage_get(&sk_subs, sk, 0, 0);
	struct conn *c;
	struct sub *sb;

	*sp = s;
	*cp = 0;
	*sbp = 0;
	if (!s)
		return CC_CUBIC;
	c = conn_of(s);
	sb = sub_of(s);
	if (!c || !sb)
		return CC_CUBIC;
	*cp = c;
	*sbp = sb;
	return c->ctl.cc < CC_NUM ? c->ctl.cc : CC_CUBIC;
}

/* ca_coupled reports whether algo couples the subflows. */
static __always_inline int ca_coupled(__u32 algo)
{
	return algo == CC_LIA || algo == CC_OLIA || algo == CC_BALIA;
}

/* ca_gather copies the coupled subflows' published state into ps; it returns their count and,
 * in bits 8..15, the index of subflow me among them (CC_MAX_SUBS if Go has not listed it). */
static __always_inline __u32 ca_gather(struct conn *c, __u32 me, struct cc_paths *ps)
{
	__u32 n = c->ctl.cc_n, np = 0, self = CC_MAX_SUBS;

	for (__u32 i = 0; i < CC_MAX_SUBS; i++) {
		__u32 k;
		struct sub *p;

		if (i >= n)
			break;
		k = c->ctl.cc_subs[i];
		p = sub_at(k);
		if (!p)
			continue;
		ps->p[CC_IDX(np)] = p->st.cc.cs.path;
		if (k == me)
			self = np;
		np++;
	}
	return np | self << 8;
}

/* ca_init sets up a socket's algorithm, or after the switch that rings the ACK doorbell puts
 * CUBIC's state back. */
static __always_inline void ca_init(struct sock *sk)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (sb && (sb->st.cc.cs.flags & SUBCC_CA_SAVED)) {
		sb->st.cc.cs.flags &= ~SUBCC_CA_SAVED;
		if (algo == CC_CUBIC) {
			for (int i = 0; i < 13; i++)
				icsk->icsk_ca_priv[i] = sb->st.cc.ca_save[i];
			dp_count(DP_CCCubicKept);
			return;
		}
	}
	if (algo == CC_CUBIC)
		cubictcp_init(sk);
	if (sb && !(sb->st.cc.cs.flags & SUBCC_INITED)) {
		sb->st.cc.cs.flags |= SUBCC_INITED;
		cc_state_init(tp, &sb->st.cc.cs);
	}
}

/* ca_release keeps CUBIC's state for the init() that follows a switch. */
static __always_inline void ca_release(struct sock *sk)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;

	if (ca_of(sk, &s, &c, &sb) != CC_CUBIC || !sb)
		return;
	for (int i = 0; i < 13; i++)
		sb->st.cc.ca_save[i] = icsk->icsk_ca_priv[i];
	sb->st.cc.cs.flags |= SUBCC_CA_SAVED;
}

/* ca_set_state follows the TCP congestion state (cc_set_state). */
static __always_inline void ca_set_state(struct sock *sk, __u8 new_state)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (algo == CC_CUBIC)
		cubictcp_state(sk, new_state);
	if (sb)
		cc_set_state(sk, &sb->st.cc.cs, new_state);
}

/* ca_in_ack_event keeps the published state current on every ACK, also in recovery, where
 * cong_avoid is not called. */
static __always_inline void ca_in_ack_event(struct sock *sk)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;

	ca_of(sk, &s, &c, &sb);
	if (sb)
		cc_publish((struct tcp_sock *)sk, &sb->st.cc.cs);
}

static __always_inline __u32 ca_ssthresh(struct sock *sk)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (algo == CC_CUBIC)
		return cubictcp_recalc_ssthresh(sk);
	if (algo == CC_BALIA && s && c) {
		struct cc_paths ps;

		return cc_balia_ssthresh(sk, &ps, ca_gather(c, s->sub, &ps));
	}
	return tcp_reno_ssthresh(sk);
}

static __always_inline void ca_cong_avoid(struct sock *sk, __u32 ack, __u32 acked)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (algo == CC_CUBIC) {
		cubictcp_cong_avoid(sk, ack, acked);
		if (sb)
			cc_publish((struct tcp_sock *)sk, &sb->st.cc.cs);
		return;
	}
	if (!ca_coupled(algo) || !s || !c || !sb) {
		tcp_reno_cong_avoid(sk, ack, acked);
		if (sb)
			cc_publish((struct tcp_sock *)sk, &sb->st.cc.cs);
		return;
	}
	acked = cc_avoid_begin((struct tcp_sock *)sk, &sb->st.cc.cs, acked);
	if (acked) {
		struct cc_paths ps;

		cc_avoid_coupled((struct tcp_sock *)sk, &sb->st.cc.cs, &ps, ca_gather(c, s->sub, &ps), algo, acked);
	}
}

static __always_inline void ca_cwnd_event(struct sock *sk, enum tcp_ca_event ev)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;

	if (ca_of(sk, &s, &c, &sb) == CC_CUBIC)
		cubictcp_cwnd_event(sk, ev);
}

/* data_rtt_sample folds an ACK's RTT sample into the subflow's data RTT (sub_st.data_srtt_us),
 * once the ACK acknowledges data: not the SYN's or the SYN/ACK's sample. */
static __always_inline void data_rtt_sample(struct sock *sk, struct sk_sub *s, struct sub *sb, __s32 rtt_us)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 srtt, rtt;

	if (!s || !sb || rtt_us <= 0 || (__s32)(tp->snd_una - s->snd_isn) <= 1)
		return;
	rtt = rtt_us;
	srtt = sb->st.data_srtt_us;
	sb->st.data_srtt_us = srtt ? srtt - (srtt >> 3) + (rtt >> 3) : rtt;
}

static __always_inline void ca_pkts_acked(struct sock *sk, const struct ack_sample *sample)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	data_rtt_sample(sk, s, sb, sample->rtt_us);
	if (algo == CC_CUBIC)
		cubictcp_acked(sk, sample);
}

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
