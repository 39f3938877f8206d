package netns_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// helperEnv makes TestHelperProcess act instead of returning at once.
const helperEnv = "MPTCPGO_NETNS_HELPER"

// TestHelperProcess is not a test: other tests run the test binary with helperEnv set to
// use it as a child process.
//
//	listen:PORT  listen (Go's default: MPTCP) on PORT, print "listening", block
//	fail|panic   build a topology, start `sleep`, print its names and the sleep's pid,
//	             then on a line from stdin fail or panic
//	hang         the same, then block until killed
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	if port, ok := strings.CutPrefix(mode, "listen:"); ok {
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fmt.Println("listening")
		select {}
	}
	testenv.RequireRoot(t)
	topo := netns.New(t, netns.Config{Paths: 2})
	p := topo.A.Start("sleep", "600")
	fmt.Printf("NETNS-HELPER %s %s %d\n", topo.A.Name(), topo.B.Name(), p.Pid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	case "hang":
		select {}
	}
}

func TestTopologyAccessors(t *testing.T) {
	testenv.RequireRoot(t)
	topo := netns.New(t, netns.Config{Paths: 3, IPv6: true})

	if !strings.HasPrefix(topo.A.Name(), netns.NamePrefix+strconv.Itoa(os.Getpid())+"-") ||
		!strings.HasSuffix(topo.A.Name(), "-a") || !strings.HasSuffix(topo.B.Name(), "-b") {
		t.Errorf("names %q, %q", topo.A.Name(), topo.B.Name())
	}
	if topo.A.Side() != netns.SideA || topo.B.Side() != netns.SideB {
		t.Errorf("sides %v, %v", topo.A.Side(), topo.B.Side())
	}
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*netns.Namespace{topo.A, topo.B} {
		if ns.NsPath() != filepath.Join("/run/netns", ns.Name()) {
			t.Errorf("NsPath %q", ns.NsPath())
		}
		if !strings.Contains(string(list), ns.Name()) {
			t.Errorf("ip netns list does not show %s:\n%s", ns.Name(), list)
		}
	}
	if len(topo.Paths) != 3 {
		t.Fatalf("%d paths", len(topo.Paths))
	}
	p := topo.Path(2)
	for _, c := range []struct {
		got  netip.Addr
		want string
	}{
		{p.A.V4, "10.2.0.1"}, {p.B.V4, "10.2.0.2"},
		{p.A.Addr(netns.IPv6), "fd00:2::1"}, {p.B.Addr(netns.IPv6), "fd00:2::2"},
	} {
		if c.got.String() != c.want {
			t.Errorf("address %v, want %s", c.got, c.want)
		}
	}
	if p.A.Name != "veth2" || p.B.Name != "veth2" || p.A.Peer != p.B || p.B.NS != topo.B || p.Index != 2 {
		t.Errorf("path 2: %+v / %+v", p.A, p.B)
	}
	if got := p.B.HostPort(netns.IPv6, 80); got != "[fd00:2::2]:80" {
		t.Errorf("HostPort = %q", got)
	}
	// The addresses, rules and routes as `ip` sees them.
	if out := topo.A.IP("-6", "addr", "show", "dev", "veth2"); !strings.Contains(out, "fd00:2::1/64") {
		t.Errorf("ip -6 addr in A:\n%s", out)
	}
	if out := topo.B.IP("rule"); !strings.Contains(out, "from 10.2.0.2 lookup 102") ||
		!strings.Contains(out, "to 10.2.0.0/24 lookup 102") {
		t.Errorf("ip rule in B:\n%s", out)
	}
	if out := topo.A.IP("-6", "route", "show", "table", "101"); !strings.Contains(out, "default via fd00:1::2 dev veth1") {
		t.Errorf("ip -6 route table 101 in A:\n%s", out)
	}
	// Nothing of the topology is visible outside it.
	host, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range host {
		if l.Attrs().Index == p.A.Index && l.Attrs().Name == p.A.Name {
			t.Errorf("%s (index %d) is in the caller's namespace", l.Attrs().Name, l.Attrs().Index)
		}
	}
}

// TestRouting checks that every connection runs over the path of its address on the
// Initiator side, in both directions, whatever address of the other side it reaches,
// for both families and either side as the Initiator.
func TestRouting(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	for _, init := range []netns.Side{netns.SideA, netns.SideB} {
		t.Run("initiator "+init.String(), func(t *testing.T) {
			testRouting(t, init)
		})
	}
}

