package pmapi

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestFlagsRoundTrip(t *testing.T) {
	e := Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), ID: 3, Flags: FlagSignal | FlagBackup, Port: 80, Dev: "eth1"}
	got, err := ParseEndpoint(e.Spec())
	if err != nil || got != e {
		t.Fatalf("ParseEndpoint(%q) = %v, %v; want %v", e.Spec(), got, err, e)
	}
	if n := FlagNames(e.Flags); !slices.Equal(n, []string{"signal", "backup"}) {
		t.Errorf("FlagNames = %v", n)
	}
	if f, err := ParseFlags([]string{"subflow", "fullmesh"}); err != nil || f != FlagSubflow|FlagFullmesh {
		t.Errorf("ParseFlags = %d, %v", f, err)
	}
	if _, err := ParseFlags([]string{"bogus"}); err == nil {
		t.Error("ParseFlags(bogus) succeeded")
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "10.0.0.1,subflow", want: "10.0.0.1 id 0 subflow"},
		{in: "10.0.0.1,signal,port=8080,id=7", want: "10.0.0.1 id 7 signal port 8080"},
		{in: "::ffff:10.0.0.1,subflow,backup,dev=eth1", want: "10.0.0.1 id 0 subflow backup dev eth1"},
		{in: "2001:db8::1,subflow,fullmesh", want: "2001:db8::1 id 0 subflow fullmesh"},
		{in: "10.0.0.1,signal,fullmesh", bad: true},
		{in: "10.0.0.1,id=0", bad: true},
		{in: "10.0.0.1,id=256", bad: true},
		{in: "10.0.0.1,port=0", bad: true},
		{in: "10.0.0.1,dev=", bad: true},
		{in: "10.0.0.1,subflow,dev=wwan0-backup-12", want: "10.0.0.1 id 0 subflow dev wwan0-backup-12"}, // 15 bytes
		{in: "10.0.0.1,subflow,dev=wwan0-backup-123", bad: true},                                        // 16 bytes
		{in: "10.0.0.1,dev=" + strings.Repeat("x", 5000), bad: true},
		{in: "10.0.0.1,dev=.", bad: true},
		{in: "10.0.0.1,dev=..", bad: true},
		{in: "10.0.0.1,dev=../eth0", bad: true},
		{in: "10.0.0.1,dev=eth0:1", bad: true},
		{in: "10.0.0.1,dev=eth 0", bad: true},
		{in: "10.0.0.1,dev=eth\t0", bad: true},
		{in: "10.0.0.1,dev=eth\x000", bad: true},
		{in: "10.0.0.1,bogus", bad: true},
		{in: "10.0.0.300,subflow", bad: true},
		{in: "", bad: true},
	} {
		e, err := ParseEndpoint(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseEndpoint(%q) = %v, want an error", tc.in, e)
			}
			continue
		}
		if err != nil || e.String() != tc.want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", tc.in, e.String(), err, tc.want)
		}
	}
}

// TestCheck: an endpoint is checked as it is, with the rules ParseEndpoint applies to its text.
func TestCheck(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	for _, tc := range []struct {
		e  Endpoint
		ok bool
	}{
		{Endpoint{Addr: a, Flags: FlagSubflow | FlagBackup | FlagFullmesh, Dev: "eth0"}, true},
		{Endpoint{Addr: a, ID: 255, Flags: FlagSignal, Port: 443}, true},
		{Endpoint{Addr: a}, true},
		{Endpoint{}, false},
		{Endpoint{Addr: netip.MustParseAddr("::ffff:10.0.0.1")}, false},
		{Endpoint{Addr: a, Flags: FlagSignal | FlagFullmesh}, false},
		{Endpoint{Addr: a, Flags: 1 << 7}, false},
		{Endpoint{Addr: a, Dev: "wwan0-backup-123"}, false},
		{Endpoint{Addr: a, Dev: "eth0:1"}, false},
	} {
		err := tc.e.Check()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: Check() = %v, want ok %v", tc.e, err, tc.ok)
		}
		if tc.ok {
			if got, err := ParseEndpoint(tc.e.Spec()); err != nil || got != tc.e {
				t.Errorf("ParseEndpoint(%q) = %+v, %v; want %+v", tc.e.Spec(), got, err, tc.e)
			}
		}
	}
	if err := CheckFlag("fullmesh"); err != nil {
		t.Error(err)
	}
	if err := CheckFlag("nobackup"); err == nil || err.Error() != `unknown endpoint flag "nobackup" (want signal, subflow, backup or fullmesh)` {
		t.Errorf("CheckFlag(nobackup) = %v", err)
	}
}
