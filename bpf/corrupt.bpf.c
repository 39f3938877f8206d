// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test corrupter on a TC hook: flips bits of one payload byte of one TCP data segment, and fixes
 * the TCP checksum so that TCP takes the segment (what a middlebox that rewrites payload does; only
 * the DSS checksum can tell, RFC 8684 §3.3.1). The segment is the skip-th data segment (counted
 * from 0) with at least min_payload bytes; one segment only. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_defs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct corrupt_cfg {
	__u32 skip;        /* data segments let through before the one corrupted */
	__u32 min_payload; /* segments with less payload are not counted */
	__u32 offset;      /* payload byte flipped (below min_payload) */
	__u8 xor;          /* bits flipped */
	__u8 _pad[3];
};

/* What was done: the corrupted segment's sequence number and payload length, the byte before
 * and after. */
struct corrupt_done {
	__u64 seen;    /* data segments counted */
	__u32 done;    /* nonzero once a segment was corrupted */
	__u32 _pad0;
	__u32 seq;     /* its TCP sequence number */
	__u32 payload; /* its payload length (a GSO packet's whole payload) */
	__u8 old_byte;
	__u8 new_byte;
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corrupt_cfg);
} corrupt_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corrupt_done);
} corrupt_state SEC(".maps");

SEC("tc")
int corrupt_one(struct __sk_buff *skb)
{
	__u32 zero = 0, l4, doff, payload, word_off, seq;
	struct corrupt_cfg *cfg;
	struct corrupt_done *st;
	__u8 ip[40], th[20], w[2], old_byte;
	__u16 old_word, new_word;

	cfg = bpf_map_lookup_elem(&corrupt_conf, &zero);
	st = bpf_map_lookup_elem(&corrupt_state, &zero);
	if (!cfg || !st || st->done)
		return TCX_NEXT;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, 20) || ip[9] != 6 /* TCP */ || (ip[0] >> 4) != 4)
			return TCX_NEXT;
		l4 = ETH_HLEN + (ip[0] & 0xf) * 4;
		payload = (((__u32)ip[2] << 8) | ip[3]) - (ip[0] & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, 40) || ip[6] != 6 /* TCP, no extension headers */)
			return TCX_NEXT;
		l4 = ETH_HLEN + 40;
		payload = ((__u32)ip[4] << 8) | ip[5];
	} else {
		return TCX_NEXT;
	}
	/* A GSO packet's IP length is not its length (BIG TCP sets 0): take the skb's. */
	if (skb->len > l4)
		payload = skb->len - l4;
	if (bpf_skb_load_bytes(skb, l4, th, 20))
		return TCX_NEXT;
	doff = (th[12] >> 4) * 4;
	if (doff < 20 || payload <= doff || payload - doff < cfg->min_payload || cfg->offset >= cfg->min_payload)
		return TCX_NEXT;
	payload -= doff;
	if (__sync_fetch_and_add(&st->seen, 1) != cfg->skip)
		return TCX_NEXT;
	/* The 16-bit word of the TCP segment that holds the byte (the header's length is a multiple
	 * of four: the payload offset's parity is the segment's). */
	word_off = l4 + doff + (cfg->offset & ~1U);
	if (bpf_skb_load_bytes(skb, word_off, w, 2))
		return TCX_NEXT;
	old_byte = (cfg->offset & 1) ? w[1] : w[0];
	/* The word as it sits in the packet, read as a host integer: the helper takes it so. */
	old_word = (__u16)w[0] | ((__u16)w[1] << 8);
	if (cfg->offset & 1)
		w[1] ^= cfg->xor;
	else
		w[0] ^= cfg->xor;
	new_word = (__u16)w[0] | ((__u16)w[1] << 8);
	if (bpf_skb_store_bytes(skb, word_off, w, 2, 0))
		return TCX_NEXT;
	/* The TCP checksum at offset 16 of the header: CHECKSUM_PARTIAL (a local transmit, summed
	 * later) needs nothing, a complete checksum the difference (the helper tells them apart). */
	if (bpf_l4_csum_replace(skb, l4 + 16, old_word, new_word, 2))
		return TCX_NEXT;
	seq = ((__u32)th[4] << 24) | ((__u32)th[5] << 16) | ((__u32)th[6] << 8) | th[7];
	st->seq = seq;
	st->payload = payload;
	st->old_byte = old_byte;
	st->new_byte = old_byte ^ cfg->xor;
	st->done = 1;
	return TCX_NEXT;
}
