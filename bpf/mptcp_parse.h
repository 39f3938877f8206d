/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Strict MPTCP option parser over a copied TCP options area, shared by the sock_ops and TC programs.
 *
 * The options area (at most 40 bytes) is copied into a 64-byte buffer; every access masks its
 * index with OPTBUF_MASK, so the verifier sees each read in bounds whatever the offset. Length
 * rules follow the kernel's mptcp_parse_option: a malformed suboption is skipped and counted.
 */
#ifndef MPTCPGO_MPTCP_PARSE_H
#define MPTCPGO_MPTCP_PARSE_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_defs.h"
#include "mptcp_types.h"

#define MAX_TCP_OPTS_WALK 40 /* every option takes at least one byte */

/* ob_idx masks an index in a way the compiler cannot drop, so the verifier always sees it. */
static __always_inline __u64 ob_idx(__u64 i)
{
	asm volatile("%[i] &= %[m]" : [i] "+r"(i) : [m] "i"(OPTBUF_MASK));
	return i;
}

#define OB(buf, i) ((__u32)(buf)[ob_idx(i)])

enum parse_result {
	PARSE_OK = 0,
	PARSE_MALFORMED = 1, /* a length or field the strict parser rejects */
	PARSE_UNKNOWN = 2,   /* an unknown subtype */
};

static __always_inline __u16 ob_be16(const __u8 *b, __u32 i)
{
	return (__u16)((OB(b, i) << 8) | OB(b, i + 1));
}

static __always_inline __u32 ob_be32(const __u8 *b, __u32 i)
{
	return (OB(b, i) << 24) | (OB(b, i + 1) << 16) | (OB(b, i + 2) << 8) | OB(b, i + 3);
}

static __always_inline __u64 ob_be64(const __u8 *b, __u32 i)
{
	return ((__u64)ob_be32(b, i) << 32) | ob_be32(b, i + 4);
}

/* ob_copy copies n bytes (a constant) from the buffer. */
#define ob_copy(dst, b, i, n)                                   \
	do {                                                    \
		for (__u32 __k = 0; __k < (n); __k++)           \
			(dst)[__k] = (__u8)OB(b, (i) + __k);    \
	} while (0)

/* mptcp_parse_mpc checks an MP_CAPABLE against the segment's flags, as the kernel does. */
static __always_inline int mptcp_parse_mpc(const __u8 *b, __u32 off, __u32 len, __u8 tcp_flags,
					   __u8 has_payload, struct mptcp_opt *o)
{
	__u32 expected;
	__u8 version = OB(b, off + 2) & MPTCP_VERSION_MASK;
	__u8 flags = OB(b, off + 3);

	if (!(tcp_flags & TCP_FLAG_SYN))
		expected = has_payload ? LEN_MPC_ACK_DATA : LEN_MPC_ACK;
	else if (tcp_flags & TCP_FLAG_ACK)
		expected = LEN_MPC_SYNACK;
	else
		expected = LEN_MPC_SYN;
	if (len != expected && !(expected == LEN_MPC_ACK_DATA && len == LEN_MPC_ACK_DATA_CSUM))
		return PARSE_MALFORMED;
	/* Gentle with future versions on the SYN only (§3.1 version negotiation). */
	if (len == LEN_MPC_SYN ? version < MPTCP_SUPPORTED_VERSION : version != MPTCP_SUPPORTED_VERSION)
		return PARSE_MALFORMED;
	if ((flags & MPC_FLAG_ALGO_MASK) != MPC_FLAG_HMAC_SHA256 || (flags & MPC_FLAG_EXTENSIBILITY))
		return PARSE_MALFORMED;

	o->version = version;
	o->flags = flags;
	if (len >= LEN_MPC_SYNACK)
		o->key_a = ob_be64(b, off + 4);
	if (len >= LEN_MPC_ACK)
		o->key_b = ob_be64(b, off + 12);
	if (len >= LEN_MPC_ACK_DATA)
		o->data_len = ob_be16(b, off + 20);
	if (len == LEN_MPC_ACK_DATA_CSUM) {
		o->csum = ob_be16(b, off + 22);
		o->has_csum = 1;
	}
	return PARSE_OK;
}

