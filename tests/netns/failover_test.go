package netns_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Failover, backup paths and restoration, in every pairing. A path "fails" by going down at
// both ends (the veth pair loses its carrier): neither side can send through it, and each sees
// its link down.

// waitMoved waits until side s sent n bytes over its first paths since base.
func (r *rig) waitMoved(s netns.Side, paths int, base uint64, n uint64) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.sent(s, paths)-base < n {
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			r.t.Fatalf("side %v sent %d bytes, waiting for %d", s, r.sent(s, paths)-base, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leftToSend is what remains of an n-byte transfer of which a side put sent bytes on its links
// (headers included: less than the payload still to come).
func leftToSend(n int64, sent uint64) uint64 {
	return uint64(n) - min(uint64(n), sent)
}

// wantCarriedRest checks that path 1 carried, after path 0 failed, at least half of what each
// side still had to send then (left*), and logs it.
func wantCarriedRest(t *testing.T, what string, up, down, leftA, leftB uint64) {
	t.Helper()
	t.Logf("after the failure %s carried %d MiB up, %d MiB down (of at least %d and %d MiB left)", what, up>>20, down>>20, leftA>>20, leftB>>20)
	if leftA+leftB < 16<<20 {
		t.Errorf("less than 16 MiB was left to send when path 0 failed: the failure came too late to test anything")
	}
	if up < leftA/2 || down < leftB/2 {
		t.Errorf("%s carried %d bytes up and %d down after the failure, with %d and %d left: the rest of the transfer should have", what, up, down, leftA, leftB)
	}
}

// sent is what side s sent over the first n paths.
func (r *rig) sent(s netns.Side, n int) uint64 {
	var t uint64
	for i := range n {
		t += r.linkTx(s, i)
	}
	return t
}

// TestMultipathFailover: the path of the initial subflow goes down in the middle of a transfer
// each way (1 GiB over IPv4, 256 MiB over IPv6). The connection carries on over the second
// path, the data arrives intact, and the longest receive gap on each side is logged (make bench
// compares it with the kernel's).
func TestMultipathFailover(t *testing.T) {
	forFamilySizes(t, 1<<30, 256<<20, func(t *testing.T, fam netns.Family, n int64) {
		forPairings(t, func(t *testing.T, p pairing) {
			r := newRig(t, caseCtx(t, 120*time.Second), p, rigConfig{paths: 2, fam: fam})
			secondPath(r)
			r.connect()
			r.waitSubflows(A, 2)
			r.waitSubflows(B, 2)
			baseA, baseB := r.sent(A, 2), r.sent(B, 2)
			x := r.start(n, n)
			r.waitMoved(A, 2, baseA, uint64(n/4))
			r.waitMoved(B, 2, baseB, uint64(n/4))
			txA, txB := r.linkTx(A, 1), r.linkTx(B, 1)
			leftA, leftB := leftToSend(n, r.sent(A, 2)-baseA), leftToSend(n, r.sent(B, 2)-baseB)
			r.topo.Path(0).Down()
			cliGap, srvGap := x.wait()
			wantCarriedRest(t, "path 1", r.linkTx(A, 1)-txA, r.linkTx(B, 1)-txB, leftA, leftB)
			t.Logf("longest receive gap: server %v, client %v", srvGap.Round(time.Millisecond), cliGap.Round(time.Millisecond))
			r.checkHealthy()
		})
	})
}

// TestMultipathBackup: the second path is a backup (512 MiB each way over IPv4, 128 MiB over
// IPv6). It carries no data while the first works; when the first goes down the transfer moves
// onto it and completes. Over IPv4 the backup is the client's subflow endpoint; over IPv6 the
// server's announced address (an IPv6 address goes with its link, see secondPath), a signal
// endpoint with the backup flag: the kernel's server sets B in its MP_JOIN SYN/ACK, ours sends
// MP_PRIO.
func TestMultipathBackup(t *testing.T) {
	forFamilySizes(t, 512<<20, 128<<20, func(t *testing.T, fam netns.Family, n int64) {
		forPairings(t, func(t *testing.T, p pairing) {
			r := newRig(t, caseCtx(t, 120*time.Second), p, rigConfig{paths: 2, fam: fam})
			secondPath(r, "backup")
			r.connect()
			r.waitSubflows(A, 2)
			r.waitSubflows(B, 2)
			txA, txB := r.linkTx(A, 1), r.linkTx(B, 1)
			baseA, baseB := r.sent(A, 1), r.sent(B, 1)
			x := r.start(n, n)
			r.waitMoved(A, 1, baseA, uint64(n/4))
			r.waitMoved(B, 1, baseB, uint64(n/4))
			if a, b := r.linkTx(A, 1)-txA, r.linkTx(B, 1)-txB; a > 1<<20 || b > 1<<20 {
				t.Errorf("while path 0 worked the backup path carried %d bytes up and %d down: want none of the data", a, b)
			}
			txA, txB = r.linkTx(A, 1), r.linkTx(B, 1)
			leftA, leftB := leftToSend(n, r.sent(A, 1)-baseA), leftToSend(n, r.sent(B, 1)-baseB)
			r.topo.Path(0).Down()
			cliGap, srvGap := x.wait()
			wantCarriedRest(t, "the backup path", r.linkTx(A, 1)-txA, r.linkTx(B, 1)-txB, leftA, leftB)
			t.Logf("longest receive gap: server %v, client %v", srvGap.Round(time.Millisecond), cliGap.Round(time.Millisecond))
			r.checkHealthy()
		})
	})
}

// TestMultipathRestoration: the second path goes down and comes back, over both families; our
// client opens a new subflow over it (the kernel's path manager does not: upstream
// mptcp_net-next issue #440), and it carries data again.
func TestMultipathRestoration(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		for _, p := range []pairing{{oursImpl, kernelImpl}, {oursImpl, oursImpl}} {
			t.Run(p.String(), func(t *testing.T) {
				r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: fam})
				r.endpoint(A, 1, fam, "subflow")
				r.connect()
				r.waitSubflows(A, 2)
				r.waitSubflows(B, 2)
				r.topo.Path(1).Down()
				// Our client sees its link down: REMOVE_ADDR on the first path, and the subflow closes.
				r.waitSubflows(A, 1)
				r.waitSubflows(B, 1)
				r.wantDelta(B, "RmAddr", 1)
				r.topo.Path(1).Up()
				r.waitSubflows(A, 2)
				r.waitSubflows(B, 2)
				r.wantDelta(B, "MPJoinAckRx", 2)
				// Both paths at 200 Mbit/s: unshaped, 64 MiB took a few tens of milliseconds,
				// too few for the new subflow to open its window beside the old one's, and
				// its share was left to chance (once 0.8 MiB of 64).
				for i := range 2 {
					r.topo.Path(i).SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
				}
				tx := r.linkTx(A, 1)
				r.start(64<<20, 64<<20).wait()
				if d := r.linkTx(A, 1) - tx; d < 4<<20 {
					t.Errorf("the restored path carried %d bytes up, want a share", d)
					r.logConns("after the transfer, ")
					logNonZero(t, r.side(A), r.counters(A))
				}
				r.checkHealthy()
			})
		}
	})
}

