package observer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// Verdicts of the BPF strict parser (enum parse_result in bpf/mptcp_parse.h).
const (
	parseOK        = 0
	parseMalformed = 1
	parseUnknown   = 2
)

// observerMaxOpts is how many MPTCP options the TC observer walks per segment
// (CAPTURE_MAX_OPTS * 4 in bpf/tc.bpf.c).
const observerMaxOpts = 16

// optVerdict is one MPTCP option found in an options area, with the parser's verdict; opt is
// meaningful only when result is parseOK.
type optVerdict struct {
	off, len, result uint8
	opt              CapturedOption
}

func (v optVerdict) String() string {
	if v.result != parseOK {
		return fmt.Sprintf("{off %d len %d result %d}", v.off, v.len, v.result)
	}
	return fmt.Sprintf("{off %d len %d ok %+v}", v.off, v.len, v.opt)
}

// codecVerdicts is what the BPF walker and parser must report for an options area, according to
// the Go codec: every MPTCP option the walker (wire.WalkTCPOptions) passes, judged by wire.Parse
// plus the two checks that need the TCP header (MP_CAPABLE's form must fit the segment, MP_TCPRST
// only with RST), and whether a bad option length stopped the walk.
func codecVerdicts(t *testing.T, area []byte, tcpFlags uint8, payload bool) (vs []optVerdict, walkErr bool) {
	t.Helper()
	err := wire.WalkTCPOptions(area, func(kind uint8, opt []byte) bool {
		if kind != wire.OptionKind {
			return true
		}
		off := uintptr(unsafe.Pointer(unsafe.SliceData(opt))) - uintptr(unsafe.Pointer(unsafe.SliceData(area)))
		v := optVerdict{off: uint8(off), len: opt[1], result: parseMalformed}
		o, _, err := wire.Parse(opt)
		switch {
		case errors.Is(err, wire.ErrUnknownSubtype):
			v.result = parseUnknown
		case err != nil:
		default:
			v.result = parseOK
			switch o := o.(type) {
			case wire.MPCapable:
				if !o.FitsSegment(tcpFlags&tcpSYN != 0, tcpFlags&tcpACK != 0, payload) {
					v.result = parseMalformed
				}
			case wire.MPTCPRst:
				if tcpFlags&tcpRST == 0 {
					v.result = parseMalformed
				}
			}
			if v.result == parseOK {
				v.opt = expected(t, o)
			}
		}
		vs = append(vs, v)
		return true
	})
	return vs, err != nil
}

// comparable reduces a BPF-parsed option to the fields the Go codec decodes: the BPF parser keeps
// all four flag bits of an MP_JOIN, where the codec (and the datapath, MPJ_FLAG_BACKUP) reads
// only the backup bit.
func comparable(o CapturedOption) CapturedOption {
	if o.Subtype == uint8(wire.SubtypeMPJoin) {
		o.Flags &= 1
	}
	return o
}

// parseTester runs bpf/parsetest.bpf.c and the TC observer over options areas.
type parseTester struct {
	objs testbpf.ParsetestObjects
	obs  *Observer
}

func newParseTester(tb testing.TB) *parseTester {
	tb.Helper()
	testenv.RequireRoot(tb)
	p := &parseTester{}
	if err := testbpf.LoadParsetestObjects(&p.objs, nil); err != nil {
		tb.Fatalf("the verifier must accept the parser test program: %v", datapath.VerifierError(err))
	}
	tb.Cleanup(func() { p.objs.Close() })
	o, err := Load(Options{Capture: true})
	if err != nil {
		tb.Fatalf("the verifier must accept the observer: %v", err)
	}
	tb.Cleanup(func() { o.Close() })
	p.obs = o
	return p
}

