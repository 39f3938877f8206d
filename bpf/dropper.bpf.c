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

/* drop_dss drops, on one side's ingress, data segments of TCP connections chosen by where they
 * lie in their DSS mapping: after cfg.skip data segments, the first segment of a mapping; after
 * as many again, one from a mapping's middle; after as many again, a burst of cfg.burst data
 * segments in a row. Each once. IPv4, a DSS with a mapping, connections whose SYN it saw (the
 * ISN makes the mapping's relative sequence number comparable). Counted per kind.
 *
 * Only first transmissions are seen and dropped: a retransmission passes. Dropping those too
 * would make the burst, when it falls near the end of a transfer (no new data behind it to
 * bring SACK blocks), eat the retransmission timeouts' lone segments one by one, and the
 * sender's backoff turn 50 drops into minutes of silence. */
struct drop_dss_cfg {
	__u32 skip;
	__u32 burst;
};

/* Counters of drop_dss (index: enum drop_dss_stat). */
enum drop_dss_stat {
	DROP_DSS_SEEN = 0,   /* data segments with a mapping seen */
	DROP_DSS_FIRST,      /* first segments of a mapping dropped */
	DROP_DSS_MIDDLE,     /* segments from a mapping's middle dropped */
	DROP_DSS_BURST,      /* segments of the burst dropped */
	DROP_DSS_NR,
};

/* Emits enum drop_dss_stat into BTF, so that bpf2go generates its Go constants. */
const enum drop_dss_stat *drop_dss_stat_btf __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_dss_cfg);
} drop_dss_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DROP_DSS_NR);
	__type(key, __u32);
	__type(value, __u64);
} drop_dss_stats SEC(".maps");

/* Each direction of a connection, by its addresses and ports: its ISN, and the relative
 * sequence number after the highest byte seen (what lies before it is a retransmission). */
struct isn_key {
	__u32 saddr, daddr;
	__u16 sport, dport;
};

struct dss_flow {
	__u32 isn;
	__u32 high;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, struct isn_key);
	__type(value, struct dss_flow);
} drop_dss_isn SEC(".maps");

/* dix bounds an index into the 64-byte options copy for the verifier. */
static __always_inline __u32 dix(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & 0x3f;
}

static __always_inline __u64 dss_stat_add(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&drop_dss_stats, &idx);

	return v ? __sync_fetch_and_add(v, 1) : 0;
}

static __always_inline __u64 dss_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&drop_dss_stats, &idx);

	return v ? *v : 0;
}

SEC("tc")
int drop_dss(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct drop_dss_cfg *cfg;
	struct isn_key k = {};
	__u8 *ip, *th, opts[64] = {};
	struct dss_flow *fl;
	__u32 seq, hl, payload, rel, ssn = 0, seen, zero = 0;
	__u64 olen;
	__u16 mlen = 0;
	int found = 0;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TCX_NEXT;
	ip = data + sizeof(struct ethhdr);
	th = ip + 20;
	if ((void *)(th + 20) > end || ip[0] != 0x45 || ip[9] != 6 /* TCP */)
		return TCX_NEXT;
	cfg = bpf_map_lookup_elem(&drop_dss_conf, &zero);
	if (!cfg)
		return TCX_NEXT;
	__builtin_memcpy(&k.saddr, ip + 12, 4);
	__builtin_memcpy(&k.daddr, ip + 16, 4);
	__builtin_memcpy(&k.sport, th, 2);
	__builtin_memcpy(&k.dport, th + 2, 2);
	seq = ((__u32)th[4] << 24) | ((__u32)th[5] << 16) | ((__u32)th[6] << 8) | th[7];
	if (th[13] & 0x02) { /* SYN */
		struct dss_flow fl = {.isn = seq, .high = 1};

		bpf_map_update_elem(&drop_dss_isn, &k, &fl, BPF_ANY);
		return TCX_NEXT;
	}
	hl = (th[12] >> 4) * 4;
	payload = (((__u32)ip[2] << 8) | ip[3]);
	if (hl < 20 || hl > 60 || payload <= 20 + hl)
		return TCX_NEXT;
	payload -= 20 + hl;
	fl = bpf_map_lookup_elem(&drop_dss_isn, &k);
	if (!fl)
		return TCX_NEXT;
	rel = seq - fl->isn;
	if ((__s32)(rel - fl->high) < 0)
		return TCX_NEXT; /* a retransmission */
	fl->high = rel + payload;
	if (hl < 24)
		return TCX_NEXT;
	olen = (hl - 20) & 0x3f;
	if (olen < 4 || olen > 40)
		return TCX_NEXT;
	asm volatile("" : "+r"(olen));
	if (olen < 4 || olen > 40)
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + 20 + 20, opts, olen) < 0)
		return TCX_NEXT;
	/* Find a DSS with a mapping. */
	for (__u32 i = 0, pos = 0; i < 20; i++) {
		__u8 kind, len, flags;
		__u32 at;

		if (pos >= hl - 20 || pos >= 38)
			break;
		kind = opts[dix(pos)];
		if (kind == 0)
			break;
		if (kind == 1) {
			pos++;
			continue;
		}
		len = opts[dix(pos + 1)];
		if (len < 2 || pos + len > hl - 20)
			break;
		if (kind == TCPOPT_MPTCP && len >= 4 && (opts[dix(pos + 2)] >> 4) == MPTCPOPT_DSS) {
			flags = opts[dix(pos + 3)];
			at = pos + 4 + ((flags & 0x01) ? ((flags & 0x02) ? 8 : 4) : 0) + ((flags & 0x08) ? 8 : 4);
			if ((flags & 0x04) && at + 6 <= pos + len && at + 6 <= 40) {
				ssn = ((__u32)opts[dix(at)] << 24) | ((__u32)opts[dix(at + 1)] << 16) |
				      ((__u32)opts[dix(at + 2)] << 8) | opts[dix(at + 3)];
				mlen = ((__u16)opts[dix(at + 4)] << 8) | opts[dix(at + 5)];
				found = 1;
			}
			break;
		}
		pos += len;
	}
	if (!found)
		return TCX_NEXT;
	seen = dss_stat_add(DROP_DSS_SEEN);
	if (seen < cfg->skip)
		return TCX_NEXT;
	if (!dss_stat(DROP_DSS_FIRST)) {
		if (rel == ssn && payload < mlen) {
			dss_stat_add(DROP_DSS_FIRST);
			return TC_ACT_SHOT;
		}
		return TCX_NEXT;
	}
	if (seen < 2 * cfg->skip)
		return TCX_NEXT;
	if (!dss_stat(DROP_DSS_MIDDLE)) {
		if (rel > ssn && rel + payload < ssn + mlen) {
			dss_stat_add(DROP_DSS_MIDDLE);
			return TC_ACT_SHOT;
		}
		return TCX_NEXT;
	}
	if (seen < 3 * cfg->skip)
		return TCX_NEXT;
	if (dss_stat(DROP_DSS_BURST) < cfg->burst) {
		dss_stat_add(DROP_DSS_BURST);
		return TC_ACT_SHOT;
	}
	return TCX_NEXT;
}