// secondPath sets up the second path for a failover of path 0: over IPv4 the client's subflow
// endpoint (its subflow reaches the server's path-0 address, which IPv4 keeps while that link
// is down); over IPv6, where an address goes with its link, the server announces its path-1
// address and the client joins that. flags are added to the endpoint.
func secondPath(r *rig, flags ...string) {
	if r.fam == netns.IPv6 {
		r.endpoint(B, 1, r.fam, append([]string{"signal"}, flags...)...)
		return
	}
	r.endpoint(A, 1, r.fam, append([]string{"subflow"}, flags...)...)
}

// forFamilySizes runs f as a subtest per address family, with the transfer size v4 or v6.
func forFamilySizes(t *testing.T, v4, v6 int64, f func(t *testing.T, fam netns.Family, n int64)) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		n := v4
		if fam == netns.IPv6 {
			n = v6
		}
		f(t, fam, scaledSize(n))
	})
}

// scaleEnv divides the transfer sizes of the tests that use scaledSize: tests/kernels sets it
// in its guests, where emulation moves tens of MB/s rather than Gbit/s.
const scaleEnv = "MPTCPGO_TEST_SCALE"

// scaledSize returns n divided by MPTCPGO_TEST_SCALE (when set), at least 16 MiB.
func scaledSize(n int64) int64 {
	d, err := strconv.Atoi(os.Getenv(scaleEnv))
	if err != nil || d <= 1 {
		return n
	}
	return max(n/int64(d), min(n, 16<<20))
}

