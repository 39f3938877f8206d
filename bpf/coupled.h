/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Coupled congestion control: the arithmetic of LIA (RFC 6356), OLIA (Khalili et al.) and BALIA
 * (Peng et al.), on the windows, RTTs and loss intervals the subflows of one connection publish.
 * Pure functions of their arguments: the struct_ops programs (congestion.h) call them, and so does
 * a test program (cctest.bpf.c) that Go checks against its own reference, in BPF.
 *
 * Windows are in packets, as the kernel's are; RTTs in microseconds. Every comparison of ratios
 * is made by cross-multiplication and every quotient is taken last, in 64 bits with inputs
 * clamped so that no product can overflow:
 *   cwnd ≤ 2^20 packets, srtt in [1, 2^21] µs (2.1 s), loss intervals ≤ 2^26 (64-byte units).
 * No signed division (BPF has it only from cpu v4, Linux 6.6).
 */
#ifndef MPTCPGO_COUPLED_H
#define MPTCPGO_COUPLED_H

#include <linux/types.h>

#include "datapath_types.h" /* enum cc_algo, struct cc_path */

/* Fixed-point scale of OLIA's per-packet increase. */
#define CC_INC_SHIFT 24

#define CC_CWND_MAX (1U << 20)
#define CC_RTT_MAX (1U << 21)
#define CC_LOSS_MAX (1U << 26)

static __always_inline __u64 cc_clamp(__u64 v, __u64 lo, __u64 hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* cc_muldiv returns a*b/c, or U64 max when even the less exact (a/c)*b would overflow. */
static __always_inline __u64 cc_muldiv(__u64 a, __u64 b, __u64 c)
{
	if (c == 0)
		return ~0ULL;
	if (b == 0 || a <= ~0ULL / b)
		return a * b / c;
	a /= c;
	if (b != 0 && a > ~0ULL / b)
		return ~0ULL;
	return a * b;
}

/* The paths of one connection, as one block of memory: the functions below are global BPF
 * functions, verified once each on their own (inlined, their data-dependent branches multiplied
 * the verifier's states beyond its limit), and a global function's pointer argument covers one
 * object of its type. */
struct cc_paths {
	struct cc_path p[CC_MAX_SUBS];
};

#define CC_IDX(i) ((i) & (CC_MAX_SUBS - 1))

/* cc_compact moves the usable paths (a window and an RTT sample) of p[0..np) to the front, in
 * order and clamped. It returns their count, and in bits 8..15 the new index of path me, or
 * CC_MAX_SUBS when path me is not usable. */
__attribute__((noinline)) __u32 cc_compact(struct cc_paths *ps, __u32 np, __u32 me)
{
	__u32 n = 0, self = CC_MAX_SUBS;

	if (!ps)
		return CC_MAX_SUBS << 8;
	for (__u32 i = 0; i < CC_MAX_SUBS; i++) {
		struct cc_path v;

		if (i >= np)
			break;
		v = ps->p[i];
		if (v.cwnd == 0 || v.srtt_us == 0)
			continue;
		v.cwnd = cc_clamp(v.cwnd, 1, CC_CWND_MAX);
		v.srtt_us = cc_clamp(v.srtt_us, 1, CC_RTT_MAX);
		v.loss_int = cc_clamp(v.loss_int, 0, CC_LOSS_MAX);
		ps->p[CC_IDX(n)] = v;
		if (i == me)
			self = n;
		n++;
	}
	return n | self << 8;
}

/* The values below are carried as scalars, never as indexes: an index the data chose would be
 * tracked precisely by the verifier, and every choice would be a state of its own. */

/* lia_window returns the window W that LIA's increase divides by on path self: per packet
 * acknowledged the window grows by 1/W, where
 *   1/W = min(alpha / cwnd_total, 1 / cwnd_self)  (RFC 6356 §3, in packets), so
 *   W = max(cwnd_self, (Σ_k cwnd_k/rtt_k)² / max_k(cwnd_k/rtt_k²)).
 * With b the path of the largest cwnd/rtt², the second term is (Σ_k cwnd_k·rtt_b/rtt_k)²/cwnd_b,
 * which needs no RTT squared. With one path W = cwnd: Reno. ps holds n compacted paths; 0 when
 * self is not one of them. */
__attribute__((noinline)) __u32 lia_window(const struct cc_paths *ps, __u32 n, __u32 self)
{
	__u64 t = 0, q, d, wb = 0, rb = 1, ws = 0, wk, rk;

	if (!ps || self >= n)
		return 0;
	self &= CC_MAX_SUBS - 1; /* the compiler may load ps->p[self] directly */
	/* b: the largest cwnd/rtt²; cwnd ≤ 2^20 and rtt² ≤ 2^42 keep the products below 2^62. */
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		wk = ps->p[k].cwnd;
		rk = ps->p[k].srtt_us;
		if (k == self)
			ws = wk;
		if (k == 0 || wk * rb * rb > wb * rk * rk) {
			wb = wk;
			rb = rk;
		}
	}
	if (ws == 0 || wb == 0)
		return 0;
	/* t = Σ_k cwnd_k·rtt_b/rtt_k, scaled by 2^10: each term ≤ 2^51, the sum < 2^54. */
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		rk = ps->p[k].srtt_us;
		if (rk)
			t += ((__u64)ps->p[k].cwnd << 10) * rb / rk;
	}
	/* W = t²/cwnd_b, unscaled by 2^20: t/cwnd_b ≥ 2^10 (path b's own term), so the quotient
	 * taken first costs at most 2^-10 of it. */
	q = t / wb;
	d = cc_muldiv(q, t, 1 << 20);
	if (d < ws)
		d = ws;
	return d > CC_CWND_MAX ? CC_CWND_MAX : (__u32)d;
}

