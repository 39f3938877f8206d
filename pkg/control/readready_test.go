package control

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestReadReadyHoldsNoBufferWhileWaiting checks that a reader waiting for data holds no
// buffer, that it returns exactly the bytes sent, then io.EOF at the peer's end, and the
// closed-connection error once its own socket is closed.
func TestReadReadyHoldsNoBufferWhileWaiting(t *testing.T) {
	a, b := tcpPair(t)
	rc, err := b.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var held atomic.Int64
	take := func() []byte { held.Add(1); return make([]byte, 64) }
	drop := func([]byte) { held.Add(-1) }
	type result struct {
		buf []byte
		n   int
		err error
	}
	read := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			buf, n, err := readReady(rc, take, drop)
			ch <- result{buf, n, err}
		}()
		return ch
	}
	got := read()
	time.Sleep(100 * time.Millisecond) // it tried once, found nothing and waits
	if h := held.Load(); h != 0 {
		t.Fatalf("a reader waiting for data holds %d buffers, want 0", h)
	}
	if _, err := a.Write([]byte("mptcp")); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || string(r.buf[:r.n]) != "mptcp" {
		t.Fatalf("read %q, %v; want \"mptcp\"", r.buf[:r.n], r.err)
	}
	if h := held.Load(); h != 1 {
		t.Fatalf("%d buffers out after a read, want the one returned", h)
	}
	held.Add(-1)
	got = read()
	time.Sleep(50 * time.Millisecond)
	b.Close()
	select {
	case r := <-got:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("after close: %v, want a closed-connection error", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting reader did not return when its socket closed")
	}
	if h := held.Load(); h != 0 {
		t.Fatalf("%d buffers held after close, want 0", h)
	}

	// The peer's end, while the reader waits: io.EOF, and no buffer.
	a, b = tcpPair(t)
	if rc, err = b.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	got = read()
	time.Sleep(50 * time.Millisecond)
	a.CloseWrite()
	if r := <-got; !errors.Is(r.err, io.EOF) || r.buf != nil || r.n != 0 || held.Load() != 0 {
		t.Fatalf("at the end: %v, buffer %v, %d bytes, %d held; want io.EOF and none", r.err, r.buf != nil, r.n, held.Load())
	}
}
