/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TC on our interfaces: SACK and AccECN in our subflows' SYNs; the rewrite of our segments whose
 * SACK blocks crowd out the DSS (sack_tc.h); the MPTCP options of resets on ingress; and an
 * MP_JOIN SYN for an unknown token answered with a reset on ingress.
 *
 * SACK: the kernel lays out TCP options as timestamps, then SACK blocks, then BPF options, so
 * SACK blocks can leave no room for a DSS. Our subflows negotiate SACK only where our TC egress
 * program sees their segments, to rewrite those (sack_rw.h):
 *  - egress: our connecting socket's SYN is marked (SUBTC_SYN_OUT) and keeps SACK-permitted;
 *  - ingress: a SYN/ACK for a connecting socket whose SYN was not marked (it left by a device
 *    without our program) loses SACK-permitted, so that subflow runs without SACK as before;
 *  - a SYN for our listener keeps it: it came in on a device with our programs, and the answer
 *    and the subflow's segments leave by it.
 * AccECN (its option takes room between SACK and BPF options) is kept off our subflows: the AE
 * flag is cleared from our SYNs on egress and from SYNs for our listeners on ingress, which
 * turns an AccECN request into a classic ECN one.
 * Only segments of our registered sockets are touched; nothing host-wide changes.
 *
 * An MP_JOIN SYN naming a token we do not know is refused as the kernel refuses it
 * (subflow_v4_route_req: MPTCP_MIB_JOINNOTOKEN, then a reset with MP_TCPRST reason
 * MPTCP_RST_EMPTCP): by the time sock_ops sees the SYN the kernel has committed to a SYN/ACK, so
 * the SYN is turned into that reset here and sent back out of the interface it came in on.
 */
#ifndef MPTCPGO_SYN_TC_H
#define MPTCPGO_SYN_TC_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "mptcp_parse.h"
#include "sack_tc.h"
#include "sockops_common.h"
#include "datapath_maps.h"
#include "synkey.h"
#include "opt_write.h"

#define TCPOPT_SACK_PERM 4
#define TCPOLEN_SACK_PERM 2

/* ours_egress returns the state of our connecting socket (the first subflow's or a join's) an
 * outgoing SYN belongs to, or NULL. */
static __always_inline struct sk_sub *ours_egress(struct bpf_sock *sk)
{
	struct bpf_sock *fsk = bpf_sk_fullsock(sk);
	struct sk_sub *s;

	if (!fsk)
		return NULL;
	s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
	if (s && (s->role == ROLE_ACTIVE || s->role == ROLE_JOIN_ACTIVE) && s->state == SUB_SYN_SENT)
		return s;
	return NULL;
}

/* ours reports whether the socket an incoming segment is for is one of our registered sockets:
 * its role (ROLE_LISTENER, or ROLE_ACTIVE or ROLE_JOIN_ACTIVE in SYN_SENT), or ROLE_NONE; and
 * its tc_flags in *tcf. */
static __always_inline int ours(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u8 *tcf)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
	struct bpf_sock *fsk;
	struct sk_sub *s;
	int ret = ROLE_NONE;

	if (!sk)
		return ROLE_NONE;
	fsk = bpf_sk_fullsock(sk);
	if (fsk) {
		s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
		if (s && (s->role == ROLE_LISTENER ||
			  ((s->role == ROLE_ACTIVE || s->role == ROLE_JOIN_ACTIVE) && s->state == SUB_SYN_SENT))) {
			ret = s->role;
			*tcf = s->tc_flags;
		}
	}
	bpf_sk_release(sk);
	return ret;
}

/* join_no_token reports whether the options of a SYN (in sc->ob) carry an MP_JOIN whose token is
 * not in the tokens map. A malformed MP_JOIN is not a join (the kernel ignores it as well). */
static __always_inline int join_no_token(struct dp_scratch *sc, __u64 olen)
{
	struct opt_walk w = {.pos = 0, .len = olen};

	for (int i = 0; i < 4; i++) {
		int n = mptcp_next_opt(&sc->ob, &w);

		if (n <= 0)
			break;
		if (mptcp_parse_opt(&sc->ob, w.pos, n, TCP_FLAG_SYN, &sc->opt) == PARSE_OK &&
		    sc->opt.subtype == MPTCPOPT_MP_JOIN) {
			__u32 token = sc->opt.token;

			return n == LEN_MPJ_SYN && !bpf_map_lookup_elem(&tokens, &token);
		}
		w.pos += n;
	}
	return 0;
}

