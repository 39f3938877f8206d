package control

import (
	"errors"
	"sync"

	"github.com/mptcpgo/mptcpgo/pkg/datapath"
)

// maxConnEvents bounds the datapath events waiting for one connection's goroutine. A peer makes
// events only with segments that TCP accepted (a new mapping on data, a DATA_ACK that moved,
// an option), so a connection that keeps up never comes near it; one that falls this far behind
// is reset instead of holding up the dispatcher and every other connection.
const maxConnEvents = 4096

// Errors of connections the stack resets to protect the others (RFC 8684 §3.6 reason 2, lack of
// resources).
var (
	errEventOverflow = &ResetError{Reason: RstLackOfResources, Err: errors.New("mptcp: connection fell too far behind its events")}
	errEventLost     = &ResetError{Reason: RstLackOfResources, Err: errors.New("mptcp: datapath events of the connection were lost (ring buffer full)")}
)

// evQueue is a connection's queue of datapath events. The stack's dispatcher adds to it
// without ever waiting; the connection's goroutine takes everything queued at once.
type evQueue struct {
	mu       sync.Mutex
	q        []datapath.Event
	overflow bool          // an event was refused: the connection must be reset
	wake     chan struct{} // a token while events or the overflow wait
}

func newEvQueue() *evQueue { return &evQueue{wake: make(chan struct{}, 1)} }

// put queues ev; it reports false, and from then on refuses every event, once maxConnEvents
// are waiting.
func (e *evQueue) put(ev datapath.Event) bool {
	e.mu.Lock()
	ok := !e.overflow && len(e.q) < maxConnEvents
	if ok {
		e.q = append(e.q, ev)
	} else {
		e.overflow = true
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return ok
}

// take returns the queued events, reusing buf's memory for the next ones, and whether an
// event was refused.
func (e *evQueue) take(buf []datapath.Event) ([]datapath.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.q
	e.q = buf[:0]
	return out, e.overflow
}
