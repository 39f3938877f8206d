/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Established subflows, transmit side: the option room each segment needs, and the option it
 * carries. DSS (RFC 8684 §3.3) with the mapping looked up by the segment's sequence number in the
 * table Go fills, the data ACK from connection state, and our DATA_FIN; MP_FAIL, MP_FASTCLOSE and
 * MP_TCPRST; the options Go queues (ADD_ADDR, REMOVE_ADDR, MP_PRIO); and the repeats of the
 * handshake's last option until the peer shows it arrived.
 */
#ifndef MPTCPGO_EST_TX_H
#define MPTCPGO_EST_TX_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "opt_write.h"
#include "sockops_common.h"

/* data_fin_pending reports whether our DATA_FIN is due and not yet acknowledged by the peer. */
static __always_inline int data_fin_pending(struct conn *c)
{
	return (c->ctl.flags & CONNF_DATA_FIN) && !before64(c->ctl.snd_fin_dsn, c->st.peer_data_ack);
}

/* find_txmap returns the index of the mapping covering relative SSN rel, or -1. Mappings are
 * appended in SSN order; the search starts at the last hit, then bisects the ring. */
static __always_inline __s64 find_txmap(struct sub *sb, __u32 rel)
{
	__u64 head = sb->ctl.txmap_head, lo, hi, i;
	struct txmap *m;

	if (!head)
		return -1;
	/* Go overwrites the slot of entry head-RING while writing entry head: never read it. */
	lo = head > TXMAP_RING - 1 ? head - (TXMAP_RING - 1) : 0;
	hi = head; /* search [lo, hi) */
	i = sb->st.txmap_hint;
	if (i < lo || i >= hi)
		i = hi - 1;
	m = &sb->ctl.txmap[i & TXMAP_MASK];
	if ((__s32)(rel - m->ssn) >= 0 && (__s32)(rel - m->ssn) < m->len)
		return i;
	if (i + 1 < hi) {
		m = &sb->ctl.txmap[(i + 1) & TXMAP_MASK];
		if ((__s32)(rel - m->ssn) >= 0 && (__s32)(rel - m->ssn) < m->len)
			return i + 1;
	}
	/* Bisect: the first entry whose ssn is after rel, minus one. */
	for (int k = 0; k < 10; k++) {
		__u64 mid;

		if (lo + 1 >= hi)
			break;
		mid = lo + (hi - lo) / 2;
		m = &sb->ctl.txmap[mid & TXMAP_MASK];
		if ((__s32)(rel - m->ssn) < 0)
			hi = mid;
		else
			lo = mid;
	}
	m = &sb->ctl.txmap[lo & TXMAP_MASK];
	if ((__s32)(rel - m->ssn) >= 0 && (__s32)(rel - m->ssn) < m->len)
		return lo;
	return -1;
}

/* ---- option length ---- */

/* est_opt_len returns the room the option of an established subflow's segment takes, or 0 when
 * the segment carries only a data ACK. */
static __always_inline __u32 est_opt_len(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
					 struct sub *sb, __u32 tcp_flags)
{
	if (tcp_flags & TCP_FLAG_RST)
		return LEN_MP_FASTCLOSE;
	if (skops->skb_len > 0 || (tcp_flags & TCP_FLAG_FIN) || data_fin_pending(c) || (c->ctl.flags & CONNF_MP_FAIL))
		return ALIGN4(LEN_DSS_FULL);
	if (sb && sb->ctl.opt_gen != sb->st.opt_done && sb->ctl.opt_len)
		return ALIGN4(sb->ctl.opt_len & 0x3f); /* a queued ADD_ADDR, RM_ADDR or MP_PRIO */
	if (s->role == ROLE_JOIN_ACTIVE && !(s->flags & SUBF_MPC_ACKED))
		return LEN_MPJ_ACK;
	if (s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED))
		return LEN_MPC_ACK;
	return 0;
}

/* est_hdr_len reserves option room on a segment of an established subflow. */
static __always_inline int est_hdr_len(struct bpf_sock_ops *skops, struct sk_sub *s, __u32 tcp_flags)
{
	struct conn *c;
	struct sub *sb;
	__u32 len;

	sb = sub_of(s);
	c = conn_of(s);
	if (!c) {
		dp_count(DP_NoState);
		return 1;
	}
	if (c->ctl.flags & CONNF_FALLBACK)
		return 1;
	len = est_opt_len(skops, s, c, sb, tcp_flags);
	if (!len) {
		/* A data ACK on a pure ACK, 64-bit or else 32-bit: SACK blocks may leave too little
		 * room (the kernel sizes them before this callback). Without one, the next ACK carries
		 * it; nothing is lost. */
		if (bpf_reserve_hdr_opt(skops, LEN_DSS_ACK_ONLY, 0) &&
		    bpf_reserve_hdr_opt(skops, LEN_DSS_BASE + 4, 0))
			dp_count(DP_DataAckNoSpace);
		return 1;
	}
	if (bpf_reserve_hdr_opt(skops, len, 0))
		dp_count(DP_OptionNoSpace);
	return 1;
}

