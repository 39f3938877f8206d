package wire

import (
	"errors"
	"testing"
)

func TestDSSDecode(t *testing.T) {
	// RFC 8684 §3.3: 8-byte data ACK and a mapping with 8-byte DSN
	// and checksum, DATA_FIN set: flags 000 1 1 1 1 1.
	b := []byte{
		30, 28, 0x20, 0x1f,
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // data ACK
		0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, // DSN
		0x00, 0x00, 0x00, 0x05, // SSN
		0x00, 0x06, // data-level length
		0x00, 0x07, // checksum
	}
	o, n, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := DSS{DataFIN: true, HasAck: true, Ack64: true, DataAck: 0x100000002,
		HasMap: true, DSN64: true, DSN: 0x300000004, SSN: 5, DataLen: 6, HasChecksum: true, Checksum: 7}
	if o != want || n != 28 {
		t.Errorf("Parse = %+v, %d; want %+v", o, n, want)
	}

	// 4-byte data ACK and a mapping with a 4-byte DSN, no checksum: flags 000 0 0 1 0 1.
	b = []byte{30, 4 + 4 + 10, 0x20, 0x05, 0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0x05, 0xa0}
	o, _, err = Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want = DSS{HasAck: true, DataAck: 0xaabbccdd, HasMap: true, DSN: 0x11223344, SSN: 1, DataLen: 1440}
	if o != want {
		t.Errorf("Parse = %+v; want %+v", o, want)
	}
}

// TestDSSVectors covers all 32 flag combinations with and without checksum.
func TestDSSVectors(t *testing.T) { checkVectors(t, "dss/") }

// TestDSSRoundTripAll builds every combination of flags and checksum with
// maximal field values and checks Append and Parse agree.
func TestDSSRoundTripAll(t *testing.T) {
	for flags := range 32 {
		for _, csum := range []bool{false, true} {
			d := DSS{
				DataFIN: flags&1 != 0, HasAck: flags&2 != 0, Ack64: flags&4 != 0,
				HasMap: flags&8 != 0, DSN64: flags&16 != 0, HasChecksum: csum,
			}
			if d.HasAck {
				d.DataAck = 0xffffffff
				if d.Ack64 {
					d.DataAck = 0xfedcba9876543210
				}
			}
			if d.HasMap {
				d.DSN = 0x89abcdef
				if d.DSN64 {
					d.DSN = 0xffffffffffffffff
				}
				d.SSN, d.DataLen = 0xffffffff, 0xffff
			}
			if csum {
				d.Checksum = 0xffff
			}
			b := d.Append(nil)
			if len(b) != d.Len() || len(b) > MaxDSSLen {
				t.Errorf("%+v: len %d, Len %d", d, len(b), d.Len())
			}
			got, n, err := Parse(b)
			if err != nil || got != d || n != len(b) {
				t.Errorf("Parse(Append(%+v)) = %+v, %d, %v", d, got, n, err)
			}
		}
	}
}

func TestDSSTruncates32(t *testing.T) {
	// Append writes the low 32 bits of a 4-byte DSN or data ACK.
	d := DSS{HasAck: true, DataAck: 0x1122334455667788, HasMap: true, DSN: 0x99aabbccddeeff00, SSN: 1, DataLen: 2}
	want := []byte{30, 18, 0x20, 0x05, 0x55, 0x66, 0x77, 0x88, 0xdd, 0xee, 0xff, 0x00, 0, 0, 0, 1, 0, 2}
	if got := d.Append(nil); string(got) != string(want) {
		t.Errorf("Append = % x, want % x", got, want)
	}
}

func TestDSSLengths(t *testing.T) {
	// Every flag byte: only the low five bits matter, and the length must be
	// exactly 4 + ack + map, or that + 2.
	for flags := range 256 {
		exp := 4
		if flags&dssHasAck != 0 {
			exp += 4
			if flags&dssAck64 != 0 {
				exp += 4
			}
		}
		if flags&dssHasMap != 0 {
			exp += 10
			if flags&dssDSN64 != 0 {
				exp += 4
			}
		}
		checkLengths(t, 0x20, byte(flags), exp, exp+2)
	}
}

// TestDSSLenient covers what the kernel accepts although the RFC would not
// produce it: a checksum without a mapping, a or m without A or M.
func TestDSSLenient(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want DSS
	}{
		{[]byte{30, 6, 0x20, 0x00, 0xab, 0xcd}, DSS{HasChecksum: true, Checksum: 0xabcd}},
		{[]byte{30, 10, 0x20, 0x01, 0, 0, 0, 9, 0xab, 0xcd}, DSS{HasAck: true, DataAck: 9, HasChecksum: true, Checksum: 0xabcd}},
		{[]byte{30, 4, 0x20, 0x0a}, DSS{Ack64: true, DSN64: true}},
		{[]byte{30, 4, 0x20, 0x10}, DSS{DataFIN: true}},
	} {
		got, n, err := Parse(tc.b)
		if err != nil || got != tc.want || n != len(tc.b) {
			t.Errorf("Parse(% x) = %+v, %d, %v; want %+v", tc.b, got, n, err, tc.want)
			continue
		}
		if b := got.Append(nil); string(b) != string(tc.b) {
			t.Errorf("Append(%+v) = % x, want % x", got, b, tc.b)
		}
	}
}

// TestDSSReserved: the reserved nibble of byte 2 and the three high bits of
// the flags byte are ignored.
func TestDSSReserved(t *testing.T) {
	clean := []byte{30, 8, 0x20, 0x01, 1, 2, 3, 4}
	dirty := []byte{30, 8, 0x2f, 0xe1, 1, 2, 3, 4}
	a, _, err1 := Parse(clean)
	b, _, err2 := Parse(dirty)
	if err1 != nil || err2 != nil || a != b {
		t.Errorf("Parse(clean) = %+v, %v; Parse(dirty) = %+v, %v", a, err1, b, err2)
	}
}

func TestDSSShortBuffer(t *testing.T) {
	// Length 3 leaves no flags byte: rejected without reading past the option.
	if _, _, err := parseDSS([]byte{30, 3, 0x20}); !errors.Is(err, ErrBadLength) {
		t.Errorf("parseDSS(length 3) = %v, want ErrBadLength", err)
	}
}
