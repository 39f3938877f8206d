/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* MP_CAPABLE SYNs with data at our listeners: TCP Fast Open (RFC 7413) with MPTCP (RFC 8684
 * Appendix B), as the Transport Converter's clients send their Convert message (RFC 8803).
 *
 * For a SYN with data and a valid cookie the kernel makes the child at once and runs
 * PASSIVE_ESTABLISHED_CB with the SYN, not with the third ACK. The third ACK, which carries the
 * client's key, then reaches the child in SYN_RECV, where sock_ops parses no options. So:
 *   - tfo_passive (the SYN): the child waits in SUB_TFO_WAIT with our key, derived as our
 *     SYN/ACK's (synack_write: the SYN/ACK acknowledges the SYN's data, so its ack - 1 is the
 *     client's ISN plus that data, which is what both derive from);
 *   - tfo_ingress (syn_tc.h: TC ingress, before the socket sees the segment): the client's MP_CAPABLE on
 *     the third ACK, or on its first data when that ACK was lost, goes into the child's storage
 *     when it echoes our key;
 *   - tfo_state (the state callback of SYN_RECV -> ESTABLISHED on that same segment): the
 *     handshake completes as passive_mpc completes it, or the child continues as plain TCP.
 * The SYN's data lies before the data sequence space, where the kernel's MPTCP puts it (its
 * first mapping has relative SSN 1 at the byte after it): rcv_isn counts it, and Go reads
 * syn_data bytes as the start of the stream before any mapped byte.
 *
 * A SYN asking for a cookie gets a SYN/ACK with no room for our MP_CAPABLE beside the cookie
 * with timestamps on (40 bytes of options: MSS, SACK-permitted and timestamps, window scale, the
 * cookie, 12 of ours): TC egress makes the room (syn_tc.h synack_make_room). The client keeps
 * the cookie for its next connections, whose SYN/ACKs carry none. */
#ifndef MPTCPGO_TFO_H
#define MPTCPGO_TFO_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "datapath_maps.h"
#include "handshake.h"
#include "sockops_common.h"

static __always_inline void tfo_waiting_add(__s64 n)
{
	__u32 k = 0;
	__s64 *w = bpf_map_lookup_elem(&tfo_waiting, &k);

	if (w)
		__sync_fetch_and_add(w, n);
}

