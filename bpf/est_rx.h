/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Established subflows, receive side: every incoming MPTCP option parsed into state and events
 * for Go. DSS (RFC 8684 §3.3): the peer's DATA_ACK and window, its mappings and DATA_FIN;
 * MP_FASTCLOSE, MP_TCPRST, MP_FAIL; ADD_ADDR, REMOVE_ADDR and MP_PRIO for the path manager; and
 * in-order data that no mapping covers.
 */
#ifndef MPTCPGO_EST_RX_H
#define MPTCPGO_EST_RX_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "sockops_common.h"

/* rx_ack_advance moves the datapath's data-level ACK from want to to, if nobody moved it. */
static __always_inline void rx_ack_advance(struct conn *c, __u64 want, __u64 to)
{
	if (__sync_val_compare_and_swap(&c->st.rx_ack, want, to) == want)
		dp_count(DP_DataAckFastPath);
}

/* advance64 moves *p forward to to, never back: the connection's subflows parse their
 * segments on several CPUs at once, and a plain read-compare-write could put back an older
 * value over a newer one another subflow just wrote (a DATA_ACK arriving late by the slower
 * path). It returns nonzero when it moved *p. */
static __always_inline int advance64(__u64 *p, __u64 to)
{
	for (int i = 0; i < 8; i++) {
		__u64 cur = *(volatile __u64 *)p;

		if (!before64(cur, to))
			return 0;
		if (__sync_val_compare_and_swap(p, cur, to) == cur)
			return 1;
	}
	return 0;
}

/* dss_data_ack takes the peer's DATA_ACK and receive window from a DSS: they bound what we may
 * send, and the first DATA_ACK completes our handshake's repeats. */
static __always_inline void dss_data_ack(struct sk_sub *s, struct conn *c, struct sub *sb, struct mptcp_opt *o,
					 __u32 window)
{
	__u64 old = c->st.peer_data_ack, ack, wnd_end;
	int moved = 0;

	ack = (o->flags & DSS_FLAG_ACK64) ? o->data_ack : expand32(old, o->data_ack);
	if (before64(c->ctl.snd_nxt + 1, ack)) {
		dp_count(DP_DataAckInvalid);
	} else {
		if (advance64(&c->st.peer_data_ack, ack)) {
			dp_count(DP_DataAckRx);
			moved = 1;
		}
		/* The window is the connection's, relative to the DATA_ACK (§3.3.4). The
		 * first one replaces the window Go assumed before the peer announced any: the
		 * peer's may be smaller, and a receiver like the kernel's drops out-of-order
		 * data beyond the edge it announced (NoDSSInWindow). After that the edge only
		 * moves forward (a window is not shrunk, §3.3.4).
		 */
		wnd_end = ack + ((__u64)window << (sb->ctl.snd_wscale & 15));
		if (!c->st.peer_wnd_set) {
			c->st.peer_wnd_end = wnd_end;
			c->st.peer_wnd_set = 1;
			moved = 1;
		} else if (advance64(&c->st.peer_wnd_end, wnd_end)) {
			moved = 1;
		}
		if (moved && c->ctl.ack_wakeup != c->st.ack_wakeup) {
			c->st.ack_wakeup = c->ctl.ack_wakeup;
			dp_emit(EV_DATA_ACK, s, 0, ack, 0, 0, 0);
		}
	}
	if (!(s->flags & SUBF_MPC_ACKED)) {
		s->flags |= SUBF_MPC_ACKED;
		if (s->role == ROLE_JOIN_ACTIVE) {
			dp_count(DP_MPJoinFullyEstablished);
			dp_emit(EV_JOIN_ACKED, s, 0, 0, 0, 0, 0);
		}
	}
}

/* rx_map_csum returns the EV_RX_MAP bits of a mapping's DSS checksum (RFC 8684 §3.3.1): Go
 * verifies it over the mapped bytes. A mapping whose checksum is there on a connection without
 * checksums, or missing on one with them, is counted; Go treats it as a bad mapping (§3.3.0, as
 * the kernel's get_mapping_status). */
static __always_inline __u64 rx_map_csum(struct conn *c, struct mptcp_opt *o)
{
	if (!!o->has_csum != !!c->st.csum)
		dp_count(DP_DSSCsumMissing);
	return o->has_csum ? RXMAP_CSUM | ((__u64)o->csum << 32) : 0;
}

/* dss_mapping takes the peer's mapping (and DATA_FIN) from a DSS; it returns nonzero when the
 * mapping covers the segment's data. */
