package transparentdev

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// topo is the tests' world: a LAN host, the router that intercepts, and a server beyond it, in
// three network namespaces the test creates (and that go with it).
//
//	lan                              router                                        wan
//	lan0 192.168.77.2/24 ---- veth ---- rlan 192.168.77.1/24   rwan 10.77.0.1/24 ---- veth ---- wan0 10.77.0.2/24
//	     fd77::2/64                          fd77::1/64             fd78::1/64                        10.77.0.3/24
//	default via 192.168.77.1, fd77::1    forwarding on; "mptcpd":                          fd78::2/64, fd78::3/64
//	                                     listeners on 127.0.0.1 and ::1;               routes back to the LAN via
//	                                     "router" services on :8080                    10.77.0.1, fd78::1;
//	                                                                                   TCP :80 "wan", UDP echo :7
//
// Every TCP server answers a connection with a line "WHO LOCAL REMOTE" (its accepted socket's
// addresses), then echoes what it reads until EOF; on port closeFirstPort it closes at once
// instead, and its socket stays in TIME_WAIT.
type topo struct {
	t                *testing.T
	lan, router, wan vnetns.NsHandle
	rnl              *netlink.Handle // in router

	listen4, listen6 *net.TCPListener // "mptcpd"'s, in router
}

const (
	lanHost4  = "192.168.77.2"
	lanHost6  = "fd77::2"
	wanHost4  = "10.77.0.2"
	wanHost6  = "fd78::2"
	wanOther4 = "10.77.0.3" // a second address of the server, for exclusions
	wanOther6 = "fd78::3"
	routerLan = "192.168.77.1"
	routerWan = "10.77.0.1"
	lanDev    = "rlan" // the intercepted device

	closeFirstPort = 9 // servers close first: their side of the connection is in TIME_WAIT
)

func newTopo(t *testing.T) *topo {
	t.Helper()
	testenv.RequireRoot(t)
	tp := &topo{t: t, lan: newNetns(t), router: newNetns(t), wan: newNetns(t)}
	var err error
	if tp.rnl, err = netlink.NewHandleAt(tp.router); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.rnl.Close)
	tp.veth(tp.router, lanDev, []string{routerLan + "/24", "fd77::1/64"}, tp.lan, "lan0", []string{lanHost4 + "/24", lanHost6 + "/64"})
	tp.veth(tp.router, "rwan", []string{routerWan + "/24", "fd78::1/64"}, tp.wan, "wan0",
		[]string{wanHost4 + "/24", wanOther4 + "/24", wanHost6 + "/64", wanOther6 + "/64"})
	tp.route(tp.lan, "0.0.0.0/0", routerLan)
	tp.route(tp.lan, "::/0", "fd77::1")
	tp.route(tp.wan, "192.168.77.0/24", routerWan)
	tp.route(tp.wan, "fd77::/64", "fd78::1")
	tp.sysctl(tp.router, "net/ipv4/ip_forward", "1")
	tp.sysctl(tp.router, "net/ipv6/conf/all/forwarding", "1")

	tp.serveTCP(tp.wan, "tcp", ":80", "wan")
	// Bound to the addresses the LAN host sends to, so that the answers come from them.
	tp.serveUDP(tp.wan, "udp4", wanHost4+":7")
	tp.serveUDP(tp.wan, "udp6", "["+wanHost6+"]:7")
	tp.serveTCP(tp.router, "tcp", ":8080", "router")
	// "mptcpd": plain TCP listeners, as proxy.Server.Listen makes its forward ones; Start sets
	// IP_TRANSPARENT.
	tp.listen4 = tp.serveTCP(tp.router, "tcp4", "127.0.0.1:0", "mptcpd")
	tp.listen6 = tp.serveTCP(tp.router, "tcp6", "[::1]:0", "mptcpd")
	return tp
}