static __always_inline int mptcp_parse_mpj(const __u8 *b, __u32 off, __u32 len, struct mptcp_opt *o)
{
	o->flags = OB(b, off + 2) & 0x0f;
	switch (len) {
	case LEN_MPJ_SYN:
		o->addr_id = OB(b, off + 3);
		o->token = ob_be32(b, off + 4);
		o->nonce = ob_be32(b, off + 8);
		return PARSE_OK;
	case LEN_MPJ_SYNACK:
		o->addr_id = OB(b, off + 3);
		o->hmac64 = ob_be64(b, off + 4);
		o->nonce = ob_be32(b, off + 12);
		return PARSE_OK;
	case LEN_MPJ_ACK:
		o->flags = 0;
		ob_copy(o->hmac, b, off + 4, MPJ_HMAC_LEN);
		return PARSE_OK;
	}
	return PARSE_MALFORMED;
}

static __always_inline int mptcp_parse_dss(const __u8 *b, __u32 off, __u32 len, struct mptcp_opt *o)
{
	__u8 flags = OB(b, off + 3) & DSS_FLAG_MASK;
	__u32 expected = LEN_DSS_BASE, p = off + 4;

	if (flags & DSS_FLAG_HAS_ACK)
		expected += (flags & DSS_FLAG_ACK64) ? LEN_DSS_ACK64 : LEN_DSS_ACK32;
	if (flags & DSS_FLAG_HAS_MAP)
		expected += (flags & DSS_FLAG_DSN64) ? LEN_DSS_MAP64 : LEN_DSS_MAP32;
	/* Checksum presence is parsed either way; the connection decides (§3.3.0). */
	if (len != expected && len != expected + LEN_DSS_CHECKSUM)
		return PARSE_MALFORMED;
	/* Without a mapping there is no checksum field to carry (kernel: both sizes accepted,
	 * but a 2-byte tail without a mapping carries nothing we read). */
	o->flags = flags;
	if (flags & DSS_FLAG_HAS_ACK) {
		if (flags & DSS_FLAG_ACK64) {
			o->data_ack = ob_be64(b, p);
			p += 8;
		} else {
			o->data_ack = ob_be32(b, p);
			p += 4;
		}
	}
	if (flags & DSS_FLAG_HAS_MAP) {
		if (flags & DSS_FLAG_DSN64) {
			o->dsn = ob_be64(b, p);
			p += 8;
		} else {
			o->dsn = ob_be32(b, p);
			p += 4;
		}
		o->ssn = ob_be32(b, p);
		o->data_len = ob_be16(b, p + 4);
		if (len == expected + LEN_DSS_CHECKSUM) {
			o->csum = ob_be16(b, p + 6);
			o->has_csum = 1;
		}
	}
	return PARSE_OK;
}

static __always_inline int mptcp_parse_add_addr(const __u8 *b, __u32 off, __u32 len, struct mptcp_opt *o)
{
	__u8 echo = OB(b, off + 2) & ADD_ADDR_FLAG_ECHO;
	__u32 p = off + 4;
	__u8 port = 0;

	if (!echo) {
		if (len == LEN_ADD_ADDR || len == LEN_ADD_ADDR_PORT)
			o->family = 4;
		else if (len == LEN_ADD_ADDR6 || len == LEN_ADD_ADDR6_PORT)
			o->family = 6;
		else
			return PARSE_MALFORMED;
		port = len == LEN_ADD_ADDR_PORT || len == LEN_ADD_ADDR6_PORT;
	} else {
		if (len == LEN_ADD_ADDR_BASE || len == LEN_ADD_ADDR_BASE_PORT)
			o->family = 4;
		else if (len == LEN_ADD_ADDR6_BASE || len == LEN_ADD_ADDR6_BASE_PORT)
			o->family = 6;
		else
			return PARSE_MALFORMED;
		port = len == LEN_ADD_ADDR_BASE_PORT || len == LEN_ADD_ADDR6_BASE_PORT;
	}
	o->flags = echo;
	o->addr_id = OB(b, off + 3);
	if (o->family == 4) {
		ob_copy(o->addr, b, p, 4);
		p += 4;
	} else {
		ob_copy(o->addr, b, p, 16);
		p += 16;
	}
	if (port) {
		o->port = ob_be16(b, p);
		p += 2;
	}
	if (!echo)
		o->hmac64 = ob_be64(b, p);
	return PARSE_OK;
}

/* Segment facts the strict parser needs, packed into one argument: TCP flags in the low byte. */
#define SEG_HAS_PAYLOAD 0x100

/* mptcp_parse_opt parses the kind-30 option of length len at buf[off]; seg is the segment's TCP
 * flags, ORed with SEG_HAS_PAYLOAD when it carries data. */
