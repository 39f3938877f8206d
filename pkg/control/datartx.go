package control

import (
	"time"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// dataRtx is the connection-level retransmission timer's state (RFC 8684 §3.3.6): data that
// every subflow carrying it delivered, and that the peer still does not DATA_ACK, was dropped
// above TCP (a receiver discards a mapping outside its connection-level window, which the
// kernel counts as NoDSSInWindow). Without it the connection waits for that data forever.
//
// The timer runs from the moment TCP delivered the data, so a slow or lossy subflow, which
// checkSubflows handles, does not set it off; it is max(200 ms, 2 RTT) of the slowest subflow,
// doubled on each retransmission of the same byte, at most 10 s. Whether a subflow still
// holds the data is learnt from TCP_INFO, which changes without telling us: the connection
// samples it every pollInterval while data is outstanding (rtxWatched), and starts since over
// when sampling resumes after a pause (resumeSampling). Owned by the connection's goroutine.
type dataRtx struct {
	una     seqnum.DSN // the DATA_ACK the timer runs for
	since   time.Time  // when the data at una last reached the peer at the subflow level
	backoff uint       // retransmissions of una so far
}

// Bounds of the connection-level retransmission.
const (
	dataRtxMin      = 200 * time.Millisecond
	dataRtxMax      = 10 * time.Second
	maxDataRtxChunk = 64 << 10 // bytes sent again at once
)

// timeout is the wait before the data at una goes again, with srtt the slowest subflow's.
func (r *dataRtx) timeout(srtt time.Duration) time.Duration {
	return min(max(dataRtxMin, 2*srtt)<<min(r.backoff, 6), dataRtxMax)
}

// restart starts the timer over for una at now.
func (r *dataRtx) restart(una seqnum.DSN, now time.Time) { *r = dataRtx{una: una, since: now} }

// rtxWatched reports whether data waits for its DATA_ACK: the retransmission timer then runs.
func (c *Conn) rtxWatched() bool {
	return c.mptcp.Load() && c.st.snd.una.LessThan(c.st.snd.nxt)
}

// checkDataAck runs the connection-level retransmission timer at now: it queues the data at
// the DATA_ACK to go again once no subflow has held it for the timeout.
func (c *Conn) checkDataAck(now time.Time) {
	st := &c.st
	r := &st.rtx
	if !c.mptcp.Load() || !st.snd.una.LessThan(st.snd.nxt) || st.snd.una != r.una {
		// Nothing outstanding, or the DATA_ACK moved: the timer starts over.
		r.restart(st.snd.una, now)
		return
	}
	if st.reinject.contains(st.snd.una) {
		r.since = now // already on its way again
		return
	}
	var srtt time.Duration
	for _, sf := range c.subs {
		srtt = max(srtt, sf.srtt())
		if !sf.holds(st.snd.una) {
			continue
		}
		if sf.queued > 0 {
			r.since = now
			return
		}
		if _, outstanding, err := c.acked(sf); err == nil && outstanding {
			r.since = now
			return
		}
	}
	if now.Sub(r.since) < r.timeout(srtt) {
		return
	}
	n := int(min(uint64(maxDataRtxChunk), st.snd.nxt.Sub(st.snd.una)))
	st.reinject = append(st.reinject, dsnRange{st.snd.una, n})
	r.backoff++
	r.since = now
	c.stack.stats.DataRetransmit.Add(1)
	c.stack.log.Debug("no DATA_ACK for data the subflows delivered: sending it again", "token", c.token,
		"dsn", uint64(st.snd.una), "bytes", n, "retransmission", r.backoff)
}
