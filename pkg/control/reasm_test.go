package control

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

func readAll(r *reasm) []byte {
	var out []byte
	b := make([]byte, 7)
	for {
		n := r.read(b)
		if n == 0 {
			return out
		}
		out = append(out, b[:n]...)
	}
}

func TestReasmInOrder(t *testing.T) {
	r := &reasm{rcvNxt: 100}
	r.insert(100, []byte("hello "))
	r.insert(106, []byte("world"))
	if got := string(readAll(r)); got != "hello world" {
		t.Fatalf("got %q", got)
	}
	if r.rcvNxt != 111 || r.buffered() != 0 {
		t.Fatalf("rcvNxt %d buffered %d", r.rcvNxt, r.buffered())
	}
}

func TestReasmDuplicatesAndHoles(t *testing.T) {
	r := &reasm{rcvNxt: 0}
	r.insert(5, []byte("fghij"))
	r.insert(3, []byte("defg")) // overlaps the stored piece
	r.insert(8, []byte("ijklm"))
	if r.rcvNxt != 0 || r.nReady != 0 {
		t.Fatalf("nothing may be ready before the hole is filled: rcvNxt %d ready %d", r.rcvNxt, r.nReady)
	}
	if r.nOOO != 10 { // d..m
		t.Fatalf("out-of-order bytes %d, want 10", r.nOOO)
	}
	r.insert(0, []byte("abc"))
	if got := string(readAll(r)); got != "abcdefghijklm" {
		t.Fatalf("got %q", got)
	}
	// The zero-window probe: the byte at DATA_ACK-1 again.
	r.insert(12, []byte("m"))
	r.insert(0, []byte("abcdefghijklm"))
	if r.buffered() != 0 || r.rcvNxt != 13 {
		t.Fatalf("duplicates kept: buffered %d rcvNxt %d", r.buffered(), r.rcvNxt)
	}
}

// TestReasmWrap places the stream across the 64-bit DSN wrap.
func TestReasmWrap(t *testing.T) {
	start := seqnum.DSN(^uint64(0) - 4)
	r := &reasm{rcvNxt: start}
	r.insert(start.Add(5), []byte("56789"))
	r.insert(start, []byte("01234"))
	if got := string(readAll(r)); got != "0123456789" {
		t.Fatalf("got %q", got)
	}
	if r.rcvNxt != 5 {
		t.Fatalf("rcvNxt %d, want 5 after the wrap", r.rcvNxt)
	}
}

// TestReasmRandom cuts a stream into overlapping pieces, shuffles and duplicates them, and
// checks the stream comes out exact.
func TestReasmRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		stream := make([]byte, 1+rng.IntN(5000))
		for i := range stream {
			stream[i] = byte(rng.Uint32())
		}
		base := seqnum.DSN(rng.Uint64())
		var pieces []piece
		for i := 0; i < len(stream); {
			n := 1 + rng.IntN(300)
			if i+n > len(stream) {
				n = len(stream) - i
			}
			pieces = append(pieces, piece{base.Add(uint64(i)), stream[i : i+n]})
			// Overlapping retransmission of a random neighbourhood.
			if rng.IntN(3) == 0 {
				a := max(0, i-rng.IntN(200))
				b := min(len(stream), i+n+rng.IntN(200))
				pieces = append(pieces, piece{base.Add(uint64(a)), stream[a:b]})
			}
			i += n
		}
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		r := &reasm{rcvNxt: base}
		var out []byte
		for _, p := range pieces {
			r.insert(p.dsn, p.data)
			if rng.IntN(2) == 0 {
				out = append(out, readAll(r)...)
			}
		}
		out = append(out, readAll(r)...)
		if !bytes.Equal(out, stream) {
			t.Fatalf("iteration %d: stream differs (got %d bytes, want %d)", iter, len(out), len(stream))
		}
		if r.buffered() != 0 || len(r.ooo) != 0 {
			t.Fatalf("iteration %d: %d bytes left buffered", iter, r.buffered())
		}
	}
}

// BenchmarkReasmInOrder measures reassembly of in-order 64 KiB pieces, the common case.
func BenchmarkReasmInOrder(b *testing.B) {
	data := make([]byte, 64<<10)
	out := make([]byte, 64<<10)
	r := &reasm{rcvNxt: 1}
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		r.insert(r.rcvNxt, data)
		r.read(out)
	}
}

// BenchmarkReasmOutOfOrder measures pieces arriving in reverse order in groups of 8.
func BenchmarkReasmOutOfOrder(b *testing.B) {
	data := make([]byte, 1400)
	out := make([]byte, 8*1400)
	r := &reasm{rcvNxt: 1}
	b.SetBytes(int64(8 * len(data)))
	for i := 0; i < b.N; i++ {
		base := r.rcvNxt
		for k := 7; k >= 0; k-- {
			r.insert(base.Add(uint64(k*len(data))), data)
		}
		r.read(out)
	}
}

