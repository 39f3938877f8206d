// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The datapath object: sock_ops option I/O, our congestion control, and the SYN option rewriter.
 * They share the maps of datapath_maps.h. This file holds the entry points and the sock_ops
 * dispatcher; the work is done in the headers, one job each:
 *
 *   datapath_common.h  counters, scratch space, events, sequence arithmetic
 *   sockops_common.h   a sock_ops socket's state and its header's options
 *   opt_write.h        building MPTCP options
 *   handshake.h        MP_CAPABLE and MP_JOIN handshakes, both ways
 *   tfo.h              MP_CAPABLE SYNs with data (TCP Fast Open) at our listeners
 *   est_tx.h           established subflows: the options of outgoing segments
 *   est_rx.h           established subflows: parsing incoming options
 *   syn_tc.h           TC: SACK-permitted off our SYNs, resets' options, unknown-token joins
 *   congestion.h       the pure ACK on demand of our congestion control
 */
#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "datapath_common.h"
#include "datapath_maps.h"
#include "congestion.h"
#include "est_rx.h"
#include "est_tx.h"
#include "handshake.h"
#include "tfo.h"
#include "sockops_common.h"
#include "syn_tc.h"

char LICENSE[] SEC("license") = "GPL";

/* The maps declared in datapath_maps.h. */
struct sk_subs_map sk_subs SEC(".maps");
struct conns_map conns SEC(".maps");
struct subs_map subs SEC(".maps");
struct tickets_map tickets SEC(".maps");
struct reqs_map reqs SEC(".maps");
struct tokens_map tokens SEC(".maps");
struct sub_slots_map sub_slots SEC(".maps");
struct nonces_map nonces SEC(".maps");
struct local_ids_map local_ids SEC(".maps");
struct events_map events SEC(".maps");
struct dp_counters_map dp_counters SEC(".maps");
struct dp_scratch_levels dp_scratch_map SEC(".maps");
struct dp_depth_map dp_depth SEC(".maps");
struct tfo_waiting_map tfo_waiting SEC(".maps");
struct synack_room_map synack_room SEC(".maps");
struct tfo_synacks_map tfo_synacks SEC(".maps");

/* ---- sock_ops ----
 *
 * MPTCP option I/O on our plain TCP subflows. Writes MP_CAPABLE (SYN, SYN/ACK, third ACK, first
 * data), DSS (mapping looked up by the segment's sequence number in the table Go fills, data ACK
 * from connection state, DATA_FIN), MP_FASTCLOSE and MP_TCPRST; parses every incoming MPTCP
 * option into state and events. Acts only on sockets that have an sk_subs entry (registered by
 * Go, or children of our listeners).
 */

/* on_hdr_len reserves option room on an outgoing segment, by the state of its socket. */
static __always_inline int on_hdr_len(struct bpf_sock_ops *skops)
{
	__u32 tcp_flags = skops->skb_tcp_flags;
	struct dp_scratch *sc;
	struct sk_sub *s;

	if (!skops->is_fullsock) {
		/* A SYN/ACK of our listener: only listeners we registered have the callback on. */
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
			sc = dp_scratch();
			if (sc)
				return synack_len(skops, sc);
		}
		return 1;
	}
	s = sub_state(skops);
	if (!s)
		return 1;
	if (skops->args[0] & BPF_WRITE_HDR_TCP_CURRENT_MSS) {
		/* Sizing the MSS: room for a full DSS on every data segment, or, when SACK blocks
		 * take some of it now, all the room that is left, as a segment's own reservation
		 * then takes (est_tx.h): a segment sized for less would leave with a larger header
		 * than its MSS allowed for, over the path's MTU. */
		if (s->state == SUB_MPTCP)
			reserve_down(skops, ALIGN4(LEN_DSS_FULL));
		return 1;
	}
	if (s->state == SUB_SYN_SENT && (tcp_flags & TCP_FLAG_SYN)) {
		bpf_reserve_hdr_opt(skops, s->role == ROLE_JOIN_ACTIVE ? LEN_MPJ_SYN : LEN_MPC_SYN, 0);
		return 1;
	}
	if (s->state == SUB_JOIN_FAILED)
		return join_failed_rst(skops, NULL, s, tcp_flags);
	if (s->state != SUB_MPTCP)
		return 1;
	return est_hdr_len(skops, s, tcp_flags);
}

