package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/acceptpace"
	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// Join sockets: a peer joins an address we announce (a signal endpoint, ADD_ADDR) at the port
// the ADD_ADDR names, or else at the port of the connection's first subflow: our listener's.
// A listener bound to one address does not receive those joins, so the stack listens on each
// announced address a listener does not cover, as the kernel does for its endpoints (its
// "port-based endpoint" listeners). A join socket accepts MP_JOIN subflows for our
// connections only: an MP_CAPABLE or plain TCP connection there is reset with MP_TCPRST
// "administratively prohibited" where it speaks MPTCP, and counted as MPCapableEndpAttempt
// (the kernel's subflow_reset_req_endp).
//
// The stack keeps them in step with its listeners and its path manager's signal endpoints:
// a listener opening or closing, an endpoint added or deleted. One socket serves every
// listener of a network namespace that needs it: joins go to their connection by token,
// whatever socket accepted them.

// joinListen is the stack's listeners, signal endpoints and join sockets.
//
// Locking: everything is guarded by mu. Lock order: the path manager's lock (endpoint hooks
// run under it), then mu, then Stack.mu.
type joinListen struct {
	mu    sync.Mutex
	eps   map[uint8]pmapi.Endpoint // signal endpoints by ID
	devs  map[netip.Addr]string    // the device of each endpoint that names one, by address
	lns   map[*Listener]bool
	socks map[joinKey]*joinSocket
}

func (j *joinListen) init() {
	j.devs = map[netip.Addr]string{}
	j.eps = map[uint8]pmapi.Endpoint{}
	j.lns = map[*Listener]bool{}
	j.socks = map[joinKey]*joinSocket{}
}

// joinKey is where a join socket listens: an address in a network namespace.
type joinKey struct {
	ns   uint64 // namespace cookie (0: unknown)
	addr netip.AddrPort
}

