package netns_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestCoupledToKernel: our client with each congestion control, two subflows to a kernel
// server, data both ways: the bytes arrive exact, the connection names its algorithm, the
// coupled ones list both subflows for the datapath, and each subflow's program published its
// window and RTT there (what the other subflow's program reads). With CUBIC, its state is put back
// after each switch of algorithms that rings the ACK doorbell (CCCubicKept), instead of starting
// over.
func TestCoupledToKernel(t *testing.T) {
	for _, cc := range control.CongestionControlNames() {
		t.Run(cc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			up, down := scaledSize(16<<20), scaledSize(4<<20)
			topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
			p0, p1 := topo.Path(0), topo.Path(1)
			m := ourPM(t, pm.DefaultLimits)
			addEndpoint(t, m, pmapi.Endpoint{Addr: p1.A.Addr(netns.IPv4), Flags: pmapi.FlagSubflow})
			topo.B.SetMPTCPLimits(2, 0)
			for _, p := range []*netns.Path{p0, p1} {
				p.SetTBF(netns.TBF{Rate: 100e6, Latency: 20 * time.Millisecond})
			}
			ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
			if err != nil {
				t.Fatal(err)
			}
			served := netns.ServeOne(ctx, ln, down, 2)
			c := dialOursWith(t, ctx, topo.A, ln.Addr().String(), control.Dialer{CongestionControl: cc})
			if err := topo.B.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
				t.Fatal(err)
			}
			d := ourCounterDeltas(t, func() { exchangeServed(t, ctx, c, served, up, down) })
			t.Logf("AckOnDemand +%d, CCCubicKept +%d", d["AckOnDemand"], d["CCCubicKept"])
			if cc == "cubic" && d["CCCubicKept"] == 0 || cc != "cubic" && d["CCCubicKept"] != 0 {
				t.Errorf("CCCubicKept +%d with %s (AckOnDemand +%d)", d["CCCubicKept"], cc, d["AckOnDemand"])
			}
			checkNoFallback(t, counters(t, topo.B))
			in, ok := c.(*control.Conn).Info()
			if !ok {
				t.Fatal("the connection ended")
			}
			if in.CongestionControl != cc {
				t.Errorf("the connection's congestion control is %q, want %q", in.CongestionControl, cc)
			}
			if len(in.Subflows) != 2 {
				t.Fatalf("%d subflows, want 2", len(in.Subflows))
			}
			coupled := cc == "lia" || cc == "olia" || cc == "balia"
			if coupled && len(in.Coupled) != 2 || !coupled && len(in.Coupled) != 0 {
				t.Errorf("subflow slots coupled: %v", in.Coupled)
			}
			for _, sf := range in.Subflows {
				t.Logf("subflow %s: cwnd %d, published window %d and RTT %v, %d bytes sent", sf.Local, sf.Cwnd, sf.CCWindow, sf.CCSRTT, sf.BytesSent)
				if sf.CCWindow == 0 || sf.CCSRTT <= 0 || sf.CCSRTT > time.Second {
					t.Errorf("subflow %s published window %d and RTT %v", sf.Local, sf.CCWindow, sf.CCSRTT)
				}
			}
		})
	}
}

// TestCoupledChurn (E6 of the coupled congestion control): our client with each coupled
// algorithm to a kernel server, a transfer under way while seven subflows join, eight in all
// (the most the datapath couples), then three leave (their endpoints deleted: REMOVE_ADDR, the
// subflows close). At each stage the connection couples exactly the subflows it has, every one of
// them has published a window and an RTT, and the bytes arrive exact with nothing wrong counted
// on either side.
func TestCoupledChurn(t *testing.T) {
	const paths = 8
	for _, cc := range []string{"lia", "olia", "balia"} {
		t.Run(cc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			// 10 Mbit/s per path: with eight paths 64 MiB take at least 6.7 s, time enough
			// for the churn.
			up, down := scaledSize(64<<20), scaledSize(4<<20)
			topo := netns.New(t, netns.Config{Paths: paths, A: ourSide})
			m := ourPM(t, pm.Limits{Subflows: paths, AddAddrAccepted: 0})
			topo.B.SetMPTCPLimits(paths, 0)
			for i := range paths {
				topo.Path(i).SetTBF(netns.TBF{Rate: 10e6, Latency: 20 * time.Millisecond})
			}
			p0 := topo.Path(0)
			ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
			if err != nil {
				t.Fatal(err)
			}
			before, err := ourStack(t).Counters()
			if err != nil {
				t.Fatal(err)
			}
			served := netns.ServeOne(ctx, ln, down, 2)
			c := dialOursWith(t, ctx, topo.A, ln.Addr().String(), control.Dialer{CongestionControl: cc})
			conn := c.(*control.Conn)
			done := make(chan netns.Result, 1)
			go func() {
				tr, err := netns.Exchange(ctx, c, up, 1)
				done <- netns.Result{Transfer: tr, Err: err}
			}()
			// stage waits until the connection has n subflows, all coupled and each with a
			// published window and RTT.
			stage := func(n int) {
				t.Helper()
				var in control.ConnInfo
				for ctx.Err() == nil {
					select {
					case r := <-done:
						t.Fatalf("the transfer ended (%v) before the connection had %d coupled subflows: %+v", r.Err, n, in)
					default:
					}
					var ok bool
					if in, ok = conn.Info(); !ok {
						t.Fatal("the connection ended")
					}
					published := 0
					for _, sf := range in.Subflows {
						if sf.CCWindow > 0 && sf.CCSRTT > 0 && sf.CCSRTT < time.Second {
							published++
						}
					}
					if len(in.Subflows) == n && len(in.Coupled) == n && published == n {
						t.Logf("%d subflows coupled, windows %v", n, windows(in))
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				t.Fatalf("never %d coupled subflows with their state published: %d subflows, coupled %v, windows %v",
					n, len(in.Subflows), in.Coupled, windows(in))
			}
			stage(1)
			for i := 1; i < paths; i++ {
				addEndpoint(t, m, pmapi.Endpoint{Addr: topo.Path(i).A.Addr(netns.IPv4), Flags: pmapi.FlagSubflow})
			}
			stage(paths)
			for i := paths - 3; i < paths; i++ {
				if _, err := m.DeleteEndpoint(0, topo.Path(i).A.Addr(netns.IPv4)); err != nil {
					t.Fatal(err)
				}
			}
			stage(paths - 3)
			checkServed(t, <-done, served, up, down)
			kc := counters(t, topo.B)
			checkNoFallback(t, kc)
			// Three deletions in a row may travel as one REMOVE_ADDR with several IDs.
			if kc["MPJoinAckRx"] != paths-1 || kc["RmAddr"] == 0 {
				t.Errorf("kernel: %d joins, %d REMOVE_ADDRs received; want %d and some", kc["MPJoinAckRx"], kc["RmAddr"], paths-1)
			}
			oc, err := ourStack(t).Counters()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"OptionNoSpace", "DSSTxNoMapping", "UnmappedDataRx", "ScratchNested", "NoState"} {
				if d := oc[name] - before[name]; d != 0 {
					t.Errorf("ours: %s moved by %d, want 0", name, d)
				}
			}
		})
	}
}

// windows lists each subflow's congestion window and the window its program published.
func windows(in control.ConnInfo) []string {
	var out []string
	for _, sf := range in.Subflows {
		out = append(out, fmt.Sprintf("%d/%d", sf.Cwnd, sf.CCWindow))
	}
	return out
}
