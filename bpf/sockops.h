/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sock_ops: MPTCP option I/O on our plain TCP subflows.
 *
 * Writes MP_CAPABLE (SYN, SYN/ACK, third ACK, first data), DSS (mapping looked up by the
 * segment's sequence number in the table Go fills, data ACK from connection state, DATA_FIN),
 * MP_FASTCLOSE and MP_TCPRST; parses every incoming MPTCP option into state and events. Acts
 * only on sockets that have an sk_subs entry (registered by Go, or children of our listeners).
 */
#ifndef MPTCPGO_SOCKOPS_H
#define MPTCPGO_SOCKOPS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_maps.h"

#ifndef SOL_TCP
#define SOL_TCP 6
#endif

#define OPT_FLAGS (BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG)
#define LEN_DSS_ACK_ONLY (LEN_DSS_BASE + LEN_DSS_ACK64)
#define LEN_DSS_FULL (LEN_DSS_BASE + LEN_DSS_ACK64 + LEN_DSS_MAP64)
#define ALIGN4(x) (((x) + 3) & ~3)

static __always_inline struct sk_sub *sub_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sk_subs, sk, 0, 0);
}

/* copy_hdr_opts copies the options of the TCP header at skb_data into ob; returns their length
 * and the header in *th, or -1. */
static __always_inline int copy_hdr_opts(struct bpf_sock_ops *skops, struct optbuf *ob, struct tcphdr *th)
{
	void *data = (void *)(long)skops->skb_data;
	void *end = (void *)(long)skops->skb_data_end;
	__u32 len;

	if (data + sizeof(*th) > end)
		return -1;
	__builtin_memcpy(th, data, sizeof(*th));
	len = th->doff * 4;
	if (len < sizeof(*th) || len > sizeof(*th) + MAX_TCP_OPTION_SPACE)
		return -1;
	len -= sizeof(*th);
	for (__u32 i = 0; i < MAX_TCP_OPTION_SPACE; i++) {
		__u8 *p = data + sizeof(*th) + i;

		if (i >= len)
			break;
		if ((void *)(p + 1) > end)
			return -1;
		ob->b[i] = *p;
	}
	return len;
}

/* ---- writing options ---- */

static __always_inline void put_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, v);
}

static __always_inline int store_opt(struct bpf_sock_ops *skops, __u8 *out, __u32 len)
{
	int err = bpf_store_hdr_opt(skops, out, len, 0);

	if (err)
		dp_count(DP_OPT_NOSPACE);
	return err;
}

/* build_mpc fills an MP_CAPABLE of length len (4, 12, 20 or 22). */
static __always_inline void build_mpc(__u8 *o, __u32 len, __u64 sender, __u64 receiver, __u16 data_len)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = len;
	o[2] = (MPTCPOPT_MP_CAPABLE << 4) | MPTCP_SUPPORTED_VERSION;
	o[3] = MPC_FLAG_HMAC_SHA256;
	if (len >= LEN_MPC_SYNACK)
		put_be64(o + 4, sender);
	if (len >= LEN_MPC_ACK)
		put_be64(o + 12, receiver);
	if (len >= LEN_MPC_ACK_DATA)
		put_be16(o + 20, data_len);
}

/* build_dss fills a DSS with a 64-bit data ACK when has_ack, and a 64-bit mapping when has_map;
 * returns its length. */
static __always_inline __u32 build_dss(__u8 *o, int has_ack, __u64 ack, int has_map, __u64 dsn, __u32 ssn,
				       __u16 len, int fin)
{
	__u32 n = LEN_DSS_BASE;
	__u8 flags = 0;

	if (has_ack) {
		flags |= DSS_FLAG_HAS_ACK | DSS_FLAG_ACK64;
		put_be64(o + n, ack);
		n += 8;
	}
	if (has_map) {
		flags |= DSS_FLAG_HAS_MAP | DSS_FLAG_DSN64;
		if (fin)
			flags |= DSS_FLAG_DATA_FIN;
		put_be64(o + n, dsn);
		put_be32(o + n + 8, ssn);
		put_be16(o + n + 12, len);
		n += 14;
	}
	o[0] = TCPOPT_MPTCP;
	o[1] = n;
	o[2] = MPTCPOPT_DSS << 4;
	o[3] = flags;
	return n;
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

/* ---- the handshake ---- */

static __always_inline int on_connect(struct bpf_sock_ops *skops)
{
	struct sk_sub *s = sub_state(skops);

	if (!s || (s->role != ROLE_ACTIVE && s->role != ROLE_JOIN_ACTIVE))
		return 1;
	s->state = SUB_SYN_SENT;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | OPT_FLAGS);
	return 1;
}

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

/* find_opt parses the options in ob for one of the given subtype valid for the segment; returns
 * its offset + 1 (0 if none): sc->opt holds it. */