/* olia_increase returns OLIA's change of path self's window per packet acknowledged in
 * congestion avoidance, scaled by 2^CC_INC_SHIFT, and signed:
 *   (cwnd_self/rtt_self²) / (Σ_p cwnd_p/rtt_p)² + eps_self/cwnd_self
 * The first term is cwnd_self/D² with D = Σ_p cwnd_p·rtt_self/rtt_p. eps: with M the paths of
 * the largest window and B the "best" paths, those of the largest loss_int/rtt² (what a TCP
 * flow would get on each), the paths of B not in M get +1/(n·|B\M|) and those of M
 * −1/(n·|M|) when B\M is not empty; else 0. With one path the increase is 1/cwnd: Reno. */
__attribute__((noinline)) __s64 olia_increase(const struct cc_paths *ps, __u32 n, __u32 self)
{
	__u64 d = 0, a, inc, wmax = 0, den, lb = 0, rb = 1, ws = 0, rs = 0, ls = 0, wk, rk, lk;
	__u32 nm = 0, nbm = 0, inbm, inm;

	if (!ps || self >= n)
		return 0;
	self &= CC_MAX_SUBS - 1; /* the compiler may load ps->p[self] directly */
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		wk = ps->p[k].cwnd;
		/* RTTs in 16 µs units for the loss comparisons: loss_int ≤ 2^26 and rtt16² ≤ 2^34. */
		rk = (ps->p[k].srtt_us >> 4) + 1;
		lk = ps->p[k].loss_int;
		if (k == self) {
			ws = wk;
			rs = ps->p[k].srtt_us;
			ls = lk;
		}
		if (wk > wmax)
			wmax = wk;
		if (k == 0 || lk * rb * rb > lb * rk * rk) {
			lb = lk;
			rb = rk;
		}
	}
	if (ws == 0 || rs == 0)
		return 0;
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		rk = ps->p[k].srtt_us;
		if (rk)
			d += ((__u64)ps->p[k].cwnd << 10) * rs / rk;
		rk = (rk >> 4) + 1;
		if (ps->p[k].cwnd == wmax)
			nm++;
		else if ((__u64)ps->p[k].loss_int * rb * rb == lb * rk * rk)
			nbm++;
	}
	if (d == 0)
		return 0;
	inm = ws == wmax;
	inbm = !inm && ls * rb * rb == lb * ((rs >> 4) + 1) * ((rs >> 4) + 1);
	/* cwnd_self/D², with D scaled by 2^10: a = 2^24·cwnd_self/D ≤ 2^24, then a/D. */
	a = (ws << (CC_INC_SHIFT + 10)) / d;
	inc = (a << 10) / d;
	if (nbm == 0 || (!inm && !inbm))
		return (__s64)inc;
	den = (__u64)n * (inbm ? nbm : nm) * ws;
	if (inbm)
		return (__s64)(inc + (1ULL << CC_INC_SHIFT) / den);
	return (__s64)inc - (__s64)((1ULL << CC_INC_SHIFT) / den);
}

/* balia_params returns BALIA's window divisor ai (per packet acknowledged the window grows by
 * 1/ai) in the low 32 bits and its decrease md (on a loss the window drops by md) in the high
 * ones, for path self. With x_k = cwnd_k/rtt_k and a = max_k x_k / x_self:
 *   increase per packet = (x_self / (rtt_self·(Σ x)²)) · ((1+a)/2) · ((4+a)/5), so
 *   ai = 10·cwnd_self·(Σ x/x_self)² / ((1+a)(4+a)),
 *   md = cwnd_self/2 · min(a, 1.5).
 * The ratios x_k/x_self = cwnd_k·rtt_self/(cwnd_self·rtt_k), with 10 fractional bits, are
 * capped at 512 (a path that much faster leaves this one an increase of about 1/(10·cwnd) per
 * packet either way). With one path ai = cwnd and md = cwnd/2: Reno. */
__attribute__((noinline)) __u64 balia_params(const struct cc_paths *ps, __u32 n, __u32 self)
{
	__u64 s = 0, amax = 0, x, t, v, ws = 0, rs = 0, md;

	if (!ps || self >= n)
		return 0;
	self &= CC_MAX_SUBS - 1; /* the compiler may load ps->p[self] directly */
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		if (k == self) {
			ws = ps->p[k].cwnd;
			rs = ps->p[k].srtt_us;
		}
	}
	if (ws == 0 || rs == 0)
		return 0;
	for (__u32 k = 0; k < CC_MAX_SUBS; k++) {
		if (k >= n)
			break;
		if (ps->p[k].srtt_us == 0)
			continue;
		x = ((__u64)ps->p[k].cwnd << 10) * rs / (ws * ps->p[k].srtt_us);
		if (x > (1ULL << 19))
			x = 1ULL << 19;
		s += x;
		if (x > amax)
			amax = x;
	}
	/* s ≤ 2^22, so 10·s² < 2^48 and with 16 fractional bits < 2^64; the denominator, scaled
	 * by 2^20 like s², is < 2^39. The quotient q = 10·S²/((1+A)(4+A)) is at least 1 and at
	 * most 10·n² (A is one of S's terms), so 16 bits of fraction are enough, and with one path
	 * it is exactly 1. */
	t = ((s * s * 10) << 16) / (((1 << 10) + amax) * ((4 << 10) + amax));
	v = t * ws >> 16;
	if (v < 1)
		v = 1;
	if (v > CC_CWND_MAX)
		v = CC_CWND_MAX;
	md = (ws >> 1) * (amax < 1536 ? amax : 1536) >> 10;
	return v | md << 32;
}

#endif
