package control

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
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
	c, _, err := s.dial(ctx, d, network, address, nil)
	return c, err
}

// DialSYNData connects as DialContext does, with data in the SYN (TCP Fast Open, RFC 7413;
// with MPTCP as RFC 8684 Appendix B has it) when the kernel holds a cookie of the server's.
// It returns how many bytes of data the connection carries already, at the start of its
// stream: the caller writes the rest, all of data when the SYN asked for a cookie instead. An
// MPTCP server that answers without acknowledging the SYN's data gets a reset, and the dial
// starts again without data.
func (d *Dialer) DialSYNData(ctx context.Context, network, address string, data []byte) (net.Conn, int, error) {
	s := d.Stack
	if s == nil {
		var err error
		if s, err = DefaultStack(); err != nil {
			return nil, 0, err
		}
	}
	if len(data) > 0 {
		// Fast Open dials a numeric address (fastOpenable): resolve a name here.
		if host, port, err := net.SplitHostPort(address); err == nil {
			if _, err := netip.ParseAddr(host); err != nil && host != "" {
				ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
				if err != nil {
					return nil, 0, err
				}
				if len(ips) > 0 {
					address = net.JoinHostPort(ips[0].Unmap().String(), port)
				}
			}
		}
	}
	return s.dial(ctx, d, network, address, data)
}

func (s *Stack) dial(ctx context.Context, d *Dialer, network, address string, synData []byte) (net.Conn, int, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, 0, fmt.Errorf("mptcp: dial %s: unsupported network", network)
	}
	if s.refuseForMemory("dial", address) {
		return nil, 0, fmt.Errorf("dial %s: %w", address, ErrMemoryPressure)
	}
	// The dial touches the datapath's shared memory: the stack's Close waits for it, and cuts
	// its connect short.
	if !s.enter() {
		return nil, 0, errStackClosed
	}
	defer s.exit()
	ctx, cancel := s.stopContext(ctx)
	defer cancel()
	// The socket is made in the calling thread's network namespace: the rewriter is attached
	// there and joins are dialled there (prepareDialFD, once the socket exists). The dial does
	// not lock the thread for that: a caller that entered another namespace has locked its
	// thread already (else its goroutine could move to a thread of the process's namespace at
	// any time), and every thread an unlocked goroutine runs on is in the process's. A locked
	// dial made the runtime start threads, which it keeps for good: the goroutine blocked on
	// the connect, on the stack's lock or in a slow system call, and its thread could run
	// nothing else meanwhile; a burst of dials through mptcpd --forward made up to a thread per
	// connection (48 KiB of stacks each).
	var ns dialNetns
	defer func() { s.releaseNetns(ns.ref) }() // unless the connection took it
	s.mu.Lock()
	slot, sub, key, token, err := s.newSlotsLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	sched, err := NewScheduler(firstNonEmpty(d.Scheduler, s.scheduler))
	if err != nil {
		s.releaseSlots(slot, sub, token)
		return nil, 0, err
	}
	cc := s.cc
	if d.CongestionControl != "" {
		if cc, err = datapath.ParseCC(d.CongestionControl); err != nil {
			s.releaseSlots(slot, sub, token)
			return nil, 0, err
		}
	}
	c := newConn(s)
	c.slot, c.token, c.localKey, c.shm, c.sched = slot, token, key, s.dp.Conn(slot), sched
	c.setCC(cc)   // before connect(): the subflow's congestion control starts with it
	s.register(c) // events can arrive as soon as the handshake completes
	st0 := datapath.SkState{Role: datapath.RoleActive, Conn: slot, Sub: sub, LocalKey: key}
	var tc *net.TCPConn
	sent := 0
	if len(synData) > 0 && fastOpenable(d, network, address) {
		tc, sent, err = s.dialFastOpen(ctx, d, network, address, st0, synData, &ns)
	} else {
		prepare := func(fd int) error { return s.prepareDialFD(fd, st0, &ns) }
		nd := net.Dialer{LocalAddr: d.LocalAddr, Timeout: d.Timeout, Control: dialControl(prepare, d.LocalAddr != nil)}
		nd.SetMultipathTCP(false)
		var raw net.Conn
		if raw, err = nd.DialContext(ctx, network, address); err == nil {
			tc = raw.(*net.TCPConn)
		}
	}
	if err != nil {
		s.releaseSlots(slot, sub, token)
		return nil, 0, err
	}
	st, ok, err := s.socketState(tc)
	if err != nil || !ok || st.State != datapath.StateMPTCP {
		s.releaseSlots(slot, sub, token)
		if err != nil {
			tc.Close()
			return nil, 0, err
		}
		s.stats.FallbackActive.Add(1)
		return &TCPConn{tc}, sent, nil // plain TCP carries the SYN's data either way
	}
	if sent > 0 && int(st.SynData) != sent {
		// The SYN/ACK did not acknowledge the SYN's data: the kernel sends it again as
		// ordinary data, which no mapping of ours covers. Reset, and dial without it.
		s.stats.FastOpenDataRefused.Add(1)
		s.log.Debug("TCP Fast Open: the SYN/ACK did not acknowledge the SYN's data; dialling again without it", "sent", sent, "acked", st.SynData, "remote", address)
		tc.SetLinger(0)
		tc.Close()
		s.releaseSlots(slot, sub, token)
		return s.dial(ctx, d, network, address, nil)
	}
	if sent > 0 {
		s.stats.ActiveFastOpen.Add(1)
	}
	c.remoteKey = st.RemoteKey
	c.laddr, c.raddr = tc.LocalAddr(), tc.RemoteAddr()
	sf, err := newSubflow(c, sub, tc)
	if err != nil {
		tc.Close()
		s.releaseSlots(slot, sub, token)
		return nil, 0, err
	}
	sf.active = true
	c.subs = []*subflow{sf}
	c.ns, ns.ref = ns.ref, nil
	s.stats.ActiveOpens.Add(1)
	if err := c.start(); err != nil {
		return nil, 0, err
	}
	return c, sent, nil
}

