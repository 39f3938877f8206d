package control

import "time"

// The connection's timer. Every job that waits for a time exposes its next deadline (zero:
// none); the connection's goroutine arms one reusable timer at the earliest of them and, when
// it fires, runs the jobs whose deadlines have passed (the model is quic-go's
// connection_timer.go). The jobs and their deadlines:
//
//   - our DATA_FIN on a pure ACK until DATA_ACKed (dataFin.at, datafin.go);
//   - the send path looking again for room (connState.pumpAt, send.go);
//   - the end of the linger after Close (connState.lingerAt);
//   - a client telling the path manager it is fully established without the server's first
//     DSS (fullyEstablishedWait);
//   - our ADD_ADDRs until echoed (announce.next, join.go);
//   - the jobs that sample state which changes without telling the connection, together every
//     pollInterval while one of them has something to watch (polled): subflow health and
//     unmapped segments (TCP_INFO and counters) while data is outstanding, the data-level
//     retransmission timer (whether a subflow still holds the data), the DATA_ACK the
//     datapath has yet to send (ackIfIdle), options the datapath has yet to write, detached
//     subflows read to their end, and a client's first 200 ms, until the server's first DSS
//     shows it is fully established. An idle connection arms no timer at all.
//
// Events the datapath lost (the ring buffer was full) are flagged in the connection's shared
// memory; the stack notices the datapath's EventLost counter move (maintain) and wakes every
// connection to look at its flag (lostEvents).

// pollInterval is the period of the jobs that sample state.
const pollInterval = 50 * time.Millisecond

// connTimer is one reusable timer set to a deadline. Owned by the connection's goroutine.
type connTimer struct {
	t  *time.Timer
	at time.Time // the deadline it is set for (zero: stopped, or fired)
}

// set arms the timer for at (zero: stops it); a deadline already passed fires at once.
func (t *connTimer) set(at time.Time) {
	if at.Equal(t.at) {
		return
	}
	t.at = at
	switch {
	case at.IsZero():
		if t.t != nil {
			t.t.Stop()
		}
	case t.t == nil:
		t.t = time.NewTimer(time.Until(at))
	default:
		t.t.Reset(time.Until(at))
	}
}

// c is the channel the timer fires on (nil before it was first set: never ready).
func (t *connTimer) c() <-chan time.Time {
	if t.t == nil {
		return nil
	}
	return t.t.C
}

// fired notes that the timer went off: the next set arms it again, whatever the deadline.
func (t *connTimer) fired() { t.at = time.Time{} }

func (t *connTimer) stop() {
	if t.t != nil {
		t.t.Stop()
	}
}

// earliest returns the earlier of two deadlines, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// due reports whether deadline d (zero: none) has come at now.
func due(d, now time.Time) bool { return !d.IsZero() && !now.Before(d) }

// nextDeadline is the earliest deadline of the connection's jobs at now. Sampling stops while
// nothing needs it and starts again, pollInterval later, when something does.
func (c *Conn) nextDeadline(now time.Time) time.Time {
	st := &c.st
	d := earliest(st.fin.at, st.pumpAt)
	d = earliest(d, c.lingerDeadline())
	d = earliest(d, c.establishedDeadline())
	d = earliest(d, c.announceDeadline())
	d = earliest(d, c.joinAckDeadline())
	switch {
	case !c.polled():
		st.pollAt = time.Time{}
	case st.pollAt.IsZero():
		c.resumeSampling(now)
		st.pollAt = now.Add(pollInterval)
		fallthrough
	default:
		d = earliest(d, st.pollAt)
	}
	return d
}

// resumeSampling starts the samplers' clocks at now after a pause: what they measured before
// it (a subflow's last progress, the start of a loss recovery, the wait for a DATA_ACK) says
// nothing of data sent after it. A subflow still holding the same unacknowledged bytes as at
// the last sample keeps its clocks: its path may have died meanwhile (the peer had the data
// from another subflow, as with the redundant scheduler), and the pause must not hide that.
func (c *Conn) resumeSampling(now time.Time) {
	for _, sf := range c.subs {
		if una, outstanding, err := c.acked(sf); err == nil && outstanding && una == sf.health.lastUna {
			continue
		}
		sf.health.lastProgress, sf.health.lossSince = now, time.Time{}
	}
	c.st.rtx.since = now
}

