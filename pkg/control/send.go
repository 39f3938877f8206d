package control

import (
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// The send path: what the peer DATA_ACKed is freed, new data is taken from Write into the send
// buffer, and mappings go to the subflows' writers as the scheduler picks them, data to send
// again first.

// Waits before the send path looks again when it could not hand anything over.
const (
	pumpNoRoom     = time.Millisecond     // no subflow had room: ACKs free their windows
	pumpWindowWait = 5 * time.Millisecond // the peer's window is full: its doorbell may be late
)

func (c *Conn) handleTxDone(d txDone) {
	c.st.snd.wrote(d.sf, d.err != nil)
	if d.sf.gone || !d.sf.draining.IsZero() {
		return
	}
	if d.err != nil {
		c.subflowEnded(d.sf, d.err)
		return
	}
	d.sf.queued -= d.n
}

// pumpTx frees what the peer DATA_ACKed, takes new data from Write and hands mappings to the
// subflows' writers, as the scheduler picks them.
func (c *Conn) pumpTx() {
	st := &c.st
	b := &st.snd
	if c.mptcp.Load() {
		b.acked(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck)))
	} else {
		b.una = b.nxt // plain TCP: the kernel keeps what is unacknowledged
		b.free()
	}
	for _, sf := range c.subs {
		sf.trimInflight(b.una)
	}
	if room := sendLimit - b.outstanding(); room > 0 {
		b.push(c.txq.take(room))
	} else if c.mptcp.Load() && !st.ackArmed && c.txq.len() > 0 {
		// Blocked on DATA_ACKs: ring the doorbell, then look again in case one just came.
		st.ackArmed = true
		atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
		if una := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck)); b.una.LessThan(una) {
			c.poke()
		}
	}
	c.schedule()
}

// pumpAfter has the send path look again after d, unless it is to look already.
func (c *Conn) pumpAfter(d time.Duration) {
	if c.st.pumpAt.IsZero() {
		c.st.pumpAt = time.Now().Add(d)
	}
}

// schedule hands mappings to subflows while there is data and a subflow to take it.
func (c *Conn) schedule() {
	st := &c.st
	var views []SubflowView
	now := time.Now()
	for c.pending() {
		cands := usable(c.subs)
		if len(cands) > 1 && c.mptcp.Load() && atomic.LoadUint32(&c.shm.St.PeerWndSet) == 0 {
			// Until the peer announces its window, data goes on one subflow, in order: we sent
			// up to an assumed initial window, and a receiver like the kernel's takes only
			// in-order data then, dropping what arrives ahead (NoDSSInWindow).
			cands = cands[:1]
		}
		if !slices.ContainsFunc(cands, (*subflow).takes) {
			return
		}
		var picks []int
		if len(cands) == 1 && len(c.subs) == 1 {
			picks = []int{0} // one subflow: the socket's own buffer is the only limit
		} else {
			// The scheduler sees the subflows whose writers are full too (Blocked), so that it
			// may wait for the fastest.
			views = views[:0]
			for _, sf := range cands {
				views = append(views, sf.view())
			}
			picks = c.sched.Pick(views, c.connView(now))
			// Only this goroutine sends on txCh, and only while it has room: never blocks.
			picks = slices.DeleteFunc(picks, func(i int) bool { return i < 0 || i >= len(cands) || !cands[i].takes() })
			if len(picks) == 0 {
				// Nothing has room, or the scheduler waits for a subflow that has none: look
				// again shortly, as ACKs free the windows.
				c.pumpAfter(pumpNoRoom)
				return
			}
		}
		// The mapping is at most what the roomiest pick takes (at least minMapping), so that a
		// slow subflow's room bounds what it holds.
		size := maxMapping // one subflow: its socket's own buffer is the only limit
		if len(views) > 0 {
			size = minMapping
			for _, i := range picks {
				if i < len(views) {
					size = max(size, views[i].roomLeft())
				}
			}
		}
		ch, ok := c.nextMapping(size)
		if !ok {
			if c.windowLimited() {
				st.windowWaits++
				if c.opportunistic(cands, picks) {
					continue
				}
			}
			if c.windowLimited() && !st.ackArmed && c.mptcp.Load() {
				// Wait for the peer's window to open: the doorbell wakes us.
				st.ackArmed = true
				atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
				c.pumpAfter(pumpWindowWait)
			}
			return
		}
		end := ch.dsn.Add(uint64(ch.n))
		if st.snd.nxt.LessThan(end) {
			if c.mptcp.Load() {
				atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(end))
			}
			st.snd.nxt = end
		}
		// Each writer gets its own slice of buffers: a partial write shortens its first
		// buffer in place. The copies are made before any writer has the original, which
		// goes last: a writer that started at once could otherwise shorten it under the copy,
		// and the next subflow would write fewer bytes than its mapping says.
		bufs := ch.bufs
		for k, i := range picks {
			if k < len(picks)-1 {
				ch.bufs = slices.Clone(bufs)
			} else {
				ch.bufs = bufs
			}
			c.hand(cands[i], ch)
		}
	}
}

