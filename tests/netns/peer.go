package netns

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCPIsMPTCP is the TCP-level socket option that reports whether a socket is (still)
// using MPTCP (include/uapi/linux/tcp.h, TCP_IS_MPTCP).
const TCPIsMPTCP = 43

// Listen runs lc.Listen inside the namespace (nil lc: the zero ListenConfig, which
// since Go 1.24 means kernel MPTCP for "tcp"). The listener is closed at cleanup if
// still open.
func (ns *Namespace) Listen(lc *net.ListenConfig, network, address string) (net.Listener, error) {
	var c net.ListenConfig
	if lc != nil {
		c = *lc
	}
	c.Control = ns.withCongestion(c.Control)
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = c.Listen(context.Background(), network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ns.name, err)
	}
	ns.track(l)
	return l, nil
}

// SetCongestion makes the sockets Listen and Dial open (and so ListenMPTCP, DialMPTCP, ...)
// use congestion control name, with TCP_CONGESTION: on a kernel MPTCP socket it applies to all
// its subflows. A namespace's default cannot be set to a restricted algorithm (anything not in
// the host's net.ipv4.tcp_allowed_congestion_control), and the host's default here is BBR.
func (ns *Namespace) SetCongestion(name string) {
	ns.mu.Lock()
	ns.cc = name
	ns.mu.Unlock()
}

// withCongestion wraps a socket Control function to set the namespace's congestion control.
func (ns *Namespace) withCongestion(next func(network, address string, c syscall.RawConn) error) func(network, address string, c syscall.RawConn) error {
	ns.mu.Lock()
	cc := ns.cc
	ns.mu.Unlock()
	if cc == "" {
		return next
	}
	return func(network, address string, c syscall.RawConn) error {
		if next != nil {
			if err := next(network, address, c); err != nil {
				return err
			}
		}
		return SetCongestionOn(c, cc)
	}
}

// SetCongestionOn selects congestion control name on one socket with TCP_CONGESTION (on a
// kernel MPTCP socket: for all its subflows, the ones to come included).
func SetCongestionOn(c syscall.RawConn, name string) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_CONGESTION %s: %w", name, serr)
	}
	return nil
}

// CongestionOf reads the congestion control of one socket (TCP_CONGESTION).
func CongestionOf(c syscall.RawConn) (string, error) {
	var name string
	var serr error
	if err := c.Control(func(fd uintptr) {
		name, serr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); err != nil {
		return "", err
	}
	return name, serr
}

// ListenMPTCP listens with the kernel's MPTCP (IPPROTO_MPTCP) on a "tcp" address such
// as "10.0.0.2:0" or "[::]:8080". If MPTCP is disabled in the namespace the listener is
// plain TCP (Go falls back silently).
func (ns *Namespace) ListenMPTCP(address string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	return ns.Listen(&lc, "tcp", address)
}

// ListenTCP listens with plain TCP (IPPROTO_TCP), not Go's default MPTCP.
func (ns *Namespace) ListenTCP(address string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return ns.Listen(&lc, "tcp", address)
}

// Dial runs d.DialContext inside the namespace (nil d: the zero Dialer). Set
// d.LocalAddr to bind the source address (and so the path). The connection is closed at
// cleanup if still open.
func (ns *Namespace) Dial(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	var dd net.Dialer
	if d != nil {
		dd = *d
	}
	dd.Control = ns.withCongestion(dd.Control)
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = dd.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ns.name, err)
	}
	ns.track(c)
	return c, nil
}

// DialMPTCP connects with the kernel's MPTCP (IPPROTO_MPTCP) to a "tcp" address.
func (ns *Namespace) DialMPTCP(ctx context.Context, address string) (net.Conn, error) {
	var d net.Dialer
	d.SetMultipathTCP(true)
	return ns.Dial(ctx, &d, "tcp", address)
}

// DialTCP connects with plain TCP (IPPROTO_TCP).
func (ns *Namespace) DialTCP(ctx context.Context, address string) (net.Conn, error) {
	var d net.Dialer
	d.SetMultipathTCP(false)
	return ns.Dial(ctx, &d, "tcp", address)
}

// IsMPTCP reads TCP_IS_MPTCP from a connection: true for an MPTCP socket that has not
// fallen back to TCP, false for a plain TCP socket or after a fallback.
func IsMPTCP(c net.Conn) (bool, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_TCP, TCPIsMPTCP)
		if errors.Is(serr, unix.EOPNOTSUPP) || errors.Is(serr, unix.ENOPROTOOPT) {
			// Linux before 6.6 has no TCP_IS_MPTCP (an MPTCP socket refuses it with
			// EOPNOTSUPP, a TCP socket with ENOPROTOOPT): MPTCP_INFO answers on an MPTCP
			// socket that has not fallen back, and nowhere else.
			v, serr = mptcpInfo(int(fd)), nil
		}
	}); err != nil {
		return false, err
	}
	if serr != nil {
		return false, fmt.Errorf("getsockopt TCP_IS_MPTCP: %w", serr)
	}
	return v != 0, nil
}

// mptcpInfo returns 1 when getsockopt(SOL_MPTCP, MPTCP_INFO) succeeds on fd, else 0.
func mptcpInfo(fd int) int {
	const solMPTCP, mptcpInfoOpt = 284, 1 // include/linux/socket.h, include/uapi/linux/mptcp.h
	var buf [256]byte
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), solMPTCP, mptcpInfoOpt,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0
	}
	return 1
}

