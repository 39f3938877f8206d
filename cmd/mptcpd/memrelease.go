package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"time"
)

// heapReleaser gives the Go heap's free pages back to the system once the daemon is quiet.
//
// A burst of connection setups grows the heap; when the burst is over, the runtime keeps the
// pages it freed, up to about its next collection's goal (twice what is live), and its
// scavenger returns them only slowly. For a daemon that then holds those connections idle for
// hours, that is as much resident memory again as the connections use. So once a second the
// releaser looks at what the last second allocated: quiet is at most quietAlloc, and so little
// that at that rate the free pages would last more than horizon. Quiet for quietChecks checks in
// a row, with the free pages many both absolutely and against what is live, it forces a
// collection and returns them (debug.FreeOSMemory). A collection costs in proportion to what is
// live, so it is never made while the daemon allocates (moving data, setting up connections),
// nor while it allocates steadily at a low rate (the pages would be taken again before long);
// after one the free part is small until a burst makes it large again.
type heapReleaser struct {
	interval    time.Duration
	quietAlloc  uint64 // at most this much allocated during an interval...
	horizon     uint64 // ...and free > allocated*horizon: quiet
	quietChecks int    // quiet checks in a row before a release
	// minFree and freeOverLive: release when the free pages are at least minFree and at
	// least live/freeOverLive.
	minFree      uint64
	freeOverLive uint64

	release  func() // debug.FreeOSMemory; a test's stand-in
	log      *slog.Logger
	releases atomic.Uint64 // releases made
	released atomic.Uint64 // bytes the runtime counted released by them

	samples   []rtmetrics.Sample
	lastAlloc uint64
	quiet     int // quiet checks in a row
}

func newHeapReleaser(log *slog.Logger) *heapReleaser {
	return &heapReleaser{
		interval:     time.Second,
		quietAlloc:   1 << 20,
		horizon:      60,
		quietChecks:  2,
		minFree:      4 << 20,
		freeOverLive: 4,
		release:      debug.FreeOSMemory,
		log:          log,
		samples: []rtmetrics.Sample{
			{Name: "/gc/heap/allocs:bytes"},
			{Name: "/memory/classes/heap/free:bytes"},
			{Name: "/gc/heap/live:bytes"},
			{Name: "/memory/classes/heap/released:bytes"},
		},
	}
}

// run checks once an interval until ctx ends.
func (r *heapReleaser) run(ctx context.Context) {
	r.step() // the first step only takes the allocation count
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.step()
		}
	}
}

// step reads the runtime's figures and releases the free pages once the rule has held for
// quietChecks checks in a row. It reports whether it released.
func (r *heapReleaser) step() bool {
	rtmetrics.Read(r.samples)
	alloc := sampleUint(r.samples[0])
	free := sampleUint(r.samples[1])
	live := sampleUint(r.samples[2])
	first := r.lastAlloc == 0
	allocated := alloc - r.lastAlloc
	r.lastAlloc = alloc
	if first || !r.shouldRelease(allocated, free, live) {
		r.quiet = 0
		return false
	}
	if r.quiet++; r.quiet < r.quietChecks {
		return false
	}
	r.quiet = 0
	before := sampleUint(r.samples[3])
	r.release()
	rtmetrics.Read(r.samples)
	if after := sampleUint(r.samples[3]); after > before {
		r.released.Add(after - before)
	}
	r.lastAlloc = sampleUint(r.samples[0]) // the release's own allocations are not the daemon's
	r.releases.Add(1)
	if r.log != nil {
		r.log.Debug("released the Go heap's free pages", "free", free, "live", live)
	}
	return true
}

// shouldRelease is the rule for one check: quiet (allocated since the last check at most
// quietAlloc, and at that rate the free pages would outlast horizon checks), and free at least
// minFree and at least live/freeOverLive.
func (r *heapReleaser) shouldRelease(allocated, free, live uint64) bool {
	if allocated > r.quietAlloc || allocated*r.horizon >= free {
		return false
	}
	return free >= r.minFree && free >= live/r.freeOverLive
}

func sampleUint(s rtmetrics.Sample) uint64 {
	if s.Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}