static __always_inline int dss_mapping(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
				       struct sub *sb, struct mptcp_opt *o, __u32 seq, __u32 payload)
{
	__u64 base = c->ctl.rcv_nxt, dsn;
	int fin = !!(o->flags & DSS_FLAG_DATA_FIN);
	__u32 len = o->data_len;

	if (before64(base, c->st.rx_ack))
		base = c->st.rx_ack;
	/* A 32-bit DSN is expanded as the kernel does (subflow.c expand_seq): against the end of
	 * the last mapping this subflow brought. The connection's receive point is set only once
	 * Go has taken the connection over, and data arrives before that. Without a mapping yet:
	 * a passive connection's data starts at the client's IDSN + 1. */
	if (s->flags & SUBF_RX_MAP_VALID)
		base = s->rx_map_dsn + s->rx_map_len;
	else if (!(c->ctl.flags & CONNF_CAN_ACK) && (s->flags & SUBF_PEER_IDSN))
		base = s->peer_idsn + 1;
	dsn = (o->flags & DSS_FLAG_DSN64) ? o->dsn : expand32(base, o->dsn);
	if (fin) {
		__u64 fin_dsn = dsn + len - 1;

		if (!(s->flags & SUBF_PEER_FIN)) {
			s->flags |= SUBF_PEER_FIN;
			c->st.peer_fin_dsn = fin_dsn;
			c->st.peer_fin = 1;
			dp_count(DP_DataFinRx);
			dp_emit(EV_DATA_FIN, s, 0, fin_dsn, 0, 0, 0);
		}
		if (len == 1 && !payload) {
			/* DATA_FIN alone: acknowledge it at once if everything before it arrived. */
			if (fin_dsn == base && (c->ctl.flags & CONNF_CAN_ACK) && !(sb->ctl.flags & SUBC_DRAIN))
				rx_ack_advance(c, base, fin_dsn + 1);
			if (c->ctl.flags & CONNF_CAN_ACK)
				sb->st.ack_pending = 1;
			return 0;
		}
	}
	if (len == 0) {
		/* An infinite mapping: the peer fell back (§3.7). Go hears of it until it fell
		 * back too (the peer may repeat it on every segment it retransmits). */
		if (!(c->ctl.flags & CONNF_FALLBACK))
			dp_emit(EV_RX_MAP, s, 0, dsn, o->ssn, RXMAP_INFINITE, bpf_get_socket_cookie(skops));
		return 1;
	}
	/* A mapping rides on the data it maps (§3.3.1): it must cover the segment's first
	 * byte, as the kernel's validate_mapping() requires. One on a pure ACK (but a lone
	 * DATA_FIN, above) or one that names other subflow bytes is dropped and counted: a
	 * peer could otherwise make Go keep any number of mappings for bytes never sent. The
	 * segment's data then has no mapping, and Go falls back or resets (§3.7). */
	if (!payload || seq - s->rcv_isn - o->ssn >= len - fin) {
		dp_count(DP_DSSNoMatchTCP);
		return 0;
	}
	if (!(s->flags & SUBF_RX_MAP_VALID) || s->rx_map_dsn != dsn || s->rx_map_ssn != o->ssn ||
	    s->rx_map_len != len || s->rx_map_fin != fin) {
		s->rx_map_dsn = dsn;
		s->rx_map_ssn = o->ssn;
		s->rx_map_len = len;
		s->rx_map_fin = fin;
		s->flags |= SUBF_RX_MAP_VALID;
		dp_count(DP_MappingRx);
		dp_emit(EV_RX_MAP, s, 0, dsn, o->ssn, len | (fin ? RXMAP_FIN : 0) | rx_map_csum(c, o), 0);
	}
	return 1;
}

/* parse_dss handles a DSS option; it returns nonzero when the option maps the segment's data. */
static __always_inline int parse_dss(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
				     struct sub *sb, struct mptcp_opt *o, __u32 seq, __u32 payload, __u32 window)
{
	dp_count(DP_DSSRx);
	if (!c->st.peer_dss)
		c->st.peer_dss = 1;
	if (o->flags & DSS_FLAG_HAS_ACK)
		dss_data_ack(s, c, sb, o, window);
	if (o->flags & DSS_FLAG_HAS_MAP)
		return dss_mapping(skops, s, c, sb, o, seq, payload);
	return 0;
}