// Digest summarizes a byte stream: its length and SHA-256. Digests compare with ==.
type Digest struct {
	Bytes  int64
	SHA256 [sha256.Size]byte
}

func (d Digest) String() string { return fmt.Sprintf("%d bytes, sha256 %x", d.Bytes, d.SHA256[:8]) }

const chunkSize = 256 << 10

// stream returns the deterministic pseudo-random byte stream for seed.
func stream(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	copy(key[:], "mptcpgo netns stream")
	binary.LittleEndian.PutUint64(key[24:], seed)
	return rand.NewChaCha8(key)
}

// StreamDigest returns the digest of the first n bytes of seed's stream, without I/O:
// what Receive reports for data sent by Send(w, n, seed).
func StreamDigest(n int64, seed uint64) Digest {
	d, _ := Send(io.Discard, n, seed)
	return d
}

// Send writes n bytes of seed's deterministic pseudo-random stream to w and returns the
// digest of what was written (also on error).
func Send(w io.Writer, n int64, seed uint64) (Digest, error) {
	g, h := stream(seed), sha256.New()
	buf := make([]byte, chunkSize)
	var sent int64
	var err error
	for sent < n {
		b := buf[:min(int64(len(buf)), n-sent)]
		g.Read(b)
		var k int
		k, err = w.Write(b)
		h.Write(b[:k])
		sent += int64(k)
		if err != nil {
			break
		}
	}
	d := Digest{Bytes: sent}
	h.Sum(d.SHA256[:0])
	return d, err
}

// Receive reads r until EOF and returns the digest of what it read (also on error).
func Receive(r io.Reader) (Digest, error) {
	h := sha256.New()
	buf := make([]byte, chunkSize)
	var d Digest
	var err error
	for {
		var k int
		k, err = r.Read(buf)
		h.Write(buf[:k])
		d.Bytes += int64(k)
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	h.Sum(d.SHA256[:0])
	return d, err
}

// Transfer is what one side of an Exchange sent and received.
type Transfer struct {
	Sent, Received Digest
}

// Exchange sends n bytes of seed's stream on c and half-closes it (CloseWrite, a
// DATA_FIN for MPTCP) while it receives until EOF: both directions at once. c must have
// a CloseWrite method, as *net.TCPConn has. Exchange does not close c. An error in one
// direction, or the end of ctx, aborts both (through deadlines).
func Exchange(ctx context.Context, c net.Conn, n int64, seed uint64) (Transfer, error) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return Transfer{}, fmt.Errorf("exchange: %T has no CloseWrite", c)
	}
	past := time.Unix(1, 0)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(past) })
	defer stop()

	var tr Transfer
	var sendErr error
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tr.Sent, sendErr = Send(c, n, seed)
		if sendErr == nil {
			sendErr = cw.CloseWrite()
		}
		if sendErr != nil {
			c.SetReadDeadline(past)
		}
	}()
	var recvErr error
	tr.Received, recvErr = Receive(c)
	if recvErr != nil {
		c.SetWriteDeadline(past)
	}
	<-sent
	if sendErr != nil {
		sendErr = fmt.Errorf("send: %w", sendErr)
	}
	if recvErr != nil {
		recvErr = fmt.Errorf("receive: %w", recvErr)
	}
	err := errors.Join(sendErr, recvErr)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}
	return tr, err
}

// Result is the outcome of ExchangeAsync and ServeOne.
type Result struct {
	Transfer
	// MPTCP is TCP_IS_MPTCP of the connection, read after the exchange.
	MPTCP  bool
	Remote net.Addr
	Err    error
}

// ExchangeAsync runs Exchange(ctx, c, n, seed) in a new goroutine, then reads
// TCP_IS_MPTCP, closes c and delivers the outcome on the returned channel.
func ExchangeAsync(ctx context.Context, c net.Conn, n int64, seed uint64) <-chan Result {
	ch := make(chan Result, 1)
	go func() {
		defer c.Close()
		r := Result{Remote: c.RemoteAddr()}
		r.Transfer, r.Err = Exchange(ctx, c, n, seed)
		if m, err := IsMPTCP(c); err != nil {
			r.Err = errors.Join(r.Err, err)
		} else {
			r.MPTCP = m
		}
		ch <- r
	}()
	return ch
}

// ServeOne accepts one connection on l in a new goroutine and runs ExchangeAsync on it.
// The listener stays open.
func ServeOne(ctx context.Context, l net.Listener, n int64, seed uint64) <-chan Result {
	ch := make(chan Result, 1)
	go func() {
		c, err := Accept(ctx, l)
		if err != nil {
			ch <- Result{Err: err}
			return
		}
		ch <- <-ExchangeAsync(ctx, c, n, seed)
	}()
	return ch
}

// Accept is l.Accept that gives up when ctx ends (by setting the listener's deadline,
// which then stays in the past).
func Accept(ctx context.Context, l net.Listener) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() {
		if dl, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
			dl.SetDeadline(time.Unix(1, 0))
		}
	})
	c, err := l.Accept()
	stop()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	return c, nil
}

// AcceptAsync accepts one connection on l in the background (Accept): the connection comes on
// the channel, nil if none came before ctx ended.
func AcceptAsync(ctx context.Context, l net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := Accept(ctx, l)
		ch <- c
	}()
	return ch
}
