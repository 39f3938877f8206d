/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Writing MPTCP options: each builder fills the bytes of one option (RFC 8684 §3) into a buffer,
 * and store_opt puts them into the segment's header from a sock_ops write callback. */
#ifndef MPTCPGO_OPT_WRITE_H
#define MPTCPGO_OPT_WRITE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "datapath_common.h"
#include "dss_build.h"
#include "mptcp_defs.h"

/* store_opt puts an option into the segment's header, counting one that did not fit. */
static __always_inline int store_opt(struct bpf_sock_ops *skops, __u8 *out, __u32 len)
{
	int err = bpf_store_hdr_opt(skops, out, len, 0);

	if (err)
		dp_count(DP_OptionNoSpace);
	return err;
}

/* build_mpc fills an MP_CAPABLE of length len (4, 12, 20, 22, or 24 with the DSS checksum
 * csum), with the A flag when csum_flag: checksums required (§3.1). */
static __always_inline void build_mpc(__u8 *o, __u32 len, int csum_flag, __u64 sender, __u64 receiver,
				      __u16 data_len, __u16 csum)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = len;
	o[2] = (MPTCPOPT_MP_CAPABLE << 4) | MPTCP_SUPPORTED_VERSION;
	o[3] = MPC_FLAG_HMAC_SHA256 | (csum_flag ? MPC_FLAG_CHECKSUM : 0);
	if (len >= LEN_MPC_SYNACK)
		put_be64(o + 4, sender);
	if (len >= LEN_MPC_ACK)
		put_be64(o + 12, receiver);
	if (len >= LEN_MPC_ACK_DATA)
		put_be16(o + 20, data_len);
	if (len >= LEN_MPC_ACK_DATA_CSUM)
		put_be16(o + 22, csum);
}

/* build_mpj_syn fills the MP_JOIN of a SYN: the peer's token and our nonce (§3.2). */
static __always_inline void build_mpj_syn(__u8 *o, int backup, __u8 local_id, __u32 token, __u32 nonce)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MPJ_SYN;
	o[2] = (MPTCPOPT_MP_JOIN << 4) | (backup ? MPJ_FLAG_BACKUP : 0);
	o[3] = local_id;
	put_be32(o + 4, token);
	put_be32(o + 8, nonce);
}

/* build_mpj_synack fills the MP_JOIN of a SYN/ACK: the leftmost 64 bits of the HMAC (two words)
 * and our nonce (§3.2). */
static __always_inline void build_mpj_synack(__u8 *o, __u8 local_id, __u32 hmac0, __u32 hmac1, __u32 nonce)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MPJ_SYNACK;
	o[2] = MPTCPOPT_MP_JOIN << 4;
	o[3] = local_id;
	put_be32(o + 4, hmac0);
	put_be32(o + 8, hmac1);
	put_be32(o + 12, nonce);
}

/* build_mpj_ack fills the MP_JOIN of the third ACK: the leftmost 160 bits of the HMAC (§3.2). */
static __always_inline void build_mpj_ack(__u8 *o, const __u32 *hmac)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MPJ_ACK;
	o[2] = MPTCPOPT_MP_JOIN << 4;
	o[3] = 0;
	for (int i = 0; i < 5; i++)
		put_be32(o + 4 + 4 * i, hmac[i]);
}

/* build_fastclose fills an MP_FASTCLOSE with the peer's key (§3.5). */
static __always_inline void build_fastclose(__u8 *o, __u64 remote_key)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MP_FASTCLOSE;
	o[2] = MPTCPOPT_MP_FASTCLOSE << 4;
	o[3] = 0;
	put_be64(o + 4, remote_key);
}

/* build_tcprst fills an MP_TCPRST with its flag bits (T = transient) and reason (§3.6). */
static __always_inline void build_tcprst(__u8 *o, __u8 flags, __u8 reason)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MP_TCPRST;
	o[2] = (MPTCPOPT_RST << 4) | (flags & 0x0f);
	o[3] = reason;
}

/* build_mp_fail fills an MP_FAIL at a DSN (§3.7). */
static __always_inline void build_mp_fail(__u8 *o, __u64 dsn)
{
	o[0] = TCPOPT_MPTCP;
	o[1] = LEN_MP_FAIL;
	o[2] = MPTCPOPT_MP_FAIL << 4;
	o[3] = 0;
	put_be64(o + 4, dsn);
}

#endif
