/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps of the datapath object (sock_ops, congestion control, SYN option rewriter). */
#ifndef MPTCPGO_DATAPATH_MAPS_H
#define MPTCPGO_DATAPATH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "datapath_types.h"
#include "mptcp_parse.h"
#include "sha256.h"
#include "synkey.h"

/* Set by Go before load: the secret our listeners' MP_CAPABLE keys are derived with. */
const volatile struct dp_config dp_cfg = {};

/* Per-socket MPTCP state of our subflows and listeners. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_sub);
} sk_subs SEC(".maps");

/* Connections, indexed by slot; Go maps this array into its memory. Size set by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn);
} conns SEC(".maps");

/* Subflows, indexed by slot; Go maps this array into its memory. Size set by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sub);
} subs SEC(".maps");

/* Connection and subflow slots for our listeners' completed MP_CAPABLE handshakes, fed by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4096);
	__type(value, struct ticket);
} tickets SEC(".maps");

/* Passive joins between SYN/ACK and the third ACK, by 4-tuple (request socks have no storage). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct req_key);
	__type(value, struct req_val);
} reqs SEC(".maps");

/* Our connections by our token, for MP_JOIN SYNs to our listeners (filled by Go). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct token_val);
} tokens SEC(".maps");

/* Free subflow slots for passive joins, fed by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
} sub_slots SEC(".maps");

/* Nonces for passive joins' SYN/ACKs, from crypto/rand, fed by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1024);
	__type(value, __u32);
} nonces SEC(".maps");

/* Our local addresses' MP_JOIN address IDs (the path manager's endpoints, filled by Go). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, __u8);
} local_ids SEC(".maps");

/* Events for Go. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Per-CPU counters indexed by enum dp_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dp_counters SEC(".maps");

/* Scratch space: an options copy, a parsed option, an option to write, HMAC state, the inputs
 * of a passive key and the SYN's IP header. */
struct dp_scratch {
	struct optbuf ob;
	struct mptcp_opt opt;
	__u8 out[32];
	struct hmac_scratch hmac;
	struct synkey_in key_in;
	__u8 syn_ip[40];
};

/* A program can be interrupted on its CPU by a softirq that runs another of ours (a
 * process-context write or parse, then a packet's parse in NET_RX): each nesting level has its
 * scratch of its own, so the interrupting program never overwrites the interrupted one's. */
#define DP_SCRATCH_LEVELS 4

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_SCRATCH_LEVELS);
	__type(key, __u32);
	__type(value, struct dp_scratch);
} dp_scratch_map SEC(".maps");

/* The nesting level of our programs on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} dp_depth SEC(".maps");

/* Emit the shared types into BTF for bpf2go. */
const enum dp_counter *dp_counter_btf __attribute__((unused));
const enum event_type *event_type_btf __attribute__((unused));
const struct event *event_btf __attribute__((unused));
const struct dp_config *dp_config_btf __attribute__((unused));

static __always_inline void dp_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&dp_counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1); /* an interrupting program may count the same */
}

/* dp_enter marks the start of a program that uses scratch space; every program entry point calls
 * it, and dp_exit with its result on the way out. Nested programs run to completion before
 * the one they interrupted continues, so a counter is enough. */
static __always_inline __u32 *dp_enter(void)
{
	__u32 zero = 0;
	__u32 *d = bpf_map_lookup_elem(&dp_depth, &zero);

	if (!d)
		return 0;
	if (*d >= DP_SCRATCH_LEVELS) {
		dp_count(DP_SCRATCH_NESTED);
		return 0;
	}
	*d += 1;
	return d;
}

static __always_inline void dp_exit(__u32 *d)
{
	if (*d)
		*d -= 1;
}

/* dp_scratch returns this nesting level's scratch space. */
static __always_inline struct dp_scratch *dp_scratch(void)
{
	__u32 zero = 0, idx;
	__u32 *d = bpf_map_lookup_elem(&dp_depth, &zero);

	if (!d || *d == 0 || *d > DP_SCRATCH_LEVELS)
		return 0;
	idx = *d - 1;
	return bpf_map_lookup_elem(&dp_scratch_map, &idx);
}

/* dp_event_lost counts an event the full ring buffer refused and marks its connection: Go
 * resets a connection that missed an event rather than run on with state it never saw. */
static __always_inline void dp_event_lost(const struct sk_sub *s)
{
	struct conn *c;
	__u32 k;

	dp_count(DP_EVENT_LOST);
	if (!s)
		return;
	k = s->conn;
	c = bpf_map_lookup_elem(&conns, &k);
	if (c)
		c->st.ev_lost = 1;
}

static __always_inline void dp_emit(__u32 type, const struct sk_sub *s, __u32 flags, __u64 a, __u64 b,
				    __u64 c, __u64 cookie)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		dp_event_lost(s);
		return;
	}
	e->type = type;
	e->conn = s ? s->conn : ~0U;
	e->sub = s ? s->sub : ~0U;
	e->flags = flags;
	e->a = a;
	e->b = b;
	e->c = c;
	e->cookie = cookie;
	e->raw_len = 0;
	bpf_ringbuf_submit(e, 0);
}

/* dp_emit_opt sends Go an option's bytes (copied from the options buffer at off). */
static __always_inline void dp_emit_opt(const struct sk_sub *s, const struct optbuf *ob, __u32 off, __u32 len)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		dp_event_lost(s);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = EV_OPTION;
	e->conn = s->conn;
	e->sub = s->sub;
	for (__u32 k = 0; k < 32; k++) {
		if (k >= len)
			break;
		e->raw[k] = OB(ob->b, off + k);
	}
	e->raw_len = len;
	bpf_ringbuf_submit(e, 0);
}

/* Wrap-safe 64-bit sequence comparison (RFC 8684 data sequence space). */
static __always_inline int before64(__u64 a, __u64 b)
{
	return (__s64)(a - b) < 0;
}

/* expand32 widens a 32-bit DSN or DATA_ACK against the expected 64-bit value, wrap-safe in both
 * directions (as the kernel's __mptcp_expand_seq). */
static __always_inline __u64 expand32(__u64 old, __u32 cur32)
{
	__u32 old32 = (__u32)old;
	__u64 cur = (old & 0xffffffff00000000ULL) | cur32;

	if (cur32 < old32 && (__s32)(old32 - cur32) < 0)
		return cur + (1ULL << 32);
	if (cur32 > old32 && (__s32)(cur32 - old32) < 0)
		return cur - (1ULL << 32);
	return cur;
}

static __always_inline struct conn *conn_of(const struct sk_sub *s)
{
	__u32 k = s->conn;

	return bpf_map_lookup_elem(&conns, &k);
}

static __always_inline struct sub *sub_of(const struct sk_sub *s)
{
	__u32 k = s->sub;

	return bpf_map_lookup_elem(&subs, &k);
}

#endif
