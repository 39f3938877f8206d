package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
)

// TCPConn is a connection that continued as plain TCP: the peer does not speak MPTCP, or the
// handshake lost its options. It behaves exactly as a *net.TCPConn.
type TCPConn struct {
	*net.TCPConn
}

// MPTCP reports false: the connection fell back to plain TCP.
func (*TCPConn) MPTCP() bool { return false }

// IsMPTCP reports whether a connection from Dial or Accept uses MPTCP.
func IsMPTCP(c net.Conn) bool {
	m, ok := c.(interface{ MPTCP() bool })
	return ok && m.MPTCP()
}

// Dialer opens MPTCP connections. The zero value uses the process's default stack.
type Dialer struct {
	Stack     *Stack
	LocalAddr net.Addr
	Timeout   time.Duration
	Scheduler string // "" uses the stack's default
	// CongestionControl names the subflows' congestion control (datapath.CCNames); "" uses
	// the stack's default.
	CongestionControl string
}

// Dial connects to address over MPTCP on the default stack. The result is a *Conn, or a
// *TCPConn when the peer answered without MPTCP.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d Dialer
	return d.DialContext(ctx, network, address)
}

// DialContext connects to address over MPTCP.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	s := d.Stack
	if s == nil {
		var err error
		if s, err = DefaultStack(); err != nil {
			return nil, err
		}
	}
	return s.dial(ctx, d, network, address)
}

func (s *Stack) dial(ctx context.Context, d *Dialer, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("mptcp: dial %s: unsupported network", network)
	}
	if s.refuseForMemory("dial", address) {
		return nil, fmt.Errorf("dial %s: %w", address, ErrMemoryPressure)
	}
	// The dial touches the datapath's shared memory: the stack's Close waits for it, and cuts
	// its connect short.
	if !s.enter() {
		return nil, errStackClosed
	}
	defer s.exit()
	ctx, cancel := s.stopContext(ctx)
	defer cancel()
	// The socket must be created in this thread's network namespace, where the rewriter is.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := s.prepareNetns(); err != nil {
		return nil, err
	}
	// This thread's namespace: where joins are dialled. Taken before the socket, whose
	// descriptor may be the last one the process can open.
	ns, err := s.acquireNetns()
	if err != nil {
		s.log.Debug("no handle on the network namespace: joins are dialled from the process's", "err", err)
	}
	defer func() { s.releaseNetns(ns) }() // unless the connection took it
	s.mu.Lock()
	slot, sub, key, token, err := s.newSlotsLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sched, err := NewScheduler(firstNonEmpty(d.Scheduler, s.scheduler))
	if err != nil {
		s.releaseSlots(slot, sub, token)
		return nil, err
	}
	cc := s.cc
	if d.CongestionControl != "" {
		if cc, err = datapath.ParseCC(d.CongestionControl); err != nil {
			s.releaseSlots(slot, sub, token)
			return nil, err
		}
	}
	c := newConn(s)
	c.slot, c.token, c.localKey, c.shm, c.sched = slot, token, key, s.dp.Conn(slot), sched
	c.setCC(cc)   // before connect(): the subflow's congestion control starts with it
	s.register(c) // events can arrive as soon as the handshake completes
	nd := net.Dialer{LocalAddr: d.LocalAddr, Timeout: d.Timeout, Control: func(_, _ string, rc syscall.RawConn) error {
		return s.prepareSocket(rc, datapath.SkState{Role: datapath.RoleActive, Conn: slot, Sub: sub, LocalKey: key})
	}}
	nd.SetMultipathTCP(false)
	raw, err := nd.DialContext(ctx, network, address)
	if err != nil {
		s.releaseSlots(slot, sub, token)
		return nil, err
	}
	tc := raw.(*net.TCPConn)
	st, ok, err := s.socketState(tc)
	if err != nil || !ok || st.State != datapath.StateMPTCP {
		s.releaseSlots(slot, sub, token)
		if err != nil {
			tc.Close()
			return nil, err
		}
		s.stats.FallbackActive.Add(1)
		return &TCPConn{tc}, nil
	}
	c.remoteKey = st.RemoteKey
	c.laddr, c.raddr = tc.LocalAddr(), tc.RemoteAddr()
	sf, err := newSubflow(c, sub, tc)
	if err != nil {
		tc.Close()
		s.releaseSlots(slot, sub, token)
		return nil, err
	}
	sf.active = true
	c.subs = []*subflow{sf}
	c.ns, ns = ns, nil
	s.stats.ActiveOpens.Add(1)
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// prepareSocket sets our congestion control on a new socket and registers it with the datapath.
func (s *Stack) prepareSocket(rc syscall.RawConn, st datapath.SkState) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		if err = s.dp.UseCongestionControl(int(fd)); err != nil {
			return
		}
		err = s.dp.Register(int(fd), st)
	})
	return errors.Join(cerr, err)
}

// socketState reads a connected socket's datapath state. The TCP_INFO read takes the socket
// lock, so the establishment callbacks have finished.
func (s *Stack) socketState(tc *net.TCPConn) (st datapath.SkState, ok bool, err error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return st, false, err
	}
	cerr := rc.Control(func(fd uintptr) {
		if _, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return
		}
		st, ok, err = s.dp.State(int(fd))
	})
	return st, ok, errors.Join(cerr, err)
}
