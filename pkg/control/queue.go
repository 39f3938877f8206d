package control

import (
	"os"
	"sync"
	"time"
)

// byteQueue hands bytes between the application and a connection's goroutine: the receive side
// (ready, in-order data for Read) and the send side (data Write accepted). Readers and writers
// wait on its wake channel, which is closed and replaced whenever the queue changes.
type byteQueue struct {
	mu    sync.Mutex
	bufs  [][]byte
	n     int
	err   error // set once: no more data will be added (io.EOF or a connection error)
	wake  chan struct{}
	limit int
	// taken counts the bytes taken out, in stream order. Bytes popInto takes are done with
	// at once (copied out); a batch popAll lends stays lent until its taker reports it
	// written (consume). Their buffers may be reused only once done with.
	taken uint64
	lent  []lentBatch // popAll's batches not yet fully consumed, in stream order
	// onData is a taker without a goroutine (Conn.PumpTo) waiting: the next push or finish
	// calls it, once, outside the lock.
	onData func()
}

// lentBatch is a batch popAll handed out: stream positions [start, end), done up to done.
type lentBatch struct{ start, end, done uint64 }

func newByteQueue(limit int) *byteQueue {
	return &byteQueue{wake: make(chan struct{}), limit: limit}
}

func (q *byteQueue) notifyLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// takeOnData returns the waiting taker's onData, if any, and forgets it; called under the lock
// by what brings data or the end, which calls it once unlocked.
func (q *byteQueue) takeOnData() func() {
	f := q.onData
	q.onData = nil
	return f
}

// push appends b (taking ownership) and wakes waiters.
func (q *byteQueue) push(b []byte) {
	if len(b) == 0 {
		return
	}
	q.mu.Lock()
	q.bufs = append(q.bufs, b)
	q.n += len(b)
	q.notifyLocked()
	f := q.takeOnData()
	q.mu.Unlock()
	if f != nil {
		f()
	}
}

// finish records that no more data comes, with err as the reason.
func (q *byteQueue) finish(err error) {
	q.mu.Lock()
	var f func()
	if q.err == nil {
		q.err = err
		q.notifyLocked()
		f = q.takeOnData()
	}
	q.mu.Unlock()
	if f != nil {
		f()
	}
}

func (q *byteQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// popInto copies up to len(b) bytes out; it waits for data until the deadline or cancel.
func (q *byteQueue) popInto(b []byte, deadline *deadline, cancel <-chan struct{}) (int, error) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			n := 0
			for n < len(b) && len(q.bufs) > 0 {
				c := copy(b[n:], q.bufs[0])
				n += c
				if c == len(q.bufs[0]) {
					q.bufs[0] = nil
					q.bufs = q.bufs[1:]
				} else {
					q.bufs[0] = q.bufs[0][c:]
				}
			}
			q.n -= n
			q.taken += uint64(n)
			if len(q.bufs) == 0 {
				q.bufs = nil // an idle queue holds no array
			}
			q.notifyLocked()
			q.mu.Unlock()
			return n, nil
		}
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return 0, err
		}
		wake := q.wake
		q.mu.Unlock()
		if err := deadline.wait(wake, cancel); err != nil {
			// Data, or the connection's own error (a peer's MP_FASTCLOSE), that arrived with
			// the close or the deadline comes first: the wait picks among ready events at random.
			q.mu.Lock()
			ready := q.n > 0 || q.err != nil
			q.mu.Unlock()
			if ready {
				continue
			}
			return 0, err
		}
	}
}

// take removes and returns whole buffers while fewer than max bytes are taken (for the
// connection's goroutine on the send side; buffers are never split, so that each can go back
// to the pool when acknowledged).
func (q *byteQueue) take(max int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out [][]byte
	taken := 0
	for taken < max && len(q.bufs) > 0 {
		b := q.bufs[0]
		out = append(out, b)
		taken += len(b)
		q.bufs[0] = nil
		q.bufs = q.bufs[1:]
	}
	if len(q.bufs) == 0 {
		q.bufs = nil // an idle queue holds no array
	}
	q.n -= taken
	if taken > 0 {
		q.notifyLocked()
	}
	return out
}

// pushWait appends a copy of b in pieces, waiting while the queue is over its limit.
func (q *byteQueue) pushWait(b []byte, deadline *deadline, cancel <-chan struct{}, kick func()) (int, error) {
	written := 0
	for written < len(b) {
		q.mu.Lock()
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return written, err
		}
		if q.n < q.limit {
			n := min(len(b)-written, q.limit-q.n, bufSize)
			if k := len(q.bufs); k > 0 && cap(q.bufs[k-1]) == bufSize && len(q.bufs[k-1])+n <= bufSize {
				// Small writes fill the last buffer not yet taken: each would otherwise hold
				// a whole pool buffer, and a mapping would need one iovec per write.
				q.bufs[k-1] = append(q.bufs[k-1], b[written:written+n]...)
			} else {
				buf := getBuf()[:n]
				copy(buf, b[written:])
				q.bufs = append(q.bufs, buf)
			}
			q.n += n
			written += n
			q.notifyLocked()
			q.mu.Unlock()
			kick()
			continue
		}
		wake := q.wake
		q.mu.Unlock()
		if err := deadline.wait(wake, cancel); err != nil {
			return written, err
		}
	}
	return written, nil
}

// consume reports the next n bytes of the batch popAll returned at stream position start as
// done with.
func (q *byteQueue) consume(start uint64, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.lent {
		b := &q.lent[i]
		if b.start != start {
			continue
		}
		b.done += uint64(n)
		if b.done >= b.end {
			q.lent = append(q.lent[:i], q.lent[i+1:]...)
		}
		return
	}
}

