// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Path emulator hooks (tests): netem is not built into this kernel, so the delay line lives in
 * userspace behind a TUN device, and these two programs splice it into one direction of a path.
 *
 *   sender's stack -> veth egress (tcx: datapath programs, then legacy tc: emu_out)
 *        emu_out: redirect to the TUN's egress -> the Go forwarder reads it, holds it
 *        (queue, rate, loss, delay, jitter) and writes it back into the TUN
 *   TUN ingress (tcx: emu_back): add an Ethernet header, redirect to the veth's egress
 *   veth egress again: emu_out lets a packet that came from the TUN pass -> veth -> peer
 *
 * emu_out is a legacy tc (cls_bpf) filter on purpose: the kernel runs legacy filters after every
 * tcx program, so programs that recognise their socket by skb->sk (the datapath's SYN option
 * rewriter) see the packet before it leaves its socket behind in the TUN.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set from Go before load. */
struct emu_cfg {
	__u32 tun_ifindex;  /* the TUN the forwarder reads and writes */
	__u32 veth_ifindex; /* the emulated end */
};

const volatile struct emu_cfg cfg;

struct emu_l2 {
	__u8 addrs[2 * ETH_ALEN];
};

enum emu_counter {
	EMU_OUT = 0,  /* packets sent to the forwarder */
	EMU_BACK,     /* packets the forwarder returned to the veth */
	EMU_PASS,     /* packets let through untouched (not IP, multicast, or on their way back) */
	EMU_ERR,      /* packets dropped because a header could not be added */
	EMU_NR_COUNTERS,
};

/* Per-CPU counters, indexed by enum emu_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EMU_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} emu_stats SEC(".maps");

/* Index 0: the Ethernet addresses of the last unicast frame emu_out saw (destination, then
 * source), given back to the frames the forwarder returns (the TUN carries IP only). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct emu_l2);
} emu_l2 SEC(".maps");

/* Keeps the enum in BTF for bpf2go. */
const enum emu_counter *emu_counter_btf __attribute__((unused));

static __always_inline void count(enum emu_counter c)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&emu_stats, &k);

	if (v)
		*v += 1;
}

/* emu_out runs on the emulated veth's egress as a legacy tc filter. Multicast (neighbour
 * discovery) is not delayed: the frames that come back need a unicast destination address, learnt
 * here. */
SEC("tc")
int emu_out(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct emu_l2 *l2;
	__u32 zero = 0;

	if ((skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)) ||
	    skb->ingress_ifindex == cfg.tun_ifindex || data + sizeof(struct ethhdr) > end ||
	    (((struct ethhdr *)data)->h_dest[0] & 1)) {
		count(EMU_PASS);
		return TC_ACT_OK;
	}
	l2 = bpf_map_lookup_elem(&emu_l2, &zero);
	if (l2)
		__builtin_memcpy(l2->addrs, data, sizeof(l2->addrs));
	count(EMU_OUT);
	return bpf_redirect(cfg.tun_ifindex, 0);
}

/* emu_back runs on the TUN's ingress (tcx) for what the forwarder writes. */
SEC("tc")
int emu_back(struct __sk_buff *skb)
{
	struct ethhdr eth = {.h_proto = skb->protocol};
	struct emu_l2 *l2;
	__u32 zero = 0;

	l2 = bpf_map_lookup_elem(&emu_l2, &zero);
	if (!l2) {
		count(EMU_ERR);
		return TC_ACT_SHOT;
	}
	__builtin_memcpy(&eth, l2->addrs, sizeof(l2->addrs));
	if (bpf_skb_change_head(skb, sizeof(eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0) {
		count(EMU_ERR);
		return TC_ACT_SHOT;
	}
	count(EMU_BACK);
	return bpf_redirect(cfg.veth_ifindex, 0);
}
