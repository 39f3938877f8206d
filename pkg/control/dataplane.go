package control

import (
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// dataplane is what the connection core asks of the kernel, the datapath and the stack beyond
// their shared memory: a pure ACK on demand, a subflow's TCP_INFO and retransmission settings,
// the datapath's record of a subflow's socket, closing subflows and returning slots. The shared memory itself (the connection's and the
// subflows' datapath.Conn and datapath.Sub) is read and written in place, as it is plain
// memory: a test gives the connection its own, and a fake dataplane, and drives the core
// without sockets, namespaces or root.
//
// The connection's goroutine calls it, once per decision (a pure ACK, a subflow's health
// check), never per byte.
type dataplane interface {
	// sendACK has sf's socket send a pure ACK now, carrying what the datapath writes on it.
	sendACK(sf *subflow) error
	// tcpInfo reads sf's TCP_INFO.
	tcpInfo(sf *subflow) (*unix.TCPInfo, error)
	// setFastProbe caps sf's retransmission timeout (on), or restores it.
	setFastProbe(sf *subflow, on bool) error
	// sockState returns the datapath's state of sf's socket.
	sockState(sf *subflow) (datapath.SkState, bool)
	// closeSubflow ends sf's writer and closes its socket, with a reset when abort.
	closeSubflow(sf *subflow, abort bool)
	// releaseSubflow returns a detached subflow's slot.
	releaseSubflow(slot uint32)
	// releaseConn ends the connection's token and returns its slot and network namespace.
	releaseConn(c *Conn)
}

// kernelPlane is the dataplane of a running stack: the subflows' sockets and the datapath.
type kernelPlane struct{ s *Stack }

var _ dataplane = kernelPlane{}

func (k kernelPlane) sendACK(sf *subflow) error {
	var err error
	if cerr := sf.raw.Control(func(fd uintptr) { err = k.s.dp.SendACK(int(fd), sf.slot) }); cerr != nil {
		return cerr
	}
	return err
}

func (kernelPlane) tcpInfo(sf *subflow) (*unix.TCPInfo, error) { return sf.tcpInfo() }

func (kernelPlane) setFastProbe(sf *subflow, on bool) error { return sf.setFastProbe(on) }

func (k kernelPlane) sockState(sf *subflow) (st datapath.SkState, ok bool) {
	sf.raw.Control(func(fd uintptr) { st, ok, _ = k.s.dp.State(int(fd)) })
	return st, ok
}

func (kernelPlane) closeSubflow(sf *subflow, abort bool) { sf.shutdown(abort) }

func (k kernelPlane) releaseSubflow(slot uint32) { k.s.releaseSub(slot) }

func (k kernelPlane) releaseConn(c *Conn) {
	k.s.removeToken(c.token)
	k.s.releaseConn(c.slot, c.token)
	k.s.releaseNetns(c.ns)
}

// acked is sf.ackedRel through the dataplane.
func (c *Conn) acked(sf *subflow) (una seqnum.Value, outstanding bool, err error) {
	info, err := c.plane.tcpInfo(sf)
	if err != nil {
		return 0, false, err
	}
	una, outstanding = sf.ackedFrom(info)
	return una, outstanding, nil
}

// sendACK sends a pure ACK (with whatever the datapath writes on it) on sf, or on the first
// usable subflow when sf is nil.
func (c *Conn) sendACK(sf *subflow) {
	if sf == nil {
		if u := usable(c.subs); len(u) > 0 {
			sf = u[0]
		} else if len(c.subs) > 0 {
			sf = c.subs[0]
		} else {
			return
		}
	}
	if err := c.plane.sendACK(sf); err != nil {
		c.stack.log.Debug("send ACK", "token", c.token, "err", err)
	}
}
