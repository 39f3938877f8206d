package control

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// SendPump carries what a socket yields into a connection (Conn.PumpFrom).
type SendPump struct {
	c    *Conn
	raw  syscall.RawConn
	done func(int64, error)
	once sync.Once

	// The pump's state: one goroutine runs it at a time (the poller starts the next).
	size  int
	total int64
	park  parking // under the poller's lock
}

// PumpFrom sends everything src yields until its end, as ReadFrom does, but holds no goroutine
// and no buffer while src has nothing to read: its socket is parked with the stack's poller,
// which starts the pump again when data comes. A proxy's idle connections then cost no
// goroutine on their way in.
//
// done is called once, on some goroutine, with the bytes sent and nil at src's end, or the
// error that ended the pump (the connection's, src's, or net.ErrClosed after Stop). The caller
// calls Stop before it closes src. Without a poller the pump waits on a goroutine of its own.
func (c *Conn) PumpFrom(src syscall.Conn, done func(int64, error)) (*SendPump, error) {
	raw, err := src.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &SendPump{c: c, raw: raw, done: done, size: minReadBuf}
	go p.run()
	return p, nil
}

// Stop ends a parked pump at once (done gets net.ErrClosed) and keeps it from parking again;
// a running one ends on its next read of the closed socket, or when the connection fails.
func (p *SendPump) Stop() {
	if poll := p.c.stack.poller(); poll != nil && poll.unpark(&p.park) {
		p.finish(net.ErrClosed)
	}
}

func (p *SendPump) finish(err error) {
	p.once.Do(func() { p.done(p.total, err) })
}

func (p *SendPump) take() []byte {
	if p.size >= bufSize {
		return getBuf()
	}
	return make([]byte, p.size)
}

// run reads and queues until the socket is empty (it parks), ends or fails. Its goroutines
// are not the stack's: they touch no shared memory, and one that waits without a poller
// waits for the application's socket, which the stack does not close.
func (p *SendPump) run() {
	c := p.c
	for {
		select {
		case <-c.closed:
			p.finish(c.closedErr())
			return
		default:
		}
		buf, n, err, empty := readSocket(p.raw, p.take, putBuf, false)
		if empty {
			if poll := c.stack.poller(); poll != nil && poll.park(p.raw, &p.park, func() { go p.run() }) == nil {
				return
			}
			buf, n, err = readReady(p.raw, p.take, putBuf)
		}
		switch size := p.size; {
		case n == size && size < bufSize:
			p.size = min(2*size, bufSize)
		case n < size/4 && size > minReadBuf:
			p.size /= 2
		}
		if n > 0 {
			if perr := c.txq.pushOwned(buf[:n], c.wdl, c.closed, c.poke); perr != nil {
				p.finish(perr)
				return
			}
			p.total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			p.finish(nil)
			return
		}
		if err != nil {
			p.finish(err)
			return
		}
	}
}

// poller returns the stack's poller, nil when there is none (a test's connection).
func (s *Stack) poller() *poller {
	if s == nil {
		return nil
	}
	return s.poll
}

// RecvPump carries a connection's received stream to a writer (Conn.PumpTo).
type RecvPump struct {
	c    *Conn
	w    io.Writer
	done func(int64, error)
	once sync.Once

	total int64 // the pump's: one goroutine runs it at a time (onData starts the next)
}

// PumpTo writes the received stream to w until its end, as WriteTo does, but holds no
// goroutine while nothing has arrived: the connection starts the pump again when data or the
// end come. Bytes count as read (and are DATA_ACKed) once w took them. done is called once, on
// some goroutine, with the bytes written and nil at the stream's end, or the error that ended
// it: w's (what w did not take stays queued), or the connection's. The connection's read
// deadline does not apply.
func (c *Conn) PumpTo(w io.Writer, done func(int64, error)) *RecvPump {
	p := &RecvPump{c: c, w: w, done: done}
	go p.run()
	return p
}

func (p *RecvPump) run() {
	c := p.c
	for {
		bufs, start, err, ok := c.rxq.popAllOr(func() { go p.run() })
		if !ok {
			return // onData runs the pump again
		}
		for i, b := range bufs {
			n, werr := p.w.Write(b)
			p.total += int64(n)
			c.rxq.consume(start, n)
			if werr != nil {
				rest := append([][]byte{b[n:]}, bufs[i+1:]...)
				c.rxq.giveBack(start, rest)
				c.poke()
				p.once.Do(func() { p.done(p.total, werr) })
				return
			}
		}
		c.poke()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			p.once.Do(func() { p.done(p.total, err) })
			return
		}
	}
}
