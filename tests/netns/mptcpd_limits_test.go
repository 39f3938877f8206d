package netns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Tests of mptcpd facing more connections than it can carry: file descriptors per connection,
// --max-conns, and running out of file descriptors.
//
//	namespace A (mptcpd --forward, the applications)      namespace B (kernel MPTCP servers)
//	  app ──TCP── 127.0.0.1:P ── mptcpd ── 10.0.0.1 ====== 10.0.0.2  echo / transfer servers

// fdCount returns how many file descriptors process pid has open, and how many are pipes.
func fdCount(t testing.TB, pid int) (all, pipes int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			pipes++
		}
	}
	return len(ents), pipes
}

// waitFDs waits until process pid has want file descriptors open.
func waitFDs(t testing.TB, ctx context.Context, pid, want int) {
	t.Helper()
	for {
		n, pipes := fdCount(t, pid)
		if n == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("mptcpd has %d file descriptors (%d pipes), waiting for %d: %v", n, pipes, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// echoAll echoes every connection l accepts until ctx ends.
func echoAll(ctx context.Context, l net.Listener) {
	go func() {
		for {
			c, err := netns.Accept(ctx, l)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// proxyRig is mptcpd running rules of one mode in a one-path topology, and the applications
// that connect to it:
//
//	forward: app in A ──TCP── mptcpd in A ══MPTCP══ kernel MPTCP (or plain TCP) targets in B
//	accept:  kernel MPTCP (or plain TCP) app in A ══MPTCP══ mptcpd in B ──TCP── targets in B
type proxyRig struct {
	topo    *netns.Topology
	d       *netns.Process
	addrs   []string // the rules' listening addresses, in target order
	targets []net.Listener
	app     *netns.Namespace
	dial    func(ctx context.Context, addr string) (net.Conn, error)
}

// startProxyRig starts mptcpd with one rule of mode ("forward" or "accept") per target, and
// args. With plain, the far side of MPTCP is plain TCP: a forward rule's target, an accept
// rule's application (connections fall back).
func startProxyRig(t *testing.T, ctx context.Context, mode string, plain bool, targets int, args ...string) *proxyRig {
	t.Helper()
	r := &proxyRig{}
	var daemon *netns.Namespace
	if mode == "forward" {
		r.topo = netns.New(t, netns.Config{Paths: 1, A: ourSide})
		daemon, r.app, r.dial = r.topo.A, r.topo.A, r.topo.A.DialTCP
	} else {
		r.topo = netns.New(t, netns.Config{Paths: 1, B: ourSide})
		daemon, r.app, r.dial = r.topo.B, r.topo.A, r.topo.A.DialMPTCP
		if plain {
			r.dial = r.topo.A.DialTCP
		}
	}
	p := r.topo.Path(0)
	for range targets {
		var ln net.Listener
		var err error
		switch {
		case mode == "accept":
			ln, err = r.topo.B.ListenTCP("127.0.0.1:0")
			if err == nil {
				args = append(args, "--accept", p.B.HostPort(netns.IPv4, 0)+"="+ln.Addr().String())
			}
		case plain:
			ln, err = r.topo.B.ListenTCP(p.B.HostPort(netns.IPv4, 0))
		default:
			ln, err = r.topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
		}
		if err != nil {
			t.Fatal(err)
		}
		if mode == "forward" {
			args = append(args, "--forward", "127.0.0.1:0="+ln.Addr().String())
		}
		r.targets = append(r.targets, ln)
	}
	r.d, r.addrs = startMptcpd(t, ctx, daemon, args...)
	return r
}

// hold connects to rule i and checks the relay with an echo (the target must echo); the
// connection stays open.
func (r *proxyRig) hold(t testing.TB, ctx context.Context, i int) net.Conn {
	t.Helper()
	c, err := r.dial(ctx, r.addrs[i])
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "ping"); err != nil {
		t.Fatal(err)
	}
	return c
}

func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if string(b) != msg {
		return fmt.Errorf("echo %q, want %q", b, msg)
	}
	return nil
}

// daemonStats reads the daemon's counters through mptcpctl.
func daemonStats(t testing.TB, sock string) map[string]uint64 {
	t.Helper()
	var st map[string]uint64
	ctlJSON(t, sock, &st, "stats")
	return st
}

// waitStat waits until the daemon's counter name equals want.
func waitStat(t testing.TB, ctx context.Context, sock, name string, want uint64) {
	t.Helper()
	for {
		got := daemonStats(t, sock)[name]
		if got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("mptcpd %s = %d, waiting for %d: %v", name, got, want, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestMptcpdFDsPerConn: an idle relayed connection costs mptcpd two file descriptors (the
// application's socket and the subflow or TCP socket to the remote), over MPTCP or fallen back to
// TCP, on forward and accept rules; and the daemon is back to its count once they close: no
// namespace handle per connection, no splice pipe kept.
func TestMptcpdFDsPerConn(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"forward", "accept"} {
		for _, plain := range []bool{false, true} {
			name := mode + "/mptcp"
			if plain {
				name = mode + "/fallback"
			}
			t.Run(name, func(t *testing.T) { testFDsPerConn(t, mode, plain) })
		}
	}
}

func testFDsPerConn(t *testing.T, mode string, plain bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	r := startProxyRig(t, ctx, mode, plain, 1, "--ctl", "")
	echoAll(ctx, r.targets[0])
	// A first connection opens what the daemon opens once (the namespace's handle among them,
	// held while a connection uses it); it stays open.
	first := r.hold(t, ctx, 0)
	defer first.Close()
	base, _ := fdCount(t, r.d.Pid())
	const n = 32
	var conns []net.Conn
	for range n {
		c := r.hold(t, ctx, 0)
		defer c.Close()
		conns = append(conns, c)
	}
	held, pipes := fdCount(t, r.d.Pid())
	t.Logf("%d idle connections hold %d file descriptors in mptcpd (%.2f each; %d pipes in all)", n, held-base, float64(held-base)/n, pipes)
	if held-base > 2*n {
		t.Errorf("%d idle connections hold %d file descriptors, want at most %d", n, held-base, 2*n)
	}
	for _, c := range conns {
		c.Close()
	}
	// Everything the connections held is closed within seconds, not when the runtime's pools
	// are next collected.
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	waitFDs(t, wctx, r.d.Pid(), base)
}

// TestMptcpdMaxConns: mptcpd --max-conns 8 sizes the datapath for 8 connections (and its
// reserve), carries 8 at once, resets a 9th (counted as refused) and carries a new one once one
// of the 8 has closed. A forward rule's application sees a TCP reset; an accept rule's MPTCP
// client sees its connection established and then reset (MP_FASTCLOSE).
func TestMptcpdMaxConns(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"forward", "accept"} {
		t.Run(mode, func(t *testing.T) { testMaxConns(t, mode) })
	}
}

func testMaxConns(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	sock := ctlSocket(t)
	mptcpctl(t)
	const max = 8
	r := startProxyRig(t, ctx, mode, false, 1, "--ctl", sock, "--max-conns", strconv.Itoa(max))
	echoAll(ctx, r.targets[0])

	checkSlotCeiling(t, r.d.Pid(), max)

	var held []net.Conn
	for range max {
		c := r.hold(t, ctx, 0)
		defer c.Close()
		held = append(held, c)
	}
	// The reset may come before the dial has seen its handshake complete, or after.
	extra, err := r.dial(ctx, r.addrs[0])
	if err == nil {
		err = echo(extra, "ping")
		extra.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection %d: %v, want a reset", max+1, err)
	}
	if mode == "accept" {
		if n := counters(t, r.app)["MPFastcloseRx"]; n < 1 {
			t.Errorf("kernel client MPFastcloseRx = %d, want at least 1", n)
		}
	}
	// Go's dial connects again (up to twice) when the reset comes before it has read the
	// peer's address (net's selfConnect): one dial can be refused more than once.
	st := daemonStats(t, sock)
	refused := st["ProxyRefused"]
	if refused < 1 || refused > 3 || st["ProxyActive"] != max || st["ProxyAccepted"] != max+refused {
		t.Errorf("stats: ProxyRefused %d (want 1 to 3), ProxyActive %d (want %d), ProxyAccepted %d (want %d)",
			refused, st["ProxyActive"], max, st["ProxyAccepted"], max+refused)
	}
	for _, c := range held[1:] {
		if err := echo(c, "still"); err != nil {
			t.Errorf("a held connection after the refusal: %v", err)
		}
	}

	held[0].Close()
	waitStat(t, ctx, sock, "ProxyActive", max-1)
	c := r.hold(t, ctx, 0)
	defer c.Close()
	st = daemonStats(t, sock)
	if st["ProxyRefused"] != refused || st["ProxyActive"] != max {
		t.Errorf("stats after one closed and a new one came: ProxyRefused %d (want %d), ProxyActive %d (want %d)",
			st["ProxyRefused"], refused, st["ProxyActive"], max)
	}
	for _, c := range append(held, c) {
		c.Close() // the daemon stops once its relays have ended
	}
	stopMptcpd(t, r.d)
}

// TestMptcpdMaxConnsRange: --max-conns out of its range is refused with a clear error.
func TestMptcpdMaxConnsRange(t *testing.T) {
	for _, v := range []string{"0", "-3", strconv.Itoa(control.MaxConnsLimit + 1)} {
		// A value taken would start the daemon: the context ends it.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		out, err := exec.CommandContext(ctx, mptcpd(t), "--max-conns", v, "--forward", "127.0.0.1:0=127.0.0.1:1").CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("--max-conns %s: %v, want exit status 2", v, err)
		}
		if want := fmt.Sprintf("mptcpd: --max-conns %s: want a number from 1 to %d", v, control.MaxConnsLimit); !strings.Contains(string(out), want) {
			t.Errorf("--max-conns %s: %q, want %q", v, out, want)
		}
	}
}

// TestMptcpdFDExhaustion: mptcpd out of file descriptors keeps running and keeps its
// connections, on forward and accept rules. With its limit set to what 16 relayed connections
// leave plus one more relay, a transfer still goes through (bytes checked); once a 17th
// connection takes the last descriptors, the next accept fails with EMFILE: the daemon logs it,
// counts it and waits, and the waiting connection's transfer completes once the others close.
// Then it stops cleanly.
func TestMptcpdFDExhaustion(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"forward", "accept"} {
		t.Run(mode, func(t *testing.T) { testFDExhaustion(t, mode) })
	}
}

func testFDExhaustion(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sock := ctlSocket(t)
	mptcpctl(t)
	r := startProxyRig(t, ctx, mode, false, 2, "--ctl", sock)
	const hogRule, xferRule = 0, 1
	echoAll(ctx, r.targets[hogRule])
	xferLn := r.targets[xferRule]
	pid := r.d.Pid()

	const hogs = 16
	var held []net.Conn
	for range hogs {
		c := r.hold(t, ctx, hogRule)
		defer c.Close()
		held = append(held, c)
	}
	// The limit: what the daemon holds now, and room for one more relayed connection.
	n, _ := fdCount(t, pid)
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lim := unix.Rlimit{Cur: uint64(n + 2), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("mptcpd holds %d file descriptors with %d connections; limit set to %d (was %d)", n, hogs, lim.Cur, old.Cur)

	const up, down = 4 << 20, 4 << 20
	c, err := r.dial(ctx, r.addrs[xferRule])
	if err != nil {
		t.Fatal(err)
	}
	exchangeServed(t, ctx, c, netns.ServeOne(ctx, xferLn, down, 2), up, down)
	c.Close()
	waitFDs(t, ctx, pid, n)

	held = append(held, r.hold(t, ctx, hogRule)) // the last two descriptors
	defer held[len(held)-1].Close()

	served := netns.ServeOne(ctx, xferLn, down, 2)
	waiting, err := r.dial(ctx, r.addrs[xferRule])
	if err != nil {
		t.Fatal(err)
	}
	result := netns.ExchangeAsync(ctx, waiting, up, 1)
	if err := r.d.WaitOutput(ctx, "too many open files"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.d.Done():
		t.Fatalf("mptcpd exited out of file descriptors: %v", r.d.Err())
	default:
	}
	for _, c := range held {
		if err := echo(c, "still"); err != nil {
			t.Errorf("a held connection while accepts fail: %v", err)
		}
	}

	for _, c := range held {
		c.Close()
	}
	res := <-result
	if res.Err != nil {
		t.Fatalf("transfer that waited for descriptors: %v", res.Err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, res.Transfer, s.Transfer, up, down)
	if !res.MPTCP && mode == "accept" {
		t.Errorf("the kernel client's connection fell back to TCP")
	}

	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil { // for mptcpctl
		t.Fatal(err)
	}
	st := daemonStats(t, sock)
	if st["ProxyAcceptErrors"] < 1 {
		t.Errorf("ProxyAcceptErrors = %d, want at least 1", st["ProxyAcceptErrors"])
	}
	if st["ProxyFailed"] != 0 {
		t.Errorf("ProxyFailed = %d, want 0: no connection reset for want of descriptors", st["ProxyFailed"])
	}
	t.Logf("accept errors %d, dial waits %d, accepted %d", st["ProxyAcceptErrors"], st["ProxyDialWaits"], st["ProxyAccepted"])
	if lines := strings.Count(r.d.Output(), "accept failed; retrying"); lines < 1 || lines > int(st["ProxyAcceptErrors"]) {
		t.Errorf("%d log lines for %d accept errors", lines, st["ProxyAcceptErrors"])
	}
	stopMptcpd(t, r.d)
}
