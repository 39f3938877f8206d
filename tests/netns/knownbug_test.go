//go:build knownbug

// Known bug, kept out of the suite until fixed: run with
//
//	go test -tags knownbug -count=1 -run TestEarlyFallbackToKernelClient ./tests/netns
//
// When a middlebox strips the MPTCP options of every segment from our server to a kernel client
// from the first data on, the kernel falls back (DssFallback) and so do we (MP_FAIL), but the
// bytes the client reads from us miss a stretch (between 64 KiB and 1.4 MiB into the stream in
// three runs, then the stream continues from a later point). Not yet explained.

package netns_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestEarlyFallbackToKernelClient: the MPTCP options of our server's first segments never reach
// a kernel client (a middlebox strips them from the start), so the client, not yet fully
// established, falls back to TCP (MPCapableDataFallback) and sends its data unmapped; our
// server sees unmapped data, sends MP_FAIL and falls back too. The bytes arrive intact both ways.
func TestEarlyFallbackToKernelClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	if dir := os.Getenv("MPTCPGO_PCAP"); dir != "" {
		pc := p.B.NS.Start("dumpcap", "-i", p.B.Name, "-s", "120", "-w", dir+"/early.pcapng")
		if err := pc.WaitOutput(ctx, "Capturing on"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Stop() })
	}
	strip := p.A.StripMPTCP()
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
	const n = 8 << 20
	served := make(chan netns.Result, 1)
	go func() {
		oc, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- netns.Result{Err: err}
			return
		}
		defer oc.Close()
		tr, err := netns.Exchange(ctx, oc, n, 2)
		served <- netns.Result{Transfer: tr, Err: err}
	}()
	c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := strip.Enable(); err != nil {
		t.Fatal(err)
	}
	var tr netns.Transfer
	d := ourCounterDeltas(t, func() {
		tr, err = netns.Exchange(ctx, c, n, 1)
		if err != nil {
			t.Fatal(err)
		}
	})
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, n, n)
	kc := counters(t, topo.A)
	t.Logf("kernel: MPCapableDataFallback=%d MPFailRx=%d; ours: UnmappedDataRx=+%d MPFailFallback=+%d; stripped segments: %v",
		kc["MPCapableDataFallback"], kc["MPFailRx"], d["UnmappedDataRx"], d["MPFailFallback"], must(strip.Stripped()))
	logNonZero(t, "A kernel", kc)
	if kc["MPCapableDataFallback"] != 1 {
		t.Errorf("kernel MPCapableDataFallback = %d, want 1 (the case this test is about)", kc["MPCapableDataFallback"])
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
