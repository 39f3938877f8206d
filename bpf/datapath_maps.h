/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps of the datapath object (sock_ops, congestion control, SYN option rewriter): their types and
 * declarations, each with its purpose. datapath.bpf.c defines them in its .maps section. Only the
 * types their values need are included here; the helpers over them are in datapath_common.h. */
#ifndef MPTCPGO_DATAPATH_MAPS_H
#define MPTCPGO_DATAPATH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "crypto_types.h"
#include "datapath_types.h"
#include "mptcp_types.h"
#include "sack_rw.h"

/* Set by Go before load: the secret our listeners' MP_CAPABLE keys are derived with. */
const volatile struct dp_config dp_cfg = {};

/* Nonzero: new connections require DSS checksums (RFC 8684 §3.3.1), our MP_CAPABLE sets the A
 * flag. Go sets it while loaded (Datapath.SetChecksum), as the kernel's
 * net.mptcp.checksum_enabled applies to the connections opened after it changes. */
volatile __u32 dp_csum_required = 0;

/* How many children of TCP Fast Open SYNs wait for their client's key (tfo.h): while none do,
 * TC ingress looks no further into segments without SYN. */
struct tfo_waiting_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
};
extern struct tfo_waiting_map tfo_waiting;

/* SYN/ACKs of our listeners to MP_CAPABLE SYNs that had no room for our option (a TCP Fast Open
 * cookie beside timestamps), by addresses and ports (client_isn 0): TC egress gives our option
 * the room of the timestamps and SACK-permitted (syn_tc.h synack_make_room). Value: the A flag. */
struct synack_room_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct synkey_in);
	__type(value, __u32);
};
extern struct synack_room_map synack_room;

/* The MP_CAPABLE of a Fast Open child's SYN/ACK (tfo.h), by the client's address and the ports:
 * a retransmitted SYN/ACK of that child has no SYN to derive it from (the kernel moved the SYN
 * to the child). Until the child leaves SYN_RECV. */
struct tfo_synack_key {
	__u32 raddr[4]; /* IPv4 in raddr[0], the rest 0, for IPv4 and IPv4-mapped */
	__u16 lport;
	__u16 rport;    /* host order */
};

struct tfo_synack_val {
	__u64 key;
	__u32 csum;     /* the A flag */
	__u32 _pad;
};

struct tfo_synacks_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tfo_synack_key);
	__type(value, struct tfo_synack_val);
};
extern struct tfo_synacks_map tfo_synacks;

/* Per-socket MPTCP state of our subflows and listeners. */
struct sk_subs_map {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_sub);
};
extern struct sk_subs_map sk_subs;

/* Connection and subflow slots grow with demand: each array is split in chunks of SLOT_CHUNK
 * slots, created by Go (and mapped into its memory) when it first hands out a slot of the chunk,
 * and found through an array of maps indexed by slot >> SLOT_CHUNK_SHIFT. Go sets how many chunks
 * the outer arrays hold (the ceiling); the memory is the chunks created. */
#define SLOT_CHUNK_SHIFT 10
#define SLOT_CHUNK (1u << SLOT_CHUNK_SHIFT)

struct conns_chunk {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SLOT_CHUNK);
	__type(key, __u32);
	__type(value, struct conn);
};

struct subs_chunk {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SLOT_CHUNK);
	__type(key, __u32);
	__type(value, struct sub);
};

/* Connections, indexed by slot (conn_at). Size set by Go. */
struct conns_map {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct conns_chunk);
};
extern struct conns_map conns;

/* Subflows, indexed by slot (sub_at). Size set by Go. */
struct subs_map {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct subs_chunk);
};
extern struct subs_map subs;

/* Connection and subflow slots for our listeners' completed MP_CAPABLE handshakes, fed by Go. */
struct tickets_map {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4096);
	__type(value, struct ticket);
};
extern struct tickets_map tickets;

/* Passive joins between SYN/ACK and the third ACK, by 4-tuple (request socks have no storage). */
struct reqs_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct req_key);
	__type(value, struct req_val);
};
extern struct reqs_map reqs;

/* Our connections by our token, for MP_JOIN SYNs to our listeners (filled by Go). */
struct tokens_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* sized for the ceiling, allocated per token */
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct token_val);
};
extern struct tokens_map tokens;

/* Free subflow slots for passive joins, fed by Go. */
struct sub_slots_map {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
};
extern struct sub_slots_map sub_slots;

/* Nonces for passive joins' SYN/ACKs, from crypto/rand, fed by Go. */
struct nonces_map {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
};
extern struct nonces_map nonces;

/* Our local addresses' MP_JOIN address IDs (the path manager's endpoints, filled by Go). */
struct local_ids_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, __u8);
};
extern struct local_ids_map local_ids;

/* Events for Go. */
struct events_map {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
};
extern struct events_map events;

/* Per-CPU counters indexed by enum dp_counter. */
struct dp_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
};
extern struct dp_counters_map dp_counters;

/* Scratch space: an options copy, a parsed option, an option to write, HMAC state, the inputs
 * of a passive key and the SYN's IP header. */
struct dp_scratch {
	struct optbuf ob;
	struct mptcp_opt opt;
	__u8 out[32];
	struct hmac_scratch hmac;
	struct synkey_in key_in;
	__u8 syn_ip[40];
	struct sack_rw_scratch sack;
	struct sack_rw rw;
};

/* A program can be interrupted on its CPU by a softirq that runs another of ours (a
 * process-context write or parse, then a packet's parse in NET_RX): each nesting level has its
 * scratch of its own, so the interrupting program never overwrites the interrupted one's. */
#define DP_SCRATCH_LEVELS 4

struct dp_scratch_levels {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_SCRATCH_LEVELS);
	__type(key, __u32);
	__type(value, struct dp_scratch);
};
extern struct dp_scratch_levels dp_scratch_map;

/* The nesting level of our programs on this CPU. */
struct dp_depth_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};
extern struct dp_depth_map dp_depth;

/* Emit the shared types into BTF for bpf2go. */
const enum dp_counter *dp_counter_btf __attribute__((unused));
/* The chunks' value types: behind the arrays of maps' pointers clang emits them as forward
 * declarations only, and the loader needs their sizes. */
const struct conn *dp_conn_btf __attribute__((unused));
const struct sub *dp_sub_btf __attribute__((unused));
const enum event_type *event_type_btf __attribute__((unused));
const struct event *event_btf __attribute__((unused));
const struct dp_config *dp_config_btf __attribute__((unused));

#endif
