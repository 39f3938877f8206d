package seqnum

import (
	"math/rand/v2"
	"testing"
)

func TestExpand32(t *testing.T) {
	for _, tc := range []struct {
		name  string
		old   uint64
		cur32 uint32
		want  uint64
	}{
		{"equal", 0x1_2345_6789, 0x2345_6789, 0x1_2345_6789},
		{"ahead in block", 0x1_0000_1000, 0x2000, 0x1_0000_2000},
		{"behind in block", 0x1_0000_1000, 0x0500, 0x1_0000_0500},

		// old just below a 2^32 multiple, cur32 small: the peer crossed it.
		{"forward across 2^32", 0xffff_fff0, 0x5, 0x1_0000_0005},
		{"forward across 2^33", 0x1_ffff_fff0, 0x10, 0x2_0000_0010},
		{"forward from last value", 0x2_ffff_ffff, 0x0, 0x3_0000_0000},
		// old just above a 2^32 multiple, cur32 large: a late value from
		// the previous block.
		{"backward across 2^32", 0x1_0000_0005, 0xffff_fff0, 0xffff_fff0},
		{"backward across 2^33", 0x2_0000_0010, 0xffff_fff0, 0x1_ffff_fff0},
		{"backward to last value", 0x3_0000_0000, 0xffff_ffff, 0x2_ffff_ffff},

		// The 64-bit space wraps too.
		{"forward across 2^64", 0xffff_ffff_ffff_fff0, 0x10, 0x10},
		{"backward across 2^64", 0x5, 0xffff_fff0, 0xffff_ffff_ffff_fff0},

		// Largest distances that stay unambiguous.
		{"2^31-1 ahead in block", 0x1_0000_0000, 0x7fff_ffff, 0x1_7fff_ffff},
		{"2^31-1 ahead across", 0x1_8000_0001, 0x0, 0x2_0000_0000},
		{"2^31-1 behind in block", 0x1_ffff_ffff, 0x8000_0000, 0x1_8000_0000},
		{"2^31-1 behind across", 0x1_0000_0000, 0x8000_0001, 0x8000_0001},

		// Exactly 2^31 away: both candidates are equally close and the
		// kernel picks the one outside old's block.
		{"tie, old low half", 0x1_0000_0000, 0x8000_0000, 0x8000_0000},
		{"tie, old high half", 0x1_8000_0000, 0x0, 0x2_0000_0000},
		{"tie, old low half at 0", 0x0, 0x8000_0000, 0xffff_ffff_8000_0000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Expand32(tc.old, tc.cur32); got != tc.want {
				t.Fatalf("Expand32(%#x, %#x) = %#x, want %#x", tc.old, tc.cur32, got, tc.want)
			}
		})
	}
}

// expandRef is a brute-force reference for Expand32: of the 64-bit values
// whose low 32 bits are cur32 in old's 2^32 block and its two neighbours, it
// picks the one closest to old (modulo 2^64). On the one possible tie, at
// distance exactly 2^31, it picks the neighbour-block candidate, as the
// kernel does.
func expandRef(old uint64, cur32 uint32) uint64 {
	best, bestDist, bestK := uint64(0), uint64(0), 0
	for k := -1; k <= 1; k++ {
		c := (old>>32+uint64(int64(k)))<<32 | uint64(cur32)
		dist := c - old
		if int64(dist) < 0 {
			dist = old - c
		}
		if k == -1 || dist < bestDist || (dist == bestDist && bestK == 0) {
			best, bestDist, bestK = c, dist, k
		}
	}
	return best
}

func TestExpand32MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(0x6d70, 0x7463))
	check := func(old uint64, cur32 uint32) {
		t.Helper()
		got, want := Expand32(old, cur32), expandRef(old, cur32)
		if got != want {
			t.Fatalf("Expand32(%#x, %#x) = %#x, reference %#x", old, cur32, got, want)
		}
		if uint32(got) != cur32 {
			t.Fatalf("Expand32(%#x, %#x) = %#x: low bits changed", old, cur32, got)
		}
		if d := int64(got - old); d < -(1<<31) || d > 1<<31 {
			t.Fatalf("Expand32(%#x, %#x) = %#x: %d away from old", old, cur32, got, d)
		}
	}
	// near returns a value within ±span of x (wrapping).
	near := func(x uint64, span uint64) uint64 {
		return x + r.Uint64N(2*span+1) - span
	}
	for range 200000 {
		// Uniform inputs.
		check(r.Uint64(), r.Uint32())
		// old near a 2^32 boundary (including 0 and 2^64), cur32 near old.
		boundary := r.Uint64() &^ (1<<32 - 1)
		old := near(boundary, 1<<16)
		check(old, uint32(near(old, 1<<16)))
		// cur32 near the ambiguous point 2^31 away from old.
		old = r.Uint64()
		check(old, uint32(old)+1<<31+uint32(near(0, 4)))
		// Small 64-bit values and values near 2^64.
		check(r.Uint64N(1<<34), r.Uint32())
		check(-r.Uint64N(1<<34), r.Uint32())
	}
}

func BenchmarkExpand32(b *testing.B) {
	old := uint64(0x1_ffff_fff0)
	var sink uint64
	for i := range b.N {
		sink += Expand32(old, uint32(i))
	}
	_ = sink
}
