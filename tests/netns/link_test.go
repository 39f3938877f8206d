package netns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestTBF rate-limits A's end of a path to 20 Mbit/s and sends 4 MiB through it with
// kernel MPTCP.
func TestTBF(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{})
	p := topo.Path(0)

	const rate = 20e6 // bit/s
	p.A.SetTBF(netns.TBF{Rate: rate})
	q, err := p.A.TBF()
	if err != nil {
		t.Fatal(err)
	}
	if q == nil || q.Rate != rate/8 {
		t.Fatalf("TBF on %v: %+v, want rate %d bytes/s", p.A, q, int(rate/8))
	}
	if q, err := p.B.TBF(); err != nil || q != nil {
		t.Fatalf("TBF on %v: %+v, %v; want none", p.B, q, err)
	}

	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	const n = 4 << 20
	served := netns.ServeOne(ctx, ln, 0, 0)
	c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tr, err := netns.Exchange(ctx, c, n, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	elapsed := time.Since(start)
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if s.Received != tr.Sent || tr.Sent != netns.StreamDigest(n, 1) || !s.MPTCP {
		t.Errorf("received %v (MPTCP %t), sent %v", s.Received, s.MPTCP, tr.Sent)
	}
	// A token bucket cannot be beaten, only its bucket can be spent: a lower bound on the
	// time is safe, an upper bound would not be.
	if floor := time.Duration(float64(n-64<<10) * 8 / rate * float64(time.Second)); elapsed < floor*9/10 {
		t.Errorf("4 MiB through a 20 Mbit/s TBF took %v, less than the %v the rate allows", elapsed, floor)
	}
	t.Logf("4 MiB through 20 Mbit/s in %v", elapsed.Round(time.Millisecond))

	// The qdisc's counters, through netlink and through tc.
	if q, err = p.A.TBF(); err != nil {
		t.Fatal(err)
	}
	if q.Statistics == nil || q.Statistics.Basic.Bytes < n {
		t.Errorf("TBF statistics %+v, want >= %d bytes", q.Statistics, n)
	}
	out := topo.A.Run("tc", "-s", "qdisc", "show", "dev", p.A.Name)
	m := regexp.MustCompile(`qdisc tbf 1: root .*rate 20Mbit[^\n]*\n Sent (\d+) bytes`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tc -s qdisc show dev %s:\n%s", p.A.Name, out)
	}
	if sent, _ := strconv.ParseUint(m[1], 10, 64); sent < n {
		t.Errorf("tc reports %d bytes sent through the TBF, want >= %d", sent, n)
	}
	if c := counters(t, topo.B); c["MPCapableSYNRX"] != 1 || c["MPCapableACKRX"] != 1 {
		t.Errorf("server MPCapableSYNRX %d, MPCapableACKRX %d; want 1, 1", c["MPCapableSYNRX"], c["MPCapableACKRX"])
	}

	p.SetTBF(netns.TBF{Rate: 1e9, Burst: 64 << 10, Latency: 10 * time.Millisecond})
	for _, e := range []*netns.Iface{p.A, p.B} {
		if q, err := e.TBF(); err != nil || q == nil || q.Rate != 1e9/8 {
			t.Errorf("TBF on %v after Path.SetTBF: %+v, %v", e, q, err)
		}
	}
	p.ClearTBF()
	for _, e := range []*netns.Iface{p.A, p.B} {
		if q, err := e.TBF(); err != nil || q != nil {
			t.Errorf("TBF on %v after ClearTBF: %+v, %v", e, q, err)
		}
	}
}

// TestLinkDownUp takes path 1 down (both ends, then one end at a time) and up again, for
// both families, checking that connections through it fail while it is down, that path
// 0 keeps working, and that Up restores the path's addresses and routes.
func TestLinkDownUp(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, IPv6: true})
	p0, p1 := topo.Path(0), topo.Path(1)
	ln, err := topo.B.ListenTCP(":0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	for _, f := range []netns.Family{netns.IPv4, netns.IPv6} {
		// The control: a working path refuses. Given seconds, so that a loaded machine's slow
		// answer is not taken for an unreachable peer.
		if err := dialFails(ctx, topo.A, p1.A.Addr(f), p1.B.HostPort(f, 9), 5*time.Second); err == nil {
			t.Fatalf("%v: a dial through a working path 1 to a closed port was not refused", f)
		}
		for _, step := range []struct {
			name string
			down func()
		}{
			{"both ends", p1.Down},
			{"B's end", p1.B.Down},
			{"A's end", p1.A.Down},
		} {
			step.down()
			if err := dialFails(ctx, topo.A, p1.A.Addr(f), p1.B.HostPort(f, 9), 300*time.Millisecond); err != nil {
				t.Errorf("%v, path 1 down at %s: %v", f, step.name, err)
			}
			if err := roundTrip(ctx, ln, topo.A, p0.A.Addr(f), p0.B.HostPort(f, port)); err != nil {
				t.Errorf("%v, path 1 down at %s: path 0: %v", f, step.name, err)
			}
			p1.Up()
			if err := roundTrip(ctx, ln, topo.A, p1.A.Addr(f), p1.B.HostPort(f, port)); err != nil {
				t.Errorf("%v, path 1 up again after %s: %v", f, step.name, err)
			}
		}
	}
}

// dialer returns a plain-TCP dialer bound to local.
func dialer(local netip.Addr) *net.Dialer {
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
	d.SetMultipathTCP(false)
	return d
}

// dialFails checks that a connection from local to a closed port at remote cannot reach
// the peer within wait: it fails at once (no route) or is never answered, where a working
// path would be refused.
func dialFails(ctx context.Context, ns *netns.Namespace, local netip.Addr, remote string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, err := ns.Dial(ctx, dialer(local), "tcp", remote)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%v connected to %s", local, remote)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%v reached %s: %w", local, remote, err)
	}
	return nil
}

// roundTrip connects from local to remote, where l listens, and moves 256 KiB each way.
func roundTrip(ctx context.Context, l net.Listener, ns *netns.Namespace, local netip.Addr, remote string) error {
	const n = 256 << 10
	c, err := ns.Dial(ctx, dialer(local), "tcp", remote)
	if err != nil {
		return err
	}
	defer c.Close()
	served := netns.ServeOne(ctx, l, n, 2) // after the dial: nothing waits on a failed one
	tr, err := netns.Exchange(ctx, c, n, 1)
	s := <-served
	if err = errors.Join(err, s.Err); err != nil {
		return err
	}
	if tr.Sent != s.Received || s.Sent != tr.Received || tr.Sent.Bytes != n {
		return fmt.Errorf("data mismatch: sent %v, received %v; got %v, sent %v", tr.Sent, s.Received, tr.Received, s.Sent)
	}
	return nil
}
