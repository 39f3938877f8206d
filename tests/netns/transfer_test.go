package netns_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// role says who runs which end of a transfer: our stack or the kernel's MPTCP.
type role int

const (
	ourClientKernelServer role = iota
	kernelClientOurServer
	oursToOurs
)

func (r role) String() string {
	return [...]string{"ours-to-kernel", "kernel-to-ours", "ours-to-ours"}[r]
}

func (r role) ourClient() bool { return r != kernelClientOurServer }
func (r role) ourServer() bool { return r != ourClientKernelServer }

// transferResult is what a transfer between the two ends produced.
type transferResult struct {
	client, server netns.Transfer
	clientMPTCP    bool
	serverMPTCP    bool
}

// transfer runs one connection from A (client) to B (server) on path 0: the client sends up
// bytes and the server down bytes, both at once, each half-closing when done.
func transfer(t *testing.T, ctx context.Context, topo *netns.Topology, r role, fam netns.Family, up, down int64) transferResult {
	t.Helper()
	p := topo.Path(0)
	var res transferResult
	serverDone := make(chan error, 1)
	var addr string
	if r.ourServer() {
		ln := listenOurs(t, topo.B, p.B.HostPort(fam, 0))
		addr = ln.Addr().String()
		go func() {
			c, err := netns.Accept(ctx, ln)
			if err != nil {
				serverDone <- err
				return
			}
			defer c.Close()
			start := time.Now()
			res.server, err = netns.Exchange(ctx, c, down, 2)
			res.serverMPTCP = control.IsMPTCP(c)
			if in, ok := c.(*control.Conn).Info(); ok && time.Since(start) > 20*time.Second {
				t.Logf("slow: our server connection: %+v", in)
			}
			serverDone <- err
		}()
	} else {
		ln, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		served := netns.ServeOne(ctx, ln, down, 2)
		go func() {
			s := <-served
			res.server, res.serverMPTCP = s.Transfer, s.MPTCP
			serverDone <- s.Err
		}()
	}
	if r.ourClient() {
		c := dialOurs(t, ctx, topo.A, addr)
		var err error
		start := time.Now()
		res.client, err = netns.Exchange(ctx, c, up, 1)
		res.clientMPTCP = control.IsMPTCP(c)
		if in, ok := c.(*control.Conn).Info(); ok && time.Since(start) > 20*time.Second {
			t.Logf("slow: our client connection: %+v", in)
		}
		if in, ok := c.(*control.Conn); ok && err != nil {
			info, _ := in.Info()
			t.Logf("our client connection: %+v", info)
		}
		c.Close()
		if err != nil {
			t.Fatalf("client: %v", err)
		}
	} else {
		c, err := topo.A.DialMPTCP(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		cr := <-netns.ExchangeAsync(ctx, c, up, 1)
		if cr.Err != nil {
			t.Fatalf("client: %v", cr.Err)
		}
		res.client, res.clientMPTCP = cr.Transfer, cr.MPTCP
	}
	if err := <-serverDone; err != nil {
		t.Fatalf("server: %v", err)
	}
	checkDigests(t, res.client, res.server, up, down)
	if !res.clientMPTCP || !res.serverMPTCP {
		t.Errorf("MPTCP: client %t, server %t; want both", res.clientMPTCP, res.serverMPTCP)
	}
	return res
}

// waitKernelClosed waits until no kernel MPTCP socket in ns is still closing (FIN-WAIT,
// CLOSING, LAST-ACK): a DATA_FIN the peer never acknowledged keeps one there, retransmitting.
func waitKernelClosed(t *testing.T, ns *netns.Namespace) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := ns.Run("ss", "-HMan")
		var closing []string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && (strings.HasPrefix(f[1], "FIN-WAIT") || f[1] == "CLOSING" || f[1] == "LAST-ACK") {
				closing = append(closing, line)
			}
		}
		if len(closing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("kernel MPTCP sockets still closing (DATA_FIN not acknowledged?):\n%s", strings.Join(closing, "\n"))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ourCounterDeltas returns how much our stack's counters moved during f.
func ourCounterDeltas(t *testing.T, f func()) map[string]uint64 {
	t.Helper()
	before, err := ourStack(t).Counters()
	if err != nil {
		t.Fatal(err)
	}
	f()
	after, err := ourStack(t).Counters()
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]uint64{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

// checkOurs asserts our datapath never failed to place a mapping.
func checkOurs(t *testing.T, d map[string]uint64) {
	t.Helper()
	for _, name := range []string{"OptionNoSpace", "DSSTxNoMapping", "UnmappedDataRx", "EventLost", "NoState", "DataAckInvalid"} {
		if d[name] != 0 {
			t.Errorf("our %s moved by %d, want 0", name, d[name])
		}
	}
}

// checkKernelPeer asserts the kernel's view of a connection: MP_CAPABLE counted, no fallback,
// its DATA_FIN acknowledged.
func checkKernelPeer(t *testing.T, ns *netns.Namespace, server bool) {
	t.Helper()
	kc := counters(t, ns)
	want := []string{"MPCapableSYNACKRX"}
	if server {
		want = []string{"MPCapableSYNRX", "MPCapableACKRX"}
	}
	for _, name := range want {
		if kc[name] < 1 {
			t.Errorf("kernel %s = %d, want >= 1", name, kc[name])
		}
	}
	checkNoFallback(t, kc)
	waitKernelClosed(t, ns)
}

// TestTransfers is the transfer matrix against the kernel's MPTCP (and ours against ours):
// every role, IPv4 and IPv6, byte-exact with sha256, the kernel's counters asserted.
func TestTransfers(t *testing.T) {
	const big = 1 << 30
	for _, tc := range []struct {
		fam      netns.Family
		up, down int64
	}{
		{netns.IPv4, big, big}, // 1 GiB both directions at once
		{netns.IPv4, big, 0},   // 1 GiB one way
		{netns.IPv6, 64 << 20, 64 << 20},
	} {
		for _, r := range []role{ourClientKernelServer, kernelClientOurServer, oursToOurs} {
			t.Run(fmt.Sprintf("%v/%v/%dMiB-up/%dMiB-down", r, tc.fam, tc.up>>20, tc.down>>20), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
				defer cancel()
				cfg := netns.Config{Paths: 1, IPv6: tc.fam == netns.IPv6}
				if r.ourClient() {
					cfg.A = ourSide
				}
				if r.ourServer() {
					cfg.B = ourSide
				}
				topo := netns.New(t, cfg)
				start := time.Now()
				d := ourCounterDeltas(t, func() { transfer(t, ctx, topo, r, tc.fam, tc.up, tc.down) })
				el := time.Since(start)
				t.Logf("%d MiB in %v (%.2f Gbit/s)", (tc.up+tc.down)>>20, el.Round(time.Millisecond), float64(8*(tc.up+tc.down))/el.Seconds()/1e9)
				checkOurs(t, d)
				if !r.ourServer() {
					checkKernelPeer(t, topo.B, true)
				}
				if !r.ourClient() {
					checkKernelPeer(t, topo.A, false)
				}
				if t.Failed() {
					logNonZero(t, "ours (delta)", d)
				}
			})
		}
	}
}
