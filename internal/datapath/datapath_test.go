package datapath

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

func TestOpenClose(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Open(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if !strings.Contains(string(cc), d.CongestionControl()) {
		t.Errorf("congestion control %s not registered: %s", d.CongestionControl(), cc)
	}
	path, name := d.CgroupPath(), d.CongestionControl()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left behind: %v", path, err)
	}
	cc, _ = os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	// Only ours: other processes on the machine may have stacks of their own.
	if slices.Contains(strings.Fields(string(cc)), name) {
		t.Errorf("congestion control %s left registered: %s", name, cc)
	}
}

// TestCounterNames checks that every datapath counter has a name.
func TestCounterNames(t *testing.T) {
	for i := 0; i < int(DatapathDpCounterDP_COUNTER_MAX); i++ {
		if counterNames[DatapathDpCounter(i)] == "" {
			t.Errorf("counter %d has no name", i)
		}
	}
}

// TestMapSizes: Config sizes the slot maps, and the tokens map holds a token for every
// connection slot (never fewer than its default).
func TestMapSizes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ conns, subs, tokens int }{
		{16, 4, 65536},
		{70000, 4, 70000},
	} {
		d, err := Open(Config{MaxConns: tc.conns, MaxSubs: tc.subs})
		if err != nil {
			t.Fatal(err)
		}
		got := []int{int(d.objs.Conns.MaxEntries()), int(d.objs.Subs.MaxEntries()), int(d.objs.Tokens.MaxEntries())}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if want := []int{tc.conns, tc.subs, tc.tokens}; !slices.Equal(got, want) {
			t.Errorf("MaxConns %d, MaxSubs %d: conns, subs, tokens maps of %v entries, want %v", tc.conns, tc.subs, got, want)
		}
	}
}
