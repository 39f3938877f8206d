package control

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Goroutine lifecycle. Every goroutine the stack, its listeners and its connections start is
// started through the stack (Stack.goroutine) and waited for by Stack.Close before the
// datapath's shared memory is unmapped, as wireguard-go's Peer.Stop closes routines.stop and
// then waits for routines.stopping. A goroutine that could touch the shared arrays after the
// unmap would fault.
//
// The rules that make Close safe:
//   - Once Close has begun, nothing new starts: goroutine refuses (under routines.mu), and a
//     caller that was refused undoes what it prepared (closes its socket, frees its slots).
//   - Code under Stack.mu touches the shared memory only while Stack.mu.closed is false: Close
//     sets it under the lock before it waits, and unmaps only after the wait.
//   - A goroutine that is not the stack's (the application's Dial) and touches the shared memory
//     is an operation (enter/exit): Close waits for it as for a goroutine, and cuts its connect
//     short (routines.stop).
//   - Close makes every goroutine end: listeners and join sockets closed, connections aborted
//     (their sockets closed, which wakes the subflows' readers and writers out of their
//     syscalls), the event reader stopped. It waits closeWait at most; if goroutines remain,
//     the shared memory stays mapped (leaked) rather than be unmapped under them.

// closeWait bounds how long Close waits for the stack's goroutines (a variable for tests).
var closeWait = 5 * time.Second

// routines tracks the goroutines of a stack.
//
// Locking: mu guards closed and lns; it is a leaf lock (nothing is locked while it is held).
type routines struct {
	mu      sync.Mutex
	closed  bool                   // Close began: nothing new starts
	lns     map[*Listener]struct{} // listeners open: Close closes them, which ends their accept loops
	running sync.WaitGroup         // goroutines and operations in progress
	n       atomic.Int64           // how many: Close reports those that did not end
	stop    context.Context        // ends when Close begins: dials in progress give up
	cancel  context.CancelFunc
}

func (r *routines) init() {
	r.stop, r.cancel = context.WithCancel(context.Background())
	r.lns = map[*Listener]struct{}{}
}

// goroutine starts each of fs on a goroutine of its own, tracked until it returns; all of them
// or, once the stack is closing, none (false).
func (s *Stack) goroutine(fs ...func()) bool {
	r := &s.rt
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, f := range fs {
		r.startLocked(f)
	}
	return true
}

func (r *routines) startLocked(f func()) {
	r.n.Add(1)
	r.running.Go(func() {
		defer r.n.Add(-1)
		f()
	})
}

// enter begins an operation of a goroutine that is not the stack's which touches the shared
// memory (Dial); false once the stack is closing. exit ends it.
func (s *Stack) enter() bool {
	r := &s.rt
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.n.Add(1)
	r.running.Add(1)
	return true
}

func (s *Stack) exit() {
	s.rt.n.Add(-1)
	s.rt.running.Done()
}

// stopContext returns a context that ends with ctx or when the stack begins to close, and its
// cancel function.
func (s *Stack) stopContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if s.rt.stop == nil {
		return ctx, cancel
	}
	stop := context.AfterFunc(s.rt.stop, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// startListener starts a listener's accept loop and makes it one that Close closes; false once
// the stack is closing.
func (s *Stack) startListener(l *Listener) bool {
	r := &s.rt
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.lns == nil {
		r.lns = map[*Listener]struct{}{}
	}
	r.lns[l] = struct{}{}
	r.startLocked(l.acceptLoop)
	return true
}

// listenerClosed forgets a listener Close need not close.
func (s *Stack) listenerClosed(l *Listener) {
	s.rt.mu.Lock()
	delete(s.rt.lns, l)
	s.rt.mu.Unlock()
}

// stopRoutines makes the stack refuse new goroutines and operations, cuts dials short, and
// returns the listeners to close.
func (s *Stack) stopRoutines() []*Listener {
	r := &s.rt
	r.mu.Lock()
	r.closed = true
	lns := make([]*Listener, 0, len(r.lns))
	for l := range r.lns {
		lns = append(lns, l)
	}
	r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	return lns
}

// errRoutinesLeft is the error of a Close whose goroutines did not all end in time.
type errRoutinesLeft struct {
	n    int64
	wait time.Duration
}

func (e errRoutinesLeft) Error() string {
	return fmt.Sprintf("mptcp stack closed with %d goroutines still running after %v: the datapath's shared memory is left mapped", e.n, e.wait)
}

// waitRoutines waits for the stack's goroutines and operations to end, at most d; after
// stopRoutines nothing can add to them.
func (s *Stack) waitRoutines(d time.Duration) error {
	done := make(chan struct{})
	go func() {
		s.rt.running.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errRoutinesLeft{s.rt.n.Load(), d}
	}
}

// goroutines returns how many goroutines (and Dial operations) of the stack are running.
func (s *Stack) goroutines() int64 { return s.rt.n.Load() }
