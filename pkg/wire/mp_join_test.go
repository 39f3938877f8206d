package wire

import "testing"

func TestMPJoinDecode(t *testing.T) {
	// RFC 8684 §3.2: MP_JOIN on the SYN, backup set, address ID 3.
	b := []byte{30, 12, 0x11, 0x03, 0x66, 0x84, 0x0d, 0xda, 0xca, 0xfe, 0xf0, 0x0d}
	o, n, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := MPJoin{Form: MPJSyn, Backup: true, AddrID: 3, Token: 0x66840dda, Nonce: 0xcafef00d}
	if o != want || n != 12 {
		t.Errorf("Parse = %+v, %d; want %+v", o, n, want)
	}

	// MP_JOIN on the SYN/ACK, no backup, address ID 0.
	b = []byte{30, 16, 0x10, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 0xca, 0xfe, 0xf0, 0x0d}
	o, _, err = Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (MPJoin{Form: MPJSynAck, TruncHMAC: 0x0102030405060708, Nonce: 0xcafef00d}); o != want {
		t.Errorf("Parse = %+v; want %+v", o, want)
	}

	// MP_JOIN on the third ACK.
	b = []byte{30, 24, 0x10, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	o, _, err = Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (MPJoin{Form: MPJAck, HMAC: [20]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}}); o != want {
		t.Errorf("Parse = %+v; want %+v", o, want)
	}
}

func TestMPJoinVectors(t *testing.T) { checkVectors(t, "mp_join/") }

func TestMPJoinEncodeIgnoresOtherForms(t *testing.T) {
	// Fields of other forms are not written; the ACK has no backup flag or ID.
	j := MPJoin{Form: MPJAck, Backup: true, AddrID: 9, Token: 1, Nonce: 2, TruncHMAC: 3}
	want := append([]byte{30, 24, 0x10, 0x00}, make([]byte, 20)...)
	if got := j.Append(nil); string(got) != string(want) {
		t.Errorf("Append = % x, want % x", got, want)
	}
	j = MPJoin{Form: 77, AddrID: 1, Token: 2, Nonce: 3}
	if got, want := j.Append(nil), []byte{30, 12, 0x10, 1, 0, 0, 0, 2, 0, 0, 0, 3}; string(got) != string(want) {
		t.Errorf("out-of-range form: Append = % x, want % x", got, want)
	}
}

func TestMPJoinLengths(t *testing.T) {
	checkLengths(t, 0x10, 0x00, 12, 16, 24)
	checkLengths(t, 0x1f, 0xff, 12, 16, 24)
}

// TestMPJoinReserved: the kernel reads only bit 0 (B) of the low nibble and
// skips the reserved 12 bits of the ACK form.
func TestMPJoinReserved(t *testing.T) {
	for _, tc := range []struct{ clean, dirty []byte }{
		{[]byte{30, 12, 0x10, 7, 1, 2, 3, 4, 5, 6, 7, 8}, []byte{30, 12, 0x1e, 7, 1, 2, 3, 4, 5, 6, 7, 8}},
		{[]byte{30, 12, 0x11, 7, 1, 2, 3, 4, 5, 6, 7, 8}, []byte{30, 12, 0x1f, 7, 1, 2, 3, 4, 5, 6, 7, 8}},
		{[]byte{30, 16, 0x11, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9}, []byte{30, 16, 0x1f, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9}},
		{append([]byte{30, 24, 0x10, 0x00}, make([]byte, 20)...), append([]byte{30, 24, 0x1f, 0xff}, make([]byte, 20)...)},
	} {
		a, _, err1 := Parse(tc.clean)
		b, _, err2 := Parse(tc.dirty)
		if err1 != nil || err2 != nil || a != b {
			t.Errorf("Parse(% x) = %+v, %v; Parse(% x) = %+v, %v", tc.clean, a, err1, tc.dirty, b, err2)
		}
	}
}

func TestMPJFormString(t *testing.T) {
	for f, want := range map[MPJForm]string{MPJSyn: "SYN", MPJSynAck: "SYN/ACK", MPJAck: "ACK", 5: "MPJForm(5)"} {
		if got := f.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", f, got, want)
		}
	}
}
