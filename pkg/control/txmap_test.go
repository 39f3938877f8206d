package control

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// bpfWindow is the range of txmap entries the datapath searches (find_txmap in bpf/est_tx.h):
// the last RING-1 entries before head.
func bpfWindow(head uint64) (lo, hi uint64) {
	ring := uint64(datapath.TxMapRing)
	if head > ring-1 {
		lo = head - (ring - 1)
	}
	return lo, head
}

// TestClaimTxSlotKeepsUnackedInView writes mappings of random sizes while the peer
// acknowledges slowly, and checks after every publication that each mapping not yet
// acknowledged is still in the datapath's search window with its original bytes: a
// retransmission must always find its mapping (DSSTxNoMapping).
func TestClaimTxSlotKeepsUnackedInView(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sf := &subflow{shm: &datapath.Sub{}, fd: -1, c: &Conn{}}
	type rec struct {
		ssn seqnum.Value
		n   int
	}
	var all []rec
	ssn := seqnum.Value(1)
	var acked uint32 = 1
	for i := 0; i < 5000; i++ {
		n := 1 + rng.IntN(65535)
		// The fd is invalid, so a claim cannot wait for acknowledgments: when it is refused,
		// the peer acknowledges the oldest unacknowledged mapping, one at a time, until the
		// claim succeeds.
		for k := 0; sf.claimTxSlot(&acked) != nil; k++ {
			if k == len(all) {
				t.Fatalf("claim refused with everything acknowledged (to %d)", acked)
			}
			for _, r := range all {
				if end := r.ssn.Add(uint32(r.n)); seqnum.Value(acked).LessThan(end) {
					acked = uint32(end)
					break
				}
			}
		}
		sf.addTxMap(txChunk{dsn: seqnum.DSN(1000 + uint64(ssn)), n: n}, ssn)
		all = append(all, rec{ssn, n})
		ssn = ssn.Add(uint32(n))
		lo, hi := bpfWindow(sf.shm.Ctl.TxmapHead)
		for j := range all {
			r := all[j]
			if r.ssn.Add(uint32(r.n)).LessThanEq(seqnum.Value(acked)) {
				continue // acknowledged: a retransmission cannot need it
			}
			if uint64(j) < lo || uint64(j) >= hi {
				t.Fatalf("after %d mappings: unacknowledged entry %d (%d+%d) is outside the datapath's window [%d, %d)",
					i+1, j, r.ssn, r.n, lo, hi)
			}
			e := sf.shm.Ctl.Txmap[uint64(j)%uint64(datapath.TxMapRing)]
			if seqnum.Value(e.Ssn) != r.ssn || int(e.Len) != r.n {
				t.Fatalf("entry %d overwritten: %d+%d, want %d+%d", j, e.Ssn, e.Len, r.ssn, r.n)
			}
		}
		// The peer acknowledges part of what is in flight now and then, seldom enough that the
		// table fills and claims have to wait.
		if rng.IntN(128) == 0 {
			inflight := uint32(ssn) - acked
			acked += uint32(rng.IntN(int(inflight)/2 + 1))
		}
	}
}

// TestClearSub: a slot cleared for a new subflow is zero everywhere but in its mapping table,
// which the datapath reads only as far as the new subflow wrote it (the head is 0 again).
func TestClearSub(t *testing.T) {
	var sb datapath.Sub
	b := unsafe.Slice((*byte)(unsafe.Pointer(&sb)), unsafe.Sizeof(sb))
	for i := range b {
		b[i] = 0xa5
	}
	clearSub(&sb)
	if sb.Ctl.TxmapHead != 0 || sb.Ctl.Flags != 0 || sb.Ctl.OptGen != 0 || sb.St.SndUnaRel != 0 || sb.St.AckSent != 0 {
		t.Fatalf("state left: head %d, flags %#x, opt gen %d, snd_una %d, ack_sent %d",
			sb.Ctl.TxmapHead, sb.Ctl.Flags, sb.Ctl.OptGen, sb.St.SndUnaRel, sb.St.AckSent)
	}
	ring := unsafe.Offsetof(sb.Ctl) + unsafe.Offsetof(sb.Ctl.Txmap)
	end := ring + unsafe.Sizeof(sb.Ctl.Txmap)
	for i, v := range b {
		inRing := uintptr(i) >= ring && uintptr(i) < end
		if inRing && v != 0xa5 || !inRing && v != 0 {
			t.Fatalf("byte %d (ring %t) is %#x after clearSub", i, inRing, v)
		}
	}
}

// TestAddTxMapMPCData: the only mapping marked as one an MP_CAPABLE may carry (txmap_on_mpc in
// bpf/txmap.h) is the connection's first data at a subflow's first byte; the initial subflow's
// first mapping starts further on when a join carried the first data.
func TestAddTxMapMPCData(t *testing.T) {
	const first = seqnum.DSN(1 << 40)
	for _, tc := range []struct {
		dsn  seqnum.DSN
		ssn  seqnum.Value
		want uint16
	}{
		{first, 1, datapath.TxMapMPCData},
		{first + 7000, 1, 0}, // a join carried the first 7000 bytes
		{first, 7001, 0},     // not the subflow's first byte
		{first - 1, 1, 0},
	} {
		sf := &subflow{shm: &datapath.Sub{}, fd: -1, c: &Conn{firstDSN: first}}
		sf.addTxMap(txChunk{dsn: tc.dsn, n: 100}, tc.ssn)
		if got := sf.shm.Ctl.Txmap[0].Flags; got != tc.want {
			t.Errorf("mapping at DSN first%+d, SSN %d: flags %#x, want %#x", int64(tc.dsn-first), tc.ssn, got, tc.want)
		}
	}
}