func testRouting(t *testing.T, init netns.Side) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 3, IPv6: true, Initiator: init})
	cli, srv := topo.NS(init), topo.NS(init.Other())
	const n = 1 << 20

	for _, f := range []netns.Family{netns.IPv4, netns.IPv6} {
		ln, err := srv.ListenTCP(topo.Path(0).End(srv.Side()).HostPort(f, 0))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range topo.Paths {
			local := p.End(init).Addr(f)
			before := pathTx(t, topo)
			served := netns.ServeOne(ctx, ln, n, 2)
			c, err := cli.Dial(ctx, dialer(local), "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			tr, err := netns.Exchange(ctx, c, n, 1)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			s := <-served
			if s.Err != nil {
				t.Fatal(s.Err)
			}
			if tr.Sent != s.Received || s.Sent != tr.Received {
				t.Errorf("%v from %v: data mismatch", f, local)
			}
			if got := s.Remote.(*net.TCPAddr).AddrPort().Addr(); got != local {
				t.Errorf("%v from %v: server sees %v", f, local, got)
			}
			after := pathTx(t, topo)
			for _, q := range topo.Paths {
				da, db := after[q.Index][0]-before[q.Index][0], after[q.Index][1]-before[q.Index][1]
				if q == p && (da < n || db < n) {
					t.Errorf("%v from %v: path %d sent A->B %d, B->A %d bytes, want >= %d each",
						f, local, q.Index, da, db, n)
				}
				if q != p && (da > n/8 || db > n/8) {
					t.Errorf("%v from %v: path %d carried A->B %d, B->A %d bytes, want none",
						f, local, q.Index, da, db)
				}
			}
		}
	}

	// An unbound socket takes the path of the destination, with that path's address.
	ln, err := srv.ListenTCP(":0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for _, f := range []netns.Family{netns.IPv4, netns.IPv6} {
		for _, p := range topo.Paths {
			c, err := cli.DialTCP(ctx, p.End(srv.Side()).HostPort(f, port))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), p.End(init).Addr(f); got != want {
				t.Errorf("unbound socket to %v has source %v, want %v", p.End(srv.Side()).Addr(f), got, want)
			}
			c.Close()
		}
	}
}

// pathTx returns the TxBytes of every path's A and B ends.
func pathTx(t *testing.T, topo *netns.Topology) [][2]uint64 {
	t.Helper()
	var out [][2]uint64
	for _, p := range topo.Paths {
		out = append(out, [2]uint64{txBytes(t, p.A), txBytes(t, p.B)})
	}
	return out
}

func TestDoCommandStart(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2})

	host, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	var names []string
	err = topo.B.Do(func() error {
		links, err := netlink.LinkList() // the default handle: this thread's namespace
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, " ") != "lo veth0 veth1" {
		t.Errorf("links seen in Do: %q", names)
	}
	if err := topo.A.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do returned %v, want f's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want Do to re-raise f's panic", r)
			}
		}()
		topo.A.Do(func() error { panic("boom") })
	}()
	if cur, err := vnetns.Get(); err != nil || !cur.Equal(host) {
		t.Errorf("caller's thread left its namespace (%v)", err)
	}

	out, err := topo.B.Output(ctx, "ip", "-o", "-4", "addr", "show", "dev", "veth1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "10.1.0.2/24") {
		t.Errorf("ip addr via nsenter in B: %s", out)
	}
	tcp, err := topo.A.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tcp["TCPTimeouts"]; !ok {
		t.Errorf("no TcpExt TCPTimeouts in %v", tcp)
	}

	// A background process listening inside B (the test binary, see TestHelperProcess).
	const port = 7123
	cmd := topo.B.Command(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=listen:"+strconv.Itoa(port))
	p := topo.B.StartCmd(cmd)
	if err := topo.B.WaitListening(ctx, port); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(ctx, "listening"); err != nil {
		t.Fatal(err)
	}
	c, err := topo.A.DialMPTCP(ctx, topo.Path(1).B.HostPort(netns.IPv4, port))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := netns.IsMPTCP(c); err != nil || !m {
		t.Errorf("IsMPTCP to Go's default listener: %t, %v; want true", m, err)
	}
	c.Close()
	p.Stop()
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if err := topo.B.WaitListening(short, port); err == nil {
		t.Error("port still listening after Stop")
	}
}