// giveBack returns the unwritten rest of the batch lent at stream position start to the front
// of the queue. Only a batch nothing was taken after can go back in order; otherwise the rest
// is dropped, as a reader that raced the batch has read past it.
func (q *byteQueue) giveBack(start uint64, rest [][]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int
	for _, b := range rest {
		n += len(b)
	}
	for i, b := range q.lent {
		if b.start != start {
			continue
		}
		if b.end != q.taken || b.done+uint64(n) != b.end {
			return
		}
		q.lent = append(q.lent[:i], q.lent[i+1:]...)
		q.taken -= uint64(n)
		q.bufs = append(rest[:len(rest):len(rest)], q.bufs...)
		q.n += n
		q.notifyLocked()
		return
	}
}

// consumedBytes returns how far into the stream every byte taken out is done with: the
// bytes before the first one a batch still lends.
func (q *byteQueue) consumedBytes() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.lent) > 0 {
		return q.lent[0].done
	}
	return q.taken
}

// popAll waits for data and returns every buffered slice (for WriteTo), lent: the caller
// reports them consumed, with the stream position returned, as it is done with them.
func (q *byteQueue) popAll(deadline *deadline, cancel <-chan struct{}) ([][]byte, uint64, error) {
	for {
		q.mu.Lock()
		if out, start, err, ok := q.popAllLocked(); ok {
			q.mu.Unlock()
			return out, start, err
		}
		wake := q.wake
		q.mu.Unlock()
		if err := deadline.wait(wake, cancel); err != nil {
			return nil, 0, err
		}
	}
}

// popAllOr is popAll without the wait: with neither data nor the end queued, it leaves
// onData to be called when one comes, and reports ok false.
func (q *byteQueue) popAllOr(onData func()) (out [][]byte, start uint64, err error, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if out, start, err, ok = q.popAllLocked(); !ok {
		q.onData = onData
	}
	return out, start, err, ok
}

// popAllLocked takes every buffered slice, lent (ok), or reports the end (ok, with its error);
// ok is false while neither is there.
func (q *byteQueue) popAllLocked() ([][]byte, uint64, error, bool) {
	if q.n > 0 {
		out := q.bufs
		start := q.taken
		q.taken += uint64(q.n)
		q.lent = append(q.lent, lentBatch{start, q.taken, start})
		q.bufs = nil
		q.n = 0
		q.notifyLocked()
		return out, start, nil, true
	}
	if q.err != nil {
		return nil, 0, q.err, true
	}
	return nil, 0, nil, false
}

// pushOwned appends b, which the queue takes over, waiting while the queue is over its limit.
func (q *byteQueue) pushOwned(b []byte, deadline *deadline, cancel <-chan struct{}, kick func()) error {
	for {
		q.mu.Lock()
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return err
		}
		if q.n < q.limit {
			if len(b) < bufSize/4 {
				// A small read: into the last pool buffer not yet taken, or a new one, so
				// that small reads cost a share of a buffer (and of a mapping's iovecs),
				// not one buffer each.
				k := len(q.bufs)
				if k == 0 || cap(q.bufs[k-1]) != bufSize || len(q.bufs[k-1])+len(b) > bufSize {
					q.bufs = append(q.bufs, getBuf()[:0])
					k++
				}
				q.bufs[k-1] = append(q.bufs[k-1], b...)
				putBuf(b)
			} else {
				q.bufs = append(q.bufs, b)
			}
			q.n += len(b)
			q.notifyLocked()
			q.mu.Unlock()
			kick()
			return nil
		}
		wake := q.wake
		q.mu.Unlock()
		if err := deadline.wait(wake, cancel); err != nil {
			return err
		}
	}
}

// bufSize is the size of send buffers: one full mapping.
const bufSize = maxMapping

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// getBuf returns a send buffer from the pool; putBuf gives back one that is no longer used.
func getBuf() []byte { return bufPool.Get().(*[bufSize]byte)[:] }

func putBuf(b []byte) {
	if cap(b) == bufSize {
		bufPool.Put((*[bufSize]byte)(b[:bufSize]))
	}
}

// rxBuf is a pooled receive buffer of a busy subflow.
type rxBuf = [maxReadBuf]byte

var rxPool = sync.Pool{New: func() any { return new(rxBuf) }}

func getRxBuf() *rxBuf  { return rxPool.Get().(*rxBuf) }
func putRxBuf(b *rxBuf) { rxPool.Put(b) }

// deadline is a settable deadline, as net.Conn's.
type deadline struct {
	mu      sync.Mutex
	t       time.Time
	changed chan struct{}
}

func newDeadline() *deadline { return &deadline{changed: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// wait blocks until wake is closed, the deadline passes (os.ErrDeadlineExceeded) or cancel is
// closed (net.ErrClosed).
func (d *deadline) wait(wake, cancel <-chan struct{}) error {
	for {
		d.mu.Lock()
		t, changed := d.t, d.changed
		d.mu.Unlock()
		var timer <-chan time.Time
		if !t.IsZero() {
			dur := time.Until(t)
			if dur <= 0 {
				return os.ErrDeadlineExceeded
			}
			tm := time.NewTimer(dur)
			defer tm.Stop()
			timer = tm.C
		}
		select {
		case <-wake:
			return nil
		case <-cancel:
			return errConnClosed
		case <-timer:
			return os.ErrDeadlineExceeded
		case <-changed:
		}
	}
}