/* parse_other handles the options other than DSS: MP_CAPABLE repeats, MP_FASTCLOSE, MP_TCPRST,
 * MP_FAIL, and the path manager's ADD_ADDR, REMOVE_ADDR and MP_PRIO (passed to Go as bytes). */
static __always_inline void parse_other(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
					struct mptcp_opt *o, __u32 payload, const struct optbuf *ob, __u32 off)
{
	switch (o->subtype) {
	case MPTCPOPT_MP_CAPABLE:
		if (s->role == ROLE_PASSIVE && o->len >= LEN_MPC_ACK_DATA && o->key_b == s->local_key) {
			/* The client's first data repeats MP_CAPABLE: an implicit mapping at SSN 1 and
			 * DSN IDSN+1 (Go takes the DSN from the keys). The DSN is also the base the
			 * next mapping's 32-bit DSN is expanded against (dss_mapping): the client's
			 * IDSN is known from its key before Go has taken the connection over. */
			__u64 dsn = 0;

			if (c->ctl.flags & CONNF_CAN_ACK)
				dsn = c->ctl.peer_idsn + 1;
			else if (s->flags & SUBF_PEER_IDSN)
				dsn = s->peer_idsn + 1;

			s->rx_map_dsn = dsn;
			if (!(s->flags & SUBF_RX_MAP_VALID) || s->rx_map_ssn != 1 || s->rx_map_len != o->data_len) {
				s->rx_map_ssn = 1;
				s->rx_map_len = o->data_len;
				s->rx_map_fin = 0;
				s->flags |= SUBF_RX_MAP_VALID;
				dp_count(DP_MappingRx);
				dp_emit(EV_RX_MAP, s, 0, dsn, 1, o->data_len | RXMAP_MPC | rx_map_csum(c, o), 0);
			}
			return;
		}
		if (s->role == ROLE_PASSIVE && o->len == LEN_MPC_ACK)
			return; /* a repeated third ACK */
		dp_count(DP_OptionUnexpected);
		return;
	case MPTCPOPT_MP_FASTCLOSE:
		if (o->key_a != s->local_key) {
			dp_count(DP_MPFastcloseBadKey);
			return;
		}
		if (!(s->flags & SUBF_FASTCLOSE_RX)) {
			s->flags |= SUBF_FASTCLOSE_RX;
			dp_count(DP_MPFastcloseRx);
			dp_emit(EV_FASTCLOSE, s, 0, 0, 0, 0, 0);
		}
		return;
	case MPTCPOPT_RST:
		s->flags |= SUBF_RST_RX;
		s->rst_reason = o->reason;
		dp_count(DP_MPRstRx);
		dp_emit(EV_TCPRST, s, 0, o->reason, o->flags, 0, 0);
		return;
	case MPTCPOPT_MP_FAIL:
		dp_count(DP_MPFailRx);
		dp_emit(EV_MP_FAIL, s, 0, o->dsn, 0, 0, 0);
		return;
	case MPTCPOPT_ADD_ADDR:
		dp_count(DP_AddAddr);
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_RM_ADDR:
		dp_count(DP_RmAddr);
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_MP_PRIO:
		dp_count(DP_MPPrioRx);
		if (o->flags & MP_PRIO_FLAG_BACKUP)
			s->flags |= SUBF_PEER_BACKUP;
		else
			s->flags &= ~SUBF_PEER_BACKUP;
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_MP_JOIN:
		dp_count(DP_MPJoinUnexpected);
		if (s->role == ROLE_JOIN_PASSIVE && o->len == LEN_MPJ_ACK) {
			/* The initiator sent its third ACK again: our fourth ACK did not reach it, and it
			 * sends no data until one does (RFC 8684 §3.2). Answer with another. */
			struct sub *sb = sub_of(s);

			if (sb)
				sb->st.ack_pending = 1;
		}
		return;
	}
}

/* unmapped_in_order reports whether a data segment without a mapping brings new in-order bytes
 * beyond the current mapping. */
static __always_inline int unmapped_in_order(struct bpf_sock_ops *skops, struct sk_sub *s, __u32 seq, __u32 payload)
{
	__u32 rcv_rel = skops->rcv_nxt - s->rcv_isn, seg_rel = seq - s->rcv_isn, end_rel = seg_rel + payload;

	if ((__s32)(rcv_rel - seg_rel) < 0 || (__s32)(end_rel - rcv_rel) <= 0)
		return 0; /* out of order, or nothing new */
	if (!(s->flags & SUBF_RX_MAP_VALID))
		return 1;
	return (__s32)(end_rel - (s->rx_map_ssn + s->rx_map_len - s->rx_map_fin)) > 0;
}

