package netns_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestDemo is what `make demo` shows: mptcpd in namespace A (where the kernel's MPTCP is
// disabled) carries TCP connections over MPTCP to and from the Linux kernel's MPTCP in
// namespace B, and the kernel confirms it.
//
//	namespace A (mptcpd, net.mptcp.enabled=0)          namespace B (kernel MPTCP)
//	app --TCP--> mptcpd --forward  ==== MPTCP ====>  kernel MPTCP server
//	TCP server <-- mptcpd --accept <=== MPTCP =====  kernel MPTCP client
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	out := func(format string, a ...any) { fmt.Fprintf(os.Stdout, format+"\n", a...) }
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	out("\n== mptcpgo demo: mptcpd (namespace %s) and the Linux kernel's MPTCP (namespace %s)", topo.A.Name(), topo.B.Name())
	out("   path: %s %s <-> %s %s", p.A.Name, p.A.Addr(netns.IPv4), p.B.Name, p.B.Addr(netns.IPv4))

	kernSrv, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	target, err := topo.A.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, addrs := startMptcpd(t, ctx, topo.A,
		"--forward", "127.0.0.1:0="+kernSrv.Addr().String(),
		"--accept", p.A.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	out("   mptcpd --forward %s=%s --accept %s=%s", addrs[0], kernSrv.Addr(), addrs[1], target.Addr())

	const size = 512 << 20
	// 1. Our side opens: app -> mptcpd --forward -> kernel MPTCP server.
	served := netns.ServeOne(ctx, kernSrv, size, 2)
	c, err := topo.A.DialTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	snap := make(chan string, 1)
	go func() { // the kernel's view of the connection while it runs
		time.Sleep(500 * time.Millisecond)
		snap <- topo.B.Run("ss", "-Mni")
	}()
	start := time.Now()
	tr, err := netns.Exchange(ctx, c, size, 1)
	el := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, size, size)
	out("\n-- 1. app --TCP--> mptcpd --forward ==MPTCP==> kernel server")
	out("   sent %d MiB each way at once in %v: %.2f Gbit/s total; sha256 match: %t", size>>20, el.Round(time.Millisecond),
		float64(16*size)/el.Seconds()/1e9, !t.Failed())
	out("   kernel server socket TCP_IS_MPTCP=%t; the kernel's view during the transfer (ss -Mni):", s.MPTCP)
	for _, line := range strings.Split(strings.TrimSpace(<-snap), "\n") {
		out("     %s", strings.Join(strings.Fields(line), " "))
	}
	kc := counters(t, topo.B)
	out("   kernel counters: MPCapableSYNRX=%d MPCapableACKRX=%d MPCapableFallbackACK=%d DssFallback=%d",
		kc["MPCapableSYNRX"], kc["MPCapableACKRX"], kc["MPCapableFallbackACK"], kc["DssFallback"])

	// 2. The kernel opens: kernel MPTCP client -> mptcpd --accept -> TCP server.
	served = netns.ServeOne(ctx, target, size, 4)
	kc0 := counters(t, topo.B)
	kcl, err := topo.B.DialMPTCP(ctx, addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	r := <-netns.ExchangeAsync(ctx, kcl, size, 3)
	el = time.Since(start)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	s = <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if r.Sent != netns.StreamDigest(size, 3) || s.Received != r.Sent || s.Sent != netns.StreamDigest(size, 4) || r.Received != s.Sent {
		t.Errorf("accept direction: data differs")
	}
	out("\n-- 2. kernel client ==MPTCP==> mptcpd --accept --TCP--> server")
	out("   sent %d MiB each way at once in %v: %.2f Gbit/s total; sha256 match: %t", size>>20, el.Round(time.Millisecond),
		float64(16*size)/el.Seconds()/1e9, !t.Failed())
	out("   kernel client socket TCP_IS_MPTCP=%t", r.MPTCP)
	kc = counters(t, topo.B)
	out("   kernel counters: MPCapableSYNACKRX=+%d MPCapableFallbackSYNACK=%d DssFallback=%d",
		kc["MPCapableSYNACKRX"]-kc0["MPCapableSYNACKRX"], kc["MPCapableFallbackSYNACK"], kc["DssFallback"])
	if !r.MPTCP || kc["MPCapableSYNACKRX"] == kc0["MPCapableSYNACKRX"] {
		t.Errorf("the kernel did not see MPTCP")
	}
	checkNoFallback(t, kc)
	if !t.Failed() {
		out("\n== MPTCP established in both directions, data intact, no fallback.\n")
	}
}
