package control

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// goroutinesSettle waits until at most n goroutines run, and reports whether they did.
func goroutinesSettle(n int) bool {
	for range 200 {
		if runtime.NumGoroutine() <= n {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

type pumpEnd struct {
	n   int64
	err error
}

// TestPumpFrom checks that a pump from a socket carries its bytes, in order, into the send
// queue; that it holds no goroutine and is parked with the poller while the socket is idle;
// that the socket's end ends it with nil; and that Stop ends a parked pump with ErrClosed.
func TestPumpFrom(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	go p.run()
	defer p.close()
	c := newConn(&Stack{poll: p})
	a, b := tcpPair(t)
	base := runtime.NumGoroutine()
	ended := make(chan pumpEnd, 1)
	pump, err := c.PumpFrom(b, func(n int64, err error) { ended <- pumpEnd{n, err} })
	if err != nil {
		t.Fatal(err)
	}
	var sent bytes.Buffer
	for i := range 3 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		sent.Write(msg)
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		for c.txq.len() < sent.Len() {
			time.Sleep(time.Millisecond)
		}
		if !goroutinesSettle(base) || p.parked() != 1 {
			t.Fatalf("idle pump: %d goroutines (%d before), %d parked; want no goroutine and one parked", runtime.NumGoroutine(), base, p.parked())
		}
	}
	var got []byte
	for _, b := range c.txq.take(1 << 20) {
		got = append(got, b...)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("queued %d bytes, not the %d sent", len(got), sent.Len())
	}
	a.CloseWrite()
	select {
	case e := <-ended:
		if e.err != nil || e.n != int64(sent.Len()) {
			t.Fatalf("at the end: %d, %v; want %d, nil", e.n, e.err, sent.Len())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the socket's end did not end the pump")
	}

	// Stopped while parked.
	a, b = tcpPair(t)
	pump, err = c.PumpFrom(b, func(n int64, err error) { ended <- pumpEnd{n, err} })
	if err != nil {
		t.Fatal(err)
	}
	for p.parked() != 1 {
		time.Sleep(time.Millisecond)
	}
	pump.Stop()
	select {
	case e := <-ended:
		if !errors.Is(e.err, net.ErrClosed) {
			t.Fatalf("stopped: %v, want net.ErrClosed", e.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end a parked pump")
	}
	if p.parked() != 0 {
		t.Fatal("a stopped pump is still parked")
	}
	a.Write([]byte("late"))
	time.Sleep(50 * time.Millisecond)
	if len(ended) != 0 {
		t.Fatal("a stopped pump ended twice")
	}
}

// failWriter takes limit bytes, then fails.
type failWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

var errWriterFull = errors.New("writer full")

func (w *failWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(b), w.limit-w.buf.Len())
	w.buf.Write(b[:n])
	if n < len(b) {
		return n, errWriterFull
	}
	return n, nil
}

// TestPumpTo checks that a pump to a writer carries what the connection receives, in order;
// that it holds no goroutine while nothing arrives; that the stream's end ends it with nil; and
// that a writer's error ends it with that error, leaving what the writer did not take queued.
func TestPumpTo(t *testing.T) {
	c := newConn(nil)
	base := runtime.NumGoroutine()
	ended := make(chan pumpEnd, 1)
	w := &failWriter{limit: 1 << 20}
	c.PumpTo(w, func(n int64, err error) { ended <- pumpEnd{n, err} })
	var sent bytes.Buffer
	for i := range 3 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 500*(i+1))
		sent.Write(msg)
		c.rxq.push(bytes.Clone(msg))
		for c.rxq.consumedBytes() < uint64(sent.Len()) {
			time.Sleep(time.Millisecond)
		}
		if !goroutinesSettle(base) {
			t.Fatalf("idle pump: %d goroutines, %d before", runtime.NumGoroutine(), base)
		}
	}
	c.rxq.finish(io.EOF)
	select {
	case e := <-ended:
		if e.err != nil || e.n != int64(sent.Len()) {
			t.Fatalf("at the end: %d, %v; want %d, nil", e.n, e.err, sent.Len())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's end did not end the pump")
	}
	w.mu.Lock()
	if !bytes.Equal(w.buf.Bytes(), sent.Bytes()) {
		t.Fatalf("wrote %d bytes, not the %d received", w.buf.Len(), sent.Len())
	}
	w.mu.Unlock()

	c = newConn(nil)
	w = &failWriter{limit: 100}
	c.PumpTo(w, func(n int64, err error) { ended <- pumpEnd{n, err} })
	c.rxq.push(bytes.Repeat([]byte{'x'}, 300))
	select {
	case e := <-ended:
		if !errors.Is(e.err, errWriterFull) || e.n != 100 {
			t.Fatalf("writer full: %d, %v; want 100, its error", e.n, e.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failing writer did not end the pump")
	}
	if n := c.rxq.len(); n != 200 {
		t.Fatalf("%d bytes left queued, want the 200 the writer did not take", n)
	}
}
