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

#include "coupled.h"
#include "datapath_common.h"
#include "ktypes.h"

extern void cubictcp_init(struct sock *sk) __ksym;
extern __u32 cubictcp_recalc_ssthresh(struct sock *sk) __ksym;
extern void cubictcp_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern void cubictcp_state(struct sock *sk, __u8 new_state) __ksym;
extern void cubictcp_cwnd_event(struct sock *sk, enum tcp_ca_event event) __ksym;
extern void cubictcp_acked(struct sock *sk, const struct ack_sample *sample) __ksym;
extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;
extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern __u32 tcp_slow_start(struct tcp_sock *tp, __u32 acked) __ksym;
extern void tcp_cong_avoid_ai(struct tcp_sock *tp, __u32 w, __u32 acked) __ksym;

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

/* ca_publish writes this subflow's state where the connection's other subflows read it. In fast
 * recovery the window is inflated: the threshold stands for it (as the reference OLIA does). */
static __always_inline void ca_publish(struct tcp_sock *tp, struct sub *sb)
{
	struct sub_cc *cc = &sb->st.cc;
	__u32 a = cc->loss3 - cc->loss2, b = cc->loss2 - cc->loss1;

	cc->loss3 = tp->snd_una;
	cc->path.cwnd = cc->ca_state == TCP_CA_Recovery ? tp->snd_ssthresh : tp->snd_cwnd;
	cc->path.srtt_us = tp->srtt_us >> 3;
	cc->path.loss_int = (a > b ? a : b) >> 6;
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
		p = bpf_map_lookup_elem(&subs, &k);
		if (!p)
			continue;
		ps->p[CC_IDX(np)] = p->st.cc.path;
		if (k == me)
			self = np;
		np++;
	}
	return np | self << 8;
}

/* ca_cwnd_limited is the kernel's tcp_is_cwnd_limited. */
static __always_inline int ca_cwnd_limited(struct tcp_sock *tp)
{
	if (tp->snd_cwnd < tp->snd_ssthresh)
		return tp->snd_cwnd < 2 * tp->max_packets_out;
	return BPF_CORE_READ_BITFIELD(tp, is_cwnd_limited);
}

/* ca_olia_apply adds inc (per packet, scaled by 2^CC_INC_SHIFT) for acked packets to the
 * accumulated change, and moves the window by its whole packets (OLIA may decrease it). */
static __always_inline void ca_olia_apply(struct tcp_sock *tp, struct sub_cc *cc, __s64 inc, __u32 acked)
{
	__s64 cnt = cc->cnt + inc * (__s64)acked;
	__u32 cwnd = tp->snd_cwnd, k;

	if (cnt >= (1LL << CC_INC_SHIFT)) {
		k = (__u64)cnt >> CC_INC_SHIFT;
		cnt -= (__s64)k << CC_INC_SHIFT;
		if (cwnd + k > tp->snd_cwnd_clamp)
			k = tp->snd_cwnd_clamp > cwnd ? tp->snd_cwnd_clamp - cwnd : 0;
		tp->snd_cwnd = cwnd + k;
	} else if (cnt <= -(1LL << CC_INC_SHIFT)) {
		k = (__u64)(-cnt) >> CC_INC_SHIFT;
		cnt += (__s64)k << CC_INC_SHIFT;
		if (k > cwnd - 2)
			k = cwnd > 2 ? cwnd - 2 : 0;
		tp->snd_cwnd = cwnd - k;
	}
	cc->cnt = cnt;
}

/* ca_coupled_avoid is congestion avoidance for LIA, OLIA and BALIA: Reno's slow start, then the
 * coupled increase for the packets acknowledged (stretch ACKs count for all they cover). */
