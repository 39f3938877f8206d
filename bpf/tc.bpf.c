// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC observer: parses MPTCP options on the wire, counts them, and can capture the last segment's
 * options. It never changes or drops a packet. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

volatile const struct tc_config cfg = {};

/* Emits enum tc_counter into BTF, so that bpf2go generates its Go constants. */
const enum tc_counter *tc_counter_btf __attribute__((unused));

/* Per-CPU counters indexed by enum tc_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TC_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tc_counters SEC(".maps");

/* The options of the last segment seen, when cfg.capture is set. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture);
} tc_capture SEC(".maps");

/* Scratch space for the options copy and a parsed option (too large for the stack together). */
struct tc_scratch {
	struct optbuf buf;
	struct mptcp_opt opt;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tc_scratch);
} tc_scratch_map SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&tc_counters, &idx);

	if (v)
		*v += 1;
}

/* tcp_offset finds the TCP header; returns its offset or -1 for anything not parsed. */
static __always_inline int tcp_offset(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
			return -1;
		if (ip->ihl < 5 || (ip->frag_off & bpf_htons(0x3fff))) {
			count(TC_PKT_UNSUPPORTED);
			return -1;
		}
		return sizeof(*eth) + ip->ihl * 4;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		if (ip6->nexthdr != IPPROTO_TCP) {
			/* Extension headers are not walked (yet): count what is skipped. */
			if (ip6->nexthdr == 0 || ip6->nexthdr == 43 || ip6->nexthdr == 44 || ip6->nexthdr == 60)
				count(TC_PKT_UNSUPPORTED);
			return -1;
		}
		return sizeof(*eth) + sizeof(*ip6);
	}
	return -1;
}

SEC("tc")
int mptcp_tc_observe(struct __sk_buff *skb)
{
	struct capture *cap = NULL;
	struct tc_scratch *s;
	struct opt_walk w = {};
	struct tcphdr th;
	__u32 zero = 0, optlen, nr = 0, payload;
	__u64 olen;
	__u8 flags, seen = 0;
	int off;

	off = tcp_offset(skb);
	if (off < 0)
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)) < 0) {
		count(TC_PKT_UNSUPPORTED);
		return TCX_NEXT;
	}
	count(TC_PKTS);
	if (th.doff <= 5)
		return TCX_NEXT;
	s = bpf_map_lookup_elem(&tc_scratch_map, &zero);
	if (!s)
		return TCX_NEXT;
	olen = (__u64)th.doff * 4;
	if (olen <= sizeof(th) || olen > sizeof(th) + MAX_TCP_OPTION_SPACE)
		return TCX_NEXT;
	olen -= sizeof(th);
	w.len = olen;
	if (bpf_skb_load_bytes(skb, off + sizeof(th), s->buf.b, olen) < 0) {
		count(TC_PKT_UNSUPPORTED);
		return TCX_NEXT;
	}
	flags = ((__u8 *)&th)[13];
	payload = skb->len > off + th.doff * 4;
	if (cfg.capture) {
		cap = bpf_map_lookup_elem(&tc_capture, &zero);
		if (cap) {
			cap->nr_opts = 0;
			cap->tcp_flags = flags;
		}
	}

	for (int i = 0; i < CAPTURE_MAX_OPTS * 4; i++) {
		int r = mptcp_next_opt(&s->buf, &w);

		if (r == 0)
			break;
		if (r < 0) {
			count(TC_HDR_MALFORMED);
			break;
		}
		optlen = r;
		seen = 1;
		r = mptcp_parse_opt(&s->buf, w.pos, optlen, flags | (payload ? SEG_HAS_PAYLOAD : 0), &s->opt);
		w.pos += optlen;
		if (r == PARSE_UNKNOWN) {
			count(TC_OPT_UNKNOWN);
			continue;
		}
		if (r != PARSE_OK) {
			count(TC_OPT_MALFORMED);
			continue;
		}
		count(TC_OPT_PARSED);
		count(TC_OPT_SUBTYPE_BASE + (s->opt.subtype & 0x0f) % MPTCPOPT_NR_SUBTYPES);
		if (cap && nr < CAPTURE_MAX_OPTS) {
			cap->opts[nr & (CAPTURE_MAX_OPTS - 1)] = s->opt;
			nr++;
		}
	}
	if (seen)
		count(TC_PKTS_MPTCP);
	if (cap) {
		cap->nr_opts = nr;
		__sync_fetch_and_add(&cap->seq, 1);
	}
	return TCX_NEXT;
}