/* rx_sub_ack records the subflow-level ACK of an incoming segment. */
static __always_inline void rx_sub_ack(struct bpf_sock_ops *skops, struct sk_sub *s, struct sub *sb, __u32 ack_seq)
{
	/* The subflow-level ACK, seen here before TCP processes it: Go's scheduler and stale
	 * detection read how far the peer acknowledged, also on a subflow that sends nothing
	 * more (the write callback alone would leave the value behind). */
	__u32 ack_rel = ack_seq - s->snd_isn, nxt_rel = skops->snd_nxt - s->snd_isn;

	if ((__s32)(ack_rel - sb->st.snd_una_rel) > 0 && (__s32)(nxt_rel - ack_rel) >= 0)
		sb->st.snd_una_rel = ack_rel;
}

/* rx_opts parses every MPTCP option of an incoming segment (th its header, seg its flags, optlen
 * bytes of options in sc->ob) into state and events; it returns nonzero when one of them maps
 * the segment's data. */
static __always_inline int rx_opts(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
				   struct conn *c, struct sub *sb, struct tcphdr *th, int optlen, __u32 seg,
				   __u32 payload)
{
	struct opt_walk w = {};
	int mapped = 0;

	w.len = optlen;
	for (int i = 0; i < 8; i++) {
		int n = mptcp_next_opt(&sc->ob, &w), r;
		__u32 pos;

		if (n == 0)
			break;
		if (n < 0) {
			dp_count(DP_TCPOptionsMalformed);
			break;
		}
		r = mptcp_parse_opt(&sc->ob, w.pos, n, seg, &sc->opt);
		pos = w.pos;
		w.pos += n;
		if (r != PARSE_OK) {
			dp_count(DP_OptionMalformed);
			continue;
		}
		if (sc->opt.subtype == MPTCPOPT_DSS) {
			if (parse_dss(skops, s, c, sb, &sc->opt, bpf_ntohl(th->seq), payload, bpf_ntohs(th->window)))
				mapped = 1;
		} else {
			parse_other(skops, s, c, &sc->opt, payload, &sc->ob, pos);
			if (sc->opt.subtype == MPTCPOPT_MP_CAPABLE)
				mapped = 1;
		}
	}
	return mapped;
}

/* on_parse_hdr handles an incoming segment of an established subflow. */
static __always_inline int on_parse_hdr(struct bpf_sock_ops *skops)
{
	struct dp_scratch *sc = dp_scratch();
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	struct tcphdr th;
	__u32 payload, seg;
	int optlen, mapped;

	if (!sc)
		return 1;
	s = sub_state(skops);
	if (!s || s->state != SUB_MPTCP)
		return 1;
	c = conn_of(s);
	sb = sub_of(s);
	if (!c || !sb) {
		dp_count(DP_NoState);
		return 1;
	}
	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	if (optlen < 0)
		return 1;
	payload = skops->skb_len - th.doff * 4;
	if (payload > skops->skb_len)
		payload = 0;
	seg = ((__u8 *)&th)[13] | (payload ? SEG_HAS_PAYLOAD : 0);
	if (seg & TCP_FLAG_ACK)
		rx_sub_ack(skops, s, sb, bpf_ntohl(th.ack_seq));
	mapped = rx_opts(skops, sc, s, c, sb, &th, optlen, seg, payload);
	if (!payload || (c->ctl.flags & CONNF_FALLBACK))
		return 1;
	if (!mapped && unmapped_in_order(skops, s, bpf_ntohl(th.seq), payload)) {
		/* In-order data no mapping covers: options vanished on the path. Go sends MP_FAIL and
		 * falls back (§3.7). Out-of-order data is judged when it becomes in-order, as the
		 * kernel does. */
		dp_count(DP_UnmappedDataRx);
		if (!(s->flags & SUBF_UNMAPPED_RX)) {
			s->flags |= SUBF_UNMAPPED_RX;
			dp_emit_unmapped(s, &sc->ob, optlen, bpf_ntohl(th.seq) - s->rcv_isn, payload,
					 (s->flags & SUBF_RX_MAP_VALID) ? s->rx_map_ssn + s->rx_map_len : 0);
		}
		return 1;
	}
	/* In-order data is DATA_ACKed only once Go has handed it on (ctl.rcv_nxt): acknowledged
	 * data must never depend on an event that could still be lost. */
	return 1;
}

#endif
