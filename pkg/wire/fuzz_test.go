package wire

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse and the TCP options walker never panic and that
// every option Parse accepts re-encodes to bytes that parse to the same option
// with the same length (quic-go FuzzFrames). It is seeded from the Append of
// every option form in Vectors and from MalformedVectors.
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
}
