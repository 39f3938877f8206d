package control

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// maxConnEvents bounds the datapath events waiting for one connection's goroutine. A peer makes
// events only with segments that TCP accepted (a new mapping on data, a DATA_ACK that moved,
// an option), and mappings that continue one another share an event (coalesce), so a
// connection that keeps up never comes near it; one that falls this far behind is reset instead
// of holding up the dispatcher and every other connection.
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
	ok := !e.overflow
	switch {
	case !ok:
	case len(e.q) > 0 && coalesce(&e.q[len(e.q)-1], ev):
	case len(e.q) < maxConnEvents:
		e.q = append(e.q, ev)
	default:
		ok, e.overflow = false, true
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

// trim lets the queue's buffer go while it is empty: an idle connection holds none.
func (e *evQueue) trim() {
	e.mu.Lock()
	if len(e.q) == 0 {
		e.q = nil
	}
	e.mu.Unlock()
}

// eventsMissed returns the error to reset the connection with when it missed events: the
// datapath lost one (the ring buffer was full), or its queue refused one (overflow), counted.
func (c *Conn) eventsMissed(overflow bool) error {
	switch {
	case c.mptcp.Load() && atomic.LoadUint32(&c.shm.St.EvLost) != 0:
		c.stack.stats.EventLostReset.Add(1)
		return errEventLost
	case overflow:
		c.stack.stats.EventOverflowReset.Add(1)
		return errEventOverflow
	}
	return nil
}

// coalesce merges mapping event ev into the queued one before it when ev maps the bytes right
// after it on the same subflow to the DSNs right after its own (a peer sending small segments,
// one mapping each): the connection merges such mappings anyway, and the queue then holds one
// event per 64 KiB, not one per segment.
func coalesce(last *datapath.Event, ev datapath.Event) bool {
	const lenMask = 0xffff
	if ev.Type != datapath.EvRxMap || last.Type != datapath.EvRxMap || ev.Sub != last.Sub ||
		ev.C&^lenMask != 0 || last.C&^lenMask != 0 {
		return false
	}
	n, m := last.C&lenMask, ev.C&lenMask
	if n+m > lenMask || ev.A != last.A+n || uint32(ev.B) != uint32(last.B)+uint32(n) {
		return false
	}
	last.C += m
	return true
}

// handleEvent acts on one datapath event of the connection.
func (c *Conn) handleEvent(ev datapath.Event) {
	if ev.Type < uint32(len(c.st.events)) {
		c.st.events[ev.Type]++
	}
	switch ev.Type {
	case datapath.EvDataFin:
		c.peerFin(seqnum.DSN(ev.A))
		return
	case datapath.EvDataAck:
		c.st.ackArmed = false
		return
	case datapath.EvFastclose:
		c.fail(c.peerFastclosed())
		return
	}
	sf := c.subBySlot(ev.Sub)
	if sf == nil {
		// A subflow whose socket has not reached us yet (a join being dialled or accepted):
		// its events wait for it.
		if q := c.st.pendingSub[ev.Sub]; len(q) < 1024 {
			c.st.pendingSub[ev.Sub] = append(q, ev)
		}
		return
	}
	switch ev.Type {
	case datapath.EvRxMap:
		if ev.C&datapath.RxMapInfinite != 0 {
			c.stack.stats.InfiniteMapRx.Add(1)
			c.startRxFallback(sf)
			c.csumFallbackDone()
			return
		}
		fin := ev.C&datapath.RxMapFin != 0
		n := uint32(ev.C & 0xffff)
		if n == 0 {
			// A first data whose MP_CAPABLE maps no bytes is an infinite mapping, as the
			// kernel reads it (§3.1, §3.7): the peer fell back.
			c.stack.stats.InfiniteMapRx.Add(1)
			c.startRxFallback(sf)
			return
		}
		if fin {
			n--
		}
		dsn := seqnum.DSN(ev.A)
		if ev.C&datapath.RxMapMPC != 0 {
			dsn = seqnum.DSN(c.shm.Ctl.PeerIdsn + 1)
		}
		m := rxMap{dsn: dsn, ssn: seqnum.Value(ev.B), len: n, fin: fin, csum: uint16(ev.C >> 32), hasCsum: ev.C&datapath.RxMapCsum != 0}
		if m.hasCsum != c.csumOn() && c.mptcp.Load() {
			// A checksum where none was negotiated, or none where it was (§3.3.0): the
			// kernel takes such a mapping as invalid, and so do we.
			c.stack.stats.DSSCsumMismatch.Add(1)
			c.stack.log.Warn("a mapping's DSS checksum differs from the negotiated use", "token", c.token, "slot", sf.slot, "checksum", m.hasCsum)
			c.badMapping(sf, errors.New("mptcp: mapping checksum presence differs from the negotiated one"))
			return
		}
		if !c.acceptRxMap(sf, m) {
			return
		}
		c.processHeld(sf)
	case datapath.EvTCPRst:
		sf.lastRst = &ResetError{Reason: uint8(ev.A), Transient: ev.B&1 != 0}
	case datapath.EvJoinAcked:
		sf.ready = true
	case datapath.EvOption:
		c.handleOption(sf, ev.Raw[:min(int(ev.RawLen), len(ev.Raw))])
	case datapath.EvMPFail:
		if c.st.joined {
			// No fallback once a subflow joined (§3.7): the peer resets the failed subflow,
			// and the kernel ignores an MP_FAIL then too.
			c.stack.log.Warn("peer sent MP_FAIL after a join: ignored", "token", c.token, "dsn", ev.A)
			return
		}
		if c.st.csumFailSent {
			// The answer to ours: the peer's infinite mapping follows (csumFallbackDone).
			c.stack.log.Info("peer answered our MP_FAIL", "token", c.token, "dsn", ev.A)
			return
		}
		c.stack.log.Warn("peer sent MP_FAIL; continuing as plain TCP", "token", c.token, "dsn", ev.A)
		at := c.st.rcv.rx.rcvNxt // before the held bytes go in as the infinite mapping
		c.startRxFallback(sf)
		c.startTxFallback(at)
	case datapath.EvUnmapped:
		c.stack.log.Warn("data without a mapping (RFC 8684 §3.7)", "token", c.token, "slot", sf.slot, "joined", c.st.joined,
			"ssn", uint32(ev.A), "len", ev.B, "map_end", uint32(ev.C>>32), "mapped_to", uint32(sf.lastEnd.ssn), "held", sf.heldBytes,
			"maps", len(sf.rxMaps), "options", fmt.Sprintf("% x", ev.Raw[:min(int(ev.RawLen), len(ev.Raw))]))
		c.badMapping(sf, errors.New("mptcp: data without a mapping"))
	}
}
