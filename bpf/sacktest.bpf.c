// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Runs the TC rewrite of SACK segments (sack_rw.h) over one packet through BPF_PROG_TEST_RUN,
 * with what the DSS should carry taken from a map, for the tests that compare it with a Go
 * reference. Test-only: not loaded by the daemon. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sack_rw.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Index 0: what the rewritten DSS carries. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sack_rw);
} sacktest_rw SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sack_rw_scratch);
} sacktest_scratch SEC(".maps");

/* Index 0: the result of sack_rw_apply (enum sack_rw_result, or -1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s32);
} sacktest_result SEC(".maps");

/* sacktest rewrites an Ethernet + IPv4 (no IP options) + TCP packet with a 60-byte TCP header. */
SEC("tc")
int sacktest(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *th = (void *)(ip + 1);
	struct sack_rw_scratch *sc;
	struct sack_rw *rw;
	__u32 zero = 0;
	__s32 *res;

	if ((void *)(th + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP || th->doff != 15)
		return TC_ACT_SHOT;
	rw = bpf_map_lookup_elem(&sacktest_rw, &zero);
	sc = bpf_map_lookup_elem(&sacktest_scratch, &zero);
	res = bpf_map_lookup_elem(&sacktest_result, &zero);
	if (!rw || !sc || !res)
		return TC_ACT_SHOT;
	*res = sack_rw_apply(skb, sizeof(struct ethhdr) + sizeof(struct iphdr), rw, sc);
	return TC_ACT_OK;
}
