package dsscsum

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// reference is the checksum written out as RFC 8684 §3.3.1 and RFC 1071 say: the pseudo-header
// and the data as one buffer of 16-bit big-endian words (an odd last byte padded with zero),
// summed with end-around carry, complemented.
func reference(dsn uint64, ssn uint32, length uint16, data []byte) uint16 {
	b := make([]byte, 16, 16+len(data)+1)
	binary.BigEndian.PutUint64(b, dsn)
	binary.BigEndian.PutUint32(b[8:], ssn)
	binary.BigEndian.PutUint16(b[12:], length)
	b = append(b, data...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

// A known vector: the kernel's __mptcp_make_csum over DSN 1, SSN 1, length 1, the byte 'a'.
func TestKnownVector(t *testing.T) {
	// Words: 0000 0000 0000 0001 | 0000 0001 | 0001 | 0000 | 6100 → 0x6103, complemented 0x9efc.
	if got := Checksum(1, 1, 1, []byte{'a'}); got != 0x9efc {
		t.Fatalf("checksum %#04x, want 0x9efc", got)
	}
}

// The checksum over data cut into pieces of any length, odd ones included, equals the
// reference.
func TestPiecesMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		data := make([]byte, r.IntN(3000))
		for k := range data {
			data[k] = byte(r.Uint32())
		}
		dsn, ssn := r.Uint64(), r.Uint32()
		length := uint16(len(data))
		if i%3 == 0 {
			length++ // a DATA_FIN on the mapping
		}
		want := reference(dsn, ssn, length, data)
		var s Sum
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(70))
			s.Add(rest[:n])
			rest = rest[n:]
		}
		if got := Finish(Partial(dsn, ssn, &s), length); got != want {
			t.Fatalf("case %d (%d bytes): checksum %#04x, reference %#04x", i, len(data), got, want)
		}
	}
}

func BenchmarkSum(b *testing.B) {
	data := make([]byte, 64<<10)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var s Sum
		s.Add(data)
		_ = s.Fold()
	}
}