// bpfVerdicts runs the walker and parser of bpf/mptcp_parse.h over area.
func (p *parseTester) bpfVerdicts(t *testing.T, area []byte, tcpFlags uint8, payload bool) (vs []optVerdict, walkErr bool) {
	t.Helper()
	var args testbpf.ParsetestParseArgs
	copy(args.Area[:], area)
	args.Len = uint32(len(area))
	args.Seg = uint32(tcpFlags)
	if payload {
		args.Seg |= 0x100 // SEG_HAS_PAYLOAD
	}
	ctx := unsafe.Slice((*byte)(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	ret, err := p.objs.RunParse.Run(&ebpf.RunOptions{Context: ctx, ContextOut: ctx})
	if err != nil || ret != 0 {
		t.Fatalf("run the BPF parser: %d, %v", ret, err)
	}
	if int(args.Out.NrOpts) > len(args.Out.Opts) {
		t.Fatalf("BPF reports %d options, room for %d", args.Out.NrOpts, len(args.Out.Opts))
	}
	for _, r := range args.Out.Opts[:args.Out.NrOpts] {
		vs = append(vs, optVerdict{off: r.Off, len: r.Len, result: r.Result, opt: CapturedOption(r.Opt)})
	}
	return vs, args.Out.Walk != 0
}

// check compares the BPF walker and parser with the codec on one segment, option by option,
// then runs the segment through the TC observer and checks its capture and counters.
func (p *parseTester) check(t *testing.T, tcpFlags uint8, payload, v6 bool, area []byte) {
	t.Helper()
	if len(area) > 40 {
		area = area[:40]
	}
	want, wantErr := codecVerdicts(t, area, tcpFlags, payload)
	got, gotErr := p.bpfVerdicts(t, area, tcpFlags, payload)
	if gotErr != wantErr {
		t.Errorf("area % x: BPF walk error %v, codec %v", area, gotErr, wantErr)
	}
	if len(got) != len(want) {
		t.Fatalf("area % x flags %#x payload %v: BPF found %d MPTCP options, codec %d\n got %v\nwant %v",
			area, tcpFlags, payload, len(got), len(want), got, want)
	}
	for i := range want {
		g := got[i]
		if g.result == parseOK {
			g.opt = comparable(g.opt)
		} else {
			g.opt = CapturedOption{}
		}
		if g != want[i] {
			t.Fatalf("area % x flags %#x payload %v: option %d differs\n got %v\nwant %v",
				area, tcpFlags, payload, i, g, want[i])
		}
	}

	// The TC observer sees the area in a whole segment: the TCP header's length counts 4-byte
	// words, so pad with EOL and judge the padded area.
	padded := append([]byte(nil), area...)
	for len(padded)%4 != 0 {
		padded = append(padded, 0)
	}
	want, wantErr = codecVerdicts(t, padded, tcpFlags, payload)
	seg := segment{v6: v6, flags: tcpFlags, options: padded}
	if payload {
		seg.payload = []byte("data")
	}
	before := counters(t, p.obs)
	if err := p.obs.Run(seg.frame()); err != nil {
		t.Fatal(err)
	}
	after := counters(t, p.obs)
	var wantCap []CapturedOption
	var parsed, malformed, unknown, badHdr uint64
	var bySubtype [9]uint64
	for i, v := range want {
		if i == observerMaxOpts {
			break
		}
		switch v.result {
		case parseOK:
			parsed++
			bySubtype[v.opt.Subtype]++
			if len(wantCap) < 4 {
				wantCap = append(wantCap, v.opt)
			}
		case parseMalformed:
			malformed++
		case parseUnknown:
			unknown++
		}
	}
	if wantErr && len(want) < observerMaxOpts {
		badHdr = 1
	}
	_, capOpts, err := p.obs.Capture()
	if err != nil {
		t.Fatal(err)
	}
	if len(padded) == 0 {
		return // doff 5: the observer does not look for options
	}
	if len(capOpts) != len(wantCap) {
		t.Fatalf("area % x: observer captured %d options, want %d\n got %+v\nwant %+v", padded, len(capOpts), len(wantCap), capOpts, wantCap)
	}
	for i := range wantCap {
		if comparable(capOpts[i]) != wantCap[i] {
			t.Fatalf("area % x: observer option %d differs\n got %+v\nwant %+v", padded, i, capOpts[i], wantCap[i])
		}
	}
	d := func(a, b uint64) uint64 { return a - b }
	if d(after.Parsed, before.Parsed) != parsed || d(after.Malformed, before.Malformed) != malformed ||
		d(after.UnknownSubtype, before.UnknownSubtype) != unknown || d(after.BadTCPOptions, before.BadTCPOptions) != badHdr {
		t.Fatalf("area % x: observer counted parsed %d malformed %d unknown %d bad area %d, want %d %d %d %d",
			padded, d(after.Parsed, before.Parsed), d(after.Malformed, before.Malformed),
			d(after.UnknownSubtype, before.UnknownSubtype), d(after.BadTCPOptions, before.BadTCPOptions),
			parsed, malformed, unknown, badHdr)
	}
	for st := range bySubtype {
		if d(after.BySubtype[st], before.BySubtype[st]) != bySubtype[st] {
			t.Fatalf("area % x: observer counted %d %v, want %d", padded, d(after.BySubtype[st], before.BySubtype[st]),
				wire.Subtype(st), bySubtype[st])
		}
	}
}

// fuzzSegment encodes a segment for FuzzBPFOptions: TCP flags, then a byte whose bit 0 says the
// segment carries payload and bit 1 that it is IPv6, then the options area (at most 40 bytes).
func fuzzSegment(tcpFlags uint8, payload, v6 bool, area []byte) []byte {
	var b byte
	if payload {
		b |= 1
	}
	if v6 {
		b |= 2
	}
	return append([]byte{tcpFlags, b}, area...)
}

// otherOptions are TCP options of other kinds a segment carries beside MPTCP's.
var otherOptions = [][]byte{
	{1},                             // NOP
	{2, 4, 0x05, 0xb4},              // MSS
	{3, 3, 7},                       // window scale
	{4, 2},                          // SACK permitted
	{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, // timestamps
	{5, 10, 0, 0, 0, 1, 0, 0, 0, 2}, // SACK, one block
	{253, 4, 0xab, 0xcd},            // experimental
	{0},                             // EOL
}

// FuzzBPFOptions runs random TCP options areas through the BPF options walker and strict parser
// (bpf/mptcp_parse.h, BPF_PROG_TEST_RUN) and checks them against the Go codec option by option:
// the same MPTCP options found, the same accept or reject, the same decoded fields; then through
// the TC observer, whose capture and counters must agree. Seeded from the Append of every option
// form in wire.Vectors, alone, paired and beside other options, and from wire.MalformedVectors.
func FuzzBPFOptions(f *testing.F) {
	vecs := wire.Vectors()
	for i, v := range vecs {
		raw := v.Option.Append(nil)
		s := segmentFor(v.Option, raw)
		f.Add(fuzzSegment(s.flags, s.payload != nil, i%2 == 1, raw))
		f.Add(fuzzSegment(s.flags, s.payload != nil, false, optionsArea(raw)))
		// Beside the next vector, with a NOP and another kind between them.
		next := vecs[(i+1)%len(vecs)].Option.Append(nil)
		other := otherOptions[i%len(otherOptions)]
		f.Add(fuzzSegment(s.flags, s.payload != nil, false, append(append(append([]byte{1}, raw...), other...), next...)))
	}
	for _, v := range wire.MalformedVectors() {
		s := segmentFor(nil, v.Bytes)
		f.Add(fuzzSegment(s.flags, false, false, v.Bytes))
		f.Add(fuzzSegment(s.flags, false, false, optionsArea(v.Bytes)))
	}
	dss := wire.DSS{HasAck: true, Ack64: true, DataAck: 0x1122334455667788}
	f.Add(fuzzSegment(tcpACK, false, false, optionsArea(dss.Append(nil), wire.MPPrio{Backup: true}.Append(nil), wire.RemoveAddr{IDs: []uint8{3}}.Append(nil))))
	f.Add(fuzzSegment(tcpACK, true, false, []byte{30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2, 30, 2}))
	f.Add(fuzzSegment(tcpRST|tcpACK, false, true, []byte{30, 3, 0x50, 30, 4, 0x81, 2, 30, 3, 0x20, 1, 1}))

	p := newParseTester(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		p.check(t, data[0], data[1]&1 != 0, data[1]&2 != 0, data[2:])
	})
}

// TestBPFOptionsRandom runs the FuzzBPFOptions property on generated areas, so that plain `go
// test` covers more than the seeds: sequences of codec options, malformed ones and other kinds,
// sometimes with a byte overwritten or cut short.
func TestBPFOptionsRandom(t *testing.T) {
	p := newParseTester(t)
	r := rand.New(rand.NewPCG(11, 12))
	vecs, bad := wire.Vectors(), wire.MalformedVectors()
	flagChoices := []uint8{tcpSYN, tcpSYN | tcpACK, tcpACK, tcpACK | tcpRST, tcpRST, tcpACK | tcpFIN}
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		var area []byte
		for len(area) < 40 && r.IntN(5) != 0 {
			switch r.IntN(4) {
			case 0, 1:
				area = append(area, vecs[r.IntN(len(vecs))].Bytes...)
			case 2:
				area = append(area, bad[r.IntN(len(bad))].Bytes...)
			default:
				area = append(area, otherOptions[r.IntN(len(otherOptions))]...)
			}
		}
		if len(area) > 40 {
			area = area[:40]
		}
		if len(area) > 0 && r.IntN(3) == 0 {
			area[r.IntN(len(area))] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 {
			area = area[:r.IntN(len(area)+1)]
		}
		p.check(t, flagChoices[r.IntN(len(flagChoices))], r.IntN(2) == 0, r.IntN(2) == 0, area)
		if t.Failed() {
			return
		}
	}
}
