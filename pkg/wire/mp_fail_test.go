package wire

import "testing"

func TestMPFailDecode(t *testing.T) {
	// RFC 8684 §3.7: reserved 12 bits, then the 64-bit DSN.
	b := []byte{30, 12, 0x60, 0x00, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}
	o, n, err := Parse(b)
	if err != nil || o != (MPFail{DSN: 0xdeadbeef}) || n != 12 {
		t.Errorf("Parse = %+v, %d, %v", o, n, err)
	}
}

func TestMPFailVectors(t *testing.T) { checkVectors(t, "mp_fail") }

func TestMPFailLengths(t *testing.T) { checkLengths(t, 0x60, 0x00, 12) }

func TestMPFailReserved(t *testing.T) {
	o, _, err := Parse([]byte{30, 12, 0x6f, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	if err != nil || o != (MPFail{DSN: 1}) {
		t.Errorf("Parse = %+v, %v", o, err)
	}
}
