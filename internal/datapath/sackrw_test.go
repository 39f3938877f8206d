package datapath

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// The TC rewrite of segments whose SACK blocks crowd out the DSS (bpf/sack_rw.h), run through
// BPF_PROG_TEST_RUN (bpf/sacktest.bpf.c) and checked two ways: against a Go reference written
// from the same rules with the Go codec, and against the properties every rewrite must have
// (same length, timestamps untouched, the SACK blocks kept a prefix of the original, exactly one
// DSS that the strict parser accepts with the values asked for, a valid TCP checksum).

// Results of sack_rw_opts (enum sack_rw_result).
const (
	rwNone = 0
	rwDone = 1
	rwSkip = 2
)

const (
	optLen    = 40 // the option bytes of a 60-byte TCP header
	kindTS    = 8
	kindSACK  = 5
	ethIPLen  = 14 + 20
	tcpHdrLen = 60
)

type sackRW = testbpf.SacktestSackRw

// refSackRewrite is the rewrite as the design says it, in Go: the options' timestamps kept, then
// a DSS (a 4-byte data ACK if it fits beside the mapping and one SACK block; the mapping), then
// the first SACK blocks that fit, then NOPs.
func refSackRewrite(opts []byte, rw sackRW) ([]byte, int) {
	var ts, sack, dss []byte
	for i := 0; i < len(opts); {
		kind := opts[i]
		if kind == 0 {
			break
		}
		if kind == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return nil, rwSkip
		}
		o := opts[i : i+int(opts[i+1])]
		switch {
		case kind == kindTS && len(o) == 10 && ts == nil:
			ts = o
		case kind == kindSACK && len(o) > 2 && (len(o)-2)%8 == 0 && sack == nil:
			sack = o
		case kind == wire.OptionKind && len(o) >= 4 && o[2]>>4 == 2 && dss == nil:
			dss = o
		case kind == wire.OptionKind:
			return nil, rwNone
		default:
			return nil, rwSkip
		}
		i += len(o)
	}
	if sack == nil {
		return nil, rwNone
	}
	var flags byte
	if dss != nil {
		flags = dss[3]
	}
	if (rw.DsnLen == 0 || flags&0x04 != 0) && (rw.HasAck == 0 || flags&0x01 != 0) {
		return nil, rwNone
	}
	var out []byte
	if ts != nil {
		out = append(append(out, 1, 1), ts...)
	}
	d := wire.DSS{HasAck: rw.HasAck != 0, DataAck: uint64(rw.Ack), HasMap: rw.DsnLen != 0, DSN64: rw.DsnLen == 8,
		DSN: rw.Dsn, SSN: rw.Ssn, DataLen: rw.Len, DataFIN: rw.Fin != 0 && rw.DsnLen != 0,
		HasChecksum: rw.HasCsum != 0 && rw.DsnLen != 0, Checksum: rw.Csum}
	if !d.HasChecksum {
		d.Checksum = 0
	}
	if !d.DSN64 {
		d.DSN &= 0xffffffff
	}
	if len(out)+d.Len()+10 > optLen {
		d.HasAck, d.DataAck = false, 0
	}
	if !d.HasAck && !d.HasMap {
		return nil, rwNone
	}
	out = d.Append(out)
	// A checksummed mapping with a 64-bit DSN beside timestamps leaves no room for a block.
	if blocks := min((optLen-len(out)-2)/8, (len(sack)-2)/8); blocks > 0 {
		out = append(out, kindSACK, byte(2+8*blocks))
		out = append(out, sack[2:2+8*blocks]...)
	}
	for len(out) < optLen {
		out = append(out, 1)
	}
	return out, rwDone
}

// sackPacket is an Ethernet + IPv4 + TCP packet with a 60-byte TCP header carrying opts and a
// payload, with a valid TCP checksum.
func sackPacket(opts, payload []byte) []byte {
	p := make([]byte, ethIPLen+tcpHdrLen+len(payload))
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+tcpHdrLen+len(payload)))
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	th := p[ethIPLen:]
	binary.BigEndian.PutUint16(th[0:], 40000)
	binary.BigEndian.PutUint16(th[2:], 80)
	binary.BigEndian.PutUint32(th[4:], 0x01020304)
	binary.BigEndian.PutUint32(th[8:], 0x0a0b0c0d)
	th[12] = 15 << 4
	th[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(th[14:], 512)
	copy(th[20:], opts)
	copy(th[tcpHdrLen:], payload)
	binary.BigEndian.PutUint16(th[16:], ^tcpSum(p))
	return p
}

