package netns_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The multipath cases run in every pairing (ours to the kernel, the kernel to ours, ours to
// ours); each checks the bytes end to end, the counters of both sides, and what the paths
// carried.

const (
	A = netns.SideA
	B = netns.SideB
)

func forPairings(t *testing.T, f func(t *testing.T, p pairing)) {
	for _, p := range pairings {
		t.Run(p.String(), func(t *testing.T) { f(t, p) })
	}
}

func caseCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestMultipathJoin: the client opens a subflow over every extra path (subflow endpoints);
// every path carries a share of the data both ways.
func TestMultipathJoin(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		for _, paths := range []int{2, 3} {
			if fam == netns.IPv6 && paths == 3 {
				continue
			}
			t.Run(fmt.Sprintf("%v/%dpaths", fam, paths), func(t *testing.T) {
				forPairings(t, func(t *testing.T, p pairing) {
					r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: paths, fam: fam})
					for i := 1; i < paths; i++ {
						r.endpoint(A, i, fam, "subflow")
					}
					// Rate-limited paths: each has to carry its share (unshaped veths are
					// so fast that one path can carry everything).
					for i := range paths {
						r.topo.Path(i).SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
					}
					r.connect()
					r.waitSubflows(A, paths)
					r.waitSubflows(B, paths)
					const up, down = 32 << 20, 32 << 20
					var txA, txB []uint64
					for i := range paths {
						txA, txB = append(txA, r.linkTx(A, i)), append(txB, r.linkTx(B, i))
					}
					r.start(up, down).wait()
					for i := range paths {
						a, b := r.linkTx(A, i)-txA[i], r.linkTx(B, i)-txB[i]
						t.Logf("path %d carried %d MiB up, %d MiB down", i, a>>20, b>>20)
						if min(a, b) < uint64(up/(4*paths)) {
							t.Errorf("path %d carried %d bytes up, %d down: want a share of each", i, a, b)
						}
					}
					r.wantDelta(B, "MPJoinSynRx", uint64(paths-1))
					r.wantDelta(B, "MPJoinAckRx", uint64(paths-1))
					r.wantDelta(A, "MPJoinSynAckRx", uint64(paths-1))
					r.checkHealthy()
				})
			})
		}
	}
}

// TestMultipathSignal: the server announces its extra addresses (signal endpoints, ADD_ADDR
// with HMAC); the client checks them, echoes them and joins them.
func TestMultipathSignal(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			forPairings(t, func(t *testing.T, p pairing) {
				const paths = 3
				r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: paths, fam: fam})
				for i := 1; i < paths; i++ {
					r.endpoint(B, i, fam, "signal")
				}
				r.connect()
				r.waitSubflows(A, paths)
				r.waitSubflows(B, paths)
				r.start(32<<20, 32<<20).wait()
				r.wantDelta(B, "AddAddrTx", paths-1)
				r.wantDelta(B, "EchoAdd", paths-1)
				r.wantDelta(A, "AddAddr", paths-1)
				r.wantDelta(A, "EchoAddTx", paths-1)
				r.wantDelta(B, "MPJoinAckRx", paths-1)
				r.checkHealthy()
			})
		})
	}
}

// TestMultipathMixedFamily: the server announces an IPv6 address on an IPv4 connection, and
// the client joins it over IPv6. The kernel as client cannot (its IPv4 socket takes IPv4
// subflows only), so the client is ours.
func TestMultipathMixedFamily(t *testing.T) {
	for _, p := range []pairing{{oursImpl, kernelImpl}, {oursImpl, oursImpl}} {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: netns.IPv4, ipv6: true})
			r.endpoint(B, 1, netns.IPv6, "signal")
			for i := range 2 {
				r.topo.Path(i).SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
			}
			r.connect()
			r.waitSubflows(A, 2)
			r.waitSubflows(B, 2)
			tx := r.linkTx(A, 1)
			r.start(64<<20, 64<<20).wait()
			if d := r.linkTx(A, 1) - tx; d < 4<<20 {
				t.Errorf("the IPv6 path carried %d bytes up, want a share", d)
			}
			r.wantDelta(A, "AddAddr", 1)
			r.wantDelta(B, "MPJoinAckRx", 1)
			r.checkHealthy()
			t.Logf("%s", r.topo.A.Run("ss", "-tin"))
		})
	}
}

