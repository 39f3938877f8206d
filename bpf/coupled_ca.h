/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The coupled congestion controls' work on one socket, shared by our subflows' struct_ops
 * (congestion.h, state in the subflow's slot) and by the one for the kernel's MPTCP sockets
 * (kcc.bpf.c, state in icsk_ca_priv). Each caller gathers the connection's published paths its
 * own way (struct cc_paths, coupled.h) and hands them in with the result of its gather: the
 * count of paths in bits 0..7 and the caller's index among them in bits 8..15 (CC_MAX_SUBS when
 * it is not one of them). */
#ifndef MPTCPGO_COUPLED_CA_H
#define MPTCPGO_COUPLED_CA_H

#include <linux/bpf.h>
#include <linux/tcp.h> /* enum tcp_ca_state */
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "coupled.h"
#include "ktypes.h"

extern __u32 tcp_reno_undo_cwnd(struct sock *sk) __ksym;
extern __u32 tcp_reno_ssthresh(struct sock *sk) __ksym;
extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;
extern __u32 tcp_slow_start(struct tcp_sock *tp, __u32 acked) __ksym;
extern void tcp_cong_avoid_ai(struct tcp_sock *tp, __u32 w, __u32 acked) __ksym;

/* cc_publish writes this subflow's state where the connection's other subflows read it. In fast
 * recovery the window is inflated: the threshold stands for it (as the reference OLIA does). */
static __always_inline void cc_publish(struct tcp_sock *tp, struct cc_state *cs)
{
	__u32 a = cs->loss3 - cs->loss2, b = cs->loss2 - cs->loss1;

	cs->loss3 = tp->snd_una;
	cs->path.cwnd = cs->ca_state == TCP_CA_Recovery ? tp->snd_ssthresh : tp->snd_cwnd;
	cs->path.srtt_us = tp->srtt_us >> 3;
	cs->path.loss_int = (a > b ? a : b) >> 6;
}

/* cc_state_init starts OLIA's loss intervals at the current point of the stream. */
static __always_inline void cc_state_init(struct tcp_sock *tp, struct cc_state *cs)
{
	cs->loss1 = cs->loss2 = cs->loss3 = tp->snd_una;
	cs->cnt = 0;
}

/* cc_cwnd_limited is the kernel's tcp_is_cwnd_limited. */
static __always_inline int cc_cwnd_limited(struct tcp_sock *tp)
{
	if (tp->snd_cwnd < tp->snd_ssthresh)
		return tp->snd_cwnd < 2 * tp->max_packets_out;
	return BPF_CORE_READ_BITFIELD(tp, is_cwnd_limited);
}

/* cc_olia_apply adds inc (per packet, scaled by 2^CC_INC_SHIFT) for acked packets to the
 * accumulated change, and moves the window by its whole packets (OLIA may decrease it). */
static __always_inline void cc_olia_apply(struct tcp_sock *tp, struct cc_state *cs, __s64 inc, __u32 acked)
{
	__s64 cnt = cs->cnt + inc * (__s64)acked;
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
	cs->cnt = cnt;
}

/* cc_avoid_begin is the start of congestion avoidance for LIA, OLIA and BALIA: it publishes the
 * state, and does Reno's slow start. It returns the packets acknowledged that are left for the
 * coupled increase (0: nothing more to do). */
static __always_inline __u32 cc_avoid_begin(struct tcp_sock *tp, struct cc_state *cs, __u32 acked)
{
	cc_publish(tp, cs);
	if (!cc_cwnd_limited(tp))
		return 0;
	if (tp->snd_cwnd < tp->snd_ssthresh)
		acked = tcp_slow_start(tp, acked);
	return acked;
}

/* cc_avoid_coupled is the coupled increase for the packets acknowledged (stretch ACKs count for
 * all they cover), on the paths gathered (r: the gather's result). A subflow alone, or not among
 * the paths, is Reno. */
static __always_inline void cc_avoid_coupled(struct tcp_sock *tp, struct cc_state *cs, struct cc_paths *ps, __u32 r,
					     __u32 algo, __u32 acked)
{
	__u32 n, self, w = 0;

	r = cc_compact(ps, r & 0xff, r >> 8);
	n = r & 0xff;
	self = r >> 8;
	if (n > 1 && self < n) {
		if (algo == CC_OLIA) {
			cc_olia_apply(tp, cs, olia_increase(ps, n, self), acked);
			return;
		}
		w = algo == CC_LIA ? lia_window(ps, n, self) : (__u32)balia_params(ps, n, self);
	}
	tcp_cong_avoid_ai(tp, w ? w : tp->snd_cwnd, acked);
}

/* cc_balia_ssthresh is BALIA's window after a loss, cwnd − md, on the paths gathered; Reno's
 * alone. */
static __always_inline __u32 cc_balia_ssthresh(struct sock *sk, struct cc_paths *ps, __u32 r)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 n, self, md;

	r = cc_compact(ps, r & 0xff, r >> 8);
	n = r & 0xff;
	self = r >> 8;
	if (n <= 1 || self >= n)
		return tcp_reno_ssthresh(sk);
	md = balia_params(ps, n, self) >> 32;
	return tp->snd_cwnd > md + 2 ? tp->snd_cwnd - md : 2;
}

/* cc_set_state follows the TCP congestion state; OLIA's loss intervals end at each loss (a
 * retransmission timeout repeating the same loss does not start another). Entering recovery, the
 * new threshold stands for the window. */
static __always_inline void cc_set_state(struct sock *sk, struct cc_state *cs, __u8 new_state)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;

	if ((new_state == TCP_CA_Loss || new_state == TCP_CA_Recovery || new_state == TCP_CA_CWR) &&
	    cs->loss3 != cs->loss2 && !icsk->icsk_retransmits) {
		cs->loss1 = cs->loss2;
		cs->loss2 = cs->loss3;
	}
	cs->ca_state = new_state;
	cc_publish((struct tcp_sock *)sk, cs);
}

#endif