/* ---- writing ---- */

/* sub_st_refresh copies the subflow's TCP state for Go, on every segment. */
static __always_inline void sub_st_refresh(struct bpf_sock_ops *skops, struct sk_sub *s, struct sub *sb)
{
	sb->st.snd_una_rel = skops->snd_una - s->snd_isn;
	sb->st.srtt_us = skops->srtt_us >> 3;
	sb->st.snd_cwnd = skops->snd_cwnd;
	sb->st.mss = skops->mss_cache;
	sb->st.packets_out = skops->packets_out;
	sb->st.total_retrans = skops->total_retrans;
}

/* write_rst writes MP_FASTCLOSE on a reset of a connection Go fast-closes, or MP_TCPRST when Go
 * asked for one on this subflow. */
static __always_inline int write_rst(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
				     struct sub *sb, struct dp_scratch *sc)
{
	__u8 *o = sc->out;

	if (c->ctl.flags & CONNF_FASTCLOSE) {
		build_fastclose(o, s->remote_key);
		if (!store_opt(skops, o, LEN_MP_FASTCLOSE))
			dp_count(DP_MPFastcloseTx);
		return 1;
	}
	if (sb && (sb->ctl.rst_flags & SUB_RST_REQUEST)) {
		build_tcprst(o, sb->ctl.rst_flags, sb->ctl.rst_reason);
		if (!store_opt(skops, o, LEN_MP_TCPRST))
			dp_count(DP_MPRstTx);
	}
	return 1;
}

/* data_ack_of chooses the DATA_ACK a segment carries, in *ackp, and reports whether it carries one. */
static __always_inline int data_ack_of(struct sk_sub *s, struct conn *c, struct sub *sb, __u64 *ackp)
{
	int has_ack = !!(c->ctl.flags & CONNF_CAN_ACK);
	__u64 ack = c->ctl.rcv_nxt;

	if (before64(ack, c->st.rx_ack))
		ack = c->st.rx_ack;
	if (!has_ack && s->role == ROLE_PASSIVE && (s->flags & SUBF_PEER_IDSN)) {
		/* Go has not taken the connection over yet: nothing acknowledged at the data level. */
		has_ack = 1;
		ack = s->peer_idsn + 1;
	}
	if (has_ack) {
		c->st.ack_sent = ack; /* Go sends an ACK of its own when its receive point runs ahead */
		sb->st.ack_sent = ack;
	}
	*ackp = ack;
	return has_ack;
}

/* write_mp_fail writes MP_FAIL on a segment without data. */
static __always_inline int write_mp_fail(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct conn *c)
{
	build_mp_fail(sc->out, c->ctl.mp_fail_dsn);
	if (!store_opt(skops, sc->out, LEN_MP_FAIL))
		dp_count(DP_MPFailTx);
	return 1;
}

/* write_data writes the mapping of a data segment at relative SSN rel (with the data ACK when
 * there is one). Returns 0 when no mapping covers the segment: it then carries only a data ACK. */
static __always_inline int write_data(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
				      struct conn *c, struct sub *sb, __u32 rel, int has_ack, __u64 ack)
{
	__s64 idx = find_txmap(sb, rel);
	struct txmap *m;
	__u16 mlen;
	__u32 n;
	int fin;

	if (idx < 0) {
		dp_count(DP_DSSTxNoMapping);
		sb->st.tx_nomap++;
		sb->st.nomap_rel = rel;
		return 0;
	}
	sb->st.txmap_hint = idx;
	m = &sb->ctl.txmap[idx & TXMAP_MASK];
	mlen = m->len;
	fin = !!(m->flags & TXMAP_DATA_FIN);
	/* Our DATA_FIN rides on the last mapping when it has room for the extra DSN. */
	if (!fin && (c->ctl.flags & CONNF_DATA_FIN) && m->dsn + mlen == c->ctl.snd_fin_dsn && mlen < 0xffff)
		fin = 1;
	if (s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && m->ssn == 1 && !fin) {
		/* The first data repeats MP_CAPABLE with the data-level length until the peer's
		 * DSS shows it arrived (§3.1); the mapping is implicit. */
		build_mpc(sc->out, LEN_MPC_ACK_DATA, s->local_key, s->remote_key, mlen);
		if (!store_opt(skops, sc->out, LEN_MPC_ACK_DATA))
			dp_count(DP_MPCapableDataTX);
		return 1;
	}
	n = build_dss(sc->out, has_ack, ack, 1, m->dsn, m->ssn, mlen + fin, fin);
	if (store_opt(skops, sc->out, n)) {
		/* Short of room: the mapping matters more than the data ACK. */
		n = build_dss(sc->out, 0, 0, 1, m->dsn, m->ssn, mlen + fin, fin);
		if (store_opt(skops, sc->out, n))
			return 1;
	}
	dp_count(DP_DSSTx);
	if (fin)
		dp_count(DP_DataFinTx);
	sb->st.tx_dss++;
	return 1;
}

