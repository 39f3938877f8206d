package control

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// The receive path: bytes read from the subflows are placed in the data sequence space with
// the peer's mappings, reassembled, handed to Read in order, and acknowledged at the data
// level once the application took them.

// recvState is the receive side of the connection, owned by the connection's goroutine.
type recvState struct {
	rx       reasm
	fin      bool       // the peer's DATA_FIN arrived
	finDSN   seqnum.DSN // its DSN
	eof      bool       // Read gets EOF after the bytes queued
	fallback bool       // infinite mapping: the subflow's bytes continue the stream in order
	pushed   uint64     // bytes handed to rxq
	pooled   []pooledRx // pool buffers waiting for the application to consume their bytes
	lastSub  *subflow   // the subflow that last brought data: our ACKs go back on it
}

// pooledRx is a pool buffer whose bytes all lie below end in the data sequence space.
type pooledRx struct {
	buf *rxBuf
	end seqnum.DSN
}

// consumed is one past the last byte the application (or the relay's backend socket) has
// taken from the receive queue q.
func (r *recvState) consumed(q *byteQueue) seqnum.DSN {
	unconsumed := r.pushed - q.consumedBytes()
	return r.rx.rcvNxt - seqnum.DSN(uint64(r.rx.nReady)+unconsumed)
}

// release returns to the pool the receive buffers whose bytes the application has consumed
// from q. Reassembly and the receive queue keep slices of them until then; the application
// consumes in DSN order, so a buffer whose highest DSN it has passed holds nothing anyone
// still reads.
func (r *recvState) release(q *byteQueue) {
	if len(r.pooled) == 0 {
		return
	}
	consumed := r.consumed(q)
	keep := r.pooled[:0]
	for _, p := range r.pooled {
		if consumed.LessThan(p.end) {
			keep = append(keep, p)
		} else {
			putRxBuf(p.buf)
		}
	}
	clear(r.pooled[len(keep):])
	r.pooled = keep
}

// acceptRxMap stores a peer mapping after checking it against our windows, as the kernel does:
// one naming subflow bytes that cannot be in the subflow's receive window is dropped
// (DSSNoMatchTCP); one whose data lies beyond the connection's receive window is kept so that
// its bytes are recognised, but they are dropped when read (NoDSSInWindow), and the peer sends
// them again (we DATA_ACK only what the application took). It reports whether the subflow can
// go on.
func (c *Conn) acceptRxMap(sf *subflow, m rxMap) bool {
	if m.end().LessThanEq(sf.mapped) {
		return true // bytes read already: a repeat
	}
	win := c.stack.rxWindow
	if sf.mapped.Add(uint32(2*win)).LessThan(m.ssn) || m.ssn.Add(uint32(2*win)).LessThan(sf.mapped) {
		c.stack.stats.DSSNoMatchTCP.Add(1)
		return true
	}
	if c.st.rcv.rx.rcvNxt.Add(uint64(win)).LessThan(m.dsn.Add(uint64(m.len))) {
		c.stack.stats.NoDSSInWindow.Add(1)
		m.drop, m.fin = true, false
	}
	switch sf.rxMaps.add(m) {
	case addFull:
		c.stack.stats.RxMapOverflow.Add(1)
		c.stack.log.Warn("subflow reset: too many mappings held", "token", c.token, "slot", sf.slot, "mappings", len(sf.rxMaps))
		c.resetSubflow(sf, RstMPTCPError, errors.New("mptcp: peer sent too many mappings ahead of its data"))
		return false
	case addConflict:
		c.stack.stats.DSSNotMatching.Add(1)
		c.stack.log.Warn("a mapping changes the DSNs of bytes already mapped", "token", c.token, "slot", sf.slot, "dsn", m.dsn, "ssn", m.ssn, "len", m.len)
		return c.badMapping(sf, errors.New("mptcp: peer changed the mapping of bytes it had mapped"))
	}
	return true
}

// badMapping handles data the subflow's mappings cannot place: bytes without a mapping, or a
// mapping that contradicts an earlier one (RFC 8684 §3.7). A connection that never had a second
// subflow falls back to TCP (DssFallback, as the kernel) and tells the peer with MP_FAIL (the
// kernel sends MP_FAIL only for a checksum failure, and accepts ours); one that had cannot know
// where its stream stands on this subflow, which is reset, as the kernel resets it (the peer
// sends again, on the others, the data nobody DATA_ACKed). It reports whether the subflow goes
// on.
func (c *Conn) badMapping(sf *subflow, err error) bool {
	if c.st.joined {
		c.resetSubflow(sf, RstMPTCPError, err)
		return false
	}
	if c.mptcp.Load() {
		c.stack.stats.DssFallback.Add(1)
	}
	at := c.st.rcv.rx.rcvNxt // the first byte not placed, before the held bytes go in
	c.startRxFallback(sf)
	c.startTxFallback(at)
	return true
}

