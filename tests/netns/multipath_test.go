package netns_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// addEndpoint adds a path-manager endpoint for this test.
func addEndpoint(t testing.TB, m *pm.Manager, e pmapi.Endpoint) pmapi.Endpoint {
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
	up, down := scaledSize(128<<20), scaledSize(32<<20)
	// Paths of 1 Gbit/s: unshaped veths are so fast that the split follows the CPU more than
	// the paths, and one path may carry nearly everything.
	topo, served, c := ourClientTwoPaths(t, ctx, 1e9, "", down)
	p1 := topo.Path(1)
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
	kernelCounted(t, kc, "MPJoinSynRx", "MPJoinAckRx")
	for _, name := range []string{"MPJoinAckHMacFailure", "MPJoinSynAckHMacFailure", "MPJoinRejected"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	checkNoFallback(t, kc)
	share := txBytes(t, p1.A) - tx1
	t.Logf("path 1 carried %d MiB of %d MiB sent", share>>20, up>>20)
	if share < uint64(up/8) {
		t.Errorf("path 1 carried %d bytes, want a share (>= 12.5%%) of %d", share, up)
	}
}

// ourClientTwoPaths connects our client in A, with a subflow endpoint on path 1 and the
// scheduler sched ("" the default), to a kernel server on path 0 in B that allows a second
// subflow and serves down bytes (ServeOne); both paths are shaped to rate bits/s. It returns
// once the kernel counts the join.
func ourClientTwoPaths(t *testing.T, ctx context.Context, rate uint64, sched string, down int64) (*netns.Topology, <-chan netns.Result, net.Conn) {
	t.Helper()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	m := ourPM(t, pm.DefaultLimits)
	addEndpoint(t, m, pmapi.Endpoint{Addr: p1.A.Addr(netns.IPv4), Flags: pmapi.FlagSubflow})
	topo.B.SetMPTCPLimits(2, 0)
	for _, p := range []*netns.Path{p0, p1} {
		p.SetTBF(netns.TBF{Rate: rate, Latency: 20 * time.Millisecond})
	}
	ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	served := netns.ServeOne(ctx, ln, down, 2)
	c := dialOursSched(t, ctx, topo.A, ln.Addr().String(), sched)
	if err := topo.B.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
		t.Fatal(err)
	}
	return topo, served, c
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
	up, down := scaledSize(128<<20), scaledSize(32<<20)
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
		if share < uint64(up/32) {
			t.Errorf("path 1 carried %d bytes, want a real share of %d", share, up)
		}
	})
	kc := counters(t, topo.A)
	kernelCounted(t, kc, "MPJoinSynTx", "MPJoinSynAckRx")
	for _, name := range []string{"MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	if d["MPJoinAckRx"] < 1 || d["Joins"] < 1 || d["MPJoinAckHMacFailure"] != 0 {
		t.Errorf("ours: MPJoinAckRx +%d, Joins +%d, MPJoinAckHMacFailure +%d", d["MPJoinAckRx"], d["Joins"], d["MPJoinAckHMacFailure"])
		logNonZero(t, "ours (moved)", d)
		logNonZero(t, "kernel", kc)
	}
	checkNoFallback(t, kc)
}

// TestAddAddrFromKernel: a kernel server announces its second address (a signal endpoint); our
// client checks the ADD_ADDR's HMAC, echoes it and joins it.
func TestAddAddrFromKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	ourPM(t, pm.Limits{Subflows: 2, AddAddrAccepted: 2})
	topo.B.SetMPTCPLimits(2, 0)
	p1.B.AddMPTCPEndpoint(netns.IPv4, "signal")
	// The kernel's listener must accept the join on the announced address too.
	ln, err := topo.B.ListenMPTCP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := splitPort(ln.Addr().String())
	up, down := scaledSize(64<<20), scaledSize(64<<20)
	served := netns.ServeOne(ctx, ln, down, 2)
	d := ourCounterDeltas(t, func() {
		conn := dialOurs(t, ctx, topo.A, p0.B.HostPort(netns.IPv4, port))
		if err := topo.B.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
			logNonZero(t, "kernel", counters(t, topo.B))
			oc, _ := ourStack(t).Counters()
			logNonZero(t, "ours", oc)
			t.Fatal(err)
		}
		exchangeServed(t, ctx, conn, served, up, down)
	})
	kc := counters(t, topo.B)
	kernelCounted(t, kc, "AddAddrTx", "EchoAdd", "MPJoinSynRx", "MPJoinAckRx")
	if d["AddAddrAccepted"] != 1 || d["AddAddrHMacFailure"] != 0 || d["Joins"] != 1 {
		t.Errorf("ours: AddAddrAccepted +%d (want 1), AddAddrHMacFailure +%d (want 0), Joins +%d (want 1)",
			d["AddAddrAccepted"], d["AddAddrHMacFailure"], d["Joins"])
	}
	checkNoFallback(t, kc)
}

