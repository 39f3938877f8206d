/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers every program of the datapath object uses: counters, the nesting levels and their
 * scratch space, events for Go, data sequence arithmetic, and a socket's connection and subflow
 * slots. */
#ifndef MPTCPGO_DATAPATH_COMMON_H
#define MPTCPGO_DATAPATH_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "datapath_maps.h"
#include "mptcp_parse.h"

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
		dp_count(DP_ScratchNested);
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

/* conn_at and sub_at find a slot in its chunk (datapath_maps.h): NULL for a slot whose chunk
 * Go has not created, which Go never hands out. */
static __always_inline struct conn *conn_at(__u32 slot)
{
	__u32 hi = slot >> SLOT_CHUNK_SHIFT, lo = slot & (SLOT_CHUNK - 1);
	void *chunk = bpf_map_lookup_elem(&conns, &hi);

	if (!chunk)
		return NULL;
	return bpf_map_lookup_elem(chunk, &lo);
}

static __always_inline struct sub *sub_at(__u32 slot)
{
	__u32 hi = slot >> SLOT_CHUNK_SHIFT, lo = slot & (SLOT_CHUNK - 1);
	void *chunk = bpf_map_lookup_elem(&subs, &hi);

	if (!chunk)
		return NULL;
	return bpf_map_lookup_elem(chunk, &lo);
}

/* dp_event_lost counts an event the full ring buffer refused and marks its connection: Go
 * resets a connection that missed an event rather than run on with state it never saw. */
static __always_inline void dp_event_lost(const struct sk_sub *s)
{
	struct conn *c;
	__u32 k;

	/* The flag before the count: Go looks at the flags when it sees the count move. */
	if (s) {
		k = s->conn;
		c = conn_at(k);
		if (c)
			c->st.ev_lost = 1;
	}
	dp_count(DP_EventLost);
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

/* dp_emit_unmapped reports in-order data no mapping covers (EV_UNMAPPED): a = its relative SSN,
 * b = its length, c = the TCP options' length | the end of the subflow's current mapping (relative
 * SSN, 0 without one) << 32; raw holds the first 32 bytes of its options, for the log. */
static __always_inline void dp_emit_unmapped(const struct sk_sub *s, const struct optbuf *ob, __u32 optlen, __u32 ssn,
					     __u32 len, __u32 map_end)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		dp_event_lost(s);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = EV_UNMAPPED;
	e->conn = s->conn;
	e->sub = s->sub;
	e->a = ssn;
	e->b = len;
	e->c = optlen | (__u64)map_end << 32;
	for (__u32 k = 0; k < 32; k++) {
		if (k >= optlen)
			break;
		e->raw[k] = OB(ob->b, k);
	}
	e->raw_len = optlen < 32 ? optlen : 32;
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
	return conn_at(s->conn);
}

static __always_inline struct sub *sub_of(const struct sk_sub *s)
{
	return sub_at(s->sub);
}

#endif