// tcpSum is the ones'-complement sum over the IPv4 pseudo-header and the TCP segment of p.
func tcpSum(p []byte) uint16 {
	ip, seg := p[14:34], p[ethIPLen:]
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[12:20])
	s += 6 + uint32(len(seg))
	add(seg)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// kernelOpts lays out options as the kernel does: NOP NOP timestamps, NOP NOP SACK blocks, then
// the BPF option room (bpf, NOP-padded to 4) filled to 40 bytes with NOPs. ok is false when they
// do not fit.
func kernelOpts(rng *rand.Rand, ts bool, blocks int, bpf []byte) ([]byte, bool) {
	var o []byte
	if ts {
		o = append(o, 1, 1, kindTS, 10)
		o = binary.BigEndian.AppendUint64(o, rng.Uint64())
	}
	if blocks > 0 {
		o = append(o, 1, 1, kindSACK, byte(2+8*blocks))
		for range blocks {
			o = binary.BigEndian.AppendUint64(o, rng.Uint64())
		}
	}
	o = append(o, bpf...)
	for len(o)%4 != 0 {
		o = append(o, 1)
	}
	if len(o) > optLen {
		return nil, false
	}
	for len(o) < optLen {
		o = append(o, 1)
	}
	return o, true
}

type sackRunner struct {
	objs testbpf.SacktestObjects
}

func newSackRunner(tb testing.TB) *sackRunner {
	tb.Helper()
	testenv.RequireRoot(tb)
	r := &sackRunner{}
	if err := testbpf.LoadSacktestObjects(&r.objs, nil); err != nil {
		tb.Fatalf("load sacktest: %v", err)
	}
	tb.Cleanup(func() { r.objs.Close() })
	return r
}

// run rewrites pkt with rw in BPF; returns the packet out and the result.
func (r *sackRunner) run(tb testing.TB, pkt []byte, rw sackRW) ([]byte, int32) {
	tb.Helper()
	if err := r.objs.SacktestRw.Put(uint32(0), rw); err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, len(pkt)+256)
	ret, err := r.objs.Sacktest.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
	if err != nil {
		tb.Fatalf("run: %v", err)
	}
	if ret != 0 { // TC_ACT_OK
		tb.Fatalf("verdict %d for a well-formed packet", ret)
	}
	var res int32
	if err := r.objs.SacktestResult.Lookup(uint32(0), &res); err != nil {
		tb.Fatal(err)
	}
	return out[:len(pkt)], res
}

// checkSackRewrite runs one case and checks it against the reference and the properties.
func checkSackRewrite(t *testing.T, r *sackRunner, opts, payload []byte, rw sackRW) int32 {
	t.Helper()
	pkt := sackPacket(opts, payload)
	out, res := r.run(t, pkt, rw)
	want, wantRes := refSackRewrite(opts, rw)
	if int(res) != wantRes {
		t.Fatalf("options % x, rw %+v: result %d, reference %d", opts, rw, res, wantRes)
	}
	if tcpSum(out) != 0xffff {
		t.Fatalf("options % x: TCP checksum wrong after the rewrite", opts)
	}
	got := out[ethIPLen+20 : ethIPLen+tcpHdrLen]
	// Everything but the options and the TCP checksum (at 16) stays.
	if !bytes.Equal(out[:ethIPLen+16], pkt[:ethIPLen+16]) || !bytes.Equal(out[ethIPLen+18:ethIPLen+20], pkt[ethIPLen+18:ethIPLen+20]) ||
		!bytes.Equal(out[ethIPLen+tcpHdrLen:], payload) {
		t.Fatalf("options % x: headers before the options or the payload changed", opts)
	}
	if res != rwDone {
		if !bytes.Equal(got, opts) {
			t.Fatalf("options % x: result %d but the options changed to % x", opts, res, got)
		}
		return res
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("options % x, rw %+v:\n got % x\nwant % x", opts, rw, got, want)
	}
	checkRewriteProperties(t, opts, got, rw)
	return res
}

