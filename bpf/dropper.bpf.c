// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test loss injector: drops IP packets at random on a TC hook, at the rate in its config map. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_defs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Index 0: drop probability as a fraction of 2^32. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} drop_rate SEC(".maps");

/* Index 0: packets seen, 1: packets dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drop_stats SEC(".maps");

SEC("tc")
int drop_random(struct __sk_buff *skb)
{
	__u32 zero = 0, one = 1, *rate;
	__u64 *v;

	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TCX_NEXT;
	v = bpf_map_lookup_elem(&drop_stats, &zero);
	if (v)
		*v += 1;
	rate = bpf_map_lookup_elem(&drop_rate, &zero);
	if (!rate || bpf_get_prandom_u32() >= *rate)
		return TCX_NEXT;
	v = bpf_map_lookup_elem(&drop_stats, &one);
	if (v)
		*v += 1;
	return TC_ACT_SHOT;
}
