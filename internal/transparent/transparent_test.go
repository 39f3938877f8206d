package transparent

import (
	"bufio"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/cgroup2"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// env is the tests' world. The test process moves into a cgroup of its own, where the programs
// are attached (so that nothing else on the host runs them), and works in two network
// namespaces:
//
//	cgroup mptcpgo-transparent-<pid>: the test process (the applications and "mptcpd")
//	cgroup mptcpgo-transparent-<pid>-own: empty, given as Config.OwnCgroupID
//
//	netns A (intercepted)                              netns B (another one, same addresses)
//	  lo   127.0.0.1, ::1: "mptcpd"'s listeners,          lo   127.0.0.1, ::1: listeners at
//	       and a plain listener                                "mptcpd"'s ports
//	  tp0  10.77.0.1-3/24, fd77::1-2/64 (veth to tp1)     tp0  10.77.0.1/24, fd77::1/64 (veth)
//
// Nothing listens on tp0's addresses: a connection that is not intercepted is refused at once.
// "mptcpd" answers each connection with the original destination Original gives it ("none"
// without one) and closes; the plain listener answers "plain". B has listeners at "mptcpd"'s
// ports too, which answer "intercepted in B".
type env struct {
	t           *testing.T
	cgroup      string // the test's cgroup, where the programs go
	ownCgroupID uint64 // the empty one's
	a, b        vnetns.NsHandle
	cookieA     uint64

	listen4, listen6 netip.AddrPort // "mptcpd"
	plain4, plain6   netip.AddrPort

	mu sync.Mutex
	ic *Interceptor // whom "mptcpd" asks
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	e := &env{t: t}
	e.enterCgroup()
	e.a = newNetns(t, []string{"10.77.0.1/24", "10.77.0.2/24", "10.77.0.3/24", "fd77::1/64", "fd77::2/64"})
	e.b = newNetns(t, []string{"10.77.0.1/24", "fd77::1/64"})
	err := inNetns(e.a, func() error {
		var err error
		e.cookieA, err = netnsCookie()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e.listen4 = e.serve(e.a, "tcp4", "127.0.0.1:0", e.answerOriginal)
	e.listen6 = e.serve(e.a, "tcp6", "[::1]:0", e.answerOriginal)
	plain := func(c net.Conn) string { return "plain" }
	e.plain4 = e.serve(e.a, "tcp4", "127.0.0.1:0", plain)
	e.plain6 = e.serve(e.a, "tcp6", "[::1]:0", plain)
	// Listeners in B at "mptcpd"'s ports: a connection of B that was intercepted would reach
	// them, rather than be refused as well.
	wrong := func(c net.Conn) string { return "intercepted in B" }
	e.serve(e.b, "tcp4", e.listen4.String(), wrong)
	e.serve(e.b, "tcp6", e.listen6.String(), wrong)
	return e
}

// enterCgroup moves the test process into a cgroup of its own for the test, and makes the
// empty one.
func (e *env) enterCgroup() {
	t := e.t
	root, err := cgroup2.OpenRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	prev, err := root.CurrentDir()
	if err != nil {
		t.Fatal(err)
	}
	e.cgroup = filepath.Join(root.Dir, fmt.Sprintf("mptcpgo-transparent-%d", os.Getpid()))
	own := e.cgroup + "-own"
	for _, dir := range []string{e.cgroup, own} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		})
	}
	if e.ownCgroupID, err = cgroupID(own); err != nil {
		t.Fatal(err)
	}
	if err := moveTo(e.cgroup); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := moveTo(prev); err != nil {
			t.Errorf("move back: %v", err)
		}
	})
}

