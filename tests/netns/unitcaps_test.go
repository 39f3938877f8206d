package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// capBits are the capabilities a unit may name, by number (linux/capability.h).
var capBits = map[string]uint{
	"CAP_DAC_OVERRIDE": 1, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
	"CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39,
}

// unitCaps reads the CapabilityBoundingSet of packaging/systemd/mptcpd.service: setpriv's
// arguments that give a root process exactly that set (and no new privileges), and its mask.
func unitCaps(t *testing.T) ([]string, uint64) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	unit := filepath.Join(filepath.Dir(file), "..", "..", "packaging", "systemd", "mptcpd.service")
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			names = strings.Fields(v)
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no CapabilityBoundingSet", unit)
	}
	set := "-all"
	var mask uint64
	for _, n := range names {
		bit, ok := capBits[n]
		if !ok {
			t.Fatalf("%s: capability %s unknown to this test", unit, n)
		}
		mask |= 1 << bit
		set += ",+" + strings.ToLower(strings.TrimPrefix(n, "CAP_"))
	}
	return []string{"setpriv", "--bounding-set", set, "--no-new-privs", "--"}, mask
}

// effectiveCaps returns the CapEff of process pid.
func effectiveCaps(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("/proc/%d/status: no CapEff", pid)
	return 0
}

// TestMptcpdUnitCapabilities: the hybrid-access modes work with only the capabilities the
// systemd unit grants (its CapabilityBoundingSet, read from the unit, applied with setpriv and
// no new privileges; the unit's file-system protections are not reproduced). The router (A)
// runs --transparent and --transparent-dev with --convert-via, the concentrator (B) --convert;
// a LAN host's connection and one made in the router itself reach a plain TCP server beyond
// the converter byte-exact, over MPTCP with both paths used, and both daemons stop cleanly.
func TestMptcpdUnitCapabilities(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	wrap, mask := unitCaps(t)
	topo := netns.New(t, netns.Config{Paths: 2, IPv6: true, A: ourSide, B: ourSide})
	lan := newLANHost(t, topo)
	p0, p1 := topo.Path(0), topo.Path(1)
	server, err := topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	sockA, sockB := ctlSocket(t), ctlSocket(t)
	mptcpctl(t)
	dB, conv := startMptcpdUnder(t, ctx, topo.B, wrap, "--ctl", sockB, "--convert", p0.B.HostPort(netns.IPv4, 0),
		"--convert-allow", p0.B.Addr(netns.IPv4).String()+"/32")
	dA, _ := startMptcpdUnder(t, ctx, topo.A, wrap, "--ctl", sockA, "--transparent", "--transparent-dev", "lan0",
		"--convert-via", conv[0], "--endpoint", p1.A.Addr(netns.IPv4).String()+",subflow")
	if err := dA.WaitOutput(ctx, "transparent-dev: intercepting"); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*netns.Process{"router": dA, "concentrator": dB} {
		if got := effectiveCaps(t, d.Pid()); got != mask {
			t.Fatalf("%s: mptcpd's effective capabilities %#x, want the unit's %#x", name, got, mask)
		}
	}

	const up, down = 32 << 20, 32 << 20
	shapeForShares(p0, p1)
	tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
	for _, from := range []string{"LAN host", "router"} {
		served := netns.ServeOne(ctx, server, down, 2)
		dial := lan.dial
		if from == "router" {
			dial = func(ctx context.Context, addr string) (net.Conn, error) { return topo.A.DialTCP(ctx, addr) }
		}
		c, err := dial(ctx, server.Addr().String())
		if err != nil {
			t.Fatalf("%s: %v", from, err)
		}
		exchangeServed(t, ctx, c, served, up, down)
		c.Close()
	}
	if d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1; d0 < 1<<20 || d1 < 1<<20 {
		t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 1 MiB of the 64", d0, d1)
	}
	stA, stB := daemonStats(t, sockA), daemonStats(t, sockB)
	for _, ck := range []struct {
		side string
		st   map[string]uint64
		name string
		want uint64
	}{
		{"A", stA, "ConvertConverted", 2}, {"A", stA, "ProxyMPTCP", 2}, {"A", stA, "TransparentCarried", 2},
		{"B", stB, "ConvertConverted", 2}, {"B", stB, "ProxyMPTCP", 2},
	} {
		if ck.st[ck.name] != ck.want {
			t.Errorf("%s: %s = %d, want %d", ck.side, ck.name, ck.st[ck.name], ck.want)
		}
	}
	for name, d := range map[string]*netns.Process{"router": dA, "concentrator": dB} {
		if err := d.Stop(); err != nil {
			t.Errorf("%s: mptcpd stopped with %v\n%s", name, err, d.Output())
		}
	}
}
