package datapath

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mptcpgo/mptcpgo/gen"
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
	for i := 0; i < int(gen.DatapathDpCounterDP_COUNTER_MAX); i++ {
		if counterNames[gen.DatapathDpCounter(i)] == "" {
			t.Errorf("counter %d has no name", i)
		}
	}
}
