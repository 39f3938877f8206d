package netns_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestOurCongestionControl: every subflow of ours (the first and a join) runs the datapath's own
// congestion control, the struct_ops one that sends ACKs on demand (either twin: an ACK on
// demand switches a socket to the other), and the kernel peer's sockets keep the namespace's
// default.
func TestOurCongestionControl(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	twins := ourStack(t).Datapath().CongestionControls()
	ours := twins[0]
	topo, served, c := ourClientTwoPaths(t, ctx, 1e9, "", 1<<20)
	defer c.Close()
	// Both subflows are up (the kernel counted the join); look at them before the exchange ends.
	kernelCC := strings.TrimSpace(topo.B.Sysctl("net.ipv4.tcp_congestion_control"))
	if kernelCC == ours {
		t.Fatalf("the kernel's default %q is ours: the check could not tell them apart", kernelCC)
	}
	check := func(side string, out, want string, n int) {
		t.Helper()
		var algos []string
		for line := range strings.Lines(out) {
			for _, f := range strings.Fields(line) {
				switch f {
				case twins[0], twins[1]:
					algos = append(algos, ours)
				case kernelCC:
					algos = append(algos, f)
				}
			}
		}
		if len(algos) < n {
			t.Fatalf("%s: %d sockets with a known algorithm, want %d:\n%s", side, len(algos), n, out)
		}
		for _, a := range algos {
			if a != want {
				t.Errorf("%s: a socket runs %s, want %s:\n%s", side, a, want, out)
			}
		}
	}
	// ss -i prints the algorithm's name among a socket's details; two established subflows.
	check("ours (A)", topo.A.Run("ss", "-Htni", "state", "established"), ours, 2)
	check("kernel (B)", topo.B.Run("ss", "-Htni", "state", "established"), kernelCC, 2)
	// And the connection works: 1 MiB each way, byte-exact.
	tr, err := netns.Exchange(ctx, c, 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, 1<<20, 1<<20)
}
