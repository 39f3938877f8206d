package control

import (
	"bytes"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/dsscsum"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// delivered takes what the connection handed to Read so far.
func delivered(c *Conn) []byte {
	var out []byte
	for _, b := range c.rxq.take(1 << 30) {
		out = append(out, b...)
	}
	return out
}

// csumMapEv is the datapath's event for the peer's mapping of n bytes at DSN dsn, SSN ssn,
// with DSS checksum csum.
func csumMapEv(sf *subflow, dsn seqnum.DSN, ssn, n uint32, csum uint16) datapath.Event {
	return datapath.Event{Type: datapath.EvRxMap, Sub: sf.slot, A: uint64(dsn), B: uint64(ssn),
		C: uint64(n) | datapath.RxMapCsum | uint64(csum)<<32}
}

// TestCsumVerify: on a connection with DSS checksums a mapping's bytes are placed only once all
// of them arrived (here in three reads of odd sizes) and its checksum is right; a wrong one is
// handled as RFC 8684 §3.7 says: with no join, MP_FAIL at the mapping's DSN on one ACK, the
// bytes delivered as they came, MPTCP until the peer's infinite mapping; after a join the
// subflow is reset (middlebox interference) and its bytes are not delivered. A mapping without
// a checksum there is a bad mapping.
func TestCsumVerify(t *testing.T) {
	const n = 3001
	data := pattern(coreRcvStart, n)
	good := dsscsum.Checksum(uint64(coreRcvStart), 1, n, data)
	for _, tc := range []struct {
		name   string
		csum   uint16
		joined bool
	}{{"right", good, false}, {"wrong", good ^ 0x0100, false}, {"wrong joined", good ^ 0x0100, true}} {
		t.Run(tc.name, func(t *testing.T) {
			conn, fp := newCoreConn(t, "default")
			conn.shm.St.Csum = 1
			a := addCoreSub(conn, 10*time.Millisecond)
			b := addCoreSub(conn, 10*time.Millisecond)
			conn.st.joined = tc.joined
			conn.handleEvent(csumMapEv(a, coreRcvStart, 1, n, tc.csum))
			conn.handleRx(rxChunk{sf: a, off: 1, data: data[:1001]})
			conn.handleRx(rxChunk{sf: a, off: 1002, data: data[1001:2000]})
			if got := delivered(conn); len(got) != 0 {
				t.Fatalf("%d bytes delivered before the mapping was complete", len(got))
			}
			conn.handleRx(rxChunk{sf: a, off: 2001, data: data[2000:]})
			st := &conn.stack.stats
			got := delivered(conn)
			switch {
			case tc.csum == good:
				if !bytes.Equal(got, data) || st.DataCsumVerified.Load() != 1 || st.DataCsumErr.Load() != 0 {
					t.Fatalf("delivered %d bytes (equal %t), verified %d, errors %d: want all, 1, 0",
						len(got), bytes.Equal(got, data), st.DataCsumVerified.Load(), st.DataCsumErr.Load())
				}
				if conn.st.rcv.fallback || len(fp.ackFlags) != 0 {
					t.Fatalf("fallback %t, ACKs %v: want neither", conn.st.rcv.fallback, fp.ackFlags)
				}
			case tc.joined:
				if len(got) != 0 || st.DataCsumErr.Load() != 1 || st.DSSCorruptionReset.Load() != 1 {
					t.Fatalf("delivered %d bytes, errors %d, resets %d: want 0, 1, 1", len(got), st.DataCsumErr.Load(), st.DSSCorruptionReset.Load())
				}
				if len(conn.subs) != 1 || conn.subs[0] != b || a.shm.Ctl.RstFlags != datapath.SubRstRequest || a.shm.Ctl.RstReason != RstMiddlebox {
					t.Fatalf("subflows %d, the bad one's reset flags %#x reason %d: want it reset (middlebox), the other kept",
						len(conn.subs), a.shm.Ctl.RstFlags, a.shm.Ctl.RstReason)
				}
				if conn.st.rcv.fallback || !conn.mptcp.Load() || len(fp.ackFlags) != 0 {
					t.Fatalf("fallback %t, MPTCP %t, ACKs %v: a joined connection does not fall back", conn.st.rcv.fallback, conn.mptcp.Load(), fp.ackFlags)
				}
			default:
				if !bytes.Equal(got, data) || st.DataCsumErr.Load() != 1 || st.DSSCorruptionFallback.Load() != 1 {
					t.Fatalf("delivered %d bytes, errors %d, fallbacks %d: want all as they came, 1, 1",
						len(got), st.DataCsumErr.Load(), st.DSSCorruptionFallback.Load())
				}
				if len(fp.ackFlags) != 1 || fp.ackFlags[0]&datapath.ConnMPFail == 0 || conn.shm.Ctl.Flags&datapath.ConnMPFail != 0 ||
					conn.shm.Ctl.MpFailDsn != uint64(coreRcvStart) {
					t.Fatalf("ACK flags %v, flags now %#x, MP_FAIL DSN %d: want MP_FAIL at %d on one ACK",
						fp.ackFlags, conn.shm.Ctl.Flags, conn.shm.Ctl.MpFailDsn, uint64(coreRcvStart))
				}
				if !conn.st.rcv.fallback || !conn.mptcp.Load() {
					t.Fatalf("rx fallback %t, MPTCP %t: want the bytes in order and MPTCP until the infinite mapping", conn.st.rcv.fallback, conn.mptcp.Load())
				}
				// The peer answers (its MP_FAIL changes nothing), then its infinite mapping.
				conn.handleEvent(datapath.Event{Type: datapath.EvMPFail, Sub: a.slot, A: uint64(coreRcvStart)})
				if !conn.mptcp.Load() {
					t.Fatal("the peer's answering MP_FAIL ended MPTCP before its infinite mapping")
				}
				conn.handleEvent(datapath.Event{Type: datapath.EvRxMap, Sub: a.slot, C: datapath.RxMapInfinite})
				if conn.mptcp.Load() || conn.shm.Ctl.Flags&datapath.ConnFallback == 0 || st.MPFailFallback.Load() != 1 {
					t.Fatalf("after the infinite mapping: MPTCP %t, flags %#x, MPFailFallback %d: want plain TCP",
						conn.mptcp.Load(), conn.shm.Ctl.Flags, st.MPFailFallback.Load())
				}
				more := pattern(coreRcvStart.Add(n), 100)
				conn.handleRx(rxChunk{sf: a, off: 1 + n, data: more})
				if got := delivered(conn); !bytes.Equal(got, more) {
					t.Fatalf("after the fallback: %d bytes delivered, want the next 100 in order", len(got))
				}
			}
		})
	}
}

// TestCsumPresenceMismatch: a mapping without a checksum on a connection with checksums, or
// with one on a connection without, is a bad mapping (§3.3.0): counted, and the connection
// falls back with MP_FAIL (no join).
func TestCsumPresenceMismatch(t *testing.T) {
	for _, on := range []bool{true, false} {
		conn, _ := newCoreConn(t, "default")
		if on {
			conn.shm.St.Csum = 1
		}
		a := addCoreSub(conn, 10*time.Millisecond)
		ev := csumMapEv(a, coreRcvStart, 1, 100, 7)
		if on {
			ev.C = 100 // no checksum
		}
		conn.handleEvent(ev)
		st := &conn.stack.stats
		if st.DSSCsumMismatch.Load() != 1 || st.DssFallback.Load() != 1 || conn.mptcp.Load() || len(a.rxMaps) != 0 {
			t.Fatalf("checksums %t: mismatches %d, DssFallback %d, MPTCP %t, mappings kept %d: want 1, 1, false, 0",
				on, st.DSSCsumMismatch.Load(), st.DssFallback.Load(), conn.mptcp.Load(), len(a.rxMaps))
		}
	}
}

// TestTxMapCsum: the sum a mapping's table entry carries is the DSS checksum once the datapath
// adds the length (with and without a DATA_FIN on it), over buffers of odd lengths.
func TestTxMapCsum(t *testing.T) {
	conn, _ := newCoreConn(t, "default")
	conn.shm.St.Csum = 1
	a := addCoreSub(conn, 10*time.Millisecond)
	dsn := coreSndStart.Add(77)
	data := pattern(dsn, 4097)
	a.addTxMap(txChunk{dsn: dsn, bufs: [][]byte{data[:1], data[1:2048], data[2048:]}, n: len(data)}, 5)
	e := a.shm.Ctl.Txmap[0]
	for _, fin := range []uint16{0, 1} {
		want := dsscsum.Checksum(uint64(dsn), 5, uint16(len(data))+fin, data)
		if got := dsscsum.Finish(e.Csum, uint16(len(data))+fin); got != want {
			t.Fatalf("DATA_FIN %d: checksum %#04x from the entry, want %#04x", fin, got, want)
		}
	}
	conn.shm.St.Csum = 0
	a.addTxMap(txChunk{dsn: dsn, bufs: [][]byte{data}, n: len(data)}, 5)
	if a.shm.Ctl.Txmap[1].Csum != 0 {
		t.Fatalf("a connection without checksums: entry sum %#04x, want 0", a.shm.Ctl.Txmap[1].Csum)
	}
}
