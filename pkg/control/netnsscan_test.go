package control

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPrepareNetnsOneScan: a burst of dials in a namespace makes one scan of its interfaces.
// The first scan is waited for by all (their SYNs need the rewriter); once one completed, a
// rescan due runs in one caller while the others go on at once; a failed first scan is tried
// again by a waiter, and its error is the scanner's.
func TestPrepareNetnsOneScan(t *testing.T) {
	s := &Stack{}
	var scans atomic.Int32
	release := make(chan struct{})
	var scanned atomic.Bool
	s.scanNetns = func(uint64) error {
		scans.Add(1)
		<-release
		scanned.Store(true)
		return nil
	}
	const n = 50
	burst := func(ns uint64) (early int32) {
		var wg sync.WaitGroup
		var before atomic.Int32 // returned before the scan ended
		for range n {
			wg.Go(func() {
				if err := s.prepareNetnsOf(ns); err != nil {
					t.Errorf("prepareNetnsOf: %v", err)
				}
				if !scanned.Load() {
					before.Add(1)
				}
			})
		}
		time.Sleep(50 * time.Millisecond) // all of them in
		close(release)
		wg.Wait()
		return before.Load()
	}
	// The first scan: one, and nobody goes on before it ends.
	if early := burst(1); early != 0 || scans.Load() != 1 {
		t.Fatalf("first scan: %d scans, %d callers went on before it ended", scans.Load(), early)
	}
	// Within netnsRescan: no scan.
	if err := s.prepareNetnsOf(1); err != nil || scans.Load() != 1 {
		t.Fatalf("within the rescan interval: %d scans, %v", scans.Load(), err)
	}
	// A rescan due: one scan, and the others do not wait for it.
	s.mu.Lock()
	s.mu.netnsScan[1].last = time.Now().Add(-2 * netnsRescan)
	s.mu.Unlock()
	release = make(chan struct{})
	scanned.Store(false)
	if early := burst(1); scans.Load() != 2 || early < n-1 {
		t.Fatalf("rescan: %d scans in all, %d of %d callers went on before it ended", scans.Load(), early, n)
	}
	// Another namespace is scanned on its own.
	release = make(chan struct{})
	scanned.Store(false)
	if early := burst(2); early != 0 || scans.Load() != 3 {
		t.Fatalf("second namespace: %d scans in all, %d went on early", scans.Load(), early)
	}

	// A failed first scan: its caller gets the error, a waiter scans again.
	s2 := &Stack{}
	bad := errors.New("netlink refused")
	var calls atomic.Int32
	gate := make(chan struct{})
	s2.scanNetns = func(uint64) error {
		if calls.Add(1) == 1 {
			<-gate
			return bad
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() { errs <- s2.prepareNetnsOf(7) }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	go func() { errs <- s2.prepareNetnsOf(7) }()
	time.Sleep(20 * time.Millisecond) // the second waits for the first
	close(gate)
	e1, e2 := <-errs, <-errs
	if !(errors.Is(e1, bad) && e2 == nil || errors.Is(e2, bad) && e1 == nil) || calls.Load() != 2 {
		t.Errorf("after a failed first scan: errors %v, %v; %d scans (want the failure once, then one more scan)", e1, e2, calls.Load())
	}
}
