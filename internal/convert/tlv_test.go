package convert

import (
	"bytes"
	"testing"
)

// TestTLVLen checks Len == len(Append(nil)), a multiple of 4, for every TLV and padding case.
func TestTLVLen(t *testing.T) {
	for _, tlv := range []TLV{
		Info{},
		Connect{},
		Connect{TCPOptions: h("04")},
		Connect{TCPOptions: h("04 02 1e")},
		ExtendedTCPHeader{},
		ExtendedTCPHeader{Options: h("02 04 05")},
		SupportedTCPExtensions{},
		SupportedTCPExtensions{Kinds: []uint8{30, 34, 4, 3, 8}},
		Cookie{Opaque: h("01")},
		Cookie{Opaque: h("01 02 03 04")},
		ErrorTLV{},
		ErrorTLV{Value: h("01 02")},
		ErrorTLV{Value: h("01 02 03 04 05")},
	} {
		b := tlv.Append(nil)
		if len(b) != tlv.Len() || len(b)%4 != 0 || b[0] != byte(tlv.Type()) || int(b[1])*4 != len(b) {
			t.Errorf("%#v: Append = % x, Len %d", tlv, b, tlv.Len())
		}
	}
}

// TestExtendedTCPHeaderPadding: options not ending on a word are padded with EOL (zero), and
// come back padded (§5.2.6 gives no length of their own).
func TestExtendedTCPHeaderPadding(t *testing.T) {
	b := ExtendedTCPHeader{Options: h("02 04 05 b4  04 02")}.Append(nil)
	if !bytes.Equal(b, h("14 03 00 00  02 04 05 b4  04 02 00 00")) {
		t.Errorf("Append = % x", b)
	}
	e, err := parseExtendedTCPHeader(b)
	if err != nil || !bytes.Equal(e.Options, h("02 04 05 b4  04 02 00 00")) {
		t.Errorf("parse = % x, %v", e.Options, err)
	}
	if e, err := parseExtendedTCPHeader(h("14 01 00 00")); err != nil || e.Options != nil {
		t.Errorf("parse of no options = %#v, %v", e, err)
	}
}
