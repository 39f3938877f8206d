package netns_test

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMemoryLimitRefuses: with its memory limit below the heap it uses, our stack resets a
// kernel client's connection and fails its own Dial, counting each as MemoryPressureRefused;
// with the limit lifted it serves and dials again, byte-exact.
//
//	A (kernel: client, and a server for our dial) ── path 0 ── B (ours: listener, dialer)
func TestMemoryLimitRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p0 := topo.Path(0)
	s := ourStack(t)
	ln := listenOurs(t, topo.B, p0.B.HostPort(netns.IPv4, 0))
	kln, err := topo.A.ListenMPTCP(p0.A.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	s.SetMemoryLimit(1) // far below any heap
	t.Cleanup(func() { s.SetMemoryLimit(0) })

	d := ourCounterDeltas(t, func() {
		c, err := dialMPTCPOnce(topo.A, netip.MustParseAddrPort(ln.Addr().String()))
		if !errors.Is(err, syscall.ECONNRESET) {
			if err != nil {
				t.Fatal(err)
			}
			wantReset(t, c, true)
		}
		var dc error
		topo.B.Do(func() error {
			_, dc = (&control.Dialer{Stack: s}).DialContext(ctx, "tcp", kln.Addr().String())
			return nil
		})
		if !errors.Is(dc, control.ErrMemoryPressure) {
			t.Errorf("dial over the memory limit: %v, want ErrMemoryPressure", dc)
		}
	})
	if d["MemoryPressureRefused"] != 2 || d["PassiveOpens"] != 0 || d["ActiveOpens"] != 0 {
		t.Errorf("ours: MemoryPressureRefused +%d (want 2: the kernel client, our dial), PassiveOpens +%d, ActiveOpens +%d (want 0)",
			d["MemoryPressureRefused"], d["PassiveOpens"], d["ActiveOpens"])
	}
	if d["MPRstTx"] != 1 {
		t.Errorf("ours: MPRstTx +%d, want 1 (MP_TCPRST on the MPTCP connection refused)", d["MPRstTx"])
	}

	s.SetMemoryLimit(1 << 40)
	const n = 4 << 20
	d = ourCounterDeltas(t, func() {
		// The kernel client to our listener.
		accepted := make(chan netns.Result, 1)
		go func() {
			c, err := netns.Accept(ctx, ln)
			if err != nil {
				accepted <- netns.Result{Err: err}
				return
			}
			accepted <- <-exchangeOurs(ctx, c, n, 2)
		}()
		c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tr, err := netns.Exchange(ctx, c, n, 1)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := <-accepted
		if r.Err != nil || !r.MPTCP {
			t.Fatalf("served: %v (MPTCP %v)", r.Err, r.MPTCP)
		}
		checkDigests(t, tr, r.Transfer, n, n)
		// Our dial to the kernel's listener.
		served := netns.ServeOne(ctx, kln, n, 2)
		oc := dialOurs(t, ctx, topo.B, kln.Addr().String())
		tr, err = netns.Exchange(ctx, oc, n, 1)
		if err != nil {
			t.Fatal(err)
		}
		r = <-served
		if r.Err != nil || !r.MPTCP {
			t.Fatalf("kernel server: %v (MPTCP %v)", r.Err, r.MPTCP)
		}
		checkDigests(t, tr, r.Transfer, n, n)
	})
	if d["MemoryPressureRefused"] != 0 || d["PassiveOpens"] != 1 || d["ActiveOpens"] != 1 {
		t.Errorf("under the limit: MemoryPressureRefused +%d (want 0), PassiveOpens +%d, ActiveOpens +%d (want 1 each)",
			d["MemoryPressureRefused"], d["PassiveOpens"], d["ActiveOpens"])
	}
}
