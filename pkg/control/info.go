package control

import (
	"net"
	"slices"
	"sync/atomic"
	"time"
)

// ConnInfo is a snapshot of a connection's state.
type ConnInfo struct {
	Token             uint32
	MPTCP             bool
	Checksums         bool // DSS checksums negotiated (RFC 8684 §3.3.1)
	Server            bool
	Local             string
	Remote            string
	Scheduler         string
	CongestionControl string // the subflows' congestion control (datapath.CCNames)
	RcvNxt            uint64 // data level: next DSN expected
	PeerFin           bool
	PeerFinDSN        uint64
	RxEOF             bool
	Held              int    // bytes read from subflows waiting for their mapping
	RxOOO             int    // out-of-order bytes
	RxDup             uint64 // bytes received twice (retransmitted or reinjected)
	RxReady           int    // bytes waiting for Read
	SndUna            uint64
	SndNxt            uint64
	SndEnd            uint64
	FinSet            bool
	FinAcked          bool
	DatapathAck       uint64 // the datapath's data-level ACK (rx_ack)
	PeerDataAck       uint64
	PeerWndEnd        uint64     // the peer's window end
	WindowWaits       uint64     // times new data waited for the peer's window
	Reinject          int        // bytes waiting to be sent again
	Events            [16]uint64 // datapath events handled, by type
	Coupled           []uint32   // the subflow slots whose congestion windows are coupled
	Subflows          []SubflowInfo
}

// SubflowInfo describes one subflow.
type SubflowInfo struct {
	Slot       uint32
	Local      string
	Remote     string
	LocalID    uint8
	RemoteID   uint8
	Backup     bool // ours
	PeerBackup bool // the peer's (MP_JOIN B flag or MP_PRIO)
	Ready      bool // may carry data
	Stale      bool
	Lossy      bool // in loss recovery holding the oldest data: its data went elsewhere too
	SRTT       time.Duration
	SchedRTT   time.Duration // the RTT the scheduler compares: of acknowledged data alone, 0 before any
	Cwnd       uint32
	BytesSent  uint64 // written to the socket
	BytesRecv  uint64 // read from the socket
	Retrans    uint32
	Held       int    // bytes read whose mapping has not come
	HeldAt     uint32 // relative SSN of the first held byte
	Mapped     uint32 // relative SSN up to which bytes were mapped
	RxMaps     string // the peer's mappings not fully read: ssn+len>dsn
	// What the subflow's congestion control published for the connection's other subflows
	// (bpf/congestion.h): its window (the threshold in fast recovery) and smoothed RTT, 0
	// before its first ACK in congestion avoidance or slow start.
	CCWindow uint32
	CCSRTT   time.Duration
	// OLIA's loss distance: the larger of the bytes acknowledged between the last two losses
	// and since the last one.
	CCLossInt uint64
}

// Info returns a snapshot of the connection's state; ok is false once it has ended.
func (c *Conn) Info() (ConnInfo, bool) {
	r := make(chan ConnInfo, 1)
	c.wake()
	select {
	case c.infoCh <- r:
		c.wake()
	case <-c.done:
		return ConnInfo{}, false
	}
	select {
	case in := <-r:
		return in, true
	case <-c.done:
		select {
		case in := <-r: // answered as it ended
			return in, true
		default:
			return ConnInfo{}, false
		}
	}
}

func (c *Conn) info() ConnInfo {
	st := &c.st
	in := ConnInfo{
		Token: c.token, MPTCP: c.mptcp.Load(), Checksums: c.csumOn(), Server: c.server, Local: addrString(c.laddr), Remote: addrString(c.raddr),
		Scheduler: c.sched.Name(), CongestionControl: c.cc.String(), RcvNxt: uint64(st.rcv.rx.rcvNxt), PeerFin: st.rcv.fin,
		PeerFinDSN: uint64(st.rcv.finDSN), RxEOF: st.rcv.eof, RxOOO: st.rcv.rx.nOOO, RxDup: st.rcv.rx.dup,
		RxReady: c.rxq.len(), SndUna: uint64(st.snd.una), SndNxt: uint64(st.snd.nxt), SndEnd: uint64(st.snd.end),
		FinSet: st.fin.set, FinAcked: st.fin.acked,
		DatapathAck: atomic.LoadUint64(&c.shm.St.RxAck), PeerDataAck: atomic.LoadUint64(&c.shm.St.PeerDataAck),
		PeerWndEnd: atomic.LoadUint64(&c.shm.St.PeerWndEnd), WindowWaits: st.windowWaits,
		Events: st.events, Coupled: slices.Clone(st.ccSubs),
	}
	in.Reinject = st.reinject.bytes()
	for _, sf := range c.subs {
		for _, h := range sf.rxHeld {
			in.Held += len(h.data)
		}
		in.Subflows = append(in.Subflows, sf.info())
	}
	return in
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
