package control

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// The connection core. This file holds the public API, the goroutine's loop and the
// connection's close; each job of the loop has its own file and state: the send path (send.go
// over sendbuf.go), the receive path (receive.go), datapath events (events.go), subflow health
// and reinjection (health.go), subflows ending and draining (subflows.go), the data-level
// retransmission (datartx.go), our DATA_FIN (datafin.go), and the one timer that runs their
// deadlines (timers.go). What the core asks of the datapath and the sockets beyond shared
// memory is the dataplane interface (dataplane.go).

// Buffer limits of one connection.
const (
	rxLimit      = 4 << 20 // in-order bytes waiting for Read before we stop reading subflows
	txLimit      = 1 << 20 // bytes accepted from Write before it blocks
	sendLimit    = 4 << 20 // bytes kept until DATA_ACKed
	writerQueued = 1 << 20 // bytes handed to a subflow's writer and not yet written
	lingerTime   = 30 * time.Second
)

// Conn is an MPTCP connection. It implements net.Conn.
//
// One goroutine (run) owns the connection's protocol state: the data sequence space, the send
// buffer kept until DATA_ACKed, reassembly, DATA_FIN and the subflows. The application (Read,
// Write, Close), the subflows' reader and writer goroutines and the stack's event dispatcher
// talk to it through channels and the two byte queues.
type Conn struct {
	stack        *Stack
	slot         uint32
	token        uint32
	localKey     uint64
	remoteKey    uint64
	firstDSN     seqnum.DSN // our IDSN + 1, set before the goroutines start
	laddr        net.Addr
	raddr        net.Addr
	mptcp        atomic.Bool
	abortOnClose atomic.Bool
	rstReason    atomic.Uint32
	shm          *datapath.Conn
	plane        dataplane  // the datapath and sockets beyond shm
	subs         []*subflow // owned by run once it started
	server       bool       // we accepted the connection
	sched        Scheduler
	cc           datapath.CC // the subflows' congestion control (conn_ctl.cc)
	ns           *nsRef      // network namespace for join subflows' sockets
	pm           PathManager
	joinCh       chan *joinResult

	rxq      *byteQueue
	txq      *byteQueue
	rdl, wdl *deadline

	evq      *evQueue
	early    []datapath.Event // events that came before the Conn was registered; run handles them first
	rxCh     chan *rxChunk
	txDoneCh chan txDone
	kick     chan struct{}
	ctl      chan ctlOp
	infoCh   chan chan ConnInfo
	cmdCh    chan func()
	pmq      struct { // calls to the path manager, in order, made by pmRun
		sync.Mutex
		q       []func(PathManager)
		last    bool // Closed is queued: nothing is taken after it
		running bool // a pmRun goroutine is taking the queue
	}
	done       chan struct{} // closed when run ended the connection
	closed     chan struct{} // closed by Close
	closeMu    sync.Once
	userClosed atomic.Bool // the application called Close
	errMu      sync.Mutex
	err        error

	// The loop runs while the connection has work: idle for runLinger with no deadline, it
	// ends (park), and wake starts it again. running: a loop runs or is starting; woken:
	// something came since the loop last looked (set by every waker after its send).
	running atomic.Bool
	woken   atomic.Bool
	live    atomic.Bool // start started the loop: wake may start it again

	st connState // owned by run
	rs runState  // owned by run
}

// runState is what the connection's loop keeps between its runs.
type runState struct {
	started bool // the prologue ran
	timer   connTimer
	evs     []datapath.Event
}

type ctlOp int

const (
	opCloseWrite ctlOp = iota
	opClose
	opAbort
	opReset // resetSubflows: reset with MP_TCPRST (reason in Conn.rstReason)
)

