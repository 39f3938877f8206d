/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What every sock_ops callback uses: the socket's MPTCP state, the header's options copied out of
 * the segment, and a search for one MPTCP option among them. */
#ifndef MPTCPGO_SOCKOPS_COMMON_H
#define MPTCPGO_SOCKOPS_COMMON_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"

#ifndef SOL_TCP
#define SOL_TCP 6
#endif

#define OPT_FLAGS (BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG)
#define LEN_DSS_ACK_ONLY (LEN_DSS_BASE + LEN_DSS_ACK64)
#define LEN_DSS_FULL (LEN_DSS_BASE + LEN_DSS_ACK64 + LEN_DSS_MAP64)
#define ALIGN4(x) (((x) + 3) & ~3)

/* sub_state returns the MPTCP state of the callback's socket: NULL for sockets that are not ours. */
static __always_inline struct sk_sub *sub_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sk_subs, sk, 0, 0);
}

/* copy_hdr_opts copies the options of the TCP header at skb_data into ob; returns their length
 * and the header in *th, or -1. */
static __always_inline int copy_hdr_opts(struct bpf_sock_ops *skops, struct optbuf *ob, struct tcphdr *th)
{
	void *data = (void *)(long)skops->skb_data;
	void *end = (void *)(long)skops->skb_data_end;
	__u32 len;

	if (data + sizeof(*th) > end)
		return -1;
	__builtin_memcpy(th, data, sizeof(*th));
	len = th->doff * 4;
	if (len < sizeof(*th) || len > sizeof(*th) + MAX_TCP_OPTION_SPACE)
		return -1;
	len -= sizeof(*th);
	for (__u32 i = 0; i < MAX_TCP_OPTION_SPACE; i++) {
		__u8 *p = data + sizeof(*th) + i;

		if (i >= len)
			break;
		if ((void *)(p + 1) > end)
			return -1;
		ob->b[i] = *p;
	}
	return len;
}

/* find_opt parses the options in ob for one of the given subtype valid for the segment; returns
 * its offset + 1 (0 if none): sc->opt holds it. */
static __always_inline int find_opt(struct dp_scratch *sc, int optlen, __u32 seg, __u8 subtype)
{
	struct opt_walk w = {.pos = 0, .len = optlen};

	for (int i = 0; i < 8; i++) {
		int n = mptcp_next_opt(&sc->ob, &w);

		if (n <= 0)
			return 0;
		if (mptcp_parse_opt(&sc->ob, w.pos, n, seg, &sc->opt) == PARSE_OK && sc->opt.subtype == subtype)
			return w.pos + 1;
		w.pos += n;
	}
	return 0;
}

/* find_mpc parses the options in ob for an MP_CAPABLE valid for the segment. */
static __always_inline int find_mpc(struct dp_scratch *sc, int optlen, __u32 seg)
{
	return find_opt(sc, optlen, seg, MPTCPOPT_MP_CAPABLE) != 0;
}

#endif
