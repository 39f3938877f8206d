package control

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

// Views of the unequal-path tests. fastFull holds one byte more than its room (two windows):
// it takes nothing now. Windows of 100 segments make its queue three round trips long (30 ms),
// well below the slow path's 100 ms.
var (
	fastIdle = SubflowView{SRTT: 10 * time.Millisecond, Cwnd: 100, MSS: 1400}
	fastFull = SubflowView{SRTT: 10 * time.Millisecond, Cwnd: 100, MSS: 1400, InFlight: 280000}
	slowIdle = SubflowView{SRTT: 100 * time.Millisecond, Cwnd: 100, MSS: 1400}
)

// TestSchedulersUnequalPaths: blest and ecf take the fastest subflow while it has room; when
// only a much slower one has, they wait for the fastest (no pick) unless the slower one helps:
// for ecf a backlog the fastest would take longer to deliver than the slower its next mapping,
// for blest a peer's window large enough for what the fastest sends meanwhile. default, for
// contrast, never waits.
func TestSchedulersUnequalPaths(t *testing.T) {
	const big = 1 << 30
	with := func(v SubflowView, f func(*SubflowView)) SubflowView { f(&v); return v }
	// A slow path of 1000 segments: 300 kB on it stretch its delivery only to 121 ms.
	slowBig := with(slowIdle, func(v *SubflowView) { v.Cwnd = 1000 })
	slowBigHolding := with(slowBig, func(v *SubflowView) { v.InFlight = 300000 })
	fastBlocked := with(fastIdle, func(v *SubflowView) { v.Blocked = true })
	// Room (two windows of ten packets), but ten windows of one packet queued: default
	// prefers the idle slow path (110 ms against 100 ms); with the slow path's RTT deviation
	// of 30 ms ecf does not.
	fastQueued := with(fastIdle, func(v *SubflowView) { v.Cwnd, v.InFlight = 1, 14000 })
	slowJittery := with(slowIdle, func(v *SubflowView) { v.RTTVar = 30 * time.Millisecond })
	equal := SubflowView{SRTT: 20 * time.Millisecond, Cwnd: 10, MSS: 1400}
	equalLoaded := with(equal, func(v *SubflowView) { v.InFlight = 14000 })
	backup := func(v SubflowView) SubflowView { v.Backup = true; return v }
	for _, tc := range []struct {
		name  string
		sched string
		views []SubflowView
		conn  ConnView
		want  []int
	}{
		{"fastest has room", "ecf", []SubflowView{slowIdle, fastIdle}, ConnView{Backlog: big, Window: big}, []int{1}},
		{"fastest has room", "blest", []SubflowView{slowIdle, fastIdle}, ConnView{Backlog: big, Window: big}, []int{1}},
		{"fastest full, small backlog", "default", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 100000, Window: big}, []int{0}},
		{"fastest full, small backlog", "ecf", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 100000, Window: big}, nil},
		// T_f = 10 ms × (1 + (280000 + 4 MiB) / 140000) = 330 ms ≥ T_s = 100 ms.
		{"fastest full, large backlog", "ecf", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 4 << 20, Window: 1 << 20}, []int{0}},
		{"fastest's writer full, small backlog", "ecf", []SubflowView{slowIdle, fastBlocked}, ConnView{Backlog: 100000, Window: big}, nil},
		{"fastest's writer full", "default", []SubflowView{slowIdle, fastBlocked}, ConnView{Backlog: 100000, Window: big}, []int{0}},
		{"fastest queued, slow path jittery", "default", []SubflowView{slowJittery, fastQueued}, ConnView{Backlog: 1000, Window: big}, []int{0}},
		{"fastest queued, slow path jittery", "ecf", []SubflowView{slowJittery, fastQueued}, ConnView{Backlog: 1000, Window: big}, []int{1}},
		{"fastest queued, slow path steady", "ecf", []SubflowView{slowIdle, fastQueued}, ConnView{Backlog: 1000, Window: big}, []int{0}},
		// X = 1.2 × 1400 × 10 × (100 + 4.5) = 1755600 bytes over the slow path's 100 ms.
		{"fastest full, 1 MiB window", "blest", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 4 << 20, Window: 1 << 20}, nil},
		{"fastest full, 2 MiB window", "blest", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 4 << 20, Window: 2 << 20}, []int{0}},
		// X = 1.2 × 1400 × 12.14 × (100 + 5.57) = 2153657 over 121 ms, 1755600 over 100 ms:
		// in 2370000 bytes of window beside the mapping, not beside 300 kB more.
		{"fastest full, slow idle", "blest", []SubflowView{slowBig, fastFull}, ConnView{Backlog: 4 << 20, Window: 2370000}, []int{0}},
		{"fastest full, slow holds 300 kB", "blest", []SubflowView{slowBigHolding, fastFull}, ConnView{Backlog: 4 << 20, Window: 2370000}, nil},
		{"fastest full, no window known", "blest", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 1000, Window: math.MaxInt}, []int{0}},
		{"fastest's writer full, 1 MiB window", "blest", []SubflowView{slowIdle, fastBlocked}, ConnView{Backlog: 1000, Window: 1 << 20}, nil},
		{"fastest full, 1 MiB window", "default", []SubflowView{slowIdle, fastFull}, ConnView{Backlog: 4 << 20, Window: 1 << 20}, []int{0}},
		{"equal paths", "ecf", []SubflowView{equal, equal}, ConnView{Backlog: 1000, Window: 1 << 20}, []int{0}},
		{"equal paths, first loaded", "ecf", []SubflowView{equalLoaded, equal}, ConnView{Backlog: 1000, Window: 1 << 20}, []int{1}},
		{"equal paths", "blest", []SubflowView{equal, equal}, ConnView{Backlog: 1000, Window: 1 << 20}, []int{0}},
		{"equal paths, first loaded", "blest", []SubflowView{equalLoaded, equal}, ConnView{Backlog: 1000, Window: 1 << 20}, []int{1}},
		{"backups only", "ecf", []SubflowView{backup(slowIdle), backup(fastIdle)}, ConnView{Backlog: 1000, Window: big}, []int{1}},
		{"backups only, fastest full", "ecf", []SubflowView{backup(slowIdle), backup(fastFull)}, ConnView{Backlog: 4 << 20, Window: big}, []int{0}},
		{"backups only", "blest", []SubflowView{backup(slowIdle), backup(fastIdle)}, ConnView{Backlog: 1000, Window: big}, []int{1}},
		{"backups only, fastest full", "blest", []SubflowView{backup(slowIdle), backup(fastFull)}, ConnView{Backlog: 1000, Window: big}, []int{0}},
		{"one slow subflow", "ecf", []SubflowView{slowIdle}, ConnView{Backlog: 1000, Window: 100000}, []int{0}},
		{"one slow subflow", "blest", []SubflowView{slowIdle}, ConnView{Backlog: 1000, Window: 100000}, []int{0}},
		{"none has room", "ecf", []SubflowView{fastFull, fastBlocked}, ConnView{Backlog: 1000, Window: big}, nil},
		{"none has room", "blest", []SubflowView{fastFull, fastBlocked}, ConnView{Backlog: 1000, Window: big}, nil},
	} {
		s, err := NewScheduler(tc.sched)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Pick(tc.views, tc.conn); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s, %s: got %v, want %v", tc.sched, tc.name, got, tc.want)
		}
	}
}

