package netns_test

import (
	"context"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// lossSize is the size of each direction of the loss tests.
const lossSize = 256 << 20

// TestLossBothWays transfers in both directions at once with 1% random loss on the path in
// both directions, our stack against the kernel's in both roles. With SACK blocks present the
// DSS would not fit (docs/design.md, "SACK"): no fallback may happen, and the data is exact.
func TestLossBothWays(t *testing.T) {
	for _, ourClient := range []bool{true, false} {
		name := "kernel client"
		if ourClient {
			name = "our client"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			cfg := netns.Config{Paths: 1}
			if ourClient {
				cfg.A = ourSide
			} else {
				cfg.B = ourSide
			}
			topo := netns.New(t, cfg)
			p := topo.Path(0)
			// Per-segment loss: without segmentation offloads each packet is one segment.
			for _, e := range []*netns.Iface{p.A, p.B} {
				e.NS.Run("ethtool", "-K", e.Name, "tso", "off", "gso", "off", "gro", "off")
			}
			la, lb := p.A.SetLoss(0.01), p.B.SetLoss(0.01)
			kernelNS := topo.B
			if !ourClient {
				kernelNS = topo.A
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("A sockets:\n%s", topo.A.Run("ss", "-tinoeM"))
					t.Logf("B sockets:\n%s", topo.B.Run("ss", "-tinoeM"))
					logNonZero(t, "kernel", counters(t, kernelNS))
					oc, _ := ourStack(t).Counters()
					logNonZero(t, "ours", oc)
				}
			})
			var ourTr, kernTr netns.Transfer
			var kernMPTCP bool
			if ourClient {
				ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
				if err != nil {
					t.Fatal(err)
				}
				served := netns.ServeOne(ctx, ln, lossSize, 2)
				c := dialOurs(t, ctx, topo.A, ln.Addr().String())
				if !control.IsMPTCP(c) {
					t.Fatal("fell back to TCP")
				}
				t.Cleanup(func() {
					if in, ok := c.(*control.Conn).Info(); ok && t.Failed() {
						t.Logf("our connection: %+v", in)
					}
				})
				if ourTr, err = netns.Exchange(ctx, c, lossSize, 1); err != nil {
					t.Fatal(err)
				}
				s := <-served
				if s.Err != nil {
					t.Fatal(s.Err)
				}
				kernTr, kernMPTCP = s.Transfer, s.MPTCP
			} else {
				ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
				done := make(chan error, 1)
				go func() {
					c, err := netns.Accept(ctx, ln)
					if err != nil {
						done <- err
						return
					}
					defer c.Close()
					ourTr, err = netns.Exchange(ctx, c, lossSize, 1)
					done <- err
				}()
				c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				r := <-netns.ExchangeAsync(ctx, c, lossSize, 2)
				if r.Err != nil {
					t.Fatal(r.Err)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				kernTr, kernMPTCP = r.Transfer, r.MPTCP
			}
			if want := netns.StreamDigest(lossSize, 1); ourTr.Sent != want || kernTr.Received != want {
				t.Errorf("ours to kernel: sent %v, received %v, want %v", ourTr.Sent, kernTr.Received, want)
			}
			if want := netns.StreamDigest(lossSize, 2); kernTr.Sent != want || ourTr.Received != want {
				t.Errorf("kernel to ours: sent %v, received %v, want %v", kernTr.Sent, ourTr.Received, want)
			}
			if !kernMPTCP {
				t.Errorf("kernel socket fell back (TCP_IS_MPTCP false)")
			}
			for _, lo := range []*netns.Loss{la, lb} {
				seen, dropped, err := lo.Stats()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("dropper: %d of %d packets (%.2f%%)", dropped, seen, 100*float64(dropped)/float64(seen))
				if dropped == 0 {
					t.Errorf("no packet was dropped")
				}
			}
			for _, e := range []*netns.Iface{p.A, p.B} {
				st, _ := e.Stats()
				t.Logf("%s: tx %d packets %d bytes", e, st.TxPackets, st.TxBytes)
			}
			kc := counters(t, kernelNS)
			for _, name := range []string{"DssFallback", "DSSNotMatching", "InfiniteMapRx", "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSCorruptionFallback", "MPCapableDataFallback", "FallbackFailed"} {
				if kc[name] != 0 {
					t.Errorf("kernel %s = %d, want 0", name, kc[name])
				}
			}
			oc, _ := ourStack(t).Counters()
			t.Logf("our counters: NoSpace %d NoMapping %d Unmapped %d SackStripped %d", oc["OptionNoSpace"], oc["DSSTxNoMapping"], oc["UnmappedDataRx"], oc["SackPermStripped"])
		})
	}
}