// connState is the protocol state, owned by the connection's goroutine. Each job keeps its
// own part: the send buffer (sendbuf.go), the receive side (receive.go), the data-level
// retransmission timer (datartx.go), our DATA_FIN (datafin.go), the data to send again
// (health.go); the connection's timer (timers.go) runs their deadlines.
type connState struct {
	snd      sendBuf
	rcv      recvState
	rtx      dataRtx
	fin      dataFin
	reinject reinjectQueue // data to send again, from failed or stale subflows

	wrClosed  bool // CloseWrite: our DATA_FIN follows the data written
	ackArmed  bool // the DATA_ACK doorbell is rung
	appClosed bool
	lingerAt  time.Time
	events    [16]uint64 // events handled, by type
	// The connection's error is the peer's protocol violation: its subflows end with a reset.
	resetOnErr  bool
	fastcloseRx bool // the peer's MP_FASTCLOSE was counted
	// A second subflow joined once: no fallback to TCP from then on (§3.7), a subflow whose
	// data cannot be placed is reset instead (badMapping).
	joined bool
	// We sent MP_FAIL for a wrong DSS checksum on our only subflow (csumFailed): the peer
	// answers with its infinite mapping, and until it comes our DATA_ACKs keep its window open.
	csumFailSent bool

	windowWaits uint64
	oppUna      seqnum.DSN // the DATA_ACK of the last opportunistic retransmission (send.go)
	oppDone     bool
	ccSubs      []uint32 // the subflow slots last listed as coupled (conn_ctl.cc_subs)
	pmStarted   bool     // the path manager was told the connection is fully established
	startedAt   time.Time
	draining    []*subflow                  // detached subflows read to their end (dropSubflow)
	pumpAt      time.Time                   // look again for room to send (zero: not)
	pollAt      time.Time                   // the next sample of state that changes silently (timers.go)
	lostGen     uint64                      // the stack's lostGen when the connection last looked (lostEvents)
	pendingSub  map[uint32][]datapath.Event // events of subflows not attached yet
	announces   map[uint8]*announce         // our ADD_ADDRs awaiting their echo
}

func newConn(s *Stack) *Conn {
	return &Conn{
		stack:    s,
		plane:    kernelPlane{s},
		rxq:      newByteQueue(rxLimit),
		txq:      newByteQueue(txLimit),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
		evq:      newEvQueue(),
		rxCh:     make(chan *rxChunk, 16),
		txDoneCh: make(chan txDone, 16),
		kick:     make(chan struct{}, 1),
		ctl:      make(chan ctlOp, 4),
		infoCh:   make(chan chan ConnInfo, 1),
		cmdCh:    make(chan func(), 1),
		joinCh:   make(chan *joinResult, 4),
		done:     make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// start sets the data-level state once keys are known and starts the goroutines. It fails
// when the stack is closing: the connection is then torn down.
func (c *Conn) start() error {
	localIDSN := mpcrypto.IDSN(c.localKey)
	remoteIDSN := mpcrypto.IDSN(c.remoteKey)
	c.firstDSN = seqnum.DSN(localIDSN + 1)
	c.st.snd.start(c.firstDSN)
	c.st.rcv.rx.rcvNxt = seqnum.DSN(remoteIDSN + 1)
	c.shm.Ctl.RemoteKey = c.remoteKey
	c.shm.Ctl.PeerIdsn = remoteIDSN
	atomic.StoreUint64(&c.shm.Ctl.RcvNxt, remoteIDSN+1)
	// The datapath has not touched rx_ack yet: it does only once CAN_ACK is set.
	atomic.StoreUint64(&c.shm.St.RxAck, remoteIDSN+1)
	// Joinable before our first DSS goes out: that DSS makes a kernel client fully established,
	// and its path manager sends its MP_JOIN SYNs at once, without retrying one refused for an
	// unknown token.
	c.stack.addToken(c)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnCanAck)
	c.mptcp.Store(true)
	if c.sched == nil {
		c.sched, _ = NewScheduler(c.stack.scheduler)
	}
	c.pm = c.stack.pm
	c.st.pendingSub = map[uint32][]datapath.Event{}
	c.st.announces = map[uint8]*announce{}
	sf := c.subs[0]
	sf.ready = true
	c.stack.register(c)
	c.emitCreated()
	c.running.Store(true) // before live: a wake now sees a loop starting
	c.live.Store(true)
	if !c.stack.goroutine(sf.readLoop, c.run) {
		// Run's part, as it would on an abort: nothing else owns the connection.
		c.fail(errStackClosed)
		c.teardown(true)
		close(c.done)
		return errStackClosed
	}
	return nil
}

// deliver queues an event for the connection's goroutine; it never waits (the stack's one
// dispatcher serves every connection). It reports false when the queue is full: the connection
// is then reset.
func (c *Conn) deliver(ev datapath.Event) bool {
	ok := c.evq.put(ev)
	c.wake()
	return ok
}

func (c *Conn) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
	c.wake()
}