static __always_inline int find_opt(struct dp_scratch *sc, int optlen, __u32 seg, __u8 subtype)
{
	struct opt_walk w = {.pos = 0, .len = optlen};

	for (int i = 0; i < 8; i++) {
		int n = mptcp_next_opt(&sc->ob, &w);

		if (n <= 0)
			return 0;
		if (mptcp_parse_opt(&sc->ob, w.pos, n, seg, &sc->opt) == PARSE_OK && sc->opt.subtype == subtype)
			return w.pos + 1;
		w.pos += n;
	}
	return 0;
}

/* find_mpc parses the options in ob for an MP_CAPABLE valid for the segment. */
static __always_inline int find_mpc(struct dp_scratch *sc, int optlen, __u32 seg)
{
	return find_opt(sc, optlen, seg, MPTCPOPT_MP_CAPABLE) != 0;
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
			dp_count(DP_MPJ_SYNACK_RX);
			dp_emit(EV_JOIN, s, 1, s->local_id | (remote_id << 8) | ((__u64)backup << 16), 0, 0,
				bpf_get_socket_cookie(skops));
			return 1;
		}
	}
	s->state = SUB_JOIN_FAILED;
	dp_count(DP_MPJ_SYNACK_HMAC_FAIL);
	dp_emit(EV_JOIN, s, 0, 0, 0, 0, bpf_get_socket_cookie(skops));
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

static __always_inline int on_active_established(struct bpf_sock_ops *skops)
{
	struct sk_sub *s = sub_state(skops);
	struct dp_scratch *sc = dp_scratch();
	struct tcphdr th;
	int optlen;

	if (!s || !sc || (s->role != ROLE_ACTIVE && s->role != ROLE_JOIN_ACTIVE))
		return 1;
	s->rcv_isn = skops->rcv_nxt - 1;
	s->snd_isn = skops->snd_una - 1;
	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	if (s->role == ROLE_JOIN_ACTIVE)
		return active_join(skops, sc, s, optlen);
	/* A checksum-requiring peer is not supported yet: fall back rather than break (§3.3.0). */
	if (optlen > 0 && find_mpc(sc, optlen, TCP_FLAG_SYN | TCP_FLAG_ACK) && sc->opt.len == LEN_MPC_SYNACK &&
	    !(sc->opt.flags & MPC_FLAG_CHECKSUM)) {
		s->remote_key = sc->opt.key_a;
		s->state = SUB_MPTCP;
		dp_count(DP_MPC_SYNACK_RX);
		dp_emit(EV_ESTABLISHED, s, 1, s->remote_key, 0, 0, 0);
		return 1;
	}
	s->state = SUB_FALLBACK;
	s->fallback_reason = optlen > 0 && sc->opt.subtype == MPTCPOPT_MP_CAPABLE ? 2 : 1;
	dp_count(DP_MPC_FALLBACK_SYNACK);
	dp_emit(EV_ESTABLISHED, s, 0, 0, 0, 0, 0);
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
};

