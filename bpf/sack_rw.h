/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The TC rewrite of segments whose SACK blocks crowd out the DSS.
 *
 * The kernel hands out option room as timestamps, SACK blocks, then BPF options
 * (net/ipv4/tcp_output.c, tcp_established_options): with timestamps and three SACK blocks
 * nothing is left for a DSS, and no socket option or sock_ops field limits the SACK blocks. So
 * sock_ops reserves whatever room is left (est_tx.h), which gives such a segment a full 60-byte
 * header, and TC egress rewrites its 40 option bytes in place: timestamps as they were, then a
 * DSS (a 32-bit data ACK and the segment's mapping, or the data ACK alone on a segment without
 * data), then as many of the SACK blocks as still fit, first ones first (the newest, or a D-SACK
 * and the newest), then NOPs. The header never grows: bpf_skb_adjust_room would change a GSO
 * packet's gso_size. A GSO packet's header is copied to every segment, and one GSO packet never
 * crosses an MSG_EOR boundary, so one mapping covers all of it.
 *
 * sack_rw_opts is the rewrite itself, on copies of the option bytes (tested against a Go
 * reference through BPF_PROG_TEST_RUN, internal/testbpf sacktest); sack_rw_apply stores the
 * result with its checksum fix-up. No maps: the datapath fills struct sack_rw from the same
 * mapping table sock_ops writes from (txmap.h).
 */
#ifndef MPTCPGO_SACK_RW_H
#define MPTCPGO_SACK_RW_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>

#include "dss_build.h"
#include "mptcp_defs.h"

#define SACK_RW_OPTLEN 40 /* the option bytes of a full 60-byte TCP header: the only ones rewritten */
#define SACK_RW_BUF 64    /* buffer size: indices are masked with SACK_RW_BUF - 1 */
#define TCPOPT_SACK_BLOCKS 5
#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_TIMESTAMP 10
#define TCPOLEN_SACK_BASE 2
#define TCPOLEN_SACK_PERBLOCK 8

/* What the rewritten DSS carries, filled in by the caller. */
struct sack_rw {
	__u64 dsn;      /* the mapping's DSN (its low 32 bits in the 4-byte form) */
	__u32 ack;      /* the data ACK's low 32 bits */
	__u32 ssn;      /* the mapping's relative subflow sequence number */
	__u16 len;      /* the mapping's data-level length (DATA_FIN included) */
	__u8 has_ack;   /* write a data ACK */
	__u8 dsn_len;   /* 0: no mapping; 4 or 8: the mapping's DSN size */
	__u8 fin;       /* the mapping ends with DATA_FIN */
	__u8 has_csum;  /* the mapping carries a DSS checksum (RFC 8684 §3.3.1) */
	__u8 on_mpc;    /* the mapping goes in MP_CAPABLE, which sock_ops wrote: leave it (txmap_on_mpc) */
	__u16 csum;     /* that checksum */
};

/* Results of sack_rw_opts. */
enum sack_rw_result {
	SACK_RW_NONE = 0, /* nothing to do: no SACK blocks, or the DSS already carries what is wanted */
	SACK_RW_DONE = 1, /* out holds the rewritten options */
	SACK_RW_SKIP = 2, /* options it cannot rewrite (an unknown kind, a bad length) */
};

/* rw_idx bounds an index into a SACK_RW_BUF buffer for the verifier; the empty asm keeps the
 * compiler from dropping a mask it can prove redundant. */
static __always_inline __u32 rw_idx(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & (SACK_RW_BUF - 1);
}

/* Scratch for one rewrite: the option bytes before and after, and where the walk found what. */
struct sack_rw_scratch {
	__u8 in[SACK_RW_BUF];
	__u8 out[SACK_RW_BUF];
	__u32 pos;
	__u32 ts;       /* offset of the timestamps option, or 0xff */
	__u32 sack;     /* offset of the SACK option, or 0xff */
	__u32 sack_len;
	__u32 dss;      /* offset of a DSS, or 0xff */
	__u32 dflags;   /* its flags */
	__u32 ack_out;  /* the rewrite wrote a data ACK */
};

