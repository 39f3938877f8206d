package control

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// Subflow health and reinjection: which subflows may carry data, the ones that stopped making
// progress (stale) or hold up the connection in loss recovery (lossy), and the data they held,
// queued to go again on the others.

// reinjectQueue is data to send again, oldest first: what failed, stale or lossy subflows held,
// and what the data-level retransmission timer sends again. Owned by the connection's
// goroutine; the send path takes from it first (nextMapping).
type reinjectQueue []dsnRange

// contains reports whether dsn waits in the queue.
func (q reinjectQueue) contains(dsn seqnum.DSN) bool {
	for _, r := range q {
		if r.contains(dsn) {
			return true
		}
	}
	return false
}

// bytes is the length of the queue.
func (q reinjectQueue) bytes() int {
	n := 0
	for _, r := range q {
		n += r.n
	}
	return n
}

// next cuts the next mapping to send again from the send buffer, at most size bytes, skipping
// what the peer acknowledged meanwhile.
func (q *reinjectQueue) next(b *sendBuf, size int) (txChunk, bool) {
	for len(*q) > 0 {
		r := &(*q)[0]
		if r.dsn.LessThan(b.una) { // acknowledged meanwhile
			skip := min(uint64(r.n), b.una.Sub(r.dsn))
			r.dsn, r.n = r.dsn.Add(skip), r.n-int(skip)
		}
		if r.n <= 0 {
			*q = (*q)[1:]
			continue
		}
		ch := b.rangeAt(r.dsn, min(r.n, size))
		if ch.n == 0 {
			*q = (*q)[1:]
			continue
		}
		r.dsn, r.n = r.dsn.Add(uint64(ch.n)), r.n-ch.n
		if r.n == 0 {
			*q = (*q)[1:]
		}
		return ch, true
	}
	return txChunk{}, false
}

// usable returns the subflows that may carry data now: ready, neither stale nor lossy, the
// backups only when no other subflow is (§3.3.8). When none is, the lossy ones, which still
// deliver, however slowly; and when every subflow is stale, the stale ones, as nothing else is
// left.
func usable(subs []*subflow) []*subflow {
	var regular, backup, lossy, stale []*subflow
	for _, sf := range subs {
		switch {
		case !sf.ready || sf.eof && !sf.halfClosed || sf.gone:
		case sf.health.stale:
			stale = append(stale, sf)
		case sf.health.lossy:
			lossy = append(lossy, sf)
		case sf.backup || sf.peerBackup:
			backup = append(backup, sf)
		default:
			regular = append(regular, sf)
		}
	}
	switch {
	case len(regular) > 0:
		return regular
	case len(backup) > 0:
		return backup
	case len(lossy) > 0:
		return lossy
	}
	return stale
}

// subflowHealth is what checkSubflows learnt of a subflow's progress from its TCP_INFO samples.
// Owned by the connection's goroutine.
type subflowHealth struct {
	stale        bool         // no progress with data outstanding: not used while others are
	lossy        bool         // in TCP loss recovery holding the oldest data: not used while others are
	lossSince    time.Time    // when TCP_INFO first showed it in loss recovery (zero: not)
	lastUna      seqnum.Value // its first byte not acknowledged at the subflow level, last sample
	lastProgress time.Time    // when that moved last, or nothing was outstanding
	nomapSeen    uint64       // DSSTxNoMapping of this subflow last reported
}

// sampleLoss notes at now whether TCP is in loss recovery with data outstanding. It reports
// whether a lossy subflow thereby recovered, and whether the recovery has lasted long: max(250
// ms, 4 RTT); a short one (random loss) repairs itself, a long one is a burst loss.
func (h *subflowHealth) sampleLoss(now time.Time, inLoss bool, srtt time.Duration) (recovered, long bool) {
	switch {
	case !inLoss:
		h.lossSince = time.Time{}
		if h.lossy {
			h.lossy, recovered = false, true
		}
	case h.lossSince.IsZero():
		h.lossSince = now
	}
	return recovered, inLoss && now.Sub(h.lossSince) >= max(lossyAfter, 4*srtt)
}