static __always_inline int syn_kind(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	int n;

	__builtin_memset(sc->ob.b, 0, 8);
	sc->ob.b[0] = TCPOPT_MPTCP; /* search by kind; length 0 matches any */
	n = bpf_load_hdr_opt(skops, sc->ob.b, 40, BPF_LOAD_HDR_OPT_TCP_SYN);
	if (n <= 0 || mptcp_parse_opt(&sc->ob, 0, n, TCP_FLAG_SYN, &sc->opt) != PARSE_OK)
		return SYN_PLAIN;
	if (sc->opt.subtype == MPTCPOPT_MP_JOIN && sc->opt.len == LEN_MPJ_SYN)
		return SYN_MPJ;
	/* No DSS checksums yet: a SYN that requires them is answered as plain TCP. */
	if (sc->opt.subtype == MPTCPOPT_MP_CAPABLE && !(sc->opt.flags & MPC_FLAG_CHECKSUM))
		return SYN_MPC;
	return SYN_PLAIN;
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

/* synack_len reserves room on a SYN/ACK of our listener (request socket, no storage). */
static __always_inline int synack_len(struct bpf_sock_ops *skops, struct dp_scratch *sc)
{
	switch (syn_kind(skops, sc)) {
	case SYN_MPC:
		bpf_reserve_hdr_opt(skops, LEN_MPC_SYNACK, 0);
		break;
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
		dp_count(DP_MPJ_NO_TOKEN);
		return 1;
	}
	old = bpf_map_lookup_elem(&reqs, k);
	if (old && old->client_isn == client_isn && old->join) {
		v = *old; /* a retransmitted SYN/ACK: the same nonce and slot */
	} else {
		dp_count(DP_MPJ_SYN_RX);
		/* The nonce first: a slot once taken is accounted for (Go follows the queue in order). */
		if (bpf_map_pop_elem(&nonces, &v.nonce_b) || bpf_map_pop_elem(&sub_slots, &v.t.sub)) {
			dp_count(DP_MPJ_NO_RESOURCE);
			return 1;
		}
		dp_count(DP_SUBSLOT_USED);
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
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MPJ_SYNACK;
	o[2] = MPTCPOPT_MP_JOIN << 4;
	o[3] = v.local_id;
	put_be32(o + 4, sc->hmac.outer.h[0]);
	put_be32(o + 8, sc->hmac.outer.h[1]);
	put_be32(o + 12, v.nonce_b);
	if (!store_opt(skops, o, LEN_MPJ_SYNACK))
		dp_count(DP_MPJ_SYNACK_TX);
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
	__u8 *ip = sc->syn_ip;
	long n;

	n = bpf_getsockopt(skops, SOL_TCP, TCP_BPF_SYN_IP, ip, sizeof(sc->syn_ip));
	if (n < 0 && n != -28 /* -ENOSPC: the first bytes were copied */)
		return 0;
	__builtin_memset(in, 0, sizeof(*in));
	switch (ip[0] >> 4) {
	case 4:
		in->version = 4;
		__builtin_memcpy(&in->remote_ip[0], ip + 12, 4);
		__builtin_memcpy(&in->local_ip[0], ip + 16, 4);
		break;
	case 6:
		in->version = 6;
		__builtin_memcpy(in->remote_ip, ip + 8, 16);
		__builtin_memcpy(in->local_ip, ip + 24, 16);
		break;
	default:
		return 0;
	}
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
	int kind;

	if ((void *)(th + 1) > end)
		return 1;
	client_isn = bpf_ntohl(th->ack_seq) - 1;
	lport = bpf_ntohs(th->source);
	rport = bpf_ntohs(th->dest);
	kind = syn_kind(skops, sc);
	if (kind == SYN_PLAIN)
		return 1;
	if (kind == SYN_MPJ) {
		req_key_of(skops, &k);
		return synack_join(skops, sc, &k, client_isn);
	}
	dp_count(DP_MPC_SYN_RX);
	key = synack_key(skops, sc, lport, rport, client_isn);
	if (!key) {
		dp_count(DP_MPC_SYN_NOKEY);
		return 1;
	}
	build_mpc(sc->out, LEN_MPC_SYNACK, key, 0, 0);
	if (!store_opt(skops, sc->out, LEN_MPC_SYNACK))
		dp_count(DP_MPC_SYNACK_TX);
	return 1;
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
	int optlen, ok = 0;

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
	bpf_map_delete_elem(&reqs, k);
	if (!ok) {
		s->state = SUB_JOIN_FAILED;
		dp_count(DP_MPJ_ACK_HMAC_FAIL);
		dp_emit(EV_JOIN, s, 0, 0, 0, 0, bpf_get_socket_cookie(skops));
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
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
	dp_count(DP_MPJ_ACK_RX);
	dp_emit(EV_JOIN, s, 1, v->local_id | (v->peer_id << 8) | ((__u64)v->peer_backup << 16), 0, 0,
		bpf_get_socket_cookie(skops));
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

/* passive_mpc completes an MP_CAPABLE handshake of our listener (RFC 8684 §3.1): the third ACK
 * (20 bytes) or, when it was lost, the first data (22 bytes) must echo the key our SYN/ACK
 * derived from this 4-tuple and client ISN; its token must be free on this host (the kernel falls
 * back likewise when a SYN cookie's token is taken); then a ticket gives the connection its
 * slots. Anything else continues as plain TCP, counted. */
static __always_inline int passive_mpc(struct bpf_sock_ops *skops, struct dp_scratch *sc, struct bpf_sock *sk)
{
	struct synkey_in *in = &sc->key_in;
	__u64 key, remote_key, echoed, idsn;
	__u32 local6[4], remote6[4], token;
	__u16 data_len;
	struct ticket t;
	struct sk_sub *s;
	struct tcphdr th;
	int optlen, payload, mpc_len;
	struct conn *c;

	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	payload = skops->skb_len > th.doff * 4;
	if (optlen <= 0 || !find_mpc(sc, optlen, TCP_FLAG_ACK | (payload ? SEG_HAS_PAYLOAD : 0))) {
		/* A plain TCP client, or an MPTCP client whose option vanished on the way (told apart
		 * only when the kernel still has the SYN). */
		if (syn_kind(skops, sc) == SYN_MPC)
			dp_count(DP_MPC_FALLBACK_ACK);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
		return 1;
	}
	remote_key = sc->opt.key_a;
	echoed = sc->opt.key_b;
	data_len = sc->opt.data_len;
	mpc_len = sc->opt.len;
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
	in->client_isn = s->rcv_isn;
	key = synkey_derive(&sc->hmac, dp_cfg.synkey_secret, in);
	if (!key || echoed != key) {
		dp_count(DP_MPC_ACK_BADKEY);
		dp_count(DP_MPC_FALLBACK_ACK);
		goto fallback;
	}
	if (mptcp_key_sha(&sc->hmac, key))
		goto fallback;
	token = sc->hmac.inner.h[0];
	idsn = ((__u64)sc->hmac.inner.h[6] << 32) | sc->hmac.inner.h[7];
	if (bpf_map_lookup_elem(&tokens, &token)) {
		dp_count(DP_MPC_TOKEN_FALLBACK);
		goto fallback;
	}
	if (bpf_map_pop_elem(&tickets, &t)) {
		dp_count(DP_MPC_NO_TICKET);
		goto fallback;
	}
	dp_count(DP_TICKET_USED);
	s->conn = t.conn;
	s->sub = t.sub;
	c = conn_of(s);
	if (!c) {
		dp_count(DP_NO_STATE);
		goto fallback;
	}
	passive_conn_init(c, key, idsn);
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
		 * first mapping implicitly (§3.1). */
		s->rx_map_ssn = 1;
		s->rx_map_len = data_len;
		s->flags |= SUBF_RX_MAP_VALID;
		dp_count(DP_RX_MAP);
		dp_emit(EV_RX_MAP, s, 0, 0, 1, data_len | (1 << 17), 0);
	}
	dp_count(DP_MPC_ACK_RX);
	return 1;

fallback:
	s->state = SUB_FALLBACK;
	s->fallback_reason = 3;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~OPT_FLAGS);
	return 1;
}

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

/* ---- established: option length, writing ---- */

static __always_inline int data_fin_pending(struct conn *c)
{
	return (c->ctl.flags & CONNF_DATA_FIN) && !before64(c->ctl.snd_fin_dsn, c->st.peer_data_ack);
}

static __always_inline int on_hdr_len(struct bpf_sock_ops *skops)
{
	__u32 tcp_flags = skops->skb_tcp_flags;
	struct dp_scratch *sc;
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	__u32 len = 0;

	if (!skops->is_fullsock) {
		/* A SYN/ACK of our listener: only listeners we registered have the callback on. */
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
			sc = dp_scratch();
			if (sc)
				return synack_len(skops, sc);
		}
		return 1;
	}
	s = sub_state(skops);
	if (!s)
		return 1;
	if (skops->args[0] & BPF_WRITE_HDR_TCP_CURRENT_MSS) {
		/* Sizing the MSS: room for a full DSS on every data segment. */
		if (s->state == SUB_MPTCP)
			bpf_reserve_hdr_opt(skops, ALIGN4(LEN_DSS_FULL), 0);
		return 1;
	}
	if (s->state == SUB_SYN_SENT && (tcp_flags & TCP_FLAG_SYN)) {
		bpf_reserve_hdr_opt(skops, s->role == ROLE_JOIN_ACTIVE ? LEN_MPJ_SYN : LEN_MPC_SYN, 0);
		return 1;
	}
	if (s->state != SUB_MPTCP)
		return 1;
	sb = sub_of(s);
	c = conn_of(s);
	if (!c) {
		dp_count(DP_NO_STATE);
		return 1;
	}
	if (c->ctl.flags & CONNF_FALLBACK)
		return 1;
	if (tcp_flags & TCP_FLAG_RST) {
		len = LEN_MP_FASTCLOSE;
	} else if (skops->skb_len > 0 || (tcp_flags & TCP_FLAG_FIN) || data_fin_pending(c) ||
		   (c->ctl.flags & CONNF_MP_FAIL)) {
		len = ALIGN4(LEN_DSS_FULL);
	} else if (sb && sb->ctl.opt_gen != sb->st.opt_done && sb->ctl.opt_len) {
		len = ALIGN4(sb->ctl.opt_len & 0x3f); /* a queued ADD_ADDR, RM_ADDR or MP_PRIO */
	} else if (s->role == ROLE_JOIN_ACTIVE && !(s->flags & SUBF_MPC_ACKED)) {
		len = LEN_MPJ_ACK;
	} else if (s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED)) {
		len = LEN_MPC_ACK;
	} else {
		/* A data ACK on a pure ACK, 64-bit or else 32-bit: SACK blocks may leave too little
		 * room (the kernel sizes them before this callback). Without one, the next ACK carries
		 * it; nothing is lost. */
		if (bpf_reserve_hdr_opt(skops, LEN_DSS_ACK_ONLY, 0) &&
		    bpf_reserve_hdr_opt(skops, LEN_DSS_BASE + 4, 0))
			dp_count(DP_ACK_NOSPACE);
		return 1;
	}
	if (bpf_reserve_hdr_opt(skops, len, 0))
		dp_count(DP_OPT_NOSPACE);
	return 1;
}

