package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

type seenOpt struct {
	kind uint8
	opt  []byte
}

func walkAll(opts []byte) ([]seenOpt, error) {
	var seen []seenOpt
	err := WalkTCPOptions(opts, func(kind uint8, opt []byte) bool {
		seen = append(seen, seenOpt{kind, bytes.Clone(opt)})
		return true
	})
	return seen, err
}

var (
	optMSS      = []byte{2, 4, 0x05, 0xb4}
	optSACKPerm = []byte{4, 2}
	optTS       = []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	optWS       = []byte{3, 3, 7}
	optSACK     = []byte{5, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0}
	optMPCSyn   = []byte{30, 4, 0x01, 0x01}
	optDSS      = []byte{30, 8, 0x20, 0x01, 0, 0, 0, 9}
	optAddAddr  = []byte{30, 16, 0x30, 5, 10, 0, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestWalkTCPOptions(t *testing.T) {
	nop, eol := []byte{1}, []byte{0}
	for _, tc := range []struct {
		name string
		in   []byte
		want []seenOpt
		err  error
	}{
		{"empty", nil, nil, nil},
		{"only NOPs", []byte{1, 1, 1, 1}, nil, nil},
		{"SYN", cat(optMSS, optSACKPerm, optTS, nop, optWS, optMPCSyn),
			[]seenOpt{{2, optMSS}, {4, optSACKPerm}, {8, optTS}, {3, optWS}, {30, optMPCSyn}}, nil},
		{"ACK with SACK", cat(nop, nop, optTS, optDSS, nop, nop, optSACK),
			[]seenOpt{{8, optTS}, {30, optDSS}, {5, optSACK}}, nil},
		{"EOL ends", cat(optMPCSyn, eol, optDSS), []seenOpt{{30, optMPCSyn}}, nil},
		{"EOL then garbage", cat(nop, eol, []byte{30, 0, 0}), nil, nil},
		{"length 0", cat(optMSS, []byte{8, 0, 1, 2}), []seenOpt{{2, optMSS}}, ErrBadLength},
		{"length 1", cat(optTS, []byte{30, 1, 0x20, 0}), []seenOpt{{8, optTS}}, ErrBadLength},
		{"past end", cat(optTS, optDSS[:7]), []seenOpt{{8, optTS}}, ErrBadLength},
		{"kind without length", cat(optMPCSyn, []byte{30}), []seenOpt{{30, optMPCSyn}}, ErrBadLength},
		{"length 2 is fine", []byte{99, 2, 1}, []seenOpt{{99, []byte{99, 2}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen, err := walkAll(tc.in)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(seen, tc.want) {
				t.Errorf("saw %v, want %v", seen, tc.want)
			}
		})
	}
}

func TestWalkTCPOptionsStop(t *testing.T) {
	var n int
	err := WalkTCPOptions(cat(optMSS, optTS, []byte{8, 0}), func(uint8, []byte) bool {
		n++
		return false
	})
	if err != nil || n != 1 {
		t.Errorf("stopped walk: %d calls, %v", n, err)
	}
}

func TestWalkTCPOptionsCapacity(t *testing.T) {
	// fn may append to opt without clobbering the next option.
	in := cat(optMPCSyn, optDSS)
	orig := bytes.Clone(in)
	_ = WalkTCPOptions(in, func(_ uint8, opt []byte) bool {
		_ = append(opt, 0xff)
		return true
	})
	if !bytes.Equal(in, orig) {
		t.Errorf("walk let fn overwrite the options: % x", in)
	}
}

func TestParseMPTCPOptions(t *testing.T) {
	mpc := MPCapable{Form: MPCSyn, Version: 1, Flags: FlagHMACSHA256}
	dss := DSS{HasAck: true, DataAck: 9}
	add, _, _ := Parse(optAddAddr)
	for _, tc := range []struct {
		name      string
		in        []byte
		want      []Option
		malformed int
	}{
		{"none", cat(optMSS, optSACKPerm, optTS, []byte{1}, optWS), nil, 0},
		{"SYN", cat(optMSS, optSACKPerm, optTS, []byte{1}, optWS, optMPCSyn), []Option{mpc}, 0},
		{"several", cat([]byte{1, 1}, optTS, optDSS, optAddAddr), []Option{dss, add}, 0},
		{"bad MPTCP skipped", cat([]byte{30, 5, 0x01, 0x01, 0}, optDSS, []byte{30, 3, 0x90}, optMPCSyn),
			[]Option{dss, mpc}, 2},
		{"MPC with bad flags", cat([]byte{30, 4, 0x01, 0x41}, optDSS), []Option{dss}, 1},
		{"truncated MPTCP ends walk", cat(optDSS, optMPCSyn[:3]), []Option{dss}, 1},
		{"MPTCP length 1 ends walk", cat(optDSS, []byte{30, 1, 0x20, 0}), []Option{dss}, 1},
		{"other kind bad length ends walk", cat(optDSS, []byte{8, 0}, optMPCSyn), []Option{dss}, 0},
		{"after EOL ignored", cat(optDSS, []byte{0}, optMPCSyn), []Option{dss}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, malformed := ParseMPTCPOptions(tc.in)
			if !reflect.DeepEqual(got, tc.want) || malformed != tc.malformed {
				t.Errorf("ParseMPTCPOptions = %#v, %d; want %#v, %d", got, malformed, tc.want, tc.malformed)
			}
		})
	}
}

func TestAppendPadded(t *testing.T) {
	for _, tc := range []struct {
		o    Option
		want []byte
	}{
		{MPCapable{Form: MPCSyn, Version: 1, Flags: FlagHMACSHA256}, []byte{30, 4, 0x01, 0x01}},
		{MPPrio{Backup: true}, []byte{30, 3, 0x51, 1}},
		{RemoveAddr{IDs: []uint8{1, 2}}, []byte{30, 5, 0x40, 1, 2, 1, 1, 1}},
		{AddAddr{Echo: true, AddrID: 1, Addr: netip.AddrFrom4([4]byte{10, 0, 0, 1}), Port: 80}, []byte{30, 10, 0x31, 1, 10, 0, 0, 1, 0, 80, 1, 1}},
	} {
		if got := AppendPadded(nil, tc.o); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendPadded(%+v) = % x, want % x", tc.o, got, tc.want)
		}
		// Padding is relative to the start of the option.
		got := AppendPadded([]byte{1}, tc.o)
		if !bytes.Equal(got, append([]byte{1}, tc.want...)) {
			t.Errorf("AppendPadded(prefix, %+v) = % x", tc.o, got)
		}
	}
	// Every vector pads to a multiple of 4 and walks back to the same option.
	for _, v := range Vectors() {
		b := AppendPadded(nil, v.Option)
		if len(b)%4 != 0 || len(b)-v.Option.Len() > 3 {
			t.Errorf("%s: padded to %d bytes", v.Name, len(b))
		}
		got, malformed := ParseMPTCPOptions(b)
		if malformed != 0 || len(got) != 1 || !reflect.DeepEqual(got[0], v.Option) {
			t.Errorf("%s: ParseMPTCPOptions(padded) = %#v, %d", v.Name, got, malformed)
		}
	}
}