// TestECFHysteresis: a backlog for which the fastest subflow would take 10% longer than the
// slower one goes on the slower one, unless ecf is waiting for the fastest already: then it
// takes β = 25% more.
func TestECFHysteresis(t *testing.T) {
	views := []SubflowView{slowIdle, fastFull}
	// T_f = 10 ms × (1 + (280000 + 1120000) / 140000) = 110 ms.
	const k = 1120000
	if got := (&ecf{}).Pick(views, ConnView{Backlog: k}); !reflect.DeepEqual(got, []int{0}) {
		t.Errorf("not waiting: got %v, want [0]", got)
	}
	e := &ecf{}
	if got := e.Pick(views, ConnView{Backlog: 100000}); got != nil {
		t.Fatalf("small backlog: got %v, want none", got)
	}
	if got := e.Pick(views, ConnView{Backlog: k}); got != nil {
		t.Errorf("waiting: got %v, want none", got)
	}
	// T_f = 130 ms ≥ 1.25 × 100 ms: the slower one, and the wait is over.
	if got := e.Pick(views, ConnView{Backlog: 1400000}); !reflect.DeepEqual(got, []int{0}) {
		t.Errorf("waiting, larger backlog: got %v, want [0]", got)
	}
	if got := e.Pick(views, ConnView{Backlog: k}); !reflect.DeepEqual(got, []int{0}) {
		t.Errorf("after the wait: got %v, want [0]", got)
	}
}

// TestBLESTLambda: λ starts at 1.2 and moves once per round trip of the fastest subflow while
// the choice arises, up 0.04 after data waited for the peer's window, down 0.01 otherwise,
// within [1, 1.3]; the window that lets the slower subflow be used moves with it.
func TestBLESTLambda(t *testing.T) {
	views := []SubflowView{slowIdle, fastFull}
	b := &blest{}
	t0 := time.Unix(1000, 0)
	// X / λ = 1463000 bytes; the mapping takes 65534 more.
	window := func(lambda float64) int { return int(lambda*1463000) + 65534 }
	pick := func(at time.Duration, waits uint64, wnd int) []int {
		return b.Pick(views, ConnView{Backlog: 1 << 20, Window: wnd, WindowWaits: waits, Now: t0.Add(at)})
	}
	if got := pick(0, 0, window(1.2)+2); !reflect.DeepEqual(got, []int{0}) || b.lambda != 1.2 {
		t.Fatalf("start: got %v, λ %v", got, b.lambda)
	}
	if got := pick(5*time.Millisecond, 1, window(1.2)+2); !reflect.DeepEqual(got, []int{0}) || b.lambda != 1.2 {
		t.Fatalf("within a round trip: got %v, λ %v", got, b.lambda)
	}
	if got := pick(10*time.Millisecond, 1, window(1.2)+2); got != nil || math.Abs(b.lambda-1.24) > 1e-9 {
		t.Fatalf("after a window wait: got %v, λ %v, want none and 1.24", got, b.lambda)
	}
	for i := range 20 {
		pick(time.Duration(20+10*i)*time.Millisecond, uint64(2+i), window(1.3)+2)
	}
	if b.lambda != blestLambdaMax {
		t.Fatalf("after 20 waits: λ %v, want %v", b.lambda, blestLambdaMax)
	}
	for i := range 40 {
		pick(time.Duration(300+10*i)*time.Millisecond, 21, window(1.3)+2)
	}
	if b.lambda != blestLambdaMin {
		t.Fatalf("after 40 round trips without: λ %v, want %v", b.lambda, blestLambdaMin)
	}
	if got := pick(time.Second, 21, window(1)+2); !reflect.DeepEqual(got, []int{0}) {
		t.Fatalf("λ 1: got %v, want [0]", got)
	}
}

