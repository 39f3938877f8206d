/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The state and inputs of sha256.h and synkey.h, apart from their functions: the datapath's maps
 * header sizes its scratch space with them. */
#ifndef MPTCPGO_CRYPTO_TYPES_H
#define MPTCPGO_CRYPTO_TYPES_H

#include <linux/types.h>

struct sha256_state {
	__u32 h[8];
};

/* One 512-bit block as 16 big-endian words. */
struct sha256_block {
	__u32 w[16];
};

/* Scratch for one HMAC (sha256.h), kept in a map value: the stack cannot hold it next to a caller's frame. */
struct hmac_scratch {
	struct sha256_state inner;
	struct sha256_state outer;
	struct sha256_block blk;
	__u32 key[4];
	__u32 skey[8];  /* hmac_sha256_32_48: the 32-byte key */
	__u32 msg[12];  /* hmac_sha256_32_48: the 48-byte message */
};

/* The inputs of a passive key derivation (synkey.h). Addresses in network order, as sock_ops has them. */
struct synkey_in {
	__u32 version; /* 4 or 6 */
	__u32 local_ip[4];
	__u32 remote_ip[4];
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u32 client_isn;
};

#endif
