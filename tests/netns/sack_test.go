package netns_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// SACK on lossy paths. Our subflows negotiate SACK and keep timestamps; sock_ops reserves the
// room SACK blocks leave and TC rewrites the segments whose SACK blocks crowd out the DSS
// (bpf/sack_rw.h): every segment still carries its mapping and the data ACK.

// sackLossSize is what each side sends at once in TestSackLoss.
const sackLossSize = 64 << 20

// TestSackLoss transfers 64 MiB each way at once over two paths that drop 1 % or 5 % of the
// packets in both directions, in the three pairings, over IPv4 and IPv6. The data is exact; on
// the kernel's side nothing counts a bad or missing mapping, a fallback, MP_FAIL or a reset; on
// ours no mapping is missing and no rewrite failed, and rewrites happened; both sides recovered
// with SACK (TCPSackRecovery moved, TCPRenoRecovery did not) and every subflow has SACK in its
// TCP_INFO. At 5 % over IPv4 a capture of path 0 shows segments of ours with SACK blocks and a
// DSS, and tshark finds no malformed packet and no MPTCP expert warning in it.
func TestSackLoss(t *testing.T) {
	for _, loss := range []float64{0.01, 0.05} {
		for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
			for _, p := range pairings {
				t.Run(fmt.Sprintf("%g%%/%v/%v", loss*100, fam, p), func(t *testing.T) {
					testSackLoss(t, p, fam, loss, loss == 0.05 && fam == netns.IPv4)
				})
			}
		}
	}
}

func testSackLoss(t *testing.T, p pairing, fam netns.Family, loss float64, capture bool) {
	ctx := caseCtx(t, 150*time.Second)
	r := newRig(t, ctx, p, rigConfig{paths: 2, fam: fam})
	r.endpoint(netns.SideA, 1, fam, "subflow")
	r.connect()
	if err := pingPong(ctx, r.cli, r.srv); err != nil {
		t.Fatalf("first byte each way: %v", err)
	}
	r.waitSubflows(netns.SideA, 2)
	r.waitSubflows(netns.SideB, 2)
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		checkSubflowsSACK(t, r, s)
	}
	var drops []*netns.Loss
	for i := range 2 {
		path := r.topo.Path(i)
		// Per-segment loss: without segmentation offloads each packet is one segment.
		for _, e := range []*netns.Iface{path.A, path.B} {
			e.NS.Run("ethtool", "-K", e.Name, "tso", "off", "gso", "off", "gro", "off")
			drops = append(drops, e.SetLoss(loss))
		}
	}
	// The capture is taken where our segments arrive.
	var capFile string
	var stop func()
	ours, peer := r.topo.Path(0).A, r.topo.Path(0).B
	if p.client != oursImpl {
		ours, peer = peer, ours
	}
	if capture {
		capFile, stop = captureFile(t, ctx, peer)
	}
	tcpBefore := map[netns.Side]map[string]uint64{}
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		tcpBefore[s] = tcpCounters(t, r.topo.NS(s))
	}
	start := time.Now()
	r.start(sackLossSize, sackLossSize).wait()
	t.Logf("%d MiB each way in %v", sackLossSize>>20, time.Since(start).Round(time.Millisecond))
	if stop != nil {
		stop()
	}
	for _, d := range drops {
		seen, dropped, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if dropped == 0 || seen == 0 {
			t.Errorf("a dropper dropped %d of %d packets", dropped, seen)
		}
	}
	r.checkHealthy()
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		if r.impl(s) == kernelImpl {
			r.wantNoDelta(s, "DSSNoMatchTCP", "FallbackFailed", "DSSCorruptionFallback", "DSSCorruptionReset",
				"MPFailRx", "MPRstRx", "MPRstTx")
			continue
		}
		r.wantNoDelta(s, "SackRwFail")
		// Data segments crowded out by SACK blocks happen in every run; pure ACKs that need
		// one (three SACK blocks and no room for a data ACK) not always in a short one.
		if d, a := r.delta(s, "SackRwData"), r.delta(s, "SackRwAck"); d == 0 || (loss >= 0.05 && a == 0) {
			t.Errorf("%s: SackRwData +%d, SackRwAck +%d: want data segments rewritten (and pure ACKs at 5 %%)", r.side(s), d, a)
		}
		r.logNonZeroDelta(s, "SackRwData", "SackRwAck", "SackRwGSO", "DSSTxDeferred")
	}
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		after := tcpCounters(t, r.topo.NS(s))
		rec, reno := after["TCPSackRecovery"]-tcpBefore[s]["TCPSackRecovery"], after["TCPRenoRecovery"]-tcpBefore[s]["TCPRenoRecovery"]
		t.Logf("%s: TCPSackRecovery +%d, TCPRenoRecovery +%d", r.side(s), rec, reno)
		if rec == 0 || reno != 0 {
			t.Errorf("%s: TCPSackRecovery +%d, TCPRenoRecovery +%d: want recoveries with SACK only", r.side(s), rec, reno)
		}
	}
	if capture {
		checkSackCapture(t, capFile, ours.Addr(fam).String())
	}
}