#define RST_TTL 64          /* TTL or hop limit of the resets we send (the kernel's default) */
#define TCP_HDR_MAX 60      /* a TCP header with the largest option area */
#define MPTCP_RST_EMPTCP 1  /* MP_TCPRST reason: MPTCP-specific error (RFC 8684 §3.6) */

/* reset_ip_hdr turns the IP header of a SYN join_reset answers into the reset's: addresses
 * swapped, TTL or hop limit RST_TTL. Returns -1 when the packet could not be rewritten. */
static __always_inline int reset_ip_hdr(struct __sk_buff *skb, int v6)
{
	__s64 diff;

	if (v6) {
		__u8 addrs[32], swapped[32], hop = RST_TTL;
		__u32 off = sizeof(struct ethhdr) + offsetof(struct ipv6hdr, saddr);

		if (bpf_skb_load_bytes(skb, off, addrs, sizeof(addrs)) < 0)
			return -1;
		__builtin_memcpy(swapped, addrs + 16, 16);
		__builtin_memcpy(swapped + 16, addrs, 16);
		if (bpf_skb_store_bytes(skb, off, swapped, sizeof(swapped), 0) < 0 ||
		    bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, hop_limit), &hop, 1, 0) < 0)
			return -1;
	} else {
		struct iphdr oip, nip;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &oip, sizeof(oip)) < 0)
			return -1;
		nip = oip;
		nip.saddr = oip.daddr;
		nip.daddr = oip.saddr;
		nip.ttl = RST_TTL;
		diff = bpf_csum_diff((__be32 *)&oip, sizeof(oip), (__be32 *)&nip, sizeof(nip), 0);
		if (diff < 0 || bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &nip, sizeof(nip), 0) < 0 ||
		    bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check), 0, diff, 0) < 0)
			return -1;
	}
	return 0;
}

/* hl_rebound returns a TCP header length its caller has checked to lie in [20, TCP_HDR_MAX],
 * with those bounds made known to the verifier again. Linux 6.1's verifier forgets the bounds of
 * a 32-bit value the compiler spilled to the stack and reloads (later verifiers keep them), so
 * a helper taking hl as a size would be refused there; checking again after the reload, behind
 * an empty asm that keeps the compiler from dropping a check it can prove redundant, restores
 * them. */
static __always_inline __u32 hl_rebound(__u32 hl)
{
	asm volatile("" : "+r"(hl));
	if (hl < sizeof(struct tcphdr))
		hl = sizeof(struct tcphdr);
	if (hl > TCP_HDR_MAX)
		hl = TCP_HDR_MAX;
	return hl;
}

/* join_reset turns an incoming SYN (no payload; its TCP header at l4, hl bytes long) into the
 * reset the kernel answers an MP_JOIN for an unknown token with, and sends it back out of the
 * interface it came in on: addresses and ports swapped; RST|ACK with seq 0 and ack the SYN's
 * seq + 1 (RFC 9293 §3.10.7.1); window 0; MP_TCPRST with reason MPTCP-specific error and no T
 * flag, then NOPs over the rest of the option area, so the packet keeps its length.
 *
 * Checksums: swapping addresses, ports and Ethernet addresses leaves every ones'-complement
 * sum as it was (the pseudo-header's included); the IPv4 header checksum absorbs the TTL, the TCP
 * checksum the rest of the TCP header. bpf_l4_csum_replace leaves a CHECKSUM_PARTIAL
 * packet's pseudo-header sum alone, as it should. The bytes are stored without
 * BPF_F_RECOMPUTE_CSUM: with the checksum fields compensating, the packet's sum (skb->csum of a
 * CHECKSUM_COMPLETE packet) does not change.
 *
 * Returns the TC verdict: a redirect, or a drop when a half-rewritten packet cannot be finished. */
