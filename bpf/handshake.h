/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The handshakes of our subflows, both ways: MP_CAPABLE (RFC 8684 §3.1) and MP_JOIN (§3.2).
 *
 * Active: our connecting socket's SYN, then the SYN/ACK checked when the connection is
 * established. Passive: our listener's SYN/ACK (written for a request socket, which has no
 * storage: an MP_CAPABLE key is derived from the SYN, an MP_JOIN keeps its state by 4-tuple),
 * then the third ACK checked when the child socket is established.
 */
#ifndef MPTCPGO_HANDSHAKE_H
#define MPTCPGO_HANDSHAKE_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "opt_write.h"
#include "sha256.h"
#include "sockops_common.h"
#include "synkey.h"

/* on_connect turns the option callbacks on for our connecting sockets (first subflows and joins). */
static __always_inline int on_connect(struct bpf_sock_ops *skops)
{
	struct sk_sub *s = sub_state(skops);

	if (!s || (s->role != ROLE_ACTIVE && s->role != ROLE_JOIN_ACTIVE))
		return 1;
	s->state = SUB_SYN_SENT;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | OPT_FLAGS);
	return 1;
}

/* on_listen turns the option callbacks on for our listeners; their children inherit them. */
static __always_inline int on_listen(struct bpf_sock_ops *skops)
{
	struct sk_sub *s = sub_state(skops);
	int one = 1;

	if (!s || s->role != ROLE_LISTENER)
		return 1;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | OPT_FLAGS);
	/* The kernel keeps each SYN's headers with its request socket: a retransmitted SYN/ACK
	 * has no SYN of its own to read, and needs its options and addresses to write the same
	 * MP_CAPABLE or MP_JOIN again. (SYN cookies keep no request socket; their SYN/ACK is never
	 * retransmitted.) */
	bpf_setsockopt(skops, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
	return 1;
}

/* write_syn writes the option of our connecting socket's SYN: MP_CAPABLE, or MP_JOIN for a
 * join. The SYN's sequence number is our ISN; it may carry payload bytes of data (TCP Fast
 * Open; a retransmitted SYN carries none). */
static __always_inline int write_syn(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s, __u32 seq,
				     __u32 payload)
{
	s->snd_isn = seq;
	/* A retransmitted SYN carries no data: the first one's count stands (the SYN/ACK may
	 * acknowledge it). */
	if (payload && payload <= 0xffff)
		s->syn_data = payload;
	if (s->role == ROLE_JOIN_ACTIVE) {
		build_mpj_syn(sc->out, s->join_flags & JOINF_BACKUP, s->local_id, s->remote_token, s->local_nonce);
		if (!store_opt(skops, sc->out, LEN_MPJ_SYN))
			dp_count(DP_MPJoinSynTx);
		return 1;
	}
	build_mpc(sc->out, LEN_MPC_SYN, dp_csum_required, 0, 0, 0, 0);
	if (!store_opt(skops, sc->out, LEN_MPC_SYN))
		dp_count(DP_MPCapableSYNTX);
	return 1;
}

/* active_join checks the SYN/ACK of our MP_JOIN: the leftmost 64 bits of HMAC(KeyB‖KeyA,
 * R-B‖R-A) must match; then it computes the third ACK's HMAC(KeyA‖KeyB, R-A‖R-B) (§3.2). */
