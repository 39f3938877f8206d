package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// checkOption checks that o encodes to exactly want, that Len agrees, that
// Append appends without touching the prefix, and that Parse(want) returns o
// and consumes len(want) bytes even with trailing bytes after the option.
func checkOption(t *testing.T, o Option, want []byte) {
	t.Helper()
	if got := o.Append(nil); !bytes.Equal(got, want) {
		t.Errorf("%T.Append(nil) = % x, want % x", o, got, want)
	}
	if o.Len() != len(want) {
		t.Errorf("%T.Len() = %d, want %d", o, o.Len(), len(want))
	}
	if n := len(o.Append(nil)); n != o.Len() {
		t.Errorf("len(Append(nil)) = %d, Len() = %d", n, o.Len())
	}
	prefix := []byte{0xaa, 0xbb}
	if got := o.Append(prefix[:2:2]); !bytes.Equal(got[:2], prefix) || !bytes.Equal(got[2:], want) {
		t.Errorf("Append(prefix) = % x", got)
	}
	for _, trailer := range [][]byte{nil, {1, 1, 0, 0xff}} {
		in := append(bytes.Clone(want), trailer...)
		got, n, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(% x): %v", in, err)
			continue
		}
		if n != len(want) {
			t.Errorf("Parse(% x) consumed %d, want %d", in, n, len(want))
		}
		if !reflect.DeepEqual(got, o) {
			t.Errorf("Parse(% x) = %#v, want %#v", in, got, o)
		}
		if got.Subtype() != Subtype(want[2]>>4) {
			t.Errorf("Subtype() = %v, want %v", got.Subtype(), Subtype(want[2]>>4))
		}
	}
}

// checkTruncated checks that every proper prefix of a valid option fails with
// ErrTruncated.
func checkTruncated(t *testing.T, b []byte) {
	t.Helper()
	for k := range len(b) {
		o, n, err := Parse(b[:k])
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("Parse(% x) = %v, %d, %v; want ErrTruncated", b[:k], o, n, err)
		}
		if o != nil || n != 0 {
			t.Errorf("Parse(% x) returned %v, %d with an error", b[:k], o, n)
		}
	}
}

// checkVectors runs checkOption and checkTruncated on every vector whose name
// starts with prefix.
func checkVectors(t *testing.T, prefix string) {
	t.Helper()
	var found bool
	for _, v := range Vectors() {
		if !strings.HasPrefix(v.Name, prefix) {
			continue
		}
		found = true
		t.Run(v.Name, func(t *testing.T) {
			checkOption(t, v.Option, v.Bytes)
			checkTruncated(t, v.Bytes)
		})
	}
	if !found {
		t.Fatalf("no vectors named %s*", prefix)
	}
}

// checkLengths sets the length byte of an option starting with kind, _, b2, b3
// to every value 0..40 (in a 40-byte buffer, so nothing is truncated) and
// checks that Parse accepts exactly the lengths in ok and rejects the others
// with ErrBadLength.
func checkLengths(t *testing.T, b2, b3 byte, ok ...int) {
	t.Helper()
	for n := 0; n <= 40; n++ {
		b := make([]byte, 40)
		b[0], b[1], b[2], b[3] = OptionKind, byte(n), b2, b3
		o, got, err := Parse(b)
		switch want := contains(ok, n); {
		case want && err != nil:
			t.Errorf("%02x %02x: length %d rejected: %v", b2, b3, n, err)
		case want && got != n:
			t.Errorf("%02x %02x: length %d consumed %d", b2, b3, n, got)
		case want && o.Len() != n:
			t.Errorf("%02x %02x: length %d parsed to %#v with Len %d", b2, b3, n, o, o.Len())
		case !want && !errors.Is(err, ErrBadLength):
			t.Errorf("%02x %02x: length %d = %#v, %v; want ErrBadLength", b2, b3, n, o, err)
		}
	}
}

func contains(s []int, n int) bool {
	for _, v := range s {
		if v == n {
			return true
		}
	}
	return false
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrTruncated},
		{"kind only", []byte{30}, ErrTruncated},
		{"kind and length", []byte{30, 4}, ErrTruncated},
		{"length 2 without subtype", []byte{30, 2}, ErrBadLength},
		{"length 3 without subtype", []byte{30, 3}, ErrTruncated},
		{"length 0", []byte{30, 0, 0x01, 0x01}, ErrBadLength},
		{"length 1", []byte{30, 1, 0x01, 0x01}, ErrBadLength},
		{"length 2", []byte{30, 2, 0x01, 0x01}, ErrBadLength},
		{"past end", []byte{30, 5, 0x01, 0x01}, ErrTruncated},
		{"kind 0", []byte{0, 4, 0x01, 0x01}, ErrBadKind},
		{"kind 29", []byte{29, 4, 0x01, 0x01}, ErrBadKind},
		{"kind checked before length", []byte{8, 10}, ErrBadKind},
		{"subtype 9", []byte{30, 4, 0x90, 0}, ErrUnknownSubtype},
		{"subtype 14", []byte{30, 3, 0xe0}, ErrUnknownSubtype},
		{"subtype 15", []byte{30, 12, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnknownSubtype},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, n, err := Parse(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse(% x) = %v, %d, %v; want %v", tc.in, o, n, err, tc.want)
			}
			if o != nil || n != 0 {
				t.Errorf("Parse returned %v, %d with an error", o, n)
			}
		})
	}
}