// dialControl is a dial's Control: it prepares the socket, then, unless the dialer is to bind a
// local address, starts the connection (connectNow). An error is returned as it is: the
// dialer's OpError then holds the connect's SyscallError, as when its own connect fails.
func dialControl(prepare func(fd int) error, bindsLocal bool) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		var err error
		cerr := rc.Control(func(fd uintptr) {
			if err = prepare(int(fd)); err == nil && !bindsLocal {
				err = connectNow(int(fd), network, address)
			}
		})
		if cerr != nil {
			return cerr
		}
		return err
	}
}

// connectNow starts the connection of a prepared socket before the dialer's own connect (only
// for a dial without a local address: the dialer would bind after it), and finds out at once,
// without waiting, whether the handshake is done: to a nearby peer it often completes within
// the connect call (the SYN/ACK is processed as the SYN goes out). The dialer's connect then
// finds the socket connected (Linux answers success, or EISCONN; the dialer takes both) and
// returns without parking the goroutine on the runtime's poller, where, with the stack's other
// goroutines busy, a dial waited about as long again as its handshake had taken. Still in
// progress, the dialer's connect sees EALREADY and waits as it always does. A failure is
// returned. An address that is not numeric with a port or has a zone, or an IPv6 address on an
// IPv4 socket, is left to the dialer.
func connectNow(fd int, network, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr().Zone() != "" {
		return nil
	}
	var sa unix.Sockaddr
	switch a := ap.Addr(); network {
	case "tcp4":
		if !a.Unmap().Is4() {
			return nil
		}
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	case "tcp6":
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	default:
		return nil
	}
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINTR), errors.Is(err, unix.EALREADY):
		return nil // in progress, as the dialer takes them: its connect waits
	case !errors.Is(err, unix.EINPROGRESS):
		return os.NewSyscallError("connect", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 0); err != nil || n == 0 || pfd[0].Revents == 0 {
		return nil // in progress (or poll failed): the dialer waits
	}
	if pfd[0].Revents&unix.POLLERR == 0 {
		return nil // established: the dialer's connect says so
	}
	// Failed: the error is read here, as the dialer would after its wait (SO_ERROR clears it;
	// none left, its connect reports what the kernel says of the closed socket).
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return os.NewSyscallError("getsockopt", err)
	case soErr != 0:
		return os.NewSyscallError("connect", syscall.Errno(soErr))
	}
	return nil
}

// fastOpenable reports whether dialFastOpen can dial address: a numeric address of one family,
// with a local address of that family or none, and no IPv6 zone (the others go the ordinary way,
// without data in the SYN).
func fastOpenable(d *Dialer, network, address string) bool {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() {
		return false
	}
	v4 := ap.Addr().Unmap().Is4()
	if (network == "tcp4" && !v4) || (network == "tcp6" && v4) {
		return false
	}
	if d.LocalAddr == nil {
		return true
	}
	la, ok := d.LocalAddr.(*net.TCPAddr)
	return ok && la.Zone == "" && (la.IP == nil || (la.IP.To4() != nil) == v4)
}

