/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What an outgoing segment of an established subflow carries at the data level: the mapping
 * that covers its sequence number (found in the table Go fills), the size of that mapping's DSN
 * on the wire, our DATA_FIN and the data ACK. Shared by the sock_ops writer (est_tx.h) and the
 * TC rewrite of SACK segments (sack_rw.h), so both always agree. */
#ifndef MPTCPGO_TXMAP_H
#define MPTCPGO_TXMAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"

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

/* ack_written notes that a segment leaves with DATA_ACK ack in its options. Go compares it with
 * its receive point and sends a pure ACK of its own when that runs ahead (ackIfIdle): so it is
 * noted only once written, never for a segment whose option space went to something else (a
 * queued option, a handshake repeat, SACK blocks), which would leave the peer without the
 * DATA_ACK and Go believing it sent. */
static __always_inline void ack_written(struct conn *c, struct sub *sb, __u64 ack)
{
	c->st.ack_sent = ack;
	sb->st.ack_sent = ack;
}

/* data_ack_of chooses the DATA_ACK a segment carries, in *ackp, and reports whether it carries
 * one; the writer notes it with ack_written once the option is in the segment. */
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
	*ackp = ack;
	return has_ack;
}

/* txmap_fin reports whether mapping m ends with our DATA_FIN: marked so by Go, or our DATA_FIN
 * rides on the last mapping when it has room for the extra DSN. */
static __always_inline int txmap_fin(struct conn *c, struct txmap *m)
{
	if (m->flags & TXMAP_DATA_FIN)
		return 1;
	return (c->ctl.flags & CONNF_DATA_FIN) && m->dsn + m->len == c->ctl.snd_fin_dsn && m->len < 0xffff;
}

/* txmap_on_mpc reports whether mapping m goes out in an MP_CAPABLE carrying data rather than a
 * DSS: our initial subflow's first data while the peer has not shown (by a DSS) that our third
 * ACK arrived, when the mapping is the connection's first data, which is what the MP_CAPABLE's
 * implicit mapping stands for (§3.1). Any other mapping on that subflow goes in a DSS: a join
 * carried the first data, so the peer knows the connection and its keys. */
static __always_inline int txmap_on_mpc(struct sk_sub *s, struct txmap *m, int fin)
{
	return s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && m->ssn == 1 && (m->flags & TXMAP_MPC_DATA) &&
	       !fin;
}

/* map_dsn_len returns how many bytes the DSN of mapping idx takes on the wire. The 4-byte form
 * (RFC 8684 §3.3) saves 4 bytes, and a kernel peer answers it with 4-byte data ACKs, which
 * leaves it room for a second SACK block on its ACKs. A receiver expands a 4-byte DSN against
 * the last mapping it took on the same subflow (net/mptcp/subflow.c expand_seq; ours does the
 * same, est_rx.h): that is mapping idx-1, since a subflow delivers in order. So the 4-byte form
 * is used only when mapping idx-1 is still in the table and lies well within 2^31 of this one,
 * and when the peer has acknowledged the subflow's first byte (it then holds a mapping of this
 * subflow to expand against, whatever arrives out of order after); a subflow's first mappings
 * (a join's would be expanded against 0), and anything far away, take 8 bytes. */
static __always_inline __u8 map_dsn_len(struct sub *sb, __s64 idx, struct txmap *m)
{
	__u64 head = sb->ctl.txmap_head, lo;
	struct txmap *p;
	__s64 d;

	if ((__s32)(sb->st.snd_una_rel - 1) <= 0)
		return 8;
	lo = head > TXMAP_RING - 1 ? head - (TXMAP_RING - 1) : 0;
	if (idx < 1 || (__u64)(idx - 1) < lo)
		return 8;
	p = &sb->ctl.txmap[(idx - 1) & TXMAP_MASK];
	d = (__s64)(m->dsn - p->dsn);
	if (d > -(1LL << 30) && d < (1LL << 30))
		return 4;
	return 8;
}

#endif
