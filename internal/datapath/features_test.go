package datapath

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// helperEnv makes TestHelperOpen act: it opens a datapath without struct_ops links, prints
// its congestion controls' names and waits to be killed.
const helperEnv = "MPTCPGO_DATAPATH_HELPER"

// With helperEnv=tc:<netns path>:<ifindex> it opens a datapath without tcx instead and
// attaches the SYN option rewriter to that interface first.
func TestHelperOpen(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	without := []string{"struct_ops_link"}
	var attach func(d *Datapath) error
	if rest, ok := strings.CutPrefix(mode, "tc:"); ok {
		path, idx, _ := strings.Cut(rest, ":")
		ifindex, _ := strconv.Atoi(idx)
		without = []string{"tcx"}
		attach = func(d *Datapath) error {
			return inNetnsPath(path, func() error { return d.AttachInterface(IfaceKey{Ifindex: ifindex}) })
		}
	}
	d, err := Open(Config{MaxConns: 16, Without: without})
	if err == nil && attach != nil {
		err = attach(d)
	}
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	n := d.CongestionControls()
	fmt.Println("OPENED", n[0], n[1])
	select {}
}

// inNetnsPath runs f on a thread in the network namespace at path.
func inNetnsPath(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := vnetns.GetFromPath(path)
		if err == nil {
			err = vnetns.Set(ns)
			ns.Close()
		}
		if err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// startHelper runs TestHelperOpen with mode and returns what it printed after OPENED, once it
// is open; the caller kills it.
func startHelper(t *testing.T, mode string) (*exec.Cmd, []string) {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^TestHelperOpen$")
	child.Env = append(os.Environ(), helperEnv+"="+mode)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "OPENED" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("helper said %q (%v)", line, err)
	}
	return child, f[1:]
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
	child, dead := startHelper(t, "struct_ops")
	t.Cleanup(func() { unregisterByName(dead...) })
	// A live datapath's registrations are its own: another datapath's Open leaves them, and a
	// dead one's without a lock file here (one that saw another /run) as well.
	other, err := Open(Config{MaxConns: 16, Without: []string{"struct_ops_link"}})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	for _, n := range dead {
		if !slices.Contains(availableCCs(t), n) {
			t.Fatalf("%s of a live datapath was removed by another datapath's Open", n)
		}
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	lockFile := fmt.Sprintf("%s/mpg%d.lock", lockDir, child.Process.Pid)
	saved, err := os.ReadFile(lockFile)
	if err != nil {
		t.Fatalf("the killed datapath's lock file: %v", err)
	}
	os.Remove(lockFile)
	other, err = Open(Config{MaxConns: 16, Without: []string{"struct_ops_link"}})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	for _, n := range dead {
		if !slices.Contains(availableCCs(t), n) {
			t.Fatalf("%s removed without its owner's lock file: its owner was not known to be gone", n)
		}
	}
	if err := os.WriteFile(lockFile, saved, 0o600); err != nil {
		t.Fatal(err)
	}
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

// bpfFilters returns the names of the cls_bpf filters on both sides of an interface.
func bpfFilters(t *testing.T, h *netlink.Handle, ifindex int) []string {
	t.Helper()
	var names []string
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, parent)
		if err != nil {
			continue // no clsact qdisc: no filters
		}
		for _, f := range fs {
			if b, ok := f.(*netlink.BpfFilter); ok {
				names = append(names, b.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// hasClsact reports whether the interface has a clsact qdisc.
func hasClsact(t *testing.T, h *netlink.Handle, ifindex int) bool {
	t.Helper()
	qs, err := h.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "clsact" })
}

// TestWithoutTCX serves a kernel without tcx (Linux before 6.6) on this one: the SYN option
// rewriter becomes two cls_bpf filters named after the process, on a clsact qdisc the datapath
// adds and removes; the filters of a killed process stay (the cost the report states) until
// the next datapath attaches to that interface, which removes them and logs it.
func TestWithoutTCX(t *testing.T) {
	testenv.RequireRoot(t)
	name := fmt.Sprintf("mpg-dptest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	path := "/run/netns/" + name
	if out, err := exec.Command("ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1").CombinedOutput(); err != nil {
		t.Fatalf("add veth: %v: %s", err, out)
	}
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("d0")
	if err != nil {
		t.Fatal(err)
	}
	ifindex := l.Attrs().Index

	child, _ := startHelper(t, fmt.Sprintf("tc:%s:%d", path, ifindex))
	pid := child.Process.Pid
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	stale := []string{fmt.Sprintf("mpg%d_syn_in", pid), fmt.Sprintf("mpg%d_syn_out", pid)}
	if got := bpfFilters(t, h, ifindex); !slices.Equal(got, stale) {
		t.Fatalf("filters after the helper was killed: %v, want %v (tcx links would have gone: this tests nothing)", got, stale)
	}

	var logs syncBuffer
	d, err := Open(Config{MaxConns: 16, Without: []string{"tcx"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Features().TCX {
		t.Error("Features().TCX is true, want false")
	}
	if err := inNetnsPath(path, func() error { return d.AttachInterface(IfaceKey{Ifindex: ifindex}) }); err != nil {
		t.Fatal(err)
	}
	own := []string{fmt.Sprintf("mpg%d_syn_in", os.Getpid()), fmt.Sprintf("mpg%d_syn_out", os.Getpid())}
	if got := bpfFilters(t, h, ifindex); !slices.Equal(got, own) {
		t.Errorf("filters after our attach: %v, want ours alone %v", got, own)
	}
	if !strings.Contains(logs.String(), "removed the TC filters a dead process left") || !strings.Contains(logs.String(), stale[0]) {
		t.Errorf("the removal was not logged:\n%s", logs.String())
	}
	// The dead helper's qdisc went with its filters; ours goes at Close.
	if !hasClsact(t, h, ifindex) {
		t.Fatal("no clsact qdisc after attach")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := bpfFilters(t, h, ifindex); len(got) != 0 || hasClsact(t, h, ifindex) {
		t.Errorf("after Close: filters %v, clsact %v; want neither", got, hasClsact(t, h, ifindex))
	}
}