// runLinger is how long the connection's loop waits, idle and with no deadline, before it ends.
const runLinger = 250 * time.Millisecond

// wake makes sure the connection's loop looks at what its caller just queued: it starts the
// loop unless one runs (which then sees woken). Every sender to the loop calls it after its
// send, and before a send that may wait for the loop.
func (c *Conn) wake() {
	c.woken.Store(true)
	if c.live.Load() && c.running.CompareAndSwap(false, true) {
		c.startRun()
	}
}

func (c *Conn) startRun() {
	if c.stack == nil {
		go c.run() // a test's connection
		return
	}
	if !c.stack.goroutine(c.run) {
		// The stack is closing: its Close runs the loop to the connection's end (runToEnd).
		c.running.Store(false)
	}
}

// trimIdle lets go of the buffers of lists that are empty, whose memory a busy spell left
// behind, as the loop ends on an idle connection.
func (c *Conn) trimIdle() {
	b := &c.st.snd
	if len(b.pieces) == 0 {
		b.pieces, b.unsent, b.unsentN = nil, 0, 0
	}
	if len(b.unwritten) == 0 {
		b.unwritten = nil
	}
	if len(b.freedLate) == 0 {
		b.freedLate = nil
	}
	if len(c.st.reinject) == 0 {
		c.st.reinject = nil
	}
	for _, sf := range c.subs {
		if len(sf.inflight) == 0 {
			sf.inflight = nil
		}
		if len(sf.rxHeld) == 0 {
			sf.rxHeld = nil
		}
		if len(sf.rxMaps) == 0 {
			sf.rxMaps = nil
		}
	}
}

// park ends the loop of an idle connection; false when something came meanwhile (the loop
// goes on). A waker sets woken before it tries to start a loop: either this sees it, or the
// waker sees running false and starts another.
func (c *Conn) park() bool {
	c.running.Store(false)
	return !c.woken.Load() || !c.running.CompareAndSwap(false, true)
}

// runToEnd runs the loop of a connection the stack's Close aborted on the caller's goroutine,
// unless one runs, until the connection ended, or until the deadline.
func (c *Conn) runToEnd(deadline time.Time) {
	if !c.live.Load() {
		return // not started: what started it ends it (Dial's error path, or start)
	}
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return
		default:
		}
		if c.running.CompareAndSwap(false, true) {
			c.run()
			continue
		}
		time.Sleep(time.Millisecond) // a loop runs, and ends the connection
	}
}

// Read reads in-order data.
func (c *Conn) Read(b []byte) (int, error) {
	if c.userClosed.Load() {
		return 0, errConnClosed
	}
	// A connection that failed (MP_FASTCLOSE, resets) reports its error: it is queued.
	if len(b) == 0 {
		return 0, nil
	}
	n, err := c.rxq.popInto(b, c.rdl, c.closed)
	if n > 0 {
		c.poke()
	}
	return n, err
}

// Write queues data for sending; it blocks while the send buffers are full.
func (c *Conn) Write(b []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, c.closedErr()
	default:
	}
	return c.txq.pushWait(b, c.wdl, c.closed, c.poke)
}