// dialFastOpen connects a socket registered as st to address with data in its SYN
// (sendto with MSG_FASTOPEN): the SYN takes the data that fits when the kernel holds a cookie
// of the server's, else it asks for one and takes none (the data is not queued either). It
// waits for the handshake and returns the socket and how many bytes the SYN took.
func (s *Stack) dialFastOpen(ctx context.Context, d *Dialer, network, address string, st datapath.SkState, data []byte, ns *dialNetns) (*net.TCPConn, int, error) {
	ap, err := netip.ParseAddrPort(address) // fastOpenable checked it
	if err != nil {
		return nil, 0, err
	}
	ra := net.TCPAddrFromAddrPort(ap)
	family, rsa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	if a := ap.Addr().Unmap(); a.Is4() {
		family, rsa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, 0, os.NewSyscallError("socket", err)
	}
	closeFD := true
	defer func() {
		if closeFD {
			unix.Close(fd)
		}
	}()
	if err := s.prepareDialFD(fd, st, ns); err != nil {
		return nil, 0, err
	}
	if la, ok := d.LocalAddr.(*net.TCPAddr); ok && la != nil {
		var lsa unix.Sockaddr
		if family == unix.AF_INET {
			sa := &unix.SockaddrInet4{Port: la.Port}
			if ip4 := la.IP.To4(); ip4 != nil {
				sa.Addr = [4]byte(ip4)
			}
			lsa = sa
		} else {
			sa := &unix.SockaddrInet6{Port: la.Port}
			if ip16 := la.IP.To16(); ip16 != nil {
				sa.Addr = [16]byte(ip16)
			}
			lsa = sa
		}
		if err := unix.Bind(fd, lsa); err != nil {
			return nil, 0, os.NewSyscallError("bind", err)
		}
	}
	n, err := unix.SendmsgN(fd, data, nil, rsa, unix.MSG_FASTOPEN)
	switch {
	case err == nil:
	case errors.Is(err, unix.EINPROGRESS):
		n = 0 // a SYN asking for a cookie went, without data
	case errors.Is(err, unix.EOPNOTSUPP):
		// Fast Open is off for clients here (net.ipv4.tcp_fastopen lacks 1): connect.
		n = 0
		if err := unix.Connect(fd, rsa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return nil, 0, &net.OpError{Op: "dial", Net: network, Addr: ra, Err: os.NewSyscallError("connect", err)}
		}
	default:
		return nil, 0, &net.OpError{Op: "dial", Net: network, Addr: ra, Err: os.NewSyscallError("sendmsg", err)}
	}
	// The handshake: the socket turns writable when it ends. The runtime's poller waits for it
	// (the descriptor is non-blocking), not a thread.
	deadline := time.Now().Add(30 * time.Second)
	if d.Timeout > 0 {
		deadline = time.Now().Add(d.Timeout)
	}
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	f := os.NewFile(uintptr(fd), "tcp")
	closeFD = false
	defer f.Close() // net.FileConn below makes a duplicate
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	f.SetWriteDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
	defer stop()
	var perr error
	if err := rc.Write(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			perr = os.NewSyscallError("poll", err)
			return true
		}
		return n > 0 && pfd[0].Revents != 0
	}); err != nil {
		return nil, 0, fmt.Errorf("dial %s: %w", address, os.ErrDeadlineExceeded)
	}
	if perr != nil {
		return nil, 0, perr
	}
	var soErr int
	if cerr := rc.Control(func(fd uintptr) { soErr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); cerr != nil || err != nil || soErr != 0 {
		if err == nil {
			err = cmp.Or(cerr, error(syscall.Errno(soErr)))
		}
		return nil, 0, &net.OpError{Op: "dial", Net: network, Addr: ra, Err: os.NewSyscallError("connect", err)}
	}
	c, err := net.FileConn(f) // a duplicate of fd
	if err != nil {
		return nil, 0, err
	}
	return c.(*net.TCPConn), n, nil
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
	cerr := rc.Control(func(fd uintptr) { err = s.prepareFD(int(fd), st) })
	return errors.Join(cerr, err)
}

// prepareDialFD prepares a socket Dial made, before its connect: the rewriter attached in its
// network namespace (read from the socket: no socket of its own is made to learn it), a handle
// on that namespace for the connection's joins (once per dial; without one, joins are dialled
// from the process's namespace), and its datapath state.
func (s *Stack) prepareDialFD(fd int, st datapath.SkState, ns *dialNetns) error {
	cookie, err := socketNetns(fd)
	if err != nil {
		return err
	}
	if err := s.prepareNetnsOf(cookie); err != nil {
		return err
	}
	// The dialer may try a host's IPv4 and IPv6 addresses at once, each on a goroutine.
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.ref == nil {
		r, err := s.acquireNetnsOf(cookie)
		if err != nil {
			s.log.Debug("no handle on the network namespace: joins are dialled from the process's", "err", err)
		}
		ns.ref = r
	}
	return s.prepareFD(fd, st)
}

// dialNetns is the handle on a dial's network namespace, taken by the first of its sockets.
type dialNetns struct {
	mu  sync.Mutex
	ref *nsRef
}

// prepareFD is prepareSocket on a descriptor.
func (s *Stack) prepareFD(fd int, st datapath.SkState) error {
	if err := s.dp.UseCongestionControl(fd); err != nil {
		return err
	}
	return s.dp.Register(fd, st)
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