/* RW_LOAD reads a field of the scratch from memory: an unknown value lets the verifier prune
 * the walk's states, where registers with growing ranges would not. */
#define RW_LOAD(f) (*(volatile __u32 *)&sc->f)

/* sack_rw_opts rewrites the SACK_RW_OPTLEN option bytes in sc->in into sc->out as the header
 * comment says, when they carry SACK blocks and lack part of what rw asks for (the mapping, or
 * the data ACK), and no MPTCP option other than a DSS. Returns an enum sack_rw_result. A global
 * function: the verifier checks it once, on its own. */
__noinline int sack_rw_opts(struct sack_rw_scratch *sc, const struct sack_rw *rw)
{
	__u32 ts, sack, sack_len, dflags, o = 0, room, blocks, start, csum_len;
	struct dss_form f;
	const __u8 *in;
	__u8 *out;

	if (!sc || !rw)
		return SACK_RW_SKIP;
	in = sc->in;
	out = sc->out;
	sc->pos = 0;
	sc->ack_out = 0;
	sc->ts = 0xff;
	sc->sack = 0xff;
	sc->sack_len = 0;
	sc->dss = 0xff;
	sc->dflags = 0;
	for (int i = 0; i < SACK_RW_OPTLEN; i++) {
		__u32 pos = RW_LOAD(pos);
		__u8 kind, len;

		if (pos >= SACK_RW_OPTLEN)
			break;
		kind = in[rw_idx(pos)];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			sc->pos = pos + 1;
			continue;
		}
		if (pos + 1 >= SACK_RW_OPTLEN)
			return SACK_RW_SKIP;
		len = in[rw_idx(pos + 1)];
		if (len < 2 || pos + len > SACK_RW_OPTLEN)
			return SACK_RW_SKIP;
		if (kind == TCPOPT_TIMESTAMP && len == TCPOLEN_TIMESTAMP && RW_LOAD(ts) == 0xff) {
			sc->ts = pos;
		} else if (kind == TCPOPT_SACK_BLOCKS && len > TCPOLEN_SACK_BASE &&
			   !((len - TCPOLEN_SACK_BASE) % TCPOLEN_SACK_PERBLOCK) && RW_LOAD(sack) == 0xff) {
			sc->sack = pos;
			sc->sack_len = len;
		} else if (kind == TCPOPT_MPTCP && len >= LEN_DSS_BASE && RW_LOAD(dss) == 0xff &&
			   (in[rw_idx(pos + 2)] >> 4) == MPTCPOPT_DSS) {
			sc->dss = pos;
			sc->dflags = in[rw_idx(pos + 3)];
		} else if (kind == TCPOPT_MPTCP) {
			return SACK_RW_NONE; /* another MPTCP option: the segment carries that instead */
		} else {
			return SACK_RW_SKIP;
		}
		sc->pos = pos + len;
	}
	ts = RW_LOAD(ts);
	sack = RW_LOAD(sack);
	sack_len = RW_LOAD(sack_len);
	dflags = RW_LOAD(dss) == 0xff ? 0 : RW_LOAD(dflags);
	if (sack == 0xff || sack_len < TCPOLEN_SACK_BASE + TCPOLEN_SACK_PERBLOCK)
		return SACK_RW_NONE;
	if ((!rw->dsn_len || (dflags & DSS_FLAG_HAS_MAP)) && (!rw->has_ack || (dflags & DSS_FLAG_HAS_ACK)))
		return SACK_RW_NONE;

	/* NOPs first, the options over them: no loop with a variable bound (Linux 6.1's verifier
	 * does not bound one whose counter the compiler folded into the index). */
	__builtin_memset(out, TCPOPT_NOP, SACK_RW_OPTLEN);
	if (ts != 0xff) {
#pragma unroll
		for (int i = 0; i < TCPOLEN_TIMESTAMP; i++)
			out[2 + i] = in[rw_idx(ts + i)];
		o = 2 + TCPOLEN_TIMESTAMP;
	}
	room = SACK_RW_OPTLEN - o;
	f.ack_len = rw->has_ack ? 4 : 0;
	f.dsn_len = rw->dsn_len == 8 ? 8 : rw->dsn_len ? 4 : 0;
	csum_len = f.dsn_len && rw->has_csum ? LEN_DSS_CHECKSUM : 0;
	/* The mapping comes first, then one SACK block at least; then the data ACK if it fits. */
	if (dss_len(f) + csum_len + TCPOLEN_SACK_BASE + TCPOLEN_SACK_PERBLOCK > room)
		f.ack_len = 0;
	if (!f.ack_len && !f.dsn_len)
		return SACK_RW_NONE;
	sc->ack_out = !!f.ack_len;
	start = o;
	o += build_dss(out + (o & 15), f, rw->ack, rw->dsn, rw->ssn, rw->len, rw->fin);
	if (csum_len) {
		/* The mapping's DSS checksum, its last field. */
		out[rw_idx(o)] = rw->csum >> 8;
		out[rw_idx(o + 1)] = rw->csum;
		out[rw_idx(start + 1)] = o + csum_len - start;
		o += csum_len;
	}
	blocks = 0;
	if (o > SACK_RW_OPTLEN - TCPOLEN_SACK_BASE - TCPOLEN_SACK_PERBLOCK) {
		/* Only a checksummed mapping with a 64-bit DSN beside timestamps leaves no room for a
		 * SACK block: the blocks are left out, and the next ACK carries them. */
		if (!csum_len || o > SACK_RW_OPTLEN)
			return SACK_RW_SKIP; /* cannot happen: checked above */
	} else {
		blocks = (SACK_RW_OPTLEN - o - TCPOLEN_SACK_BASE) / TCPOLEN_SACK_PERBLOCK;
		if (blocks > 3)
			blocks = 3; /* a DSS takes at least 8 bytes */
		if (blocks > (sack_len - TCPOLEN_SACK_BASE) / TCPOLEN_SACK_PERBLOCK)
			blocks = (sack_len - TCPOLEN_SACK_BASE) / TCPOLEN_SACK_PERBLOCK;
	}
	if (blocks) {
		out[rw_idx(o)] = TCPOPT_SACK_BLOCKS;
		out[rw_idx(o + 1)] = TCPOLEN_SACK_BASE + blocks * TCPOLEN_SACK_PERBLOCK;
#pragma unroll
		for (__u32 i = 0; i < 3 * TCPOLEN_SACK_PERBLOCK; i++) {
			if (i < blocks * TCPOLEN_SACK_PERBLOCK)
				out[rw_idx(o + TCPOLEN_SACK_BASE + i)] = in[rw_idx(sack + TCPOLEN_SACK_BASE + i)];
		}
	}
	return SACK_RW_DONE;
}

