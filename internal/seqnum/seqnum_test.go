package seqnum

import (
	"math/rand/v2"
	"testing"
)

const maxDSN = ^DSN(0)

func TestDSNCompare(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     DSN
		lt, lteq bool
	}{
		{"equal", 7, 7, false, true},
		{"plain less", 1, 2, true, true},
		{"plain greater", 2, 1, false, false},
		{"max before 0", maxDSN, 0, true, true},
		{"0 after max", 0, maxDSN, false, false},
		{"across 2^64", maxDSN - 0xf, 0x10, true, true},
		{"across 2^64 reversed", 0x10, maxDSN - 0xf, false, false},
		{"2^63-1 ahead", 0, 1<<63 - 1, true, true},
		{"2^63-1 behind", 1<<63 - 1, 0, false, false},
		{"across 2^32 is not special", 0xffffffff, 1 << 32, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.LessThan(tc.b); got != tc.lt {
				t.Errorf("%#x.LessThan(%#x) = %v, want %v", uint64(tc.a), uint64(tc.b), got, tc.lt)
			}
			if got := tc.a.LessThanEq(tc.b); got != tc.lteq {
				t.Errorf("%#x.LessThanEq(%#x) = %v, want %v", uint64(tc.a), uint64(tc.b), got, tc.lteq)
			}
		})
	}
}

func TestDSNWindow(t *testing.T) {
	first := maxDSN - 0xf // window [2^64-16, 16) straddles the wrap
	const size = 0x20
	for _, tc := range []struct {
		d  DSN
		in bool
	}{
		{first - 1, false},
		{first, true},
		{maxDSN, true},
		{0, true},
		{0xf, true},
		{0x10, false}, // first+size: end is exclusive
		{1 << 62, false},
	} {
		if got := tc.d.InWindow(first, size); got != tc.in {
			t.Errorf("%#x.InWindow(%#x, %#x) = %v, want %v", uint64(tc.d), uint64(first), size, got, tc.in)
		}
		if got := tc.d.InRange(first, first.Add(size)); got != tc.in {
			t.Errorf("%#x.InRange(%#x, %#x) = %v, want %v", uint64(tc.d), uint64(first), uint64(first.Add(size)), got, tc.in)
		}
	}
	if DSN(5).InWindow(5, 0) {
		t.Error("empty window contains its start")
	}
}

func TestDSNAddSub(t *testing.T) {
	if got := maxDSN.Add(1); got != 0 {
		t.Errorf("max.Add(1) = %#x, want 0", uint64(got))
	}
	if got := (maxDSN - 0xf).Add(0x20); got != 0x10 {
		t.Errorf("Add across 2^64 = %#x, want 0x10", uint64(got))
	}
	if got := DSN(0x10).Sub(maxDSN - 0xf); got != 0x20 {
		t.Errorf("Sub across 2^64 = %#x, want 0x20", got)
	}
	if got := DSN(1 << 32).Sub(0xffffffff); got != 1 {
		t.Errorf("Sub across 2^32 = %#x, want 1", got)
	}
}

// TestDSNProperties checks on random inputs that moving forward by less than
// 2^63 always compares as later, wherever the wrap falls.
func TestDSNProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		a := DSN(r.Uint64())
		n := r.Uint64N(1<<63-1) + 1 // (0, 2^63)
		b := a.Add(n)
		if !a.LessThan(b) || b.LessThanEq(a) || b.Sub(a) != n {
			t.Fatalf("a=%#x n=%#x: a<b %v, b<=a %v, b-a %#x", uint64(a), n, a.LessThan(b), b.LessThanEq(a), b.Sub(a))
		}
		if !b.InWindow(a, n+1) || b.InWindow(a, n) {
			t.Fatalf("a=%#x n=%#x: window edge wrong", uint64(a), n)
		}
	}
}

func TestValueCompare(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     Value
		lt, lteq bool
	}{
		{"equal", 7, 7, false, true},
		{"plain less", 1, 2, true, true},
		{"plain greater", 2, 1, false, false},
		{"0xffffffff before 0", 0xffffffff, 0, true, true},
		{"0 after 0xffffffff", 0, 0xffffffff, false, false},
		{"across wrap", 0xfffffff0, 0x10, true, true},
		{"across wrap reversed", 0x10, 0xfffffff0, false, false},
		{"2^31-1 ahead", 0, 0x7fffffff, true, true},
		{"2^31-1 behind", 0x7fffffff, 0, false, false},
		{"2^31+1 ahead is behind", 0, 0x80000001, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.LessThan(tc.b); got != tc.lt {
				t.Errorf("%#x.LessThan(%#x) = %v, want %v", uint32(tc.a), uint32(tc.b), got, tc.lt)
			}
			if got := tc.a.LessThanEq(tc.b); got != tc.lteq {
				t.Errorf("%#x.LessThanEq(%#x) = %v, want %v", uint32(tc.a), uint32(tc.b), got, tc.lteq)
			}
		})
	}
}

func TestValueRange(t *testing.T) {
	for _, tc := range []struct {
		v, a, b Value
		in      bool
	}{
		{0xffffffff, 0xfffffff0, 0x10, true},
		{0, 0xfffffff0, 0x10, true},
		{0xf, 0xfffffff0, 0x10, true},
		{0x10, 0xfffffff0, 0x10, false},
		{0xfffffff0, 0xfffffff0, 0x10, true},
		{0xffffffef, 0xfffffff0, 0x10, false},
		{5, 5, 5, false},
		{3, 1, 5, true},
		{5, 1, 5, false},
	} {
		if got := tc.v.InRange(tc.a, tc.b); got != tc.in {
			t.Errorf("%#x.InRange(%#x, %#x) = %v, want %v", uint32(tc.v), uint32(tc.a), uint32(tc.b), got, tc.in)
		}
	}
	for _, tc := range []struct {
		v, first Value
		size     uint32
		in       bool
	}{
		{0xfffffffe, 0xfffffffe, 4, true},
		{0xffffffff, 0xfffffffe, 4, true},
		{0, 0xfffffffe, 4, true},
		{1, 0xfffffffe, 4, true},
		{2, 0xfffffffe, 4, false},
		{0xfffffffd, 0xfffffffe, 4, false},
	} {
		if got := tc.v.InWindow(tc.first, tc.size); got != tc.in {
			t.Errorf("%#x.InWindow(%#x, %d) = %v, want %v", uint32(tc.v), uint32(tc.first), tc.size, got, tc.in)
		}
	}
}

func TestValueAddSub(t *testing.T) {
	if got := Value(0xffffffff).Add(1); got != 0 {
		t.Errorf("0xffffffff.Add(1) = %#x, want 0", uint32(got))
	}
	if got := Value(0x10).Sub(0xfffffff0); got != 0x20 {
		t.Errorf("Sub across wrap = %#x, want 0x20", got)
	}
}

func TestRelativeSSN(t *testing.T) {
	for _, tc := range []struct{ isn, seq, want uint32 }{
		{1000, 1001, 1}, // first data byte
		{1000, 1000, 0}, // the SYN itself
		{1000, 2500, 1500},
		{0xfffffffe, 0xffffffff, 1}, // first data byte just before the wrap
		{0xfffffffe, 0, 2},          // across the wrap
		{0xffffffff, 0x10, 0x11},
	} {
		if got := RelativeSSN(tc.isn, tc.seq); got != tc.want {
			t.Errorf("RelativeSSN(%#x, %#x) = %#x, want %#x", tc.isn, tc.seq, got, tc.want)
		}
	}
}
