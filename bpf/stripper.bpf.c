// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test middlebox: while enabled, overwrites every MPTCP option of the TCP segments it sees (IPv4
 * without IP options, IPv6 without extension headers) with NOPs and fixes the checksum, as a
 * middlebox that strips unknown options would. */
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

/* Index 0: nonzero to strip. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} strip_on SEC(".maps");

/* Index 0: segments whose MPTCP options were removed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} strip_stats SEC(".maps");

struct strip_buf {
	struct optbuf old;
	struct optbuf new;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct strip_buf);
} strip_scratch SEC(".maps");

SEC("tc")
int strip_mptcp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *th;
	struct opt_walk w = {};
	struct strip_buf *sb;
	__u32 zero = 0, *on, l4, found = 0;
	__u64 olen, *v;
	__s64 diff;

	on = bpf_map_lookup_elem(&strip_on, &zero);
	if (!on || !*on)
		return TCX_NEXT;
	if ((void *)(eth + 1) > end)
		return TCX_NEXT;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP)
			return TCX_NEXT;
		l4 = sizeof(*eth) + sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		/* No extension headers: the TCP header follows the fixed one. */
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return TCX_NEXT;
		l4 = sizeof(*eth) + sizeof(*ip6);
	} else {
		return TCX_NEXT;
	}
	th = data + l4;
	if ((void *)(th + 1) > end)
		return TCX_NEXT;
	olen = (__u64)th->doff * 4;
	if (olen <= sizeof(*th) || olen > sizeof(*th) + MAX_TCP_OPTION_SPACE)
		return TCX_NEXT;
	olen -= sizeof(*th);
	sb = bpf_map_lookup_elem(&strip_scratch, &zero);
	if (!sb || bpf_skb_load_bytes(skb, l4 + sizeof(*th), sb->old.b, olen) < 0)
		return TCX_NEXT;
	__builtin_memcpy(&sb->new, &sb->old, sizeof(sb->new));
	w.len = olen;
	for (int i = 0; i < 8; i++) {
		int n = mptcp_next_opt(&sb->old, &w);

		if (n <= 0)
			break;
		for (int k = 0; k < MAX_TCP_OPTION_SPACE; k++) {
			if (k >= n)
				break;
			sb->new.b[ob_idx(w.pos + k)] = TCPOPT_NOP;
		}
		w.pos += n;
		found = 1;
	}
	if (!found)
		return TCX_NEXT;
	diff = bpf_csum_diff((void *)sb->old.b, olen, (void *)sb->new.b, olen, 0);
	if (diff < 0 || bpf_skb_store_bytes(skb, l4 + sizeof(*th), sb->new.b, olen, BPF_F_RECOMPUTE_CSUM) < 0)
		return TCX_NEXT;
	bpf_l4_csum_replace(skb, l4 + 16, 0, diff, 0);
	v = bpf_map_lookup_elem(&strip_stats, &zero);
	if (v)
		*v += 1;
	return TCX_NEXT;
}