static __always_inline void ca_coupled_avoid(struct sock *sk, struct sk_sub *s, struct conn *c, struct sub *sb,
					     __u32 algo, __u32 acked)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct cc_paths ps;
	__u32 r, n, self, w = 0;

	ca_publish(tp, sb);
	if (!ca_cwnd_limited(tp))
		return;
	if (tp->snd_cwnd < tp->snd_ssthresh) {
		acked = tcp_slow_start(tp, acked);
		if (!acked)
			return;
	}
	r = ca_gather(c, s->sub, &ps);
	r = cc_compact(&ps, r & 0xff, r >> 8);
	n = r & 0xff;
	self = r >> 8;
	if (n > 1 && self < n) {
		if (algo == CC_OLIA) {
			ca_olia_apply(tp, &sb->st.cc, olia_increase(&ps, n, self), acked);
			return;
		}
		w = algo == CC_LIA ? lia_window(&ps, n, self) : (__u32)balia_params(&ps, n, self);
	}
	tcp_cong_avoid_ai(tp, w ? w : tp->snd_cwnd, acked);
}

/* ca_balia_ssthresh is BALIA's window after a loss: cwnd − md, Reno's alone. */
static __always_inline __u32 ca_balia_ssthresh(struct sock *sk, struct sk_sub *s, struct conn *c)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct cc_paths ps;
	__u32 r, n, self, md;

	r = ca_gather(c, s->sub, &ps);
	r = cc_compact(&ps, r & 0xff, r >> 8);
	n = r & 0xff;
	self = r >> 8;
	if (n <= 1 || self >= n)
		return tcp_reno_ssthresh(sk);
	md = balia_params(&ps, n, self) >> 32;
	return tp->snd_cwnd > md + 2 ? tp->snd_cwnd - md : 2;
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

	if (sb && (sb->st.cc.flags & SUBCC_CA_SAVED)) {
		sb->st.cc.flags &= ~SUBCC_CA_SAVED;
		if (algo == CC_CUBIC) {
			for (int i = 0; i < 13; i++)
				icsk->icsk_ca_priv[i] = sb->st.cc.ca_save[i];
			dp_count(DP_CCCubicKept);
			return;
		}
	}
	if (algo == CC_CUBIC)
		cubictcp_init(sk);
	if (sb && !(sb->st.cc.flags & SUBCC_INITED)) {
		sb->st.cc.flags |= SUBCC_INITED;
		sb->st.cc.loss1 = sb->st.cc.loss2 = sb->st.cc.loss3 = tp->snd_una;
		sb->st.cc.cnt = 0;
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
	sb->st.cc.flags |= SUBCC_CA_SAVED;
}

/* ca_set_state follows the TCP congestion state; OLIA's loss intervals end at each loss (a
 * retransmission timeout repeating the same loss does not start another). */
static __always_inline void ca_set_state(struct sock *sk, __u8 new_state)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (algo == CC_CUBIC)
		cubictcp_state(sk, new_state);
	if (!sb)
		return;
	if ((new_state == TCP_CA_Loss || new_state == TCP_CA_Recovery || new_state == TCP_CA_CWR) &&
	    sb->st.cc.loss3 != sb->st.cc.loss2 && !icsk->icsk_retransmits) {
		sb->st.cc.loss1 = sb->st.cc.loss2;
		sb->st.cc.loss2 = sb->st.cc.loss3;
	}
	sb->st.cc.ca_state = new_state;
	ca_publish((struct tcp_sock *)sk, sb); /* entering recovery: the new threshold stands for the window */
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
		ca_publish((struct tcp_sock *)sk, sb);
}

static __always_inline __u32 ca_ssthresh(struct sock *sk)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 algo = ca_of(sk, &s, &c, &sb);

	if (algo == CC_CUBIC)
		return cubictcp_recalc_ssthresh(sk);
	if (algo == CC_BALIA && s && c)
		return ca_balia_ssthresh(sk, s, c);
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
			ca_publish((struct tcp_sock *)sk, sb);
		return;
	}
	if (!ca_coupled(algo) || !s || !c || !sb) {
		tcp_reno_cong_avoid(sk, ack, acked);
		if (sb)
			ca_publish((struct tcp_sock *)sk, sb);
		return;
	}
	ca_coupled_avoid(sk, s, c, sb, algo, acked);
}

static __always_inline void ca_cwnd_event(struct sock *sk, enum tcp_ca_event ev)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;

	if (ca_of(sk, &s, &c, &sb) == CC_CUBIC)
		cubictcp_cwnd_event(sk, ev);
}

static __always_inline void ca_pkts_acked(struct sock *sk, const struct ack_sample *sample)
{
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;

	if (ca_of(sk, &s, &c, &sb) == CC_CUBIC)
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