static __always_inline int join_reset(struct __sk_buff *skb, __u32 l4, int v6, __u32 hl)
{
	__u8 oldh[TCP_HDR_MAX] = {}, newh[TCP_HDR_MAX];
	__u8 mac[2 * ETH_ALEN], mac2[2 * ETH_ALEN];
	__u32 seq;
	__s64 diff;

	if (hl < sizeof(struct tcphdr) + LEN_MP_TCPRST || hl > TCP_HDR_MAX || (hl & 3))
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, l4, oldh, hl_rebound(hl)) < 0 || bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)) < 0)
		return TCX_NEXT;

	/* The TCP header and options. */
	__builtin_memcpy(newh, oldh, sizeof(struct tcphdr));
	__builtin_memset(newh + sizeof(struct tcphdr), TCPOPT_NOP, TCP_HDR_MAX - sizeof(struct tcphdr));
	__builtin_memcpy(newh + 0, oldh + 2, 2); /* source port */
	__builtin_memcpy(newh + 2, oldh + 0, 2); /* destination port */
	__builtin_memcpy(&seq, oldh + 4, 4);
	seq = bpf_htonl(bpf_ntohl(seq) + 1);
	__builtin_memset(newh + 4, 0, 4);        /* seq */
	__builtin_memcpy(newh + 8, &seq, 4);     /* ack */
	newh[12] = oldh[12] & 0xf0;              /* data offset kept, reserved bits cleared */
	newh[13] = TCP_FLAG_RST | TCP_FLAG_ACK;
	__builtin_memset(newh + 14, 0, 2);       /* window */
	__builtin_memset(newh + 18, 0, 2);       /* urgent pointer; the checksum (16) is fixed below */
	newh[20] = TCPOPT_MPTCP;
	newh[21] = LEN_MP_TCPRST;
	newh[22] = MPTCPOPT_RST << 4;            /* flags: not transient */
	newh[23] = MPTCP_RST_EMPTCP;
	hl = hl_rebound(hl);
	diff = bpf_csum_diff((__be32 *)oldh, hl, (__be32 *)newh, hl, 0);
	if (diff < 0)
		return TCX_NEXT;
	if (bpf_skb_store_bytes(skb, l4, newh, hl_rebound(hl), 0) < 0)
		return TCX_NEXT; /* nothing changed yet: the SYN goes on */
	if (bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), 0, diff, 0) < 0)
		return TC_ACT_SHOT;

	/* The IP header. */
	if (reset_ip_hdr(skb, v6) < 0)
		return TC_ACT_SHOT;

	/* The Ethernet addresses. */
	__builtin_memcpy(mac2, mac + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(mac2 + ETH_ALEN, mac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, mac2, sizeof(mac2), 0) < 0)
		return TC_ACT_SHOT;
	dp_count(DP_MPJoinNoTokenFound);
	return bpf_redirect(skb->ifindex, 0);
}

/* rst_opts reads MP_FASTCLOSE and MP_TCPRST on a reset for one of our subflows. The kernel
 * handles a RST before the sock_ops parse callback would run, so TC is where they can be seen. */
static __always_inline void rst_opts(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u32 optoff,
				     __u64 olen, __u8 tcp_flags)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
	struct opt_walk w = {.pos = 0, .len = olen};
	struct dp_scratch *sc;
	struct bpf_sock *fsk;
	struct sk_sub *s;

	if (!sk)
		return;
	fsk = bpf_sk_fullsock(sk);
	if (!fsk)
		goto out;
	s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
	sc = dp_scratch();
	if (!s || s->state != SUB_MPTCP || !sc || olen > MAX_TCP_OPTION_SPACE || olen < 1)
		goto out;
	if (bpf_skb_load_bytes(skb, optoff, sc->ob.b, olen) < 0)
		goto out;
	for (int i = 0; i < 4; i++) {
		int n = mptcp_next_opt(&sc->ob, &w);

		if (n <= 0)
			break;
		if (mptcp_parse_opt(&sc->ob, w.pos, n, tcp_flags, &sc->opt) == PARSE_OK) {
			if (sc->opt.subtype == MPTCPOPT_MP_FASTCLOSE) {
				if (sc->opt.key_a != s->local_key) {
					dp_count(DP_MPFastcloseBadKey);
				} else if (!(s->flags & SUBF_FASTCLOSE_RX)) {
					s->flags |= SUBF_FASTCLOSE_RX;
					dp_count(DP_MPFastcloseRx);
					dp_emit(EV_FASTCLOSE, s, 0, 0, 0, 0, 0);
				}
			} else if (sc->opt.subtype == MPTCPOPT_RST) {
				s->flags |= SUBF_RST_RX;
				s->rst_reason = sc->opt.reason;
				dp_count(DP_MPRstRx);
				dp_emit(EV_TCPRST, s, 0, sc->opt.reason, sc->opt.flags, 0, 0);
			}
		}
		w.pos += n;
	}