// TestMultipathRemoveAddr: REMOVE_ADDR both ways, in the middle of a transfer, over both
// families. The client removes a subflow endpoint, or the server withdraws an announced address:
// the peer counts the REMOVE_ADDR, the subflows over it close on both sides, and the data
// arrives intact.
func TestMultipathRemoveAddr(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		for _, by := range []netns.Side{A, B} {
			name := map[netns.Side]string{A: "by-client", B: "by-server"}[by]
			t.Run(name, func(t *testing.T) {
				forPairings(t, func(t *testing.T, p pairing) {
					r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: fam})
					if by == A {
						r.endpoint(A, 1, fam, "subflow")
					} else {
						r.endpoint(B, 1, fam, "signal")
					}
					r.connect()
					r.waitSubflows(A, 2)
					r.waitSubflows(B, 2)
					// The kernel can lose its own REMOVE_ADDR: the option is taken off the
					// connection when it is first laid out, and tcp_current_mss lays out a
					// header with no packet (mptcp_established_options with no skb) whenever
					// it sizes a segment. In the middle of a transfer that can happen between
					// the signal and the ACK meant to carry it, and the kernel counts it sent
					// (RmAddrTx) though it never left. Where the kernel sends it, the
					// receiver's paths are captured, and a REMOVE_ADDR our side did not count
					// is a failure only if it is on the wire.
					var caps []func() string
					if r.impl(by) == kernelImpl {
						for i := range 2 {
							file, stop := capture(t, r.ctx, r.iface(by.Other(), i))
							caps = append(caps, func() string { stop(); return file })
						}
					}
					x := r.start(scaledSize(256<<20), scaledSize(256<<20))
					time.Sleep(100 * time.Millisecond)
					r.deleteEndpoint(by, 1)
					r.waitSubflows(A, 1)
					r.waitSubflows(B, 1)
					x.wait()
					r.wantDelta(by, "RmAddrTx", 1)
					if caps != nil && r.delta(by.Other(), "RmAddr") == 0 {
						var seen int
						for _, c := range caps {
							frames, err := netns.DissectTCP(c(), "tcp.options.mptcp.subtype == 4")
							if err != nil {
								t.Fatal(err)
							}
							seen += len(frames)
						}
						if seen > 0 {
							t.Errorf("%s: RmAddr +0 with %d REMOVE_ADDR(s) on the wire", r.side(by.Other()), seen)
						} else {
							t.Logf("the kernel counted its REMOVE_ADDR sent, but none crossed the wire (see above)")
						}
					} else {
						r.wantDelta(by.Other(), "RmAddr", 1)
					}
					r.checkHealthy()
				})
			})
		}
	})
}

// TestMultipathPrio: MP_PRIO both ways, over both families. One side marks the second path's
// endpoint backup: it sends MP_PRIO, the peer counts it, and then neither side sends data on
// that path while the first one works.
func TestMultipathPrio(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		for _, by := range []netns.Side{A, B} {
			name := map[netns.Side]string{A: "by-client", B: "by-server"}[by]
			t.Run(name, func(t *testing.T) {
				forPairings(t, func(t *testing.T, p pairing) {
					r := newRig(t, caseCtx(t, 60*time.Second), p, rigConfig{paths: 2, fam: fam})
					if by == A {
						r.endpoint(A, 1, fam, "subflow")
					} else {
						r.endpoint(B, 1, fam, "signal")
					}
					r.connect()
					r.waitSubflows(A, 2)
					r.waitSubflows(B, 2)
					r.setBackup(by, 1, true)
					if err := waitDelta(r, by.Other(), "MPPrioRx", 1); err != nil {
						r.logState()
						r.logInfo()
						t.Fatal(err)
					}
					r.wantDelta(by, "MPPrioTx", 1)
					const n = 64 << 20
					txA, txB := r.linkTx(A, 1), r.linkTx(B, 1)
					r.start(scaledSize(n), scaledSize(n)).wait()
					a, b := r.linkTx(A, 1)-txA, r.linkTx(B, 1)-txB
					t.Logf("backup path carried %d bytes up, %d down, of %d MiB each way", a, b, scaledSize(n)>>20)
					if a > 1<<20 || b > 1<<20 {
						t.Errorf("the backup path carried %d bytes up and %d down: want none of the data", a, b)
					}
					r.checkHealthy()
				})
			})
		}
	})
}

// waitDelta waits until side s's counter moved by n since connect.
func waitDelta(r *rig, s netns.Side, name string, n uint64) error {
	for r.delta(s, name) < n {
		select {
		case <-r.ctx.Done():
			return fmt.Errorf("side %v (%v): %s +%d, want >= %d", s, r.impl(s), name, r.delta(s, name), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
