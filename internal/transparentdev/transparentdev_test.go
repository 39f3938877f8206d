package transparentdev

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// checkAnswer checks who answered a connection from the LAN host to dst, and that the server's
// accepted socket has dst as its local address and the LAN host as its peer.
func checkAnswer(t *testing.T, got answer, who, dst string) {
	t.Helper()
	if got.who != who || got.local != dst || got.remote != got.client {
		t.Errorf("to %s: %s answered with local %s, remote %s (client %s); want %s with local %s, remote %s",
			dst, got.who, got.local, got.remote, got.client, who, dst, got.client)
	}
}

// counters reads the interceptor's counters and checks those in exact (equal) and some
// (nonzero).
func counters(t *testing.T, ic *Interceptor, exact map[string]uint64, some ...string) map[string]uint64 {
	t.Helper()
	got, err := ic.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != int(TransparentdevTpdCounterTPD_NR_COUNTERS) {
		t.Errorf("%d counters, want %d: %v", len(got), TransparentdevTpdCounterTPD_NR_COUNTERS, got)
	}
	for name, n := range exact {
		if v, ok := got[name]; !ok || v != n {
			t.Errorf("counter %s = %d (present %v), want %d", name, v, ok, n)
		}
	}
	for _, name := range some {
		if v, ok := got[name]; !ok || v == 0 {
			t.Errorf("counter %s = %d (present %v), want some", name, v, ok)
		}
	}
	t.Logf("counters: %v", got)
	return got
}

// state is what the router's namespace holds of ours.
type state struct {
	rules   []string // ours by priority or table
	routes  []string // in Table
	tcx     int      // programs on lanDev's tcx ingress
	filters []string // cls_bpf filters on lanDev's ingress, by name
	clsact  bool     // lanDev has a clsact qdisc
}

func (tp *topo) state() state {
	t := tp.t
	t.Helper()
	var s state
	rules, err := tp.rnl.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Priority == RulePriority || r.Table == Table {
			s.rules = append(s.rules, fmt.Sprintf("family %d pref %d fwmark %#x iif %s lookup %d proto %d", r.Family, r.Priority, r.Mark, r.IifName, r.Table, r.Protocol))
		}
	}
	routes, err := tp.rnl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		s.routes = append(s.routes, fmt.Sprintf("type %d %v ifindex %d proto %d", r.Type, r.Dst, r.LinkIndex, r.Protocol))
	}
	dev, err := tp.rnl.LinkByName(lanDev)
	if err != nil {
		t.Fatal(err)
	}
	err = inNetns(tp.router, func() error {
		q, err := link.QueryPrograms(link.QueryOptions{Target: dev.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			s.tcx = len(q.Programs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := tp.rnl.FilterList(dev, netlink.HANDLE_MIN_INGRESS)
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: no clsact qdisc
		t.Fatal(err)
	}
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok {
			s.filters = append(s.filters, b.Name)
		}
	}
	qs, err := tp.rnl.QdiscList(dev)
	if err != nil {
		t.Fatal(err)
	}
	s.clsact = slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "clsact" })
	return s
}

// checkState compares the rules, routes and attachments with what one interception of lanDev
// for both families has (running; legacy: with a cls_bpf filter even if there is tcx), or
// nothing (!running).
func (tp *topo) checkState(running bool, legacy bool) {
	t := tp.t
	t.Helper()
	s := tp.state()
	wantRules, wantRoutes, wantTCX, wantFilters := 0, 0, 0, []string(nil)
	if running {
		wantRules, wantRoutes = 2, 2
		if !legacy && tcattach.HaveTCX() == nil {
			wantTCX = 1
		} else {
			wantFilters = []string{FilterName}
		}
	}
	if len(s.rules) != wantRules || len(s.routes) != wantRoutes || s.tcx != wantTCX || !slices.Equal(s.filters, wantFilters) {
		t.Errorf("rules %q, routes %q, tcx programs %d, filters %q; want %d rules, %d routes, %d tcx programs, filters %q",
			s.rules, s.routes, s.tcx, s.filters, wantRules, wantRoutes, wantTCX, wantFilters)
	}
	if !running && s.clsact {
		t.Errorf("a clsact qdisc is left on %s", lanDev)
	}
	t.Logf("state: %+v", s)
}

