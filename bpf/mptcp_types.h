/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs shared between the BPF programs and Go (bpf2go -type), and the options buffer they parse.
 * Padding is explicit; Go checks sizes. */
#ifndef MPTCPGO_MPTCP_TYPES_H
#define MPTCPGO_MPTCP_TYPES_H

#include <linux/types.h>

#define OPTBUF_SIZE 64
#define OPTBUF_MASK (OPTBUF_SIZE - 1)

/* A copied TCP options area (mptcp_parse.h). The parser and walker are global BPF functions,
 * verified once on their own: their pointer arguments must point at sized structs. */
struct optbuf {
	__u8 b[OPTBUF_SIZE];
};

/* One parsed MPTCP option. Fields not used by the subtype are zero. */
struct mptcp_opt {
	__u8 subtype;
	__u8 len;      /* option length byte */
	__u8 flags;    /* MPC flags byte; DSS flags; MPJ/ADD_ADDR/PRIO/TCPRST low flag bits */
	__u8 version;  /* MP_CAPABLE */
	__u8 addr_id;  /* MP_JOIN, ADD_ADDR */
	__u8 family;   /* ADD_ADDR: 4 or 6 */
	__u8 nr_ids;   /* REMOVE_ADDR */
	__u8 reason;   /* MP_TCPRST */
	__u16 data_len; /* MP_CAPABLE with data, DSS mapping */
	__u16 csum;     /* MP_CAPABLE with data, DSS; host order */
	__u16 port;     /* ADD_ADDR, host order, 0 when absent */
	__u8 has_csum;  /* MP_CAPABLE with data, DSS */
	__u8 _pad0;
	__u32 token;    /* MP_JOIN SYN */
	__u32 nonce;    /* MP_JOIN SYN, SYN/ACK */
	__u32 ssn;      /* DSS relative subflow sequence number */
	__u32 _pad1;
	__u64 key_a;    /* MP_CAPABLE sender key; MP_FASTCLOSE receiver key */
	__u64 key_b;    /* MP_CAPABLE receiver key */
	__u64 data_ack; /* DSS (low 32 bits only when 4 bytes on the wire) */
	__u64 dsn;      /* DSS mapping (likewise); MP_FAIL */
	__u64 hmac64;   /* MP_JOIN SYN/ACK truncated HMAC; ADD_ADDR HMAC */
	__u8 hmac[20];  /* MP_JOIN third ACK */
	__u8 addr[16];  /* ADD_ADDR, network order; IPv4 uses the first 4 bytes */
	__u8 ids[8];    /* REMOVE_ADDR */
	__u8 _pad2[4];
};

/* Counters of the TC observer, indexes into its per-CPU counter array. */
enum tc_counter {
	TC_PKTS = 0,         /* TCP segments seen */
	TC_PKTS_MPTCP,       /* segments carrying at least one MPTCP option */
	TC_OPT_PARSED,       /* MPTCP options parsed */
	TC_OPT_MALFORMED,    /* MPTCP options dropped by the strict parser */
	TC_OPT_UNKNOWN,      /* MPTCP options with an unknown subtype */
	TC_HDR_MALFORMED,    /* TCP options area with a bad length (walk stopped) */
	TC_PKT_UNSUPPORTED,  /* IP packets not parsed (fragments, IPv6 extension headers, truncated) */
	TC_OPT_SUBTYPE_BASE, /* per-subtype counts follow: TC_OPT_SUBTYPE_BASE + subtype */
	TC_COUNTER_MAX = TC_OPT_SUBTYPE_BASE + 9,
};

#define CAPTURE_MAX_OPTS 4

/* The options of the last captured segment (debugging and tests). */
struct capture {
	__u32 seq;      /* incremented per captured segment */
	__u32 nr_opts;
	__u8 tcp_flags;
	__u8 _pad[7];
	struct mptcp_opt opts[CAPTURE_MAX_OPTS];
};

/* Load-time configuration of the TC observer. */
struct tc_config {
	__u32 capture; /* nonzero: record every segment's options in the capture map */
	__u32 _pad;
};

#endif
