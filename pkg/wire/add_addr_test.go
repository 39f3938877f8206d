package wire

import (
	"net/netip"
	"testing"
)

func TestAddAddrDecode(t *testing.T) {
	// RFC 8684 §3.4.1: IPv4 with port and HMAC, E clear.
	b := []byte{
		30, 18, 0x30, 0x05, // kind, length, subtype 3 | E=0, address ID
		192, 0, 2, 7, // address
		0x1f, 0x90, // port 8080
		0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, // truncated HMAC
	}
	o, n, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := AddAddr{AddrID: 5, Addr: netip.MustParseAddr("192.0.2.7"), HasPort: true, Port: 8080, HMAC: 0xa1a2a3a4a5a6a7a8}
	if o != want || n != 18 {
		t.Errorf("Parse = %+v, %d; want %+v", o, n, want)
	}

	// IPv6 echo without port.
	b = []byte{30, 20, 0x31, 0x02, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42}
	o, _, err = Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want = AddAddr{Echo: true, AddrID: 2, Addr: netip.MustParseAddr("fe80::42")}
	if o != want {
		t.Errorf("Parse = %+v; want %+v", o, want)
	}
}

func TestAddAddrVectors(t *testing.T) { checkVectors(t, "add_addr/") }

func TestAddAddrEncode(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.2.1")
	for _, tc := range []struct {
		name string
		a    AddAddr
		want []byte
	}{
		{"port without HasPort", AddAddr{Echo: true, AddrID: 1, Addr: v4, Port: 80},
			[]byte{30, 10, 0x31, 1, 10, 0, 2, 1, 0, 80}},
		{"HasPort with port 0", AddAddr{Echo: true, AddrID: 1, Addr: v4, HasPort: true},
			[]byte{30, 10, 0x31, 1, 10, 0, 2, 1, 0, 0}},
		{"echo drops HMAC", AddAddr{Echo: true, AddrID: 1, Addr: v4, HMAC: 0xffff},
			[]byte{30, 8, 0x31, 1, 10, 0, 2, 1}},
		{"4in6 stays IPv6", AddAddr{Echo: true, AddrID: 1, Addr: netip.MustParseAddr("::ffff:10.0.2.1")},
			[]byte{30, 20, 0x31, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 1}},
		{"zero Addr is ::", AddAddr{Echo: true, AddrID: 1},
			[]byte{30, 20, 0x31, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		got := tc.a.Append(nil)
		if string(got) != string(tc.want) || tc.a.Len() != len(tc.want) {
			t.Errorf("%s: Append = % x (Len %d), want % x", tc.name, got, tc.a.Len(), tc.want)
		}
	}
	// A parsed 4in6 address is returned as is, not unmapped, so it round-trips.
	o, _, err := Parse([]byte{30, 20, 0x31, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 1})
	if err != nil || !o.(AddAddr).Addr.Is4In6() {
		t.Errorf("Parse(4in6) = %+v, %v", o, err)
	}
}

func TestAddAddrLengths(t *testing.T) {
	checkLengths(t, 0x30, 0x01, 16, 18, 28, 30)
	checkLengths(t, 0x31, 0x01, 8, 10, 20, 22)
	// The reserved bits of byte 2 do not change the rule; only E does.
	checkLengths(t, 0x3e, 0x01, 16, 18, 28, 30)
	checkLengths(t, 0x3f, 0x01, 8, 10, 20, 22)
}

func TestAddAddrReserved(t *testing.T) {
	clean := []byte{30, 8, 0x31, 1, 10, 0, 2, 1}
	dirty := []byte{30, 8, 0x3f, 1, 10, 0, 2, 1}
	a, _, err1 := Parse(clean)
	b, _, err2 := Parse(dirty)
	if err1 != nil || err2 != nil || a != b {
		t.Errorf("Parse(clean) = %+v, %v; Parse(dirty) = %+v, %v", a, err1, b, err2)
	}
}
