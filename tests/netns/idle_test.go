package netns_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// fdLimitSelf raises this process's soft descriptor limit to its hard one (the daemons it
// starts inherit it) and returns it; it is restored at cleanup. Raising the hard limit needs
// CAP_SYS_RESOURCE, which a test cannot count on.
func fdLimitSelf(tb testing.TB) uint64 {
	tb.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		tb.Fatal(err)
	}
	if old.Cur < old.Max {
		nl := unix.Rlimit{Cur: old.Max, Max: old.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &nl); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	}
	return old.Max
}

// idleRig is mptcpd --forward in A carrying connections of applications in A to kernel MPTCP
// echo servers in B (idleEcho, in a process of their own). Each rule forwards to a server of
// its own: a subflow's source port is unique per destination, so one destination takes at most
// about 64,000 connections.
type idleRig struct {
	topo  *netns.Topology
	d     *netns.Process
	addrs []string // the forward listeners
	echo  []string // their remotes: the echo servers
	sock  string   // the control socket
}

// maxPerDest is how many connections the rig puts on one forward rule (its server) and one
// loopback source address of the applications.
const maxPerDest = 50_000

// daemonFDs are the descriptors mptcpd holds besides two per forwarded connection.
const daemonFDs = 256

func newIdleRig(tb testing.TB, ctx context.Context, conns int, args ...string) *idleRig {
	tb.Helper()
	r := &idleRig{topo: netns.New(tb, netns.Config{Paths: 1})}
	for _, ns := range []*netns.Namespace{r.topo.A, r.topo.B} {
		ns.SetSysctl("net.ipv4.ip_local_port_range", "1024 65535")
		ns.SetSysctl("net.core.somaxconn", "65535")
		ns.SetSysctl("net.ipv4.tcp_max_syn_backlog", "65535")
	}
	r.sock = ctlSocket(tb)
	mptcpctl(tb)
	all := append([]string{"--ctl", r.sock}, args...)
	p := r.topo.Path(0)
	for range (conns + maxPerDest - 1) / maxPerDest {
		cmd := r.topo.B.Command(ctx, os.Args[0])
		cmd.Env = append(os.Environ(), idleEchoEnv+"="+p.B.HostPort(netns.IPv4, 0))
		srv := r.topo.B.StartCmd(cmd)
		if err := srv.WaitOutput(ctx, "listening "); err != nil {
			tb.Fatalf("echo server: %v\n%s", err, srv.Output())
		}
		_, addr, _ := strings.Cut(strings.TrimSpace(srv.Output()), "listening ")
		r.echo = append(r.echo, strings.Fields(addr)[0])
		all = append(all, "--forward", "127.0.0.1:0="+r.echo[len(r.echo)-1])
	}
	r.d, r.addrs = startMptcpdB(tb, ctx, r.topo.A, all...)
	return r
}

// dial opens connection i: rule i/maxPerDest, from loopback source 127.0.0.(2 + i/maxPerDest).
func (r *idleRig) dial(ctx context.Context, i int) (net.Conn, error) {
	k := i / maxPerDest
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+k))}, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1) })
		return err
	}}
	d.SetMultipathTCP(false)
	return r.topo.A.Dial(ctx, d, "tcp", r.addrs[k])
}

