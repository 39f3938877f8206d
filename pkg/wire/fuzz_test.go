package wire

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse and the TCP options walker never panic, that
// every option Parse accepts re-encodes to bytes that parse to the same option
// with the same length (quic-go FuzzFrames), and that the re-encoding gives the
// input's own bytes where the input's encoding is canonical.
//
// Canonical: Parse fixes the form (and so the length) from the length byte and
// the flags, and keeps every field and flag bit, except the bits RFC 8684 calls
// reserved, which it ignores and Append writes as zero (ignoredBits lists them:
// the low nibble of byte 2 but for the MP_JOIN and MP_PRIO backup bit, the
// ADD_ADDR echo bit and the MP_CAPABLE version and MP_TCPRST flags, which are
// kept; byte 3 of the MP_JOIN third ACK, MP_FAIL and MP_FASTCLOSE; the three high
// bits of the DSS flags). An accepted input is canonical when those bits are
// zero, and then Append gives exactly its bytes. For any accepted input, Append
// gives the input's bytes with those bits cleared. Every input Parse accepts has
// a canonical form of the same length: no field is widened or narrowed (a 32-bit
// DSN or DATA_ACK stays 32-bit, a checksum stays present).
//
// It is seeded from the Append of every option form in Vectors and from
// MalformedVectors; testdata/fuzz/FuzzParse holds inputs the fuzzer found that
// reached new code.
func FuzzParse(f *testing.F) {
	for _, v := range Vectors() {
		f.Add(v.Option.Append(nil))
		f.Add(AppendPadded([]byte{1, 1}, v.Option))
	}
	for _, v := range MalformedVectors() {
		f.Add(v.Bytes)
	}
	f.Fuzz(checkParseProperty)
}

// TestParseRandom runs the FuzzParse property on random inputs so plain `go
// test` covers it too: half are vectors with a few bytes overwritten (and
// sometimes a trailer or a cut), half are random bytes after kind 30.
func TestParseRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vectors := Vectors()
	n := 200000
	if testing.Short() {
		n = 20000
	}
	var accepted int
	for range n {
		var b []byte
		if r.IntN(2) == 0 {
			b = bytes.Clone(vectors[r.IntN(len(vectors))].Bytes)
			for range r.IntN(4) {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
			switch r.IntN(4) {
			case 0:
				b = append(b, byte(r.Uint32()), byte(r.Uint32()))
			case 1:
				b = b[:r.IntN(len(b)+1)]
			}
		} else {
			b = make([]byte, r.IntN(45))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if len(b) > 0 {
				b[0] = OptionKind
			}
		}
		checkParseProperty(t, b)
		if _, _, err := Parse(b); err == nil {
			accepted++
		}
	}
	if accepted < n/10 {
		t.Errorf("only %d of %d random inputs parsed; the generator is too weak", accepted, n)
	}
	t.Logf("%d of %d random inputs parsed", accepted, n)
}

func checkParseProperty(t *testing.T, b []byte) {
	_ = WalkTCPOptions(b, func(kind uint8, opt []byte) bool {
		if len(opt) < 2 || opt[0] != kind || int(opt[1]) != len(opt) {
			t.Fatalf("walker passed kind %d, option % x", kind, opt)
		}
		return true
	})
	opts, _ := ParseMPTCPOptions(b)
	for _, o := range opts {
		if o == nil {
			t.Fatal("ParseMPTCPOptions returned a nil option")
		}
	}

	o, n, err := Parse(b)
	if err != nil {
		if o != nil || n != 0 {
			t.Fatalf("Parse(% x) = %#v, %d with error %v", b, o, n, err)
		}
		return
	}
	if n < 3 || n > len(b) || n != int(b[1]) || o.Len() != n {
		t.Fatalf("Parse(% x) consumed %d, Len %d", b, n, o.Len())
	}
	enc := o.Append(nil)
	if len(enc) != n {
		t.Fatalf("Parse(% x) = %#v; Append gives %d bytes, want %d", b, o, len(enc), n)
	}
	o2, n2, err := Parse(enc)
	if err != nil || n2 != n || !reflect.DeepEqual(o, o2) {
		t.Fatalf("Parse(% x) = %#v; re-parse of % x = %#v, %d, %v", b, o, enc, o2, n2, err)
	}
	if enc2 := o2.Append(nil); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding not stable: % x then % x", enc, enc2)
	}
	mask := ignoredBits(b[:n])
	for i := range n {
		if enc[i]&mask[i] != 0 {
			t.Fatalf("Parse(% x) = %#v; Append gives % x, with reserved bits set at byte %d", b[:n], o, enc, i)
		}
		if (enc[i]^b[i])&^mask[i] != 0 {
			t.Fatalf("Parse(% x) = %#v; Append gives % x, differing at byte %d outside the reserved bits %#02x", b[:n], o, enc, i, mask[i])
		}
	}
}

// ignoredBits returns, for an accepted option b, a mask of the bits Parse ignores and Append
// writes as zero: the reserved bits of RFC 8684 §3 for its subtype and form. Written from the
// RFC's figures, not from the codec's constants.
func ignoredBits(b []byte) []byte {
	m := make([]byte, len(b))
	switch Subtype(b[2] >> 4) {
	case SubtypeMPCapable:
		// Version in the low nibble; flags A..H all kept (Parse refuses the ones it does not speak).
	case SubtypeMPJoin:
		if len(b) == 24 { // third ACK: reserved nibble and byte
			m[2], m[3] = 0x0f, 0xff
		} else { // SYN, SYN/ACK: reserved bits beside B
			m[2] = 0x0e
		}
	case SubtypeDSS:
		m[2], m[3] = 0x0f, 0xe0 // reserved nibble; flags keep F, m, M, a, A
	case SubtypeAddAddr:
		m[2] = 0x0e // reserved bits beside E
	case SubtypeRemoveAddr:
		m[2] = 0x0f
	case SubtypeMPPrio:
		m[2] = 0x0e // reserved bits beside B
	case SubtypeMPFail, SubtypeMPFastclose:
		m[2], m[3] = 0x0f, 0xff
	case SubtypeMPTCPRst:
		// U, V, W, T flags and the reason: all kept.
	}
	return m
}