// tcpCounters returns a namespace's TcpExt counters.
func tcpCounters(t testing.TB, ns *netns.Namespace) map[string]uint64 {
	t.Helper()
	c, err := ns.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkSubflowsSACK checks that every TCP socket of side s's connection (its subflows, by the
// server's port) has SACK and timestamps in its TCP_INFO, and that there are two (or more: a
// subflow replaced after a loss may still be closing).
func checkSubflowsSACK(t *testing.T, r *rig, s netns.Side) {
	t.Helper()
	infos, err := r.topo.NS(s).TCPInfos()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range infos {
		id := in.InetDiagMsg.ID
		if in.InetDiagMsg.State != unix.BPF_TCP_ESTABLISHED || in.TCPInfo == nil || id.Source.IsLoopback() ||
			(id.SourcePort != r.port && id.DestinationPort != r.port) {
			continue
		}
		n++
		if in.TCPInfo.Options&tcpiOptSACK == 0 || in.TCPInfo.Options&tcpiOptTimestamps == 0 {
			t.Errorf("%s: subflow %v:%d: TCP_INFO options %#x, want SACK and timestamps", r.side(s), id.Source, id.SourcePort, in.TCPInfo.Options)
		}
	}
	if n < 2 {
		t.Errorf("%s: %d established subflows found, want 2", r.side(s), n)
	}
}

// tcpi_options bits (include/uapi/linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
)

// mptcpExperts are the MPTCP dissector's expert fields (a warning of each is a wire error).
var mptcpExperts = []string{"mptcp.connection.echoed_key_mismatch", "mptcp.connection.missing_algorithm",
	"mptcp.connection.unsupported_algorithm", "mptcp.dss.infinite_mapping", "mptcp.dss.missing_mapping"}

// checkSackCapture checks a capture of a lossy transfer: segments from src carry both SACK
// blocks and a DSS, and tshark, with its MPTCP mapping analysis on, finds no malformed packet
// and no MPTCP expert warning.
func checkSackCapture(t *testing.T, file, src string) {
	t.Helper()
	ipf := "ip.src"
	if strings.Contains(src, ":") {
		ipf = "ipv6.src"
	}
	count := func(filter string) int {
		out, err := exec.Command("tshark", "-r", file, "-o", "mptcp.analyze_mappings:TRUE", "-Y", filter, "-T", "fields", "-e", "frame.number").Output()
		if err != nil {
			t.Fatalf("tshark -Y %q: %v", filter, err)
		}
		return len(strings.Fields(string(out)))
	}
	both := count(fmt.Sprintf("%s == %s && tcp.options.sack && tcp.options.mptcp.subtype == 2", ipf, src))
	data := count(fmt.Sprintf("%s == %s && tcp.options.sack && tcp.options.mptcp.dseqnpresent.flag == 1 && tcp.len > 0", ipf, src))
	t.Logf("capture: %d segments of ours with SACK blocks and a DSS, %d of them data with their mapping", both, data)
	if both == 0 || data == 0 {
		t.Errorf("capture: %d segments of ours with SACK and a DSS, %d with data and a mapping: want some of each", both, data)
	}
	// TCP only: the capture's end marker is a UDP datagram to port 9 that a heuristic
	// dissector may take for another protocol and call malformed.
	bad := "tcp && (_ws.malformed || " + strings.Join(mptcpExperts, " || ") + ")"
	if n := count(bad); n != 0 {
		t.Errorf("capture: %d packets tshark finds malformed or with an MPTCP expert warning (%s)", n, bad)
	}
}

// captureFile captures at e until the returned stop is called (it waits for the file).
func captureFile(t *testing.T, ctx context.Context, e *netns.Iface) (string, func()) {
	t.Helper()
	return capture(t, ctx, e)
}

