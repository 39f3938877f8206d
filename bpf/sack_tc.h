/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TC egress on our subflows' segments: the rewrite of segments whose SACK blocks crowded out the
 * DSS (sack_rw.h), with the mapping and data ACK taken from the same state sock_ops writes from
 * (txmap.h). Every outcome is counted: SackRwData, SackRwAck, SackRwGSO, SackRwFail. */
#ifndef MPTCPGO_SACK_TC_H
#define MPTCPGO_SACK_TC_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "sack_rw.h"
#include "txmap.h"

/* sack_rw_fill fills rw for a segment of subflow s at sequence number seq with payload bytes of
 * data (fin: the subflow FIN flag). Returns 0, or -1 when a data segment has no mapping that
 * covers it all. */
static __always_inline int sack_rw_fill(struct sk_sub *s, struct conn *c, struct sub *sb, __u32 seq, __u32 payload,
					struct sack_rw *rw)
{
	__u64 ack;
	__s64 idx;
	struct txmap *m;

	__builtin_memset(rw, 0, sizeof(*rw));
	rw->has_ack = data_ack_of(s, c, sb, &ack);
	rw->ack = ack;
	if (payload) {
		__u32 rel = seq - s->snd_isn;

		idx = find_txmap(sb, rel);
		if (idx < 0)
			return -1;
		m = &sb->ctl.txmap[idx & TXMAP_MASK];
		/* One GSO packet never crosses a mapping's end (MSG_EOR): check it does not. */
		if (rel - m->ssn + payload > m->len)
			return -1;
		sb->st.txmap_hint = idx;
		rw->fin = txmap_fin(c, m);
		rw->dsn = m->dsn;
		rw->ssn = m->ssn;
		rw->len = m->len + rw->fin;
		rw->dsn_len = map_dsn_len(sb, idx, m);
		rw->on_mpc = txmap_on_mpc(s, m, rw->fin);
		if (c->st.csum) {
			/* The checksum sock_ops would have written (est_tx.h write_data). */
			rw->has_csum = 1;
			rw->csum = dss_csum(m->csum, rw->len);
		}
	} else if (data_fin_pending(c)) {
		/* A DATA_FIN without data: SSN 0, length 1 (§3.3.3). */
		rw->fin = 1;
		rw->dsn = c->ctl.snd_fin_dsn;
		rw->len = 1;
		rw->dsn_len = 8;
		if (c->st.csum) {
			rw->has_csum = 1;
			rw->csum = dss_csum(dss_csum_hdr(rw->dsn, 0), 1);
		}
	}
	return 0;
}

/* sack_blocks_likely reports whether the options of the TCP header at l4 start as the kernel
 * lays out SACK blocks: NOP, NOP, SACK, after timestamps (NOP, NOP, kind 8) or without them.
 * Most full headers carry timestamps and a DSS only: this spares them the lookups and the walk.
 * Other layouts are left alone, as the rewrite would leave them too (it keeps what it does
 * not know, or skips). */
static __always_inline int sack_blocks_likely(struct __sk_buff *skb, __u32 l4)
{
	__u8 b[16];

	if (bpf_skb_load_bytes(skb, l4 + sizeof(struct tcphdr), b, sizeof(b)) < 0)
		return 0;
	if (b[0] == TCPOPT_NOP && b[1] == TCPOPT_NOP && b[2] == TCPOPT_SACK_BLOCKS)
		return 1;
	return b[0] == TCPOPT_NOP && b[1] == TCPOPT_NOP && b[2] == TCPOPT_TIMESTAMP && b[12] == TCPOPT_NOP &&
	       b[13] == TCPOPT_NOP && b[14] == TCPOPT_SACK_BLOCKS;
}

/* sack_egress handles an outgoing segment of ours (not a SYN or RST) whose TCP header at l4 is
 * full (60 bytes): rewrites it when SACK blocks crowded out what its DSS should carry. */
static __always_inline void sack_egress(struct __sk_buff *skb, __u32 l4, __u32 seq)
{
	struct bpf_sock *fsk;
	struct dp_scratch *sc;
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 payload, hdr = l4 + 60;
	int r;

	struct bpf_sock *sk;

	if (!sack_blocks_likely(skb, l4))
		return;
	sk = skb->sk;
	if (!sk)
		return;
	fsk = bpf_sk_fullsock(sk);
	if (!fsk)
		return;
	s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
	/* Any subflow of ours in MPTCP state: a passive one's SYN/ACK left from a request socket,
	 * which cannot be marked, and a segment needs the rewrite only if it has SACK blocks. */
	if (!s || s->state != SUB_MPTCP)
		return;
	c = conn_of(s);
	sb = sub_of(s);
	sc = dp_scratch();
	if (!c || !sb || !sc || (c->ctl.flags & (CONNF_FALLBACK | CONNF_MP_FAIL)))
		return;
	/* skb->len, not the IP length: a BIG TCP packet's IP length field is 0. */
	payload = skb->len > hdr ? skb->len - hdr : 0;
	if (sack_rw_fill(s, c, sb, seq, payload, &sc->rw) < 0) {
		dp_count(DP_SackRwFail);
		return;
	}
	if (sc->rw.on_mpc)
		return; /* the first data carries MP_CAPABLE (§3.1), not a DSS */
	r = sack_rw_apply(skb, l4, &sc->rw, &sc->sack);
	if (r == SACK_RW_NONE)
		return;
	if (r != SACK_RW_DONE) {
		dp_count(DP_SackRwFail);
		return;
	}
	if (sc->sack.ack_out)
		ack_written(c, sb, sc->rw.ack);
	dp_count(sc->rw.dsn_len ? DP_SackRwData : DP_SackRwAck);
	if (skb->gso_segs > 1)
		dp_count(DP_SackRwGSO);
}

#endif