func moveTo(dir string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// newNetns creates a network namespace with lo up and tp0 with addrs, one end of a veth pair
// whose other end, tp1, has none.
func newNetns(t *testing.T, addrs []string) vnetns.NsHandle {
	t.Helper()
	var ns vnetns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if ns, err = vnetns.New(); err != nil {
			errc <- err
			return
		}
		if err := vnetns.Set(orig); err != nil {
			errc <- err // the thread stays locked and ends
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err == nil {
		// This kernel may have no dummy driver: a veth pair, both ends here, does as well.
		err = h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tp0"}, PeerName: "tp1"})
	}
	var link0 netlink.Link
	if err == nil {
		link0, err = h.LinkByName("tp0")
	}
	for _, s := range addrs {
		if err != nil {
			break
		}
		var a *netlink.Addr
		if a, err = netlink.ParseAddr(s); err == nil {
			a.Flags = unix.IFA_F_NODAD
			err = h.AddrAdd(link0, a)
		}
	}
	if err == nil {
		err = h.LinkSetUp(link0)
	}
	if err == nil {
		var peer netlink.Link
		if peer, err = h.LinkByName("tp1"); err == nil {
			err = h.LinkSetUp(peer)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// inNetns runs f on a thread in ns.
func inNetns(ns vnetns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = f()
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// serve listens in ns on addr and answers each connection with answer(conn) and a newline.
func (e *env) serve(ns vnetns.NsHandle, network, addr string, answer func(net.Conn) string) netip.AddrPort {
	t := e.t
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, answer(c))
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func (e *env) answerOriginal(c net.Conn) string {
	e.mu.Lock()
	ic := e.ic
	e.mu.Unlock()
	if ic == nil {
		return "none"
	}
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	orig, ok := ic.Original(peer)
	if !ok {
		return "none"
	}
	if again, ok := ic.Original(peer); ok {
		return "not forgotten: " + again.String()
	}
	return orig.String()
}

// config is the tests' usual configuration.
func (e *env) config() Config {
	return Config{
		Cgroup:      e.cgroup,
		NetnsCookie: e.cookieA,
		OwnCgroupID: e.ownCgroupID,
		Listen4:     e.listen4,
		Listen6:     e.listen6,
	}
}

// start starts an interception, from a thread in A; the test closes it unless it did.
func (e *env) start(cfg Config) *Interceptor {
	e.t.Helper()
	var ic *Interceptor
	err := inNetns(e.a, func() error {
		var err error
		ic, err = Start(cfg)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.ic = ic
	e.mu.Unlock()
	e.t.Cleanup(func() { ic.Close() })
	return ic
}

// result is what a connection got: the answer, or refused, and the peer getpeername reported.
type result struct {
	answer string // "refused" when the connection was refused
	peer   string
}

const refused = "refused"

// dial connects from ns to addr (network tcp4 or tcp6) with the standard library.
func (e *env) dial(ns vnetns.NsHandle, network, addr string) result {
	e.t.Helper()
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	if errors.Is(err, syscall.ECONNREFUSED) {
		return result{answer: refused}
	}
	if err != nil {
		e.t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		e.t.Fatal(err)
	}
	var peer string
	raw.Control(func(fd uintptr) { peer = getpeername(e.t, int(fd)) })
	if c.RemoteAddr().String() != peer {
		e.t.Errorf("dial %s: RemoteAddr %s, getpeername %s", addr, c.RemoteAddr(), peer)
	}
	return result{answer: readAnswer(e.t, c), peer: peer}
}

// dialRaw connects from A with a socket of family, type SOCK_STREAM and protocol proto to sa,
// blocking.
func (e *env) dialRaw(family, proto int, sa unix.Sockaddr) result {
	e.t.Helper()
	var fd int
	err := inNetns(e.a, func() error {
		var err error
		if fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err = unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
		}
		return err
	})
	if errors.Is(err, unix.ECONNREFUSED) {
		return result{answer: refused}
	}
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	peer := getpeername(e.t, fd)
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	return result{answer: readAnswer(e.t, c), peer: peer}
}

func getpeername(t *testing.T, fd int) string {
	t.Helper()
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	t.Fatalf("getpeername: %T", sa)
	return ""
}

func readAnswer(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func mapped(a string) *unix.SockaddrInet6 {
	ap := netip.MustParseAddrPort(a)
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())} // As16: ::ffff:a.b.c.d
}

// checkCounters compares the counters named in want and returns them all.
func checkCounters(t *testing.T, ic *Interceptor, want map[string]uint64) map[string]uint64 {
	t.Helper()
	got, err := ic.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != int(TransparentTpCounterTP_NR_COUNTERS) {
		t.Errorf("%d counters, want %d: %v", len(got), TransparentTpCounterTP_NR_COUNTERS, got)
	}
	for name, n := range got {
		w, ok := want[name]
		if !ok {
			continue
		}
		if n != w {
			t.Errorf("counter %s = %d, want %d", name, n, w)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("no counter %s", name)
		}
	}
	t.Logf("counters: %v", got)
	return got
}

// TestIntercept: in A, connections to tp0's addresses reach "mptcpd", which finds where they
// were going, and the application's getpeername says it; loopback, excluded destinations,
// IPPROTO_MPTCP sockets and everything in B are left alone (refused). After Close nothing is
// intercepted.
func TestIntercept(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	for _, s := range []string{"10.77.0.2", "10.77.0.3:443", "10.77.0.0/24:8443", "[fd77::/64]:443", "fd77::2/128"} {
		x, err := ParseExclusion(s)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Exclude = append(cfg.Exclude, x)
	}
	ic := e.start(cfg)
	intercepted := func(dst string) result { return result{answer: dst, peer: dst} }
	for _, tc := range []struct {
		name    string
		ns      vnetns.NsHandle
		network string
		addr    string
		want    result
	}{
		{"ipv4", e.a, "tcp4", "10.77.0.1:80", intercepted("10.77.0.1:80")},
		{"ipv4 other port than a rule's", e.a, "tcp4", "10.77.0.3:80", intercepted("10.77.0.3:80")},
		{"ipv6", e.a, "tcp6", "[fd77::1]:80", intercepted("[fd77::1]:80")},
		{"loopback", e.a, "tcp4", e.plain4.String(), result{"plain", e.plain4.String()}},
		{"loopback ipv6", e.a, "tcp6", e.plain6.String(), result{"plain", e.plain6.String()}},
		{"excluded address", e.a, "tcp4", "10.77.0.2:80", result{answer: refused}},
		{"excluded address and port", e.a, "tcp4", "10.77.0.3:443", result{answer: refused}},
		{"excluded prefix and port", e.a, "tcp4", "10.77.0.1:8443", result{answer: refused}},
		{"excluded ipv6 prefix and port", e.a, "tcp6", "[fd77::1]:443", result{answer: refused}},
		{"excluded ipv6 address", e.a, "tcp6", "[fd77::2]:80", result{answer: refused}},
		{"other netns", e.b, "tcp4", "10.77.0.1:80", result{answer: refused}},
		{"other netns ipv6", e.b, "tcp6", "[fd77::1]:80", result{answer: refused}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.dial(tc.ns, tc.network, tc.addr); got != tc.want {
				t.Errorf("%s: %+v, want %+v", tc.addr, got, tc.want)
			}
		})
	}
	t.Run("dual-stack socket to a mapped address", func(t *testing.T) {
		// "mptcpd" gets the IPv4 destination; the application sees the mapped one.
		want := result{answer: "10.77.0.1:80", peer: "[::ffff:10.77.0.1]:80"}
		if got := e.dialRaw(unix.AF_INET6, 0, mapped("10.77.0.1:80")); got != want {
			t.Errorf("%+v, want %+v", got, want)
		}
		if got := e.dialRaw(unix.AF_INET6, 0, mapped("10.77.0.2:80")); got.answer != refused {
			t.Errorf("excluded: %+v, want refused", got)
		}
	})
	t.Run("IPPROTO_MPTCP", func(t *testing.T) {
		sa := &unix.SockaddrInet4{Addr: [4]byte{10, 77, 0, 1}, Port: 80}
		if got := e.dialRaw(unix.AF_INET, unix.IPPROTO_MPTCP, sa); got.answer != refused {
			t.Errorf("%+v, want refused", got)
		}
	})
	// "mptcpd" asked twice for each connection, and would have said if the second found it.
	t.Run("Original of an unknown peer", func(t *testing.T) {
		if got, ok := ic.Original(netip.MustParseAddrPort("127.0.0.1:1")); ok {
			t.Errorf("Original of an unknown peer: %v", got)
		}
	})
	c := checkCounters(t, ic, map[string]uint64{
		"Intercepted4":   3, // 10.77.0.1:80, 10.77.0.3:80, mapped 10.77.0.1:80
		"Intercepted6":   1,
		"SkipLoopback":   2,
		"SkipExcluded":   6,
		"SkipOtherNetns": 2,
		"SkipMptcp":      1,
		"SkipKernel":     0,
		"SkipOwnCgroup":  0,
		"SkipBoundDev":   0,
		"SkipUnspec":     0,
		"SkipLinkLocal":  0,
		"SkipNoIpv6":     0,
		"StorageFail":    0,
		"Recorded":       4,
		"RecordFail":     0,
	})
	// At least one getpeername of each intercepted connection (the standard library adds its
	// own).
	if c["PeerRestored"] < 4 {
		t.Errorf("PeerRestored = %d, want at least 4", c["PeerRestored"])
	}
	if err := ic.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.dial(e.a, "tcp4", "10.77.0.1:80"); got.answer != refused {
		t.Errorf("after Close: %+v, want refused", got)
	}
	if got := e.dial(e.a, "tcp6", "[fd77::1]:80"); got.answer != refused {
		t.Errorf("ipv6 after Close: %+v, want refused", got)
	}
}

// TestOwnCgroup: with OwnCgroupID 0, the calling process's cgroup is left alone, and the test
// process is in it.
func TestOwnCgroup(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.OwnCgroupID = 0
	ic := e.start(cfg)
	if got := e.dial(e.a, "tcp4", "10.77.0.1:80"); got.answer != refused {
		t.Errorf("%+v, want refused", got)
	}
	checkCounters(t, ic, map[string]uint64{"SkipOwnCgroup": 1, "Intercepted4": 0})
}

// TestNoIPv6Listener: without Listen6, IPv6 destinations are left alone; a dual-stack socket's
// connection to a mapped IPv4 address still goes to Listen4.
func TestNoIPv6Listener(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Listen6 = netip.AddrPort{}
	ic := e.start(cfg)
	if got := e.dial(e.a, "tcp6", "[fd77::1]:80"); got.answer != refused {
		t.Errorf("ipv6: %+v, want refused", got)
	}
	want := result{answer: "10.77.0.1:80", peer: "[::ffff:10.77.0.1]:80"}
	if got := e.dialRaw(unix.AF_INET6, 0, mapped("10.77.0.1:80")); got != want {
		t.Errorf("mapped: %+v, want %+v", got, want)
	}
	checkCounters(t, ic, map[string]uint64{"SkipNoIpv6": 1, "Intercepted4": 1, "Intercepted6": 0})
}

// TestReconnect: a socket whose intercepted connect failed (nothing listens where it was sent)
// and that then connects to loopback is left alone, and its getpeername tells the truth.
func TestReconnect(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	var closed netip.AddrPort
	err := inNetns(e.a, func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		closed = ln.Addr().(*net.TCPAddr).AddrPort()
		return ln.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen4 = closed
	ic := e.start(cfg)
	var fd int
	err = inNetns(e.a, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{10, 77, 0, 1}, Port: 80}); !errors.Is(err, unix.ECONNREFUSED) {
			return fmt.Errorf("intercepted connect to a closed listener: %v, want ECONNREFUSED", err)
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Addr: e.plain4.Addr().As4(), Port: int(e.plain4.Port())})
	})
	if err != nil {
		t.Fatal(err)
	}
	if peer := getpeername(t, fd); peer != e.plain4.String() {
		t.Errorf("getpeername %s, want %s", peer, e.plain4)
	}
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readAnswer(t, c); got != "plain" {
		t.Errorf("answer %q, want plain", got)
	}
	checkCounters(t, ic, map[string]uint64{"Intercepted4": 1, "SkipLoopback": 1, "PeerRestored": 0})
}

// helperEnv makes TestHelperStart act: "<cgroup>,<netns cookie>,<own cgroup id>,<listen4>"
// starts an interception, prints STARTED and waits to be killed.
const helperEnv = "MPTCPGO_TRANSPARENT_HELPER"

// TestHelperStart is not a test: TestKill9 runs the test binary with helperEnv set to use it
// as a process that dies with its interception running.
func TestHelperStart(t *testing.T) {
	v := os.Getenv(helperEnv)
	if v == "" {
		return
	}
	f := strings.Split(v, ",")
	if len(f) != 4 {
		t.Fatalf("%s=%q", helperEnv, v)
	}
	cookie, err1 := strconv.ParseUint(f[1], 10, 64)
	own, err2 := strconv.ParseUint(f[2], 10, 64)
	l4, err3 := netip.ParseAddrPort(f[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Config{Cgroup: f[0], NetnsCookie: cookie, OwnCgroupID: own, Listen4: l4}); err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	fmt.Println("STARTED")
	select {}
}

// TestKill9: the programs go with the process that attached them, however it dies.
func TestKill9(t *testing.T) {
	e := newEnv(t)
	cg, err := openCgroup(e.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	child := exec.Command(os.Args[0], "-test.run=^TestHelperStart$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d,%s", helperEnv, e.cgroup, e.cookieA, e.ownCgroupID, e.listen4))
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "STARTED\n" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("helper said %q (%v)", line, err)
	}
	if n := attached(t, cg); n != len(programs) {
		t.Errorf("%d programs attached, want %d", n, len(programs))
	}
	// "mptcpd" has no Interceptor of its own to ask: "none" says the connection reached it.
	if got := e.dial(e.a, "tcp4", "10.77.0.1:80"); got.answer != "none" {
		t.Errorf("with the helper running: %+v, want none", got)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	// The kernel releases the links of the dead process's descriptors in a work item: wait
	// for it, within a bound.
	deadline := time.Now().Add(10 * time.Second)
	for attached(t, cg) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d programs still attached after the helper was killed", attached(t, cg))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.dial(e.a, "tcp4", "10.77.0.1:80"); got.answer != refused {
		t.Errorf("after kill -9: %+v, want refused", got)
	}
}

// attached counts the programs attached to the cgroup at our attach types.
func attached(t *testing.T, cg *os.File) int {
	t.Helper()
	n := 0
	for _, p := range programs {
		r, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: p.attach})
		if err != nil {
			t.Fatalf("query %s: %v", p.name, err)
		}
		n += len(r.Programs)
	}
	return n
}

