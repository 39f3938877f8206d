package netns_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestDemo is what `make demo` shows: mptcpd in namespace A (where the kernel's MPTCP is
// disabled) carries TCP connections over MPTCP with two subflows, to and from the Linux
// kernel's MPTCP in namespace B, and survives the loss of a path in the middle of a transfer.
//
//	namespace A (mptcpd, net.mptcp.enabled=0)            namespace B (kernel MPTCP)
//	app --TCP--> mptcpd --forward  === path 0, path 1 ===>  kernel MPTCP server
//	TCP server <-- mptcpd --accept <=== path 0, path 1 ===  kernel MPTCP client
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 180*time.Second)
	defer cancel()
	out := func(format string, a ...any) { fmt.Fprintf(os.Stdout, format+"\n", a...) }
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	const rate = 200e6
	out("\n== mptcpgo demo: mptcpd (namespace %s) and the Linux kernel's MPTCP (namespace %s)", topo.A.Name(), topo.B.Name())
	for i := range 2 {
		p := topo.Path(i)
		p.SetTBF(netns.TBF{Rate: rate, Latency: 20 * time.Millisecond})
		out("   path %d: %s %s <-> %s %s, %d Mbit/s each way", i, p.A.Name, p.A.Addr(netns.IPv4), p.B.Name, p.B.Addr(netns.IPv4), int(rate/1e6))
	}
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 2)

	kernSrv, err := topo.B.ListenMPTCP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, kport, _ := net.SplitHostPort(kernSrv.Addr().String())
	kernAddr := net.JoinHostPort(p0.B.Addr(netns.IPv4).String(), kport)
	target, err := topo.A.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--forward", "127.0.0.1:0=" + kernAddr,
		"--accept", "0.0.0.0:0=" + target.Addr().String(),
		"--endpoint", p1.A.Addr(netns.IPv4).String() + ",subflow,signal",
		"--limits", "subflows=2,add-addr-accepted=2",
	}
	_, addrs := startMptcpd(t, ctx, topo.A, args...)
	out("   mptcpd %s", strings.Join(args, " "))
	out("   (the forward listener is %s, the accept listener %s)", addrs[0], addrs[1])

	// paths reports what each path carried each way since base.
	type tally [2][2]uint64 // [path][0: A->B, 1: B->A]
	read := func() (x tally) {
		for i := range 2 {
			x[i][0] = txBytes(t, topo.Path(i).A)
			x[i][1] = txBytes(t, topo.Path(i).B)
		}
		return x
	}
	show := func(label string, base, now tally) {
		out("   %-8s path 0: %4d MiB A->B %4d MiB B->A | path 1: %4d MiB A->B %4d MiB B->A", label,
			(now[0][0]-base[0][0])>>20, (now[0][1]-base[0][1])>>20, (now[1][0]-base[1][0])>>20, (now[1][1]-base[1][1])>>20)
	}

	const size = 96 << 20

	// 1. The kernel opens, with a subflow endpoint of its own on path 1.
	_, aport, _ := net.SplitHostPort(addrs[1])
	acceptAddr := net.JoinHostPort(p0.A.Addr(netns.IPv4).String(), aport)
	out("\n-- 1. kernel client ==MPTCP==> mptcpd --accept %s --TCP--> server: %d MiB each way; mptcpd announces %s (ADD_ADDR) and the kernel joins it",
		acceptAddr, size>>20, p1.A.Addr(netns.IPv4))
	served := netns.ServeOne(ctx, target, size, 4)
	kc0 := counters(t, topo.B)
	kcl, err := topo.B.DialMPTCP(ctx, acceptAddr)
	if err != nil {
		t.Fatal(err)
	}
	base := read()
	start := time.Now()
	r := <-netns.ExchangeAsync(ctx, kcl, size, 3)
	el := time.Since(start)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	match := r.Sent == netns.StreamDigest(size, 3) && s.Received == r.Sent && s.Sent == netns.StreamDigest(size, 4) && r.Received == s.Sent
	if !match {
		t.Errorf("accept direction: data differs")
	}
	now := read()
	show("total", base, now)
	out("   done in %v: %.0f Mbit/s each way over two %d Mbit/s paths; sha256 match both ways: %t",
		el.Round(time.Millisecond), float64(8*size)/el.Seconds()/1e6, int(rate/1e6), match)
	kc := counters(t, topo.B)
	out("   kernel client socket TCP_IS_MPTCP=%t; kernel counters: MPCapableSYNACKRX=+%d AddAddr=+%d EchoAddTx=+%d MPJoinSynAckRx=+%d MPJoinSynAckHMacFailure=%d DssFallback=%d",
		r.MPTCP, kc["MPCapableSYNACKRX"]-kc0["MPCapableSYNACKRX"], kc["AddAddr"]-kc0["AddAddr"], kc["EchoAddTx"]-kc0["EchoAddTx"],
		kc["MPJoinSynAckRx"]-kc0["MPJoinSynAckRx"], kc["MPJoinSynAckHMacFailure"], kc["DssFallback"])
	if !r.MPTCP || kc["MPJoinSynAckRx"] == kc0["MPJoinSynAckRx"] {
		t.Errorf("the kernel client did not join a second subflow")
		logNonZero(t, "B kernel", kc)
	}
	if now[1][1]-base[1][1] < size/8 {
		t.Errorf("path 1 carried %d bytes of the kernel client's upload, want a share", now[1][1]-base[1][1])
	}
	checkNoFallback(t, kc)
	// 2. Our side opens: app -> mptcpd --forward -> kernel MPTCP server, and path 0 fails.
	out("\n-- 2. app --TCP--> mptcpd --forward ==MPTCP==> kernel server: %d MiB each way; path 0 fails on the way", size>>20)
	served = netns.ServeOne(ctx, kernSrv, size, 2)
	c, err := topo.A.DialTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	g := &gapConn{Conn: c}
	base = read()
	start = time.Now()
	done := make(chan struct{})
	var tr netns.Transfer
	var xerr error
	go func() {
		defer close(done)
		tr, xerr = netns.Exchange(ctx, g, size, 1)
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	failed := false
	var ssView string
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			now := read()
			show(fmt.Sprintf("%.1fs", time.Since(start).Seconds()), base, now)
			if !failed && time.Since(start) >= 1500*time.Millisecond {
				ssView = topo.B.Run("ss", "-Mni")
				p0.Down()
				failed = true
				out("   %.1fs    !! path 0 down (both ends): the transfer continues on path 1", time.Since(start).Seconds())
			}
		}
	}
	tick.Stop()
	el = time.Since(start)
	if xerr != nil {
		t.Fatal(xerr)
	}
	s = <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, size, size)
	match = tr.Sent == netns.StreamDigest(size, 1) && s.Received == tr.Sent && s.Sent == netns.StreamDigest(size, 2) && tr.Received == s.Sent
	show("total", base, read())
	out("   done in %v, sha256 match both ways: %t; longest pause in what the app received: %v",
		el.Round(time.Millisecond), match, g.maxGap.Round(time.Millisecond))
	out("   kernel server socket TCP_IS_MPTCP=%t; the kernel's view before the failure (ss -Mni):", s.MPTCP)
	for _, line := range strings.Split(strings.TrimSpace(ssView), "\n") {
		out("     %s", strings.Join(strings.Fields(line), " "))
	}
	if !failed {
		t.Errorf("the transfer ended after %v, before path 0 went down: no failure was survived", el.Round(time.Millisecond))
	}
	if !s.MPTCP {
		t.Errorf("the kernel server's socket is not MPTCP (TCP_IS_MPTCP false): the connection fell back")
	}
	kc = counters(t, topo.B)
	out("   kernel counters: MPCapableSYNRX=%d MPJoinSynRx=%d MPJoinAckRx=%d MPJoinAckHMacFailure=%d DssFallback=%d",
		kc["MPCapableSYNRX"], kc["MPJoinSynRx"], kc["MPJoinAckRx"], kc["MPJoinAckHMacFailure"], kc["DssFallback"])
	if kc["MPJoinAckRx"] < 1 || kc["MPJoinAckHMacFailure"] != 0 {
		t.Errorf("the kernel did not count our join")
	}
	if !t.Failed() {
		out("\n== MPTCP with two subflows in both directions, a path failure survived, data intact, no fallback.\n")
	}
}
