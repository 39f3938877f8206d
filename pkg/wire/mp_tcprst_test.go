package wire

import "testing"

func TestMPTCPRstDecode(t *testing.T) {
	// RFC 8684 §3.6: U V W T = 0 0 0 1, reason 5.
	o, n, err := Parse([]byte{30, 4, 0x81, 0x05})
	if err != nil || n != 4 {
		t.Fatalf("Parse = %+v, %d, %v", o, n, err)
	}
	r := o.(MPTCPRst)
	if r != (MPTCPRst{Flags: RstFlagTransient, Reason: RstEBadPerf}) || !r.Transient() {
		t.Errorf("Parse = %+v", r)
	}
}

func TestMPTCPRstVectors(t *testing.T) { checkVectors(t, "mp_tcprst/") }

func TestMPTCPRstLengths(t *testing.T) { checkLengths(t, 0x81, 0x01, 4) }

// TestMPTCPRstFlags: the unassigned U, V, W bits are preserved both ways and
// any reason value is accepted.
func TestMPTCPRstFlags(t *testing.T) {
	for flags := range uint8(16) {
		for _, reason := range []uint8{0, 6, 7, 255} {
			r := MPTCPRst{Flags: flags, Reason: reason}
			b := r.Append(nil)
			if b[2] != 0x80|flags || b[3] != reason {
				t.Errorf("Append(%+v) = % x", r, b)
			}
			o, _, err := Parse(b)
			if err != nil || o != r {
				t.Errorf("Parse(% x) = %+v, %v", b, o, err)
			}
		}
	}
	// Only the low nibble of Flags is written.
	if b := (MPTCPRst{Flags: 0xf1}).Append(nil); b[2] != 0x81 {
		t.Errorf("Append(Flags 0xf1) = % x", b)
	}
}

func TestReasonString(t *testing.T) {
	for r, want := range map[uint8]string{
		RstEUnspec: "unspecified error", RstEMPTCP: "MPTCP-specific error",
		RstEResource: "lack of resources", RstEProhibit: "administratively prohibited",
		RstEWQ2Big: "too much outstanding data", RstEBadPerf: "unacceptable performance",
		RstEMiddlebox: "middlebox interference", 7: "reason 7",
	} {
		if got := ReasonString(r); got != want {
			t.Errorf("ReasonString(%d) = %q, want %q", r, got, want)
		}
	}
}