// joinSocket is one listening socket that accepts joins; its accept loop ends when it closes.
type joinSocket struct {
	ln     *net.TCPListener
	ep     pmapi.Endpoint
	stop   context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func (js *joinSocket) close() {
	js.cancel()
	js.ln.Close()
	<-js.done
}

// endpointChanged follows the path manager's endpoints (its OnEndpoint hook).
func (s *Stack) endpointChanged(e pmapi.Endpoint, present bool) {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	if a := e.Addr.Unmap(); present && e.Dev != "" {
		s.joinLn.devs[a] = e.Dev
	} else {
		delete(s.joinLn.devs, a)
	}
	if present && e.Flags&pmapi.FlagSignal != 0 {
		s.joinLn.eps[e.ID] = e
	} else {
		delete(s.joinLn.eps, e.ID)
	}
	s.syncJoinSocketsLocked(nil)
}

// endpointDev returns the device of the endpoint at local address a, "" when it names none.
func (s *Stack) endpointDev(a netip.Addr) string {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	return s.joinLn.devs[a.Unmap()]
}

// backupEndpoint reports whether our signal endpoint id is a backup: the subflows peers join
// to its address are backups.
func (s *Stack) backupEndpoint(id uint8) bool {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	e, ok := s.joinLn.eps[id]
	return ok && id != 0 && e.Flags&pmapi.FlagBackup != 0
}

// joinAddr returns where a peer joins endpoint e of a connection this listener accepted, and
// whether the listener itself does not receive those joins.
func (l *Listener) joinAddr(e pmapi.Endpoint) (netip.AddrPort, bool) {
	if e.Flags&pmapi.FlagSignal == 0 {
		return netip.AddrPort{}, false
	}
	port := e.Port
	if port == 0 {
		port = l.bound.Port()
	}
	ap := netip.AddrPortFrom(e.Addr.Unmap(), port)
	return ap, !l.covers(ap)
}

// covers reports whether the listener's own socket receives connections to ap.
func (l *Listener) covers(ap netip.AddrPort) bool {
	la := l.bound.Addr().Unmap()
	if ap.Port() != l.bound.Port() {
		return false
	}
	if la == ap.Addr() {
		return true
	}
	// A wildcard listener: an IPv6 one takes IPv4 too unless it is IPV6_V6ONLY.
	return la.IsUnspecified() && (la.Is4() == ap.Addr().Is4() || (la.Is6() && !l.v6only))
}

// syncJoinSocketsLocked opens the join sockets the listeners need and closes the others.
// here, if not nil, is a listener whose Listen runs on a thread in its namespace: its sockets
// are opened on that thread.
func (s *Stack) syncJoinSocketsLocked(here *Listener) {
	want := map[joinKey]*Listener{}
	wantEp := map[joinKey]pmapi.Endpoint{}
	for l := range s.joinLn.lns {
		for _, e := range s.joinLn.eps {
			ap, ok := l.joinAddr(e)
			if !ok {
				continue
			}
			k := joinKey{l.nsCookie, ap}
			if s.coveredLocked(k) {
				continue // another listener of ours listens there
			}
			if want[k] == nil || l == here {
				want[k], wantEp[k] = l, e
			}
		}
	}
	for k, js := range s.joinLn.socks {
		if want[k] == nil {
			js.close()
			delete(s.joinLn.socks, k)
			s.log.Info("stopped listening for joins", "addr", k.addr, "endpoint", js.ep.String())
		}
	}
	if s.isClosed() {
		return
	}
	for k, l := range want {
		if s.joinLn.socks[k] != nil {
			continue
		}
		var tl *net.TCPListener
		var err error
		open := func() { tl, err = s.listenJoins(k.addr) }
		if l == here {
			open()
		} else if nerr := inNetns(l.ns, open); nerr != nil {
			err = nerr
		}
		if err != nil {
			s.log.Warn("cannot listen for joins to an announced address: peers joining it are refused",
				"addr", k.addr, "endpoint", wantEp[k].String(), "err", err)
			continue
		}
		js := &joinSocket{ln: tl, ep: wantEp[k], done: make(chan struct{})}
		js.stop, js.cancel = context.WithCancel(context.Background())
		if !s.goroutine(func() { s.joinAcceptLoop(js) }) {
			js.cancel()
			tl.Close() // the stack is closing
			return
		}
		s.joinLn.socks[k] = js
		s.log.Info("listening for joins", "addr", k.addr, "endpoint", js.ep.String())
	}
}

// coveredLocked reports whether one of our listeners listens at k itself.
func (s *Stack) coveredLocked(k joinKey) bool {
	for l := range s.joinLn.lns {
		if l.nsCookie == k.ns && l.covers(k.addr) {
			return true
		}
	}
	return false
}

// addJoinListener and removeJoinListener keep the join sockets in step with the listeners.
func (s *Stack) addJoinListener(l *Listener) {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	s.joinLn.lns[l] = true
	s.syncJoinSocketsLocked(l)
}

func (s *Stack) removeJoinListener(l *Listener) {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	delete(s.joinLn.lns, l)
	s.syncJoinSocketsLocked(nil)
}

// yieldJoinSockets closes the join sockets of this namespace at the address a listener is
// about to take (an invalid or unspecified address: every address at its port) (the next sync leaves them closed: the listener covers them). It reports
// whether it closed any.
func (s *Stack) yieldJoinSockets(ns uint64, want netip.AddrPort) bool {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	n := 0
	for k, js := range s.joinLn.socks {
		if k.ns != ns || k.addr.Port() != want.Port() {
			continue
		}
		if a := want.Addr().Unmap(); !a.IsValid() || a.IsUnspecified() || a == k.addr.Addr() {
			js.close()
			delete(s.joinLn.socks, k)
			n++
		}
	}
	return n > 0
}

// resyncJoinSockets opens the join sockets the listeners need and closes the others.
func (s *Stack) resyncJoinSockets() {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	s.syncJoinSocketsLocked(nil)
}

// closeJoinSockets closes every join socket (the stack is closing).
func (s *Stack) closeJoinSockets() {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	for k, js := range s.joinLn.socks {
		js.close()
		delete(s.joinLn.socks, k)
	}
}

// JoinAddrs returns the addresses the stack listens on for joins only, beyond its listeners'.
func (s *Stack) JoinAddrs() []netip.AddrPort {
	s.joinLn.mu.Lock()
	defer s.joinLn.mu.Unlock()
	var out []netip.AddrPort
	for k := range s.joinLn.socks {
		out = append(out, k.addr)
	}
	return out
}

// listenJoins opens a join socket at addr in the calling thread's namespace. It is marked for
// the datapath as a listener is, and may bind an address not (yet) on an interface: an
// endpoint can be configured before its address.
func (s *Stack) listenJoins(addr netip.AddrPort) (*net.TCPListener, error) {
	if err := s.prepareNetns(); err != nil {
		return nil, err
	}
	network := "tcp4"
	if addr.Addr().Is6() {
		network = "tcp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			if addr.Addr().Is6() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			}
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set freebind: %w", serr)
		}
		return s.prepareSocket(rc, datapath.SkState{Role: datapath.RoleListener, Conn: ^uint32(0), Sub: ^uint32(0)})
	}}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), network, addr.String())
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// inNetns runs f on a thread in namespace r (nil: the process's, on the calling goroutine).
func inNetns(r *nsRef, f func()) error {
	if r == nil {
		f()
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// A thread already in r's namespace stays where it is: entering a namespace needs
		// CAP_SYS_ADMIN, which a daemon working in its own namespace (the systemd unit's
		// capabilities) does not have.
		if cur, err := currentNetns(); err == nil && cur == r.cookie {
			f()
			runtime.UnlockOSThread()
			errc <- nil
			return
		}
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace handle: %w", err)
			return
		}
		// orig is closed before the answer goes, so that the caller never sees it open.
		if err := netns.Set(r.h); err != nil {
			orig.Close()
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		f()
		restored := netns.Set(orig) == nil
		orig.Close()
		if restored {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		errc <- nil
	}()
	return <-errc
}

// joinAcceptLoop accepts from a join socket until it closes.
func (s *Stack) joinAcceptLoop(js *joinSocket) {
	defer close(js.done)
	pace := acceptpace.Pacer{Log: s.log, Msg: "accept on a join socket failed; retrying"}
	refused := acceptpace.Pacer{Log: s.log, Msg: "connection to an announced address refused: it takes MP_JOIN subflows only"}
	for {
		tc, err := js.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			pace.Fail(js.stop, err, "addr", js.ln.Addr())
			continue
		}
		pace.OK()
		if err := s.acceptJoinOnly(tc); err != nil {
			refused.Note(err, "addr", js.ln.Addr(), "from", tc.RemoteAddr())
		}
	}
}