// TestReleaseRx: a pooled receive buffer goes back only once the application has consumed
// every byte reassembled from it, also when part of it waited out of order.
func TestReleaseRx(t *testing.T) {
	c := &Conn{rxq: newByteQueue(1 << 20)}
	c.st.rcv.rx.rcvNxt = 1000
	a, b := new(rxBuf), new(rxBuf)
	// a: 100 in-order bytes at 1000 and 100 bytes at 1300 (a later mapping, out of order).
	c.st.rcv.rx.insert(1000, a[:100])
	c.st.rcv.rx.insert(1300, a[100:200])
	c.deliverRx()
	c.st.rcv.pooled = append(c.st.rcv.pooled, pooledRx{a, 1400})
	// b: the hole, 1100..1300.
	c.st.rcv.rx.insert(1100, b[:200])
	c.deliverRx()
	c.st.rcv.pooled = append(c.st.rcv.pooled, pooledRx{b, 1300})
	read := func(n int) {
		t.Helper()
		got, err := c.rxq.popInto(make([]byte, n), newDeadline(), nil)
		if err != nil || got != n {
			t.Fatalf("read %d: %d, %v", n, got, err)
		}
		c.releaseRx()
	}
	read(250) // up to 1250
	if len(c.st.rcv.pooled) != 2 {
		t.Fatalf("released early: %d left, want 2", len(c.st.rcv.pooled))
	}
	read(50) // up to 1300: b is done, a still has 1300..1400 unread
	if len(c.st.rcv.pooled) != 1 || c.st.rcv.pooled[0].buf != a {
		t.Fatalf("after 1300: %v", c.st.rcv.pooled)
	}
	bufs, start, err := c.rxq.popAll(newDeadline(), nil)
	if err != nil || len(bufs) != 1 || len(bufs[0]) != 100 {
		t.Fatalf("popAll: %d buffers, %v", len(bufs), err)
	}
	c.releaseRx()
	if len(c.st.rcv.pooled) != 1 {
		t.Fatal("released before the taker of popAll reported the bytes consumed")
	}
	c.rxq.consume(start, 100)
	c.releaseRx()
	if len(c.st.rcv.pooled) != 0 {
		t.Fatalf("not released after everything was consumed: %v", c.st.rcv.pooled)
	}
}

// TestReleaseRxLentBatch: bytes a concurrent Read copies out after WriteTo took a batch do not
// count the batch as consumed: its buffer stays out of the pool until WriteTo has written it.
func TestReleaseRxLentBatch(t *testing.T) {
	c := &Conn{rxq: newByteQueue(1 << 20)}
	c.st.rcv.rx.rcvNxt = 1000
	a, b := new(rxBuf), new(rxBuf)
	c.st.rcv.rx.insert(1000, a[:100])
	c.deliverRx()
	c.st.rcv.pooled = append(c.st.rcv.pooled, pooledRx{a, 1100})
	bufs, start, err := c.rxq.popAll(newDeadline(), nil) // WriteTo takes a's bytes
	if err != nil || len(bufs) != 1 {
		t.Fatal(bufs, err)
	}
	c.st.rcv.rx.insert(1100, b[:100])
	c.deliverRx()
	c.st.rcv.pooled = append(c.st.rcv.pooled, pooledRx{b, 1200})
	if n, err := c.rxq.popInto(make([]byte, 100), newDeadline(), nil); n != 100 || err != nil {
		t.Fatal(n, err) // a Read takes b's bytes meanwhile
	}
	c.releaseRx()
	if len(c.st.rcv.pooled) != 2 {
		t.Fatalf("released while WriteTo still writes: %d left, want 2", len(c.st.rcv.pooled))
	}
	c.rxq.consume(start, 60)
	c.releaseRx()
	if len(c.st.rcv.pooled) != 2 {
		t.Fatalf("released after a partial write: %d left, want 2", len(c.st.rcv.pooled))
	}
	c.rxq.consume(start, 40)
	c.releaseRx()
	if len(c.st.rcv.pooled) != 0 {
		t.Fatalf("not released once written: %v", c.st.rcv.pooled)
	}
}

// TestWriteToGivesBack: bytes WriteTo's destination refused go back to the receive queue, in
// order, for the next Read.
func TestWriteToGivesBack(t *testing.T) {
	c := &Conn{rxq: newByteQueue(1 << 20), closed: make(chan struct{}), rdl: newDeadline(), kick: make(chan struct{}, 1)}
	c.rxq.push([]byte("hello "))
	c.rxq.push([]byte("world"))
	c.rxq.finish(io.EOF)
	w := &limitedWriter{max: 8}
	n, err := c.WriteTo(w)
	if n != 8 || !errors.Is(err, errShort) || w.buf.String() != "hello wo" {
		t.Fatalf("WriteTo: %d, %v, wrote %q", n, err, w.buf.String())
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "rld" {
		t.Fatalf("read after the failed WriteTo: %q, %v; want \"rld\"", rest, err)
	}
	if got := c.rxq.consumedBytes(); got != 11 {
		t.Errorf("consumed %d bytes, want 11", got)
	}
}

var errShort = errors.New("destination full")

// limitedWriter takes max bytes, then fails.
type limitedWriter struct {
	buf bytes.Buffer
	max int
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	n := min(len(b), w.max-w.buf.Len())
	w.buf.Write(b[:n])
	if n < len(b) {
		return n, errShort
	}
	return n, nil
}
