package transparent

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseExclusion(t *testing.T) {
	for _, tc := range []struct {
		in     string
		prefix string
		port   uint16
		str    string // String(), when not in
	}{
		{"10.0.0.0/8", "10.0.0.0/8", 0, ""},
		{"10.0.0.0/8:443", "10.0.0.0/8", 443, ""},
		{"192.0.2.1", "192.0.2.1/32", 0, "192.0.2.1/32"},
		{"192.0.2.1:25", "192.0.2.1/32", 25, "192.0.2.1/32:25"},
		{"0.0.0.0/0:65535", "0.0.0.0/0", 65535, ""},
		{"2001:db8::/32", "2001:db8::/32", 0, ""},
		{"2001:db8::1", "2001:db8::1/128", 0, "2001:db8::1/128"},
		{"[2001:db8::/32]:443", "2001:db8::/32", 443, ""},
		{"[2001:db8::1]:443", "2001:db8::1/128", 443, "[2001:db8::1/128]:443"},
		{"[2001:db8::/32]", "2001:db8::/32", 0, "2001:db8::/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", 0, "10.0.0.0/8"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1/32", 80, "192.0.2.1/32:80"},
	} {
		e, err := ParseExclusion(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if want := netip.MustParsePrefix(tc.prefix); e.Prefix != want || e.Port != tc.port {
			t.Errorf("%q: %v port %d, want %v port %d", tc.in, e.Prefix, e.Port, want, tc.port)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if e.String() != str {
			t.Errorf("%q: String() = %q, want %q", tc.in, e, str)
		}
		if again, err := ParseExclusion(e.String()); err != nil || again != e {
			t.Errorf("%q: String() %q parses as %v, %v", tc.in, e, again, err)
		}
	}
}

func TestParseExclusionErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty address"},
		{":443", "empty address"},
		{"10.0.0.0/8:", "missing port"},
		{"10.0.0.0/8:0", "port 0: leave the port out"},
		{"10.0.0.0/8:65536", "not a number from 1 to 65535"},
		{"10.0.0.0/8:https", "not a number from 1 to 65535"},
		{"10.0.0.0/33", "10.0.0.0/33"},
		{"10.1.2.3/8", "host bits set: the prefix is 10.0.0.0/8"},
		{"10.0.0.256", "10.0.0.256"},
		{"example.com:443", "example.com"},
		{"2001:db8::/32:443", "needs brackets: [2001:db8::/32]:443"},
		{"[2001:db8::/32", "missing ]"},
		{"[2001:db8::/32]443", `unexpected "443" after ]`},
		{"[2001:db8::/32]:", "missing port"},
		{"[10.0.0.0/8]:443", "brackets are for IPv6 only"},
		{"fe80::1%eth0", "zone"},
		{"[fe80::1%eth0]:22", "zone"},
	} {
		_, err := ParseExclusion(tc.in)
		if err == nil {
			t.Errorf("%q parsed", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "exclusion ") {
			t.Errorf("%q: %v, want %q in it", tc.in, err, tc.want)
		}
	}
}

// TestExclusionKey: the key matches family and port in full, then the prefix; addresses are in
// network byte order.
func TestExclusionKey(t *testing.T) {
	e, _ := ParseExclusion("10.1.0.0/16:443")
	k := e.key()
	if k.Prefixlen != 32+16 || k.Family != afInet || ntohs(k.Port) != 443 || k.Addr[1] != 0 {
		t.Errorf("key %+v", k)
	}
	if a, ok := wordsAddr(afInet, k.Addr); !ok || a != netip.MustParseAddr("10.1.0.0") {
		t.Errorf("address %v", a)
	}
	e, _ = ParseExclusion("2001:db8::/32")
	k = e.key()
	if k.Prefixlen != 32+32 || k.Family != afInet6 || k.Port != 0 {
		t.Errorf("key %+v", k)
	}
	if a, ok := wordsAddr(afInet6, k.Addr); !ok || a != netip.MustParseAddr("2001:db8::") {
		t.Errorf("address %v", a)
	}
	// A mapped prefix made by hand is keyed as the IPv4 one.
	k = Exclusion{Prefix: netip.MustParsePrefix("::ffff:10.0.0.0/104")}.key()
	if k.Prefixlen != 32+8 || k.Family != afInet {
		t.Errorf("mapped key %+v", k)
	}
}
