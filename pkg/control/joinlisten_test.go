package control

import (
	"net/netip"
	"testing"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// TestJoinAddr: where a peer joins a signal endpoint (its port, else the listener's), and
// whether the listener itself receives those joins.
func TestJoinAddr(t *testing.T) {
	ep := func(addr string, flags int, port uint16) pmapi.Endpoint {
		return pmapi.Endpoint{Addr: netip.MustParseAddr(addr), ID: 1, Flags: flags, Port: port}
	}
	for _, tc := range []struct {
		name   string
		bound  string
		v6only bool
		e      pmapi.Endpoint
		want   string // "" for none
	}{
		{"bound elsewhere", "10.0.0.2:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 0), "10.0.1.2:5201"},
		{"bound elsewhere, endpoint port", "10.0.0.2:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 6000), "10.0.1.2:6000"},
		{"bound to the endpoint", "10.0.1.2:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 0), ""},
		{"bound to the endpoint, other port", "10.0.1.2:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 6000), "10.0.1.2:6000"},
		{"not signal", "10.0.0.2:5201", false, ep("10.0.1.2", pmapi.FlagSubflow, 0), ""},
		{"IPv4 wildcard", "0.0.0.0:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 0), ""},
		{"IPv4 wildcard, endpoint port", "0.0.0.0:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 6000), "10.0.1.2:6000"},
		{"IPv4 wildcard, IPv6 endpoint", "0.0.0.0:5201", false, ep("fd00::2", pmapi.FlagSignal, 0), "[fd00::2]:5201"},
		{"dual-stack wildcard", "[::]:5201", false, ep("10.0.1.2", pmapi.FlagSignal, 0), ""},
		{"IPv6-only wildcard, IPv4 endpoint", "[::]:5201", true, ep("10.0.1.2", pmapi.FlagSignal, 0), "10.0.1.2:5201"},
		{"IPv6-only wildcard, IPv6 endpoint", "[::]:5201", true, ep("fd00::2", pmapi.FlagSignal, 0), ""},
		{"IPv6 bound elsewhere", "[fd00::1]:5201", false, ep("fd00::2", pmapi.FlagSignal, 0), "[fd00::2]:5201"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Listener{bound: netip.MustParseAddrPort(tc.bound), v6only: tc.v6only}
			ap, need := l.joinAddr(tc.e)
			got := ""
			if need {
				got = ap.String()
			}
			if got != tc.want {
				t.Errorf("join socket %q, want %q", got, tc.want)
			}
		})
	}
}