// lostEvents resets the connection when the datapath flagged events for it lost; it looks only
// when the stack saw the datapath lose events since it last looked.
func (c *Conn) lostEvents() error {
	g := c.stack.lostGen.Load()
	if g == c.st.lostGen {
		return nil
	}
	c.st.lostGen = g
	return c.eventsMissed(false)
}

// onTimer runs the jobs whose deadlines have passed at now.
func (c *Conn) onTimer(now time.Time) {
	st := &c.st
	if due(st.fin.at, now) {
		st.fin.at = time.Time{}
		c.retransmitFin(now)
	}
	if due(st.pumpAt, now) {
		st.pumpAt = time.Time{} // the loop pumps after every wake-up
	}
	// The linger's end and the wait for full establishment are looked at after every wake-up
	// too (closeDone, checkEstablished).
	if due(st.pollAt, now) { // set only while polled (nextDeadline)
		st.pollAt = now.Add(pollInterval)
		c.checkDraining(false)
		c.checkSubflows(now)
		c.checkDataAck(now)
		c.reportNoMapping()
		c.ackIfIdle()
		c.retransmitAnnounces()
	} else if due(c.announceDeadline(), now) {
		c.retransmitAnnounces()
	}
	if due(c.joinAckDeadline(), now) {
		c.retransmitJoinAcks(now)
	}
}

// An active join's third ACK is sent again, from joinAckRTO doubling to joinAckRTOMax, until the
// fourth ACK shows the peer has it (RFC 8684 §3.2: the third ACK is reliable; the kernel sends
// it again too). The join carries no data until then, and a peer that sends nothing on that
// subflow (the receiver of a one-way transfer) would otherwise leave it unused for good: the
// pure ACK carries the third ACK again (the datapath repeats it while the fourth is missing),
// and the peer answers it with another fourth ACK.
const (
	joinAckRTO    = 200 * time.Millisecond
	joinAckRTOMax = 5 * time.Second
)

// joinAckDeadline is when the next third ACK goes again (zero: none waits for its fourth).
func (c *Conn) joinAckDeadline() time.Time {
	var d time.Time
	for _, sf := range c.subs {
		if !sf.ready && !sf.gone {
			d = earliest(d, sf.joinAck.at)
		}
	}
	return d
}

// retransmitJoinAcks sends again the third ACKs that are due.
func (c *Conn) retransmitJoinAcks(now time.Time) {
	for _, sf := range c.subs {
		if sf.ready || sf.gone || !due(sf.joinAck.at, now) {
			continue
		}
		c.sendACK(sf)
		c.stack.stats.MPJoinAckRexmit.Add(1)
		sf.joinAck.rto = min(2*sf.joinAck.rto, joinAckRTOMax)
		sf.joinAck.at = now.Add(sf.joinAck.rto)
	}
}

// polled reports whether a job samples state now: detached subflows to finish, subflows to
// watch, data not DATA_ACKed, a DATA_ACK the datapath has not sent, options waiting for the
// datapath, a client waiting for the server's first DSS (which the datapath notes only in
// shared memory: checkEstablished runs after every wake-up).
func (c *Conn) polled() bool {
	if len(c.st.draining) > 0 || c.healthWatched() || c.rtxWatched() || c.ackPending() ||
		!c.establishedDeadline().IsZero() {
		return true
	}
	for _, sf := range c.subs {
		if len(sf.optQueue) > 0 {
			return true
		}
	}
	return false
}

// lingerDeadline is when a closed connection stops waiting for its close to complete
// (closeDone: strictly after lingerAt).
func (c *Conn) lingerDeadline() time.Time {
	if !c.st.appClosed {
		return time.Time{}
	}
	return c.st.lingerAt.Add(1)
}

// establishedDeadline is when a client stops waiting for the server's first DSS to tell the
// path manager (checkEstablished).
func (c *Conn) establishedDeadline() time.Time {
	if c.pm == nil || c.st.pmStarted || c.server || !c.mptcp.Load() {
		return time.Time{}
	}
	return c.st.startedAt.Add(fullyEstablishedWait)
}
