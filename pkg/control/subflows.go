package control

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// The connection's subflows as they come and go: the end of one, a reset, the ones detached
// and read to their end (draining).

// subBySlot returns the attached (or draining) subflow of a subflow slot.
func (c *Conn) subBySlot(slot uint32) *subflow {
	for _, sf := range c.subs {
		if sf.slot == slot {
			return sf
		}
	}
	for _, sf := range c.st.draining {
		if sf.slot == slot {
			return sf
		}
	}
	return nil
}

// drainTimeout bounds how long a closed subflow is read for the bytes its socket holds.
const drainTimeout = 2 * time.Second

// finishSubflow closes a detached subflow's socket with a reset and frees its slot: what it
// had not sent went again on other subflows, and unsent bytes leaving without a mapping after
// the datapath let the socket go would make the peer fall back.
func (c *Conn) finishSubflow(sf *subflow) {
	if sf.finished {
		return // its slot is released once only: another subflow may hold it already
	}
	sf.finished = true
	c.plane.closeSubflow(sf, true)
	c.plane.releaseSubflow(sf.slot)
}

// checkDraining finishes the draining subflows that are read to their end, or out of time.
func (c *Conn) checkDraining(all bool) {
	now := time.Now()
	keep := c.st.draining[:0]
	for _, sf := range c.st.draining {
		if all || (sf.eof && len(sf.rxHeld) == 0) || now.After(sf.draining) {
			if len(sf.rxHeld) > 0 {
				c.stack.log.Warn("closed subflow: bytes without a mapping dropped", "token", c.token, "slot", sf.slot, "chunks", len(sf.rxHeld))
			}
			c.finishSubflow(sf)
			continue
		}
		keep = append(keep, sf)
	}
	clear(c.st.draining[len(keep):])
	c.st.draining = keep
}

// subflowEnded handles the end of a subflow's byte stream (FIN or error).
func (c *Conn) subflowEnded(sf *subflow, err error) {
	sf.eof = true
	last := len(c.subs) == 1
	if errors.Is(err, io.EOF) && !c.st.rcv.fin && atomic.LoadUint32(&c.shm.St.PeerFin) != 0 {
		// The DATA_FIN event may still be on its way; the datapath has it already.
		c.peerFin(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerFinDsn)))
	}
	if !last {
		// Other subflows carry on: what this one had in flight goes again on them.
		c.dropSubflow(sf, err)
		return
	}
	if errors.Is(err, io.EOF) {
		plain := !c.mptcp.Load() || c.st.rcv.fallback
		if plain {
			// Plain TCP: the peer's half-close. The subflow still carries our data.
			sf.halfClosed = true
		}
		if c.st.rcv.eof {
			return
		}
		if plain {
			c.st.rcv.eof = true
			c.rxq.finish(io.EOF)
			return
		}
		if c.st.rcv.fin {
			return // the remaining bytes are held for their mappings
		}
		c.fail(ErrNoDataFin)
		return
	}
	c.fail(c.resetError(sf, err))
}

// resetSubflow resets a subflow whose peer broke the protocol, with an MP_TCPRST reason
// (§3.6); with no other subflow left the connection ends with it.
func (c *Conn) resetSubflow(sf *subflow, reason uint8, err error) {
	if c.mptcp.Load() {
		sf.shm.Ctl.RstReason = reason
		sf.shm.Ctl.RstFlags = datapath.SubRstRequest
	}
	if !sf.draining.IsZero() {
		// Detached already and being read to its end: what it holds is dropped, and it is
		// finished (with a reset) now. The connection's live subflows are not its business.
		sf.eof = true
		clear(sf.rxHeld)
		sf.rxHeld, sf.heldBytes = nil, 0
		c.checkDraining(false)
		return
	}
	if len(c.subs) <= 1 {
		c.st.resetOnErr = true
		c.fail(&ResetError{Reason: reason, Err: err})
		return
	}
	// What it holds came from a peer we no longer trust with this subflow: not drained.
	sf.eof = true
	clear(sf.rxHeld)
	sf.rxHeld, sf.heldBytes = nil, 0
	c.dropSubflow(sf, err)
}

// dropSubflow detaches a failed or closed subflow and re-sends its unacknowledged data.
func (c *Conn) dropSubflow(sf *subflow, err error) {
	c.reinjectFrom(sf)
	for i, x := range c.subs {
		if x == sf {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	info := sf.info()
	if !sf.eof || len(sf.rxHeld) > 0 {
		// Bytes in its socket, or read and waiting for their mapping, are read and
		// reassembled before the socket goes: the peer need not send them again.
		sf.startDrain(drainTimeout)
		c.st.draining = append(c.st.draining, sf)
	} else {
		c.finishSubflow(sf)
	}
	c.stack.log.Debug("subflow closed", "token", c.token, "local", info.Local, "remote", info.Remote, "err", err)
	c.emitSub(EventSubClosed, sf, err)
	view := sf.pmView()
	c.toPM(func(p PathManager) { p.SubflowClosed(c, view, err) })
}

// peerFastclosed counts the peer's MP_FASTCLOSE once, whichever comes first: its event, or the
// reset of the last subflow (whose datapath state shows it) ending the connection before the
// event is handled. It returns ErrFastclose.
func (c *Conn) peerFastclosed() error {
	if !c.st.fastcloseRx {
		c.st.fastcloseRx = true
		c.stack.stats.Fastclose.Add(1)
	}
	return ErrFastclose
}

// resetError explains a subflow error with what the datapath saw on the reset: the peer's
// MP_FASTCLOSE or MP_TCPRST. The datapath state is read directly, as the event may still be
// on its way.
func (c *Conn) resetError(sf *subflow, err error) error {
	if c.mptcp.Load() {
		st, ok := c.plane.sockState(sf)
		if ok && st.Flags&datapath.SubFastcloseRx != 0 {
			return c.peerFastclosed()
		}
		if ok && st.Flags&datapath.SubRstRx != 0 && sf.lastRst == nil {
			sf.lastRst = &ResetError{Reason: st.RstReason}
		}
	}
	if sf.lastRst != nil {
		sf.lastRst.Err = err
		return sf.lastRst
	}
	return err
}
