package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Joins to the addresses we announce, with our listener bound to one address (the rig's
// listener is on the wildcard address, which receives them anyway):
//
//	  A (kernel client)                 B (ours)
//	  path 0 ─────────────────────────  listener at path 0's address
//	  path 1 ─────────────────────────  signal endpoint: ADD_ADDR, join socket at path 1's address

// boundListener is our listener bound to path 0's address in B, with a signal endpoint on
// path 1's address, and a kernel client in A that accepts one ADD_ADDR and one subflow.
func boundListener(t *testing.T, endpointFirst bool) (*netns.Topology, *control.Listener, netip.AddrPort) {
	t.Helper()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	m := ourPM(t, pm.DefaultLimits)
	topo.A.SetMPTCPLimits(1, 1) // ip mptcp limits set add_addr_accepted 1 subflows 1
	ep := pmapi.Endpoint{Addr: p1.B.Addr(netns.IPv4), Flags: pmapi.FlagSignal}
	if endpointFirst {
		addEndpoint(t, m, ep)
	}
	ln := listenOurs(t, topo.B, p0.B.HostPort(netns.IPv4, 0))
	if !endpointFirst {
		addEndpoint(t, m, ep)
	}
	bound := netip.MustParseAddrPort(ln.Addr().String())
	want := netip.AddrPortFrom(p1.B.Addr(netns.IPv4), bound.Port())
	if got := ourStack(t).JoinAddrs(); !slices.Contains(got, want) {
		t.Fatalf("join sockets %v, want %v among them", got, want)
	}
	return topo, ln, want
}

// TestSignalBoundListener: a kernel client connects to our listener bound to path 0's address;
// we announce path 1's address (a signal endpoint, configured before or after the listener);
// the kernel joins it, and both paths carry data both ways, byte-exact.
func TestSignalBoundListener(t *testing.T) {
	for _, first := range []bool{true, false} {
		name := map[bool]string{true: "endpoint-first", false: "listener-first"}[first]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			topo, ln, _ := boundListener(t, first)
			p1 := topo.Path(1)
			for i := range 2 {
				topo.Path(i).SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
			}
			const up, down = 32 << 20, 32 << 20
			kc0 := counters(t, topo.A)
			d := ourCounterDeltas(t, func() {
				accepted := make(chan *control.Conn, 1)
				go func() {
					c, err := netns.Accept(ctx, ln)
					if err != nil {
						t.Error(err)
						accepted <- nil
						return
					}
					accepted <- c.(*control.Conn)
				}()
				kcli, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer kcli.Close()
				srv := <-accepted
				if srv == nil {
					t.FailNow()
				}
				defer srv.Close()
				for len(srv.Subflows()) < 2 {
					select {
					case <-ctx.Done():
						logNonZero(t, "kernel", counters(t, topo.A))
						oc, _ := ourStack(t).Counters()
						logNonZero(t, "ours", oc)
						t.Fatalf("the kernel did not join the announced address: %d subflows", len(srv.Subflows()))
					case <-time.After(10 * time.Millisecond):
					}
				}
				txA, txB := txBytes(t, p1.A), txBytes(t, p1.B)
				cr, sr := netns.ExchangeAsync(ctx, kcli, up, 1), exchangeOurs(ctx, srv, down, 2)
				c, s := <-cr, <-sr
				if c.Err != nil || s.Err != nil {
					t.Fatalf("client: %v; server: %v", c.Err, s.Err)
				}
				checkDigests(t, c.Transfer, s.Transfer, up, down)
				a, b := txBytes(t, p1.A)-txA, txBytes(t, p1.B)-txB
				t.Logf("path 1 carried %d MiB up, %d MiB down", a>>20, b>>20)
				if a < up/8 || b < down/8 {
					t.Errorf("path 1 carried %d bytes up, %d down: want a share of each", a, b)
				}
			})
			kc := counters(t, topo.A)
			for _, name := range []string{"AddAddr", "MPJoinSynTx", "MPJoinSynAckRx"} {
				if kc[name]-kc0[name] < 1 {
					t.Errorf("kernel %s +%d, want >= 1", name, kc[name]-kc0[name])
				}
			}
			for _, name := range []string{"MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure", "AddAddrDrop"} {
				if kc[name] != kc0[name] {
					t.Errorf("kernel %s +%d, want 0", name, kc[name]-kc0[name])
				}
			}
			checkNoFallback(t, kc)
			if d["MPJoinAckRx"] < 1 || d["Joins"] < 1 || d["JoinRefused"] != 0 || d["MPCapableEndpAttempt"] != 0 {
				t.Errorf("ours: MPJoinAckRx +%d, Joins +%d, JoinRefused +%d, MPCapableEndpAttempt +%d",
					d["MPJoinAckRx"], d["Joins"], d["JoinRefused"], d["MPCapableEndpAttempt"])
				logNonZero(t, "ours (moved)", d)
			}
		})
	}
}