__noinline int mptcp_parse_opt(const struct optbuf *ob, __u32 off, __u32 len, __u32 seg,
			       struct mptcp_opt *o)
{
	__u8 tcp_flags = seg & 0xff, has_payload = !!(seg & SEG_HAS_PAYLOAD);
	const __u8 *buf;
	__u8 subtype;

	if (!ob || !o)
		return PARSE_MALFORMED;
	buf = ob->b;
	__builtin_memset(o, 0, sizeof(*o));
	if (len < 3)
		return PARSE_MALFORMED;
	subtype = OB(buf, off + 2) >> 4;
	o->subtype = subtype;
	o->len = len;

	switch (subtype) {
	case MPTCPOPT_MP_CAPABLE:
		return mptcp_parse_mpc(buf, off, len, tcp_flags, has_payload, o);
	case MPTCPOPT_MP_JOIN:
		return mptcp_parse_mpj(buf, off, len, o);
	case MPTCPOPT_DSS:
		if (len < LEN_DSS_BASE)
			return PARSE_MALFORMED;
		return mptcp_parse_dss(buf, off, len, o);
	case MPTCPOPT_ADD_ADDR:
		return mptcp_parse_add_addr(buf, off, len, o);
	case MPTCPOPT_RM_ADDR:
		if (len < LEN_RM_ADDR_BASE + 1 || len > LEN_RM_ADDR_BASE + RM_ADDR_IDS_MAX)
			return PARSE_MALFORMED;
		o->nr_ids = len - LEN_RM_ADDR_BASE;
		for (__u32 k = 0; k < RM_ADDR_IDS_MAX; k++)
			o->ids[k] = k < o->nr_ids ? (__u8)OB(buf, off + 3 + k) : 0;
		return PARSE_OK;
	case MPTCPOPT_MP_PRIO:
		if (len != LEN_MP_PRIO)
			return PARSE_MALFORMED;
		o->flags = OB(buf, off + 2) & MP_PRIO_FLAG_BACKUP;
		return PARSE_OK;
	case MPTCPOPT_MP_FAIL:
		if (len != LEN_MP_FAIL)
			return PARSE_MALFORMED;
		o->dsn = ob_be64(buf, off + 4);
		return PARSE_OK;
	case MPTCPOPT_MP_FASTCLOSE:
		if (len != LEN_MP_FASTCLOSE)
			return PARSE_MALFORMED;
		o->key_a = ob_be64(buf, off + 4);
		return PARSE_OK;
	case MPTCPOPT_RST:
		/* §3.6: honoured only on a segment with RST set. */
		if (len != LEN_MP_TCPRST || !(tcp_flags & TCP_FLAG_RST))
			return PARSE_MALFORMED;
		o->flags = OB(buf, off + 2) & 0x0f;
		o->reason = OB(buf, off + 3);
		return PARSE_OK;
	}
	return PARSE_UNKNOWN;
}

/* Walker state over a copied options area of len bytes. */
struct opt_walk {
	__u32 pos;
	__u32 len;
};

/* tcp_next_opt advances w to the next option of the given kind (tolerant, like the kernel's
 * mptcp_get_options) and returns its length, 0 at the end, or -1 when a bad option length stops
 * the walk. The caller moves w->pos past the option after handling it. */
__noinline int tcp_next_opt(const struct optbuf *ob, struct opt_walk *w, __u32 want)
{
	if (!ob || !w)
		return -1;
	for (int i = 0; i < MAX_TCP_OPTS_WALK; i++) {
		/* Read the position from memory each time: an unknown value lets the verifier
		 * prune, where a register with a growing range would not. */
		__u32 kind, size, pos = *(volatile __u32 *)&w->pos, len = w->len;

		if (pos >= len || pos >= MAX_TCP_OPTION_SPACE)
			return 0;
		kind = OB(ob->b, pos);
		if (kind == TCPOPT_EOL)
			return 0;
		if (kind == TCPOPT_NOP) {
			w->pos = pos + 1;
			continue;
		}
		if (len - pos < 2)
			return -1;
		size = OB(ob->b, pos + 1);
		if (size < 2 || size > len - pos)
			return -1;
		if (kind == want)
			return size;
		w->pos = pos + size;
	}
	return 0;
}

/* mptcp_next_opt advances w to the next MPTCP option, as tcp_next_opt. */
static __always_inline int mptcp_next_opt(const struct optbuf *ob, struct opt_walk *w)
{
	return tcp_next_opt(ob, w, TCPOPT_MPTCP);
}

#endif
