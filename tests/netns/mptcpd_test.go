package netns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// builtBin is a command of this module built once per test binary, in a directory any user
// may enter (the non-root tests run binaries as nobody).
type builtBin struct {
	sync.Once
	path string
	err  error
}

func (b *builtBin) get(t testing.TB, name string) string {
	t.Helper()
	b.Do(func() {
		if dir := os.Getenv(prebuiltEnv); dir != "" {
			// Built before (tests/kernels builds them on the host for a guest without go).
			b.path = filepath.Join(dir, name)
			if _, err := os.Stat(b.path); err != nil {
				b.err = fmt.Errorf("%s=%s: %w", prebuiltEnv, dir, err)
			}
			return
		}
		dir, err := os.MkdirTemp("", name+"-test-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		out, err := exec.Command("go", "build", "-o", b.path, "github.com/mptcpgo/mptcpgo/cmd/"+name).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// prebuiltEnv names a directory holding the commands already built: builtBin takes them from
// there instead of running go build.
const prebuiltEnv = "MPTCPGO_PREBUILT"

var mptcpdBin builtBin

// mptcpd builds the daemon once per test binary.
func mptcpd(t testing.TB) string { return mptcpdBin.get(t, "mptcpd") }

// startMptcpd runs the daemon in ns with args and waits for its ready file; it returns the
// process and the listening addresses in rule order.
func startMptcpd(t *testing.T, ctx context.Context, ns *netns.Namespace, args ...string) (*netns.Process, []string) {
	t.Helper()
	return startMptcpdB(t, ctx, ns, args...)
}

func startMptcpdB(t testing.TB, ctx context.Context, ns *netns.Namespace, args ...string) (*netns.Process, []string) {
	t.Helper()
	return startMptcpdUnder(t, ctx, ns, nil, args...)
}

// startMptcpdUnder starts mptcpd as startMptcpd does, through the command wrap (e.g. setpriv
// and its arguments, ending in "--") when it is not empty.
func startMptcpdUnder(t testing.TB, ctx context.Context, ns *netns.Namespace, wrap []string, args ...string) (*netns.Process, []string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	args = append([]string{"--ready-file", ready, "--log-level", "debug"}, args...)
	var p *netns.Process
	if len(wrap) > 0 {
		p = ns.Start(wrap[0], append(append(wrap[1:len(wrap):len(wrap)], mptcpd(t)), args...)...)
	} else {
		p = ns.Start(mptcpd(t), args...)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("mptcpd output:\n%s", p.Output())
		}
	})
	return p, awaitReady(t, ctx, p, ready)
}

// awaitReady waits for the daemon's ready file and returns the addresses it lists. It then
// waits for the log to hold one "listening" line per address: the daemon writes the file after
// those lines, but its output reaches the test through a pipe, and a check of what it logged
// while starting must not run before that output is here.
func awaitReady(t testing.TB, ctx context.Context, p *netns.Process, ready string) []string {
	t.Helper()
	for {
		b, err := os.ReadFile(ready)
		if err == nil {
			addrs := strings.Fields(string(b))
			if err := p.WaitOutputCount(ctx, "msg=listening", len(addrs)); err != nil {
				t.Fatalf("mptcpd ready: %v\n%s", err, p.Output())
			}
			return addrs
		}
		select {
		case <-p.Done():
			t.Fatalf("mptcpd exited: %v\n%s", p.Err(), p.Output())
		case <-ctx.Done():
			t.Fatalf("mptcpd not ready: %v\n%s", ctx.Err(), p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMptcpdForwardToKernel: an application's plain TCP connection enters mptcpd --forward and
// reaches a kernel MPTCP server over MPTCP, both directions byte-exact; SIGTERM then stops the
// daemon cleanly with nothing left attached.
func TestMptcpdForwardToKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	d, addrs := startMptcpd(t, ctx, topo.A, "--forward", "127.0.0.1:0="+ln.Addr().String())
	const up, down = 64 << 20, 16 << 20
	served := netns.ServeOne(ctx, ln, down, 2)
	c, err := topo.A.DialTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	s := exchangeServed(t, ctx, c, served, up, down)
	if !s.MPTCP {
		t.Errorf("kernel server socket is not MPTCP")
	}
	kc := counters(t, topo.B)
	for _, name := range []string{"MPCapableSYNRX", "MPCapableACKRX"} {
		if kc[name] < 1 {
			t.Errorf("kernel %s = %d, want >= 1", name, kc[name])
		}
	}
	checkNoFallback(t, kc)

	// An idle connection when the daemon is told to stop: it ends with a DATA_FIN (the kernel
	// reads EOF), not a reset.
	idle, kconn := dialAccepted(t, ctx, topo.A, addrs[0], ln)
	eof := make(chan error, 1)
	go func() {
		kconn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := kconn.Read(make([]byte, 1))
		eof <- err
		kconn.Close() // the kernel's DATA_FIN back, so that the daemon's relay completes
	}()
	if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-eof; !errors.Is(err, io.EOF) {
		t.Errorf("kernel read on an idle connection after SIGTERM: %v, want EOF (a DATA_FIN)", err)
	}
	idle.Close() // the application ends its side too: the daemon has nothing left to wait for
	stopMptcpd(t, d)
	if n := counters(t, topo.B)["MPFastcloseRx"]; n != 0 {
		t.Errorf("kernel MPFastcloseRx = %d, want 0", n)
	}
}

// TestMptcpdAcceptFromKernel: a kernel MPTCP client reaches mptcpd --accept, which relays to a
// plain TCP server.
func TestMptcpdAcceptFromKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, addrs := startMptcpd(t, ctx, topo.B, "--accept", p.B.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	const up, down = 64 << 20, 16 << 20
	served := netns.ServeOne(ctx, target, down, 2)
	c, err := topo.A.DialMPTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	r := <-netns.ExchangeAsync(ctx, c, up, 1)
	checkServed(t, r, served, up, down)
	if !r.MPTCP {
		t.Errorf("kernel client socket is not MPTCP")
	}
	kc := counters(t, topo.A)
	if kc["MPCapableSYNACKRX"] < 1 {
		t.Errorf("kernel MPCapableSYNACKRX = %d, want >= 1", kc["MPCapableSYNACKRX"])
	}
	checkNoFallback(t, kc)
	stopMptcpd(t, d)
}

// TestMptcpdBothWays chains two daemons (forward in A, accept in B): an application's TCP
// connection crosses the namespaces over our MPTCP on both ends.
func TestMptcpdBothWays(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, B: ourSide})
	p := topo.Path(0)
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, accAddrs := startMptcpd(t, ctx, topo.B, "--accept", p.B.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	_, fwdAddrs := startMptcpd(t, ctx, topo.A, "--forward", "127.0.0.1:0="+accAddrs[0])
	const up, down = 64 << 20, 64 << 20
	served := netns.ServeOne(ctx, target, down, 2)
	c, err := topo.A.DialTCP(ctx, fwdAddrs[0])
	if err != nil {
		t.Fatal(err)
	}
	exchangeServed(t, ctx, c, served, up, down)
}

// TestMptcpdIPNetnsExec: the daemon started with `ip netns exec`, in a mount namespace whose
// /sys has no cgroup2 mount, reaches the cgroup hierarchy through a mount of its own that no
// mount table shows, carries a connection over MPTCP, and leaves neither its cgroup nor a mount
// behind when stopped with SIGTERM.
func TestMptcpdIPNetnsExec(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	mountsBefore := mountTable(t)
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", topo.A.Name(), mptcpd(t),
		"--ready-file", ready, "--log-level", "debug", "--ctl", "", "--forward", "127.0.0.1:0="+ln.Addr().String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := topo.A.StartCmd(cmd)
	addrs := awaitReady(t, ctx, d, ready)
	// ip netns exec execs the daemon: the pid is the daemon's. Its mount table has no cgroup2
	// mount (the case under test), and it is in its cgroup of the one hierarchy.
	pid := d.Pid()
	if m, err := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", pid)); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(m), " cgroup2 ") {
		t.Errorf("the daemon's mount namespace has a cgroup2 mount: the test does not test what it says\n%s", m)
	}
	cg := daemonCgroup(t, pid)
	const up, down = 1 << 20, 1 << 20
	served := netns.ServeOne(ctx, ln, down, 2)
	c, err := topo.A.DialTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	if s := exchangeServed(t, ctx, c, served, up, down); !s.MPTCP {
		t.Errorf("kernel server socket is not MPTCP")
	}
	c.Close()
	stopMptcpd(t, d)
	if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s after the daemon stopped: %v", cg, err)
	}
	if after := mountTable(t); after != mountsBefore {
		t.Errorf("cgroup2 and mptcpgo mounts changed:\n%s\nthen\n%s", mountsBefore, after)
	}
	if _, err := os.Stat("/run/mptcpgo"); err == nil {
		t.Errorf("/run/mptcpgo left behind")
	}
}

// TestMptcpdKilledCgroupRemoved: a daemon killed with SIGKILL leaves its cgroup behind; the
// next one removes it when it starts, and says so.
func TestMptcpdKilledCgroupRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	d, _ := startMptcpd(t, ctx, topo.A, "--ctl", "", "--forward", "127.0.0.1:0=127.0.0.1:9")
	cg := daemonCgroup(t, d.Pid())
	if err := d.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.Done()
	if _, err := os.Stat(cg); err != nil {
		t.Fatalf("the killed daemon's cgroup: %v (want it left behind, for the next daemon to remove)", err)
	}
	next, _ := startMptcpd(t, ctx, topo.A, "--ctl", "", "--forward", "127.0.0.1:0=127.0.0.1:9")
	if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s of the killed daemon after the next one started: %v", cg, err)
	}
	if out := next.Output(); !strings.Contains(out, "removed stale cgroups") || !strings.Contains(out, filepath.Base(cg)) {
		t.Errorf("the next daemon did not log the removal of %s:\n%s", filepath.Base(cg), out)
	}
	stopMptcpd(t, next)
}