// TestSackDrops drops chosen data segments of ours on one path: the first segment of a mapping,
// one from a mapping's middle, and a burst of 50 segments in a row, with the other direction
// flowing at the same time, ours as the client and as the server against the kernel. The data
// is exact, the counters of bad mappings stay 0 on both sides, and in a capture every data
// segment of ours, retransmissions included, carries a mapping that covers it.
func TestSackDrops(t *testing.T) {
	for _, p := range []pairing{{oursImpl, kernelImpl}, {kernelImpl, oursImpl}} {
		t.Run(p.String(), func(t *testing.T) {
			ctx := caseCtx(t, 90*time.Second)
			r := newRig(t, ctx, p, rigConfig{paths: 1})
			ours, peer := r.topo.Path(0).A, r.topo.Path(0).B
			if p.client != oursImpl {
				ours, peer = peer, ours
			}
			// Per-segment drops: without segmentation offloads each packet is one segment.
			for _, e := range []*netns.Iface{ours, peer} {
				e.NS.Run("ethtool", "-K", e.Name, "tso", "off", "gso", "off", "gro", "off")
			}
			// Both directions lose segments: the retransmissions of ours are tested, and ours
			// acknowledges with SACK blocks while the kernel's are repaired.
			drops := []*netns.DSSDrop{ours.DropDSS(500, 50), peer.DropDSS(500, 50)} // of about 2,900 data segments each way
			capFile, stop := captureFile(t, ctx, peer)
			r.connect()
			const size = 4 << 20
			r.start(size, size).wait()
			stop()
			for _, drop := range drops {
				seen, first, middle, burst, err := drop.Stats()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("dropper: %d data segments with a mapping seen; dropped %d first, %d middle, %d in the burst", seen, first, middle, burst)
				if first != 1 || middle != 1 || burst != 50 {
					t.Errorf("dropped %d first, %d middle, %d burst segments: want 1, 1, 50", first, middle, burst)
				}
			}
			r.checkHealthy()
			for _, s := range []netns.Side{netns.SideA, netns.SideB} {
				if r.impl(s) == kernelImpl {
					r.wantNoDelta(s, "DSSNoMatchTCP", "FallbackFailed", "DSSCorruptionFallback", "DSSCorruptionReset", "MPFailRx", "MPRstRx")
					continue
				}
				r.wantNoDelta(s, "SackRwFail")
				r.logNonZeroDelta(s, "SackRwData", "SackRwAck")
			}
			checkMappedSegments(t, capFile, ours.Addr(netns.IPv4).String())
		})
	}
}

// checkMappedSegments checks that every data segment from src in a capture (a retransmission
// too) carries a DSS whose mapping covers its bytes (relative sequence numbers, as the mapping's
// subflow sequence number is), and that retransmissions were among them: segments below the
// highest sequence number seen before them (src has one subflow in the capture). A capture
// taken after the drops never saw the originals, and tshark then calls a retransmission
// "out-of-order" or nothing, depending on its timing.
func checkMappedSegments(t *testing.T, file, src string) {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-Y", fmt.Sprintf("ip.src == %s && tcp.len > 0 && !(tcp.options.mptcp.subtype == 0)", src),
		"-T", "fields", "-E", "separator=;", "-e", "tcp.seq", "-e", "tcp.len", "-e", "tcp.options.mptcp.subflowseqno",
		"-e", "tcp.options.mptcp.datalvllen").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	segs, retrans, bad := 0, 0, 0
	var high uint64
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		if len(f) < 4 {
			continue
		}
		segs++
		seq, _ := strconv.ParseUint(f[0], 10, 32)
		n, _ := strconv.ParseUint(f[1], 10, 32)
		if seq+n <= high {
			retrans++
		}
		high = max(high, seq+n)
		ssn, err1 := strconv.ParseUint(f[2], 10, 32)
		ml, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil || seq < ssn || seq+n > ssn+ml {
			if bad < 5 {
				t.Errorf("data segment %d+%d: mapping %q+%q does not cover it", seq, n, f[2], f[3])
			}
			bad++
		}
	}
	t.Logf("capture: %d data segments of ours, %d retransmissions, %d not covered by their mapping", segs, retrans, bad)
	if segs == 0 || retrans == 0 {
		t.Errorf("capture: %d data segments, %d retransmissions: want both", segs, retrans)
	}
}