// TestCleanupAfterSubtest runs a topology in a subtest and checks that its end removed
// the namespaces, the veths and the processes.
func TestCleanupAfterSubtest(t *testing.T) {
	testenv.RequireRoot(t)
	var names [2]string
	var pid int
	var held [2]vnetns.NsHandle
	t.Run("topology", func(t *testing.T) {
		topo := netns.New(t, netns.Config{Paths: 2, IPv6: true})
		names = [2]string{topo.A.Name(), topo.B.Name()}
		pid = topo.B.Start("sleep", "600").Pid()
		for i, ns := range []*netns.Namespace{topo.A, topo.B} {
			h, err := vnetns.GetFromPath(ns.NsPath())
			if err != nil {
				t.Fatal(err)
			}
			held[i] = h
		}
		if _, err := topo.A.DialTCP(t.Context(), topo.Path(1).B.HostPort(netns.IPv6, 9)); err == nil {
			t.Error("dial of a closed port succeeded")
		}
	})
	checkGone(t, names, held, pid)
}

// TestCleanupAfterFailure runs a topology in a child test binary that fails, panics or
// is killed, and checks that nothing is left behind: the cleanup runs on failure and
// panic, and the next New removes what a killed binary left.
func TestCleanupAfterFailure(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"fail", "panic", "kill"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			helperMode := mode
			if mode == "kill" {
				helperMode = "hang"
			}
			cmd.Env = append(os.Environ(), helperEnv+"="+helperMode)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var names [2]string
			var pid int
			var output strings.Builder
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				output.WriteString(sc.Text() + "\n")
				if rest, ok := strings.CutPrefix(sc.Text(), "NETNS-HELPER "); ok {
					if _, err := fmt.Sscan(rest, &names[0], &names[1], &pid); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if pid == 0 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper printed no names:\n%s%s", output.String(), stderr.String())
			}
			var held [2]vnetns.NsHandle
			for i, name := range names {
				h, err := vnetns.GetFromName(name)
				if err != nil {
					t.Fatal(err)
				}
				held[i] = h
			}
			if mode == "kill" {
				cmd.Process.Kill()
			} else {
				stdin.Write([]byte("go\n"))
			}
			go func() { // drain, so that the child never blocks on a full pipe
				for sc.Scan() {
					output.WriteString(sc.Text() + "\n")
				}
			}()
			err = cmd.Wait()
			if err == nil {
				t.Fatalf("helper (%s) succeeded, want a failure", mode)
			}
			if mode == "kill" {
				// A killed binary could not clean up: the next New (here, or in any other
				// test binary) removes what it left.
				netns.New(t, netns.Config{})
			}
			checkGone(t, names, held, pid)
		})
	}
}

// checkGone checks that the named namespaces are unpinned, that the namespaces (still
// held open through held, which it closes) have no links but lo, and that pid is gone.
func checkGone(t *testing.T, names [2]string, held [2]vnetns.NsHandle, pid int) {
	t.Helper()
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		if _, err := os.Stat(filepath.Join(netns.RunDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still pinned (%v)", name, err)
		}
		if strings.Contains(string(list), name) {
			t.Errorf("ip netns list still shows %s", name)
		}
		h, err := netlink.NewHandleAt(held[i])
		if err != nil {
			t.Fatal(err)
		}
		links, err := h.LinkList()
		h.Close()
		held[i].Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("%s: link %s left behind", name, l.Attrs().Name)
			}
		}
	}
	if alive(pid) {
		t.Errorf("process %d left behind", pid)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestStartSurvivesThreadExit: a child with a death signal is killed when the thread that
// forked it ends, which Go does to any thread whose goroutine exits locked (a namespace pin,
// the emulator's real-time threads). Started by netns.Start, it lives on; forked from such a
// thread directly, it is killed, which shows this test can fail.
func TestStartSurvivesThreadExit(t *testing.T) {
	start := func(viaSpawner bool) *exec.Cmd {
		cmd := exec.Command("sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
			if viaSpawner {
				errc <- netns.Start(cmd)
			} else {
				errc <- cmd.Start()
			}
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	wait := func(cmd *exec.Cmd) <-chan error {
		c := make(chan error, 1)
		go func() { c <- cmd.Wait() }()
		return c
	}
	kept, direct := start(true), start(false)
	keptDone, directDone := wait(kept), wait(direct)
	defer func() {
		kept.Process.Kill()
		<-keptDone
	}()
	select {
	case err := <-directDone:
		if ws, ok := direct.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the child forked from the ended thread: %v, want killed by SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		direct.Process.Kill()
		<-directDone
		t.Fatal("the child forked from a thread that ended still runs: the death signal did not fire, so this test shows nothing")
	}
	select {
	case err := <-keptDone:
		t.Fatalf("the child started by netns.Start ended with its caller's thread: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