/* sack_rw_apply rewrites the options of the TCP header at l4 (a 60-byte header) as sack_rw_opts
 * says, with one store and a checksum fix-up. bpf_l4_csum_replace updates the TCP checksum of a
 * packet whose checksum is complete, and leaves alone the pseudo-header sum of a CHECKSUM_PARTIAL
 * one (every TCP transmit here), whose checksum the device or GSO computes later over the new
 * bytes. With the checksum field compensating, a CHECKSUM_COMPLETE packet's sum is unchanged, so
 * the bytes are stored without BPF_F_RECOMPUTE_CSUM. Returns an enum sack_rw_result, or -1 when
 * the packet could not be read or written (a failed store leaves it as it was). */
static __always_inline int sack_rw_apply(struct __sk_buff *skb, __u32 l4, const struct sack_rw *rw,
					 struct sack_rw_scratch *sc)
{
	__u32 off = l4 + sizeof(struct tcphdr);
	__s64 diff;
	int r;

	if (bpf_skb_load_bytes(skb, off, sc->in, SACK_RW_OPTLEN) < 0)
		return -1;
	r = sack_rw_opts(sc, rw);
	if (r != SACK_RW_DONE)
		return r;
	diff = bpf_csum_diff((__be32 *)sc->in, SACK_RW_OPTLEN, (__be32 *)sc->out, SACK_RW_OPTLEN, 0);
	if (diff < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, off, sc->out, SACK_RW_OPTLEN, 0) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), 0, diff, 0) < 0)
		return -1;
	return SACK_RW_DONE;
}

#endif
