package netns_test

import (
	"context"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// addEndpoint adds a path-manager endpoint for this test.
func addEndpoint(t *testing.T, m *pm.Manager, e pm.Endpoint) pm.Endpoint {
	t.Helper()
	e, err := m.AddEndpoint(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestJoinOurClientKernelServer: our client opens a second subflow over path 1 (a subflow
// endpoint) to a kernel server; the kernel counts the join, no HMAC failure, and path 1
// carries a fair share of the data.
func TestJoinOurClientKernelServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	m := ourPM(t, pm.DefaultLimits)
	addEndpoint(t, m, pm.Endpoint{Addr: p1.A.Addr(netns.IPv4), Flags: pm.FlagSubflow})
	topo.B.SetMPTCPLimits(2, 0)
	ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	const up, down = 128 << 20, 32 << 20
	served := netns.ServeOne(ctx, ln, down, 2)
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	if err := topo.B.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
		t.Fatal(err)
	}
	tx1 := txBytes(t, p1.A)
	tr, err := netns.Exchange(ctx, c, up, 1)
	if err != nil {
		if in, ok := c.(*control.Conn).Info(); ok {
			t.Logf("%+v", in)
		}
		logNonZero(t, "kernel", counters(t, topo.B))
		oc, _ := ourStack(t).Counters()
		logNonZero(t, "ours", oc)
		t.Logf("B:\n%s", topo.B.Run("ss", "-tinM"))
		t.Fatal(err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, up, down)
	kc := counters(t, topo.B)
	for _, name := range []string{"MPJoinSynRx", "MPJoinAckRx"} {
		if kc[name] < 1 {
			t.Errorf("kernel %s = %d, want >= 1", name, kc[name])
		}
	}
	for _, name := range []string{"MPJoinAckHMacFailure", "MPJoinSynAckHMacFailure", "MPJoinRejected"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	checkNoFallback(t, kc)
	share := txBytes(t, p1.A) - tx1
	t.Logf("path 1 carried %d MiB of %d MiB sent", share>>20, up>>20)
	if share < up/5 {
		t.Errorf("path 1 carried %d bytes, want a fair share (>= 20%%) of %d", share, up)
	}
}

// TestJoinKernelClientOurServer: a kernel client (a subflow endpoint on path 1) joins our
// server: our listener computes the SYN/ACK's HMAC in BPF and checks the third ACK's; the kernel
// counts the join complete, and path 1 carries a share of the data.
func TestJoinKernelClientOurServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	ourPM(t, pm.DefaultLimits)
	topo.A.SetMPTCPLimits(2, 0)
	p1.A.AddMPTCPEndpoint(netns.IPv4, "subflow")
	ln := listenOurs(t, topo.B, p0.B.HostPort(netns.IPv4, 0))
	const up, down = 128 << 20, 32 << 20
	type res struct {
		tr  netns.Transfer
		err error
		c   *control.Conn
	}
	served := make(chan res, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- res{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, down, 2)
		if err != nil {
			if in, ok := c.(*control.Conn).Info(); ok {
				t.Logf("%+v", in)
			}
		}
		served <- res{tr, err, nil}
	}()
	d := ourCounterDeltas(t, func() {
		c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tx1 := txBytes(t, p1.A)
		r := <-netns.ExchangeAsync(ctx, c, up, 1)
		if r.Err != nil {
			logNonZero(t, "kernel", counters(t, topo.A))
			t.Fatal(r.Err)
		}
		s := <-served
		if s.err != nil {
			t.Fatal(s.err)
		}
		checkDigests(t, r.Transfer, s.tr, up, down)
		share := txBytes(t, p1.A) - tx1
		t.Logf("path 1 carried %d MiB of the kernel's %d MiB", share>>20, up>>20)
		if share < 4<<20 {
			t.Errorf("path 1 carried %d bytes, want a real share of %d", share, up)
		}
	})
	kc := counters(t, topo.A)
	for _, name := range []string{"MPJoinSynTx", "MPJoinSynAckRx"} {
		if kc[name] < 1 {
			t.Errorf("kernel %s = %d, want >= 1", name, kc[name])
		}
	}
	for _, name := range []string{"MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	if d["MPJoinAckRx"] < 1 || d["Joins"] < 1 || d["MPJoinAckHMacFailure"] != 0 {
		t.Errorf("ours: MPJoinAckRx +%d, Joins +%d, MPJoinAckHMacFailure +%d", d["MPJoinAckRx"], d["Joins"], d["MPJoinAckHMacFailure"])
	}
	checkNoFallback(t, kc)
}