// checkRewriteProperties checks a rewrite on its own terms, without the reference.
func checkRewriteProperties(t *testing.T, in, out []byte, rw sackRW) {
	t.Helper()
	find := func(opts []byte, kind byte) [][]byte {
		var r [][]byte
		if err := wire.WalkTCPOptions(opts, func(k uint8, o []byte) bool {
			if k == kind {
				r = append(r, o)
			}
			return true
		}); err != nil {
			t.Fatalf("options % x: %v", opts, err)
		}
		return r
	}
	if tsIn, tsOut := find(in, kindTS), find(out, kindTS); len(tsIn) != len(tsOut) || (len(tsIn) > 0 && !bytes.Equal(tsIn[0], tsOut[0])) {
		t.Fatalf("timestamps % x became % x", tsIn, tsOut)
	}
	sIn, sOut := find(in, kindSACK), find(out, kindSACK)
	noRoom := rw.HasCsum != 0 && rw.DsnLen == 8 && len(find(in, kindTS)) > 0 // 12 + 20 bytes: no block fits
	if (len(sOut) != 1 || len(sOut[0]) < 10 || !bytes.HasPrefix(sIn[0][2:], sOut[0][2:])) && !(noRoom && len(sOut) == 0) {
		t.Fatalf("SACK % x became % x: want a prefix of at least one block", sIn, sOut)
	}
	opts, malformed := wire.ParseMPTCPOptions(out)
	if malformed != 0 || len(opts) != 1 {
		t.Fatalf("options % x: %d MPTCP options, %d malformed: want exactly one DSS", out, len(opts), malformed)
	}
	d, ok := opts[0].(wire.DSS)
	if !ok {
		t.Fatalf("options % x: %T, want a DSS", out, opts[0])
	}
	if d.HasAck && (d.Ack64 || uint32(d.DataAck) != rw.Ack || rw.HasAck == 0) {
		t.Fatalf("DSS %+v: data ACK, want the 4-byte %#x", d, rw.Ack)
	}
	dsn := rw.Dsn
	if rw.DsnLen == 4 {
		dsn &= 0xffffffff
	}
	if d.HasMap != (rw.DsnLen != 0) || (d.HasMap && (d.DSN != dsn || d.DSN64 != (rw.DsnLen == 8) || d.SSN != rw.Ssn ||
		d.DataLen != rw.Len || d.DataFIN != (rw.Fin != 0))) {
		t.Fatalf("DSS %+v: want the mapping %+v", d, rw)
	}
	if d.HasChecksum != (rw.HasCsum != 0 && rw.DsnLen != 0) || (d.HasChecksum && d.Checksum != rw.Csum) {
		t.Fatalf("DSS %+v: want the checksum %+v", d, rw)
	}
	if !d.HasAck && !d.HasMap {
		t.Fatalf("DSS %+v carries nothing", d)
	}
}

// randRW is what a DSS should carry: a data segment's mapping (4- or 8-byte DSN), maybe a DATA_FIN
// and a data ACK, or on a segment without data a data ACK alone.
func randRW(rng *rand.Rand, data bool) sackRW {
	rw := sackRW{Dsn: rng.Uint64(), Ack: rng.Uint32(), Ssn: rng.Uint32(), Len: uint16(rng.IntN(65535) + 1)}
	if rng.IntN(4) > 0 {
		rw.HasAck = 1
	}
	if data {
		rw.DsnLen = []uint8{4, 8}[rng.IntN(2)]
		rw.Fin = uint8(rng.IntN(2))
		if rng.IntN(2) == 0 { // a connection with DSS checksums
			rw.HasCsum, rw.Csum = 1, uint16(rng.Uint32())
		}
	} else {
		rw.HasAck = 1
	}
	return rw
}

// bpfRoom is what sock_ops may have left in the option room: nothing, a data ACK alone, a
// mapping alone (4-byte DSN), or both in the form that fits.
func bpfRoom(rng *rand.Rand, room int, rw sackRW) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		if room >= 12 {
			return wire.DSS{HasAck: true, Ack64: true, DataAck: uint64(rw.Ack)}.Append(nil)
		}
		return wire.DSS{HasAck: true, DataAck: uint64(rw.Ack)}.Append(nil)
	case 2:
		return wire.DSS{HasMap: true, DSN: rw.Dsn & 0xffffffff, SSN: rw.Ssn, DataLen: rw.Len}.Append(nil)
	default:
		return wire.DSS{HasAck: true, DataAck: uint64(rw.Ack), HasMap: true, DSN: rw.Dsn & 0xffffffff, SSN: rw.Ssn, DataLen: rw.Len}.Append(nil)
	}
}