// open opens connections from..to-1 with workers dialling at once and proves each relayed
// over MPTCP: its index goes out and comes back, and the server saw MPTCP.
func (r *idleRig) open(tb testing.TB, ctx context.Context, from, to, workers int) []net.Conn {
	tb.Helper()
	conns := make([]net.Conn, to-from)
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				c, err := r.dial(ctx, i)
				if err == nil {
					c.SetDeadline(time.Now().Add(30 * time.Second))
					var m bool
					if m, err = idleHello(c, uint32(i)); err == nil && !m {
						err = errors.New("reached the server over plain TCP")
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				conns[i-from] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	return conns
}

// echoIndex sends i on c and checks that it comes back.
func echoIndex(c net.Conn, i int) error {
	var out, in [4]byte
	binary.BigEndian.PutUint32(out[:], uint32(i))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(out[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, in[:]); err != nil {
		return err
	}
	if in != out {
		return fmt.Errorf("echo %x, sent %x", in, out)
	}
	return nil
}

// checkAll echoes each connection's index again, workers at once.
func checkAll(tb testing.TB, conns []net.Conn, workers int) {
	tb.Helper()
	var next atomic.Int64
	var failed atomic.Int64
	var first sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				if err := echoIndex(conns[i], i); err != nil {
					failed.Add(1)
					first.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d of %d idle connections no longer echo; the first: %v", n, len(conns), firstErr)
	}
}

// rssOf returns a process's resident memory in bytes.
func rssOf(tb testing.TB, pid int) float64 {
	tb.Helper()
	return procStatus(tb, pid, "VmRSS") * 1024
}

// procStatus reads a number from a process's /proc status (kB for sizes).
func procStatus(tb testing.TB, pid int, field string) float64 {
	tb.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	tb.Fatalf("no %s in the status of process %d", field, pid)
	return 0
}

// idleWant is how many idle connections TestMptcpdIdleConnections holds where descriptors
// allow.
const idleWant = 20_000

// TestMptcpdIdleConnections: mptcpd --forward, without --max-conns, holds many idle
// connections to a kernel MPTCP server: 20,000, or as many as its descriptor limit allows (two
// descriptors each), and more than the 4,096 slots its datapath once had. Every one reaches
// the server over MPTCP and echoes its own 4 bytes when opened, and again after all are open
// and idle; one more opened while they are held works too; the daemon counts them active, then
// none once they close, and stops cleanly.
func TestMptcpdIdleConnections(t *testing.T) {
	testenv.RequireRoot(t)
	limit := fdLimitSelf(t)
	n := min(idleWant, (int(limit)-daemonFDs)/2-1)
	if n < 8192 {
		t.Fatalf("a descriptor limit of %d allows %d connections: too few to show the slots growing past 4,096 (raise the hard limit)", limit, n)
	}
	if n < idleWant {
		t.Logf("the descriptor limit (%d, hard) allows mptcpd %d connections, not %d: raising it needs CAP_SYS_RESOURCE", limit, n, idleWant)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := newIdleRig(t, ctx, n+1, "--metrics", "127.0.0.1:0")
	metricsURL := regexp.MustCompile(`msg=metrics url=(http://\S+/metrics)`).FindStringSubmatch(r.d.Output())
	if metricsURL == nil {
		t.Fatalf("no metrics URL in the log:\n%s", r.d.Output())
	}
	rss0 := rssOf(t, r.d.Pid())
	start := time.Now()
	conns := r.open(t, ctx, 0, n, 8)
	opened := time.Since(start)
	if st := daemonStats(t, r.sock); st["ProxyActive"] != uint64(n) {
		t.Errorf("ProxyActive %d with %d connections held", st["ProxyActive"], n)
	}
	time.Sleep(2 * time.Second)
	// Idle connections hold no goroutine: what runs is the daemon's own (a few dozen).
	if g := scrapeMetrics(t, ctx, r.topo.A, metricsURL[1])["go_goroutines"]; g > float64(n)/20 {
		t.Errorf("mptcpd runs %.0f goroutines with %d idle connections: idle ones should hold none", g, n)
	} else {
		t.Logf("mptcpd runs %.0f goroutines with %d idle connections", g, n)
	}
	checkAll(t, conns, 8)
	extra := r.open(t, ctx, n, n+1, 1)
	t.Logf("%d connections opened in %v (%.0f/s); mptcpd holds %.1f KiB each", n, opened.Round(time.Millisecond),
		float64(n)/opened.Seconds(), (rssOf(t, r.d.Pid())-rss0)/float64(n)/1024)
	for _, c := range append(conns, extra...) {
		c.Close()
	}
	waitStat(t, ctx, r.sock, "ProxyActive", 0)
	stopMptcpd(t, r.d)
}
