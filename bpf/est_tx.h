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
#include "txmap.h"

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

/* reserve_down reserves len bytes of option room, or else as much as is left, in steps of 4
 * (the kernel hands out timestamps, SACK blocks, then BPF options, net/ipv4/tcp_output.c
 * tcp_established_options). A segment whose SACK blocks crowd out the option then has a full
 * 60-byte header with the rest NOPs, for the TC rewrite (sack_rw.h) to fill in place. Returns the
 * room reserved. */
static __always_inline __u32 reserve_down(struct bpf_sock_ops *skops, __u32 len)
{
	for (int i = 0; i < MAX_TCP_OPTION_SPACE / 4; i++) {
		if (len < 4)
			return 0;
		if (!bpf_reserve_hdr_opt(skops, len, 0))
			return len;
		len -= 4;
	}
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
	/* The write callback that follows for this segment (under the socket lock, with nothing
	 * of ours between) picks the form of the DSS that fits the room reserved. */
	if (!len) {
		/* A data ACK on a pure ACK, 64-bit or else 32-bit. SACK blocks may leave less room:
		 * then the TC rewrite puts a data ACK in. */
		s->tx_room = reserve_down(skops, LEN_DSS_ACK_ONLY);
		return 1;
	}
	if (len == ALIGN4(LEN_DSS_FULL)) {
		/* A DSS: whatever room is left. */
		s->tx_room = reserve_down(skops, len);
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

/* write_mp_fail writes MP_FAIL on a segment without data. */
static __always_inline int write_mp_fail(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct conn *c)
{
	build_mp_fail(sc->out, c->ctl.mp_fail_dsn);
	if (!store_opt(skops, sc->out, LEN_MP_FAIL))
		dp_count(DP_MPFailTx);
	return 1;
}

/* dss_fit chooses the form of a DSS for room bytes: the mapping (DSN of dsn_len bytes, 0 for
 * none) if it fits, with the largest data ACK that fits beside it when has_ack. With no room for
 * the mapping, the form is a data ACK alone (or nothing): the segment is then left to the TC
 * rewrite, which makes room by cutting SACK blocks. */
static __always_inline struct dss_form dss_fit(__u32 room, int has_ack, __u8 dsn_len)
{
	struct dss_form f = {.ack_len = has_ack ? 8 : 0, .dsn_len = dsn_len};

	if (dss_len(f) > room && has_ack)
		f.ack_len = 4;
	if (dss_len(f) > room)
		f.ack_len = 0;
	if (dss_len(f) <= room)
		return f;
	f.dsn_len = 0;
	f.ack_len = has_ack ? 8 : 0;
	if (dss_len(f) > room && has_ack)
		f.ack_len = 4;
	if (dss_len(f) > room)
		f.ack_len = 0;
	return f;
}

/* write_data writes the mapping of a data segment at relative SSN rel (with the data ACK when
 * there is one and room for it). Returns 0 when no mapping covers the segment: it then carries
 * only a data ACK. */
static __always_inline int write_data(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
				      struct conn *c, struct sub *sb, __u32 rel, int has_ack, __u64 ack)
{
	__s64 idx = find_txmap(sb, rel);
	__u32 n, csum_len = c->st.csum ? LEN_DSS_CHECKSUM : 0;
	struct dss_form f;
	struct txmap *m;
	__u16 mlen;
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
	fin = txmap_fin(c, m);
	if (txmap_on_mpc(s, m, fin)) {
		/* The first data repeats MP_CAPABLE with the data-level length until the peer's
		 * DSS shows it arrived (§3.1); the mapping is implicit. */
		__u32 mpc_len = c->st.csum ? LEN_MPC_ACK_DATA_CSUM : LEN_MPC_ACK_DATA;

		build_mpc(sc->out, mpc_len, c->st.csum, s->local_key, s->remote_key, mlen, dss_csum(m->csum, mlen));
		if (!store_opt(skops, sc->out, mpc_len)) {
			dp_count(DP_MPCapableDataTX);
			if (c->st.csum)
				dp_count(DP_DSSCsumTx);
		}
		return 1;
	}
	/* With DSS checksums the mapping takes two more bytes (§3.3.1). */
	f = dss_fit(s->tx_room > csum_len ? s->tx_room - csum_len : 0, has_ack, map_dsn_len(sb, idx, m));
	if (!f.dsn_len) {
		/* SACK blocks took the room: TC puts the mapping in (sack_rw.h). */
		dp_count(DP_DSSTxDeferred);
		if (!f.ack_len)
			return 1;
	}
	n = build_dss(sc->out, f, ack, m->dsn, m->ssn, mlen + fin, fin);
	if (f.dsn_len && c->st.csum)
		n = dss_add_csum(sc->out, n, dss_csum(m->csum, mlen + fin));
	if (store_opt(skops, sc->out, n))
		return 1;
	dp_count(DP_DSSTx);
	if (f.ack_len)
		ack_written(c, sb, ack);
	if (f.dsn_len) {
		if (c->st.csum)
			dp_count(DP_DSSCsumTx);
		if (fin)
			dp_count(DP_DataFinTx);
		sb->st.tx_dss++;
	}
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
		build_mpc(sc->out, LEN_MPC_ACK, c->st.csum, s->local_key, s->remote_key, 0, 0);
		if (!store_opt(skops, sc->out, LEN_MPC_ACK))
			dp_count(DP_MPCapableACKTX);
		return 1;
	}
	return 0;
}

/* write_data_ack writes a DSS without data: our pending DATA_FIN, or else the data ACK, in the
 * largest form that fits. With no room left (SACK blocks), the TC rewrite adds it. */
static __always_inline int write_data_ack(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
					  struct conn *c, struct sub *sb, int has_ack, __u64 ack)
{
	__u32 room = s->tx_room, n, csum_len = c->st.csum ? LEN_DSS_CHECKSUM : 0;
	struct dss_form f;

	if (data_fin_pending(c)) {
		/* A DATA_FIN without data: SSN 0, length 1 (§3.3.3). Go may have asked for it after
		 * the length callback of this segment reserved room for a data ACK alone (Go writes
		 * the connection's flags without the socket lock): then the DATA_FIN waits for the
		 * next segment (or the DATA_FIN timer) and this one carries the data ACK. */
		f = dss_fit(room > csum_len ? room - csum_len : 0, has_ack, 8);
		if (f.dsn_len) {
			n = build_dss(sc->out, f, ack, c->ctl.snd_fin_dsn, 0, 1, 1);
			/* Its checksum covers the pseudo-header alone (§3.3.1). */
			if (c->st.csum)
				n = dss_add_csum(sc->out, n, dss_csum(dss_csum_hdr(c->ctl.snd_fin_dsn, 0), 1));
			if (!bpf_store_hdr_opt(skops, sc->out, n, 0)) {
				dp_count(DP_DSSTx);
				dp_count(DP_DataFinTx);
				if (c->st.csum)
					dp_count(DP_DSSCsumTx);
				if (f.ack_len)
					ack_written(c, sb, ack);
			}
			return 1;
		}
	}
	f = dss_fit(room, has_ack, 0);
	if (!f.ack_len)
		return 1;
	n = build_dss(sc->out, f, ack, 0, 0, 0, 0);
	if (!bpf_store_hdr_opt(skops, sc->out, n, 0)) {
		dp_count(DP_DSSTx);
		ack_written(c, sb, ack);
	}
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
	return write_data_ack(skops, sc, s, c, sb, has_ack, ack);
}

#endif
