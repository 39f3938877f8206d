package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/convert"
)

func TestConverterDestinations(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	cv := &Converter{
		Allow:      []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("192.0.2.10/32")},
		LocalAddrs: func() ([]netip.Addr, error) { return own, nil },
	}
	for _, c := range []struct {
		addr string
		ok   bool
		why  string
	}{
		{"198.51.100.7", true, ""},
		{"2001:db8::7", true, ""},
		{"127.0.0.1", true, ""},        // allowed
		{"::ffff:127.0.0.1", true, ""}, // the same, mapped
		{"127.0.0.2", false, "loopback"},
		{"::1", false, "loopback"},
		{"0.0.0.0", false, "unspecified"},
		{"::", false, "unspecified"},
		{"224.0.0.1", false, "multicast"},
		{"ff02::1", false, "multicast"},
		{"169.254.1.1", false, "link-local"},
		{"fe80::1", false, "link-local"},
		{"255.255.255.255", false, "broadcast"},
		{"192.0.2.10", true, ""}, // own, but allowed
		{"2001:db8::10", false, "the converter's own address"},
	} {
		ok, why := cv.destinationAllowed(netip.MustParseAddr(c.addr))
		if ok != c.ok || why != c.why {
			t.Errorf("%s: %v %q, want %v %q", c.addr, ok, why, c.ok, c.why)
		}
	}
	failing := &Converter{LocalAddrs: func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }}
	if ok, _ := failing.destinationAllowed(netip.MustParseAddr("198.51.100.7")); ok {
		t.Error("a destination allowed while the converter's own addresses are unknown")
	}
}

func TestConverterClients(t *testing.T) {
	open := &Converter{}
	if !open.clientAllowed(netip.MustParseAddr("198.51.100.7")) {
		t.Error("no --convert-clients: a client refused")
	}
	cv := &Converter{Clients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for a, want := range map[string]bool{"10.1.2.3": true, "::ffff:10.1.2.3": true, "11.0.0.1": false, "2001:db8::1": false} {
		if got := cv.clientAllowed(netip.MustParseAddr(a)); got != want {
			t.Errorf("client %s: %v, want %v", a, got, want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8": "10.0.0.0/8", "192.0.2.1": "192.0.2.1/32", "::ffff:192.0.2.1": "192.0.2.1/32",
		"2001:db8::/32": "2001:db8::/32", "2001:db8::1": "2001:db8::1/128",
	} {
		if p, err := ParsePrefix(in); err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.1/8", "10.0.0.0/33", "host.example", "10.0.0.0/", "1.2.3.4.5"} {
		if p, err := ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) = %v, want an error", in, p)
		}
	}
}

func TestDialError(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("dial tcp: %w", e) }
	for _, c := range []struct {
		err  error
		code convert.ErrorCode
		icmp int // -1: no value checked
	}{
		{wrap(syscall.ECONNREFUSED), convert.CodeConnectionReset, -1},
		{wrap(syscall.ENETUNREACH), convert.CodeDestinationUnreachable, 0},
		{wrap(syscall.EHOSTUNREACH), convert.CodeDestinationUnreachable, 1},
		{wrap(context.DeadlineExceeded), convert.CodeDestinationUnreachable, 1},
		{wrap(syscall.EACCES), convert.CodeDestinationUnreachable, 13},
		{wrap(syscall.EMFILE), convert.CodeNetworkFailure, -1},
	} {
		e := dialError(c.err)
		if e.Code != c.code || (c.icmp >= 0 && int(e.ICMPCode()) != c.icmp) {
			t.Errorf("%v: %v (ICMP code %d), want %v (%d)", c.err, e.Code, e.ICMPCode(), c.code, c.icmp)
		}
		if _, err := (convert.Message{TLVs: []convert.TLV{e}}).Marshal(); err != nil {
			t.Errorf("%v: the answer does not encode: %v", c.err, err)
		}
	}
}

func TestPadCookie(t *testing.T) {
	for in, want := range map[string]string{"k3y": "k3y\x00", "four": "four", "fives": "fives\x00\x00\x00", "": ""} {
		if got := string(padCookie([]byte(in))); got != want {
			t.Errorf("padCookie(%q) = %q, want %q", in, got, want)
		}
	}
}
