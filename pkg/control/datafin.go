package control

import (
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// dataFin is our DATA_FIN (RFC 8684 §3.3.3): set once everything written before CloseWrite
// was handed to a subflow, written by the datapath on the last mapping's segments and on pure
// ACKs, sent again on a pure ACK with a backed-off timeout until the peer DATA_ACKs it. Owned
// by the connection's goroutine.
type dataFin struct {
	set   bool
	acked bool
	dsn   seqnum.DSN    // the DATA_FIN's DSN: one past our last byte
	at    time.Time     // when to send it (again) on a pure ACK (zero: not)
	rto   time.Duration // the wait after the next one
}

// Timeouts of the DATA_FIN's retransmission.
const (
	finRTOInit  = 200 * time.Millisecond
	finRTOMax   = 5 * time.Second
	finDrainGap = time.Millisecond // the wait while a writer still has data to write
)

// retransmitted notes a DATA_FIN sent on a pure ACK at now: the next one goes after the
// timeout, which doubles.
func (f *dataFin) retransmitted(now time.Time) {
	if f.rto == 0 {
		f.rto = finRTOInit
	}
	f.at = now.Add(f.rto)
	f.rto = min(2*f.rto, finRTOMax)
}

// checkFin sends our DATA_FIN once everything written before CloseWrite is handed to a
// subflow, and notices its DATA_ACK.
func (c *Conn) checkFin() {
	st := &c.st
	f := &st.fin
	if !st.wrClosed || c.Err() != nil {
		return
	}
	if !c.mptcp.Load() {
		if !f.set && !st.snd.hasUnsent() && c.txq.len() == 0 && len(c.subs) > 0 && c.subs[0].queued == 0 {
			f.set, f.acked = true, true
			c.subs[0].tc.CloseWrite()
		}
		return
	}
	if !f.set {
		if c.pending() || c.txq.len() > 0 {
			return
		}
		f.set = true
		f.dsn = st.snd.end
		c.shm.Ctl.SndFinDsn = uint64(f.dsn)
		atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(f.dsn))
		atomicOr32(&c.shm.Ctl.Flags, datapath.ConnDataFin)
		f.at = time.Now() // on a pure ACK at once, once the writers drained
		return
	}
	if !f.acked {
		if f.dsn.LessThan(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck))) {
			f.acked = true
			f.at = time.Time{}
		} else if !st.ackArmed {
			st.ackArmed = true
			atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
			// The datapath answers only a doorbell rung before the DATA_ACK moves: one that
			// moved meanwhile is seen on the next round.
			if f.dsn.LessThan(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck))) {
				c.poke()
			}
		}
	}
}

// retransmitFin sends a pure ACK carrying our DATA_FIN until the peer acknowledges it; it runs
// at dataFin.at.
func (c *Conn) retransmitFin(now time.Time) {
	f := &c.st.fin
	if f.acked || c.Err() != nil {
		return
	}
	for _, sf := range c.subs {
		if sf.queued > 0 {
			f.at = now.Add(finDrainGap)
			return
		}
	}
	c.sendACK(nil)
	f.retransmitted(now)
}
