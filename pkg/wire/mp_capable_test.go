package wire

import (
	"errors"
	"testing"
)

func TestMPCapableDecode(t *testing.T) {
	// RFC 8684 §3.1: first data segment with checksum, A and H set.
	b := []byte{
		30, 24, 0x01, 0x81, // kind, length, subtype 0 | version 1, A...H = 1000 0001
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // option sender's key
		0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe, // option receiver's key
		0x05, 0xdc, // data-level length 1500
		0x12, 0x34, // checksum
	}
	o, n, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := o.(MPCapable)
	if !ok {
		t.Fatalf("Parse returned %T", o)
	}
	if n != 24 || m.Form != MPCDataCsum || m.Version != 1 || m.Flags != FlagChecksum|FlagHMACSHA256 ||
		m.SenderKey != 0x0102030405060708 || m.ReceiverKey != 0xdeadbeefcafebabe ||
		m.DataLen != 1500 || m.Checksum != 0x1234 {
		t.Errorf("Parse = %+v, %d", m, n)
	}
}

func TestMPCapableVectors(t *testing.T) { checkVectors(t, "mp_capable/") }

func TestMPCapableEncode(t *testing.T) {
	for _, tc := range []struct {
		m    MPCapable
		want []byte
	}{
		{MPCapable{Form: MPCSyn, Version: 1, Flags: FlagHMACSHA256, SenderKey: 9, ReceiverKey: 9, DataLen: 9, Checksum: 9},
			[]byte{30, 4, 0x01, 0x01}},
		{MPCapable{Form: MPCSynAck, Version: 1, Flags: FlagHMACSHA256 | FlagNoJoinInitialAddr, SenderKey: 0x1122334455667788, ReceiverKey: 9},
			[]byte{30, 12, 0x01, 0x21, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}},
		// A Form outside the constants encodes as the SYN form.
		{MPCapable{Form: 200, Version: 1, Flags: FlagHMACSHA256}, []byte{30, 4, 0x01, 0x01}},
	} {
		if got := tc.m.Append(nil); string(got) != string(tc.want) || tc.m.Len() != len(tc.want) {
			t.Errorf("%+v: Append = % x (Len %d), want % x", tc.m, got, tc.m.Len(), tc.want)
		}
	}
}

func TestMPCapableLengths(t *testing.T) {
	checkLengths(t, 0x01, FlagHMACSHA256, 4, 12, 20, 22, 24)
	checkLengths(t, 0x01, FlagChecksum|FlagNoJoinInitialAddr|FlagHMACSHA256, 4, 12, 20, 22, 24)
}

// TestMPCapableVersionFlags checks the fields the kernel insists on: version 1
// (any version >= 1 on the SYN), H set, B and D-G clear. A and C are free.
func TestMPCapableVersionFlags(t *testing.T) {
	lens := map[MPCForm]int{MPCSyn: 4, MPCSynAck: 12, MPCAck: 20, MPCData: 22, MPCDataCsum: 24}
	for form, n := range lens {
		for version := range uint8(16) {
			b := make([]byte, n)
			b[0], b[1], b[2], b[3] = 30, byte(n), version, FlagHMACSHA256
			o, _, err := Parse(b)
			ok := version == 1 || form == MPCSyn && version > 1
			switch {
			case ok && err != nil:
				t.Errorf("%v version %d: %v", form, version, err)
			case ok && o.(MPCapable).Version != version:
				t.Errorf("%v version %d parsed as %d", form, version, o.(MPCapable).Version)
			case !ok && !errors.Is(err, ErrBadVersion):
				t.Errorf("%v version %d: %v, want ErrBadVersion", form, version, err)
			}
		}
		for flags := range 256 {
			b := make([]byte, n)
			b[0], b[1], b[2], b[3] = 30, byte(n), 0x01, byte(flags)
			o, _, err := Parse(b)
			ok := flags&0x01 != 0 && flags&0x5e == 0
			switch {
			case ok && err != nil:
				t.Errorf("%v flags %#02x: %v", form, flags, err)
			case ok && o.(MPCapable).Flags != byte(flags):
				t.Errorf("%v flags %#02x parsed as %#02x", form, flags, o.(MPCapable).Flags)
			case !ok && !errors.Is(err, ErrBadFlags):
				t.Errorf("%v flags %#02x: %v, want ErrBadFlags", form, flags, err)
			}
		}
	}
}

func TestMPCapableFitsSegment(t *testing.T) {
	for _, tc := range []struct {
		syn, ack, payload bool
		want              MPCForm
		also              MPCForm
	}{
		{true, false, false, MPCSyn, MPCSyn},
		{true, false, true, MPCSyn, MPCSyn}, // SYN with data (TFO) still carries the SYN form
		{true, true, false, MPCSynAck, MPCSynAck},
		{false, true, false, MPCAck, MPCAck},
		{false, true, true, MPCData, MPCDataCsum},
	} {
		for f := MPCSyn; f <= MPCDataCsum; f++ {
			want := f == tc.want || f == tc.also
			if got := (MPCapable{Form: f}).FitsSegment(tc.syn, tc.ack, tc.payload); got != want {
				t.Errorf("%v.FitsSegment(syn=%v, ack=%v, payload=%v) = %v", f, tc.syn, tc.ack, tc.payload, got)
			}
		}
	}
}

func TestMPCFormString(t *testing.T) {
	for f, want := range map[MPCForm]string{MPCSyn: "SYN", MPCSynAck: "SYN/ACK", MPCAck: "ACK",
		MPCData: "data", MPCDataCsum: "data+checksum", 9: "MPCForm(9)"} {
		if got := f.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", f, got, want)
		}
	}
}
