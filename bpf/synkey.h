/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The MP_CAPABLE key of our listeners' SYN/ACKs: derived from the SYN, not drawn per SYN.
 *
 * Why: a key drawn for each SYN/ACK (from Go's crypto/rand, through a queue) is state held for a
 * SYN that may never complete. A SYN flood, spoofed or not, drained that queue and every
 * legitimate client fell back to plain TCP. Like the kernel's SYN cookies, the SYN/ACK now carries
 * a value computed from the SYN alone:
 *
 *   key = leftmost 64 bits of HMAC-SHA256(secret, local address ‖ remote address ‖
 *         local port ‖ remote port ‖ client ISN ‖ IP version ‖ attempt)
 *
 * The 32-byte secret comes from Go's crypto/rand when the datapath loads and never leaves the
 * host: without it nobody can predict a key, which is what RFC 8684 §3.1 asks of a key (the
 * kernel draws them at random). A retransmitted SYN/ACK recomputes the same key. At the third
 * ACK the datapath recomputes it from the new socket, checks the key the client echoed, checks
 * that the key's token is not in use, and only then takes a ticket (a connection and a subflow
 * slot): a SYN that never completes costs nothing but the computation. A zero key is never
 * used: the attempt counter moves on (probability 2^-64 per attempt).
 *
 * Cost: four SHA-256 compressions (about 0.6 µs each here, so 2 to 3 µs) per MP_CAPABLE
 * SYN/ACK, retransmissions included, four more at the third ACK and one for the token; no
 * memory per SYN.
 *
 * The message is 12 big-endian words: local address (4 words), remote address (4), local port
 * << 16 | remote port, client ISN, IP version (4 or 6), attempt. An IPv4 address fills the first
 * word of its four, the others are zero; a v4-mapped IPv6 socket counts as IPv4 (a dual-stack
 * listener's child of an IPv4 SYN has the mapped address). internal/mpcrypto.PassiveKey is the Go
 * reference of the same derivation.
 */
#ifndef MPTCPGO_SYNKEY_H
#define MPTCPGO_SYNKEY_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

#include "sha256.h"

#define SYNKEY_ATTEMPTS 4 /* zero keys in a row before giving up: never, in practice */

/* synkey_derive returns the key of in under the secret (8 big-endian words), 0 on failure. */
static __always_inline __u64 synkey_derive(struct hmac_scratch *x, const volatile __u32 *secret,
					   const struct synkey_in *in)
{
	for (int i = 0; i < 8; i++)
		x->skey[i] = secret[i];
	for (int i = 0; i < 4; i++) {
		x->msg[i] = bpf_ntohl(in->local_ip[i]);
		x->msg[4 + i] = bpf_ntohl(in->remote_ip[i]);
	}
	x->msg[8] = ((__u32)in->local_port << 16) | in->remote_port;
	x->msg[9] = in->client_isn;
	x->msg[10] = in->version;
	for (__u32 attempt = 0; attempt < SYNKEY_ATTEMPTS; attempt++) {
		__u64 key;

		x->msg[11] = attempt;
		if (hmac_sha256_32_48(x))
			return 0;
		key = ((__u64)x->outer.h[0] << 32) | x->outer.h[1];
		if (key)
			return key;
	}
	return 0;
}

/* synkey_set_addrs fills in's addresses from a socket's: family AF_INET or AF_INET6 (IPv4
 * mapped counts as IPv4). */
static __always_inline void synkey_set_addrs(struct synkey_in *in, __u32 family, const __u32 *local6,
					     const __u32 *remote6, __u32 local4, __u32 remote4)
{
	__builtin_memset(in->local_ip, 0, sizeof(in->local_ip));
	__builtin_memset(in->remote_ip, 0, sizeof(in->remote_ip));
	if (family == 10 /* AF_INET6 */ && !(!local6[0] && !local6[1] && local6[2] == bpf_htonl(0xffff))) {
		in->version = 6;
		for (int i = 0; i < 4; i++) {
			in->local_ip[i] = local6[i];
			in->remote_ip[i] = remote6[i];
		}
		return;
	}
	in->version = 4;
	if (family == 10) {
		in->local_ip[0] = local6[3];
		in->remote_ip[0] = remote6[3];
	} else {
		in->local_ip[0] = local4;
		in->remote_ip[0] = remote4;
	}
}

#endif
