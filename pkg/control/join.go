package control

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// PathManager is told about connections and their subflows, and drives them through the
// pmapi.Conn commands (the contract is pmapi's; cmd/mptcpd gives the stack a pm.Manager).
type PathManager = pmapi.PathManager

var _ pmapi.Conn = (*Conn)(nil)

// joinResult is a new MP_JOIN subflow's socket, from our dial or our listener's accept.
type joinResult struct {
	tc       *net.TCPConn
	slot     uint32
	st       datapath.SkState
	active   bool
	localID  uint8
	remoteID uint8
	backup   bool
	local    netip.Addr     // active: the address dialled from (invalid: routing picks)
	remote   netip.AddrPort // active: the address dialled
	err      error
}

// joinTimeout bounds an MP_JOIN connect.
const joinTimeout = 10 * time.Second

// do runs f on the connection's goroutine and waits for it; false if the connection ended.
func (c *Conn) do(f func()) bool {
	done := make(chan struct{})
	c.wake()
	select {
	case c.cmdCh <- func() { f(); close(done) }:
		c.wake()
	case <-c.done:
		return false
	}
	select {
	case <-done:
		return true
	case <-c.done:
		return false
	}
}

var errConnEnded = errors.New("mptcp: connection ended")

// Remote returns the peer's address of the initial subflow.
func (c *Conn) Remote() netip.AddrPort { return tcpAddrPort(c.raddr) }

// Local returns our address of the initial subflow.
func (c *Conn) Local() netip.AddrPort { return tcpAddrPort(c.laddr) }

// Server reports whether we accepted the connection.
func (c *Conn) Server() bool { return c.server }

func tcpAddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// AddSubflow opens an MP_JOIN subflow from local (the zero Addr: the kernel's choice) to
// remote; it returns once the attempt is under way.
func (c *Conn) AddSubflow(local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) error {
	var err error
	if !c.do(func() { err = c.startJoin(local, localID, remote, remoteID, backup) }) {
		return errConnEnded
	}
	return err
}

// startJoin prepares a join subflow's slot and state and dials it in the background.
func (c *Conn) startJoin(local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) error {
	if !c.mptcp.Load() || c.Err() != nil || c.userClosed.Load() {
		// A connection being closed finishes on the subflows it has: the application is
		// gone, and the path manager's retries must not outlive it.
		return errConnEnded
	}
	for _, sf := range c.subs {
		if sf.local.Addr() == local && sf.remote == remote {
			return fmt.Errorf("a subflow from %v to %v exists", local, remote)
		}
	}
	slot, err := c.stack.allocSub()
	if err != nil {
		return err
	}
	var nb [4]byte
	if _, err := rand.Read(nb[:]); err != nil {
		c.stack.releaseSub(slot)
		return err
	}
	st := datapath.SkState{
		Role: datapath.RoleJoinActive, Conn: c.slot, Sub: slot, LocalKey: c.localKey, RemoteKey: c.remoteKey,
		RemoteToken: mpcrypto.Token(c.remoteKey), LocalNonce: binary.BigEndian.Uint32(nb[:]), LocalId: localID,
	}
	if backup {
		st.JoinFlags = datapath.JoinBackup
	}
	ns := c.stack.holdNetns(c.ns) // the dial may outlive the connection
	if !c.stack.goroutine(func() {
		tc, err := c.stack.dialJoin(ns, local, remote, c.Local().Addr(), st)
		c.stack.releaseNetns(ns)
		j := joinResult{tc: tc, slot: slot, active: true, localID: localID, remoteID: remoteID, backup: backup, local: local, remote: remote, err: err}
		if err == nil {
			j.st, _, j.err = c.stack.socketState(tc)
		}
		c.wake()
		select {
		case c.joinCh <- &j:
			c.wake()
		case <-c.done:
			c.stack.refuseJoinSocket(j, RstUnspecified)
		}
	}) {
		c.stack.releaseNetns(ns)
		c.stack.releaseSub(slot)
		return errStackClosed
	}
	return nil
}