// TestIntercept: TCP connections from the LAN host to the server, IPv4 and IPv6, reach "mptcpd"
// on the router, whose accepted socket has the server's address as its local address; an
// excluded destination, the router's own services, the router's own connections, connections
// from before Start, ICMP and UDP go where they went. After Close everything goes to the server
// and nothing of ours is left.
func TestIntercept(t *testing.T) {
	tp := newTopo(t)
	tp.checkState(false, false)
	before, beforeR, got := tp.dial(tp.lan, net.JoinHostPort(wanHost4, "80"))
	defer before.Close()
	checkAnswer(t, got, "wan", wanHost4+":80")

	ic := tp.start(Config{
		Devs:    []string{lanDev},
		Listen4: tp.listen4,
		Listen6: tp.listen6,
		Exclude: []netip.Prefix{netip.MustParsePrefix(wanOther4 + "/32"), netip.MustParsePrefix(wanOther6 + "/128")},
	})
	tp.checkState(true, false)

	for _, tc := range []struct {
		name string
		from string // "lan" or "router"
		dst  string
		who  string
	}{
		{"ipv4", "lan", wanHost4 + ":80", "mptcpd"},
		{"ipv6", "lan", "[" + wanHost6 + "]:80", "mptcpd"},
		{"port of a router's service", "lan", wanHost4 + ":8080", "mptcpd"}, // its listener is found, and not used
		{"excluded ipv4", "lan", wanOther4 + ":80", "wan"},
		{"excluded ipv6", "lan", "[" + wanOther6 + "]:80", "wan"},
		{"router's LAN address", "lan", routerLan + ":8080", "router"},
		{"router's WAN address", "lan", routerWan + ":8080", "router"},
		{"router's IPv6 address", "lan", "[fd78::1]:8080", "router"},
		{"from the router", "router", wanHost4 + ":80", "wan"},
		{"from the router ipv6", "router", "[" + wanHost6 + "]:80", "wan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := tp.lan
			if tc.from == "router" {
				ns = tp.router
			}
			c, r, got := tp.dial(ns, tc.dst)
			defer c.Close()
			checkAnswer(t, got, tc.who, tc.dst)
			if tc.from == "lan" && !strings.HasPrefix(got.client, "[fd77::2]:") && !strings.HasPrefix(got.client, lanHost4+":") {
				t.Errorf("the LAN host's connection comes from %s", got.client)
			}
			echo(t, c, r, 1<<20)
		})
	}
	t.Run("connection from before", func(t *testing.T) {
		echo(t, before, beforeR, 64<<10)
	})
	t.Run("ping", func(t *testing.T) {
		for _, dst := range []string{wanHost4, wanHost6} {
			if err := tp.ping(tp.lan, dst); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		for _, dst := range []string{wanHost4 + ":7", "[" + wanHost6 + "]:7"} {
			if err := tp.udpEcho(tp.lan, dst); err != nil {
				t.Error(err)
			}
		}
	})
	// With a SYN cookie for every SYN the listener keeps no request socket: the handshake's
	// last ACK finds no socket, and goes to the listener because its cookie is the listener's.
	t.Run("syn cookies", func(t *testing.T) {
		tp.sysctl(tp.router, "net/ipv4/tcp_syncookies", "2")
		defer tp.sysctl(tp.router, "net/ipv4/tcp_syncookies", "1")
		for _, dst := range []string{wanHost4 + ":443", "[" + wanHost6 + "]:443"} {
			c, r, got := tp.dial(tp.lan, dst)
			checkAnswer(t, got, "mptcpd", dst)
			echo(t, c, r, 256<<10)
			c.Close()
		}
	})
	// The router's socket of a connection it closed first stays in TIME_WAIT. A new SYN of the
	// same tuple goes to it: it answers with an ACK, the client resets, which ends the
	// time-wait socket, and the SYN's retransmission (at once: Linux expects this) reaches the
	// listener.
	t.Run("time-wait", func(t *testing.T) {
		from := &net.TCPAddr{IP: net.ParseIP(lanHost4), Port: 40000}
		dst := net.JoinHostPort(wanHost4, fmt.Sprint(closeFirstPort))
		for n := range 2 {
			c, r, got := tp.dialFrom(tp.lan, from, dst)
			checkAnswer(t, got, "mptcpd", dst)
			if b, err := r.ReadByte(); err == nil {
				t.Errorf("connection %d: %q after the line, want EOF", n, b)
			}
			c.Close()
			tp.waitClosed(tp.lan, from)
			if !tp.timeWait(tp.router, netip.MustParseAddrPort(dst), from.AddrPort()) {
				t.Fatalf("connection %d: no time-wait socket on the router", n)
			}
		}
	})
	// A connection intercepted keeps going when its destination's route goes (mptcpd may reach
	// it by another path); a new one is not intercepted: the router answers it as before.
	t.Run("route lost", func(t *testing.T) {
		c, r, got := tp.dial(tp.lan, wanHost4+":80")
		defer c.Close()
		checkAnswer(t, got, "mptcpd", wanHost4+":80")
		unreachable := &netlink.Route{Dst: &net.IPNet{IP: net.ParseIP(wanHost4).To4(), Mask: net.CIDRMask(32, 32)}, Type: unix.RTN_UNREACHABLE}
		if err := tp.rnl.RouteAdd(unreachable); err != nil {
			t.Fatal(err)
		}
		defer tp.rnl.RouteDel(unreachable)
		err := inNetns(tp.lan, func() error {
			c, err := net.DialTimeout("tcp", wanHost4+":80", 5*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, unix.EHOSTUNREACH) {
			t.Errorf("a new connection without a route: %v, want EHOSTUNREACH", err)
		}
		echo(t, c, r, 64<<10)
	})
	counters(t, ic, map[string]uint64{
		"Intercepted4":   6, // :80, :8080, :443, :9 twice, :80 before the route went
		"Intercepted6":   2,
		"AssignedCookie": 2,
		"AssignFail":     0,
		"NoListener":     0,
		"SkipMalformed":  0,
		"SkipSpecial":    0,
		"FibFail":        0,
		"SkipNoRoute":    1,
	}, "AssignedEstablished", "NoSocket", "NotTcp", "SkipExcluded", "SkipLocal")

	if err := ic.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Counters(); err == nil {
		t.Error("Counters after Close: no error")
	}
	tp.checkState(false, false)
	for _, dst := range []string{wanHost4 + ":80", "[" + wanHost6 + "]:80"} {
		c, r, got := tp.dial(tp.lan, dst)
		checkAnswer(t, got, "wan", dst)
		echo(t, c, r, 1<<10)
		c.Close()
	}
}

// TestNoIPv6Listener: without Listen6 IPv6 is forwarded as before, and no IPv6 rule or route is
// added.
func TestNoIPv6Listener(t *testing.T) {
	tp := newTopo(t)
	ic := tp.start(Config{Devs: []string{lanDev}, Listen4: tp.listen4})
	s := tp.state()
	if len(s.rules) != 1 || len(s.routes) != 1 {
		t.Errorf("rules %q, routes %q; want one of each, IPv4", s.rules, s.routes)
	}
	dst6 := "[" + wanHost6 + "]:80"
	c, r, got := tp.dial(tp.lan, dst6)
	checkAnswer(t, got, "wan", dst6)
	echo(t, c, r, 1<<10)
	c.Close()
	c, r, got = tp.dial(tp.lan, wanHost4+":80")
	checkAnswer(t, got, "mptcpd", wanHost4+":80")
	echo(t, c, r, 1<<10)
	c.Close()
	counters(t, ic, map[string]uint64{"Intercepted4": 1, "Intercepted6": 0, "NoListener": 1}, "NoSocket")
}

// TestDualStackListener: one dual-stack IPv6 listener takes both families.
func TestDualStackListener(t *testing.T) {
	tp := newTopo(t)
	ln := tp.serveTCP(tp.router, "tcp", "[::]:0", "mptcpd")
	ic := tp.start(Config{Devs: []string{lanDev}, Listen4: ln, Listen6: ln})
	for _, dst := range []string{wanHost4 + ":80", "[" + wanHost6 + "]:80"} {
		c, r, got := tp.dial(tp.lan, dst)
		checkAnswer(t, got, "mptcpd", dst)
		echo(t, c, r, 1<<10)
		c.Close()
	}
	counters(t, ic, map[string]uint64{"Intercepted4": 1, "Intercepted6": 1, "AssignFail": 0})
}

// childEnv makes TestCrashedRun the child process of TestLeftovers.
const childEnv = "MPTCPGO_TRANSPARENTDEV_CHILD"

// TestCrashedRun is TestLeftovers' child: in the router namespace (fd 3), it starts an
// interception with a cls_bpf filter, says "ready" and waits to be killed.
func TestCrashedRun(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("the child process of TestLeftovers")
	}
	runtime.LockOSThread() // never unlocked: the thread stays in the namespace
	if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	lc := ListenConfig()
	ln4, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln6, err := lc.Listen(t.Context(), "tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Config{Devs: []string{lanDev}, Listen4: ln4.(*net.TCPListener), Listen6: ln6.(*net.TCPListener), legacy: true}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed before
	t.Fatal("not killed")
}

// TestLeftovers: a run killed with SIGKILL leaves its rules, its routes and (with a cls_bpf
// filter, as on kernels without tcx) its filter; LAN connections are forwarded as before
// meanwhile. The next Start removes them all and works, and its Close leaves nothing.
func TestLeftovers(t *testing.T) {
	tp := newTopo(t)
	fd, err := unix.Dup(int(tp.router))
	if err != nil {
		t.Fatal(err)
	}
	nsFile := os.NewFile(uintptr(fd), "router netns")
	defer nsFile.Close()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashedRun$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{nsFile}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		lines = append(lines, sc.Text())
	}
	if sc.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the child did not get ready: %s", strings.Join(lines, "\n"))
	}
	tp.checkState(true, true)
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	tp.checkState(true, true) // left behind
	c, r, got := tp.dial(tp.lan, wanHost4+":80")
	checkAnswer(t, got, "wan", wanHost4+":80")
	echo(t, c, r, 1<<10)
	c.Close()

	ic := tp.start(Config{Devs: []string{lanDev}, Listen4: tp.listen4, Listen6: tp.listen6})
	tp.checkState(true, false)
	for _, dst := range []string{wanHost4 + ":80", "[" + wanHost6 + "]:80"} {
		c, r, got := tp.dial(tp.lan, dst)
		checkAnswer(t, got, "mptcpd", dst)
		echo(t, c, r, 1<<10)
		c.Close()
	}
	if err := ic.Close(); err != nil {
		t.Fatal(err)
	}
	tp.checkState(false, false)
}