out:
	bpf_sk_release(sk);
}

/* A segment's addresses and where its TCP header lies. */
struct tc_seg {
	struct bpf_sock_tuple t; /* for socket lookups */
	__u32 tlen;              /* the size of t's address family */
	__u32 l4;                /* offset of the TCP header */
	__u32 l4len;             /* the TCP header and payload's length, from the IP header */
	int v6;
};

/* tcp_seg finds the TCP header of an Ethernet frame (IPv4 without IP options, or IPv6 without
 * extension headers) and fills g; returns the header, or NULL for anything else. */
static __always_inline struct tcphdr *tcp_seg(struct __sk_buff *skb, struct tc_seg *g)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *th;

	if ((void *)(eth + 1) > end)
		return NULL;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
			return NULL;
		th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return NULL;
		g->t.ipv4.saddr = ip->saddr;
		g->t.ipv4.daddr = ip->daddr;
		g->t.ipv4.sport = th->source;
		g->t.ipv4.dport = th->dest;
		g->tlen = sizeof(g->t.ipv4);
		g->l4 = sizeof(*eth) + sizeof(*ip);
		g->l4len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return NULL;
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > end)
			return NULL;
		__builtin_memcpy(g->t.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(g->t.ipv6.daddr, &ip6->daddr, 16);
		g->t.ipv6.sport = th->source;
		g->t.ipv6.dport = th->dest;
		g->tlen = sizeof(g->t.ipv6);
		g->l4 = sizeof(*eth) + sizeof(*ip6);
		g->l4len = bpf_ntohs(ip6->payload_len);
		g->v6 = 1;
	} else {
		return NULL;
	}
	return th;
}

/* tfo_ingress reads, off an incoming segment without SYN (hl bytes of header, olen of options,
 * at g), the MP_CAPABLE of a TCP Fast Open client whose child waits for it, into the child's
 * storage. It looks only while some child waits. */