// TestMultipathSilentFailover: the path of the initial subflow starts dropping every packet in
// the middle of a transfer, both ways, with no link event (a path that went silent, as when a
// phone walks out of Wi-Fi range): only the transport can notice. Ours, as client and as server
// of the kernel, finds the subflow stale and sends its data again on the second path; the
// transfer completes byte-exact within a bound, and the second path carried the rest.
func TestMultipathSilentFailover(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			for _, p := range []pairing{{oursImpl, kernelImpl}, {kernelImpl, oursImpl}} {
				t.Run(p.String(), func(t *testing.T) { testSilentFailover(t, p, fam) })
			}
		})
	}
}

func testSilentFailover(t *testing.T, p pairing, fam netns.Family) {
	r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: fam})
	r.endpoint(A, 1, fam, "subflow")
	// Droppers on both ends of path 0, passing everything until the path goes silent.
	p0 := r.topo.Path(0)
	silent := []*netns.Loss{p0.A.SetLoss(0), p0.B.SetLoss(0)}
	// Rate-limited paths, so that both directions are still under way when path 0 goes silent.
	for i := range 2 {
		r.topo.Path(i).SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
	}
	// Asked to keep captures (to study a failure that comes now and then): both paths, at the
	// server's end.
	stopCaptures := func() {}
	if os.Getenv("MPTCPGO_KEEP_CAPTURE") != "" {
		_, s0 := capture(t, r.ctx, p0.B)
		_, s1 := capture(t, r.ctx, r.topo.Path(1).B)
		stopCaptures = func() { s0(); s1() }
	}
	r.connect()
	r.waitSubflows(A, 2)
	r.waitSubflows(B, 2)
	ours := A
	if p.server == oursImpl {
		ours = B
	}
	const n = 64 << 20
	baseA, baseB := r.sent(A, 2), r.sent(B, 2)
	x := r.start(n, n)
	// Silent once our side has sent a quarter: what it sends is under way, whatever the other
	// direction has done by then (it may be further, or done).
	r.waitMoved(ours, 2, map[netns.Side]uint64{A: baseA, B: baseB}[ours], n/4)
	movedA, movedB := r.sent(A, 2)-baseA, r.sent(B, 2)-baseB
	leftA, leftB := leftToSend(n, movedA), leftToSend(n, movedB)
	txA, txB := r.linkTx(A, 1), r.linkTx(B, 1)
	for _, lo := range silent {
		if err := lo.SetRate(1); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	cliGap, srvGap := x.wait()
	took := time.Since(cut)
	stopCaptures()
	up, down := r.linkTx(A, 1)-txA, r.linkTx(B, 1)-txB
	t.Logf("path 0 silent after %d MiB up, %d MiB down; the rest took %v, path 1 then carried %d MiB up, %d MiB down; longest receive gap: server %v, client %v",
		movedA>>20, movedB>>20, took.Round(time.Millisecond), up>>20, down>>20, srvGap.Round(time.Millisecond), cliGap.Round(time.Millisecond))
	for _, lo := range silent {
		if _, dropped, err := lo.Stats(); err != nil || dropped == 0 {
			t.Errorf("path 0 dropped %d packets (%v): it never went silent", dropped, err)
		}
	}
	// Ours notices within about a second (stale: no acknowledgment for max(250 ms, 3 RTT)); the
	// kernel, by its retransmission timeouts (net.mptcp.stale_loss_cnt, 4 by default).
	if limit := 10 * time.Second; took > limit {
		t.Errorf("the transfer took %v after path 0 went silent, want under %v", took, limit)
	}
	wantCarriedRest(t, "path 1", up, down, leftA, leftB)
	// The silent subflow still holds what it sent before the silence when the connection
	// closes (all of it DATA_ACKed by way of path 1): ours resets it rather than let the kernel
	// send those bytes on after close(), without the DSS its datapath state carried.
	r.cli.Close()
	r.srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for d, _ := r.moved(ours, "SubflowCloseReset"); d == 0 && time.Now().Before(deadline); d, _ = r.moved(ours, "SubflowCloseReset") {
		time.Sleep(50 * time.Millisecond)
	}
	r.wantDelta(ours, "SubflowCloseReset", 1)
	r.wantDelta(ours, "SubflowStale", 1)
	r.wantDelta(ours, "ReinjectedBytes", 1)
	r.logNonZeroDelta(ours, "DataRetransmit", "SubflowLossy")
	r.logNonZeroDelta(ours.Other(), "SubflowStale", "SubflowRecover", "MPTCPRetrans")
	r.checkHealthy()
}
