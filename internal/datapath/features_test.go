package datapath

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// helperEnv makes TestHelperOpen act: it opens a datapath without struct_ops links, prints
// its congestion controls' names and waits to be killed.
const helperEnv = "MPTCPGO_DATAPATH_HELPER"

func TestHelperOpen(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	d, err := Open(Config{MaxConns: 16, Without: []string{"struct_ops_link"}})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	n := d.CongestionControls()
	fmt.Println("OPENED", n[0], n[1])
	select {}
}

func availableCCs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// structOpsMaps returns the names of the struct_ops maps loaded on the host.
func structOpsMaps(t *testing.T) []string {
	t.Helper()
	var names []string
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return names
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && info.Type == ebpf.StructOpsMap {
			names = append(names, info.Name)
		}
		m.Close()
	}
}

// TestWithoutStructOpsLink serves a kernel without struct_ops links (Linux before 6.4) on this
// one: the congestion controls register when the datapath loads and go at Close; a process
// killed before Close leaves them registered (the cost the feature report states), and the
// next Open removes them, logging it. The feature report says the feature is off.
func TestWithoutStructOpsLink(t *testing.T) {
	testenv.RequireRoot(t)
	child := exec.Command(os.Args[0], "-test.run=^TestHelperOpen$")
	child.Env = append(os.Environ(), helperEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		child.Process.Kill()
		t.Fatalf("helper: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "OPENED" {
		child.Process.Kill()
		t.Fatalf("helper said %q", line)
	}
	dead := f[1:]
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	t.Cleanup(func() { removeStaleStructOps("/nonexistent", slog.Default()) })
	// What the report calls the cost: the dead process's registrations remain.
	for _, n := range dead {
		if !slices.Contains(availableCCs(t), n) {
			t.Fatalf("%s is not registered after its process was killed: the kernel did what only a link does, this test tests nothing", n)
		}
	}

	var logs syncBuffer
	d, err := Open(Config{MaxConns: 16, Without: []string{"struct_ops_link"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	own := d.CongestionControls()
	ccs := availableCCs(t)
	for _, n := range dead {
		if slices.Contains(ccs, n) {
			t.Errorf("%s (of a killed process) still registered after Open", n)
		}
		if !strings.Contains(logs.String(), "name="+n) {
			t.Errorf("the removal of %s was not logged:\n%s", n, logs.String())
		}
	}
	for _, n := range own {
		if !slices.Contains(ccs, n) {
			t.Errorf("our congestion control %s is not registered (available: %v)", n, ccs)
		}
	}
	if d.Features().StructOpsLink {
		t.Error("Features().StructOpsLink is true, want false")
	}
	var report Feature
	for _, x := range d.Features().FeatureList() {
		if x.Name == "struct_ops_link" {
			report = x
		}
	}
	if report.Active || !strings.Contains(report.Without, "killed") {
		t.Errorf("feature report %+v: want struct_ops_link off, with its cost", report)
	}
	if !strings.Contains(logs.String(), `msg="kernel feature missing: working without it" feature=struct_ops_link`) {
		t.Errorf("the missing feature was not logged at Open:\n%s", logs.String())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ccs = availableCCs(t)
	for _, n := range own {
		if slices.Contains(ccs, n) {
			t.Errorf("our congestion control %s still registered after Close", n)
		}
	}
	if maps := structOpsMaps(t); slices.ContainsFunc(maps, func(m string) bool { return slices.Contains(own[:], m) }) {
		t.Errorf("struct_ops maps after Close: %v", maps)
	}
}

// ExpectMissingEnv lists (comma-separated) the features the kernel under test lacks;
// tests/kernels sets it in each guest from its table. Unset: the kernel has every feature.
const ExpectMissingEnv = "MPTCPGO_EXPECT_MISSING"

// TestFeaturesProbed: Open finds exactly the features the kernel under test has (all of them
// here, those of tests/kernels' table in its guests), and refuses an unknown name in Without.
func TestFeaturesProbed(t *testing.T) {
	testenv.RequireRoot(t)
	want := map[string]bool{}
	if v := os.Getenv(ExpectMissingEnv); v != "" {
		for _, n := range strings.Split(v, ",") {
			want[n] = true
		}
	}
	d, err := Open(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, f := range d.Features().FeatureList() {
		if f.Active == want[f.Name] {
			t.Errorf("feature %s (Linux %s): active %v, want %v on this kernel", f.Name, f.Kernel, f.Active, !want[f.Name])
		}
		if !f.Active && f.Without == "" {
			t.Errorf("feature %s is off without a stated cost", f.Name)
		}
	}
	if _, err := Open(Config{MaxConns: 16, Without: []string{"warp_drive"}}); err == nil || !strings.Contains(err.Error(), `unknown datapath feature "warp_drive"`) {
		t.Errorf("Open with an unknown feature: %v", err)
	}
}