func (c *Conn) handleRx(ch rxChunk) {
	sf := ch.sf
	if sf.gone {
		return
	}
	if !sf.draining.IsZero() {
		if ch.err != nil {
			sf.eof = true
			c.checkDraining(false)
			return
		}
	} else if ch.err != nil {
		c.subflowEnded(sf, ch.err)
		return
	}
	sf.bytesRecv += uint64(len(ch.data))
	c.st.rcv.lastSub = sf
	sf.rxHeld = append(sf.rxHeld, ch)
	sf.heldBytes += len(ch.data)
	c.processHeld(sf)
	if sf.heldBytes > rxLimit+c.stack.rxWindow && !sf.gone {
		// Bytes no mapping covers, more than a receive window of them: the peer maps nothing
		// it sends (in-order data without one already made us fall back, §3.7).
		c.stack.log.Warn("subflow reset: data without mappings", "token", c.token, "slot", sf.slot, "held", sf.heldBytes)
		c.resetSubflow(sf, RstMPTCPError, errors.New("mptcp: peer data without mappings"))
	}
}

// processHeld maps held bytes to DSNs with the peer's mappings and reassembles them; bytes
// whose mapping has not arrived wait for it.
func (c *Conn) processHeld(sf *subflow) {
	for len(sf.rxHeld) > 0 {
		ch := &sf.rxHeld[0]
		for len(ch.data) > 0 {
			m, ok := sf.rxMaps.find(ch.off)
			if !ok {
				if !c.st.rcv.fallback {
					c.deliverRx()
					return
				}
				// After an infinite mapping the bytes continue where the last mapping ended.
				m = rxMap{dsn: sf.lastEnd.dsn.Add(uint64(ch.off.Sub(sf.lastEnd.ssn))), ssn: ch.off, len: uint32(len(ch.data))}
				// Where the last mapping left them beyond the receive window (one the peer
				// mapped there, then fell back), they would never become in-order: held,
				// every later byte of the subflow would grow reassembly without bound.
				if c.st.rcv.rx.rcvNxt.Add(uint64(c.stack.rxWindow)).LessThan(m.dsn.Add(uint64(m.len))) {
					c.stack.stats.NoDSSInWindow.Add(1)
					m.drop = true
				}
			} else if m.hasCsum && !c.st.rcv.fallback {
				switch c.verifyCsum(sf, m) {
				case csumWait:
					c.deliverRx()
					return
				case csumBad:
					if !c.csumFailed(sf, m) {
						return
					}
				}
			}
			n := min(uint32(len(ch.data)), m.end().Sub(ch.off))
			dsn := m.dsn.Add(uint64(ch.off.Sub(m.ssn)))
			dup := c.st.rcv.rx.dup
			if m.drop {
				c.st.rcv.rx.dropped += uint64(n)
			} else {
				c.st.rcv.rx.insert(dsn, ch.data[:n])
				if e := dsn.Add(uint64(n)); !ch.ended || ch.end.LessThan(e) {
					ch.end, ch.ended = e, true
				}
			}
			if c.st.rcv.rx.dup != dup {
				c.stack.log.Debug("bytes received twice", "token", c.token, "slot", sf.slot, "off", uint32(ch.off), "n", n,
					"map", fmt.Sprintf("%d+%d>%d", uint32(m.ssn), m.len, uint64(m.dsn)), "dup", c.st.rcv.rx.dup-dup, "rcvnxt", uint64(c.st.rcv.rx.rcvNxt))
			}
			ch.data = ch.data[n:]
			sf.heldBytes -= int(n)
			ch.off = ch.off.Add(n)
			sf.mapped = ch.off
			sf.lastEnd.ssn, sf.lastEnd.dsn = ch.off, dsn.Add(uint64(n))
			if ch.off == m.end() && m.fin {
				c.peerFin(m.dsn.Add(uint64(m.len)))
			}
		}
		if ch.pooled != nil && ch.ended {
			c.st.rcv.pooled = append(c.st.rcv.pooled, pooledRx{ch.pooled, ch.end})
		}
		sf.rxHeld[0] = rxChunk{}
		sf.rxHeld = sf.rxHeld[1:]
	}
	sf.rxMaps.prune(sf.mapped)
	c.deliverRx()
}

// releaseRx returns to the pool the receive buffers the application is done with.
func (c *Conn) releaseRx() { c.st.rcv.release(c.rxq) }