// dialJoin connects a join subflow's socket in the connection's network namespace. From the
// address routing picks (local invalid), the MP_JOIN carries that address's ID (RFC 8684 §3.2:
// the ID of the source address), 0 only for the connection's first address (initial).
func (s *Stack) dialJoin(ns *nsRef, local netip.Addr, remote netip.AddrPort, initial netip.Addr, st datapath.SkState) (*net.TCPConn, error) {
	var tc *net.TCPConn
	var err error
	if ns != nil {
		if home, herr := processNetns(); herr == nil && ns.cookie == home {
			// The caller is a goroutine of the stack's, not locked to a thread: its thread is
			// in the process's namespace. A join there needs no thread of its own: one held
			// through the connect keeps the runtime from running other goroutines on it, and
			// the runtime starts another thread, which it keeps for good.
			ns = nil
		}
	}
	if nerr := inNetns(ns, func() { tc, err = s.dialJoinHere(local, remote, initial, st) }); nerr != nil {
		return nil, nerr
	}
	return tc, err
}

// dialJoinHere is dialJoin on the calling thread, in its namespace.
func (s *Stack) dialJoinHere(local netip.Addr, remote netip.AddrPort, initial netip.Addr, st datapath.SkState) (*net.TCPConn, error) {
	if !local.IsValid() && st.LocalId == 0 {
		if src, err := routedSource(remote); err == nil && src != initial.Unmap() {
			if id, err := s.dp.LocalID(src); err == nil {
				st.LocalId = id
			}
		}
	}
	// A subflow from an endpoint that names its device is bound to it, as the kernel's path
	// manager binds one (sk_bound_dev_if): it leaves by that link or not at all. Unbound, a
	// join dialled as an address comes back, before its link's routes do, takes another link
	// and keeps that route.
	var dev string
	if local.IsValid() {
		dev = s.endpointDev(local)
	}
	d := net.Dialer{Timeout: joinTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		if dev != "" {
			var err error
			if cerr := rc.Control(func(fd uintptr) { err = unix.BindToDevice(int(fd), dev) }); cerr != nil || err != nil {
				return fmt.Errorf("bind to device %s: %w", dev, errors.Join(cerr, err))
			}
		}
		return s.prepareSocket(rc, st)
	}}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	d.SetMultipathTCP(false)
	ctx, cancel := s.stopContext(context.Background()) // the stack's Close cuts it short
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", remote.String())
	if err != nil {
		return nil, err
	}
	return raw.(*net.TCPConn), nil
}

// attachSubflow adds a join subflow whose HMACs checked out, or resets one that failed.
func (c *Conn) attachSubflow(j joinResult) {
	if j.err != nil {
		c.stack.log.Debug("join failed", "token", c.token, "err", j.err)
		c.stack.refuseJoinSocket(j, RstMPTCPError)
		c.joinFailed(j, j.err)
		return
	}
	if j.st.State != datapath.StateMPTCP || c.Err() != nil || !c.mptcp.Load() {
		c.stack.stats.JoinRefused.Add(1)
		c.stack.refuseJoinSocket(j, RstMPTCPError)
		c.joinFailed(j, errJoinRefused)
		return
	}
	sf, err := newSubflow(c, j.slot, j.tc)
	if err != nil {
		c.stack.refuseJoinSocket(j, RstMPTCPError)
		c.joinFailed(j, err)
		return
	}
	sf.active = j.active
	sf.localID, sf.remoteID, sf.backup = j.localID, j.remoteID, j.backup
	if !j.active {
		sf.localID, sf.remoteID = j.st.LocalId, j.st.RemoteId
	} else if sf.localID == 0 {
		// Dialled from the address routing picked: the ID its MP_JOIN carried (dialJoin), so
		// that deleting that endpoint or changing its backup flag reaches this subflow.
		sf.localID = j.st.LocalId
	}
	sf.peerBackup = j.st.Flags&datapath.SubPeerBackup != 0
	// A join may carry data once the peer acknowledged its third ACK (ours: the fourth ACK
	// came; the peer's: we verified its HMAC and answer with the fourth ACK).
	sf.ready = !j.active || j.st.Flags&datapath.SubMPCAcked != 0
	if !sf.ready {
		sf.joinAck.rto = joinAckRTO
		sf.joinAck.at = time.Now().Add(joinAckRTO)
	}
	if !c.stack.goroutine(sf.readLoop) {
		c.stack.refuseJoinSocket(j, RstUnspecified) // the stack is closing
		return
	}
	c.subs = append(c.subs, sf)
	c.st.joined = true
	c.stack.stats.Joins.Add(1)
	if !j.active && c.stack.backupEndpoint(sf.localID) {
		// A join to an address we announced as a backup: a backup for us, and MP_PRIO tells
		// the peer (§3.3.8; the kernel sets B in its MP_JOIN SYN/ACK instead).
		sf.backup = true
		if err := c.queueOption(sf, wire.MPPrio{Backup: true}.Append(nil)); err == nil {
			c.stack.stats.MPPrioTx.Add(1)
		}
	}
	c.emitSub(EventSubEstablished, sf, nil)
	for _, ev := range c.st.pendingSub[j.slot] {
		c.handleEvent(ev)
	}
	delete(c.st.pendingSub, j.slot)
	c.stack.log.Debug("subflow joined", "token", c.token, "local", sf.local, "remote", sf.remote, "backup", sf.backup || sf.peerBackup)
}

