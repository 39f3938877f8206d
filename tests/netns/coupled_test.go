package netns_test

import (
	"context"
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