static __always_inline int write_rst(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
				     struct sub *sb, struct dp_scratch *sc)
{
	__u8 *o = sc->out;

	if (c->ctl.flags & CONNF_FASTCLOSE) {
		o[0] = TCPOPT_MPTCP;
		o[1] = LEN_MP_FASTCLOSE;
		o[2] = MPTCPOPT_MP_FASTCLOSE << 4;
		o[3] = 0;
		put_be64(o + 4, s->remote_key);
		if (!store_opt(skops, o, LEN_MP_FASTCLOSE))
			dp_count(DP_FASTCLOSE_TX);
		return 1;
	}
	if (sb && (sb->ctl.rst_flags & SUB_RST_REQUEST)) {
		o[0] = TCPOPT_MPTCP;
		o[1] = LEN_MP_TCPRST;
		o[2] = (MPTCPOPT_RST << 4) | (sb->ctl.rst_flags & 0x0f);
		o[3] = sb->ctl.rst_reason;
		if (!store_opt(skops, o, LEN_MP_TCPRST))
			dp_count(DP_TCPRST_TX);
	}
	return 1;
}

static __always_inline int on_write_hdr(struct bpf_sock_ops *skops)
{
	__u32 tcp_flags = skops->skb_tcp_flags;
	struct dp_scratch *sc = dp_scratch();
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	struct tcphdr *th;
	void *data, *end;
	__u32 seq, rel, payload, n;
	int has_ack;
	__u64 ack;

	if (!sc)
		return 1;
	if (!skops->is_fullsock) {
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK))
			return synack_write(skops, sc);
		return 1;
	}
	s = sub_state(skops);
	if (!s)
		return 1;
	data = (void *)(long)skops->skb_data;
	end = (void *)(long)skops->skb_data_end;
	th = data;
	if ((void *)(th + 1) > end)
		return 1;
	seq = bpf_ntohl(th->seq);
	payload = skops->skb_len - th->doff * 4;
	if (payload > skops->skb_len)
		payload = 0;

	if (s->state == SUB_SYN_SENT && (tcp_flags & TCP_FLAG_SYN)) {
		s->snd_isn = seq;
		if (s->role == ROLE_JOIN_ACTIVE) {
			__u8 *o = sc->out;

			o[0] = TCPOPT_MPTCP;
			o[1] = LEN_MPJ_SYN;
			o[2] = (MPTCPOPT_MP_JOIN << 4) | (s->join_flags & JOINF_BACKUP ? MPJ_FLAG_BACKUP : 0);
			o[3] = s->local_id;
			put_be32(o + 4, s->remote_token);
			put_be32(o + 8, s->local_nonce);
			if (!store_opt(skops, o, LEN_MPJ_SYN))
				dp_count(DP_MPJ_SYN_TX);
			return 1;
		}
		build_mpc(sc->out, LEN_MPC_SYN, 0, 0, 0);
		if (!store_opt(skops, sc->out, LEN_MPC_SYN))
			dp_count(DP_MPC_SYN_TX);
		return 1;
	}
	if (s->state != SUB_MPTCP)
		return 1;
	c = conn_of(s);
	sb = sub_of(s);
	if (!c || !sb) {
		dp_count(DP_NO_STATE);
		return 1;
	}
	sb->st.snd_una_rel = skops->snd_una - s->snd_isn;
	sb->st.srtt_us = skops->srtt_us >> 3;
	sb->st.snd_cwnd = skops->snd_cwnd;
	sb->st.mss = skops->mss_cache;
	sb->st.packets_out = skops->packets_out;
	sb->st.total_retrans = skops->total_retrans;
	if (c->ctl.flags & CONNF_FALLBACK)
		return 1;
	if (tcp_flags & TCP_FLAG_RST)
		return write_rst(skops, s, c, sb, sc);

	rel = seq - s->snd_isn;
	has_ack = !!(c->ctl.flags & CONNF_CAN_ACK);
	ack = c->ctl.rcv_nxt;
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

	if (c->ctl.flags & CONNF_MP_FAIL && !payload) {
		__u8 *o = sc->out;

		o[0] = TCPOPT_MPTCP;
		o[1] = LEN_MP_FAIL;
		o[2] = MPTCPOPT_MP_FAIL << 4;
		o[3] = 0;
		put_be64(o + 4, c->ctl.mp_fail_dsn);
		if (!store_opt(skops, o, LEN_MP_FAIL))
			dp_count(DP_MP_FAIL_TX);
		return 1;
	}

	if (payload) {
		__s64 idx = find_txmap(sb, rel);
		struct txmap *m;
		__u16 mlen;
		int fin;

		if (idx < 0) {
			dp_count(DP_DSS_TX_NOMAP);
			sb->st.tx_nomap++;
			sb->st.nomap_rel = rel;
			goto ack_only;
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
				dp_count(DP_MPC_DATA_TX);
			return 1;
		}
		n = build_dss(sc->out, has_ack, ack, 1, m->dsn, m->ssn, mlen + fin, fin);
		if (store_opt(skops, sc->out, n)) {
			/* Short of room: the mapping matters more than the data ACK. */
			n = build_dss(sc->out, 0, 0, 1, m->dsn, m->ssn, mlen + fin, fin);
			if (store_opt(skops, sc->out, n))
				return 1;
		}
		dp_count(DP_DSS_TX);
		if (fin)
			dp_count(DP_DATA_FIN_TX);
		sb->st.tx_dss++;
		return 1;
	}

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
				dp_count(DP_OPT_TX);
				return 1;
			}
		} else {
			sb->st.opt_done = sb->ctl.opt_gen;
		}
	}
	if (s->role == ROLE_JOIN_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && rel == 1 && !(tcp_flags & TCP_FLAG_FIN)) {
		/* The MP_JOIN third ACK, repeated until the fourth ACK shows it arrived. */
		__u8 *o = sc->out;

		o[0] = TCPOPT_MPTCP;
		o[1] = LEN_MPJ_ACK;
		o[2] = MPTCPOPT_MP_JOIN << 4;
		o[3] = 0;
		for (int i = 0; i < 5; i++)
			put_be32(o + 4 + 4 * i, s->hmac_a[i]);
		if (!store_opt(skops, o, LEN_MPJ_ACK))
			dp_count(DP_MPJ_ACK_TX);
		return 1;
	}
	if (s->role == ROLE_ACTIVE && !(s->flags & SUBF_MPC_ACKED) && rel == 1 && !(tcp_flags & TCP_FLAG_FIN) &&
	    !data_fin_pending(c)) {
		build_mpc(sc->out, LEN_MPC_ACK, s->local_key, s->remote_key, 0);
		if (!store_opt(skops, sc->out, LEN_MPC_ACK))
			dp_count(DP_MPC_ACK_TX);
		return 1;
	}

