/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Building a DSS option (RFC 8684 §3.3) in any of its forms: shared by the sock_ops writer
 * (opt_write.h), the TC rewrite of SACK segments (sack_rw.h) and its test program. No maps. */
#ifndef MPTCPGO_DSS_BUILD_H
#define MPTCPGO_DSS_BUILD_H

#include <linux/types.h>

#include "mptcp_defs.h"

static __always_inline void put_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, v);
}

/* Sizes of a DSS's fields in the forms build_dss writes: a data ACK of 0, 4 or 8 bytes, and a
 * mapping whose DSN takes 0 (no mapping), 4 or 8 bytes (RFC 8684 §3.3). */
struct dss_form {
	__u8 ack_len;
	__u8 dsn_len;
};

/* dss_len returns the length of a DSS of form f. */
static __always_inline __u32 dss_len(struct dss_form f)
{
	return LEN_DSS_BASE + f.ack_len + (f.dsn_len ? f.dsn_len + 6 : 0);
}

/* build_dss fills a DSS of form f: the data ACK (its low 32 bits in the 4-byte form) and the
 * mapping (likewise the DSN); returns its length. */
static __always_inline __u32 build_dss(__u8 *o, struct dss_form f, __u64 ack, __u64 dsn, __u32 ssn, __u16 len,
				       int fin)
{
	__u32 n = LEN_DSS_BASE;
	__u8 flags = 0;

	if (f.ack_len == 8) {
		flags |= DSS_FLAG_HAS_ACK | DSS_FLAG_ACK64;
		put_be64(o + n, ack);
		n += 8;
	} else if (f.ack_len == 4) {
		flags |= DSS_FLAG_HAS_ACK;
		put_be32(o + n, ack);
		n += 4;
	}
	if (f.dsn_len) {
		flags |= DSS_FLAG_HAS_MAP;
		if (fin)
			flags |= DSS_FLAG_DATA_FIN;
		if (f.dsn_len == 8) {
			flags |= DSS_FLAG_DSN64;
			put_be64(o + n, dsn);
			n += 8;
		} else {
			put_be32(o + n, dsn);
			n += 4;
		}
		put_be32(o + n, ssn);
		put_be16(o + n + 4, len);
		n += 6;
	}
	o[0] = TCPOPT_MPTCP;
	o[1] = n;
	o[2] = MPTCPOPT_DSS << 4;
	o[3] = flags;
	return n;
}

/* dss_csum completes a DSS checksum (RFC 8684 §3.3.1): sum is the 16-bit ones'-complement sum
 * of the pseudo-header's DSN and SSN and of the mapped bytes; the length the DSS carries is
 * added, and the result folded and complemented. */
static __always_inline __u16 dss_csum(__u32 sum, __u16 len)
{
	sum += len;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/* dss_add_csum appends the checksum field to a DSS of length n that build_dss filled (a mapping's
 * last field, §3.3); returns the new length. */
static __always_inline __u32 dss_add_csum(__u8 *o, __u32 n, __u16 csum)
{
	o[n & 31] = csum >> 8;
	o[(n + 1) & 31] = csum;
	o[1] = n + LEN_DSS_CHECKSUM;
	return n + LEN_DSS_CHECKSUM;
}

/* dss_csum_hdr returns the ones'-complement sum of a pseudo-header's DSN and SSN (no data). */
static __always_inline __u32 dss_csum_hdr(__u64 dsn, __u32 ssn)
{
	__u32 sum = (__u32)(dsn >> 48) + (__u32)((dsn >> 32) & 0xffff) + (__u32)((dsn >> 16) & 0xffff) +
		    (__u32)(dsn & 0xffff) + (ssn >> 16) + (ssn & 0xffff);

	sum = (sum & 0xffff) + (sum >> 16);
	return (sum & 0xffff) + (sum >> 16);
}

#endif
