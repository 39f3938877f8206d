package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// flakyListener fails its first accepts with errs, then accepts from ln (or reports net.ErrClosed
// when ln is nil).
type flakyListener struct {
	mu   sync.Mutex
	errs []error
	ln   net.Listener
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: err}
	}
	l.mu.Unlock()
	if l.ln == nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
	return l.ln.Accept()
}

func (l *flakyListener) Close() error {
	if l.ln == nil {
		return nil
	}
	return l.ln.Close()
}

func (l *flakyListener) Addr() net.Addr {
	if l.ln == nil {
		return &net.TCPAddr{}
	}
	return l.ln.Addr()
}

// lines is a log sink that counts lines.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestServeAcceptErrors: resource errors from Accept are counted and waited out, with at most
// about a log line a second; only net.ErrClosed ends Serve.
func TestServeAcceptErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var errs []error
		for range 100 {
			errs = append(errs, syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, errors.New("odd"))
		}
		var log lines
		s := &Server{Rule: Rule{Listen: "x"}, Log: slog.New(slog.NewTextHandler(&log, nil))}
		s.init()
		s.ln = &flakyListener{errs: errs}
		start := time.Now()
		if err := s.Serve(context.Background()); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if n := s.Stats.AcceptErrors.Load(); n != uint64(len(errs)) {
			t.Errorf("AcceptErrors = %d, want %d", n, len(errs))
		}
		// 5 ms doubling to 1 s: about 491 s for 500 failures.
		took := time.Since(start)
		if took < 400*time.Second || took > 600*time.Second {
			t.Errorf("500 failures took %v, want about 491 s of back-off", took)
		}
		n := strings.Count(log.String(), "\n")
		if n == 0 || float64(n) > took.Seconds()+2 {
			t.Errorf("%d log lines over %v:\n%s", n, took, log.String())
		}
		if !strings.Contains(log.String(), "suppressed=") {
			t.Errorf("no line tells of suppressed failures:\n%s", log.String())
		}
	})
}

// TestServeShutdownDuringBackoff: Shutdown ends Serve even while it waits after a failure.
func TestServeShutdownDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{Rule: Rule{Listen: "x"}}
		s.init()
		fl := &flakyListener{}
		for range 20 {
			fl.errs = append(fl.errs, syscall.EMFILE)
		}
		s.ln = fl
		done := make(chan error)
		go func() { done <- s.Serve(context.Background()) }()
		time.Sleep(3 * time.Second) // well into 1 s waits
		fl.mu.Lock()
		fl.errs = nil // the listener is closed from now on
		fl.mu.Unlock()
		start := time.Now()
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Serve ended %v after Shutdown, want at once", d)
		}
	})
}

// echoServer accepts on a loopback port and echoes every connection.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.CopyBuffer(writerOnly{c}, readerOnly{c}, make([]byte, 32<<10)) // no splice
				c.Close()
			}()
		}
	}()
	return ln
}

// acceptServer is an accept-mode server listening on loopback (plain TCP in and out, no
// stack), relaying to target, whose first accepts fail with errs.
func acceptServer(t *testing.T, target string, limit *Limit, errs ...error) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Rule: Rule{Listen: ln.Addr().String(), Remote: target}, Limit: limit}
	s.init()
	s.ln = &flakyListener{errs: errs, ln: ln}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("echo of %q: %v", msg, err)
	}
	if string(b) != msg {
		t.Fatalf("echo %q, want %q", b, msg)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServeAfterErrors: a connection that arrives while accepts fail is relayed once they stop.
func TestServeAfterErrors(t *testing.T) {
	echo := echoServer(t)
	s := acceptServer(t, echo.Addr().String(), nil, syscall.EMFILE, syscall.EMFILE, syscall.ENFILE)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "hello")
	if n := s.Stats.AcceptErrors.Load(); n != 3 {
		t.Errorf("AcceptErrors = %d, want 3", n)
	}
}

// TestLimit: with a limit of 2, a third connection is reset and counted; once one closes, a
// new connection is relayed again.
func TestLimit(t *testing.T) {
	echo := echoServer(t)
	lim := NewLimit(2)
	s := acceptServer(t, echo.Addr().String(), lim)
	var held []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, "held"+string(rune('0'+i)))
		held = append(held, c)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// Reset before connect returned: on loopback the refusal can be that quick.
	case err != nil:
		t.Fatal(err)
	default:
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("third connection read: %v, want a reset", err)
		}
		c.Close()
	}
	if n := s.Stats.Refused.Load(); n != 1 {
		t.Errorf("Refused = %d, want 1", n)
	}
	held[0].Close()
	waitFor(t, "the closed connection to leave the limit", func() bool { return lim.InUse() == 1 })
	c, err = net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "again")
	if a := s.Stats.Active.Load(); a != 2 {
		t.Errorf("Active = %d, want 2", a)
	}
}

// pipes counts this process's pipe descriptors.
func pipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestRelayNoSplicePipes: a relay between two plain TCP sockets leaves no pipe behind (a
// splice would keep two per direction in the runtime's pool after the connection closed).
func TestRelayNoSplicePipes(t *testing.T) {
	echo := echoServer(t)
	s := acceptServer(t, echo.Addr().String(), nil)
	before := pipes(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			echoOnce(t, c, strings.Repeat("x", 1<<20))
		}()
	}
	wg.Wait()
	waitFor(t, "the relays to end", func() bool { return s.Stats.Active.Load() == 0 })
	if after := pipes(t); after != before {
		t.Errorf("%d pipe descriptors after the relays, %d before", after, before)
	}
}

func TestResourceError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{fmt.Errorf("network namespace cookie: %w", syscall.EMFILE), true},
		{syscall.ENFILE, true},
		{syscall.ENOBUFS, true},
		{syscall.ENOMEM, true},
		{syscall.ECONNREFUSED, false},
		{errors.New("no free connection slots"), false},
	} {
		if got := resourceError(tc.err); got != tc.want {
			t.Errorf("resourceError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