// TestAddAddrToKernel: our server announces a second address (a signal endpoint); the kernel
// client verifies the HMAC, counts the ADD_ADDR, echoes it and joins.
func TestAddAddrToKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	m := ourPM(t, pm.DefaultLimits)
	addEndpoint(t, m, pmapi.Endpoint{Addr: p1.B.Addr(netns.IPv4), Flags: pmapi.FlagSignal})
	topo.A.SetMPTCPLimits(2, 2)
	ln := listenOurs(t, topo.B, "0.0.0.0:0") // the join reaches the announced address
	_, port, _ := splitPort(ln.Addr().String())
	up, down := scaledSize(64<<20), scaledSize(64<<20)
	served := make(chan error, 1)
	var srv netns.Transfer
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		srv, err = netns.Exchange(ctx, c, down, 2)
		served <- err
	}()
	var d map[string]uint64
	d = ourCounterDeltas(t, func() {
		c, err := topo.A.DialMPTCP(ctx, p0.B.HostPort(netns.IPv4, port))
		if err != nil {
			t.Fatal(err)
		}
		if err := topo.A.WaitMPTCPCounter(ctx, "MPJoinSynAckRx", 1); err != nil {
			t.Fatal(err)
		}
		r := <-netns.ExchangeAsync(ctx, c, up, 1)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		checkDigests(t, r.Transfer, srv, up, down)
	})
	kc := counters(t, topo.A)
	kernelCounted(t, kc, "AddAddr", "EchoAddTx", "MPJoinSynTx", "MPJoinSynAckRx")
	if d["SignalOptionTx"] < 1 || d["Joins"] != 1 {
		t.Errorf("ours: SignalOptionTx +%d (want >= 1), Joins +%d (want 1)", d["SignalOptionTx"], d["Joins"])
	}
	checkNoFallback(t, kc)
}

func splitPort(hostport string) (string, uint16, error) {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return "", 0, err
	}
	return ap.Addr().String(), ap.Port(), nil
}

// TestSchedulersToKernel: our client with the roundrobin and the redundant scheduler, two paths
// to a kernel server; rate-limited paths fill the sockets, so writes come back partial. The
// data arrives byte-exact both ways, both paths carry it (the redundant scheduler sends some
// bytes on both), and the kernel neither falls back nor counts data beyond its window.
func TestSchedulersToKernel(t *testing.T) {
	for _, sched := range []string{"roundrobin", "redundant"} {
		t.Run(sched, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			up, down := scaledSize(32<<20), scaledSize(8<<20)
			topo, served, c := ourClientTwoPaths(t, ctx, 200e6, sched, down)
			p0, p1 := topo.Path(0), topo.Path(1)
			tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
			exchangeServed(t, ctx, c, served, up, down)
			kc := counters(t, topo.B)
			checkNoFallback(t, kc)
			if kc["NoDSSInWindow"] != 0 {
				t.Errorf("kernel NoDSSInWindow = %d, want 0", kc["NoDSSInWindow"])
			}
			sent0, sent1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1
			t.Logf("path 0 carried %d MiB, path 1 %d MiB of %d MiB", sent0>>20, sent1>>20, up>>20)
			if sent0 < uint64(up/8) || sent1 < uint64(up/8) {
				t.Errorf("paths carried %d and %d bytes, want each >= %d", sent0, sent1, up/8)
			}
			// The redundant scheduler puts each mapping on every subflow with room at the
			// time: the kernel receives some bytes twice.
			if sched == "redundant" && kc["DuplicateData"] == 0 {
				t.Error("kernel DuplicateData = 0: nothing was sent twice")
			}
			t.Logf("kernel DuplicateData = %d", kc["DuplicateData"])
		})
	}
}

// kernelCounted checks that each of the kernel's counters names is at least 1. A counter that
// a newer kernel has and this one lacks (newerKernelCounters) is left out, and logged; any
// other missing name fails.
func kernelCounted(t *testing.T, kc map[string]uint64, names ...string) {
	t.Helper()
	for _, name := range names {
		v, ok := kc[name]
		if !ok && newerKernelCounters[name] {
			t.Logf("this kernel has no counter %s (a newer kernel's): not checked", name)
			continue
		}
		if !ok || v < 1 {
			t.Errorf("kernel %s = %d (exported: %v), want >= 1", name, v, ok)
		}
	}
}
