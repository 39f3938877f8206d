package main

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	rtmetrics "runtime/metrics"
	"testing"
)

// TestHeapReleaserRule: quiet (little allocated, and so little that at that rate the free
// pages would outlast a minute), and the free pages many both absolutely and against what is
// live; anything else keeps them.
func TestHeapReleaserRule(t *testing.T) {
	r := newHeapReleaser(nil)
	const mi, ki = 1 << 20, 1 << 10
	for _, tc := range []struct {
		allocated, free, live uint64
		want                  bool
	}{
		{0, 16 * mi, 8 * mi, true},
		{1 * mi, 61 * mi, 200 * mi, true},    // at the allocation bound
		{1*mi + 1, 200 * mi, 8 * mi, false},  // allocating
		{64 * mi, 200 * mi, 100 * mi, false}, // moving data
		{900 * ki, 8 * mi, 8 * mi, false},    // steadily, a little: the pages would be taken again
		{100 * ki, 5 * mi, 8 * mi, false},    // under a minute's worth at this rate
		{64 * ki, 4*mi + 1, 8 * mi, true},    // less than that
		{0, 4*mi - 1, 0, false},              // too little free, even with nothing live
		{0, 5 * mi, 0, true},                 //
		{0, 15 * mi, 64 * mi, false},         // little against what is live
		{0, 16 * mi, 64*mi + 3, true},        // a quarter of it (rounded down)
		{0, 16 * mi, 64*mi + 4, false},       //
		{0, 0, 0, false},                     // nothing
		{0, 16 * mi, 1<<64 - 1, false},       // no overflow in the ratio
		{1<<64 - 1, 1<<64 - 1, 0, false},     // busy beats everything
		{1 * mi, 1<<64 - 1, 1<<64 - 1, true}, // no overflow in the horizon
	} {
		if got := r.shouldRelease(tc.allocated, tc.free, tc.live); got != tc.want {
			t.Errorf("allocated %d, free %d, live %d: release %v, want %v", tc.allocated, tc.free, tc.live, got, tc.want)
		}
	}
}

// TestHeapReleaserReleases runs the releaser's steps against this process's own heap: after a
// burst of garbage, a quiet step gives the free pages back (the runtime's own count of free,
// unreleased heap falls), a step while allocating does not, and a step with nothing free does
// not either.
func TestHeapReleaserReleases(t *testing.T) {
	r := newHeapReleaser(nil)
	calls := 0
	r.release = func() { calls++; heapFreeRelease() }
	if r.step() {
		t.Fatal("the first step released: it only takes the allocation count")
	}
	burst := func() {
		var keep [][]byte
		for range 64 {
			keep = append(keep, make([]byte, 1<<20))
		}
		sink = keep
		sink = nil
		runtime.GC()
	}
	burst()
	if free := heapFree(); free < 32<<20 {
		t.Fatalf("after a 64 MiB burst and a collection, %d bytes free: the test cannot tell", free)
	}
	// Allocating: the burst was since the last step.
	if r.step() || calls != 0 {
		t.Fatalf("released while allocating (%d calls)", calls)
	}
	// Quiet once: not yet. Quiet twice in a row: released, and the runtime's count of free pages
	// falls.
	if r.step() || calls != 0 {
		t.Fatalf("released after one quiet check (%d calls)", calls)
	}
	before := heapFree()
	if !r.step() || calls != 1 {
		t.Fatalf("quiet twice with %d bytes free: not released (%d calls)", before, calls)
	}
	if after := heapFree(); after > before/4 {
		t.Errorf("free, not released: %d bytes before, %d after", before, after)
	}
	if r.releases.Load() != 1 || r.released.Load() < 24<<20 {
		t.Errorf("counted %d releases of %d bytes", r.releases.Load(), r.released.Load())
	}
	// Nothing left to release: the next quiet steps keep what little is free.
	for range 3 {
		if r.step() || calls != 1 {
			t.Errorf("released again with %d bytes free (%d calls)", heapFree(), calls)
		}
	}
	// A burst between two quiet checks starts the count again.
	burst()
	r.step() // the burst's second
	r.step() // quiet once
	burst()
	if r.step() || calls != 1 {
		t.Errorf("released in a second that allocated 64 MiB (%d calls)", calls)
	}
	if r.step(); calls != 1 {
		t.Errorf("released after one quiet check since the burst (%d calls)", calls)
	}
	if !r.step() || calls != 2 {
		t.Errorf("quiet twice after the burst: not released (%d calls)", calls)
	}
}

var sink [][]byte

func heapFreeRelease() {
	newHeapReleaser(nil).release()
}

// heapFree is the runtime's count of free heap pages not yet given back.
func heapFree() uint64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// TestHeapReleaserMetrics: the releases and the bytes released are exported as counters.
func TestHeapReleaserMetrics(t *testing.T) {
	h := newHeapReleaser(nil)
	h.releases.Add(3)
	h.released.Add(12 << 20)
	m := &metrics{b: &backend{heap: h}}
	got := gather(t, heapOnly{m})
	if len(got) != 2 || got["mptcpd_heap_releases_total"] != 3 || got["mptcpd_heap_released_bytes_total"] != 12<<20 {
		t.Errorf("heap metrics %v, want 3 releases of 12 MiB", got)
	}
}

// heapOnly collects the heap releaser's metrics alone.
type heapOnly struct{ m *metrics }

func (h heapOnly) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHeapReleases
	ch <- descHeapReleased
}

func (h heapOnly) Collect(ch chan<- prometheus.Metric) { h.m.collectHeap(ch) }
