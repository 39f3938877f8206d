package netns_test

import (
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestJoinSlowHandshake: our client's join completes its handshake over a path that takes a
// second for a round trip then (as when a SYN waits for a neighbour to be resolved on a link
// just up, or for a cellular radio to wake), and the path is fast from then on. TCP's smoothed
// RTT keeps that second for many round trips; the scheduler, which compares the RTT of
// acknowledged data alone, gives the join the data that measures its path, and the join carries
// a share of a transfer that fills the other path.
func TestJoinSlowHandshake(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		for _, p := range []pairing{{oursImpl, kernelImpl}, {oursImpl, oursImpl}} {
			t.Run(p.String(), func(t *testing.T) {
				r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: fam})
				// Both paths at 200 Mbit/s (shapeForShares): a short queue, so that the initial
				// subflow nearly always has room, and only the scheduler's choice gives the join data.
				shapeForShares(r.topo.Path(0), r.topo.Path(1))
				slow := r.topo.Path(1).Emulate(emu.Config{Delay: 500 * time.Millisecond})
				r.connect()
				// The initial subflow's window opens first, as on a connection that has been
				// carrying data for a while, and stays open while the join comes (no slow start
				// after idle): from then on it nearly always has room.
				r.topo.A.SetSysctl("net.ipv4.tcp_slow_start_after_idle", "0")
				pump(t, r.cli, r.srv, 32<<20, 1)
				start := time.Now()
				r.endpoint(A, 1, fam, "subflow")
				r.waitSubflows(A, 2)
				r.waitSubflows(B, 2)
				t.Logf("the join took %v", time.Since(start).Round(time.Millisecond))
				if err := slow.Set(emu.Config{}); err != nil {
					t.Fatal(err)
				}
				var handshake time.Duration
				if oc, ok := r.conn(A).(*control.Conn); ok {
					if in, ok := oc.Info(); ok && len(in.Subflows) == 2 {
						handshake = in.Subflows[1].SRTT
					}
				}
				if handshake < 500*time.Millisecond {
					t.Fatalf("the join's smoothed RTT after its handshake is %v: the handshake was not slow", handshake)
				}
				tx := r.linkTx(A, 1)
				r.start(64<<20, 64<<20).wait()
				if d := r.linkTx(A, 1) - tx; d < 4<<20 {
					t.Errorf("the join carried %d bytes of 64 MiB up, want a share", d)
				}
				r.logConns("after the transfer, ")
				r.checkHealthy()
			})
		}
	})
}
