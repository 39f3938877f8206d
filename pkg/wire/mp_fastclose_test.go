package wire

import "testing"

func TestMPFastcloseDecode(t *testing.T) {
	// RFC 8684 §3.5: reserved 12 bits, then the receiver's key.
	b := []byte{30, 12, 0x70, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	o, n, err := Parse(b)
	if err != nil || o != (MPFastclose{ReceiverKey: 0x0102030405060708}) || n != 12 {
		t.Errorf("Parse = %+v, %d, %v", o, n, err)
	}
}

func TestMPFastcloseVectors(t *testing.T) { checkVectors(t, "mp_fastclose") }

func TestMPFastcloseLengths(t *testing.T) { checkLengths(t, 0x70, 0x00, 12) }

func TestMPFastcloseReserved(t *testing.T) {
	o, _, err := Parse([]byte{30, 12, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0, 2})
	if err != nil || o != (MPFastclose{ReceiverKey: 2}) {
		t.Errorf("Parse = %+v, %v", o, err)
	}
}