// deliverRx hands in-order bytes to Read and tells the datapath how far we have received.
func (c *Conn) deliverRx() {
	r := &c.st.rcv.rx
	for _, b := range r.ready {
		c.rxq.push(b)
		c.st.rcv.pushed += uint64(len(b))
	}
	clear(r.ready)
	r.ready = r.ready[:0]
	r.nReady = 0
	if c.st.rcv.fin && r.rcvNxt == c.st.rcv.finDSN && !c.st.rcv.eof {
		c.st.rcv.eof = true
		c.rxq.finish(io.EOF)
	}
	c.publishAck()
}

// publishAck sets the DATA_ACK the datapath writes: what the application has taken, and the
// peer's DATA_FIN once it has taken everything before it. Bytes reassembled but not yet taken
// are not acknowledged: acknowledged data is never lost while the connection lives, whatever
// happens to this process's buffers, and the peer's window follows the application's pace.
func (c *Conn) publishAck() {
	if !c.mptcp.Load() {
		return
	}
	ack := c.st.rcv.consumed(c.rxq)
	fin := c.st.rcv.fin && c.st.rcv.eof && ack == c.st.rcv.finDSN
	if fin {
		ack++
	}
	if uint64(ack) == atomic.LoadUint64(&c.shm.Ctl.RcvNxt) {
		return
	}
	atomic.StoreUint64(&c.shm.Ctl.RcvNxt, uint64(ack))
	if fin && seqnum.DSN(atomic.LoadUint64(&c.shm.St.RxAck)).LessThan(ack) {
		c.sendACK(nil) // the datapath did not acknowledge the DATA_FIN on its own
		return
	}
	c.ackIfIdle()
}

// ackLag is how far our receive point may run ahead of the DATA_ACK we last sent before we send
// one of our own: the kernel ACKs a subflow's data before we read it, so without this the
// peer learns of what we received only with our next segment.
const ackLag = 256 << 10

// ackSent returns the DATA_ACK the datapath last sent and the one published for it to send.
func (c *Conn) ackSent() (sent, rcv seqnum.DSN) {
	// What the working subflows carried: a DATA_ACK written on a path that has died (the
	// segment built, then dropped) reached nobody.
	found := false
	for _, sf := range c.subs {
		if !sf.ready || sf.eof || sf.gone || sf.health.stale {
			continue
		}
		if a := seqnum.DSN(atomic.LoadUint64(&sf.shm.St.AckSent)); !found || sent.LessThan(a) {
			sent, found = a, true
		}
	}
	if !found {
		sent = seqnum.DSN(atomic.LoadUint64(&c.shm.St.AckSent))
	}
	return sent, seqnum.DSN(atomic.LoadUint64(&c.shm.Ctl.RcvNxt))
}

// ackPending reports whether the datapath has a DATA_ACK to send that it has not sent: the
// connection then watches it (ackIfIdle).
func (c *Conn) ackPending() bool {
	if !c.mptcp.Load() || len(c.subs) == 0 {
		return false
	}
	sent, rcv := c.ackSent()
	return sent.LessThan(rcv)
}

// ackIfIdle sends a pure ACK when nothing more is waiting to be read and our receive point is
// ahead of the last DATA_ACK sent (or far ahead while data keeps coming). The datapath reports
// what it sent only in shared memory: the connection also runs this every pollInterval while
// ackPending.
func (c *Conn) ackIfIdle() {
	if !c.mptcp.Load() || len(c.subs) == 0 {
		return
	}
	sent, rcv := c.ackSent()
	if !sent.LessThan(rcv) {
		return
	}
	if len(c.rxCh) == 0 || rcv.Sub(sent) >= ackLag {
		sf := c.st.rcv.lastSub
		if sf != nil && (sf.gone || !sf.draining.IsZero()) {
			sf = nil
		}
		c.sendACK(sf)
	}
}

func (c *Conn) peerFin(dsn seqnum.DSN) {
	if c.st.rcv.fin {
		return
	}
	c.st.rcv.fin, c.st.rcv.finDSN = true, dsn
	c.deliverRx()
}

// startRxFallback continues reception as plain TCP on sf (§3.7).
func (c *Conn) startRxFallback(sf *subflow) {
	if c.st.rcv.fallback {
		return
	}
	c.st.rcv.fallback = true
	if sf.lastEnd.ssn == 0 {
		sf.lastEnd.ssn, sf.lastEnd.dsn = 1, c.st.rcv.rx.rcvNxt
	}
	c.processHeld(sf)
}

// startTxFallback sends MP_FAIL at DSN at, where the data without a mapping began (§3.7), then
// stops writing MPTCP options.
func (c *Conn) startTxFallback(at seqnum.DSN) {
	if !c.mptcp.Load() {
		return
	}
	c.stack.stats.MPFailFallback.Add(1)
	c.shm.Ctl.MpFailDsn = uint64(at)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnMPFail)
	c.sendACK(nil)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnFallback)
	c.mptcp.Store(false)
}