// TestLegacyTC: with a cls_bpf filter instead of a tcx link the interception works the same,
// and Close removes the filter and the clsact qdisc.
func TestLegacyTC(t *testing.T) {
	tp := newTopo(t)
	ic := tp.start(Config{Devs: []string{lanDev}, Listen4: tp.listen4, Listen6: tp.listen6, legacy: true})
	tp.checkState(true, true)
	for _, dst := range []string{wanHost4 + ":80", "[" + wanHost6 + "]:80"} {
		c, r, got := tp.dial(tp.lan, dst)
		checkAnswer(t, got, "mptcpd", dst)
		echo(t, c, r, 1<<10)
		c.Close()
	}
	counters(t, ic, map[string]uint64{"Intercepted4": 1, "Intercepted6": 1, "AssignFail": 0})
	if err := ic.Close(); err != nil {
		t.Fatal(err)
	}
	tp.checkState(false, false)
}

// TestNoLeak: Start and Close leave no file descriptor open, with tcx or a cls_bpf filter.
func TestNoLeak(t *testing.T) {
	tp := newTopo(t)
	// The open descriptors and what they are: what the rest of the process closes meanwhile
	// does not count.
	fds := func() map[string]string {
		des, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, de := range des {
			// The listing's own descriptor is closed by now: Readlink fails.
			if what, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil {
				m[de.Name()] = what
			}
		}
		return m
	}
	for _, legacy := range []bool{false, true} {
		before := fds()
		for range 3 {
			var ic *Interceptor
			err := inNetns(tp.router, func() (err error) {
				ic, err = Start(Config{Devs: []string{lanDev}, Listen4: tp.listen4, Listen6: tp.listen6, legacy: legacy})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := ic.Close(); err != nil {
				t.Fatal(err)
			}
			if err := ic.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		}
		for fd, what := range fds() {
			if before[fd] != what {
				t.Errorf("legacy %v: descriptor %s (%s) left open", legacy, fd, what)
			}
		}
		tp.checkState(false, false)
	}
}

// TestStartErrors: Start refuses what it cannot work with, and leaves nothing behind.
func TestStartErrors(t *testing.T) {
	tp := newTopo(t)
	var mptcp *net.TCPListener
	err := inNetns(tp.router, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		mptcp = ln.(*net.TCPListener)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mptcp.Close()
	raw, err := mptcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var protoErr error
	raw.Control(func(fd uintptr) { proto, protoErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no device", Config{Listen4: tp.listen4}, "no device"},
		{"twice", Config{Devs: []string{lanDev, lanDev}, Listen4: tp.listen4}, "given twice"},
		{"no listener", Config{Devs: []string{lanDev}}, "no IPv4 listener"},
		{"unknown device", Config{Devs: []string{"nosuchdev"}, Listen4: tp.listen4}, "device nosuchdev"},
		{"loopback", Config{Devs: []string{"lo"}, Listen4: tp.listen4}, "only Ethernet"},
		{"IPv6 listener for IPv4", Config{Devs: []string{lanDev}, Listen4: tp.listen6}, "IPv6-only"},
		{"IPv4 listener for IPv6", Config{Devs: []string{lanDev}, Listen4: tp.listen4, Listen6: tp.listen4}, "not an IPv6 socket"},
		{"MPTCP listener", Config{Devs: []string{lanDev}, Listen4: mptcp}, "not TCP"},
		{"bad exclusion", Config{Devs: []string{lanDev}, Listen4: tp.listen4, Exclude: []netip.Prefix{{}}}, "not a prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Listen4 == mptcp && (protoErr != nil || proto != unix.IPPROTO_MPTCP) {
				testenv.Skip(t, fmt.Sprintf("this kernel makes no MPTCP listener (protocol %d, %v)", proto, protoErr))
			}
			var ic *Interceptor
			err := inNetns(tp.router, func() (err error) {
				ic, err = Start(tc.cfg)
				return err
			})
			if err == nil {
				ic.Close()
				t.Fatalf("Start: no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want %q", err, tc.want)
			}
			tp.checkState(false, false)
		})
	}
}

// TestVerifierCost: the program stays well within the verifier's limit.
func TestVerifierCost(t *testing.T) {
	testenv.RequireRoot(t)
	var objs TransparentdevObjects
	if _, err := load(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	testenv.CheckVerifierCost(t, "tpd_ingress", objs.TpdIngress)
}

func TestExclusionKey(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		family uint32
		len    uint32
		addr   string
	}{
		{"10.1.0.0/16", unix.AF_INET, 32 + 16, "10.1.0.0"},
		{"10.1.2.3/16", unix.AF_INET, 32 + 16, "10.1.0.0"}, // masked
		{"2001:db8::/32", unix.AF_INET6, 32 + 32, "2001:db8::"},
		{"::ffff:10.2.0.0/112", unix.AF_INET, 32 + 16, "10.2.0.0"},
		{"::ffff:0:0/96", unix.AF_INET, 32 + 0, "0.0.0.0"},
	} {
		k := exclusionKey(netip.MustParsePrefix(tc.prefix))
		want := TransparentdevTpdExclKey{Prefixlen: tc.len, Family: tc.family, Addr: addrWords(netip.MustParseAddr(tc.addr))}
		if k != want {
			t.Errorf("%s: %+v, want %+v", tc.prefix, k, want)
		}
	}
	if w := addrWords(netip.MustParseAddr("10.1.2.3")); w[1]|w[2]|w[3] != 0 || unixBytes(w[0]) != [4]byte{10, 1, 2, 3} {
		t.Errorf("addrWords(10.1.2.3) = %x: not the bytes in memory order", w)
	}
}

// unixBytes is a word's bytes in memory order.
func unixBytes(w uint32) [4]byte {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	return b
}

// TestNeedsTransparent: what the package comment says of IP_TRANSPARENT. Without it on the
// listener, an IPv4 SYN is assigned to it but the SYN/ACK, from an address that is not the
// router's, finds no route, and the connection never completes.
func TestNeedsTransparent(t *testing.T) {
	tp := newTopo(t)
	ic := tp.start(Config{Devs: []string{lanDev}, Listen4: tp.listen4})
	raw, err := tp.listen4.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var opErr error
	raw.Control(func(fd uintptr) { opErr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 0) })
	if opErr != nil {
		t.Fatal(opErr)
	}
	err = inNetns(tp.lan, func() error {
		c, err := net.DialTimeout("tcp", wanHost4+":80", 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("connected through a listener without IP_TRANSPARENT")
	}
	counters(t, ic, map[string]uint64{"AssignFail": 0}, "Intercepted4")
}
