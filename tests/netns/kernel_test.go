package netns_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// counters fetches a namespace's MPTcpExt counters or fails the test.
func counters(t testing.TB, ns *netns.Namespace) map[string]uint64 {
	t.Helper()
	c, err := ns.MPTCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// txBytes returns an interface's TxBytes or fails the test.
func txBytes(t testing.TB, e *netns.Iface) uint64 {
	t.Helper()
	s, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s.TxBytes
}

// TestKernelMPTCPTwoPaths proves the harness with the kernel on both sides: an MPTCP
// connection over path 0 that the client's in-kernel path manager extends with a second
// subflow over path 1 (an endpoint bound to its veth), byte-exact in both directions,
// with the client in A and then in B.
func TestKernelMPTCPTwoPaths(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	for _, client := range []netns.Side{netns.SideA, netns.SideB} {
		t.Run("client "+client.String(), func(t *testing.T) {
			testKernelMPTCPTwoPaths(t, client)
		})
	}
}

func testKernelMPTCPTwoPaths(t *testing.T, client netns.Side) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	topo := netns.New(t, netns.Config{Paths: 2, Initiator: client})
	cli, srv := topo.NS(client), topo.NS(client.Other())
	p0, p1 := topo.Path(0), topo.Path(1)
	srv.SetMPTCPLimits(2, 0)
	cli.SetMPTCPLimits(2, 0)
	p1.End(client).AddMPTCPEndpoint(netns.IPv4, "subflow")
	ln, err := srv.ListenMPTCP(p0.End(srv.Side()).HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	const up, down = 64 << 20, 8 << 20
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := cli.DialMPTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tx1 := txBytes(t, p1.End(client))
	upload := netns.ExchangeAsync(ctx, c, up, 1)
	// The client's path manager adds the subflow once data has flowed, and the kernel
	// refuses a join once the connection is closing: the server neither reads nor sends
	// (no DATA_FIN) until the join is complete.
	if err := srv.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
		t.Fatal(err)
	}
	sconn := <-accepted
	if sconn == nil {
		t.FailNow()
	}
	s := <-netns.ExchangeAsync(ctx, sconn, down, 2)
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	tr := <-upload
	if tr.Err != nil {
		t.Fatal(tr.Err)
	}

	if want := netns.StreamDigest(up, 1); tr.Sent != want || s.Received != want {
		t.Errorf("client to server: sent %v, server received %v, want %v", tr.Sent, s.Received, want)
	}
	if want := netns.StreamDigest(down, 2); s.Sent != want || tr.Received != want {
		t.Errorf("server to client: sent %v, client received %v, want %v", s.Sent, tr.Received, want)
	}
	if !tr.MPTCP || !s.MPTCP {
		t.Errorf("TCP_IS_MPTCP: client %t, server %t; want both true", tr.MPTCP, s.MPTCP)
	}
	sc, cc := counters(t, srv), counters(t, cli)
	for _, want := range []struct {
		side string
		c    map[string]uint64
		name string
	}{
		{"server", sc, "MPCapableSYNRX"},
		{"server", sc, "MPCapableACKRX"},
		{"server", sc, "MPJoinSynRx"},
		{"server", sc, "MPJoinAckRx"},
		{"client", cc, "MPCapableSYNACKRX"},
		{"client", cc, "MPJoinSynAckRx"},
	} {
		if want.c[want.name] < 1 {
			t.Errorf("%s %s = %d, want >= 1", want.side, want.name, want.c[want.name])
		}
	}
	for _, name := range []string{"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSNotMatching", "MPJoinAckHMacFailure"} {
		if _, ok := sc[name]; !ok {
			t.Errorf("no MPTcpExt counter %s", name)
		}
		if sc[name] != 0 || cc[name] != 0 {
			t.Errorf("%s: server %d, client %d; want 0", name, sc[name], cc[name])
		}
	}
	share := txBytes(t, p1.End(client)) - tx1
	t.Logf("client sent %d MiB on path 1 (of %d MiB)", share>>20, up>>20)
	if share < 4<<20 {
		t.Errorf("path 1 carried %d bytes from the client, want a real share (>= 4 MiB) of %d", share, up)
	}
}

// TestKernelPlainPeer checks per-namespace sysctls and the plain-TCP helpers: with MPTCP
// disabled in B, a kernel MPTCP client falls back to TCP against B's listener, and a
// plain-TCP client never asks for MPTCP.
func TestKernelPlainPeer(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	topo := netns.New(t, netns.Config{
		IPv6: true,
		B:    netns.NamespaceConfig{Sysctls: map[string]string{"net.mptcp.enabled": "0"}},
	})
	if got := topo.B.Sysctl("net.mptcp.enabled"); got != "0" {
		t.Fatalf("B net.mptcp.enabled = %q, want 0", got)
	}
	if got := topo.A.Sysctl("net.mptcp.enabled"); got != "1" {
		t.Fatalf("A net.mptcp.enabled = %q, want 1", got)
	}
	p := topo.Path(0)
	for _, f := range []netns.Family{netns.IPv4, netns.IPv6} {
		ln, err := topo.B.ListenMPTCP(p.B.HostPort(f, 0)) // falls back: MPTCP is off in B
		if err != nil {
			t.Fatal(err)
		}
		for _, mptcpClient := range []bool{true, false} {
			served := netns.ServeOne(ctx, ln, 1<<20, 7)
			dial := topo.A.DialTCP
			if mptcpClient {
				dial = topo.A.DialMPTCP
			}
			c, err := dial(ctx, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			tr, err := netns.Exchange(ctx, c, 1<<20, 8)
			if err != nil {
				t.Fatal(err)
			}
			m, err := netns.IsMPTCP(c)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			s := <-served
			if s.Err != nil {
				t.Fatal(s.Err)
			}
			if tr.Sent != s.Received || s.Sent != tr.Received || tr.Received != netns.StreamDigest(1<<20, 7) {
				t.Errorf("%v, MPTCP client %t: data mismatch: %+v vs %+v", f, mptcpClient, tr, s.Transfer)
			}
			if m || s.MPTCP {
				t.Errorf("%v, MPTCP client %t: TCP_IS_MPTCP client %t, server %t; want false", f, mptcpClient, m, s.MPTCP)
			}
		}
	}
	cc := counters(t, topo.A)
	if cc["MPCapableSYNTX"] != 2 || cc["MPCapableSYNACKRX"] != 0 {
		t.Errorf("client: MPCapableSYNTX %d (want 2: one per family), MPCapableSYNACKRX %d (want 0)",
			cc["MPCapableSYNTX"], cc["MPCapableSYNACKRX"])
	}
}
