package netns_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// capture records the headers crossing an interface with dumpcap until stopped.
func capture(t *testing.T, ctx context.Context, e *netns.Iface) (file string, stop func()) {
	t.Helper()
	if _, err := exec.LookPath("dumpcap"); err != nil {
		testenv.Skip(t, "dumpcap (tshark) not installed")
	}
	file = filepath.Join(t.TempDir(), "capture.pcapng")
	p, err := e.StartCapture(ctx, file, 160)
	if err != nil {
		t.Fatal(err)
	}
	return file, func() { p.Stop() }
}

// tshark runs tshark on a capture file with MPTCP analysis on.
func tshark(t *testing.T, file string, args ...string) string {
	t.Helper()
	args = append([]string{"-r", file, "-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.relative_sequence_numbers:FALSE"}, args...)
	cmd := exec.Command("tshark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// TestWireFormat captures our connections with the kernel in both roles, a fallback and a
// fastclose, and has tshark's MPTCP dissector judge them: no malformed packet and no MPTCP
// expert warning or error.
func TestWireFormat(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	file, stop := capture(t, ctx, p.A)
	// Our client to the kernel's server, and back through mptcpd's accept proxy: both roles.
	transfer(t, ctx, topo, ourClientKernelServer, netns.IPv4, 4<<20, 2<<20)
	target, err := topo.A.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, addrs := startMptcpd(t, ctx, topo.A, "--accept", p.A.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	served := netns.ServeOne(ctx, target, 2<<20, 2)
	c, err := topo.B.DialMPTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	if r := <-netns.ExchangeAsync(ctx, c, 4<<20, 1); r.Err != nil || !r.MPTCP {
		t.Fatalf("kernel client through mptcpd: %v (MPTCP %t)", r.Err, r.MPTCP)
	}
	if s := <-served; s.Err != nil {
		t.Fatal(s.Err)
	}
	waitKernelClosed(t, topo.B)
	time.Sleep(200 * time.Millisecond) // the last ACKs and FINs
	stop()
	if keep := os.Getenv("MPTCPGO_KEEP_CAPTURE"); keep != "" {
		if b, err := os.ReadFile(file); err == nil {
			os.WriteFile(keep, b, 0o644)
		}
	}

	mptcpPkts := tshark(t, file, "-Y", "mptcp", "-T", "fields", "-e", "frame.number")
	if n := len(strings.Fields(mptcpPkts)); n < 100 {
		t.Fatalf("only %d MPTCP packets captured", n)
	}
	for _, sub := range []string{"0", "2"} { // MP_CAPABLE and DSS
		if out := tshark(t, file, "-Y", "tcp.options.mptcp.subtype == "+sub, "-T", "fields", "-e", "frame.number"); strings.TrimSpace(out) == "" {
			t.Errorf("no MPTCP subtype %s in the capture", sub)
		}
	}
	if bad := tshark(t, file, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number"); strings.TrimSpace(bad) != "" {
		t.Errorf("tshark finds malformed packets: frames %s", strings.Fields(bad))
	}
	// The expert summary, two-pass: warnings and errors of the MPTCP dissector are failures.
	expert := tshark(t, file, "-2", "-q", "-z", "expert,warn")
	for _, line := range strings.Split(expert, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "MPTCP" {
			t.Errorf("tshark MPTCP expert info: %s", strings.TrimSpace(line))
		}
	}
	t.Logf("tshark expert summary:\n%s", expert)
}