// TestSackRewrite runs the rewrite over the layouts the kernel makes: with and without
// timestamps, 1 to 4 SACK blocks (the first may be a D-SACK: to the rewrite it is the first
// block), and whatever sock_ops left in the reserved room, for segments with and without data.
func TestSackRewrite(t *testing.T) {
	r := newSackRunner(t)
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[int32]int{}
	for _, ts := range []bool{true, false} {
		for blocks := 0; blocks <= 4; blocks++ {
			for _, data := range []bool{true, false} {
				for i := 0; i < 50; i++ {
					rw := randRW(rng, data)
					room := optLen - 4 - 8*blocks
					if ts {
						room -= 12
					}
					left := bpfRoom(rng, room, rw)
					opts, ok := kernelOpts(rng, ts, blocks, left)
					if !ok {
						continue
					}
					var payload []byte
					if data {
						payload = make([]byte, 1+rng.IntN(100))
						for j := range payload {
							payload[j] = byte(rng.Uint32())
						}
					}
					res := checkSackRewrite(t, r, opts, payload, rw)
					counts[res]++
					// What sock_ops left lacks the mapping or data ACK asked for: rewritten.
					var had wire.DSS
					if len(left) > 0 {
						o, _, err := wire.Parse(left)
						if err != nil {
							t.Fatal(err)
						}
						had = o.(wire.DSS)
					}
					if lacks := (rw.DsnLen != 0 && !had.HasMap) || (rw.HasAck != 0 && !had.HasAck); blocks > 0 && lacks && res != rwDone {
						t.Errorf("ts %v, %d blocks, left % x, rw %+v: result %d, want a rewrite", ts, blocks, left, rw, res)
					}
				}
			}
		}
	}
	t.Logf("results: %v", counts)
	if counts[rwDone] == 0 || counts[rwNone] == 0 {
		t.Errorf("results %v: want rewrites and cases left alone", counts)
	}
	// Layouts it must not touch: no SACK; another MPTCP option; an unknown kind; a bad length.
	rw := randRW(rng, true)
	for name, bpf := range map[string][]byte{
		"MP_PRIO":     wire.MPPrio{Backup: true}.Append(nil),
		"unknown":     {254, 4, 0, 0},
		"bad length":  {30, 40},
		"zero length": {99, 0},
	} {
		opts, _ := kernelOpts(rng, true, 1, bpf)
		res := checkSackRewrite(t, r, opts, []byte{1}, rw)
		if want := map[bool]int32{true: rwNone, false: rwSkip}[name == "MP_PRIO"]; res != want {
			t.Errorf("%s: result %d, want %d", name, res, want)
		}
	}
}

// FuzzSackRewrite feeds arbitrary option bytes and DSS contents to the rewrite: it must agree
// with the reference, and every rewrite must have the properties above.
func FuzzSackRewrite(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, ts := range []bool{true, false} {
		for blocks := 1; blocks <= 4; blocks++ {
			rw := randRW(rng, blocks%2 == 0)
			if opts, ok := kernelOpts(rng, ts, blocks, nil); ok {
				f.Add(opts, rw.Dsn, rw.Ack, rw.Ssn, rw.Len, byte(rw.HasAck|rw.DsnLen<<1|rw.Fin<<5|rw.HasCsum<<6))
			}
		}
	}
	r := newSackRunner(f)
	f.Fuzz(func(t *testing.T, opts []byte, dsn uint64, ack, ssn uint32, length uint16, flags byte) {
		if len(opts) != optLen {
			opts = append(slices.Clip(opts), make([]byte, optLen)...)[:optLen]
			for i := range opts {
				if opts[i] == 0 && i >= len(opts)/2 {
					opts[i] = 1
				}
			}
		}
		rw := sackRW{Dsn: dsn, Ack: ack, Ssn: ssn, Len: length, HasAck: flags & 1, DsnLen: []uint8{0, 4, 8, 0}[flags>>1&3], Fin: flags >> 5 & 1,
			HasCsum: flags >> 6 & 1, Csum: uint16(ssn>>16) ^ uint16(ack)}
		checkSackRewrite(t, r, opts, []byte("data"), rw)
	})
}
