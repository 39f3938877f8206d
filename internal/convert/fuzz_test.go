package convert

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// FuzzParse checks that Parse and ReadMessage never panic, agree with each other, refuse only
// with a *ParseError carrying one of the codes a parser reports, and that every message Parse
// accepts re-encodes (Marshal accepts it) to the same bytes but for the fields RFC 8803 calls
// Unassigned or Zero: the fixed header's Unassigned 16 bits and the 16 bits after the length
// of the Info, Extended TCP Header, Supported TCP Extensions and Cookie TLVs (ignoredBytes).
// Parse ignores them and Marshal writes them as zero. Nothing else is lost: padding is kept
// where the RFC gives no length (Cookie, Extended TCP Header, Error values) and refused beyond
// 3 bytes where it can be told from content (Connect TCP options, Supported TCP Extensions),
// and an IPv4-mapped address, returned as IPv4, encodes back to the same 16 bytes.
//
// It is seeded from every vector and every malformed case. An input the fuzzer finds failing
// goes, once fixed, under testdata/fuzz/FuzzParse (none so far).
func FuzzParse(f *testing.F) {
	for _, v := range vectors() {
		f.Add(v.wire)
	}
	for _, c := range malformedCases() {
		f.Add(c.in)
	}
	f.Fuzz(checkParseProperty)
}

// TestParseRandom runs the FuzzParse property on random inputs so that plain `go test` covers
// it: vectors with a few bytes overwritten, cut or extended, and random bytes after a valid
// fixed header.
func TestParseRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(8803, 1))
	vs := vectors()
	n := 20000
	if testing.Short() {
		n = 2000
	}
	var accepted int
	for range n {
		var b []byte
		if r.IntN(2) == 0 {
			b = bytes.Clone(vs[r.IntN(len(vs))].wire)
			for range r.IntN(3) {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
			switch r.IntN(4) {
			case 0:
				b = append(b, byte(r.Uint32()), byte(r.Uint32()))
			case 1:
				b = b[:r.IntN(len(b)+1)]
			}
		} else {
			words := 1 + r.IntN(8)
			b = make([]byte, 4*words)
			b[0], b[1] = Version, byte(words)
			for i := 4; i < len(b); i++ {
				b[i] = byte(r.Uint32())
			}
			// A plausible TLV header most of the time.
			if words > 1 && r.IntN(4) != 0 {
				types := []Type{TypeInfo, TypeConnect, TypeExtendedTCPHeader, TypeSupportedTCPExtensions, TypeCookie, TypeError}
				b[4], b[5] = byte(types[r.IntN(len(types))]), byte(1+r.IntN(words-1))
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
	m, n, err := Parse(b)
	rm, rerr := ReadMessage(iotest.OneByteReader(bytes.NewReader(b)))
	if err != nil {
		pe, ok := errors.AsType[*ParseError](err)
		if !ok {
			t.Fatalf("Parse(% x) = %v, not a *ParseError", b, err)
		}
		if pe.Code > CodeUnsupportedMessage || n != 0 || m.TLVs != nil {
			t.Fatalf("Parse(% x) = %v, %d, %v", b, m, n, err)
		}
		if len(pe.Received) > MaxLen || !bytes.HasPrefix(b, pe.Received) {
			t.Fatalf("Parse(% x): Received % x", b, pe.Received)
		}
		if reply, err := (Message{TLVs: []TLV{pe.Reply()}}).Marshal(); err != nil {
			t.Fatalf("Parse(% x): Reply %v does not encode: %v", b, pe.Reply(), err)
		} else if _, _, err := Parse(reply); err != nil {
			t.Fatalf("Parse(% x): Reply % x does not parse: %v", b, reply, err)
		}
		if len(b) == 0 {
			if rerr != io.EOF {
				t.Fatalf("ReadMessage of nothing = %v", rerr)
			}
			return
		}
		rpe, ok := errors.AsType[*ParseError](rerr)
		if !ok || rpe.Code != pe.Code || rpe.Offset != pe.Offset ||
			errors.Is(rerr, io.ErrUnexpectedEOF) != errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("input % x: Parse says %v, ReadMessage %v", b, err, rerr)
		}
		return
	}
	if rerr != nil || !equalMessages(m, rm) {
		t.Fatalf("input % x: Parse gives %#v, ReadMessage %#v, %v", b, m, rm, rerr)
	}
	if n < HeaderLen || n > len(b) || n > MaxLen || n != int(b[1])*4 || m.Len() != n {
		t.Fatalf("Parse(% x) consumed %d, Len %d", b, n, m.Len())
	}
	enc, err := m.Marshal()
	if err != nil {
		t.Fatalf("Parse(% x) = %#v, which Marshal refuses: %v", b, m, err)
	}
	if len(enc) != n {
		t.Fatalf("Parse(% x) = %#v; Marshal gives %d bytes, want %d", b, m, len(enc), n)
	}
	ignored := ignoredBytes(b[:n])
	for i := range n {
		if ignored[i] {
			if enc[i] != 0 {
				t.Fatalf("Parse(% x): Marshal gives % x, non-zero reserved byte %d", b[:n], enc, i)
			}
		} else if enc[i] != b[i] {
			t.Fatalf("Parse(% x) = %#v; Marshal gives % x, differing at byte %d", b[:n], m, enc, i)
		}
	}
	m2, n2, err := Parse(enc)
	if err != nil || n2 != n || !equalMessages(m, m2) {
		t.Fatalf("Parse(% x) = %#v; re-parse of % x = %#v, %d, %v", b[:n], m, enc, m2, n2, err)
	}
}

// ignoredBytes marks the bytes of an accepted message that Parse ignores: the Unassigned field
// of the fixed header (§5.1) and the Zero or Unassigned field of the Info (§5.2.3), Supported
// TCP Extensions (§5.2.4), Extended TCP Header (§5.2.6) and Cookie (§5.2.7) TLVs. Written
// from the RFC's figures, walking the TLVs by their length bytes.
func ignoredBytes(b []byte) []bool {
	m := make([]bool, len(b))
	m[2], m[3] = true, true
	for off := HeaderLen; off+1 < len(b) && b[off+1] != 0; off += 4 * int(b[off+1]) {
		switch Type(b[off]) {
		case TypeInfo, TypeSupportedTCPExtensions, TypeExtendedTCPHeader, TypeCookie:
			m[off+2], m[off+3] = true, true
		}
	}
	return m
}