// errJoinRefused: the peer answered our MP_JOIN SYN without MP_JOIN (unknown token, limits).
var errJoinRefused = errors.New("the peer refused the MP_JOIN")

// joinFailed tells the path manager that a subflow we dialled did not come up, so that it can
// try again later.
func (c *Conn) joinFailed(j joinResult, err error) {
	if !j.active || c.Err() != nil {
		return
	}
	view := pmapi.Subflow{
		Local: netip.AddrPortFrom(j.local, 0), Remote: j.remote, LocalID: j.localID, RemoteID: j.remoteID,
		Backup: j.backup, Active: true,
	}
	c.toPM(func(p PathManager) { p.SubflowClosed(c, view, fmt.Errorf("join: %w", err)) })
}

// refuseJoin resets a join's socket with MP_TCPRST and frees its slot.
func (c *Conn) refuseJoin(j joinResult, reason uint8) { c.stack.refuseJoinSocket(j, reason) }

func (s *Stack) refuseJoinSocket(j joinResult, reason uint8) {
	if j.tc != nil {
		sub := s.dp.Sub(j.slot)
		sub.Ctl.RstReason = reason
		sub.Ctl.RstFlags = datapath.SubRstRequest
		j.tc.SetLinger(0)
		j.tc.Close()
	}
	s.releaseSub(j.slot)
}

// CloseSubflows closes the subflows with this local or remote address ID (-1 matches none).
func (c *Conn) CloseSubflows(localID, remoteID int) int {
	n := 0
	c.do(func() {
		for _, sf := range append([]*subflow(nil), c.subs...) {
			if (localID >= 0 && int(sf.localID) == localID) || (remoteID >= 0 && int(sf.remoteID) == remoteID) {
				if len(c.subs) == 1 {
					return // the last subflow stays: the connection needs one
				}
				c.dropSubflow(sf, pmapi.ErrRemoved)
				c.stack.stats.RmSubflow.Add(1)
				n++
			}
		}
	})
	return n
}

// Subflows describes the subflows for the path manager.
func (c *Conn) Subflows() []pmapi.Subflow {
	var out []pmapi.Subflow
	c.do(func() {
		for _, sf := range c.subs {
			out = append(out, sf.pmView())
		}
	})
	return out
}

func (sf *subflow) pmView() pmapi.Subflow {
	return pmapi.Subflow{Local: sf.local, Remote: sf.remote, LocalID: sf.localID, RemoteID: sf.remoteID, Backup: sf.backup, Active: sf.active}
}

// ---- ADD_ADDR, REMOVE_ADDR, MP_PRIO ----

// announce is one of our ADD_ADDRs, retransmitted until the peer echoes it (§3.4.1).
type announce struct {
	opt   []byte
	next  time.Time
	tries int
}

const (
	announceRTO     = time.Second
	announceRetries = 8
)

// Announce sends ADD_ADDR for one of our addresses, with its HMAC, until it is echoed.
func (c *Conn) Announce(id uint8, addr netip.Addr, port uint16) error {
	var err error
	if !c.do(func() {
		a := wire.AddAddr{AddrID: id, Addr: addr.Unmap(), Port: port, HasPort: port != 0,
			HMAC: mpcrypto.AddAddrHMAC(c.localKey, c.remoteKey, id, addr.Unmap(), port)}
		an := &announce{opt: a.Append(nil), next: time.Now().Add(announceRTO)}
		c.st.announces[id] = an
		if err = c.queueOption(nil, an.opt); err == nil {
			c.stack.stats.AddAddrTx.Add(1)
		}
	}) {
		return errConnEnded
	}
	return err
}

