package netns_test

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMptcpdTransparent: mptcpd --transparent in A carries the plain TCP connections that an
// unmodified client in A makes (a plain socket of this test process, which is in another
// cgroup than the daemon) over MPTCP to their original destination in B, over both paths:
// a kernel MPTCP server sees MPTCP (TCP_IS_MPTCP) and the bytes exact both ways, and
// getpeername still names the server; a plain TCP server gets the fallback; a refused port
// resets the application's connection at once; loopback and --transparent-exclude
// destinations are left alone, and so are another namespace's connections and the subflows of
// a program using our library. IPv4 and IPv6.
func TestMptcpdTransparent(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			t.Parallel()
			testMptcpdTransparent(t, fam)
		})
	}
}

func testMptcpdTransparent(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, IPv6: fam == netns.IPv6, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 0)
	mpSrv, err := topo.B.ListenMPTCP(p0.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	tcpSrv, err := topo.B.ListenTCP(p0.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	excluded, err := topo.B.ListenTCP(p1.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	local, err := topo.A.ListenTCP(netip.AddrPortFrom(loopback(fam), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	excl := p1.B.Addr(fam).String() + "/128"
	if fam == netns.IPv4 {
		excl = p1.B.Addr(fam).String() + "/32"
	}
	d, _ := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--transparent", "--transparent-exclude", excl,
		"--endpoint", p1.A.Addr(fam).String()+",subflow")
	if err := d.WaitOutput(ctx, "transparent: intercepting"); err != nil {
		t.Fatal(err)
	}
	mon := startTextMonitor(t, ctx, sock)
	waitOutputCount(t, ctx, d, "monitor subscribed", 1)

	// A kernel MPTCP server: MPTCP end to end, both paths, the original address seen.
	shapeForShares(p0, p1)
	tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
	const up, down = 32 << 20, 32 << 20
	served := netns.ServeOne(ctx, mpSrv, down, 2)
	c, err := topo.A.DialTCP(ctx, mpSrv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.RemoteAddr().String(), mpSrv.Addr().String(); got != want {
		t.Errorf("getpeername: %s, want the server's %s", got, want)
	}
	r := waitRelay(t, ctx, sock, mpSrv.Addr().String())
	if r.Relay.Mode != "transparent" || r.Relay.From.String() != c.LocalAddr().String() || r.Relay.Via != "" {
		t.Errorf("mptcpctl show: relay %+v, want transparent from %s", *r.Relay, c.LocalAddr())
	}
	relayLine := regexp.MustCompile(`^\[ +RELAY\] token=[0-9a-f]{8} mode=transparent from=` + regexp.QuoteMeta(c.LocalAddr().String()) +
		` to=` + regexp.QuoteMeta(mpSrv.Addr().String()) + `$`)
	mon.wait(ctx, relayLine)
	if s := exchangeServed(t, ctx, c, served, up, down); !s.MPTCP {
		t.Error("the kernel server's connection is not MPTCP")
	}
	c.Close()
	if d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1; d0 < 2<<20 || d1 < 2<<20 {
		t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 2 MiB of the 32", d0, d1)
	}

	// A plain TCP server: the fallback.
	served = netns.ServeOne(ctx, tcpSrv, 1<<20, 2)
	c, err = topo.A.DialTCP(ctx, tcpSrv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if s := exchangeServed(t, ctx, c, served, 1<<20, 1<<20); s.MPTCP {
		t.Error("a plain TCP server's connection is MPTCP")
	}
	c.Close()

	// A refused port: a reset right after the application's connect (mptcpd accepted it), or
	// already in its connect when the reset came first.
	start := time.Now()
	if err := appReset(ctx, topo.A, netip.AddrPortFrom(p0.B.Addr(fam), 9).String()); err != nil {
		t.Errorf("a refused port: %v", err)
	} else if el := time.Since(start); el > 2*time.Second {
		t.Errorf("the reset came after %v", el)
	}

	carried := daemonStats(t, sock)["TransparentCarried"]
	// Loopback and an excluded destination: straight there, not through mptcpd.
	for _, ln := range []net.Listener{local, excluded} {
		acc := netns.AcceptAsync(ctx, ln)
		c, err := topo.A.DialTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s := <-acc
		if s == nil {
			t.Fatalf("%s: nothing accepted", ln.Addr())
		}
		if got, want := s.RemoteAddr().String(), c.LocalAddr().String(); got != want {
			t.Errorf("%s: the server sees %s, the client is %s: the connection went through something", ln.Addr(), got, want)
		}
		s.Close()
		c.Close()
	}
	// A program using our library in the namespace: its subflows (our congestion control set
	// before connect) go straight to the server, MPTCP end to end, not through mptcpd.
	served = netns.ServeOne(ctx, mpSrv, 1<<20, 2)
	lc := dialOursWith(t, ctx, topo.A, mpSrv.Addr().String(), control.Dialer{})
	s := exchangeServed(t, ctx, lc, served, 1<<20, 1<<20)
	if !s.MPTCP || s.Remote == nil || s.Remote.String() != lc.LocalAddr().String() {
		t.Errorf("our library's connection: the server sees %v (MPTCP %t), the client is %s", s.Remote, s.MPTCP, lc.LocalAddr())
	}
	lc.Close()
	// Another namespace (B) connecting to A's address: untouched, refused by A.
	if c, err := topo.B.DialTCP(ctx, netip.AddrPortFrom(p0.A.Addr(fam), 9).String()); err == nil {
		c.Close()
		t.Error("B's connection to a closed port of A was accepted")
	}
	st := daemonStats(t, sock)
	if st["TransparentCarried"] != carried || carried != 3 {
		t.Errorf("TransparentCarried = %d after the loopback and excluded connections, %d before; want 3 both", st["TransparentCarried"], carried)
	}
	icept := st["TransparentIntercepted4"]
	if fam == netns.IPv6 {
		icept = st["TransparentIntercepted6"]
	}
	if icept != 3 || st["TransparentSkipLoopback"] < 1 || st["TransparentSkipExcluded"] != 1 || st["TransparentLost"] != 0 ||
		st["TransparentSkipOurStack"] < 1 {
		t.Errorf("interception counters: %v", nonzero(st))
	}

	// kill -9: nothing stays attached; connections go straight to their destination.
	if err := d.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.Done()
	acc := netns.AcceptAsync(ctx, tcpSrv)
	c, err = topo.A.DialTCP(ctx, tcpSrv.Addr().String())
	if err != nil {
		t.Fatalf("after kill -9: %v", err)
	}
	as := <-acc
	if as == nil || as.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("after kill -9 the server sees %v, the client is %s: still intercepted", as, c.LocalAddr())
	}
	if as != nil {
		as.Close()
	}
	c.Close()
}

func loopback(fam netns.Family) netip.Addr {
	if fam == netns.IPv6 {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// waitRelay waits until mptcpctl show lists a connection the daemon relays to destination.
func waitRelay(t *testing.T, ctx context.Context, sock, destination string) ctl.Connection {
	t.Helper()
	for {
		var conns []ctl.Connection
		ctlJSON(t, sock, &conns, "show")
		for _, c := range conns {
			if c.Relay != nil && c.Relay.Destination == destination {
				return c
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("mptcpctl show lists no relay to %s: %+v", destination, conns)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
