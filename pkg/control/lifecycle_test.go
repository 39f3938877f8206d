package control

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// TestStackCloseUnderLoad: a stack closed while its connections move data both ways ends every
// goroutine it started before it unmaps the datapath's shared memory, within closeWait, and
// without a fault. Over loopback in the host namespace, the stack being both ends; a path
// manager joins a second subflow to each connection from 127.0.0.2, so that path-manager
// loops, join dialers and accepted joins run too.
func TestStackCloseUnderLoad(t *testing.T) {
	testenv.RequireRoot(t)
	const conns = 8
	const moved = 16 << 10 // bytes each direction of each connection moves before the close

	before := runtime.NumGoroutine()
	mgr := pm.New(nil)
	if _, err := mgr.AddEndpoint(pmapi.Endpoint{Addr: netip.MustParseAddr("127.0.0.2"), Flags: pmapi.FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	s, err := NewStack(StackConfig{Datapath: datapath.Config{MaxConns: 64}, PathManager: mgr})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	ln, err := s.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	// The application: on each side of each connection, a writer and a reader, until the
	// stack's close fails their calls.
	var app sync.WaitGroup
	var counts [2 * conns]atomic.Int64 // bytes read by each side
	var ready sync.WaitGroup           // every direction moved `moved` bytes
	ready.Add(2 * conns)
	pump := func(c net.Conn, read *atomic.Int64) {
		app.Go(func() {
			buf := make([]byte, 32<<10)
			for i := range buf {
				buf[i] = byte(i)
			}
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		})
		app.Go(func() {
			buf := make([]byte, 32<<10)
			signalled := false
			for {
				n, err := c.Read(buf)
				if read.Add(int64(n)) >= moved && !signalled {
					signalled = true
					ready.Done()
				}
				if err != nil {
					if !signalled {
						ready.Done()
					}
					return
				}
			}
		})
	}
	accepted := make(chan net.Conn, conns)
	app.Go(func() {
		for range conns {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	})
	// Dialled at once: each waits for its handshake only.
	var ours []net.Conn
	dialed := make(chan net.Conn, conns)
	dialErr := make(chan error, conns)
	for range conns {
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := (&Dialer{Stack: s}).DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				dialErr <- err
				return
			}
			dialed <- c
		}()
	}
	for i := range 2 * conns {
		var c net.Conn
		select {
		case c = <-dialed:
		case c = <-accepted:
		case err := <-dialErr:
			t.Fatal(err)
		case <-time.After(5 * time.Second):
			t.Fatal("dial or accept timed out")
		}
		if !IsMPTCP(c) {
			t.Fatalf("connection %d (%v) is not MPTCP", i, c.LocalAddr())
		}
		ours = append(ours, c)
		pump(c, &counts[i])
	}
	waitFor(t, "every direction to move data", ready.Wait)
	waitFor(t, "the joins", func() {
		for s.stats.Joins.Load() < 2*conns { // counted on both sides
			time.Sleep(time.Millisecond)
		}
	})
	// Per connection: run (the subflows' readers and writers and the path manager's calls run
	// while they have work); the dispatcher, maintain, the poller and the accept loop.
	if n, want := s.goroutines(), int64(2*conns+4); n < want {
		t.Fatalf("the stack tracks %d goroutines with %d connections moving data, want at least %d", n, conns, want)
	}

	start := time.Now()
	err = s.Close()
	el := time.Since(start)
	closed = true
	t.Logf("closed with %d connections moving data in %v", conns, el)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	if el >= closeWait {
		t.Fatalf("close took %v, the bound is %v", el, closeWait)
	}
	if n := s.goroutines(); n != 0 {
		t.Fatalf("%d of the stack's goroutines still run after Close", n)
	}
	// The application's calls fail now; closing its connections is quick.
	waitFor(t, "the application's goroutines", app.Wait)
	for _, c := range ours {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("close connection: %v", err)
		}
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("accept on the closed stack's listener: %v, want net.ErrClosed", err)
	}
	// No goroutine of the stack's is left (a few short-lived ones, the runtime's, may need a
	// moment to end).
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines after the close, %d before:\n%s", n, before, leftover(string(buf)))
	}
}

// waitFor runs wait, failing the test if it takes more than 5 seconds.
func waitFor(t *testing.T, what string, wait func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// leftover keeps the stacks of goroutines in this package.
func leftover(dump string) string {
	var out []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "mptcpgo/pkg/control.") && !strings.Contains(g, "TestStackCloseUnderLoad") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// TestRoutinesRefuseAfterStop: once the stack begins to close, nothing new starts, dials are
// cut short, and the wait is bounded, naming how many goroutines did not end.
func TestRoutinesRefuseAfterStop(t *testing.T) {
	var s Stack
	s.rt.init()
	release := make(chan struct{})
	if !s.goroutine(func() { <-release }, func() {}) {
		t.Fatal("refused before the close")
	}
	if !s.enter() {
		t.Fatal("operation refused before the close")
	}
	s.exit()
	ctx, cancel := s.stopContext(context.Background())
	defer cancel()

	s.stopRoutines()
	if s.goroutine(func() { t.Error("started after the close") }) {
		t.Error("goroutine not refused after the close")
	}
	if s.enter() {
		t.Error("operation not refused after the close")
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Error("the stop context did not end with the close")
	}
	var left errRoutinesLeft
	if err := s.waitRoutines(20 * time.Millisecond); !errors.As(err, &left) || left.n != 1 {
		t.Fatalf("wait with one goroutine blocked: %v, want it to name 1 goroutine", err)
	}
	close(release)
	if err := s.waitRoutines(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := s.goroutines(); n != 0 {
		t.Fatalf("%d goroutines counted after they ended", n)
	}
}

// TestStackCloseLeavesMemoryMapped: when a goroutine of the stack does not end within the
// bound, Close reports it and leaves the shared memory mapped, so that the goroutine touching
// it later does not fault; the process can open a stack again.
func TestStackCloseLeavesMemoryMapped(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := NewStack(StackConfig{Datapath: datapath.Config{MaxConns: 16}})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	if err := s.dp.GrowConn(3); err != nil {
		t.Fatal(err)
	}
	shm := s.dp.Conn(3)
	s.goroutine(func() {
		<-release
		atomic.StoreUint32(&shm.Ctl.Flags, 0) // after the close
	})
	defer func(w time.Duration) { closeWait = w }(closeWait)
	closeWait = 50 * time.Millisecond
	var left errRoutinesLeft
	if err := s.Close(); !errors.As(err, &left) || left.n != 1 {
		t.Fatalf("close with a goroutine blocked: %v, want it to name 1 goroutine", err)
	}
	close(release)
	waitFor(t, "the late goroutine", func() {
		for s.goroutines() != 0 {
			time.Sleep(time.Millisecond)
		}
	})
	s2, err := NewStack(StackConfig{Datapath: datapath.Config{MaxConns: 16}})
	if err != nil {
		t.Fatalf("a stack after one closed with goroutines left: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}