// sampleProgress notes at now the first byte not acknowledged at the subflow level, and
// whether anything is outstanding. It reports whether the subflow made progress (or has
// nothing to make progress with), and whether a stale subflow thereby recovered.
func (h *subflowHealth) sampleProgress(now time.Time, una seqnum.Value, outstanding bool) (progressed, recovered bool) {
	if una == h.lastUna && outstanding {
		return false, false
	}
	h.lastUna, h.lastProgress = una, now
	if h.stale {
		h.stale, recovered = false, true
	}
	return true, recovered
}

// stalled reports whether a subflow not yet stale has made no progress for max(250 ms, 3 RTT,
// rto + 2 RTT), rto its retransmission timeout before backoff. The last term spares a subflow whose one retransmission
// timeout under random loss (the timeout is at least 200 ms) is answered in a round trip or two:
// only a retransmission lost again, or a path that went silent, leaves it without progress that
// long.
func (h *subflowHealth) stalled(now time.Time, srtt, rto time.Duration) bool {
	return !h.stale && now.Sub(h.lastProgress) > max(staleAfter, 3*srtt, rto+2*srtt)
}

// otherUsable reports whether a subflow other than sf can carry data now.
func (c *Conn) otherUsable(sf *subflow) bool {
	for _, x := range c.subs {
		if x != sf && x.ready && !x.eof && !x.gone && !x.health.stale && !x.health.lossy && x.draining.IsZero() {
			return true
		}
	}
	return false
}

// reinjectFrom queues what a subflow had in flight, not yet DATA_ACKed, to go again on others.
func (c *Conn) reinjectFrom(sf *subflow) {
	sf.trimInflight(c.st.snd.una)
	c.st.reinject = append(c.st.reinject, sf.inflight...)
	sf.inflight = nil
}

// healthWatched reports whether checkSubflows has anything to watch: two subflows or more with
// data not DATA_ACKed, or a stale or lossy one to give back.
func (c *Conn) healthWatched() bool {
	if len(c.subs) >= 2 && c.st.snd.una.LessThan(c.st.snd.nxt) {
		return true
	}
	for _, sf := range c.subs {
		if sf.health.stale || sf.health.lossy {
			return true
		}
	}
	return false
}

// tcpiOptSACK is the tcpi_options bit of a connection with SACK (include/uapi/linux/tcp.h).
const tcpiOptSACK = 2

// Thresholds of checkSubflows.
const (
	staleAfter = 250 * time.Millisecond // at least, and 3 RTT, without progress
	lossyAfter = 250 * time.Millisecond // at least, and 4 RTT, in loss recovery
)