/* tfo_passive starts the child of a SYN with data (TCP Fast Open) at our listener. */
static __always_inline int tfo_passive(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct bpf_sock *sk)
{
	struct sk_sub *s;
	struct tcphdr th;
	__u32 isn, payload;
	__u64 key;
	int optlen;

	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	if (optlen <= 0)
		goto plain;
	payload = skops->skb_len - th.doff * 4;
	if (payload > skops->skb_len || payload > 0xffff || !find_mpc(sc, optlen, TCP_FLAG_SYN) ||
	    sc->opt.len != LEN_MPC_SYN)
		goto plain;
	s = bpf_sk_storage_get(&sk_subs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		goto plain;
	isn = bpf_ntohl(th.seq);
	s->role = ROLE_PASSIVE;
	s->conn = ~0U;
	s->sub = ~0U;
	s->syn_data = payload;
	s->rcv_isn = isn + payload;
	s->snd_isn = skops->snd_una - 1;
	key = passive_key(skops, sc, s->rcv_isn);
	if (!key) {
		s->state = SUB_FALLBACK;
		s->fallback_reason = 3;
		dp_count(DP_TFOFallback);
		goto plain;
	}
	s->local_key = key;
	s->tc_flags = (sc->opt.flags & MPC_FLAG_CHECKSUM) ? SUBTC_TFO_CSUM : 0;
	s->state = SUB_TFO_WAIT;
	{
		/* For the SYN/ACK sent again, which has no SYN to derive the key from. */
		struct tfo_synack_val v = {.key = key, .csum = dp_csum_required || (s->tc_flags & SUBTC_TFO_CSUM)};
		struct tfo_synack_key k;

		tfo_synack_key_of(skops, &k);
		bpf_map_update_elem(&tfo_synacks, &k, &v, BPF_ANY);
	}
	tfo_waiting_add(1);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	dp_count(DP_TFOSynDataRx);
	return 1;

plain:
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

/* on_tfo_passive: the child of a SYN with data at one of our listeners (only they have the
 * option callbacks on; see on_passive_established). */
static __always_inline int on_tfo_passive(struct bpf_sock_ops *skops)
{
	struct dp_scratch *sc = dp_scratch();
	struct bpf_sock *sk = skops->sk;

	if (!sc || !sk || (skops->bpf_sock_ops_cb_flags & OPT_FLAGS) != OPT_FLAGS)
		return 1;
	return tfo_passive(skops, sc, sk);
}

/* tfo_complete completes the handshake of a child whose client's key TC ingress read, as
 * passive_mpc does for a third ACK. */
static __always_inline int tfo_complete(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s)
{
	__u64 map_csum = 0;
	struct conn *c;
	__u16 data_len;

	if (passive_slots(sc, s, s->local_key, s->remote_key))
		return -1;
	c = conn_of(s);
	if (c && (dp_csum_required || (s->tc_flags & SUBTC_TFO_CSUM))) {
		c->st.csum = 1;
		dp_count(DP_CsumEnabled);
	}
	s->state = SUB_MPTCP;
	if (!mptcp_key_sha(&sc->hmac, s->remote_key)) {
		s->peer_idsn = ((__u64)sc->hmac.inner.h[6] << 32) | sc->hmac.inner.h[7];
		s->flags |= SUBF_PEER_IDSN;
	}
	if (s->tc_flags & SUBTC_TFO_DATA) {
		/* The third ACK was lost: the first data completed the handshake and carries the
		 * first mapping implicitly, at the client's IDSN + 1 (§3.1). */
		data_len = s->rx_map_len;
		if (s->remote_nonce & 0x10000)
			map_csum = RXMAP_CSUM | ((__u64)(s->remote_nonce & 0xffff) << 32);
		s->remote_nonce = 0;
		passive_first_map(s, data_len, map_csum);
	}
	dp_count(DP_MPCapableACKRX);
	return 0;
}

/* tfo_state follows a TCP Fast Open child out of SYN_RECV: established with the client's key,
 * it completes as MPTCP; established without it, or closed, it is plain TCP. */
static __always_inline int tfo_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct dp_scratch *sc;
	struct sk_sub *s;

	if (!sk || skops->args[0] != BPF_TCP_SYN_RECV)
		return 1;
	s = bpf_sk_storage_get(&sk_subs, sk, 0, 0);
	if (!s || s->state != SUB_TFO_WAIT)
		return 1;
	tfo_waiting_add(-1);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_STATE_CB_FLAG);
	{
		struct tfo_synack_key k;

		tfo_synack_key_of(skops, &k);
		bpf_map_delete_elem(&tfo_synacks, &k);
	}
	sc = dp_scratch();
	if (sc && skops->args[1] == BPF_TCP_ESTABLISHED && (s->tc_flags & SUBTC_TFO_KEY) && !tfo_complete(skops, sc, s)) {
		/* Go waits for this to accept the connection before the client's joins come. */
		dp_emit(EV_TFO_DONE, s, 1, 0, 0, 0, bpf_get_socket_cookie(skops));
		return 1;
	}
	if (skops->args[1] == BPF_TCP_ESTABLISHED) {
		dp_count(DP_TFOFallback);
		dp_count(DP_MPCapableFallbackACK);
	}
	s->state = SUB_FALLBACK;
	s->fallback_reason = 3;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	dp_emit(EV_TFO_DONE, NULL, 0, 0, 0, 0, bpf_get_socket_cookie(skops));
	return 1;
}

#endif