// TestStartErrors: a configuration Start cannot work with is refused with a clear error.
func TestStartErrors(t *testing.T) {
	l4 := netip.MustParseAddrPort("127.0.0.1:1")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
		root bool
	}{
		{"no IPv4 listener", Config{}, "the IPv4 listener invalid AddrPort is no IPv4 address and port", false},
		{"IPv6 as IPv4 listener", Config{Listen4: netip.MustParseAddrPort("[::1]:1")}, "is no IPv4 address", false},
		{"IPv4 listener without port", Config{Listen4: netip.MustParseAddrPort("127.0.0.1:0")}, "is no IPv4 address and port", false},
		{"IPv4 as IPv6 listener", Config{Listen4: l4, Listen6: netip.MustParseAddrPort("127.0.0.1:2")}, "the IPv6 listener 127.0.0.1:2 is no IPv6 address", false},
		{"not a cgroup", Config{Listen4: l4, Cgroup: os.TempDir()}, "is not a cgroup v2 directory", true},
		{"no such cgroup", Config{Listen4: l4, Cgroup: "/nonexistent/cgroup"}, "open cgroup", true},
		{"no exclusion prefix", Config{Listen4: l4, Exclude: []Exclusion{{Port: 80}}}, "no prefix", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testenv.RequireRoot(t)
			}
			ic, err := Start(tc.cfg)
			if err == nil {
				ic.Close()
				t.Fatalf("started, want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want %q in it", err, tc.want)
			}
		})
	}
}

// TestVerifierCost reports the instructions the verifier processed for each program on this
// kernel and holds them within testenv.VerifierBudget.
func TestVerifierCost(t *testing.T) {
	testenv.RequireRoot(t)
	spec, err := LoadTransparent()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["tp_cfg"].Set(TransparentTpConfig{NetnsCookie: 1, OwnCgroup: 1, Listen4Port: htons(1), Listen6Port: htons(1)}); err != nil {
		t.Fatal(err)
	}
	var objs TransparentObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	for _, p := range programs {
		testenv.CheckVerifierCost(t, p.name, p.prog(&objs))
	}
}