// sendAll hands backlog bytes in mappings of at most maxMapping to the subflows s picks, the
// subflows acknowledging nothing meanwhile, until all are handed over or s picks none. It
// returns the bytes each subflow got and whether s stopped while a subflow had room (waited).
func sendAll(s Scheduler, views []SubflowView, backlog, window int) (got []int, waited bool) {
	views = append([]SubflowView(nil), views...)
	got = make([]int, len(views))
	for backlog > 0 {
		picks := s.Pick(views, ConnView{Backlog: backlog, Window: window})
		if len(picks) == 0 {
			return got, slices.ContainsFunc(views, SubflowView.room)
		}
		n := min(backlog, maxMapping)
		for _, i := range picks {
			views[i].Queued += n
			got[i] += n
		}
		backlog -= n
	}
	return got, false
}

// TestSchedulersShareLoad: with equal paths every scheduler uses both; with a fast and a much
// slower path, blest and ecf leave a small transfer to the fast one and wait for it while the
// slow one has room, where default spills onto the slow one; a large transfer uses both (blest:
// in a window large enough) until neither has room.
func TestSchedulersShareLoad(t *testing.T) {
	equal := SubflowView{SRTT: 20 * time.Millisecond, Cwnd: 10, MSS: 1400}
	for _, name := range []string{"default", "roundrobin", "redundant", "blest", "ecf"} {
		s, _ := NewScheduler(name)
		got, waited := sendAll(s, []SubflowView{equal, equal}, 200000, 8<<20)
		if got[0] == 0 || got[1] == 0 || waited {
			t.Errorf("%s, equal paths: %v bytes each, waited %t, want both used and no wait", name, got, waited)
		}
	}
	for _, tc := range []struct {
		sched             string
		backlog, wnd      int
		slowUsed, waiting bool
	}{
		{"default", 400000, 1 << 20, true, false},
		{"ecf", 400000, 1 << 20, false, true},
		{"blest", 400000, 1 << 20, false, true},
		{"ecf", 4 << 20, 1 << 20, true, false},
		{"blest", 4 << 20, 1 << 20, false, true},
		{"blest", 4 << 20, 8 << 20, true, false},
	} {
		s, _ := NewScheduler(tc.sched)
		got, waited := sendAll(s, []SubflowView{slowIdle, fastIdle}, tc.backlog, tc.wnd)
		if got[1] == 0 || (got[0] > 0) != tc.slowUsed || waited != tc.waiting {
			t.Errorf("%s, %d bytes, window %d: slow %d, fast %d, waited %t; want slow used %t, waiting %t",
				tc.sched, tc.backlog, tc.wnd, got[0], got[1], waited, tc.slowUsed, tc.waiting)
		}
	}
}

// TestScheduleWaitsForFastest: with ecf, a small write waits while the fast subflow is full
// rather than go on the slow one, the send path looking again a millisecond later; once the
// fast subflow's ACKs free room, the next look hands the data to it.
func TestScheduleWaitsForFastest(t *testing.T) {
	c, _ := newCoreConn(t, "ecf")
	slow := addCoreSub(c, 100*time.Millisecond)
	fast := addCoreSub(c, 10*time.Millisecond)
	for _, sf := range c.subs {
		sf.shm.St.SndCwnd = 100
	}
	fast.written.Store(280000) // two windows in its socket, none acknowledged: full
	queueWrite(c, 3000)
	c.pumpTx()
	if n := len(handed(slow)) + len(handed(fast)); n != 0 {
		t.Fatalf("%d mappings handed over while waiting for the fast subflow", n)
	}
	if c.st.pumpAt.IsZero() || time.Until(c.st.pumpAt) > pumpNoRoom {
		t.Fatalf("no retry within %v (pumpAt %v)", pumpNoRoom, c.st.pumpAt)
	}
	fast.shm.St.SndUnaRel = 140001 // a window acknowledged
	c.st.pumpAt = time.Time{}      // the timer fired
	c.pumpTx()
	got := handed(fast)
	if len(got) != 1 || len(handed(slow)) != 0 {
		t.Fatalf("after the fast subflow's ACKs: %d mappings on it, want 1, none on the slow one", len(got))
	}
	checkChunk(t, got[0], coreSndStart, 3000)
}