// cgroup2Mount returns where this process reaches the cgroup v2 hierarchy, found as the
// datapath finds it.
func cgroup2Mount(t testing.TB) string {
	t.Helper()
	dir, err := datapath.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// daemonCgroup returns the directory of the cgroup mptcpgo-<pid> the daemon made for itself,
// after checking that the kernel has the daemon in it (/proc/<pid>/cgroup and the cgroup's
// cgroup.procs): a check that the directory is gone later then looks where it was.
func daemonCgroup(t testing.TB, pid int) string {
	t.Helper()
	name := fmt.Sprintf("mptcpgo-%d", pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(b), "\n"), "0::/"+name) {
		t.Fatalf("the daemon is not in the cgroup %s of the v2 hierarchy: /proc/%d/cgroup is %q", name, pid, b)
	}
	cg := filepath.Join(cgroup2Mount(t), name)
	procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
		t.Fatalf("the daemon %d is not in %s: %q", pid, cg, procs)
	}
	return cg
}

// mountTable returns the cgroup2 mounts and those of a path with mptcpgo in it, of this
// process's mount namespace (other tests' namespaces come and go as mounts of /run/netns).
func mountTable(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && (f[2] == "cgroup2" || strings.Contains(f[1], "mptcpgo")) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// availableCongestionControl returns the congestion controls the kernel has registered.
func availableCongestionControl(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	cc := strings.Fields(string(b))
	if !slices.Contains(cc, "reno") {
		t.Fatalf("available congestion control %q lacks reno, which is always built in", cc)
	}
	return cc
}

// exchangeServed runs Exchange on c (up bytes of seed 1 out), waits for the server's side
// (ServeOne, down bytes of seed 2) and checks both streams; it returns the server's result.
func exchangeServed(t testing.TB, ctx context.Context, c net.Conn, served <-chan netns.Result, up, down int64) netns.Result {
	t.Helper()
	tr, err := netns.Exchange(ctx, c, up, 1)
	return checkServed(t, netns.Result{Transfer: tr, Err: err}, served, up, down)
}

// checkServed checks the client's finished exchange r (up bytes of seed 1 out) against the
// server's (ServeOne, down bytes of seed 2), which it waits for; it returns the server's result.
func checkServed(t testing.TB, r netns.Result, served <-chan netns.Result, up, down int64) netns.Result {
	t.Helper()
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, r.Transfer, s.Transfer, up, down)
	return s
}