// checkSubflows marks subflows stale that make no progress with data outstanding: their data
// goes on the other subflows. RFC 8684 leaves the test to us; the kernel waits for four RTOs
// (stale_loss_cnt), we for max(250 ms, 3 RTT) without an acknowledgement.
//
// A subflow without SACK (its SYN left by a device without our TC program) long in loss
// recovery (max(250 ms, 4 RTT)) that holds the connection's oldest unacknowledged data holds up
// everything behind it: without SACK TCP repairs a burst loss one segment per round trip, and
// the peer's connection-level window stays full meanwhile. Its data in flight
// goes on the other subflows too, and it gets no new data until TCP has recovered, as the
// kernel's MPTCP-level retransmission does for data stuck on a subflow.
//
// It samples TCP_INFO, which changes without telling us: the connection runs it every
// pollInterval while healthWatched.
func (c *Conn) checkSubflows(now time.Time) {
	if len(c.subs) < 2 {
		// Alone, a subflow carries everything whatever its state: one left stale by the
		// others' departure gets its own retransmission timeouts back.
		for _, sf := range c.subs {
			if sf.health.stale {
				sf.health.stale = false
				c.setFastProbe(sf, false)
			}
			sf.health.lossy, sf.health.lossSince = false, time.Time{}
		}
		return
	}
	for _, sf := range c.subs {
		if !sf.ready || sf.eof {
			continue
		}
		info, err := c.plane.tcpInfo(sf)
		if err != nil {
			continue
		}
		sf.rttVar = time.Duration(info.Rttvar) * time.Microsecond // for the ecf scheduler
		una, outstanding := sf.ackedFrom(info)
		// In recovery only while it holds data: without SACK, Linux keeps a socket in its
		// loss state until something above the recovery point is acknowledged, and a subflow
		// we call lossy gets nothing new, so it would never leave that state.
		// A subflow with SACK repairs a burst in a round trip or two; the lossy rule is for
		// one without (a device without our TC program, see the README's SACK).
		inLoss := info.Ca_state >= tcpCARecovery && outstanding && info.Options&tcpiOptSACK == 0
		h, srtt := &sf.health, sf.srtt()
		recovered, longLoss := h.sampleLoss(now, inLoss, srtt)
		if recovered {
			c.stack.log.Debug("subflow recovered from loss", "token", c.token, "slot", sf.slot)
		}
		if !h.lossy && longLoss && sf.holds(c.st.snd.una) && c.otherUsable(sf) {
			h.lossy = true
			c.stack.stats.SubflowLossy.Add(1)
			c.stack.log.Debug("subflow in loss recovery holds the oldest data: re-sending it elsewhere", "token", c.token, "slot", sf.slot)
			c.reinjectFrom(sf)
		}
		if progressed, back := h.sampleProgress(now, una, outstanding); progressed {
			if back {
				c.stack.log.Debug("subflow recovered", "token", c.token, "slot", sf.slot)
				c.setFastProbe(sf, false)
			}
			continue
		}
		// The timeout before backoff: tcpi_rto doubles with each timeout, and a threshold that
		// grew with it would never be reached on a path that went silent.
		if h.stalled(now, srtt, time.Duration(info.Rto>>min(info.Backoff, 16))*time.Microsecond) {
			h.stale = true
			c.stack.stats.SubflowStale.Add(1)
			c.stack.log.Debug("subflow stale: re-sending its data elsewhere", "token", c.token, "slot", sf.slot)
			c.reinjectFrom(sf)
			c.setFastProbe(sf, true)
		}
	}
	// Data handed to a subflow after it went stale (while every subflow was) goes again once
	// another one works.
	fresh := false
	for _, sf := range c.subs {
		fresh = fresh || (sf.ready && !sf.eof && !sf.health.stale)
	}
	if fresh {
		for _, sf := range c.subs {
			if sf.health.stale && len(sf.inflight) > 0 {
				c.reinjectFrom(sf)
			}
		}
	}
}

// setFastProbe turns a subflow's fast probing on or off; a failure (an old kernel) only costs
// the faster notice of its path's return.
func (c *Conn) setFastProbe(sf *subflow, on bool) {
	if err := c.plane.setFastProbe(sf, on); err != nil {
		c.stack.log.Debug("subflow: fast probing", "token", c.token, "slot", sf.slot, "err", err)
	}
}

// reportNoMapping logs data segments the datapath wrote without a DSS because no mapping in
// the subflow's table covered them (counted as DSSTxNoMapping): the peer cannot place those
// bytes. The log shows where the table stood.
func (c *Conn) reportNoMapping() {
	if !c.mptcp.Load() {
		return
	}
	for _, sf := range c.subs {
		n := atomic.LoadUint64(&sf.shm.St.TxNomap)
		if n == sf.health.nomapSeen {
			continue
		}
		sf.health.nomapSeen = n
		head := atomic.LoadUint64(&sf.shm.Ctl.TxmapHead)
		lo := head - min(head, uint64(datapath.TxMapRing-1))
		first, last := sf.shm.Ctl.Txmap[lo%uint64(datapath.TxMapRing)], sf.shm.Ctl.Txmap[(head-1)%uint64(datapath.TxMapRing)]
		una, _, _ := c.acked(sf)
		c.stack.log.Warn("data segment written without a mapping", "token", c.token, "slot", sf.slot, "count", n,
			"ssn", atomic.LoadUint32(&sf.shm.St.NomapRel), "una", uint32(una), "head", head,
			"oldest", fmt.Sprintf("%d+%d", first.Ssn, first.Len), "newest", fmt.Sprintf("%d+%d", last.Ssn, last.Len),
			"written", sf.written.Load())
	}
}
