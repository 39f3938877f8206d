/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TC: remove SACK-permitted from the SYNs of our subflows, both ways; read the MPTCP options of
 * resets on ingress.
 *
 * The kernel lays out TCP options as timestamps, then SACK blocks, then BPF options. With data
 * flowing both ways under loss, SACK blocks leave no room for a DSS, data goes out unmapped and
 * the peer falls back (DESIGN.md, hard part 2). So SACK is not negotiated on our subflows:
 *  - egress: our connecting socket's SYN leaves without SACK-permitted, so the peer knows;
 *  - ingress: a SYN for our listener arrives without it (our kernel then answers without it),
 *    and so does a SYN/ACK for our connecting socket, should a peer offer it anyway.
 * Only segments of our registered sockets are touched; nothing host-wide changes.
 */
#ifndef MPTCPGO_SYNOPTS_H
#define MPTCPGO_SYNOPTS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath_maps.h"

#define TCPOPT_SACK_PERM 4
#define TCPOLEN_SACK_PERM 2

/* ours_egress reports whether an outgoing SYN is one of our connecting sockets' (the first
 * subflow's or a join's). */
static __always_inline int ours_egress(struct bpf_sock *sk)
{
	struct bpf_sock *fsk = bpf_sk_fullsock(sk);
	struct sk_sub *s;

	if (!fsk)
		return 0;
	s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
	return s && (s->role == ROLE_ACTIVE || s->role == ROLE_JOIN_ACTIVE) && s->state == SUB_SYN_SENT;
}

/* ours reports whether the socket an incoming segment is for is one of our registered sockets. */
static __always_inline int ours(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
	struct bpf_sock *fsk;
	struct sk_sub *s;
	int ret = 0;

	if (!sk)
		return 0;
	fsk = bpf_sk_fullsock(sk);
	if (fsk) {
		s = bpf_sk_storage_get(&sk_subs, fsk, 0, 0);
		ret = s && (s->role == ROLE_LISTENER ||
			    ((s->role == ROLE_ACTIVE || s->role == ROLE_JOIN_ACTIVE) && s->state == SUB_SYN_SENT));
	}
	bpf_sk_release(sk);
	return ret;
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
					dp_count(DP_FASTCLOSE_BADKEY);
				} else if (!(s->flags & SUBF_FASTCLOSE_RX)) {
					s->flags |= SUBF_FASTCLOSE_RX;
					dp_count(DP_FASTCLOSE_RX);
					dp_emit(EV_FASTCLOSE, s, 0, 0, 0, 0, 0);
				}
			} else if (sc->opt.subtype == MPTCPOPT_RST) {
				s->flags |= SUBF_RST_RX;
				s->rst_reason = sc->opt.reason;
				dp_count(DP_TCPRST_RX);
				dp_emit(EV_TCPRST, s, 0, sc->opt.reason, sc->opt.flags, 0, 0);
			}
		}
		w.pos += n;
	}
out:
	bpf_sk_release(sk);
}

static __always_inline int syn_opts(struct __sk_buff *skb, int egress)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct bpf_sock_tuple t = {};
	struct tcphdr *th;
	__u32 tlen, l4;
	struct dp_scratch *sc;
	__u64 olen;

	if ((void *)(eth + 1) > end)
		return TCX_NEXT;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
			return TCX_NEXT;
		th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return TCX_NEXT;
		t.ipv4.saddr = ip->saddr;
		t.ipv4.daddr = ip->daddr;
		t.ipv4.sport = th->source;
		t.ipv4.dport = th->dest;
		tlen = sizeof(t.ipv4);
		l4 = sizeof(*eth) + sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return TCX_NEXT;
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > end)
			return TCX_NEXT;
		__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
		t.ipv6.sport = th->source;
		t.ipv6.dport = th->dest;
		tlen = sizeof(t.ipv6);
		l4 = sizeof(*eth) + sizeof(*ip6);
	} else {
		return TCX_NEXT;
	}
	olen = (__u64)th->doff * 4;
	if (olen <= sizeof(*th) || olen > sizeof(*th) + MAX_TCP_OPTION_SPACE)
		return TCX_NEXT;
	olen -= sizeof(*th);
	if (th->rst) {
		if (!egress)
			rst_opts(skb, &t, tlen, l4 + sizeof(*th), olen, ((__u8 *)th)[13]);
		return TCX_NEXT;
	}
	if (!th->syn)
		return TCX_NEXT;
	if (egress) {
		/* Locally sent: only our own connecting sockets' SYNs. */
		struct bpf_sock *own = skb->sk;

		if (th->ack || !own || !ours_egress(own))
			return TCX_NEXT;
	} else if (!ours(skb, &t, tlen)) {
		/* skb->sk can still name the sender here (veth keeps it), so look the receiver up. */
		return TCX_NEXT;
	}
	sc = dp_scratch();
	if (!sc)
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, l4 + sizeof(*th), sc->ob.b, olen) < 0)
		return TCX_NEXT;

	/* Find SACK-permitted and overwrite it with two NOPs, fixing the checksum over the two
	 * 16-bit words it may straddle. */
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
			word = (sizeof(*th) + pos) & ~3U;
			if (word + 8 > sizeof(*th) + olen)
				word = sizeof(*th) + olen - 8;
			if (word > 52 || bpf_skb_load_bytes(skb, l4 + word, oldw, 8) < 0)
				break;
			{
				/* Bytes in memory order in a little-endian word: byte k is bits 8k..8k+7. */
				__u64 v, b0 = ((sizeof(*th) + pos - word) & 7) * 8, b1 = ((sizeof(*th) + pos + 1 - word) & 7) * 8;

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
			dp_count(DP_SACK_STRIPPED);
			break;
		}
	}
	return TCX_NEXT;
}

static __always_inline int syn_opts_entry(struct __sk_buff *skb, int egress)
{
	__u32 *depth = dp_enter();
	int ret;

	if (!depth)
		return TCX_NEXT;
	ret = syn_opts(skb, egress);
	dp_exit(depth);
	return ret;
}

SEC("tc")
int mptcp_syn_opts_in(struct __sk_buff *skb)
{
	return syn_opts_entry(skb, 0);
}

SEC("tc")
int mptcp_syn_opts_out(struct __sk_buff *skb)
{
	return syn_opts_entry(skb, 1);
}

#endif