// ReadFrom sends everything r yields, reading straight into the send buffers (io.Copy uses it).
// While r yields little, it reads into small buffers, so that an idle connection holds little
// memory; full reads grow them to pooled mapping-sized buffers.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	size := minReadBuf
	take := func() []byte {
		if size >= bufSize {
			return getBuf()
		}
		return make([]byte, size)
	}
	// From a socket, nothing is held while it waits for data (readReady).
	var raw syscall.RawConn
	if sc, ok := r.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	for {
		select {
		case <-c.closed:
			return total, c.closedErr()
		default:
		}
		var buf []byte
		var n int
		var err error
		if raw != nil {
			buf, n, err = readReady(raw, take, putBuf)
		} else {
			buf = take()
			n, err = r.Read(buf)
		}
		switch {
		case n == len(buf) && size < bufSize:
			size = min(2*size, bufSize)
		case n < len(buf)/4 && size > minReadBuf:
			size /= 2
		}
		if n > 0 {
			if perr := c.txq.pushOwned(buf[:n], c.wdl, c.closed, c.poke); perr != nil {
				return total, perr
			}
			total += int64(n)
		} else {
			putBuf(buf)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// WriteTo writes the received stream to w until EOF, without copying it out first (io.Copy
// uses it).
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		select {
		case <-c.closed:
			return total, errConnClosed
		default:
		}
		bufs, start, err := c.rxq.popAll(c.rdl, c.closed)
		for i, b := range bufs {
			n, werr := w.Write(b)
			total += int64(n)
			c.rxq.consume(start, n)
			if werr != nil {
				// What w did not take goes back, for the next Read or WriteTo.
				rest := append([][]byte{b[n:]}, bufs[i+1:]...)
				c.rxq.giveBack(start, rest)
				return total, werr
			}
		}
		c.poke()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite sends our DATA_FIN after the data written so far (half-close).
func (c *Conn) CloseWrite() error {
	c.txq.finish(errWriteClosed)
	c.send(opCloseWrite)
	return nil
}

// Close closes the connection: DATA_FIN after pending data, then the subflows once the close
// completes (in the background, as TCP lingers). With unread data, or after SetLinger(0), it
// aborts with MP_FASTCLOSE instead, as the kernel does.
func (c *Conn) Close() error {
	first := false
	c.userClosed.Store(true)
	c.closeMu.Do(func() {
		close(c.closed)
		first = true
	})
	if !first {
		return errConnClosed
	}
	c.txq.finish(errConnClosed)
	if c.rxq.len() > 0 || c.abortOnClose.Load() {
		c.send(opAbort)
	} else {
		c.send(opClose)
	}
	return nil
}

// SetLinger(0) makes Close abort the connection with MP_FASTCLOSE, as SO_LINGER 0 makes TCP's
// close send a reset. Other values keep the graceful close.
func (c *Conn) SetLinger(sec int) error {
	c.abortOnClose.Store(sec == 0)
	return nil
}

// Reset resets the connection's subflows with an MP_TCPRST carrying reason (§3.6), without
// MP_FASTCLOSE: the peer learns why its subflow ended.
func (c *Conn) Reset(reason uint8) error {
	c.rstReason.Store(uint32(reason))
	c.closeMu.Do(func() { close(c.closed) })
	c.send(opReset)
	return nil
}

// Abort resets the connection at once with MP_FASTCLOSE.
func (c *Conn) Abort() error {
	c.closeMu.Do(func() { close(c.closed) })
	c.send(opAbort)
	return nil
}

func (c *Conn) send(op ctlOp) {
	c.wake()
	select {
	case c.ctl <- op:
		c.wake()
	case <-c.done:
	}
}

// MPTCP reports whether the connection uses MPTCP (true) or fell back to plain TCP.
func (c *Conn) MPTCP() bool { return c.mptcp.Load() }

// Token returns our token for the connection.
func (c *Conn) Token() uint32 { return c.token }

func (c *Conn) LocalAddr() net.Addr  { return c.laddr }
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}
func (c *Conn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// Err returns the error that ended the connection, if any.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// closedErr is what sending on a closed connection returns: the failure that ended it (the
// peer's MP_FASTCLOSE, a reset) unless the application closed it.
func (c *Conn) closedErr() error {
	if err := c.Err(); err != nil && err != errConnClosed && !c.userClosed.Load() {
		return err
	}
	return errConnClosed
}

// abort ends the connection from outside its goroutine (stack shutdown).
func (c *Conn) abort(err error, fastclose bool) {
	c.closeMu.Do(func() { close(c.closed) })
	if fastclose {
		c.send(opAbort)
		return
	}
	c.fail(err)
	c.poke() // its goroutine sees the error and tears down now, not at its next tick
}

func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	c.rxq.finish(err)
	c.txq.finish(err)
}

// run is the connection's goroutine. Besides what the channels bring, it runs its jobs at
// their deadlines on one timer (timers.go).
//
// It runs while the connection has work: idle for runLinger with nothing due (an idle
// connection arms no timer), it ends, and the next sender starts it again (wake). It ends the
// connection (closing done) once and for all at teardown.
func (c *Conn) run() {
	timer := &c.rs.timer
	if !c.rs.started {
		c.rs.started = true
		c.st.startedAt = time.Now()
		for _, ev := range c.early {
			c.handleEvent(ev)
		}
		c.early = nil
		if c.server && c.mptcp.Load() {
			// A client counts the connection fully established at our first DSS (RFC 8684
			// §3.1): the kernel's opens its subflows only then. Do not wait for data to send it.
			c.sendACK(c.subs[0])
		}
	}
	ended := func() {
		timer.stop()
		close(c.done)
	}
	// Each round settles what the last wake-up (or the start) changed, then waits for the next.
	for {
		c.woken.Store(false)
		if err := c.lostEvents(); err != nil {
			c.resetSelf(err)
			ended()
			return
		}
		if c.Err() != nil {
			c.teardown(c.st.resetOnErr)
			ended()
			return
		}
		c.releaseRx()
		c.publishAck()
		c.publishCC()
		c.pumpTx()
		c.checkFin()
		c.checkEstablished(false)
		if c.st.appClosed && c.closeDone() {
			c.teardown(false)
			ended()
			return
		}
		var rxIn chan *rxChunk
		if c.rxq.len() < rxLimit && !c.st.rcv.eof {
			rxIn = c.rxCh
		}
		now := time.Now()
		at := c.nextDeadline(now)
		idle := at.IsZero()
		if idle {
			at = now.Add(runLinger)
		}
		timer.set(at)
		select {
		case <-c.evq.wake:
			if !c.takeEvents(&c.rs.evs) {
				ended()
				return
			}
		case ch := <-rxIn:
			if !c.takeRx(*ch) {
				ended()
				return
			}
		case d := <-c.txDoneCh:
			c.handleTxDone(d)
		case j := <-c.joinCh:
			c.attachSubflow(*j)
		case op := <-c.ctl:
			if c.handleCtl(op) {
				ended()
				return
			}
		case <-c.kick:
		case r := <-c.infoCh:
			r <- c.info()
		case f := <-c.cmdCh:
			f()
		case <-timer.c():
			timer.fired()
			if idle {
				// A select picks at random among ready cases: what came while the timer
				// was due too (the loop held off that long) is taken before the loop ends.
				got, exit := c.idleCheck(rxIn)
				if exit {
					ended()
					return
				}
				if !got {
					// Idle: the event buffers go (a connection idle for long holds none).
					c.rs.evs = nil
					c.evq.trim()
					c.trimIdle()
					if c.park() {
						return
					}
				}
				continue
			}
			c.onTimer(time.Now())
		}
	}
}

// takeRx handles bytes a subflow read; false when the connection was reset because events
// were lost. The datapath reports a segment's mapping before its bytes can be read: the events
// queued meanwhile go first, so the bytes find their mapping and count towards rxLimit at once
// rather than being held while more are read.
func (c *Conn) takeRx(ch rxChunk) bool {
	select {
	case <-c.evq.wake:
		if !c.takeEvents(&c.rs.evs) {
			return false
		}
	default:
	}
	c.handleRx(ch)
	c.ackIfIdle()
	return true
}

// idleCheck takes one thing queued for the loop, without waiting: got is false when nothing
// was; exit when the connection ended with it.
func (c *Conn) idleCheck(rxIn chan *rxChunk) (got, exit bool) {
	select {
	case <-c.evq.wake:
		return true, !c.takeEvents(&c.rs.evs)
	case ch := <-rxIn:
		return true, !c.takeRx(*ch)
	case d := <-c.txDoneCh:
		c.handleTxDone(d)
	case j := <-c.joinCh:
		c.attachSubflow(*j)
	case op := <-c.ctl:
		return true, c.handleCtl(op)
	case <-c.kick:
	case r := <-c.infoCh:
		r <- c.info()
	case f := <-c.cmdCh:
		f()
	default:
		return false, false
	}
	return true, false
}

// takeEvents handles the datapath's queued events; false when the connection was reset
// because some were lost.
func (c *Conn) takeEvents(evs *[]datapath.Event) bool {
	var overflow bool
	*evs, overflow = c.evq.take(*evs)
	if err := c.eventsMissed(overflow); err != nil {
		c.resetSelf(err)
		return false
	}
	for _, ev := range *evs {
		c.handleEvent(ev)
	}
	clear(*evs)
	return true
}

// fullyEstablishedWait is how long a client waits for the server's first DSS before it opens
// subflows anyway: a kernel server sends none until it has something to say, and registered
// the token with the third ACK already. A join refused meanwhile is retried (pm).
const fullyEstablishedWait = 200 * time.Millisecond

// checkEstablished tells the path manager once the connection is fully established (RFC 8684
// §3.1): for a server at once (it has the client's key from the third ACK), for a client at the
// server's first DSS, which proves its third ACK arrived. A client that joins earlier races the
// server's registration of its token and gets a plain SYN/ACK.
// An option the peer sends only once it has our key (ADD_ADDR, REMOVE_ADDR) proves it too.
func (c *Conn) checkEstablished(proof bool) {
	if c.pm == nil || c.st.pmStarted || !c.mptcp.Load() {
		return
	}
	if !c.server && !proof && atomic.LoadUint32(&c.shm.St.PeerDss) == 0 && time.Since(c.st.startedAt) < fullyEstablishedWait {
		return
	}
	c.st.pmStarted = true
	c.emitEstablished()
	c.toPM(func(p PathManager) { p.Established(c) })
}

func (c *Conn) closeDone() bool {
	if c.st.fin.acked && (c.st.rcv.eof || len(c.subs) == 0) {
		return true
	}
	return time.Now().After(c.st.lingerAt)
}

func (c *Conn) handleCtl(op ctlOp) (exit bool) {
	switch op {
	case opCloseWrite:
		c.st.wrClosed = true
	case opClose:
		c.st.wrClosed = true
		c.st.appClosed = true
		c.st.lingerAt = time.Now().Add(lingerTime)
		c.rxq.finish(errConnClosed)
	case opAbort:
		c.fail(errConnClosed)
		c.fastclose()
		return true
	case opReset:
		c.fail(errConnClosed)
		if c.mptcp.Load() {
			for _, sf := range c.subs {
				sf.shm.Ctl.RstReason = uint8(c.rstReason.Load())
				sf.shm.Ctl.RstFlags = datapath.SubRstRequest
			}
		}
		c.teardown(true)
		return true
	}
	return false
}

// resetSelf aborts a connection that the stack can no longer serve correctly (it fell behind
// its events, or some were lost): MP_FASTCLOSE tells the peer that nothing more is delivered,
// and the application gets err.
func (c *Conn) resetSelf(err error) {
	c.stack.log.Warn("connection reset", "token", c.token, "err", err)
	c.fail(err)
	c.fastclose()
}

// fastclose aborts with MP_FASTCLOSE on a reset of every subflow (§3.5).
func (c *Conn) fastclose() {
	if c.mptcp.Load() {
		atomicOr32(&c.shm.Ctl.Flags, datapath.ConnFastclose)
		c.stack.stats.Fastclose.Add(1)
	}
	c.teardown(true)
}

// teardown closes the subflows and returns the slots.
func (c *Conn) teardown(abort bool) {
	c.closeMu.Do(func() { close(c.closed) })
	c.fail(errConnClosed)
	c.emitClosed(c.Err())
	for _, sf := range c.subs {
		c.plane.closeSubflow(sf, abort)
	}
	c.subs = nil
	c.checkDraining(true)
	c.st.fin.at, c.st.pumpAt = time.Time{}, time.Time{}
	c.pmClosed()
	c.plane.releaseConn(c)
	c.ns = nil
	// Joins still being dialled or accepted end here.
	for {
		select {
		case j := <-c.joinCh:
			c.refuseJoin(*j, RstUnspecified)
		default:
			return
		}
	}
}

func atomicOr32(p *uint32, v uint32) { atomic.OrUint32(p, v) }

func atomicAdd32(p *uint32, v uint32) { atomic.AddUint32(p, v) }