// CloseSubflowsFrom closes the subflows from a local address that went away (its link down,
// or the address removed) with err, all but the last: the connection needs one.
func (c *Conn) CloseSubflowsFrom(local netip.Addr, err error) int {
	n := 0
	c.do(func() {
		for _, sf := range append([]*subflow(nil), c.subs...) {
			if sf.local.Addr().Unmap() == local.Unmap() && len(c.subs) > 1 {
				c.dropSubflow(sf, err)
				n++
			}
		}
	})
	return n
}

// Withdraw sends REMOVE_ADDR for our address IDs and closes our subflows from them.
func (c *Conn) Withdraw(ids ...uint8) error {
	var err error
	if !c.do(func() {
		for _, id := range ids {
			delete(c.st.announces, id)
		}
		// Sent on a subflow that stays, so that it is not lost with the ones that close.
		var on *subflow
		for _, sf := range usable(c.subs) {
			if !slices.Contains(ids, sf.localID) {
				on = sf
				break
			}
		}
		if err = c.queueOption(on, wire.RemoveAddr{IDs: ids}.Append(nil)); err == nil {
			c.stack.stats.RmAddrTx.Add(1)
		}
	}) {
		return errConnEnded
	}
	for _, id := range ids {
		c.CloseSubflows(int(id), -1)
	}
	return err
}

// SetBackup sends MP_PRIO on the subflows from local address ID id (-1: every subflow) and
// treats them as backups (or not) from now on.
func (c *Conn) SetBackup(localID int, backup bool) error {
	var err error
	if !c.do(func() {
		for _, sf := range c.subs {
			if localID >= 0 && int(sf.localID) != localID {
				continue
			}
			sf.backup = backup
			if e := c.queueOption(sf, wire.MPPrio{Backup: backup}.Append(nil)); e != nil {
				err = e
			} else {
				c.stack.stats.MPPrioTx.Add(1)
			}
		}
	}) {
		return errConnEnded
	}
	return err
}

// SetSubflowBackup is SetBackup for the one subflow between local and remote.
func (c *Conn) SetSubflowBackup(local, remote netip.AddrPort, backup bool) error {
	err := fmt.Errorf("no subflow %v -> %v", local, remote)
	c.do(func() {
		for _, sf := range c.subs {
			if sf.local == local && sf.remote == remote {
				sf.backup = backup
				if err = c.queueOption(sf, wire.MPPrio{Backup: backup}.Append(nil)); err == nil {
					c.stack.stats.MPPrioTx.Add(1)
				}
			}
		}
	})
	return err
}

// queueOption has the datapath write an option on a pure ACK of its own on sf (nil: the first
// usable subflow), after the options queued before it.
func (c *Conn) queueOption(sf *subflow, opt []byte) error {
	if !c.mptcp.Load() {
		return errors.New("mptcp: connection fell back to TCP")
	}
	if sf == nil {
		u := usable(c.subs)
		if len(u) == 0 {
			return errors.New("mptcp: no usable subflow")
		}
		sf = u[0]
	}
	sf.optQueue = append(sf.optQueue, opt)
	c.flushOptions(sf)
	return nil
}

// flushOptions hands the next queued option to the datapath once it wrote the previous one.
func (c *Conn) flushOptions(sf *subflow) {
	if len(sf.optQueue) == 0 || sf.gone {
		return
	}
	ctl := &sf.shm.Ctl
	if ctl.OptGen != loadU32(&sf.shm.St.OptDone) {
		c.sendACK(sf) // still pending: make sure a pure ACK goes out
		return
	}
	opt := sf.optQueue[0]
	sf.optQueue = sf.optQueue[1:]
	clear(ctl.Opt[:])
	copy(ctl.Opt[:], opt)
	ctl.OptLen = uint8(len(opt))
	atomicAdd32(&ctl.OptGen, 1)
	c.sendACK(sf)
}

// retransmitAnnounces re-sends our ADD_ADDRs not yet echoed, and feeds queued options.
func (c *Conn) retransmitAnnounces() {
	now := time.Now()
	for id, an := range c.st.announces {
		if now.Before(an.next) {
			continue
		}
		if an.tries >= announceRetries {
			delete(c.st.announces, id)
			continue
		}
		an.tries++
		an.next = now.Add(announceRTO << min(an.tries, 5))
		if c.queueOption(nil, an.opt) == nil {
			c.stack.stats.AddAddrTx.Add(1)
		}
	}
	for _, sf := range c.subs {
		c.flushOptions(sf)
	}
}

// announceDeadline is when retransmitAnnounces has an ADD_ADDR to send again (zero: none).
func (c *Conn) announceDeadline() time.Time {
	var d time.Time
	for _, an := range c.st.announces {
		d = earliest(d, an.next)
	}
	return d
}

