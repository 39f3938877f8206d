package netns_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMptcpdSignalBoundListener: mptcpd --accept bound to path 0's address with a signal
// endpoint on path 1's address (the issue's `--accept 10.0.0.2:5201=... --endpoint
// 10.0.1.2,signal`). The kernel client joins the announced address and both paths carry data,
// byte-exact. Deleting the endpoint with mptcpctl closes its join socket; adding it back with
// its own port opens one there, which the next connection joins.
//
//	namespace A (kernel MPTCP client)      namespace B (mptcpd --accept, mptcpctl)
//	        path 0 10.0.0.1 ====== 10.0.0.2  the listener
//	        path 1 10.1.0.1 ====== 10.1.0.2  signal endpoint: joins at the listener's port, then 6000
func TestMptcpdSignalBoundListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.A.SetMPTCPLimits(1, 1) // ip mptcp limits set add_addr_accepted 1 subflows 1
	for _, p := range []*netns.Path{p0, p1} {
		p.SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
	}
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock,
		"--accept", p0.B.HostPort(netns.IPv4, 0)+"="+target.Addr().String(),
		"--endpoint", p1.B.V4.String()+",signal,id=7")
	_, port, _ := net.SplitHostPort(addrs[0])

	// connect relays one connection from the kernel client, waits for its join (the kernel's
	// MPJoinSynAckRx reaching want), and exchanges n bytes each way.
	connect := func(want uint64, n int64) {
		t.Helper()
		served := netns.ServeOne(ctx, target, n, 2)
		kc, err := topo.A.DialMPTCP(ctx, addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := topo.A.WaitMPTCPCounter(ctx, "MPJoinSynAckRx", want); err != nil {
			logNonZero(t, "kernel", counters(t, topo.A))
			t.Fatalf("the kernel did not join the announced address: %v", err)
		}
		txA, txB := txBytes(t, p1.A), txBytes(t, p1.B)
		r := <-netns.ExchangeAsync(ctx, kc, n, 1)
		s := <-served
		if r.Err != nil || s.Err != nil {
			t.Fatalf("client: %v; relay target: %v", r.Err, s.Err)
		}
		checkDigests(t, r.Transfer, s.Transfer, n, n)
		if !r.MPTCP {
			t.Error("the kernel client's connection is not MPTCP")
		}
		a, b := txBytes(t, p1.A)-txA, txBytes(t, p1.B)-txB
		t.Logf("path 1 carried %d MiB up, %d MiB down", a>>20, b>>20)
		if a < uint64(n/8) || b < uint64(n/8) {
			t.Errorf("path 1 carried %d bytes up, %d down: want a share of each", a, b)
		}
	}
	connect(1, 32<<20)
	var st map[string]uint64
	ctlJSON(t, sock, &st, "stats")
	if st["Joins"] < 1 || st["MPJoinAckRx"] < 1 || st["JoinRefused"] != 0 || st["MPCapableEndpAttempt"] != 0 {
		t.Errorf("stats: Joins %d, MPJoinAckRx %d (want >= 1), JoinRefused %d, MPCapableEndpAttempt %d (want 0)",
			st["Joins"], st["MPJoinAckRx"], st["JoinRefused"], st["MPCapableEndpAttempt"])
	}

	// Deleted: nothing listens at the address any more.
	ctlCmd(t, sock, "endpoint", "delete", "id", "7")
	joinAt := net.JoinHostPort(p1.B.V4.String(), port)
	if c, err := topo.A.DialTCP(ctx, joinAt); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("connect to %s after the endpoint's deletion: %v, want connection refused", joinAt, err)
	}

	// Added back with a port of its own: announced with it, and joined there.
	const epPort = 6000
	ctlCmd(t, sock, "endpoint", "add", p1.B.V4.String(), "id", "7", "port", strconv.Itoa(epPort), "signal")
	connect(2, 8<<20)
	kc := counters(t, topo.A)
	checkNoFallback(t, kc)
	for _, name := range []string{"MPJoinSynAckHMacFailure", "MPJoinAckHMacFailure"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	if kc["MPJoinPortSynAckRx"] < 1 {
		t.Errorf("kernel MPJoinPortSynAckRx = %d, want >= 1 (the join to port %d)", kc["MPJoinPortSynAckRx"], epPort)
	}
}
