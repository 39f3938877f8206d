package datapath

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// The coupled congestion controls' arithmetic (bpf/coupled.h), run in BPF through
// BPF_PROG_TEST_RUN (bpf/cctest.bpf.c) and checked against a reference written here from the
// published formulas in exact rational arithmetic: LIA's window divisor (RFC 6356), OLIA's
// signed increase, BALIA's increase divisor and decrease. BPF's fixed point may be off by a
// bounded fraction, never more; with one path all three must be Reno exactly.

const (
	ccMaxSubs  = 8
	ccIncShift = 24
	ccCwndMax  = 1 << 20
	ccRTTMax   = 1 << 21
	ccLossMax  = 1 << 26
)

type ccTest = testbpf.CctestCcTest

type ccRunner struct{ objs testbpf.CctestObjects }

func newCCRunner(tb testing.TB) *ccRunner {
	tb.Helper()
	testenv.RequireRoot(tb)
	r := &ccRunner{}
	if err := testbpf.LoadCctestObjects(&r.objs, nil); err != nil {
		tb.Fatalf("load cctest: %+v", err)
	}
	tb.Cleanup(func() { r.objs.Close() })
	return r
}

func (r *ccRunner) run(tb testing.TB, in ccTest) ccTest {
	tb.Helper()
	if err := r.objs.CctestIo.Put(uint32(0), in); err != nil {
		tb.Fatal(err)
	}
	ret, err := r.objs.Cctest.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil || ret != 0 {
		tb.Fatalf("run: %d, %v", ret, err)
	}
	var out ccTest
	if err := r.objs.CctestIo.Lookup(uint32(0), &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

type ccPath struct{ cwnd, rtt, loss uint64 }

// refCompact is cc_compact: the members with a window and an RTT sample, clamped.
func refCompact(in ccTest) ([]ccPath, int) {
	var ps []ccPath
	self := ccMaxSubs
	for i := 0; i < int(min(in.Np, ccMaxSubs)); i++ {
		p := in.P[i]
		if p.Cwnd == 0 || p.SrttUs == 0 {
			continue
		}
		if i == int(in.Me) {
			self = len(ps)
		}
		ps = append(ps, ccPath{
			cwnd: min(uint64(p.Cwnd), ccCwndMax),
			rtt:  min(uint64(p.SrttUs), ccRTTMax),
			loss: min(uint64(p.LossInt), ccLossMax),
		})
	}
	return ps, self
}

func rat(n uint64) *big.Rat { return new(big.Rat).SetUint64(n) }

func ratF(r *big.Rat) float64 { f, _ := r.Float64(); return f }

// refLIA: max(cwnd_self, (Σ cwnd/rtt)² / max(cwnd/rtt²)), capped like the datapath.
func refLIA(ps []ccPath, self int) float64 {
	sum, best := new(big.Rat), new(big.Rat)
	for _, p := range ps {
		sum.Add(sum, new(big.Rat).SetFrac(new(big.Int).SetUint64(p.cwnd), new(big.Int).SetUint64(p.rtt)))
		v := new(big.Rat).SetFrac(new(big.Int).SetUint64(p.cwnd), new(big.Int).SetUint64(p.rtt*p.rtt))
		if v.Cmp(best) > 0 {
			best = v
		}
	}
	w := new(big.Rat).Mul(sum, sum)
	w.Quo(w, best)
	return min(math.Max(ratF(w), float64(ps[self].cwnd)), ccCwndMax)
}

// refOLIA: 2^24·((cwnd/rtt²)/(Σ cwnd/rtt)² + eps/cwnd), the sets M and B as the datapath
// defines them (the best paths compared with RTTs in 16 µs units).
func refOLIA(ps []ccPath, self int) (term1, eps float64) {
	sum := new(big.Rat)
	var wmax uint64
	for _, p := range ps {
		sum.Add(sum, new(big.Rat).SetFrac(new(big.Int).SetUint64(p.cwnd), new(big.Int).SetUint64(p.rtt)))
		wmax = max(wmax, p.cwnd)
	}
	me := ps[self]
	t := new(big.Rat).SetFrac(new(big.Int).SetUint64(me.cwnd), new(big.Int).SetUint64(me.rtt*me.rtt))
	t.Quo(t, new(big.Rat).Mul(sum, sum))
	term1 = ratF(t) * (1 << ccIncShift)
	// The best paths: the largest loss/rtt16².
	val := func(p ccPath) *big.Rat {
		r16 := p.rtt>>4 + 1
		return new(big.Rat).SetFrac(new(big.Int).SetUint64(p.loss), new(big.Int).SetUint64(r16*r16))
	}
	best := val(ps[0])
	for _, p := range ps[1:] {
		if v := val(p); v.Cmp(best) > 0 {
			best = v
		}
	}
	var nm, nbm int
	inM, inBM := false, false
	for i, p := range ps {
		maxw := p.cwnd == wmax
		isBest := val(p).Cmp(best) == 0
		if maxw {
			nm++
		} else if isBest {
			nbm++
		}
		if i == self {
			inM, inBM = maxw, !maxw && isBest
		}
	}
	n := float64(len(ps))
	switch {
	case nbm == 0:
	case inBM:
		eps = (1 << ccIncShift) / (n * float64(nbm) * float64(me.cwnd))
	case inM:
		eps = -(1 << ccIncShift) / (n * float64(nm) * float64(me.cwnd))
	}
	return term1, eps
}

// refBALIA: ai = 10·cwnd·(Σ x/x_self)²/((1+a)(4+a)), md = cwnd/2·min(a, 1.5), with the ratios
// x_k/x_self capped at 512 as the datapath caps them.
func refBALIA(ps []ccPath, self int) (ai, md float64) {
	me := ps[self]
	s, amax := new(big.Rat), new(big.Rat)
	for _, p := range ps {
		x := new(big.Rat).SetFrac(new(big.Int).SetUint64(p.cwnd*me.rtt), new(big.Int).SetUint64(me.cwnd*p.rtt))
		if x.Cmp(rat(512)) > 0 {
			x = rat(512)
		}
		s.Add(s, x)
		if x.Cmp(amax) > 0 {
			amax = x
		}
	}
	a := ratF(amax)
	v := new(big.Rat).Mul(s, s)
	v.Mul(v, rat(10*me.cwnd))
	ai = min(math.Max(ratF(v)/((1+a)*(4+a)), 1), ccCwndMax)
	md = float64(me.cwnd>>1) * math.Min(a, 1.5)
	return ai, md
}

// checkCC runs one case in BPF and compares it with the reference.
func checkCC(t *testing.T, r *ccRunner, in ccTest) {
	t.Helper()
	out := r.run(t, in)
	ps, self := refCompact(in)
	if int(out.N) != len(ps) || int(out.Self) != self {
		t.Fatalf("%+v: %d usable paths, self %d; want %d, %d", in, out.N, out.Self, len(ps), self)
	}
	for i, p := range ps {
		if q := out.P[i]; uint64(q.Cwnd) != p.cwnd || uint64(q.SrttUs) != p.rtt || uint64(q.LossInt) != p.loss {
			t.Fatalf("%+v: compacted path %d is %+v, want %+v", in, i, q, p)
		}
	}
	if self == ccMaxSubs {
		if out.Lia != 0 || out.Olia != 0 || out.Ai != 0 || out.Md != 0 {
			t.Fatalf("%+v: results for a path that does not count: %+v", in, out)
		}
		return
	}
	n := float64(len(ps))
	// LIA: every quotient is floored and t/cwnd_b costs at most 2^-10 of the result.
	if want := refLIA(ps, self); float64(out.Lia) > want+1e-9*want || float64(out.Lia) < want*(1-1.0/512)-1 {
		t.Fatalf("%+v: LIA window %d, reference %.3f", in, out.Lia, want)
	}
	// OLIA: the sum D loses up to n·2^-10 of a packet, each quotient one unit.
	term1, eps := refOLIA(ps, self)
	want := term1 + eps
	if tol := term1*(n/512) + 3; math.Abs(float64(out.Olia)-want) > tol {
		t.Fatalf("%+v: OLIA increase %d, reference %.3f (%.3f%+.3f)", in, out.Olia, want, term1, eps)
	}
	// BALIA: each ratio loses up to 2^-10, s up to n·2^-10 of at least 1.
	ai, md := refBALIA(ps, self)
	if tol := ai*(4*n/1024) + 1; math.Abs(float64(out.Ai)-ai) > tol {
		t.Fatalf("%+v: BALIA ai %d, reference %.3f", in, out.Ai, ai)
	}
	if tol := float64(ps[self].cwnd)/1024 + 1; math.Abs(float64(out.Md)-md) > tol {
		t.Fatalf("%+v: BALIA md %d, reference %.3f", in, out.Md, md)
	}
	if len(ps) == 1 {
		w := ps[0].cwnd
		if uint64(out.Lia) != w || out.Olia != int64((1<<ccIncShift)/w) || uint64(out.Ai) != w || uint64(out.Md) != w>>1 {
			t.Fatalf("%+v: one path is not Reno: LIA %d, OLIA %d, BALIA ai %d md %d", in, out.Lia, out.Olia, out.Ai, out.Md)
		}
	}
}

func ccCase(cwnd, rtt, loss []uint32, me uint32) ccTest {
	var in ccTest
	in.Np = uint32(len(cwnd))
	in.Me = me
	for i := range cwnd {
		in.P[i].Cwnd, in.P[i].SrttUs, in.P[i].LossInt = cwnd[i], rtt[i], loss[i]
	}
	return in
}

func TestCoupledArithmetic(t *testing.T) {
	r := newCCRunner(t)
	for _, c := range []ccTest{
		ccCase([]uint32{10}, []uint32{40000}, []uint32{0}, 0),
		ccCase([]uint32{1}, []uint32{1}, []uint32{0}, 0),
		ccCase([]uint32{ccCwndMax}, []uint32{ccRTTMax}, []uint32{ccLossMax}, 0),
		// Two equal paths: LIA's window is twice cwnd (each subflow gets half of Reno's increase).
		ccCase([]uint32{20, 20}, []uint32{40000, 40000}, []uint32{100, 100}, 1),
		// Unequal RTTs above 100 ms, where the old implementation's cwnd<<32/srtt² was 0.
		ccCase([]uint32{30, 8}, []uint32{150000, 400000}, []uint32{500, 20}, 0),
		ccCase([]uint32{30, 8}, []uint32{150000, 400000}, []uint32{500, 20}, 1),
		// OLIA's sets: path 1 is best (longest loss interval for its RTT) but not largest.
		ccCase([]uint32{40, 10, 10}, []uint32{20000, 20000, 20000}, []uint32{10, 5000, 10}, 1),
		ccCase([]uint32{40, 10, 10}, []uint32{20000, 20000, 20000}, []uint32{10, 5000, 10}, 0),
		ccCase([]uint32{40, 10, 10}, []uint32{20000, 20000, 20000}, []uint32{10, 5000, 10}, 2),
		// Members without a sample do not count; the asking one among them gets nothing.
		ccCase([]uint32{10, 0, 12}, []uint32{10000, 10000, 0}, []uint32{0, 0, 0}, 0),
		ccCase([]uint32{10, 0, 12}, []uint32{10000, 10000, 0}, []uint32{0, 0, 0}, 2),
		ccCase([]uint32{5, 6, 7, 8, 9, 10, 11, 12}, []uint32{1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000}, []uint32{1, 2, 3, 4, 5, 6, 7, 8}, 7),
	} {
		checkCC(t, r, c)
	}
}

// randCC draws a case: up to 8 members (np may claim more), windows and RTTs over the whole
// clamped range and beyond, some without samples.
func randCC(rng *rand.Rand) ccTest {
	var in ccTest
	in.Np = uint32(rng.IntN(10))
	in.Me = uint32(rng.IntN(9))
	for i := range in.P {
		p := &in.P[i]
		switch rng.IntN(4) {
		case 0:
			p.Cwnd = uint32(rng.IntN(3))
		case 1:
			p.Cwnd = rng.Uint32()
		default:
			p.Cwnd = uint32(rng.IntN(2000)) + 1
		}
		switch rng.IntN(4) {
		case 0:
			p.SrttUs = uint32(rng.IntN(3))
		case 1:
			p.SrttUs = rng.Uint32()
		default:
			p.SrttUs = uint32(rng.IntN(500000)) + 1
		}
		if rng.IntN(3) == 0 {
			p.LossInt = rng.Uint32()
		} else {
			p.LossInt = uint32(rng.IntN(100000))
		}
	}
	return in
}

func TestCoupledArithmeticRandom(t *testing.T) {
	r := newCCRunner(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		checkCC(t, r, randCC(rng))
	}
}

func FuzzCoupledArithmetic(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	r := newCCRunner(f)
	f.Fuzz(func(t *testing.T, a, b uint64) {
		checkCC(t, r, randCC(rand.New(rand.NewPCG(a, b))))
	})
}
