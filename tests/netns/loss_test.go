package netns_test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestLossBothWays transfers in both directions at once with 1% random loss on the path in
// both directions, our stack against the kernel's in both roles, over IPv4 (256 MiB each way)
// and IPv6 (32 MiB). Our subflows do not negotiate SACK (docs/design.md, "SACK"): the handshake
// on the wire carries no SACK-permitted from us while timestamps remain, and our datapath
// removed the one of the kernel's SYN or did not need to. With SACK blocks present the DSS
// would not fit: every data segment of ours carries its mapping (OptionNoSpace,
// DSSTxNoMapping at 0), every byte we receive is mapped (UnmappedDataRx at 0), no fallback
// happens on either side, and the data is exact.
func TestLossBothWays(t *testing.T) {
	for _, tc := range []struct {
		fam  netns.Family
		size int64
	}{{netns.IPv4, 256 << 20}, {netns.IPv6, 32 << 20}} {
		for _, ourClient := range []bool{true, false} {
			name := "kernel client"
			if ourClient {
				name = "our client"
			}
			t.Run(fmt.Sprintf("%v/%s", tc.fam, name), func(t *testing.T) { testLossBothWays(t, tc.fam, tc.size, ourClient) })
		}
	}
}

func testLossBothWays(t *testing.T, fam netns.Family, size int64, ourClient bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cfg := netns.Config{Paths: 1, IPv6: fam == netns.IPv6}
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
	kernelNS, kernelEnd := topo.B, p.B
	if !ourClient {
		kernelNS, kernelEnd = topo.A, p.A
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
	// The handshake as the kernel's end of the path sees it (the wire).
	capFile, stopCapture := captureUntil(t, ctx, kernelEnd, "tcp.flags.syn == 1")
	var ourTr, kernTr netns.Transfer
	var kernMPTCP bool
	d := ourCounterDeltas(t, func() {
		if ourClient {
			ln, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
			if err != nil {
				t.Fatal(err)
			}
			served := netns.ServeOne(ctx, ln, size, 2)
			c := dialOurs(t, ctx, topo.A, ln.Addr().String())
			stopCapture(2)
			if !control.IsMPTCP(c) {
				t.Fatal("fell back to TCP")
			}
			t.Cleanup(func() {
				if in, ok := c.(*control.Conn).Info(); ok && t.Failed() {
					t.Logf("our connection: %+v", in)
				}
			})
			if ourTr, err = netns.Exchange(ctx, c, size, 1); err != nil {
				t.Fatal(err)
			}
			s := <-served
			if s.Err != nil {
				t.Fatal(s.Err)
			}
			kernTr, kernMPTCP = s.Transfer, s.MPTCP
			return
		}
		ln := listenOurs(t, topo.B, p.B.HostPort(fam, 0))
		done := make(chan error, 1)
		go func() {
			c, err := netns.Accept(ctx, ln)
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			ourTr, err = netns.Exchange(ctx, c, size, 1)
			done <- err
		}()
		c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		stopCapture(2)
		r := <-netns.ExchangeAsync(ctx, c, size, 2)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		kernTr, kernMPTCP = r.Transfer, r.MPTCP
	})
	if want := netns.StreamDigest(size, 1); ourTr.Sent != want || kernTr.Received != want {
		t.Errorf("ours to kernel: sent %v, received %v, want %v", ourTr.Sent, kernTr.Received, want)
	}
	if want := netns.StreamDigest(size, 2); kernTr.Sent != want || ourTr.Received != want {
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
	kc := counters(t, kernelNS)
	for _, name := range []string{"DssFallback", "DSSNotMatching", "InfiniteMapRx", "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSCorruptionFallback", "MPCapableDataFallback", "FallbackFailed"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	for _, name := range []string{"OptionNoSpace", "DSSTxNoMapping", "UnmappedDataRx", "MPFailTx", "InfiniteMapRx", "FallbackActive", "FallbackPassive"} {
		if d[name] != 0 {
			t.Errorf("our %s moved by %d, want 0", name, d[name])
		}
	}
	checkNoSackPerm(t, capFile, ourClient, d)
}

// captureUntil captures at e; the returned stop waits until n packets matching filter are in the
// file (dumpcap writes what it captured with a delay), then stops the capture.
func captureUntil(t *testing.T, ctx context.Context, e *netns.Iface, filter string) (string, func(n int)) {
	t.Helper()
	file, stop := capture(t, ctx, e)
	return file, func(n int) {
		t.Helper()
		defer stop()
		for {
			// The file is still being written: a packet cut short at its end is an error
			// tshark reports after printing the packets before it.
			b, _ := exec.Command("tshark", "-r", file, "-Y", filter, "-T", "fields", "-e", "frame.number").Output()
			if out := strings.TrimSpace(string(b)); out != "" && len(strings.Split(out, "\n")) >= n {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("capture at %v: fewer than %d packets matching %q", e, n, filter)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// checkNoSackPerm checks the handshake captured at the kernel's end: our SYN (as client) or
// SYN/ACK (as server) carries timestamps and no SACK-permitted, and the kernel's SYN/ACK
// answers in kind; the kernel's SYN to our server does carry SACK-permitted, which our datapath
// removes on the way in. Either way our datapath counted one removal: from our own SYN, or
// from the kernel's.
func checkNoSackPerm(t *testing.T, file string, ourClient bool, d map[string]uint64) {
	t.Helper()
	const sackPerm, timestamps = "4", "8" // TCP option kinds
	out := tshark(t, file, "-Y", "tcp.flags.syn == 1", "-T", "fields", "-e", "tcp.flags.ack", "-e", "tcp.option_kind")
	var syn, synAck []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("tshark: %q", line)
		}
		kinds := strings.Split(f[1], ",")
		if f[0] == "1" || f[0] == "True" {
			synAck = kinds
		} else {
			syn = kinds
		}
	}
	if syn == nil || synAck == nil {
		t.Fatalf("no SYN or SYN/ACK captured:\n%s", out)
	}
	ours, theirs := synAck, syn
	if ourClient {
		ours, theirs = syn, synAck
	}
	if slices.Contains(ours, sackPerm) || !slices.Contains(ours, timestamps) {
		t.Errorf("our SYN%s carries options %v: want timestamps (8) and no SACK-permitted (4)", map[bool]string{true: "", false: "/ACK"}[ourClient], ours)
	}
	if ourClient && (slices.Contains(theirs, sackPerm) || !slices.Contains(theirs, timestamps)) {
		t.Errorf("the kernel's SYN/ACK carries options %v: want timestamps and no SACK-permitted", theirs)
	}
	if !ourClient && !slices.Contains(theirs, sackPerm) {
		t.Errorf("the kernel's SYN carries options %v: want SACK-permitted (4), for our datapath to remove", theirs)
	}
	if d["SackPermStripped"] != 1 {
		t.Errorf("our SackPermStripped moved by %d, want 1", d["SackPermStripped"])
	}
}

// tshark runs tshark over a capture file with its MPTCP analysis on and returns its output.
func tshark(t *testing.T, file string, args ...string) string {
	t.Helper()
	args = append([]string{"-r", file, "-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.relative_sequence_numbers:FALSE"}, args...)
	cmd := exec.Command("tshark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}