static __always_inline int active_join(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s, int optlen)
{
	if (optlen > 0 && find_opt(sc, optlen, TCP_FLAG_SYN | TCP_FLAG_ACK, MPTCPOPT_MP_JOIN) &&
	    sc->opt.len == LEN_MPJ_SYNACK) {
		__u64 thmac = sc->opt.hmac64;
		__u8 remote_id = sc->opt.addr_id, backup = sc->opt.flags & MPJ_FLAG_BACKUP;

		s->remote_nonce = sc->opt.nonce;
		if (!mptcp_hmac(&sc->hmac, s->remote_key, s->local_key, s->remote_nonce, s->local_nonce) &&
		    (((__u64)sc->hmac.outer.h[0] << 32) | sc->hmac.outer.h[1]) == thmac &&
		    !mptcp_hmac(&sc->hmac, s->local_key, s->remote_key, s->local_nonce, s->remote_nonce)) {
			for (int i = 0; i < 5; i++)
				s->hmac_a[i] = sc->hmac.outer.h[i];
			s->remote_id = remote_id;
			if (backup)
				s->flags |= SUBF_PEER_BACKUP;
			s->state = SUB_MPTCP;
			dp_count(DP_MPJoinSynAckRx);
			dp_emit(EV_JOIN, s, 1, s->local_id | (remote_id << 8) | ((__u64)backup << 16), 0, 0,
				bpf_get_socket_cookie(skops));
			return 1;
		}
	}
	s->state = SUB_JOIN_FAILED;
	dp_count(DP_MPJoinSynAckHMacFailure);
	dp_emit(EV_JOIN, s, 0, 0, 0, 0, bpf_get_socket_cookie(skops));
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

/* on_active_established checks the SYN/ACK of our connecting socket: MP_CAPABLE completes or
 * the subflow falls back; an MP_JOIN is verified or refused. */
static __always_inline int on_active_established(struct bpf_sock_ops *skops)
{
	struct sk_sub *s = sub_state(skops);
	struct dp_scratch *sc = dp_scratch();
	struct tcphdr th;
	int optlen;

	if (!s || !sc || (s->role != ROLE_ACTIVE && s->role != ROLE_JOIN_ACTIVE))
		return 1;
	/* Data in our SYN (TCP Fast Open) that the SYN/ACK acknowledged lies before the data
	 * sequence space, as the kernel's MPTCP has it (RFC 8684 Appendix B): our first mapping's
	 * relative SSN 1 is the byte after it. Data it did not acknowledge is sent again as
	 * ordinary data: syn_data then reads 0 and Go resets the connection (it dials again). */
	if (skops->snd_una - 1 - s->snd_isn != s->syn_data)
		s->syn_data = 0;
	s->rcv_isn = skops->rcv_nxt - 1;
	s->snd_isn = skops->snd_una - 1;
	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	if (s->role == ROLE_JOIN_ACTIVE)
		return active_join(skops, sc, s, optlen);
	if (optlen > 0 && find_mpc(sc, optlen, TCP_FLAG_SYN | TCP_FLAG_ACK) && sc->opt.len == LEN_MPC_SYNACK) {
		struct conn *c = conn_of(s);

		s->remote_key = sc->opt.key_a;
		s->state = SUB_MPTCP;
		/* DSS checksums when either side asked for them (§3.1). */
		if (c && (dp_csum_required || (sc->opt.flags & MPC_FLAG_CHECKSUM))) {
			c->st.csum = 1;
			dp_count(DP_CsumEnabled);
		}
		dp_count(DP_MPCapableSYNACKRX);
		/* No event: Go reads the outcome from the socket's storage when connect() returns
		 * (a ring-buffer record wakes the reader, which costs an active open about a fifth
		 * of its time). */
		return 1;
	}
	s->state = SUB_FALLBACK;
	s->fallback_reason = optlen > 0 && sc->opt.subtype == MPTCPOPT_MP_CAPABLE ? 2 : 1;
	dp_count(DP_MPCapableFallbackSYNACK);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

/* remote_port_of returns the peer's port in host order. sock_ops holds it in network order in
 * the upper 16 bits of the word on little-endian machines (the kernel shifts it there), so
 * bpf_ntohl brings it to the lower 16. */
static __always_inline __u16 remote_port_of(struct bpf_sock_ops *skops)
{
	return (__u16)bpf_ntohl(skops->remote_port);
}

static __always_inline void req_key_of(struct bpf_sock_ops *skops, struct req_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = skops->family;
	if (skops->family == 2 /* AF_INET */) {
		k->local_ip[0] = skops->local_ip4;
		k->remote_ip[0] = skops->remote_ip4;
	} else {
		k->local_ip[0] = skops->local_ip6[0];
		k->local_ip[1] = skops->local_ip6[1];
		k->local_ip[2] = skops->local_ip6[2];
		k->local_ip[3] = skops->local_ip6[3];
		k->remote_ip[0] = skops->remote_ip6[0];
		k->remote_ip[1] = skops->remote_ip6[1];
		k->remote_ip[2] = skops->remote_ip6[2];
		k->remote_ip[3] = skops->remote_ip6[3];
	}
	k->local_port = skops->local_port;
	k->remote_port = remote_port_of(skops);
}

/* What the SYN a SYN/ACK answers asked for. */
enum syn_kind {
	SYN_PLAIN = 0,
	SYN_MPC = 1, /* a usable MP_CAPABLE */
	SYN_MPJ = 2, /* an MP_JOIN; sc->opt holds it */
	SYN_GONE = 3, /* not available: a retransmitted SYN/ACK of a Fast Open child (tfo_synacks) */
};

static __always_inline int syn_kind(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	int n;

	__builtin_memset(sc->ob.b, 0, 8);
	sc->ob.b[0] = TCPOPT_MPTCP; /* search by kind; length 0 matches any */
	n = bpf_load_hdr_opt(skops, sc->ob.b, 40, BPF_LOAD_HDR_OPT_TCP_SYN);
	if (n == -2 /* -ENOENT: no SYN kept */)
		return SYN_GONE;
	if (n <= 0 || mptcp_parse_opt(&sc->ob, 0, n, TCP_FLAG_SYN, &sc->opt) != PARSE_OK)
		return SYN_PLAIN;
	if (sc->opt.subtype == MPTCPOPT_MP_JOIN && sc->opt.len == LEN_MPJ_SYN)
		return SYN_MPJ;
	if (sc->opt.subtype == MPTCPOPT_MP_CAPABLE)
		return SYN_MPC;
	return SYN_PLAIN;
}

/* tfo_synack_key_of fills k for this request or socket: the client's address (IPv4 and
 * IPv4-mapped alike, as a dual-stack listener's request has no IPv6 address for an IPv4 SYN)
 * and the ports. */
static __always_inline void tfo_synack_key_of(struct bpf_sock_ops *skops, struct tfo_synack_key *k)
{
	/* Each ctx field read on its own: the verifier allows no ctx pointer arithmetic. */
	__u32 a0 = skops->remote_ip6[0], a1 = skops->remote_ip6[1];
	__u32 a2 = skops->remote_ip6[2], a3 = skops->remote_ip6[3];

	__builtin_memset(k, 0, sizeof(*k));
	if ((!a0 && !a1 && !a2 && !a3) || (!a0 && !a1 && a2 == bpf_htonl(0xffff))) {
		k->raddr[0] = skops->remote_ip4;
	} else {
		k->raddr[0] = a0;
		k->raddr[1] = a1;
		k->raddr[2] = a2;
		k->raddr[3] = a3;
	}
	k->lport = skops->local_port;
	k->rport = remote_port_of(skops);
}

/* local_id returns the MP_JOIN address ID of our address of this request or socket. */
static __always_inline __u8 local_id_of(struct bpf_sock_ops *skops)
{
	struct addr_key k = {.family = skops->family};
	__u8 *id;

	if (skops->family == 2 /* AF_INET */) {
		k.addr[0] = skops->local_ip4;
	} else {
		/* Each ctx field read on its own: the verifier allows no ctx pointer arithmetic. */
		__u32 a0 = skops->local_ip6[0], a1 = skops->local_ip6[1];
		__u32 a2 = skops->local_ip6[2], a3 = skops->local_ip6[3];

		if (!a0 && !a1 && a2 == bpf_htonl(0xffff)) {
			/* A dual-stack socket's IPv4 address, v4-mapped: keyed as IPv4. */
			k.family = 2;
			k.addr[0] = a3;
		} else {
			k.addr[0] = a0;
			k.addr[1] = a1;
			k.addr[2] = a2;
			k.addr[3] = a3;
		}
	}
	id = bpf_map_lookup_elem(&local_ids, &k);
	return id ? *id : 0;
}

/* synack_addrs fills in (zeroed first) with the version and addresses of the SYN a SYN/ACK of
 * our listener answers, from the SYN's IP header. Returns nonzero when it is not available. */
static __always_inline int synack_addrs(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct synkey_in *in)
{
	__u8 *ip = sc->syn_ip;
	long n;

	n = bpf_getsockopt(skops, SOL_TCP, TCP_BPF_SYN_IP, ip, sizeof(sc->syn_ip));
	if (n < 0 && n != -28 /* -ENOSPC: the first bytes were copied */)
		return -1;
	__builtin_memset(in, 0, sizeof(*in));
	switch (ip[0] >> 4) {
	case 4:
		in->version = 4;
		__builtin_memcpy(&in->remote_ip[0], ip + 12, 4);
		__builtin_memcpy(&in->local_ip[0], ip + 16, 4);
		return 0;
	case 6:
		in->version = 6;
		__builtin_memcpy(in->remote_ip, ip + 8, 16);
		__builtin_memcpy(in->local_ip, ip + 24, 16);
		return 0;
	}
	return -1;
}

/* synack_no_room records a SYN/ACK to an MP_CAPABLE SYN (in sc->opt) that has no room for our
 * option, for TC egress to make it (syn_tc.h synack_make_room). */
static __always_inline void synack_no_room(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	struct synkey_in *in = &sc->key_in;
	__u32 csum = dp_csum_required || (sc->opt.flags & MPC_FLAG_CHECKSUM);

	if (synack_addrs(skops, sc, in))
		return;
	in->local_port = skops->local_port;
	in->remote_port = remote_port_of(skops);
	bpf_map_update_elem(&synack_room, in, &csum, BPF_ANY);
}

/* synack_len reserves room on a SYN/ACK of our listener (request socket, no storage). */
static __always_inline int synack_len(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	switch (syn_kind(skops, sc)) {
	case SYN_MPC:
		if (bpf_reserve_hdr_opt(skops, LEN_MPC_SYNACK, 0) == -28 /* -ENOSPC */)
			synack_no_room(skops, sc);
		break;
	case SYN_GONE: {
		struct tfo_synack_key k;

		tfo_synack_key_of(skops, &k);
		if (bpf_map_lookup_elem(&tfo_synacks, &k))
			bpf_reserve_hdr_opt(skops, LEN_MPC_SYNACK, 0);
		break;
	}
	case SYN_MPJ:
		if (bpf_map_lookup_elem(&tokens, &sc->opt.token))
			bpf_reserve_hdr_opt(skops, LEN_MPJ_SYNACK, 0);
		break;
	}
	return 1;
}

/* synack_join answers an MP_JOIN SYN for one of our connections: a nonce, and the leftmost 64
 * bits of HMAC(KeyB‖KeyA, R-B‖R-A) computed here, since userspace has no chance to run (§3.2). */
static __always_inline int synack_join(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct req_key *k,
				       __u32 client_isn)
{
	struct req_val v = {}, *old;
	struct token_val *tv;
	__u32 token = sc->opt.token;
	__u8 *o = sc->out;

	tv = bpf_map_lookup_elem(&tokens, &token);
	if (!tv) {
		dp_count(DP_MPJoinNoTokenFound);
		return 1;
	}
	old = bpf_map_lookup_elem(&reqs, k);
	if (old && old->client_isn == client_isn && old->join) {
		v = *old; /* a retransmitted SYN/ACK: the same nonce and slot */
	} else {
		dp_count(DP_MPJoinSynRx);
		/* The nonce first: a slot once taken is accounted for (Go follows the queue in order). */
		if (bpf_map_pop_elem(&nonces, &v.nonce_b) || bpf_map_pop_elem(&sub_slots, &v.t.sub)) {
			dp_count(DP_MPJoinNoResource);
			return 1;
		}
		dp_count(DP_JoinSlotUsed);
		v.t.conn = tv->conn;
		v.client_isn = client_isn;
		v.join = 1;
		v.peer_id = sc->opt.addr_id;
		v.peer_backup = sc->opt.flags & MPJ_FLAG_BACKUP;
		v.nonce_a = sc->opt.nonce;
		v.token = token;
		v.local_id = local_id_of(skops);
		bpf_map_update_elem(&reqs, k, &v, BPF_ANY);
	}
	if (mptcp_hmac(&sc->hmac, tv->local_key, tv->remote_key, v.nonce_b, v.nonce_a))
		return 1;
	build_mpj_synack(o, v.local_id, sc->hmac.outer.h[0], sc->hmac.outer.h[1], v.nonce_b);
	if (!store_opt(skops, o, LEN_MPJ_SYNACK))
		dp_count(DP_MPJoinSynAckTx);
	return 1;
}

/* synack_key derives the MP_CAPABLE key of a SYN/ACK of our listener (synkey.h) from the SYN's
 * IP header (a request socket's own address fields are unreliable: a dual-stack listener's
 * request for an IPv4 SYN has the family AF_INET6 and no IPv6 addresses) and the SYN/ACK's ports
 * and acknowledgment. Returns 0 when the SYN is not available. */
static __always_inline __u64 synack_key(struct bpf_sock_ops *skops, struct dp_scratch *sc, __u16 lport,
					__u16 rport, __u32 client_isn)
{
	struct synkey_in *in = &sc->key_in;

	if (synack_addrs(skops, sc, in))
		return 0;
	in->local_port = lport;
	in->remote_port = rport;
	in->client_isn = client_isn;
	return synkey_derive(&sc->hmac, dp_cfg.synkey_secret, in);
}

/* synack_write writes our listener's answer to an MP_CAPABLE or MP_JOIN SYN. An MP_CAPABLE
 * SYN/ACK keeps no state and takes no ticket: its key is derived, and recomputed at the third
 * ACK (synkey.h). */
static __always_inline int synack_write(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	void *data = (void *)(long)skops->skb_data;
	void *end = (void *)(long)skops->skb_data_end;
	struct tcphdr *th = data;
	struct req_key k;
	__u32 client_isn;
	__u16 lport, rport;
	__u64 key;
	int kind, csum;

	if ((void *)(th + 1) > end)
		return 1;
	client_isn = bpf_ntohl(th->ack_seq) - 1;
	lport = bpf_ntohs(th->source);
	rport = bpf_ntohs(th->dest);
	kind = syn_kind(skops, sc);
	if (kind == SYN_GONE) {
		/* A Fast Open child's SYN/ACK again: the MP_CAPABLE its first one carried. */
		struct tfo_synack_key k;
		struct tfo_synack_val *v;

		tfo_synack_key_of(skops, &k);
		v = bpf_map_lookup_elem(&tfo_synacks, &k);
		if (!v)
			return 1;
		build_mpc(sc->out, LEN_MPC_SYNACK, v->csum, v->key, 0, 0, 0);
		if (!store_opt(skops, sc->out, LEN_MPC_SYNACK))
			dp_count(DP_MPCapableSYNACKTX);
		return 1;
	}
	if (kind == SYN_PLAIN)
		return 1;
	if (kind == SYN_MPJ) {
		req_key_of(skops, &k);
		return synack_join(skops, sc, &k, client_isn);
	}
	dp_count(DP_MPCapableSYNRX);
	/* The A flag when the SYN or we require DSS checksums (§3.1). */
	csum = dp_csum_required || (sc->opt.flags & MPC_FLAG_CHECKSUM);
	key = synack_key(skops, sc, lport, rport, client_isn);
	if (!key) {
		dp_count(DP_MPCapableSYNNoKey);
		return 1;
	}
	build_mpc(sc->out, LEN_MPC_SYNACK, csum, key, 0, 0, 0);
	if (!store_opt(skops, sc->out, LEN_MPC_SYNACK))
		dp_count(DP_MPCapableSYNACKTX);
	return 1;
}

/* mpj_ack_ok reports whether the third ACK of a passive join (optlen bytes of options in sc->ob)
 * carries the HMAC of the connection tv for the nonces in v. */
static __always_inline int mpj_ack_ok(struct dp_scratch *sc, struct token_val *tv, struct req_val *v, int optlen)
{
	int ok = 0;

	if (tv && optlen > 0 && find_opt(sc, optlen, TCP_FLAG_ACK, MPTCPOPT_MP_JOIN) && sc->opt.len == LEN_MPJ_ACK &&
	    !mptcp_hmac(&sc->hmac, tv->remote_key, tv->local_key, v->nonce_a, v->nonce_b)) {
		__u32 *h = sc->hmac.outer.h;
		__u8 *m = sc->opt.hmac;

		ok = 1;
		for (int i = 0; i < 5; i++) {
			__u32 want = h[i];

			if (m[4 * i] != (__u8)(want >> 24) || m[4 * i + 1] != (__u8)(want >> 16) ||
			    m[4 * i + 2] != (__u8)(want >> 8) || m[4 * i + 3] != (__u8)want)
				ok = 0;
		}
	}
	return ok;
}

/* passive_join completes an MP_JOIN on our side: the third ACK's HMAC must be the leftmost 160
 * bits of HMAC(KeyA‖KeyB, R-A‖R-B); only then the subflow joins its connection (§3.2). */
static __always_inline int passive_join(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct req_key *k,
					struct req_val *v, struct bpf_sock *sk)
{
	struct token_val *tv = bpf_map_lookup_elem(&tokens, &v->token);
	struct tcphdr th;
	struct sk_sub *s;
	struct sub *sb;
	int optlen, ok;

	s = bpf_sk_storage_get(&sk_subs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		bpf_map_delete_elem(&reqs, k);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
		return 1;
	}
	s->role = ROLE_JOIN_PASSIVE;
	s->conn = v->t.conn;
	s->sub = v->t.sub;
	s->rcv_isn = skops->rcv_nxt - 1;
	s->snd_isn = skops->snd_una - 1;
	s->local_id = v->local_id;
	s->remote_id = v->peer_id;
	s->local_nonce = v->nonce_b;
	s->remote_nonce = v->nonce_a;
	s->remote_token = v->token;
	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	ok = mpj_ack_ok(sc, tv, v, optlen);
	bpf_map_delete_elem(&reqs, k);
	if (!ok) {
		s->state = SUB_JOIN_FAILED;
		dp_count(DP_MPJoinAckHMacFailure);
		dp_emit(EV_JOIN, s, 0, 0, 0, 0, bpf_get_socket_cookie(skops));
		/* Go resets the subflow: the write callbacks stay on for the reset's MP_TCPRST
		 * (join_failed_rst), nothing is parsed any more. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
		return 1;
	}
	s->local_key = tv->local_key;
	s->remote_key = tv->remote_key;
	s->state = SUB_MPTCP;
	s->flags |= SUBF_MPC_ACKED | (v->peer_backup ? SUBF_PEER_BACKUP : 0);
	/* The fourth ACK, which lets the initiator send data: sent by our congestion control's
	 * init, which runs right after this callback. */
	sb = sub_of(s);
	if (sb)
		sb->st.ack_pending = 1;
	dp_count(DP_MPJoinAckRx);
	dp_emit(EV_JOIN, s, 1, v->local_id | (v->peer_id << 8) | ((__u64)v->peer_backup << 16), 0, 0,
		bpf_get_socket_cookie(skops));
	return 1;
}

/* join_failed_rst writes (or, with sc NULL, reserves room for) the MP_TCPRST Go asked for on the
 * reset of a passive join refused at its third ACK (passive_join), as the kernel sends one there
 * (subflow_syn_recv_sock; RFC 8684 §3.6). Nothing else is written on such a subflow. */
static __always_inline int join_failed_rst(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct sk_sub *s,
					   __u32 tcp_flags)
{
	struct sub *sb;

	if (s->role != ROLE_JOIN_PASSIVE || !(tcp_flags & TCP_FLAG_RST))
		return 1;
	sb = sub_of(s);
	if (!sb || !(sb->ctl.rst_flags & SUB_RST_REQUEST))
		return 1;
	if (!sc) {
		bpf_reserve_hdr_opt(skops, LEN_MP_TCPRST, 0);
		return 1;
	}
	build_tcprst(sc->out, sb->ctl.rst_flags, sb->ctl.rst_reason);
	if (!store_opt(skops, sc->out, LEN_MP_TCPRST))
		dp_count(DP_MPRstTx);
	return 1;
}

/* passive_conn_init fills the connection slot of a ticket for our key, as Go does for an active
 * open: the data-level send side starts at our IDSN + 1, one initial window until the peer tells
 * its own. Go took its hands off the slot when it queued the ticket, and reads it back when it
 * accepts the connection. */
static __always_inline void passive_conn_init(struct conn *c, __u64 key, __u64 idsn)
{
	c->ctl.local_key = key;
	c->ctl.snd_nxt = idsn + 1;
	c->st.peer_data_ack = idsn + 1;
	c->st.peer_wnd_end = idsn + 1 + PASSIVE_INITIAL_WINDOW;
}

/* passive_key recomputes the key our SYN/ACK derived (synkey.h) from the new socket's addresses
 * and ports and the client's ISN; 0 on failure. */
static __always_inline __u64 passive_key(struct bpf_sock_ops *skops, struct dp_scratch *sc, __u32 client_isn)
{
	struct synkey_in *in = &sc->key_in;
	__u32 local6[4], remote6[4];

	/* Each ctx field read on its own: the verifier allows no ctx pointer arithmetic. */
	local6[0] = skops->local_ip6[0];
	local6[1] = skops->local_ip6[1];
	local6[2] = skops->local_ip6[2];
	local6[3] = skops->local_ip6[3];
	remote6[0] = skops->remote_ip6[0];
	remote6[1] = skops->remote_ip6[1];
	remote6[2] = skops->remote_ip6[2];
	remote6[3] = skops->remote_ip6[3];
	synkey_set_addrs(in, skops->family, local6, remote6, skops->local_ip4, skops->remote_ip4);
	in->local_port = skops->local_port;
	in->remote_port = remote_port_of(skops);
	in->client_isn = client_isn;
	return synkey_derive(&sc->hmac, dp_cfg.synkey_secret, in);
}

/* passive_slots gives the connection of our key its slots: its token must be free on this host,
 * and a ticket must be queued. Returns 0 with s->conn, s->sub and the connection slot filled,
 * nonzero (counted) when the connection falls back. */
static __always_inline int passive_slots(struct dp_scratch *sc, struct sk_sub *s, __u64 key, __u64 remote_key)
{
	struct token_val tv = {.local_key = key, .remote_key = remote_key};
	struct ticket t;
	struct conn *c;
	__u32 token;
	__u64 idsn;

	if (mptcp_key_sha(&sc->hmac, key))
		return -1;
	token = sc->hmac.inner.h[0];
	idsn = ((__u64)sc->hmac.inner.h[6] << 32) | sc->hmac.inner.h[7];
	if (bpf_map_lookup_elem(&tokens, &token)) {
		dp_count(DP_TokenFallbackInit);
		return -1;
	}
	if (bpf_map_pop_elem(&tickets, &t)) {
		dp_count(DP_MPCapableNoTicket);
		return -1;
	}
	dp_count(DP_PassiveTicketUsed);
	s->conn = t.conn;
	s->sub = t.sub;
	c = conn_of(s);
	if (!c) {
		dp_count(DP_NoState);
		return -1;
	}
	/* Joinable at once, as the kernel's MPTCP is at the third ACK: the client may join as soon
	 * as our first DATA_ACK reaches it, before Go accepts the connection (Go removes the token
	 * of a connection it does not accept). */
	tv.conn = t.conn;
	if (bpf_map_update_elem(&tokens, &token, &tv, BPF_NOEXIST)) {
		dp_count(DP_TokenFallbackInit);
		return -1;
	}
	passive_conn_init(c, key, idsn);
	return 0;
}

/* passive_first_map records the mapping an MP_CAPABLE with data (22 bytes) carries implicitly:
 * data_len bytes at relative SSN 1 and the client's IDSN + 1, the base of the next mapping's
 * 32-bit DSN (est_rx.h dss_mapping); map_csum holds its checksum (RXMAP_CSUM) if it has one. */
static __always_inline void passive_first_map(struct sk_sub *s, __u16 data_len, __u64 map_csum)
{
	s->rx_map_dsn = (s->flags & SUBF_PEER_IDSN) ? s->peer_idsn + 1 : 0;
	s->rx_map_ssn = 1;
	s->rx_map_len = data_len;
	s->rx_map_fin = 0;
	s->flags |= SUBF_RX_MAP_VALID;
	dp_count(DP_MappingRx);
	dp_emit(EV_RX_MAP, s, 0, 0, 1, data_len | RXMAP_MPC | map_csum, 0);
}

/* passive_mpc completes an MP_CAPABLE handshake of our listener (RFC 8684 §3.1): the third ACK
 * (20 bytes) or, when it was lost, the first data (22 bytes) must echo the key our SYN/ACK
 * derived from this 4-tuple and client ISN; its token must be free on this host (the kernel falls
 * back likewise when a SYN cookie's token is taken); then a ticket gives the connection its
 * slots. Anything else continues as plain TCP, counted. */
static __always_inline int passive_mpc(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct bpf_sock *sk)
{
	__u64 key, remote_key, echoed, map_csum;
	__u16 data_len;
	struct sk_sub *s;
	struct conn *c;
	struct tcphdr th;
	int optlen, payload, mpc_len, csum;

	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	payload = skops->skb_len > th.doff * 4;
	if (optlen <= 0 || !find_mpc(sc, optlen, TCP_FLAG_ACK | (payload ? SEG_HAS_PAYLOAD : 0))) {
		/* A plain TCP client, or an MPTCP client whose option vanished on the way (told apart
		 * only when the kernel still has the SYN). */
		if (syn_kind(skops, sc) == SYN_MPC)
			dp_count(DP_MPCapableFallbackACK);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
		return 1;
	}
	remote_key = sc->opt.key_a;
	echoed = sc->opt.key_b;
	data_len = sc->opt.data_len;
	mpc_len = sc->opt.len;
	csum = dp_csum_required || (sc->opt.flags & MPC_FLAG_CHECKSUM);
	map_csum = sc->opt.has_csum ? RXMAP_CSUM | ((__u64)sc->opt.csum << 32) : 0;
	s = bpf_sk_storage_get(&sk_subs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
		return 1;
	}
	s->role = ROLE_PASSIVE;
	s->conn = ~0U;
	s->sub = ~0U;
	s->rcv_isn = skops->rcv_nxt - 1;
	s->snd_isn = skops->snd_una - 1;

	key = passive_key(skops, sc, s->rcv_isn);
	if (!key || echoed != key) {
		dp_count(DP_MPCapableACKBadKey);
		dp_count(DP_MPCapableFallbackACK);
		goto fallback;
	}
	if (passive_slots(sc, s, key, remote_key))
		goto fallback;
	/* DSS checksums when either side asked for them (§3.1): the client's A flag is on its
	 * every MP_CAPABLE, the SYN's included (kept with the request). */
	if (!csum && syn_kind(skops, sc) == SYN_MPC && (sc->opt.flags & MPC_FLAG_CHECKSUM))
		csum = 1;
	c = conn_of(s);
	if (c && csum) {
		c->st.csum = 1;
		dp_count(DP_CsumEnabled);
	}
	s->local_key = key;
	s->remote_key = remote_key;
	s->state = SUB_MPTCP;
	/* Until Go accepts the connection, our ACKs still carry a DATA_ACK (the client's IDSN + 1): a
	 * client that is not yet fully established falls back on an ACK without one (the kernel
	 * counts MPCapableDataFallback). */
	if (!mptcp_key_sha(&sc->hmac, remote_key)) {
		s->peer_idsn = ((__u64)sc->hmac.inner.h[6] << 32) | sc->hmac.inner.h[7];
		s->flags |= SUBF_PEER_IDSN;
	}
	if (mpc_len >= LEN_MPC_ACK_DATA) {
		/* The third ACK was lost; this data segment completed the handshake and carries the
		 * first mapping implicitly (§3.1), at the client's IDSN + 1: the base of the next
		 * mapping's 32-bit DSN (est_rx.h dss_mapping). */
		passive_first_map(s, data_len, map_csum);
	}
	dp_count(DP_MPCapableACKRX);
	return 1;

fallback:
	s->state = SUB_FALLBACK;
	s->fallback_reason = 3;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

/* on_passive_established checks the third ACK of a child of our listener: a passive MP_JOIN or
 * MP_CAPABLE completes, or the child continues as plain TCP. */
static __always_inline int on_passive_established(struct bpf_sock_ops *skops)
{
	struct dp_scratch *sc = dp_scratch();
	struct bpf_sock *sk = skops->sk;
	struct req_key k;
	struct req_val *v;

	/* Only children of our listeners inherit the option callbacks: the process's other
	 * listeners (plain TCP, or the kernel's MPTCP, whose subflows are TCP sockets of this
	 * cgroup too) are none of ours. */
	if (!sc || !sk || (skops->bpf_sock_ops_cb_flags & OPT_FLAGS) != OPT_FLAGS)
		return 1;
	req_key_of(skops, &k);
	v = bpf_map_lookup_elem(&reqs, &k);
	if (v && v->join && v->client_isn == skops->rcv_nxt - 1)
		return passive_join(skops, sc, &k, v, sk);
	return passive_mpc(skops, sc, sk);
}

#endif