var errJoinOnly = errors.New("not an MP_JOIN")

// acceptJoinOnly hands an MP_JOIN subflow to its connection and resets anything else.
func (s *Stack) acceptJoinOnly(tc *net.TCPConn) error {
	freeSavedSYN(tc)
	st, ok, err := s.socketState(tc)
	if err != nil {
		tc.SetLinger(0)
		tc.Close()
		return err
	}
	if ok && st.Role == datapath.RoleJoinPassive {
		s.acceptJoin(tc, st)
		return nil
	}
	s.stats.MPCapableEndpAttempt.Add(1)
	s.resetPassive(tc, st, ok, RstAdminProhibited)
	return errJoinOnly
}

// resetPassive resets a connection our listener accepted and will not serve: with MP_TCPRST
// and reason when it is MPTCP (its passive-open ticket is taken and its slots freed), a plain
// RST otherwise.
func (s *Stack) resetPassive(tc *net.TCPConn, st datapath.SkState, ok bool, reason uint8) {
	if ok && st.Role == datapath.RolePassive && st.State == datapath.StateMPTCP &&
		s.claimTicket(st.Conn, st.Sub, st.LocalKey) {
		sub := s.dp.Sub(st.Sub)
		sub.Ctl.RstReason = reason
		sub.Ctl.RstFlags = datapath.SubRstRequest
		tc.SetLinger(0)
		tc.Close()
		s.dropPassiveToken(st.Conn, st.LocalKey) // the datapath's registration
		s.releaseSlots(st.Conn, st.Sub, 0)       // the stack never took its token
		return
	}
	tc.SetLinger(0)
	tc.Close()
}
