/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SHA-256 (FIPS 180-4) and the HMAC-SHA256 (RFC 2104) of MP_JOIN, for the datapath.
 *
 * A listener's SYN/ACK to an MP_JOIN must carry an HMAC over the nonce that just arrived, with
 * no chance for userspace to run (docs/design.md, "Keys, tokens and HMACs"). MP_JOIN's HMAC has a fixed shape:
 * the key is two 64-bit MPTCP keys, the message two 32-bit nonces, so everything works on
 * 32-bit words and no byte loops are needed: one block for the padded key, one for the message.
 */
#ifndef MPTCPGO_SHA256_H
#define MPTCPGO_SHA256_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "crypto_types.h"

static const volatile __u32 sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static __always_inline __u32 ror32(__u32 x, __u32 n)
{
	return (x >> n) | (x << (32 - n));
}

static __always_inline void sha256_init(struct sha256_state *s)
{
	s->h[0] = 0x6a09e667;
	s->h[1] = 0xbb67ae85;
	s->h[2] = 0x3c6ef372;
	s->h[3] = 0xa54ff53a;
	s->h[4] = 0x510e527f;
	s->h[5] = 0x9b05688c;
	s->h[6] = 0x1f83d9ab;
	s->h[7] = 0x5be0cd19;
}

/* sha256_compress folds one block into the state; the block becomes the message schedule (it
 * is scratch space: no stack is used for it). A global function: verified once. */
__noinline int sha256_compress(struct sha256_state *s, struct sha256_block *blk)
{
	__u32 *w, a, b, c, d, e, f, g, h;

	if (!s || !blk)
		return -1;
	w = blk->w;
	a = s->h[0];
	b = s->h[1];
	c = s->h[2];
	d = s->h[3];
	e = s->h[4];
	f = s->h[5];
	g = s->h[6];
	h = s->h[7];
	for (int i = 0; i < 64; i++) {
		__u32 wi, t1, t2;

		if (i < 16) {
			wi = w[i & 15];
		} else {
			/* The schedule kept in a 16-word ring: w[i] from w[i-2], w[i-7], w[i-15], w[i-16]. */
			__u32 w2 = w[(i - 2) & 15], w15 = w[(i - 15) & 15];
			__u32 s0 = ror32(w15, 7) ^ ror32(w15, 18) ^ (w15 >> 3);
			__u32 s1 = ror32(w2, 17) ^ ror32(w2, 19) ^ (w2 >> 10);

			wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
			w[i & 15] = wi;
		}
		t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i & 63] + wi;
		t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	s->h[0] += a;
	s->h[1] += b;
	s->h[2] += c;
	s->h[3] += d;
	s->h[4] += e;
	s->h[5] += f;
	s->h[6] += g;
	s->h[7] += h;
	return 0;
}

/* hmac_outer finishes an HMAC whose inner hash is in x->inner: SHA-256 of (K ^ opad) ‖ inner
 * digest (64 + 32 bytes = 768 bits) into x->outer. The key is nwords big-endian words (4 or 8),
 * zero-padded to the block. */
static __always_inline void hmac_outer(struct hmac_scratch *x, const __u32 *key, int nwords)
{
	sha256_init(&x->outer);
	for (int i = 0; i < 16; i++)
		x->blk.w[i] = (i < nwords ? key[i & (nwords - 1)] : 0) ^ 0x5c5c5c5c;
	sha256_compress(&x->outer, &x->blk);
	for (int i = 0; i < 8; i++)
		x->blk.w[i] = x->inner.h[i];
	x->blk.w[8] = 0x80000000;
	for (int i = 9; i < 15; i++)
		x->blk.w[i] = 0;
	x->blk.w[15] = (64 + 32) * 8;
	sha256_compress(&x->outer, &x->blk);
}

/* mptcp_hmac computes HMAC-SHA256(key = key1 ‖ key2, msg = n1 ‖ n2), everything big-endian,
 * into out (the full 32 bytes as 8 words). RFC 8684 §3.2: the SYN/ACK carries the leftmost 64
 * bits of HMAC(KeyB‖KeyA, R-B‖R-A), the third ACK the leftmost 160 of HMAC(KeyA‖KeyB, R-A‖R-B). */
__noinline int mptcp_hmac(struct hmac_scratch *x, __u64 key1, __u64 key2, __u32 n1, __u32 n2)
{
	__u32 *key;

	if (!x)
		return -1;
	key = x->key;
	key[0] = key1 >> 32;
	key[1] = key1;
	key[2] = key2 >> 32;
	key[3] = key2;
	/* Inner: (K ^ ipad) ‖ msg, msg padded to its own block (64 + 8 bytes = 576 bits). */
	sha256_init(&x->inner);
	for (int i = 0; i < 16; i++)
		x->blk.w[i] = (i < 4 ? key[i & 3] : 0) ^ 0x36363636;
	sha256_compress(&x->inner, &x->blk);
	x->blk.w[0] = n1;
	x->blk.w[1] = n2;
	x->blk.w[2] = 0x80000000;
	for (int i = 3; i < 15; i++)
		x->blk.w[i] = 0;
	x->blk.w[15] = (64 + 8) * 8;
	sha256_compress(&x->inner, &x->blk);
	hmac_outer(x, key, 4);
	return 0;
}

/* hmac_sha256_32_48 computes HMAC-SHA256(key = x->skey, 32 bytes; msg = x->msg, 48 bytes),
 * everything big-endian words, into x->outer: four compressions, as for MP_JOIN. Our listeners'
 * MP_CAPABLE keys are derived with it (synkey.h). */
__noinline int hmac_sha256_32_48(struct hmac_scratch *x)
{
	if (!x)
		return -1;
	/* Inner: (K ^ ipad) ‖ msg, msg padded to its own block (64 + 48 bytes = 896 bits). */
	sha256_init(&x->inner);
	for (int i = 0; i < 16; i++)
		x->blk.w[i] = (i < 8 ? x->skey[i & 7] : 0) ^ 0x36363636;
	sha256_compress(&x->inner, &x->blk);
	for (int i = 0; i < 12; i++)
		x->blk.w[i] = x->msg[i];
	x->blk.w[12] = 0x80000000;
	x->blk.w[13] = 0;
	x->blk.w[14] = 0;
	x->blk.w[15] = (64 + 48) * 8;
	sha256_compress(&x->inner, &x->blk);
	hmac_outer(x, x->skey, 8);
	return 0;
}

/* mptcp_key_sha computes SHA-256 of one 64-bit key (big-endian) into x->inner: the token is
 * h[0], the IDSN h[6]‖h[7], the digest's most and least significant bits (RFC 8684 §3.1). */
__noinline int mptcp_key_sha(struct hmac_scratch *x, __u64 key)
{
	if (!x)
		return -1;
	sha256_init(&x->inner);
	x->blk.w[0] = key >> 32;
	x->blk.w[1] = key;
	x->blk.w[2] = 0x80000000;
	for (int i = 3; i < 15; i++)
		x->blk.w[i] = 0;
	x->blk.w[15] = 64;
	sha256_compress(&x->inner, &x->blk);
	return 0;
}

#endif