static __always_inline void tfo_ingress(struct __sk_buff *skb, struct tc_seg *g, __u32 hl, __u64 olen)
{
	struct dp_scratch *sc;
	struct bpf_sock *sk, *fsk;
	struct sk_sub *s;
	__u32 k = 0;
	__s64 *w;
	int payload;

	w = bpf_map_lookup_elem(&tfo_waiting, &k);
	if (!w || *w <= 0 || olen < LEN_MPC_ACK || olen > MAX_TCP_OPTION_SPACE)
		return;
	sc = dp_scratch();
	if (!sc || bpf_skb_load_bytes(skb, g->l4 + sizeof(struct tcphdr), sc->ob.b, olen) < 0)
		return;
	payload = g->l4len > hl;
	if (!find_mpc(sc, olen, TCP_FLAG_ACK | (payload ? SEG_HAS_PAYLOAD : 0)))
		return;
	/* The tuple's length as a constant: the verifier loses the bound of g->tlen. */
	sk = bpf_skc_lookup_tcp(skb, &g->t, g->v6 ? sizeof(g->t.ipv6) : sizeof(g->t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return;
	fsk = bpf_sk_fullsock(sk);
	s = fsk ? bpf_sk_storage_get(&sk_subs, fsk, 0, 0) : NULL;
	if (s && s->state == SUB_TFO_WAIT && !(s->tc_flags & SUBTC_TFO_KEY)) {
		if (sc->opt.key_b == s->local_key) {
			__u8 f = SUBTC_TFO_KEY;

			s->remote_key = sc->opt.key_a;
			if (sc->opt.flags & MPC_FLAG_CHECKSUM)
				f |= SUBTC_TFO_CSUM;
			if (payload && sc->opt.len >= LEN_MPC_ACK_DATA) {
				s->rx_map_len = sc->opt.data_len;
				s->remote_nonce = sc->opt.has_csum ? 0x10000 | sc->opt.csum : 0;
				f |= SUBTC_TFO_DATA;
			}
			s->tc_flags |= f;
			dp_count(DP_TFOKeyRx);
		} else {
			dp_count(DP_MPCapableACKBadKey);
		}
	}
	bpf_sk_release(sk);
}

#define TCPOPT_TS 8
#define TCPOLEN_TS 10

#define TCPOPT_FASTOPEN 34
#define TCPOLEN_FASTOPEN_8 10 /* kind, length, an 8-byte cookie */

/* synack_sack_in_padding moves SACK-permitted, which synack_make_room overwrote, into the two
 * NOPs that pad an 8-byte Fast Open cookie (sc->ob holds the options as they were), so that
 * only the timestamps are lost, as with the kernel's MPTCP. */
static __always_inline void synack_sack_in_padding(struct __sk_buff *skb, struct tc_seg *g, struct dp_scratch *sc,
						   __u64 olen)
{
	struct opt_walk w = {.pos = 0, .len = olen};
	__be32 oldw, neww;
	__u32 word;
	__s64 diff;
	int size = tcp_next_opt(&sc->ob, &w, TCPOPT_FASTOPEN);

	if (size != TCPOLEN_FASTOPEN_8 || w.pos + TCPOLEN_FASTOPEN_8 + 2 > olen)
		return;
	/* The padding is the last two bytes of the 4-byte word that ends the cookie. */
	word = w.pos + TCPOLEN_FASTOPEN_8 - 2;
	if (((sizeof(struct tcphdr) + word) & 3) || word > MAX_TCP_OPTION_SPACE - 4)
		return;
	if (bpf_skb_load_bytes(skb, g->l4 + sizeof(struct tcphdr) + word, &oldw, 4) < 0)
		return;
	if (((__u8 *)&oldw)[2] != TCPOPT_NOP || ((__u8 *)&oldw)[3] != TCPOPT_NOP)
		return;
	neww = oldw;
	((__u8 *)&neww)[2] = TCPOPT_SACK_PERM;
	((__u8 *)&neww)[3] = TCPOLEN_SACK_PERM;
	diff = bpf_csum_diff(&oldw, 4, &neww, 4, 0);
	if (diff < 0)
		return;
	if (bpf_skb_store_bytes(skb, g->l4 + sizeof(struct tcphdr) + word, &neww, 4, BPF_F_RECOMPUTE_CSUM) < 0)
		return;
	bpf_l4_csum_replace(skb, g->l4 + 16, 0, diff, 0);
}

/* synack_make_room gives our MP_CAPABLE the room it did not find on a SYN/ACK of our listener (g, th,
 * olen bytes of options) that sock_ops recorded in synack_room: a TCP Fast Open cookie beside
 * MSS, SACK-permitted, timestamps and window scale leaves 8 bytes, ours takes 12. The kernel's
 * MPTCP drops its timestamps there (RFC 8684 Appendix B); so do we: their 12-byte word, which
 * may hold SACK-permitted too, becomes our option, keyed as sock_ops keys every SYN/ACK
 * (synack_key), and SACK-permitted moves into the cookie's padding. The listener's child still
 * believes in timestamps; the client, which did not see them, sends none, and ignores the
 * child's. */
static __always_inline void synack_make_room(struct __sk_buff *skb, struct tc_seg *g, struct tcphdr *th, __u64 olen)
{
	struct opt_walk w = {.pos = 0, .len = olen};
	struct synkey_in *in;
	struct dp_scratch *sc;
	__be32 oldw[3], neww[3];
	__u32 *csum, isn, word;
	__s64 diff;
	__u64 key;
	int size, sack;

	sc = dp_scratch();
	if (!sc || olen < 12 || olen > MAX_TCP_OPTION_SPACE)
		return;
	in = &sc->key_in;
	__builtin_memset(in, 0, sizeof(*in));
	if (g->v6) {
		in->version = 6;
		__builtin_memcpy(in->local_ip, g->t.ipv6.saddr, 16);
		__builtin_memcpy(in->remote_ip, g->t.ipv6.daddr, 16);
	} else {
		in->version = 4;
		in->local_ip[0] = g->t.ipv4.saddr;
		in->remote_ip[0] = g->t.ipv4.daddr;
	}
	in->local_port = bpf_ntohs(th->source);
	in->remote_port = bpf_ntohs(th->dest);
	isn = bpf_ntohl(th->ack_seq) - 1;
	csum = bpf_map_lookup_elem(&synack_room, in);
	if (!csum)
		return;
	if (bpf_skb_load_bytes(skb, g->l4 + sizeof(struct tcphdr), sc->ob.b, olen) < 0)
		return;
	if (find_opt(sc, olen, TCP_FLAG_SYN | TCP_FLAG_ACK, MPTCPOPT_MP_CAPABLE))
		return; /* it had room after all: a later connection on the same ports */
	size = tcp_next_opt(&sc->ob, &w, TCPOPT_TS);
	if (size != TCPOLEN_TS || w.pos < 2 || w.pos + TCPOLEN_TS > olen)
		return;
	/* The timestamps' 12-byte word: NOP NOP TS, or SACK-permitted TS. */
	word = w.pos - 2;
	if (((sizeof(struct tcphdr) + word) & 3) || word > MAX_TCP_OPTION_SPACE - 12)
		return;
	if (bpf_skb_load_bytes(skb, g->l4 + sizeof(struct tcphdr) + word, oldw, 12) < 0)
		return;
	{
		__u8 b0 = ((__u8 *)oldw)[0], b1 = ((__u8 *)oldw)[1];

		if (!((b0 == TCPOPT_NOP && b1 == TCPOPT_NOP) || (b0 == TCPOPT_SACK_PERM && b1 == TCPOLEN_SACK_PERM)))
			return;
		sack = b0 == TCPOPT_SACK_PERM;
	}
	in->client_isn = isn;
	key = synkey_derive(&sc->hmac, dp_cfg.synkey_secret, in);
	if (!key)
		return;
	build_mpc(sc->out, LEN_MPC_SYNACK, *csum, key, 0, 0, 0);
	__builtin_memcpy(neww, sc->out, 12);
	diff = bpf_csum_diff(oldw, 12, neww, 12, 0);
	if (diff < 0)
		return;
	if (bpf_skb_store_bytes(skb, g->l4 + sizeof(struct tcphdr) + word, neww, 12, BPF_F_RECOMPUTE_CSUM) < 0)
		return;
	bpf_l4_csum_replace(skb, g->l4 + 16, 0, diff, 0);
	dp_count(DP_SynAckRoomMade);
	dp_count(DP_MPCapableSYNACKTX);
	/* Done for this SYN/ACK (sock_ops records a retransmission again): a later connection on
	 * these ports must not inherit it. */
	bpf_map_delete_elem(&synack_room, in);
	if (sack)
		synack_sack_in_padding(skb, g, sc, olen);
}

/* strip_sack_perm finds SACK-permitted among a SYN/ACK's olen bytes of options (copied to sc->ob)
 * and overwrites it with two NOPs, fixing the checksum over the two 16-bit words it may
 * straddle. */
static __always_inline void strip_sack_perm(struct __sk_buff *skb, struct dp_scratch *sc, __u32 l4, __u64 olen)
{
	struct opt_walk w = {.pos = 0, .len = olen};

	for (int i = 0; i < MAX_TCP_OPTS_WALK; i++) {
		__u32 pos, word;
		__be32 oldw[2], neww[2];
		__s64 diff;
		int size = tcp_next_opt(&sc->ob, &w, TCPOPT_SACK_PERM);

		if (size <= 0)
			break;
		pos = w.pos;
		if (size != TCPOLEN_SACK_PERM) {
			w.pos = pos + size;
			continue;
		}
		/* The 8 aligned bytes (relative to the TCP header) around the option. */
		word = (sizeof(struct tcphdr) + pos) & ~3U;
		if (word + 8 > sizeof(struct tcphdr) + olen)
			word = sizeof(struct tcphdr) + olen - 8;
		if (word > 52 || bpf_skb_load_bytes(skb, l4 + word, oldw, 8) < 0)
			break;
		{
			/* Bytes in memory order in a little-endian word: byte k is bits 8k..8k+7. */
			__u64 v, b0 = ((sizeof(struct tcphdr) + pos - word) & 7) * 8,
				 b1 = ((sizeof(struct tcphdr) + pos + 1 - word) & 7) * 8;

			__builtin_memcpy(&v, oldw, 8);
			v = (v & ~(0xffULL << b0)) | ((__u64)TCPOPT_NOP << b0);
			v = (v & ~(0xffULL << b1)) | ((__u64)TCPOPT_NOP << b1);
			__builtin_memcpy(neww, &v, 8);
		}
		diff = bpf_csum_diff(oldw, 8, neww, 8, 0);
		if (diff < 0)
			break;
		if (bpf_skb_store_bytes(skb, l4 + word, neww, 8, BPF_F_RECOMPUTE_CSUM) < 0)
			break;
		bpf_l4_csum_replace(skb, l4 + 16, 0, diff, 0);
		dp_count(DP_SackPermStripped);
		break;
	}
}

/* TCP_FLAG_AE is the AccECN flag (RFC 9768), the low bit of byte 12 of the TCP header. */
#define TCP_BYTE12_AE 0x01

/* clear_ae clears the AE flag of the SYN whose TCP header is at l4, fixing its checksum. */
static __always_inline void clear_ae(struct __sk_buff *skb, __u32 l4)
{
	__be16 oldw, neww;

	if (bpf_skb_load_bytes(skb, l4 + 12, &oldw, 2) < 0 || !(((__u8 *)&oldw)[0] & TCP_BYTE12_AE))
		return;
	neww = oldw;
	((__u8 *)&neww)[0] &= ~TCP_BYTE12_AE;
	if (bpf_skb_store_bytes(skb, l4 + 12, &neww, 2, 0) < 0)
		return;
	bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), oldw, neww, 2);
	dp_count(DP_AccEcnCleared);
}

