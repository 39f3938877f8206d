package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMptcpdMemoryLimit: mptcpd --accept --memory-limit 16MiB relays to a server that stops
// reading, so each connection's data piles up in the daemon (up to its receive queue's bound).
// Once the Go heap passes 90% of the limit a new connection is reset and counted
// (MemoryPressureRefused); when the server reads again and those connections end, the daemon
// serves new ones again.
//
//	namespace A (kernel MPTCP clients) ── path 0 ── namespace B (mptcpd --accept → a stalled server)
func TestMptcpdMemoryLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p0 := topo.Path(0)
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newStallServer(target)
	defer srv.stop()
	sock := ctlSocket(t)
	mptcpctl(t)
	d, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--memory-limit", "16MiB",
		"--accept", p0.B.HostPort(netns.IPv4, 0)+"="+target.Addr().String())
	if !strings.Contains(d.Output(), "memory limit") {
		t.Errorf("no memory limit in the daemon's log:\n%s", d.Output())
	}
	at := netip.MustParseAddrPort(addrs[0])
	stats := func() map[string]uint64 {
		var st map[string]uint64
		ctlJSON(t, sock, &st, "stats")
		return st
	}
	// probe opens one connection, sends a little and half-closes; it reports whether the
	// daemon refused it for memory.
	probe := func() bool {
		t.Helper()
		before := stats()["MemoryPressureRefused"]
		if c, err := dialMPTCPOnce(topo.A, at); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.Write(make([]byte, 4096))
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c) // the server's close, a reset, or the deadline while stalled
			c.Close()
		}
		return stats()["MemoryPressureRefused"] > before
	}

	// Connections whose data piles up, one by one, until the daemon refuses a new one.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	refused := false
	for i := 0; i < 12 && !refused; i++ {
		c, err := topo.A.DialMPTCP(ctx, addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		var sent atomic.Int64
		go func() {
			buf := make([]byte, 256<<10)
			for {
				n, err := c.Write(buf)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
		// Stalled: nothing more sent for half a second.
		for last := int64(-1); last != sent.Load(); {
			last = sent.Load()
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
		t.Logf("connection %d stalled after %d MiB", i, sent.Load()>>20)
		refused = probe()
	}
	if !refused {
		logNonZero(t, "ours", stats())
		t.Fatalf("no connection refused with %d connections' data held under a 16MiB limit", len(held))
	}
	st := stats()
	t.Logf("refused with %d connections held; MemoryPressureRefused %d", len(held), st["MemoryPressureRefused"])

	// The server reads again and the connections end: new ones are served again.
	srv.release()
	for _, c := range held {
		c.Close()
	}
	held = nil
	opens := st["PassiveOpens"]
	for probe() || stats()["PassiveOpens"] == opens {
		select {
		case <-ctx.Done():
			logNonZero(t, "ours", stats())
			t.Fatal("not serving again after the held connections ended")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := srv.err(); err != nil {
		t.Error(err)
	}
}

// stallServer accepts connections and reads none of them until released; then it reads every
// connection to its end and closes it.
type stallServer struct {
	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	released chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	firstErr error
}

func newStallServer(ln net.Listener) *stallServer {
	s := &stallServer{ln: ln, released: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				<-s.released
				if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
					s.mu.Lock()
					if s.firstErr == nil && !isReset(err) {
						s.firstErr = err
					}
					s.mu.Unlock()
				}
			}()
		}
	}()
	return s
}

func (s *stallServer) release() { s.once.Do(func() { close(s.released) }) }

func (s *stallServer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

func (s *stallServer) stop() {
	s.release()
	s.ln.Close()
	s.wg.Wait()
}

// isReset reports a connection reset: the relay aborts its side when the client goes first.
func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }
