package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/acceptpace"
	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
)

// Listener accepts MPTCP connections, and plain TCP clients, which get a *TCPConn.
//
// A goroutine accepts from the socket all the time: MP_JOIN subflows go to their connections at
// once, whether or not the application is calling Accept; connections wait in a queue.
type Listener struct {
	s      *Stack
	ln     *net.TCPListener
	ns     *nsRef // shared with the connections it accepts
	closed sync.Once
	queue  chan acceptResult
	done   chan struct{}
	stop   context.Context // ends with Close: cuts a wait after a failed accept short
	cancel context.CancelFunc
	dl     *deadline

	// TCP Fast Open children waiting for their client's key (awaitTFO): at most
	// maxTFOWaiting at once, the accept loop stalls beyond; it waits for them to end before
	// it drains the queue at Close.
	tfoSem chan struct{}
	tfoWG  sync.WaitGroup

	// Where it listens, for the join sockets (joinlisten.go).
	bound    netip.AddrPort
	v6only   bool   // an IPv6 wildcard listener that takes no IPv4
	nsCookie uint64 // its network namespace (0: unknown)
}

type acceptResult struct {
	c   net.Conn
	err error
}

// Listen listens on address on the default stack.
func Listen(network, address string) (*Listener, error) {
	s, err := DefaultStack()
	if err != nil {
		return nil, err
	}
	return s.Listen(context.Background(), network, address)
}

// Listen listens on address for MPTCP and plain TCP clients.
func (s *Stack) Listen(ctx context.Context, network, address string) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("mptcp: listen %s: unsupported network", network)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := s.prepareNetns(); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return s.prepareSocket(rc, datapath.SkState{Role: datapath.RoleListener, Conn: ^uint32(0), Sub: ^uint32(0)})
	}}
	// Go listens with the kernel's MPTCP by default; ours must be plain TCP.
	lc.SetMultipathTCP(false)
	cookie, _ := currentNetns()
	l, err := lc.Listen(ctx, network, address)
	if errors.Is(err, syscall.EADDRINUSE) {
		// One of our join sockets may hold the address (a signal endpoint another listener
		// announces): this listener takes it over and receives those joins itself.
		if a, rerr := net.ResolveTCPAddr(network, address); rerr == nil && s.yieldJoinSockets(cookie, tcpAddrPort(a)) {
			if l, err = lc.Listen(ctx, network, address); err != nil {
				s.resyncJoinSockets() // taken by something else: open them again
			}
		}
	}
	if err != nil {
		return nil, err
	}
	s.addListener(1)
	ns, err := s.acquireNetns()
	if err != nil {
		s.log.Warn("no handle on the listener's network namespace: joins of its connections are dialled from the process's", "err", err)
	}
	ln := &Listener{s: s, ln: l.(*net.TCPListener), ns: ns, queue: make(chan acceptResult, 128), done: make(chan struct{}), dl: newDeadline(),
		tfoSem: make(chan struct{}, maxTFOWaiting)}
	ln.stop, ln.cancel = context.WithCancel(context.Background())
	ln.bound, ln.nsCookie = tcpAddrPort(l.Addr()), cookie
	if ln.bound.Addr().Is6() {
		ln.v6only = v6only(ln.ln)
	}
	if !s.startListener(ln) {
		l.Close()
		s.addListener(-1)
		s.releaseNetns(ns)
		return nil, errStackClosed
	}
	// On this thread, in the listener's namespace: the join sockets it needs open here.
	s.addJoinListener(ln)
	return ln, nil
}

// Accept waits for the next connection: a *Conn for an MPTCP client, a *TCPConn otherwise.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.dl.mu.Lock()
		t, changed := l.dl.t, l.dl.changed
		l.dl.mu.Unlock()
		var timer <-chan time.Time
		var tm *time.Timer
		if !t.IsZero() {
			d := time.Until(t)
			if d <= 0 {
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.ErrDeadlineExceeded}
			}
			tm = time.NewTimer(d)
			timer = tm.C
		}
		select {
		case r := <-l.queue:
			if tm != nil {
				tm.Stop()
			}
			return r.c, r.err
		case <-l.done:
			if tm != nil {
				tm.Stop()
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		case <-timer:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.ErrDeadlineExceeded}
		case <-changed:
			if tm != nil {
				tm.Stop()
			}
		}
	}
}

// acceptLoop accepts from the socket until it closes.
func (l *Listener) acceptLoop() {
	var pace acceptpace.Pacer // no log: Accept hands the failures to the application
	for {
		c, err := l.acceptOne()
		if err != nil && errors.Is(err, net.ErrClosed) {
			l.tfoWG.Wait() // they see the listener closed; what they queued is drained below
			close(l.done)
			for { // connections nobody will accept
				select {
				case r := <-l.queue:
					if r.c != nil {
						r.c.Close()
					}
				default:
					return
				}
			}
		}
		if err != nil {
			// Out of descriptors (EMFILE) or memory: the socket waits in the backlog and an
			// accept at once would fail alike. The application learns of it if its queue has
			// room; joins and connections are accepted again after the wait.
			select {
			case l.queue <- acceptResult{nil, err}:
			default:
			}
			pace.Fail(l.stop, err)
			continue
		}
		pace.OK()
		if c == nil {
			continue // a join, handed to its connection
		}
		select {
		case l.queue <- acceptResult{c, err}:
		case <-l.stop.Done():
			// Closed with its queue full: the next accept fails and the loop ends.
			c.Close()
		}
	}
}

// acceptOne accepts one socket: a connection to queue, or (nil, nil) for a join or a connection
// refused.
func (l *Listener) acceptOne() (net.Conn, error) {
	s := l.s
	{
		tc, err := l.ln.AcceptTCP()
		if err != nil {
			return nil, err
		}
		freeSavedSYN(tc)
		st, ok, err := s.socketState(tc)
		if err != nil {
			tc.Close()
			return nil, err
		}
		if ok && st.Role == datapath.RoleJoinPassive {
			s.acceptJoin(tc, st)
			return nil, nil
		}
		if ok && st.State == datapath.StateTFOWait {
			// A SYN with data (TCP Fast Open): the kernel queued the child before the third
			// ACK, which brings the client's key. At most maxTFOWaiting wait at once, each
			// at most tfoKeyWait; past that the accept loop (and so the backlog) waits too.
			select {
			case l.tfoSem <- struct{}{}:
			case <-l.stop.Done():
				tc.Close()
				return nil, nil
			}
			l.tfoWG.Add(1)
			if !s.goroutine(func() {
				defer func() { <-l.tfoSem; l.tfoWG.Done() }()
				l.awaitTFO(tc)
			}) {
				<-l.tfoSem
				l.tfoWG.Done()
				tc.Close()
			}
			return nil, nil
		}
		return l.accepted(tc, st, ok)
	}
}

// tfoKeyWait bounds the wait for a TCP Fast Open client's third ACK (the SYN/ACK is sent again
// after 1, 3 and 7 s when it is lost).
const tfoKeyWait = 10 * time.Second

// maxTFOWaiting bounds a listener's Fast Open children between accept and their third ACK, and
// connections made of them waiting for the application's Accept.
const maxTFOWaiting = 256

// awaitTFO waits until the child of a TCP Fast Open SYN has its client's key, or went on as
// plain TCP (the datapath's EvTFODone), and queues the connection.
func (l *Listener) awaitTFO(tc *net.TCPConn) {
	s := l.s
	cookie, err := socketCookie(tc)
	if err != nil {
		tc.Close()
		return
	}
	done := make(chan struct{})
	s.mu.Lock()
	if s.mu.tfoWait == nil {
		s.mu.tfoWait = map[uint64]chan struct{}{}
	}
	s.mu.tfoWait[cookie] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.mu.tfoWait[cookie] == done {
			delete(s.mu.tfoWait, cookie)
		}
		s.mu.Unlock()
	}()
	timeout := time.NewTimer(tfoKeyWait)
	defer timeout.Stop()
	var st datapath.SkState
	var ok bool
	for {
		// Read after registering: the event may have come before.
		if st, ok, err = s.socketState(tc); err != nil || !ok || st.State != datapath.StateTFOWait {
			break
		}
		select {
		case <-done:
			done = nil // read the state once more
		case <-timeout.C:
			// The event may have been lost (a full ring buffer): the state has the last word.
			if st, ok, err = s.socketState(tc); err == nil && ok && st.State != datapath.StateTFOWait {
				break
			}
			s.stats.TFOKeyTimeout.Add(1)
			s.resetPassive(tc, st, ok, RstUnspecified)
			return
		case <-l.stop.Done():
			st, ok, _ = s.socketState(tc)
			s.resetPassive(tc, st, ok, RstUnspecified)
			return
		}
	}
	if err != nil {
		tc.Close()
		return
	}
	c, err := l.accepted(tc, st, ok)
	if c == nil || err != nil {
		return
	}
	select {
	case <-l.stop.Done():
		c.Close()
		return
	default:
	}
	select {
	case l.queue <- acceptResult{c, nil}:
	case <-l.stop.Done():
		c.Close()
	}
}

// socketCookie returns the socket's cookie (SO_COOKIE), as the datapath's events name it.
func socketCookie(tc *net.TCPConn) (uint64, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) { cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) }); err != nil {
		return 0, err
	}
	return cookie, serr
}

// accepted makes the connection of an accepted socket whose handshake is done: (nil, nil) when
// it was refused.
func (l *Listener) accepted(tc *net.TCPConn, st datapath.SkState, ok bool) (net.Conn, error) {
	s := l.s
	{
		if s.refuseForMemory("accept", tc.RemoteAddr()) {
			s.resetPassive(tc, st, ok, RstLackOfResources)
			return nil, nil
		}
		if !ok {
			s.stats.FallbackPassive.Add(1)
			return &TCPConn{tc}, nil
		}
		if st.State != datapath.StateMPTCP {
			// Plain TCP after an MP_CAPABLE SYN: the third ACK lacked the option or echoed
			// another key, the key's token was in use, or no ticket was ready. No ticket was
			// taken.
			s.stats.FallbackPassive.Add(1)
			return &TCPConn{tc}, nil
		}
		if !s.claimTicket(st.Conn, st.Sub, st.LocalKey) {
			// Accepted after its slot was reclaimed: it cannot continue as MPTCP safely.
			s.log.Warn("accepted an MPTCP connection whose slot was reclaimed; resetting it")
			s.dropPassiveToken(st.Conn, st.LocalKey)
			tc.SetLinger(0)
			tc.Close()
			return nil, nil
		}
		token := mpcrypto.Token(st.LocalKey)
		if !s.tokens.Add(token) {
			// The datapath checked the token against joinable connections; one of ours still
			// opening took it meanwhile (as likely as two random 32-bit tokens meeting). The
			// peer already counts on MPTCP: reset.
			s.stats.TokenCollision.Add(1)
			s.log.Warn("passive open's token is in use; resetting it", "token", token)
			s.dropPassiveToken(st.Conn, st.LocalKey)
			s.releaseSlots(st.Conn, st.Sub, 0)
			tc.SetLinger(0)
			tc.Close()
			return nil, nil
		}
		// The data of a TCP Fast Open SYN starts the stream, before the data sequence space
		// (the datapath's relative SSNs begin after it).
		var synData []byte
		if st.SynData > 0 {
			synData = make([]byte, st.SynData)
			tc.SetReadDeadline(time.Now().Add(time.Second)) // queued with the child already
			_, err := io.ReadFull(tc, synData)
			tc.SetReadDeadline(time.Time{})
			if err != nil {
				s.log.Warn("passive open: the SYN's data could not be read; resetting it", "err", err)
				s.dropPassiveToken(st.Conn, st.LocalKey)
				s.releaseSlots(st.Conn, st.Sub, token)
				tc.SetLinger(0)
				tc.Close()
				return nil, nil
			}
			s.stats.PassiveFastOpen.Add(1)
		}
		c := newConn(s)
		c.slot, c.token, c.localKey, c.remoteKey = st.Conn, token, st.LocalKey, st.RemoteKey
		if len(synData) > 0 {
			c.rxq.push(synData)
			c.st.rcv.pushed += uint64(len(synData))
		}
		c.shm = s.dp.Conn(st.Conn)
		c.cc = datapath.CC(atomic.LoadUint32(&c.shm.Ctl.Cc)) // the stack's, set with the ticket
		c.laddr, c.raddr = tc.LocalAddr(), tc.RemoteAddr()
		c.server = true
		sf, err := newSubflow(c, st.Sub, tc)
		if err != nil {
			tc.Close()
			s.dropPassiveToken(st.Conn, st.LocalKey)
			s.releaseSlots(st.Conn, st.Sub, token)
			return nil, err
		}
		c.subs = []*subflow{sf}
		c.ns = s.holdNetns(l.ns)
		s.stats.PassiveOpens.Add(1)
		if c.start() != nil {
			return nil, nil // the stack is closing
		}
		return c, nil
	}
}

// SetFastOpen lets clients send data in their SYN (TCP Fast Open, RFC 7413) once they hold a
// cookie from this listener, at most qlen such connections waiting for their third ACK. The
// network namespace's net.ipv4.tcp_fastopen must have the server bit (2) set.
func (l *Listener) SetFastOpen(qlen int) error {
	rc, err := l.ln.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, qlen) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set TCP_FASTOPEN: %w", serr)
	}
	return nil
}

// Close stops listening.
func (l *Listener) Close() error {
	l.cancel()
	err := l.ln.Close()
	l.closed.Do(func() {
		l.s.listenerClosed(l)
		l.s.removeJoinListener(l)
		l.s.addListener(-1)
		l.s.releaseNetns(l.ns)
	})
	return err
}

// acceptJoin hands an MP_JOIN subflow our listener accepted to its connection, or resets it.
func (s *Stack) acceptJoin(tc *net.TCPConn, st datapath.SkState) {
	s.claimSub(st.Sub)
	j := joinResult{tc: tc, slot: st.Sub, st: st}
	c := s.conn(st.Conn)
	if c == nil || st.State != datapath.StateMPTCP {
		s.stats.JoinRefused.Add(1)
		reason := uint8(RstMPTCPError)
		if st.State == datapath.StateJoinFailed {
			// The third ACK's HMAC was wrong or missing: the kernel answers "administratively
			// prohibited" (MPTCP_RST_EPROHIBIT), and so do we.
			reason = RstAdminProhibited
		}
		s.refuseJoinSocket(j, reason)
		return
	}
	if !s.goroutine(func() {
		c.wake()
		select {
		case c.joinCh <- &j:
			c.wake()
		case <-c.done:
			s.refuseJoinSocket(j, RstMPTCPError)
		}
	}) {
		s.refuseJoinSocket(j, RstMPTCPError) // the stack is closing
	}
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// SetDeadline sets the deadline for Accept.
func (l *Listener) SetDeadline(t time.Time) error {
	l.dl.set(t)
	return nil
}

// v6only reports whether an IPv6 listener takes IPv6 connections only.
func v6only(tl *net.TCPListener) bool {
	rc, err := tl.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	rc.Control(func(fd uintptr) {
		v, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	})
	return v != 0
}

// freeSavedSYN releases the SYN headers the kernel kept for an accepted socket (our listeners
// set TCP_SAVE_SYN so that retransmitted SYN/ACKs can be written, see on_listen in bpf/handshake.h):
// reading them frees them.
func freeSavedSYN(tc *net.TCPConn) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_SAVED_SYN)
	})
}