ack_only:
	if (data_fin_pending(c)) {
		/* A DATA_FIN without data: SSN 0, length 1 (§3.3.3). */
		n = build_dss(sc->out, has_ack, ack, 1, c->ctl.snd_fin_dsn, 0, 1, 1);
		if (!store_opt(skops, sc->out, n)) {
			dp_count(DP_DSS_TX);
			dp_count(DP_DATA_FIN_TX);
		}
		return 1;
	}
	if (!has_ack)
		return 1;
	n = build_dss(sc->out, 1, ack, 0, 0, 0, 0, 0);
	if (!bpf_store_hdr_opt(skops, sc->out, n, 0)) {
		dp_count(DP_DSS_TX);
		return 1;
	}
	/* The 32-bit form, when only that fitted (see the length callback). */
	sc->out[1] = LEN_DSS_BASE + 4;
	sc->out[3] = DSS_FLAG_HAS_ACK;
	put_be32(sc->out + LEN_DSS_BASE, (__u32)ack);
	if (!bpf_store_hdr_opt(skops, sc->out, LEN_DSS_BASE + 4, 0))
		dp_count(DP_DSS_TX);
	else
		dp_count(DP_ACK_NOSPACE);
	return 1;
}

/* ---- established: parsing ---- */

/* rx_ack_advance moves the datapath's data-level ACK from want to to, if nobody moved it. */
static __always_inline void rx_ack_advance(struct conn *c, __u64 want, __u64 to)
{
	if (__sync_val_compare_and_swap(&c->st.rx_ack, want, to) == want)
		dp_count(DP_FASTPATH_ACK);
}

