package control

import (
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// nonblockingSocket returns a non-blocking TCP socket of family, closed with the test.
func nonblockingSocket(t *testing.T, family int) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestConnectNow: to a listener on loopback the handshake is done within connectNow (the
// dialer's connect then finds the socket connected, EISCONN); a refused connection is an error
// that says so; an address it cannot use, or one of the other family, leaves the socket
// unconnected for the dialer to connect.
func TestConnectNow(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd := nonblockingSocket(t, unix.AF_INET)
	if err := connectNow(fd, "tcp4", ln.Addr().String()); err != nil {
		t.Fatalf("connectNow to a listener: %v", err)
	}
	if _, err := unix.Getpeername(fd); err != nil {
		t.Fatalf("not connected after connectNow to loopback: %v", err)
	}
	// The dialer's connect: success (nil, or EISCONN), not EALREADY (which would make it wait).
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: ln.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && !errors.Is(err, unix.EISCONN) {
		t.Errorf("the dialer's connect after connectNow: %v, want nil or EISCONN", err)
	}

	// A port nobody listens on: loopback refuses within the call.
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	fd = nonblockingSocket(t, unix.AF_INET)
	if err := connectNow(fd, "tcp4", addr); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("connectNow to a closed port: %v, want ECONNREFUSED", err)
	}

	// Left to the dialer: not an address, a zone, the other family, another network.
	for _, tc := range []struct{ network, address string }{
		{"tcp4", "localhost:80"},
		{"tcp6", "[fe80::1%lo]:80"},
		{"tcp4", "[::1]:80"},
		{"udp4", ln.Addr().String()},
	} {
		fd := nonblockingSocket(t, unix.AF_INET)
		if err := connectNow(fd, tc.network, tc.address); err != nil {
			t.Errorf("%s %s: %v, want nil", tc.network, tc.address, err)
		}
		if _, err := unix.Getpeername(fd); !errors.Is(err, unix.ENOTCONN) {
			t.Errorf("%s %s: getpeername %v, want ENOTCONN (no connect made)", tc.network, tc.address, err)
		}
	}

	// IPv6, when this host has it.
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback: %v", err)
		return
	}
	defer ln6.Close()
	fd = nonblockingSocket(t, unix.AF_INET6)
	if err := connectNow(fd, "tcp6", ln6.Addr().String()); err != nil {
		t.Fatalf("connectNow to an IPv6 listener: %v", err)
	}
	if _, err := unix.Getpeername(fd); err != nil {
		t.Errorf("IPv6: not connected after connectNow: %v", err)
	}
}

// TestDialControl dials through Go's dialer with the Control a dial uses: connected at once to a
// listener on loopback, with the addresses the dialer reports; a refusal is the dialer's usual
// error (an OpError holding connect's SyscallError, ECONNREFUSED); with a local address to
// bind, connectNow is not called (the dialer binds after Control, which a connected socket
// refuses) and the dial works from that address.
func TestDialControl(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	prepared := 0
	prepare := func(int) error { prepared++; return nil }
	d := net.Dialer{Control: dialControl(prepare, false)}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if c.RemoteAddr().String() != ln.Addr().String() || prepared != 1 {
		t.Errorf("connected to %v (want %v), prepared %d times", c.RemoteAddr(), ln.Addr(), prepared)
	}
	c.Close()

	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	_, err = d.Dial("tcp", addr)
	var oe *net.OpError
	var se *os.SyscallError
	if !errors.As(err, &oe) || !errors.As(oe.Err, &se) || oe.Err != error(se) || !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("dial to a closed port: %#v, want an OpError holding connect's SyscallError (ECONNREFUSED)", err)
	}

	// A failure to prepare the socket is the dial's error.
	bad := errors.New("no slot")
	if _, err := (&net.Dialer{Control: dialControl(func(int) error { return bad }, false)}).Dial("tcp", ln.Addr().String()); !errors.Is(err, bad) {
		t.Errorf("dial with a failing prepare: %v", err)
	}

	la := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}
	d = net.Dialer{LocalAddr: la, Control: dialControl(prepare, true)}
	c, err = d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial from %v: %v", la, err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP; !got.Equal(la.IP) {
		t.Errorf("dialled from %v, want %v", got, la.IP)
	}
	c.Close()
}
