package convert

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestConnectAddressFamilies checks §5.2.5's encoding of the address: IPv4 as IPv4-mapped
// IPv6 on the wire, given as IPv4 or as IPv4-mapped, and returned as IPv4; IPv6 as is.
func TestConnectAddressFamilies(t *testing.T) {
	for _, c := range []struct {
		give, want string
		addr       []byte
	}{
		{"203.0.113.9:25", "203.0.113.9:25", h("00 00 00 00  00 00 00 00  00 00 ff ff  cb 00 71 09")},
		{"[::ffff:203.0.113.9]:25", "203.0.113.9:25", h("00 00 00 00  00 00 00 00  00 00 ff ff  cb 00 71 09")},
		{"[2001:db8::cb00:7109]:25", "[2001:db8::cb00:7109]:25", h("20 01 0d b8  00 00 00 00  00 00 00 00  cb 00 71 09")},
		// IPv4-compatible (deprecated, RFC 4291 §2.5.5.1) is not IPv4-mapped: it stays IPv6.
		{"[::cb00:7109]:25", "[::cb00:7109]:25", h("00 00 00 00  00 00 00 00  00 00 00 00  cb 00 71 09")},
	} {
		tlv := Connect{Remote: netip.MustParseAddrPort(c.give)}
		b := tlv.Append(nil)
		want := append(h("0a 05 00 19"), c.addr...)
		if !bytes.Equal(b, want) {
			t.Errorf("%s: Append = % x, want % x", c.give, b, want)
		}
		got, err := parseConnect(b)
		if err != nil || got.Remote.String() != c.want || got.TCPOptions != nil {
			t.Errorf("%s: parse = %v, %v; want %s", c.give, got, err, c.want)
		}
	}
}

func TestConnectOptionKinds(t *testing.T) {
	c := Connect{TCPOptions: h("1e 04 01 81  04 02  22 0a c0 ff ee 00 11 22 33 44")}
	if got := c.OptionKinds(); !slices.Equal(got, []uint8{30, 4, 34}) {
		t.Errorf("OptionKinds = %v", got)
	}
	// Built by hand, not checked: stop at the first bad option.
	c = Connect{TCPOptions: h("04 02  01  1e 04 01 81")}
	if got := c.OptionKinds(); !slices.Equal(got, []uint8{4}) {
		t.Errorf("OptionKinds = %v", got)
	}
	c = Connect{TCPOptions: h("04 02  1e 09 01")}
	if got := c.OptionKinds(); !slices.Equal(got, []uint8{4}) {
		t.Errorf("OptionKinds = %v", got)
	}
}

// TestConnectOptionsMax checks the 40-byte limit of a SYN's options, exactly.
func TestConnectOptionsMax(t *testing.T) {
	opts := append(h("fe 28"), make([]byte, 38)...) // one experimental option of 40 bytes
	msg := Message{TLVs: []TLV{Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443"), TCPOptions: opts}}}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := Find[Connect](m); !bytes.Equal(c.TCPOptions, opts) {
		t.Errorf("TCPOptions = % x", c.TCPOptions)
	}
	// 39 bytes of options, one of padding.
	opts = append(h("fe 27"), make([]byte, 37)...)
	b = Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443"), TCPOptions: opts}.Append(nil)
	if c, err := parseConnect(b); err != nil || !bytes.Equal(c.TCPOptions, opts) || len(b) != 60 {
		t.Errorf("parse = % x, %v", c.TCPOptions, err)
	}
}

func TestConnectErrorText(t *testing.T) {
	_, _, err := Parse(h("01 06 00 00  0a 05 00 00  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01"))
	pe, ok := errors.AsType[*ParseError](err)
	if !ok || pe.Reason != "Connect TLV: port 0" || pe.Offset != 6 {
		t.Errorf("Parse = %v", err)
	}
}

// TestConnectAnyAddress: the address is the converter's policy; Parse takes loopback,
// multicast, broadcast and unspecified addresses, IPv4 as IPv4.
func TestConnectAnyAddress(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1", "224.0.0.1", "ff02::1", "255.255.255.255", "0.0.0.0", "::"} {
		want := netip.AddrPortFrom(netip.MustParseAddr(a), 80)
		b, err := Message{TLVs: []TLV{Connect{Remote: want}}}.Marshal()
		if err != nil {
			t.Errorf("%s: Marshal: %v", a, err)
			continue
		}
		m, _, err := Parse(b)
		if c, ok := Find[Connect](m); err != nil || !ok || c.Remote != want {
			t.Errorf("%s: Parse = %v, %v", a, c.Remote, err)
		}
	}
}