func checkDigests(t testing.TB, client, server netns.Transfer, up, down int64) {
	t.Helper()
	if want := netns.StreamDigest(up, 1); client.Sent != want || server.Received != want {
		t.Errorf("client to server: sent %v, received %v, want %v", client.Sent, server.Received, want)
	}
	if want := netns.StreamDigest(down, 2); server.Sent != want || client.Received != want {
		t.Errorf("server to client: sent %v, received %v, want %v", server.Sent, client.Received, want)
	}
}

// checkNoFallback asserts that every fallback counter of a kernel peer is zero.
func checkNoFallback(t *testing.T, kc map[string]uint64) {
	t.Helper()
	for _, name := range []string{"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableDataFallback",
		"DssFallback", "DSSNotMatching", "DSSCorruptionFallback", "InfiniteMapRx", "FallbackFailed", "MPFallbackTokenInit"} {
		v, ok := kc[name]
		switch {
		case !ok && newerKernelCounters[name]:
			t.Logf("this kernel has no counter %s (a newer kernel's): not checked", name)
		case !ok:
			t.Errorf("the kernel exports no counter %s", name)
		case v != 0:
			t.Errorf("kernel %s = %d, want 0", name, v)
		}
	}
}

// stopMptcpd sends SIGTERM and checks a clean exit: status 0, and no congestion control, cgroup
// or program of the daemon left behind.
func stopMptcpd(t *testing.T, p *netns.Process) {
	t.Helper()
	// nsenter and ip netns exec exec the daemon (no fork for a network namespace): pid is the
	// daemon's. What it registered and made is seen first, so that "gone" below means gone.
	pid := p.Pid()
	ccNames := []string{fmt.Sprintf("mpg%da", pid), fmt.Sprintf("mpg%db", pid)}
	if cc := availableCongestionControl(t); !slices.Contains(cc, ccNames[0]) || !slices.Contains(cc, ccNames[1]) {
		t.Errorf("congestion controls %v of the running daemon not registered: %v", ccNames, cc)
	}
	cg := daemonCgroup(t, pid)
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("mptcpd did not stop on SIGTERM")
	}
	if err := p.Err(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 0 {
			t.Errorf("mptcpd exit: %v\n%s", err, p.Output())
		}
	}
	cc := availableCongestionControl(t)
	for _, name := range ccNames {
		if slices.Contains(cc, name) {
			t.Errorf("congestion control %s still registered after the daemon stopped", name)
		}
	}
	if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon's cgroup %s after it stopped: %v", cg, err)
	}
	if !strings.Contains(p.Output(), "stopped") {
		t.Errorf("mptcpd did not log a clean stop:\n%s", p.Output())
	}
	// The stack's goroutines all ended before the datapath was unloaded (Stack.Close).
	if strings.Contains(p.Output(), "detach datapath") {
		t.Errorf("mptcpd's stack did not close cleanly:\n%s", p.Output())
	}
}

// dialAccepted connects a plain TCP client in ns to addr (a proxy in front of ln) and returns it
// with the connection ln accepted at the end of the chain; both close when the test ends.
func dialAccepted(t *testing.T, ctx context.Context, ns *netns.Namespace, addr string, ln net.Listener) (app, k net.Conn) {
	t.Helper()
	accepted := netns.AcceptAsync(ctx, ln)
	app, err := ns.DialTCP(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	if k = <-accepted; k == nil {
		t.Fatal("the connection through the proxy was not accepted")
	}
	t.Cleanup(func() { k.Close() })
	return app, k
}