// TestJoinSocketFollowsEndpoints: the join socket opens with the signal endpoint and closes with
// it, and with the listener; a listener of ours at its address takes its place.
func TestJoinSocketFollowsEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo, ln, at := boundListener(t, false)
	if _, err := stackPM(t).DeleteEndpoint(0, at.Addr()); err != nil {
		t.Fatal(err)
	}
	if got := ourStack(t).JoinAddrs(); slices.Contains(got, at) {
		t.Fatalf("join sockets %v after the endpoint's deletion, want %v gone", got, at)
	}
	if _, err := topo.A.DialTCP(ctx, at.String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to %v after the endpoint's deletion: %v, want connection refused", at, err)
	}
	addEndpoint(t, stackPM(t), pmapi.Endpoint{Addr: at.Addr(), Flags: pmapi.FlagSignal})
	if got := ourStack(t).JoinAddrs(); !slices.Contains(got, at) {
		t.Fatalf("join sockets %v after the endpoint's return, want %v", got, at)
	}
	// A listener of ours at that very address takes it over, and gives it back when it closes.
	ln2 := listenOurs(t, topo.B, at.String())
	if got := ourStack(t).JoinAddrs(); slices.Contains(got, at) {
		t.Fatalf("join sockets %v with a listener at %v, want it gone", got, at)
	}
	ln2.Close()
	if got := ourStack(t).JoinAddrs(); !slices.Contains(got, at) {
		t.Fatalf("join sockets %v after the listener at %v closed, want it back", got, at)
	}
	ln.Close()
	if got := ourStack(t).JoinAddrs(); slices.Contains(got, at) {
		t.Fatalf("join sockets %v after the listener closed, want %v gone", got, at)
	}
}

// stackPM is the path manager of the test binary's stack.
func stackPM(t testing.TB) *pm.Manager {
	ourStack(t)
	return stackOnce.pm
}

// TestJoinSocketRefusesNewConnections: an MP_CAPABLE connection, and a plain TCP one, to the
// join socket are reset (the MPTCP one with MP_TCPRST) and counted as MPCapableEndpAttempt,
// as the kernel does at its port-based endpoints; the listener itself still serves.
func TestJoinSocketRefusesNewConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo, ln, at := boundListener(t, true)
	d := ourCounterDeltas(t, func() {
		if c, err := dialMPTCPOnce(topo.A, at); !errors.Is(err, syscall.ECONNRESET) {
			if err != nil {
				t.Fatalf("MPTCP connect to the join socket: %v", err)
			}
			wantReset(t, c, true)
		}
		if c, err := topo.A.DialTCP(ctx, at.String()); !errors.Is(err, syscall.ECONNRESET) {
			if err != nil {
				t.Fatalf("TCP connect to the join socket: %v", err)
			}
			wantReset(t, c, false)
		}
		// The listener itself serves as before.
		accepted := make(chan netns.Result, 1)
		go func() {
			c, err := netns.Accept(ctx, ln)
			if err != nil {
				accepted <- netns.Result{Err: err}
				return
			}
			accepted <- <-exchangeOurs(ctx, c, 1<<20, 2)
		}()
		c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, 1<<20, 1)
		if err != nil {
			t.Fatal(err)
		}
		s := <-accepted
		if s.Err != nil {
			t.Fatal(s.Err)
		}
		checkDigests(t, tr, s.Transfer, 1<<20, 1<<20)
	})
	if d["MPCapableEndpAttempt"] != 2 {
		t.Errorf("ours: MPCapableEndpAttempt +%d, want 2", d["MPCapableEndpAttempt"])
		logNonZero(t, "ours (moved)", d)
	}
	if d["PassiveOpens"] != 1 {
		t.Errorf("ours: PassiveOpens +%d, want 1 (the listener's)", d["PassiveOpens"])
	}
	// The kernel client takes no MPTCP option on a reset that comes before its first DATA_ACK
	// (it falls back instead: check_fully_established), so our datapath's count tells.
	if d["MPRstTx"] != 1 {
		t.Errorf("ours: MPRstTx +%d, want 1 (the MPTCP connection's MP_TCPRST)", d["MPRstTx"])
	}
}

// exchangeOurs is netns.ExchangeAsync for a connection of ours (which has no descriptor of its
// own for TCP_IS_MPTCP).
func exchangeOurs(ctx context.Context, c net.Conn, n int64, seed uint64) <-chan netns.Result {
	ch := make(chan netns.Result, 1)
	go func() {
		defer c.Close()
		r := netns.Result{Remote: c.RemoteAddr(), MPTCP: control.IsMPTCP(c)}
		r.Transfer, r.Err = netns.Exchange(ctx, c, n, seed)
		ch <- r
	}()
	return ch
}

// dialMPTCPOnce connects with the kernel's MPTCP to an IPv4 address, once: unlike Go's MPTCP
// dial, it does not try again with plain TCP when the connection is reset.
func dialMPTCPOnce(ns *netns.Namespace, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "mptcp")
		defer f.Close()
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}); err != nil {
			return err
		}
		c, err = net.FileConn(f)
		return err
	})
	return c, err
}

// wantReset checks that a connection's first read fails with a reset. The kernel's MPTCP socket
// may report its only subflow's reset as the end of the stream instead (a reset before its
// first DATA_ACK makes it fall back).
func wantReset(t *testing.T, c net.Conn, mptcp bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	c.Close()
	if !errors.Is(err, syscall.ECONNRESET) && !(mptcp && errors.Is(err, io.EOF)) {
		t.Errorf("read (mptcp %v): %v, want a reset", mptcp, err)
	}
}
