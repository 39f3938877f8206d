package netns

import (
	"errors"
	"io"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
)

// Corrupter flips bits of one payload byte of one TCP data segment that one end sends, at the
// peer end's ingress, and fixes the TCP checksum: TCP takes the segment, only MPTCP's DSS
// checksum can tell (RFC 8684 §3.3.1).
type Corrupter struct {
	objs testbpf.CorruptObjects
	l    *tcattach.Link
}

// CorruptedSegment is what the corrupter did.
type CorruptedSegment struct {
	Seen    uint64 // data segments counted
	Done    bool
	Seq     uint32 // the segment's TCP sequence number
	Payload uint32 // its payload length (of a GSO packet, all of it)
	Old     byte   // the byte before
	New     byte   // and after
}

// CorruptOne corrupts the skip-th data segment (counting from 0) with at least minPayload bytes
// that this end sends: the byte at offset in its payload is XORed with xor. It stays until the
// test ends.
func (e *Iface) CorruptOne(skip, minPayload, offset uint32, xor byte) *Corrupter {
	tb := e.NS.topo.tb
	tb.Helper()
	co := &Corrupter{}
	if err := testbpf.LoadCorruptObjects(&co.objs, nil); err != nil {
		tb.Fatalf("netns: load corrupter: %v", err)
	}
	tb.Cleanup(func() {
		if co.l != nil {
			co.l.Close()
		}
		co.objs.Close()
	})
	cfg := testbpf.CorruptCorruptCfg{Skip: skip, MinPayload: minPayload, Offset: offset, Xor: xor}
	if err := co.objs.CorruptConf.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		tb.Fatal(err)
	}
	peer := e.Peer
	err := peer.NS.Do(func() error {
		var err error
		co.l, err = tcattach.Attach(peer.Index, co.objs.CorruptOne, tcattach.Ingress, tcattach.Options{})
		return err
	})
	if err != nil {
		tb.Fatalf("netns: attach corrupter to %s: %v", peer, err)
	}
	return co
}

// State returns what the corrupter did so far.
func (co *Corrupter) State() (CorruptedSegment, error) {
	var v testbpf.CorruptCorruptDone
	if err := co.objs.CorruptState.Lookup(uint32(0), &v); err != nil {
		return CorruptedSegment{}, err
	}
	return CorruptedSegment{Seen: v.Seen, Done: v.Done != 0, Seq: v.Seq, Payload: v.Payload, Old: v.OldByte, New: v.NewByte}, nil
}

// ByteDiff is a byte of a received stream that is not the one sent.
type ByteDiff struct {
	Offset    int64
	Got, Want byte
}

// CompareStream reads r until EOF and compares what it delivers with seed's stream (what Send
// writes): it returns how many bytes it read and the first 16 bytes that differ, with how many
// differ in all. Bytes beyond the stream's n count as differing.
func CompareStream(r io.Reader, n int64, seed uint64) (read int64, diffs []ByteDiff, ndiff int64, err error) {
	g := stream(seed)
	buf := make([]byte, chunkSize)
	want := make([]byte, chunkSize)
	for {
		k, rerr := r.Read(buf)
		g.Read(want[:k])
		for i := range k {
			if read+int64(i) >= n || buf[i] != want[i] {
				ndiff++
				if len(diffs) < 16 {
					diffs = append(diffs, ByteDiff{Offset: read + int64(i), Got: buf[i], Want: want[i]})
				}
			}
		}
		read += int64(k)
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			return read, diffs, ndiff, rerr
		}
	}
}
