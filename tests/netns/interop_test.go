package netns_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

var stackOnce struct {
	sync.Once
	s   *control.Stack
	err error
}

// ourStack returns the test binary's MPTCP stack (one per process: it owns the process's
// cgroup).
func ourStack(t *testing.T) *control.Stack {
	t.Helper()
	stackOnce.Do(func() {
		var log *slog.Logger
		if os.Getenv("MPTCPGO_DEBUG") != "" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		stackOnce.s, stackOnce.err = control.NewStack(control.StackConfig{Logger: log})
	})
	if stackOnce.err != nil {
		t.Fatal(stackOnce.err)
	}
	return stackOnce.s
}

// ourSide is the namespace config where our stack runs: the kernel's MPTCP is off there, which
// proves we never lean on it.
var ourSide = netns.NamespaceConfig{Sysctls: map[string]string{"net.mptcp.enabled": "0"}}

func dialOurs(t *testing.T, ctx context.Context, ns *netns.Namespace, addr string) net.Conn {
	t.Helper()
	s := ourStack(t)
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		d := control.Dialer{Stack: s}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestOurClientKernelServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	const up, down = 32 << 20, 8 << 20
	served := netns.ServeOne(ctx, ln, down, 2)
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	if !control.IsMPTCP(c) {
		t.Fatalf("connection fell back to TCP")
	}
	tr, err := netns.Exchange(ctx, c, up, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if want := netns.StreamDigest(up, 1); tr.Sent != want || s.Received != want {
		t.Errorf("up: sent %v, kernel received %v, want %v", tr.Sent, s.Received, want)
	}
	if want := netns.StreamDigest(down, 2); s.Sent != want || tr.Received != want {
		t.Errorf("down: kernel sent %v, received %v, want %v", s.Sent, tr.Received, want)
	}
	if !s.MPTCP {
		t.Errorf("kernel socket: TCP_IS_MPTCP false")
	}
	kc := counters(t, topo.B)
	t.Logf("kernel counters: %v", kc)
	oc, _ := ourStack(t).Counters()
	t.Logf("our counters: %v", oc)
	for _, name := range []string{"MPCapableSYNRX", "MPCapableACKRX"} {
		if kc[name] < 1 {
			t.Errorf("kernel %s = %d, want >= 1", name, kc[name])
		}
	}
	for _, name := range []string{"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSNotMatching", "DssFallback", "InfiniteMapRx"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
}

func listenOurs(t *testing.T, ns *netns.Namespace, addr string) *control.Listener {
	t.Helper()
	s := ourStack(t)
	var ln *control.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = s.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestKernelClientOurServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
	const up, down = 32 << 20, 8 << 20
	type res struct {
		tr    netns.Transfer
		mptcp bool
		err   error
	}
	served := make(chan res, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- res{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, down, 2)
		served <- res{tr, control.IsMPTCP(c), err}
	}()
	c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-netns.ExchangeAsync(ctx, c, up, 1)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	s := <-served
	if s.err != nil {
		t.Fatal(s.err)
	}
	if want := netns.StreamDigest(up, 1); r.Sent != want || s.tr.Received != want {
		t.Errorf("up: kernel sent %v, we received %v, want %v", r.Sent, s.tr.Received, want)
	}
	if want := netns.StreamDigest(down, 2); s.tr.Sent != want || r.Received != want {
		t.Errorf("down: we sent %v, kernel received %v, want %v", s.tr.Sent, r.Received, want)
	}
	if !r.MPTCP || !s.mptcp {
		t.Errorf("MPTCP: kernel socket %t, ours %t", r.MPTCP, s.mptcp)
	}
	kc := counters(t, topo.A)
	oc, _ := ourStack(t).Counters()
	t.Logf("our counters: %v", oc)
	if kc["MPCapableSYNACKRX"] < 1 {
		t.Errorf("kernel MPCapableSYNACKRX = %d, want >= 1", kc["MPCapableSYNACKRX"])
	}
	for _, name := range []string{"MPCapableFallbackACK", "MPCapableFallbackSYNACK", "DSSNotMatching", "DssFallback", "InfiniteMapRx"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
}

func TestOursToOurs(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, B: ourSide})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
	const up, down = 32 << 20, 16 << 20
	type res struct {
		tr    netns.Transfer
		mptcp bool
		err   error
	}
	served := make(chan res, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- res{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, down, 2)
		served <- res{tr, control.IsMPTCP(c), err}
	}()
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	tr, err := netns.Exchange(ctx, c, up, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := <-served
	if s.err != nil {
		t.Fatal(s.err)
	}
	if want := netns.StreamDigest(up, 1); tr.Sent != want || s.tr.Received != want {
		t.Errorf("up: sent %v, received %v, want %v", tr.Sent, s.tr.Received, want)
	}
	if want := netns.StreamDigest(down, 2); s.tr.Sent != want || tr.Received != want {
		t.Errorf("down: sent %v, received %v, want %v", s.tr.Sent, tr.Received, want)
	}
	if !control.IsMPTCP(c) || !s.mptcp {
		t.Errorf("MPTCP: client %t, server %t", control.IsMPTCP(c), s.mptcp)
	}
}

// logNonZero logs the counters that are not zero.
func logNonZero(t *testing.T, who string, c map[string]uint64) {
	t.Helper()
	var parts []string
	for k, v := range c {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(parts)
	t.Logf("%s counters: %s", who, strings.Join(parts, " "))
}
