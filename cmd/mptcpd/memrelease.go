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
// hours, that is as much resident memory again as the connections use. So once a second: if
// the last second allocated little (quiet) and the free pages are many, both absolutely and
// against what is live, the releaser forces a collection and returns them
// (debug.FreeOSMemory). A collection costs in proportion to what is live, so it is never made
// while the daemon allocates (moving data, setting up connections), and after one the free
// part is small until a burst makes it large again.
type heapReleaser struct {
	interval time.Duration
	// quietAlloc: at most this much allocated during an interval makes the daemon quiet.
	quietAlloc uint64
	// minFree and freeOverLive: release when the free pages are at least minFree and at
	// least live/freeOverLive.
	minFree      uint64
	freeOverLive uint64

	release  func() // debug.FreeOSMemory; a test's stand-in
	log      *slog.Logger
	releases atomic.Uint64 // releases made
	released atomic.Uint64 // bytes free before each release, summed

	samples   []rtmetrics.Sample
	lastAlloc uint64
}

func newHeapReleaser(log *slog.Logger) *heapReleaser {
	return &heapReleaser{
		interval:     time.Second,
		quietAlloc:   1 << 20,
		minFree:      4 << 20,
		freeOverLive: 4,
		release:      debug.FreeOSMemory,
		log:          log,
		samples: []rtmetrics.Sample{
			{Name: "/gc/heap/allocs:bytes"},
			{Name: "/memory/classes/heap/free:bytes"},
			{Name: "/gc/heap/live:bytes"},
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

// step reads the runtime's figures and releases the free pages if shouldRelease says so. It
// reports whether it did.
func (r *heapReleaser) step() bool {
	rtmetrics.Read(r.samples)
	alloc := sampleUint(r.samples[0])
	free := sampleUint(r.samples[1])
	live := sampleUint(r.samples[2])
	first := r.lastAlloc == 0
	allocated := alloc - r.lastAlloc
	r.lastAlloc = alloc
	if first || !r.shouldRelease(allocated, free, live) {
		return false
	}
	r.release()
	r.releases.Add(1)
	r.released.Add(free)
	if r.log != nil {
		r.log.Debug("released the Go heap's free pages", "free", free, "live", live)
	}
	return true
}

// shouldRelease is the rule: quiet (allocated since the last check at most quietAlloc), and
// free at least minFree and at least live/freeOverLive.
func (r *heapReleaser) shouldRelease(allocated, free, live uint64) bool {
	return allocated <= r.quietAlloc && free >= r.minFree && free >= live/r.freeOverLive
}

func sampleUint(s rtmetrics.Sample) uint64 {
	if s.Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}