/* on_write_hdr writes the option of an outgoing segment, by the state of its socket. */
static __always_inline int on_write_hdr(struct bpf_sock_ops *skops)
{
	__u32 tcp_flags = skops->skb_tcp_flags;
	struct dp_scratch *sc = dp_scratch();
	struct sk_sub *s;
	struct tcphdr *th;
	void *data, *end;
	__u32 seq, payload;

	if (!sc)
		return 1;
	if (!skops->is_fullsock) {
		if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK))
			return synack_write(skops, sc);
		return 1;
	}
	s = sub_state(skops);
	if (!s)
		return 1;
	data = (void *)(long)skops->skb_data;
	end = (void *)(long)skops->skb_data_end;
	th = data;
	if ((void *)(th + 1) > end)
		return 1;
	seq = bpf_ntohl(th->seq);
	payload = skops->skb_len - th->doff * 4;
	if (payload > skops->skb_len)
		payload = 0;

	if (s->state == SUB_SYN_SENT && (tcp_flags & TCP_FLAG_SYN))
		return write_syn(skops, sc, s, seq, payload);
	if (s->state == SUB_JOIN_FAILED)
		return join_failed_rst(skops, sc, s, tcp_flags);
	if (s->state != SUB_MPTCP)
		return 1;
	return est_write_hdr(skops, sc, s, seq, payload, tcp_flags);
}

static __noinline int sockops_dispatch(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		return on_connect(skops);
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		return on_listen(skops);
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		return on_active_established(skops);
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* With a SYN, not the third ACK: TCP Fast Open made the child (tfo.h). */
		if (skops->skb_tcp_flags & TCP_FLAG_SYN)
			return on_tfo_passive(skops);
		return on_passive_established(skops);
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		return on_hdr_len(skops);
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		return on_write_hdr(skops);
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		return on_parse_hdr(skops);
	case BPF_SOCK_OPS_STATE_CB:
		return tfo_state(skops);
	}
	return 1;
}

SEC("sockops")
int mptcp_sockops(struct bpf_sock_ops *skops)
{
	__u32 *depth = dp_enter();
	int ret;

	if (!depth)
		return 1;
	ret = sockops_dispatch(skops);
	dp_exit(depth);
	return ret;
}

/* ---- TC: the SYN option rewriter (syn_tc.h) ---- */

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

/* ---- struct_ops: our congestion control (congestion.h) ----
 *
 * Two identical algorithms, A and B: Go switches a socket between them to ring the ACK doorbell.
 */

#define DEFINE_CA(ab)                                                                          \
	SEC("struct_ops") void BPF_PROG(ca_init_##ab, struct sock *sk)                         \
	{                                                                                      \
		ca_init(sk);                                                                   \
		ack_on_demand(sk);                                                             \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_release_##ab, struct sock *sk)                      \
	{                                                                                      \
		ca_release(sk);                                                                \
	}                                                                                      \
	SEC("struct_ops") __u32 BPF_PROG(ca_ssthresh_##ab, struct sock *sk)                    \
	{                                                                                      \
		return ca_ssthresh(sk);                                                        \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_cong_avoid_##ab, struct sock *sk, __u32 ack, __u32 acked) \
	{                                                                                      \
		ca_cong_avoid(sk, ack, acked);                                                 \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_set_state_##ab, struct sock *sk, __u8 new_state)   \
	{                                                                                      \
		ca_set_state(sk, new_state);                                                   \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_cwnd_event_##ab, struct sock *sk, enum tcp_ca_event ev) \
	{                                                                                      \
		ca_cwnd_event(sk, ev);                                                         \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_in_ack_event_##ab, struct sock *sk, __u32 flags)   \
	{                                                                                      \
		ca_in_ack_event(sk);                                                           \
		ack_on_demand(sk);                                                             \
	}                                                                                      \
	SEC("struct_ops") void BPF_PROG(ca_pkts_acked_##ab, struct sock *sk, const struct ack_sample *sample) \
	{                                                                                      \
		ca_pkts_acked(sk, sample);                                                     \
	}                                                                                      \
	SEC("struct_ops") __u32 BPF_PROG(ca_undo_cwnd_##ab, struct sock *sk)                   \
	{                                                                                      \
		return tcp_reno_undo_cwnd(sk);                                                 \
	}                                                                                      \
	SEC(".struct_ops.link") struct tcp_congestion_ops ca_##ab = {                          \
		.init = (void *)ca_init_##ab,                                                  \
		.ssthresh = (void *)ca_ssthresh_##ab,                                          \
		.cong_avoid = (void *)ca_cong_avoid_##ab,                                      \
		.set_state = (void *)ca_set_state_##ab,                                        \
		.cwnd_event = (void *)ca_cwnd_event_##ab,                                      \
		.in_ack_event = (void *)ca_in_ack_event_##ab,                                  \
		.pkts_acked = (void *)ca_pkts_acked_##ab,                                      \
		.undo_cwnd = (void *)ca_undo_cwnd_##ab,                                        \
		.release = (void *)ca_release_##ab,                                            \
		.name = "mptcpgo_" #ab, /* Go renames it per daemon before load */             \
	};

DEFINE_CA(a)
DEFINE_CA(b)

