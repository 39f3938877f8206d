package wire

import "testing"

func TestMPPrioDecode(t *testing.T) {
	// RFC 8684 §3.3.8: B set.
	o, n, err := Parse([]byte{30, 3, 0x51})
	if err != nil || o != (MPPrio{Backup: true}) || n != 3 {
		t.Errorf("Parse = %+v, %d, %v", o, n, err)
	}
}

func TestMPPrioVectors(t *testing.T) { checkVectors(t, "mp_prio/") }

// TestMPPrioLengths: only the v1 form; the RFC 6824 4-byte form with an
// address ID is rejected, as by the kernel.
func TestMPPrioLengths(t *testing.T) {
	checkLengths(t, 0x50, 0x00, 3)
	checkLengths(t, 0x51, 0x05, 3)
}

func TestMPPrioReserved(t *testing.T) {
	for b2, want := range map[byte]bool{0x5e: false, 0x5f: true} {
		o, _, err := Parse([]byte{30, 3, b2})
		if err != nil || o != (MPPrio{Backup: want}) {
			t.Errorf("Parse(%02x) = %+v, %v", b2, o, err)
		}
	}
}