// handleOption acts on an ADD_ADDR, REMOVE_ADDR or MP_PRIO the peer sent.
func (c *Conn) handleOption(sf *subflow, raw []byte) {
	o, _, err := wire.Parse(raw)
	if err != nil {
		return
	}
	switch o := o.(type) {
	case wire.AddAddr:
		port := uint16(0)
		if o.PortPresent() {
			port = o.Port
		}
		if o.Echo {
			if _, ok := c.st.announces[o.AddrID]; ok {
				c.stack.stats.EchoAdd.Add(1)
				delete(c.st.announces, o.AddrID) // our announcement arrived
			}
			return
		}
		if mpcrypto.AddAddrHMAC(c.remoteKey, c.localKey, o.AddrID, o.Addr, port) != o.HMAC {
			c.stack.stats.AddAddrHMacFailure.Add(1)
			return
		}
		c.stack.stats.AddAddrAccepted.Add(1)
		echo := wire.AddAddr{Echo: true, AddrID: o.AddrID, Addr: o.Addr, Port: port, HasPort: o.PortPresent()}
		if c.queueOption(sf, echo.Append(nil)) == nil {
			c.stack.stats.EchoAddTx.Add(1)
		}
		addr := netip.AddrPortFrom(o.Addr.Unmap(), port)
		c.checkEstablished(true)
		c.emitAddr(EventAnnounced, o.AddrID, addr)
		c.toPM(func(p PathManager) { p.AddrAnnounced(c, o.AddrID, addr) })
	case wire.RemoveAddr:
		c.stack.stats.RmAddrAccepted.Add(1)
		for _, id := range o.IDs {
			c.checkEstablished(true)
			c.emitAddr(EventRemoved, id, netip.AddrPort{})
			c.toPM(func(p PathManager) { p.AddrRemoved(c, id) })
		}
	case wire.MPPrio:
		sf.peerBackup = o.Backup
		c.stack.stats.MPPrioAccepted.Add(1)
		c.emitSub(EventSubPriority, sf, nil)
	}
}

// toPM queues a call to the path manager. The calls run in order on a goroutine of their own,
// as they call back into the connection's (through c.do); that goroutine runs only while calls
// are queued, so an idle connection holds none.
func (c *Conn) toPM(f func(PathManager)) {
	if c.pm == nil {
		return
	}
	c.pmq.Lock()
	defer c.pmq.Unlock()
	if c.pmq.last {
		return // Closed was queued: the path manager is told nothing after it
	}
	c.pmq.q = append(c.pmq.q, f)
	c.pmStartLocked()
}

// pmStartLocked starts pmRun unless one runs; a stack that is closing starts none, and the
// path manager is told nothing more.
func (c *Conn) pmStartLocked() {
	if c.pmq.running {
		return
	}
	c.pmq.running = true
	if !c.stack.goroutine(c.pmRun) {
		c.pmq.running = false
		c.pmq.q = nil
	}
}

// pmRun makes the queued path-manager calls, in order, until the queue is empty.
func (c *Conn) pmRun() {
	for {
		c.pmq.Lock()
		q := c.pmq.q
		c.pmq.q = nil
		if len(q) == 0 {
			c.pmq.running = false
			c.pmq.Unlock()
			return
		}
		c.pmq.Unlock()
		for _, f := range q {
			f(c.pm)
		}
	}
}

// pmClosed queues the path manager's Closed call, the last. When the stack is closing and no
// goroutine may start, Closed is called here: the path manager forgets the connection either
// way (the calls queued before it are dropped).
func (c *Conn) pmClosed() {
	if c.pm == nil {
		return
	}
	c.pmq.Lock()
	if c.pmq.last {
		c.pmq.Unlock()
		return
	}
	c.pmq.q = append(c.pmq.q, func(p PathManager) { p.Closed(c) })
	c.pmq.last = true
	c.pmStartLocked()
	refused := !c.pmq.running && c.pmq.q == nil
	c.pmq.Unlock()
	if refused {
		c.pm.Closed(c)
	}
}

// routedSource returns the local address routing picks toward remote: a connected UDP socket
// is bound to it, and sends nothing.
func routedSource(remote netip.AddrPort) (netip.Addr, error) {
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(remote))
	if err != nil {
		return netip.Addr{}, err
	}
	defer u.Close()
	return u.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