// hand gives a mapping to a subflow's writer, which has room for it.
func (c *Conn) hand(sf *subflow, ch txChunk) {
	// Only the connection's goroutine sends on txCh, and only while it has room: never blocks.
	sf.txCh <- &ch
	sf.wakeWriter()
	sf.queued += ch.n
	c.st.snd.handed(sf, dsnRange{ch.dsn, ch.n})
	sf.inflight = append(sf.inflight, dsnRange{ch.dsn, ch.n})
}

// oppChunk is the most an opportunistic retransmission sends again at once.
const oppChunk = 16 << 10

// opportunistic is the opportunistic retransmission of Raiciu et al. ("How hard can it be?",
// NSDI 2012), with the multipath-tcp.org kernel's rule for when: new data waits for the peer's
// connection-level window, a subflow picked has room, and the bytes at the window's left edge
// (the DATA_ACK) are held by another subflow that is slow to deliver them, its window at most
// four packets (a loss there waits for a timeout) or its RTT more than four times the picked
// one's. The bytes at the left edge, up to oppChunk of them, go again on the subflow picked, once
// for each DATA_ACK: the peer's buffer, full of what came by the fast path, empties as soon as
// they arrive. It reports whether it handed anything over.
func (c *Conn) opportunistic(cands []*subflow, picks []int) bool {
	st := &c.st
	una := st.snd.una
	if !c.mptcp.Load() || c.sched.Name() == "redundant" || (st.oppDone && st.oppUna == una) || !una.LessThan(st.snd.nxt) {
		return false
	}
	var fast *subflow
	for _, i := range picks {
		if i >= 0 && i < len(cands) && cands[i].takes() && !cands[i].holds(una) {
			fast = cands[i]
			break
		}
	}
	if fast == nil {
		return false
	}
	for _, sf := range c.subs {
		if sf == fast || sf.gone || !sf.holds(una) {
			continue
		}
		hv, fv := sf.view(), fast.view()
		if hv.Cwnd > 4 && (fv.SRTT == 0 || hv.SRTT <= 4*fv.SRTT) {
			return false
		}
		n := oppChunk
		for _, r := range sf.inflight {
			if r.contains(una) {
				n = min(n, int(r.end().Sub(una)))
				break
			}
		}
		ch := st.snd.rangeAt(una, n)
		if ch.n == 0 {
			return false
		}
		st.oppUna, st.oppDone = una, true
		c.stack.stats.OpportunisticRetransmit.Add(1)
		c.stack.stats.ReinjectedBytes.Add(uint64(ch.n))
		c.hand(fast, ch)
		return true
	}
	return false
}

// connView is what the scheduler sees of the connection at now.
func (c *Conn) connView(now time.Time) ConnView {
	st := &c.st
	v := ConnView{Backlog: st.reinject.bytes() + c.txq.len(), Window: math.MaxInt, WindowWaits: st.windowWaits, Now: now}
	if st.snd.hasUnsent() {
		v.Backlog += int(st.snd.end.Sub(st.snd.unsentDSN()))
	}
	if c.mptcp.Load() && atomic.LoadUint32(&c.shm.St.PeerWndSet) != 0 {
		ack := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck))
		end := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerWndEnd))
		v.Window = 0
		if ack.LessThan(end) {
			v.Window = int(end.Sub(ack))
		}
	}
	return v
}

// windowLimited reports whether new data waits for the peer's window.
func (c *Conn) windowLimited() bool {
	b := &c.st.snd
	if !b.hasUnsent() {
		return false
	}
	return !b.unsentDSN().LessThan(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerWndEnd)))
}

// pending reports whether data waits for a subflow.
func (c *Conn) pending() bool {
	return len(c.st.reinject) > 0 || c.st.snd.hasUnsent()
}

// minMapping is the smallest mapping the send path cuts for want of room.
const minMapping = 8 << 10

// nextMapping cuts the next mapping: data to send again first, then unsent data; up to size
// bytes (at most maxMapping) over as many buffers as it takes, without copying.
func (c *Conn) nextMapping(size int) (txChunk, bool) {
	b := &c.st.snd
	size = min(max(size, 1), maxMapping)
	if ch, ok := c.st.reinject.next(b, size); ok {
		c.stack.stats.ReinjectedBytes.Add(uint64(ch.n))
		return ch, true
	}
	if !b.hasUnsent() {
		return txChunk{}, false
	}
	limit := size
	if c.mptcp.Load() {
		// New data stays within the peer's connection-level window (§3.3.4): data far ahead of
		// a slow subflow would fill its receive buffer and close every subflow's window.
		dsn := b.unsentDSN()
		wnd := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerWndEnd))
		if !dsn.LessThan(wnd) {
			return txChunk{}, false
		}
		limit = int(min(uint64(limit), wnd.Sub(dsn)))
	}
	return b.nextUnsent(limit), true
}