// newNetns creates a network namespace with lo up; the test closes it.
func newNetns(t *testing.T) vnetns.NsHandle {
	t.Helper()
	var ns vnetns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		// orig is closed before the answer goes: a test counting descriptors right after
		// must not see it.
		if ns, err = vnetns.New(); err != nil {
			orig.Close()
			errc <- err
			return
		}
		if err := vnetns.Set(orig); err != nil {
			orig.Close()
			errc <- err // the thread stays locked and ends
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	// No duplicate address detection, for the link-local addresses too: while a device's
	// link-local address is tentative, the router sends no neighbour solicitation for the
	// packets it forwards out of it, and the first ones wait for a retransmission.
	err := inNetns(ns, func() error {
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/accept_dad", []byte("0"), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// inNetns runs f on a thread in ns. Sockets f opens belong to ns.
func inNetns(ns vnetns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		// orig is closed before the answer goes: TestNoLeak counts descriptors right after.
		if err := vnetns.Set(ns); err != nil {
			orig.Close()
			errc <- err
			return
		}
		err = f()
		restored := vnetns.Set(orig) == nil
		orig.Close()
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// veth joins two namespaces with a veth pair: name in a, with addrs, and peer in b, with
// peerAddrs.
func (tp *topo) veth(a vnetns.NsHandle, name string, addrs []string, b vnetns.NsHandle, peer string, peerAddrs []string) {
	t := tp.t
	t.Helper()
	ha, err := netlink.NewHandleAt(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(b)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	err = ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(b))})
	if err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		name  string
		addrs []string
	}{{ha, name, addrs}, {hb, peer, peerAddrs}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range side.addrs {
			a, err := netlink.ParseAddr(s)
			if err != nil {
				t.Fatal(err)
			}
			a.Flags = unix.IFA_F_NODAD
			if err := side.h.AddrAdd(l, a); err != nil {
				t.Fatalf("%s: add %s: %v", side.name, s, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// route adds "dst via gw" in ns.
func (tp *topo) route(ns vnetns.NsHandle, dst, gw string) {
	tp.t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		tp.t.Fatal(err)
	}
	defer h.Close()
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		tp.t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{Dst: d, Gw: net.ParseIP(gw)}); err != nil {
		tp.t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

// sysctl writes a sysctl of ns (/proc/sys/net follows the namespace of the thread that opens
// it).
func (tp *topo) sysctl(ns vnetns.NsHandle, key, value string) {
	tp.t.Helper()
	err := inNetns(ns, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0) })
	if err != nil {
		tp.t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

// serveTCP listens in ns, plain TCP, and serves each connection: the line "who LOCAL REMOTE",
// then an echo. The test closes the listener and waits for the connections.
func (tp *topo) serveTCP(ns vnetns.NsHandle, network, addr, who string) *net.TCPListener {
	t := tp.t
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(t.Context(), network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen on %s: %v", who, addr, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				fmt.Fprintf(c, "%s %s %s\n", who, c.LocalAddr(), c.RemoteAddr())
				if c.LocalAddr().(*net.TCPAddr).Port != closeFirstPort {
					io.Copy(c, c)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.(*net.TCPListener)
}

// serveUDP echoes datagrams in ns.
func (tp *topo) serveUDP(ns vnetns.NsHandle, network, addr string) {
	t := tp.t
	t.Helper()
	var pc net.PacketConn
	err := inNetns(ns, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
}

// answer is the line a TCP server answered with, and the client's own address.
type answer struct {
	who, local, remote string
	client             string // the client's LocalAddr
}

// dial connects from ns to addr and reads the server's line. The caller closes the connection.
func (tp *topo) dial(ns vnetns.NsHandle, addr string) (*net.TCPConn, *bufio.Reader, answer) {
	return tp.dialFrom(ns, nil, addr)
}

// dialFrom is dial from the local address from (nil: any).
func (tp *topo) dialFrom(ns vnetns.NsHandle, from *net.TCPAddr, addr string) (*net.TCPConn, *bufio.Reader, answer) {
	t := tp.t
	t.Helper()
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		if from != nil {
			d.LocalAddr = from
		}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("%s: read the server's line: %v", addr, err)
	}
	f := strings.Fields(line)
	if len(f) != 3 {
		c.Close()
		t.Fatalf("%s: server's line %q", addr, line)
	}
	return c.(*net.TCPConn), r, answer{who: f[0], local: f[1], remote: f[2], client: c.LocalAddr().String()}
}

// echo sends n random bytes over c and checks that the same come back, then that the server
// closes after our FIN.
func echo(t *testing.T, c *net.TCPConn, r *bufio.Reader, n int) {
	t.Helper()
	out := make([]byte, n)
	rand.Read(out)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(out)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	in, err := io.ReadAll(r)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read the echo after %d bytes: %v", len(in), err)
	}
	if !bytes.Equal(in, out) {
		t.Fatalf("echo: %d bytes back for %d sent, or other bytes", len(in), len(out))
	}
}

// udpEcho sends a datagram from ns to addr and waits for it to come back.
func (tp *topo) udpEcho(ns vnetns.NsHandle, addr string) error {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte("datagram to " + addr)
	b := make([]byte, 2048)
	for try := 0; try < 5; try++ { // the first may wait for neighbour discovery
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(b)
		if err == nil && bytes.Equal(b[:n], msg) {
			return nil
		}
	}
	return fmt.Errorf("udp %s: no echo", addr)
}

// ping sends ICMP echo requests from ns to dst, with a raw socket, until a reply comes.
func (tp *topo) ping(ns vnetns.NsHandle, dst string) error {
	a := netip.MustParseAddr(dst)
	var fd int
	err := inNetns(ns, func() (err error) {
		if a.Is4() {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		} else {
			fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}
		return err
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	const id = 0x7d7d
	var sa unix.Sockaddr
	req := []byte{8, 0, 0, 0, id >> 8, id & 0xff, 0, 1, 'p', 'i', 'n', 'g'}
	replyType := byte(0)
	if a.Is4() {
		sa = &unix.SockaddrInet4{Addr: a.As4()}
		sum := checksum(req)
		req[2], req[3] = byte(sum>>8), byte(sum)
	} else {
		sa = &unix.SockaddrInet6{Addr: a.As16()}
		req[0] = 128 // the kernel fills in the ICMPv6 checksum
		replyType = 129
	}
	b := make([]byte, 1500)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := unix.Sendto(fd, req, 0, sa); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		for {
			n, _, err := unix.Recvfrom(fd, b, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				break
			}
			if err != nil {
				return fmt.Errorf("ping %s: %w", dst, err)
			}
			m := b[:n]
			if a.Is4() && n >= 20 {
				m = m[int(b[0]&0xf)*4:] // a raw IPv4 socket reads the IP header too
			}
			if len(m) >= 8 && m[0] == replyType && m[4] == id>>8 && m[5] == id&0xff {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s: no reply", dst)
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// start starts an interception on the router, from a thread there; the test closes it unless
// it did.
func (tp *topo) start(cfg Config) *Interceptor {
	tp.t.Helper()
	var ic *Interceptor
	err := inNetns(tp.router, func() (err error) {
		ic, err = Start(cfg)
		return err
	})
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { ic.Close() })
	return ic
}

// waitClosed waits until no socket of ns has the local address a: the client's socket of a
// connection the server closed first is in LAST_ACK until the server's ACK comes.
func (tp *topo) waitClosed(ns vnetns.NsHandle, a *net.TCPAddr) {
	tp.t.Helper()
	sa := &unix.SockaddrInet4{Port: a.Port, Addr: [4]byte(a.IP.To4())}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := inNetns(ns, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Bind(fd, sa)
		})
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			tp.t.Fatalf("wait for %v to be free: %v", a, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// timeWait reports whether ns has an IPv4 TCP socket in TIME_WAIT from local to remote, from
// /proc/thread-self/net/tcp (the namespace of the thread that reads it).
func (tp *topo) timeWait(ns vnetns.NsHandle, local, remote netip.AddrPort) bool {
	tp.t.Helper()
	hex := func(a netip.AddrPort) string {
		b := a.Addr().As4()
		return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(b[:]), a.Port())
	}
	var table []byte
	err := inNetns(ns, func() (err error) {
		table, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	if err != nil {
		tp.t.Fatal(err)
	}
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == hex(local) && f[2] == hex(remote) && f[3] == "06" { // TCP_TIME_WAIT
			return true
		}
	}
	return false
}