/* syn_opts handles a segment on our interface, in either direction; returns the TC verdict. */
static __always_inline int syn_opts(struct __sk_buff *skb, int egress)
{
	struct tc_seg g = {};
	struct tcphdr *th;
	struct dp_scratch *sc;
	int role = ROLE_NONE;
	__u8 tcf = 0;
	__u32 hl;
	__u64 olen;

	th = tcp_seg(skb, &g);
	if (!th)
		return TCX_NEXT;
	olen = (__u64)th->doff * 4;
	if (olen <= sizeof(*th) || olen > sizeof(*th) + MAX_TCP_OPTION_SPACE)
		return TCX_NEXT;
	hl = olen;
	olen -= sizeof(*th);
	if (th->rst) {
		if (!egress)
			rst_opts(skb, &g.t, g.tlen, g.l4 + sizeof(*th), olen, ((__u8 *)th)[13]);
		return TCX_NEXT;
	}
	if (!th->syn) {
		/* Only a full header can hold SACK blocks that crowded out the DSS (est_tx.h). */
		if (egress && hl == TCP_HDR_MAX)
			sack_egress(skb, g.l4, bpf_ntohl(th->seq));
		if (!egress)
			tfo_ingress(skb, &g, hl, olen);
		return TCX_NEXT;
	}
	if (egress) {
		/* Locally sent: only our own connecting sockets' SYNs. They keep SACK-permitted:
		 * this program sees the subflow's segments and rewrites them. */
		struct bpf_sock *own = skb->sk;
		struct sk_sub *s;

		if (th->ack) {
			synack_make_room(skb, &g, th, olen);
			return TCX_NEXT;
		}
		if (!own)
			return TCX_NEXT;
		s = ours_egress(own);
		if (!s)
			return TCX_NEXT;
		s->tc_flags |= SUBTC_SYN_OUT;
		clear_ae(skb, g.l4);
		return TCX_NEXT;
	}
	/* skb->sk can still name the sender here (veth keeps it), so look the receiver up. */
	role = ours(skb, &g.t, g.tlen, &tcf);
	if (role == ROLE_NONE)
		return TCX_NEXT;
	sc = dp_scratch();
	if (!sc)
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, g.l4 + sizeof(*th), sc->ob.b, olen) < 0)
		return TCX_NEXT;

	/* An MP_JOIN SYN to our listener for a connection we do not have. A SYN with data is left
	 * alone (MP_JOIN never carries any; the reset would have to lose it): sock_ops counts it. */
	if (!egress && role == ROLE_LISTENER && !th->ack && !th->fin && g.l4len == hl &&
	    join_no_token(sc, olen))
		return join_reset(skb, g.l4, g.v6, hl);

	if (role == ROLE_LISTENER) {
		if (!th->ack)
			clear_ae(skb, g.l4);
		return TCX_NEXT;
	}
	/* A SYN/ACK for a connecting socket whose SYN left by a device without our program. */
	if (!(tcf & SUBTC_SYN_OUT))
		strip_sack_perm(skb, sc, g.l4, olen);
	return TCX_NEXT;
}

#endif
