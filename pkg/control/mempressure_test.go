package control

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeHeap is an injected heap reading and clock for memGuard.
type fakeHeap struct {
	heap  uint64
	reads int
	now   time.Time
}

func (f *fakeHeap) guard(limit int64, log *slog.Logger) *memGuard {
	g := &memGuard{heap: func() uint64 { f.reads++; return f.heap }, now: func() time.Time { return f.now },
		gc: func() {}}
	g.init(limit, log)
	return g
}

// TestMemGuardDecision: no limit never refuses; under a limit, refusal starts above 90% of it
// and ends below.
func TestMemGuardDecision(t *testing.T) {
	const limit = 1000 << 20
	for _, tc := range []struct {
		limit int64
		heap  uint64
		over  bool
	}{
		{0, 1 << 40, false},
		{limit, 0, false},
		{limit, 899 << 20, false},
		{limit, 900 << 20, false},
		{limit, 900<<20 + 1, true},
		{limit, 2000 << 20, true},
	} {
		f := &fakeHeap{heap: tc.heap, now: time.Unix(1000, 0)}
		g := f.guard(tc.limit, nil)
		if _, _, over := g.pressure(); over != tc.over {
			t.Errorf("limit %d, heap %d: over %v, want %v", tc.limit, tc.heap, over, tc.over)
		}
		if tc.limit == 0 && f.reads != 0 {
			t.Errorf("no limit: the heap was read %d times, want never", f.reads)
		}
	}
}

// TestMemGuardSampling: the heap is read at most once per memorySampleEvery, however often the
// guard is asked, and at once after the limit changes.
func TestMemGuardSampling(t *testing.T) {
	f := &fakeHeap{heap: 10 << 20, now: time.Unix(1000, 0)}
	g := f.guard(100<<20, nil)
	for range 1000 {
		g.pressure()
	}
	if f.reads != 1 {
		t.Fatalf("%d heap reads for 1000 asks within one sample interval, want 1", f.reads)
	}
	f.heap = 95 << 20
	if _, _, over := g.pressure(); over {
		t.Error("over on a stale sample taken under the limit: want the old reading until the interval passes")
	}
	f.now = f.now.Add(memorySampleEvery)
	if heap, _, over := g.pressure(); !over || heap != 95<<20 {
		t.Errorf("after the interval: heap %d over %v, want %d and over", heap, over, 95<<20)
	}
	f.heap = 10 << 20
	g.setLimit(200 << 20) // a new limit samples again at once
	if _, _, over := g.pressure(); over || f.reads != 3 {
		t.Errorf("after a new limit: over %v with %d reads, want not over and a fresh read", over, f.reads)
	}
}

// TestMemGuardRealHeap: the runtime's heap reading is non-zero, and a limit below it refuses.
func TestMemGuardRealHeap(t *testing.T) {
	if heapInUse() == 0 {
		t.Fatalf("runtime/metrics %s reads 0", heapMetric)
	}
	var g memGuard
	g.init(1, nil)
	if _, _, over := g.pressure(); !over {
		t.Error("a 1-byte limit does not refuse")
	}
}

// TestStackRefusesForMemory: refusals are counted, logged at most once a second with the number
// left out, and Dial's error says why.
func TestStackRefusesForMemory(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f := &fakeHeap{heap: 95 << 20, now: time.Unix(1000, 0)}
	s := &Stack{log: log}
	s.mem = memGuard{heap: func() uint64 { f.reads++; return f.heap }, now: func() time.Time { return f.now }, gc: func() {}}
	s.mem.init(100<<20, log)
	for range 100 {
		if !s.refuseForMemory("accept", "10.0.0.1:1234") {
			t.Fatal("not refused over the limit")
		}
	}
	if n := s.stats.MemoryPressureRefused.Load(); n != 100 {
		t.Errorf("MemoryPressureRefused %d, want 100", n)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 1 {
		t.Errorf("%d log lines for 100 refusals within a second, want 1:\n%s", lines, buf.String())
	}
	if _, _, err := s.dial(t.Context(), &Dialer{}, "tcp", "10.0.0.2:80", nil); !errors.Is(err, ErrMemoryPressure) {
		t.Errorf("dial over the limit: %v, want ErrMemoryPressure", err)
	}
	f.heap = 50 << 20
	f.now = f.now.Add(memorySampleEvery)
	if s.refuseForMemory("accept", "10.0.0.1:1234") {
		t.Error("refused under the limit")
	}
	if n := s.stats.MemoryPressureRefused.Load(); n != 101 {
		t.Errorf("MemoryPressureRefused %d, want 101", n)
	}
}

// TestMemGuardCollects: while over, the guard asks for a collection at most once a second, and
// reads the heap afresh once it is done: memory freed since the last one counts.
func TestMemGuardCollects(t *testing.T) {
	f := &fakeHeap{heap: 95 << 20, now: time.Unix(1000, 0)}
	done := make(chan struct{}, 10)
	g := f.guard(100<<20, nil)
	// The collection frees the garbage; it runs once the asks below are made, so that none of
	// them reads the heap again after it (and marks the reading fresh).
	release := make(chan struct{})
	g.gc = func() { <-release; f.heap = 10 << 20; done <- struct{}{} }
	for range 100 {
		g.pressure()
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no collection asked for while over")
	}
	if len(done) != 0 {
		t.Fatalf("%d more collections within a second", len(done))
	}
	for g.sampled.Load() != 0 { // the collection's goroutine marks the reading stale after it
		time.Sleep(time.Millisecond)
	}
	if heap, _, over := g.pressure(); over || heap != 10<<20 {
		t.Errorf("after the collection: heap %d over %v, want %d and not over", heap, over, 10<<20)
	}
	f.heap = 95 << 20
	f.now = f.now.Add(memorySampleEvery)
	g.pressure() // over again within the second: no collection
	f.now = f.now.Add(memoryGCEvery)
	g.pressure()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no collection a second later")
	}
}
