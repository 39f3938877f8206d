package pm

import (
	"net/netip"
	"slices"
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