/* write_queued_opt writes the option Go queued on the subflow, if any. Returns nonzero when the
 * segment is done with. */
static __always_inline int write_queued_opt(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sub *sb,
					    __u32 tcp_flags)
{
	if (sb->ctl.opt_gen != sb->st.opt_done && !(tcp_flags & TCP_FLAG_FIN)) {
		/* An option Go queued goes on a pure ACK of its own (the DSS waits for the next). */
		__u64 olen = sb->ctl.opt_len;

		if (olen >= 3 && olen <= 32) {
			for (int i = 0; i < 32; i++)
				sc->out[i] = sb->ctl.opt[i];
			/* Keep the checked value in the register the helper gets. */
			asm volatile("" : "+r"(olen));
			if (olen < 3 || olen > 32)
				return 1;
			if (!bpf_store_hdr_opt(skops, sc->out, olen, 0)) {
				sb->st.opt_done = sb->ctl.opt_gen;
				dp_count(DP_SignalOptionTx);
				return 1;
			}
		} else {
			sb->st.opt_done = sb->ctl.opt_gen;
		}
	}
	return 0;
}

/* write_third_ack repeats the last option of our handshake on a pure ACK until the peer shows it
 * arrived. Returns nonzero when it did. */
static __always_inline int write_third_ack(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
					   struct conn *c, __u32 rel, __u32 tcp_flags)
{
	if (s->role == ROLE_JOIN_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && rel == 1 && !(tcp_flags & TCP_FLAG_FIN)) {
		/* The MP_JOIN third ACK, repeated until the fourth ACK shows it arrived. */
		build_mpj_ack(sc->out, s->hmac_a);
		if (!store_opt(skops, sc->out, LEN_MPJ_ACK))
			dp_count(DP_MPJoinAckTx);
		return 1;
	}
	if (s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && rel == 1 && !(tcp_flags & TCP_FLAG_FIN) &&
	    !data_fin_pending(c)) {
		build_mpc(sc->out, LEN_MPC_ACK, s->local_key, s->remote_key, 0);
		if (!store_opt(skops, sc->out, LEN_MPC_ACK))
			dp_count(DP_MPCapableACKTX);
		return 1;
	}
	return 0;
}

/* write_data_ack writes a DSS without a mapping: our pending DATA_FIN, or else the data ACK. */
static __always_inline int write_data_ack(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct conn *c,
					  int has_ack, __u64 ack)
{
	__u32 n;

	if (data_fin_pending(c)) {
		/* A DATA_FIN without data: SSN 0, length 1 (§3.3.3). Go may have asked for it after
		 * the length callback of this segment reserved room for a data ACK alone (Go writes
		 * the connection's flags without the socket lock): then the DATA_FIN waits for the
		 * next segment (or the DATA_FIN timer) and this one carries the data ACK. A reservation
		 * that failed outright was counted (OptionNoSpace) by the length callback. */
		n = build_dss(sc->out, has_ack, ack, 1, c->ctl.snd_fin_dsn, 0, 1, 1);
		if (!bpf_store_hdr_opt(skops, sc->out, n, 0)) {
			dp_count(DP_DSSTx);
			dp_count(DP_DataFinTx);
			return 1;
		}
	}
	if (!has_ack)
		return 1;
	n = build_dss(sc->out, 1, ack, 0, 0, 0, 0, 0);
	if (!bpf_store_hdr_opt(skops, sc->out, n, 0)) {
		dp_count(DP_DSSTx);
		return 1;
	}
	/* The 32-bit form, when only that fitted (see the length callback). */
	n = build_dss_ack32(sc->out, (__u32)ack);
	if (!bpf_store_hdr_opt(skops, sc->out, n, 0))
		dp_count(DP_DSSTx);
	else
		dp_count(DP_DataAckNoSpace);
	return 1;
}

/* est_write_hdr writes the option of a segment of an established subflow (seq its sequence
 * number, payload its data length). */
static __always_inline int est_write_hdr(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
					 __u32 seq, __u32 payload, __u32 tcp_flags)
{
	struct conn *c = conn_of(s);
	struct sub *sb = sub_of(s);
	__u32 rel;
	int has_ack;
	__u64 ack;

	if (!c || !sb) {
		dp_count(DP_NoState);
		return 1;
	}
	sub_st_refresh(skops, s, sb);
	if (c->ctl.flags & CONNF_FALLBACK)
		return 1;
	if (tcp_flags & TCP_FLAG_RST)
		return write_rst(skops, s, c, sb, sc);

	rel = seq - s->snd_isn;
	has_ack = data_ack_of(s, c, sb, &ack);
	if (c->ctl.flags & CONNF_MP_FAIL && !payload)
		return write_mp_fail(skops, sc, c);
	if (payload) {
		if (write_data(skops, sc, s, c, sb, rel, has_ack, ack))
			return 1;
	} else if (write_queued_opt(skops, sc, sb, tcp_flags) || write_third_ack(skops, sc, s, c, rel, tcp_flags)) {
		return 1;
	}
	return write_data_ack(skops, sc, c, has_ack, ack);
}

#endif