// TestParseXWrongSubtype checks the suboption parsers on their own: each
// rejects another subtype and a wrong kind.
func TestParseXWrongSubtype(t *testing.T) {
	b := []byte{30, 12, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	k := []byte{31, 12, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for st, parse := range map[Subtype]func([]byte) (Option, int, error){
		SubtypeMPCapable:   func(b []byte) (Option, int, error) { return parseMPCapable(b) },
		SubtypeMPJoin:      func(b []byte) (Option, int, error) { return parseMPJoin(b) },
		SubtypeDSS:         func(b []byte) (Option, int, error) { return parseDSS(b) },
		SubtypeAddAddr:     func(b []byte) (Option, int, error) { return parseAddAddr(b) },
		SubtypeRemoveAddr:  func(b []byte) (Option, int, error) { return parseRemoveAddr(b) },
		SubtypeMPPrio:      func(b []byte) (Option, int, error) { return parseMPPrio(b) },
		SubtypeMPFail:      func(b []byte) (Option, int, error) { return parseMPFail(b) },
		SubtypeMPFastclose: func(b []byte) (Option, int, error) { return parseMPFastclose(b) },
		SubtypeMPTCPRst:    func(b []byte) (Option, int, error) { return parseMPTCPRst(b) },
	} {
		if _, _, err := parse(b); !errors.Is(err, ErrUnknownSubtype) {
			t.Errorf("parse %v of subtype 15: %v, want ErrUnknownSubtype", st, err)
		}
		if _, _, err := parse(k); !errors.Is(err, ErrBadKind) {
			t.Errorf("parse %v of kind 31: %v, want ErrBadKind", st, err)
		}
		if _, _, err := parse(nil); !errors.Is(err, ErrTruncated) {
			t.Errorf("parse %v of nil: %v, want ErrTruncated", st, err)
		}
	}
}

func TestErrorsCarryContext(t *testing.T) {
	_, _, err := Parse([]byte{30, 5, 0x01, 0x01, 0})
	if err == nil || !strings.Contains(err.Error(), "MP_CAPABLE") || !strings.Contains(err.Error(), "length 5") {
		t.Errorf("error %q lacks context", err)
	}
}

func TestSubtypeString(t *testing.T) {
	want := []string{"MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR", "REMOVE_ADDR",
		"MP_PRIO", "MP_FAIL", "MP_FASTCLOSE", "MP_TCPRST"}
	for i, w := range want {
		if got := Subtype(i).String(); got != w {
			t.Errorf("Subtype(%d) = %q, want %q", i, got, w)
		}
	}
	if got := Subtype(12).String(); got != "subtype(12)" {
		t.Errorf("Subtype(12) = %q", got)
	}
}

// kernelAccepts is the acceptance rule of the kernel's mptcp_parse_option
// (net/mptcp/options.c), transcribed independently of this package: does the
// kernel record an option with length opsize and bytes 2 and 3 b2, b3? For
// MP_CAPABLE, whose expected length depends on the segment, it is the union
// over SYN, SYN/ACK, ACK and ACK with payload. The walker hands the parser only
// opsize >= 2.
func kernelAccepts(opsize int, b2, b3 byte) bool {
	if opsize < 2 {
		return false
	}
	switch b2 >> 4 {
	case 0: // MP_CAPABLE
		switch opsize {
		case 4, 12, 20, 22, 24:
		default:
			return false
		}
		version := b2 & 0x0f
		if opsize != 4 && version != 1 || opsize == 4 && version < 1 {
			return false
		}
		return b3&0x1f == 0x01 && b3&0x40 == 0
	case 1: // MP_JOIN
		return opsize == 12 || opsize == 16 || opsize == 24
	case 2: // DSS
		flags := b3 & 0x1f
		exp := 4
		if flags&0x01 != 0 {
			exp += map[bool]int{false: 4, true: 8}[flags&0x02 != 0]
		}
		if flags&0x04 != 0 {
			exp += map[bool]int{false: 10, true: 14}[flags&0x08 != 0]
		}
		return opsize == exp || opsize == exp+2
	case 3: // ADD_ADDR
		if b2&0x01 == 0 {
			return opsize == 16 || opsize == 18 || opsize == 28 || opsize == 30
		}
		return opsize == 8 || opsize == 10 || opsize == 20 || opsize == 22
	case 4: // RM_ADDR
		return opsize >= 3+1 && opsize <= 3+8
	case 5: // MP_PRIO
		return opsize == 3
	case 6, 7: // MP_FAIL, MP_FASTCLOSE
		return opsize == 12
	case 8: // MP_TCPRST (the RST flag check needs the TCP header)
		return opsize == 4
	default:
		return false
	}
}

// TestParseMatchesKernel compares Parse with the kernel's acceptance rule for
// every subtype byte, every length 0..40 and (for the subtypes whose byte 3
// matters) every byte 3.
func TestParseMatchesKernel(t *testing.T) {
	b := make([]byte, 40)
	for b2 := range 256 {
		b3s := []int{0x00, 0x01, 0x81, 0xff}
		if st := b2 >> 4; st == 0 || st == 2 {
			b3s = nil
			for b3 := range 256 {
				b3s = append(b3s, b3)
			}
		}
		for _, b3 := range b3s {
			for n := 0; n <= 40; n++ {
				b[0], b[1], b[2], b[3] = OptionKind, byte(n), byte(b2), byte(b3)
				o, got, err := Parse(b)
				want := kernelAccepts(n, byte(b2), byte(b3))
				if want != (err == nil) {
					t.Fatalf("Parse(%02x %02x %02x %02x ...) = %v, %v; kernel accepts: %v", b[0], b[1], b[2], b[3], o, err, want)
				}
				if err == nil && got != n {
					t.Fatalf("Parse(%02x %02x %02x %02x ...) consumed %d", b[0], b[1], b[2], b[3], got)
				}
			}
		}
	}
}
