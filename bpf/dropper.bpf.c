// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test loss injectors on a TC hook: IP packets dropped at random at the rate in a config map, or
 * the first packets that match a TCP flags byte and a length. */
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

/* drop_match drops the first count IPv4 TCP packets whose flags byte is tcp_flags and, unless
 * ip_len is 0, whose IP total length is ip_len: a lost SYN/ACK or third ACK on demand. */
struct drop_match_cfg {
	__u32 count;
	__u16 ip_len;
	__u8 tcp_flags;
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_match_cfg);
} drop_match_conf SEC(".maps");

/* Index 0: packets that matched (the first count of them were dropped). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drop_match_seen SEC(".maps");

SEC("tc")
int drop_match(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct drop_match_cfg *cfg;
	__u32 zero = 0;
	__u8 *ip, *th;
	__u64 *seen;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	ip = data + sizeof(struct ethhdr);
	th = ip + 20;
	if ((void *)(th + 14) > end || ip[0] != 0x45 || ip[9] != 6 /* TCP */)
		return TCX_NEXT;
	cfg = bpf_map_lookup_elem(&drop_match_conf, &zero);
	seen = bpf_map_lookup_elem(&drop_match_seen, &zero);
	if (!cfg || !seen || th[13] != cfg->tcp_flags)
		return TCX_NEXT;
	if (cfg->ip_len && (((__u16)ip[2] << 8) | ip[3]) != cfg->ip_len)
		return TCX_NEXT;
	if (__sync_fetch_and_add(seen, 1) >= cfg->count)
		return TCX_NEXT;
	return TC_ACT_SHOT;
}