/* parse_dss handles a DSS option; it returns nonzero when the option maps the segment's data. */
static __always_inline int parse_dss(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
				     struct sub *sb, struct mptcp_opt *o, __u32 seq, __u32 payload, __u32 window)
{
	dp_count(DP_DSS_RX);
	if (!c->st.peer_dss)
		c->st.peer_dss = 1;
	if (o->flags & DSS_FLAG_HAS_ACK) {
		__u64 old = c->st.peer_data_ack, ack, wnd_end;
		int moved = 0;

		ack = (o->flags & DSS_FLAG_ACK64) ? o->data_ack : expand32(old, o->data_ack);
		if (before64(c->ctl.snd_nxt + 1, ack)) {
			dp_count(DP_DATA_ACK_INVALID);
		} else {
			if (before64(old, ack)) {
				c->st.peer_data_ack = ack;
				dp_count(DP_DATA_ACK_RX);
				moved = 1;
			}
			/* The window is the connection's, relative to the DATA_ACK (§3.3.4). The
			 * first one replaces the window Go assumed before the peer announced any: the
			 * peer's may be smaller, and a receiver like the kernel's drops out-of-order
			 * data beyond the edge it announced (NoDSSInWindow). After that the edge only
			 * moves forward (a window is not shrunk, §3.3.4).
			 */
			wnd_end = ack + ((__u64)window << (sb->ctl.snd_wscale & 15));
			if (!c->st.peer_wnd_set || before64(c->st.peer_wnd_end, wnd_end)) {
				c->st.peer_wnd_end = wnd_end;
				c->st.peer_wnd_set = 1;
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
				dp_count(DP_MPJ_FOURTH_ACK);
				dp_emit(EV_JOIN_ACKED, s, 0, 0, 0, 0, 0);
			}
		}
	}
	if (o->flags & DSS_FLAG_HAS_MAP) {
		__u64 base = c->ctl.rcv_nxt, dsn;
		int fin = !!(o->flags & DSS_FLAG_DATA_FIN);
		__u32 len = o->data_len;

		if (before64(base, c->st.rx_ack))
			base = c->st.rx_ack;
		dsn = (o->flags & DSS_FLAG_DSN64) ? o->dsn : expand32(base, o->dsn);
		if (fin) {
			__u64 fin_dsn = dsn + len - 1;

			if (!(s->flags & SUBF_PEER_FIN)) {
				s->flags |= SUBF_PEER_FIN;
				c->st.peer_fin_dsn = fin_dsn;
				c->st.peer_fin = 1;
				dp_count(DP_DATA_FIN_RX);
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
			/* An infinite mapping: the peer fell back (§3.7). */
			dp_emit(EV_RX_MAP, s, 0, dsn, o->ssn, 1 << 18, bpf_get_socket_cookie(skops));
			return 1;
		}
		/* A mapping rides on the data it maps (§3.3.1): it must cover the segment's first
		 * byte, as the kernel's validate_mapping() requires. One on a pure ACK (but a lone
		 * DATA_FIN, above) or one that names other subflow bytes is dropped and counted: a
		 * peer could otherwise make Go keep any number of mappings for bytes never sent. The
		 * segment's data then has no mapping, and Go falls back or resets (§3.7). */
		if (!payload || seq - s->rcv_isn - o->ssn >= len - fin) {
			dp_count(DP_DSS_NO_MATCH_TCP);
			return 0;
		}
		if (!(s->flags & SUBF_RX_MAP_VALID) || s->rx_map_dsn != dsn || s->rx_map_ssn != o->ssn ||
		    s->rx_map_len != len || s->rx_map_fin != fin) {
			s->rx_map_dsn = dsn;
			s->rx_map_ssn = o->ssn;
			s->rx_map_len = len;
			s->rx_map_fin = fin;
			s->flags |= SUBF_RX_MAP_VALID;
			dp_count(DP_RX_MAP);
			dp_emit(EV_RX_MAP, s, 0, dsn, o->ssn, len | (fin << 16), 0);
		}
		return 1;
	}
	return 0;
}

static __always_inline void parse_other(struct bpf_sock_ops *skops, struct sk_sub *s, struct conn *c,
					struct mptcp_opt *o, __u32 payload, const struct optbuf *ob, __u32 off)
{
	switch (o->subtype) {
	case MPTCPOPT_MP_CAPABLE:
		if (s->role == ROLE_PASSIVE && o->len >= LEN_MPC_ACK_DATA && o->key_b == s->local_key) {
			/* The client's first data repeats MP_CAPABLE: an implicit mapping at SSN 1 and
			 * DSN IDSN+1, which Go provides once it accepted the connection. */
			__u64 dsn = (c->ctl.flags & CONNF_CAN_ACK) ? c->ctl.peer_idsn + 1 : 0;

			s->rx_map_dsn = dsn;
			if (!(s->flags & SUBF_RX_MAP_VALID) || s->rx_map_ssn != 1 || s->rx_map_len != o->data_len) {
				s->rx_map_ssn = 1;
				s->rx_map_len = o->data_len;
				s->rx_map_fin = 0;
				s->flags |= SUBF_RX_MAP_VALID;
				dp_count(DP_RX_MAP);
				dp_emit(EV_RX_MAP, s, 0, dsn, 1, o->data_len | (1 << 17), 0);
			}
			return;
		}
		if (s->role == ROLE_PASSIVE && o->len == LEN_MPC_ACK)
			return; /* a repeated third ACK */
		dp_count(DP_OPT_UNEXPECTED);
		return;
	case MPTCPOPT_MP_FASTCLOSE:
		if (o->key_a != s->local_key) {
			dp_count(DP_FASTCLOSE_BADKEY);
			return;
		}
		if (!(s->flags & SUBF_FASTCLOSE_RX)) {
			s->flags |= SUBF_FASTCLOSE_RX;
			dp_count(DP_FASTCLOSE_RX);
			dp_emit(EV_FASTCLOSE, s, 0, 0, 0, 0, 0);
		}
		return;
	case MPTCPOPT_RST:
		s->flags |= SUBF_RST_RX;
		s->rst_reason = o->reason;
		dp_count(DP_TCPRST_RX);
		dp_emit(EV_TCPRST, s, 0, o->reason, o->flags, 0, 0);
		return;
	case MPTCPOPT_MP_FAIL:
		dp_count(DP_MP_FAIL_RX);
		dp_emit(EV_MP_FAIL, s, 0, o->dsn, 0, 0, 0);
		return;
	case MPTCPOPT_ADD_ADDR:
		dp_count(DP_ADD_ADDR_RX);
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_RM_ADDR:
		dp_count(DP_RM_ADDR_RX);
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_MP_PRIO:
		dp_count(DP_MP_PRIO_RX);
		if (o->flags & MP_PRIO_FLAG_BACKUP)
			s->flags |= SUBF_PEER_BACKUP;
		else
			s->flags &= ~SUBF_PEER_BACKUP;
		dp_emit_opt(s, ob, off, o->len);
		return;
	case MPTCPOPT_MP_JOIN:
		dp_count(DP_MPJ_RX);
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

static __always_inline int on_parse_hdr(struct bpf_sock_ops *skops)
{
	struct dp_scratch *sc = dp_scratch();
	struct opt_walk w = {};
	struct sk_sub *s;
	struct conn *c;
	struct sub *sb;
	struct tcphdr th;
	__u32 payload, seg;
	int optlen, mapped = 0;

	if (!sc)
		return 1;
	s = sub_state(skops);
	if (!s || s->state != SUB_MPTCP)
		return 1;
	c = conn_of(s);
	sb = sub_of(s);
	if (!c || !sb) {
		dp_count(DP_NO_STATE);
		return 1;
	}
	optlen = copy_hdr_opts(skops, &sc->ob, &th);
	if (optlen < 0)
		return 1;
	payload = skops->skb_len - th.doff * 4;
	if (payload > skops->skb_len)
		payload = 0;
	seg = ((__u8 *)&th)[13] | (payload ? SEG_HAS_PAYLOAD : 0);
	if (seg & TCP_FLAG_ACK) {
		/* The subflow-level ACK, seen here before TCP processes it: Go's scheduler and stale
		 * detection read how far the peer acknowledged, also on a subflow that sends nothing
		 * more (the write callback alone would leave the value behind). */
		__u32 ack_rel = bpf_ntohl(th.ack_seq) - s->snd_isn, nxt_rel = skops->snd_nxt - s->snd_isn;

		if ((__s32)(ack_rel - sb->st.snd_una_rel) > 0 && (__s32)(nxt_rel - ack_rel) >= 0)
			sb->st.snd_una_rel = ack_rel;
	}
	w.len = optlen;
	for (int i = 0; i < 8; i++) {
		int n = mptcp_next_opt(&sc->ob, &w), r;
		__u32 pos;

		if (n == 0)
			break;
		if (n < 0) {
			dp_count(DP_HDR_MALFORMED);
			break;
		}
		r = mptcp_parse_opt(&sc->ob, w.pos, n, seg, &sc->opt);
		pos = w.pos;
		w.pos += n;
		if (r != PARSE_OK) {
			dp_count(DP_OPT_MALFORMED);
			continue;
		}
		if (sc->opt.subtype == MPTCPOPT_DSS) {
			if (parse_dss(skops, s, c, sb, &sc->opt, bpf_ntohl(th.seq), payload, bpf_ntohs(th.window)))
				mapped = 1;
		} else {
			parse_other(skops, s, c, &sc->opt, payload, &sc->ob, pos);
			if (sc->opt.subtype == MPTCPOPT_MP_CAPABLE)
				mapped = 1;
		}
	}
	if (!payload || (c->ctl.flags & CONNF_FALLBACK))
		return 1;
	if (!mapped && unmapped_in_order(skops, s, bpf_ntohl(th.seq), payload)) {
		/* In-order data no mapping covers: options vanished on the path. Go sends MP_FAIL and
		 * falls back (§3.7). Out-of-order data is judged when it becomes in-order, as the
		 * kernel does. */
		dp_count(DP_UNMAPPED_RX);
		if (!(s->flags & SUBF_UNMAPPED_RX)) {
			s->flags |= SUBF_UNMAPPED_RX;
			dp_emit(EV_UNMAPPED, s, 0, bpf_ntohl(th.seq) - s->rcv_isn, payload, 0, 0);
		}
		return 1;
	}
	/* In-order data is DATA_ACKed only once Go has handed it on (ctl.rcv_nxt): acknowledged
	 * data must never depend on an event that could still be lost. */
	return 1;
}

static __noinline int sockops_dispatch(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		return on_connect(skops);
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		return on_listen(skops);
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		return on_active_established(skops);
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		return on_passive_established(skops);
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		return on_hdr_len(skops);
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		return on_write_hdr(skops);
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		return on_parse_hdr(skops);
	}
	return 1;
}

SEC("sockops")
int mptcp_sockops(struct bpf_sock_ops *skops)
{
	__u32 *depth = dp_enter();
	int ret;

	if (!depth)
		return 1;
	ret = sockops_dispatch(skops);
	dp_exit(depth);
	return ret;
}

#endif
