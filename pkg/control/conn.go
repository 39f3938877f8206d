package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// Buffer limits of one connection.
const (
	rxLimit      = 4 << 20 // in-order bytes waiting for Read before we stop reading subflows
	txLimit      = 1 << 20 // bytes accepted from Write before it blocks
	sendLimit    = 4 << 20 // bytes kept until DATA_ACKed
	writerQueued = 1 << 20 // bytes handed to a subflow's writer and not yet written
	lingerTime   = 30 * time.Second
)

var (
	errConnClosed  = net.ErrClosed
	errWriteClosed = errors.New("mptcp: write after CloseWrite")
	// ErrFastclose is the error of a connection the peer aborted with MP_FASTCLOSE.
	ErrFastclose = fmt.Errorf("mptcp: connection closed by peer (MP_FASTCLOSE): %w", syscall.ECONNRESET)
	// ErrNoDataFin is the error of a connection whose only subflow ended before the peer's DATA_FIN.
	ErrNoDataFin = errors.New("mptcp: subflow closed before the peer's DATA_FIN")
)

// ResetError is the error of a connection whose subflow was reset with an MP_TCPRST reason.
type ResetError struct {
	Reason    uint8
	Transient bool
	Err       error
}

func (e *ResetError) Error() string {
	return fmt.Sprintf("mptcp: subflow reset by peer, MP_TCPRST reason %d (transient %t): %v", e.Reason, e.Transient, e.Err)
}

func (e *ResetError) Unwrap() error { return e.Err }

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
	laddr        net.Addr
	raddr        net.Addr
	mptcp        atomic.Bool
	abortOnClose atomic.Bool
	rstReason    atomic.Uint32
	shm          *datapath.Conn
	subs         []*subflow // owned by run once it started
	server       bool       // we accepted the connection
	sched        Scheduler
	ns           *nsRef // network namespace for join subflows' sockets
	pm           PathManager
	joinCh       chan joinResult

	rxq      *byteQueue
	txq      *byteQueue
	rdl, wdl *deadline

	evq      *evQueue
	early    []datapath.Event // events that came before the Conn was registered; run handles them first
	rxCh     chan rxChunk
	txDoneCh chan txDone
	kick     chan struct{}
	ctl      chan ctlOp
	infoCh   chan chan ConnInfo
	cmdCh    chan func()
	pmq      struct { // calls to the path manager, in order, made by pmLoop
		sync.Mutex
		q    []func(PathManager)
		last bool // Closed is queued: the loop ends after it
		wake chan struct{}
	}
	done       chan struct{} // closed when run returned
	closed     chan struct{} // closed by Close
	closeMu    sync.Once
	userClosed atomic.Bool // the application called Close
	errMu      sync.Mutex
	err        error

	st connState // owned by run
}

type ctlOp int

const (
	opCloseWrite ctlOp = iota
	opClose
	opAbort
	opReset // resetSubflows: reset with MP_TCPRST (reason in Conn.rstReason)
)

// connState is the protocol state, owned by the connection's goroutine.
type connState struct {
	rx         reasm
	rxFin      bool
	rxFinDSN   seqnum.DSN
	rxEOF      bool
	rxFallback bool       // infinite mapping: the subflow's bytes continue the stream in order
	rxPushed   uint64     // bytes handed to rxq
	rxPooled   []pooledRx // pool buffers waiting for the application to consume their bytes

	sndUna  seqnum.DSN  // the peer's DATA_ACK
	sndNxt  seqnum.DSN  // next DSN to hand to a writer
	sndEnd  seqnum.DSN  // one past the last byte taken from Write
	sendBuf []sendPiece // taken from Write, not yet DATA_ACKed, by DSN
	unsent  int         // index in sendBuf of the first chunk not handed to a writer
	unsentN int         // bytes of sendBuf[unsent] already handed over
	// Mappings handed to writers and not yet reported written, in the order handed over: the
	// buffers they point into are not reused until then.
	unwritten []unwritten
	freedLate []sendPiece // acknowledged pieces not yet back in the pool (poolWritten)

	wrClosed  bool
	finSet    bool
	finAcked  bool
	finDSN    seqnum.DSN
	finTimer  *time.Timer
	finRTO    time.Duration
	ackArmed  bool // the DATA_ACK doorbell is rung
	appClosed bool
	lingerAt  time.Time
	lastRst   *ResetError
	events    [16]uint64 // events handled, by type
	// The connection's error is the peer's protocol violation: its subflows end with a reset.
	resetOnErr bool

	reinject    []dsnRange // data to send again, from failed or stale subflows
	dataRtx     dataRtx    // the connection-level retransmission timer
	windowWaits uint64
	pmStarted   bool // the path manager was told the connection is fully established
	startedAt   time.Time
	draining    []*subflow                  // detached subflows read to their end (dropSubflow)
	lastRxSub   *subflow                    // the subflow that last brought data: our ACKs go back on it
	pumpTimer   *time.Timer                 // re-pump when no subflow had room
	pendingSub  map[uint32][]datapath.Event // events of subflows not attached yet
	announces   map[uint8]*announce         // our ADD_ADDRs awaiting their echo
}

// unwritten is a mapping a subflow's writer has not reported written yet.
type unwritten struct {
	sf *subflow
	r  dsnRange
}

// dsnRange is a range of the data sequence space.
type dsnRange struct {
	dsn seqnum.DSN
	n   int
}

func (r dsnRange) end() seqnum.DSN { return r.dsn.Add(uint64(r.n)) }

// contains reports whether dsn falls within the range.
func (r dsnRange) contains(dsn seqnum.DSN) bool { return !dsn.LessThan(r.dsn) && dsn.LessThan(r.end()) }

// overlaps reports whether the two ranges share a DSN.
func (r dsnRange) overlaps(o dsnRange) bool {
	return r.dsn.LessThan(o.end()) && o.dsn.LessThan(r.end())
}

func newConn(s *Stack) *Conn {
	return &Conn{
		stack:    s,
		rxq:      newByteQueue(rxLimit),
		txq:      newByteQueue(txLimit),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
		evq:      newEvQueue(),
		rxCh:     make(chan rxChunk, 16),
		txDoneCh: make(chan txDone, 16),
		kick:     make(chan struct{}, 1),
		ctl:      make(chan ctlOp, 4),
		infoCh:   make(chan chan ConnInfo),
		cmdCh:    make(chan func()),
		joinCh:   make(chan joinResult, 4),
		done:     make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// start sets the data-level state once keys are known and starts the goroutines. It fails
// when the stack is closing: the connection is then torn down.
func (c *Conn) start() error {
	localIDSN := mpcrypto.IDSN(c.localKey)
	remoteIDSN := mpcrypto.IDSN(c.remoteKey)
	c.st.sndUna = seqnum.DSN(localIDSN + 1)
	c.st.sndNxt = c.st.sndUna
	c.st.sndEnd = c.st.sndUna
	c.st.rx.rcvNxt = seqnum.DSN(remoteIDSN + 1)
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
	if !c.stack.goroutine(sf.readLoop, sf.writeLoop, c.run) {
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
func (c *Conn) deliver(ev datapath.Event) bool { return c.evq.put(ev) }

func (c *Conn) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
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
		return 0, errConnClosed
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
	for {
		select {
		case <-c.closed:
			return total, errConnClosed
		default:
		}
		var buf []byte
		if size >= bufSize {
			buf = getBuf()
		} else {
			buf = make([]byte, size)
		}
		n, err := r.Read(buf)
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

// MP_TCPRST reasons (RFC 8684 §3.6).
const (
	RstUnspecified     = 0
	RstMPTCPError      = 1
	RstLackOfResources = 2
	RstAdminProhibited = 3
	RstTooMuchData     = 4
	RstPerformance     = 5
	RstMiddlebox       = 6
)

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
	select {
	case c.ctl <- op:
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

// ConnInfo is a snapshot of a connection's state.
type ConnInfo struct {
	Token       uint32
	MPTCP       bool
	Server      bool
	Local       string
	Remote      string
	Scheduler   string
	RcvNxt      uint64 // data level: next DSN expected
	PeerFin     bool
	PeerFinDSN  uint64
	RxEOF       bool
	Held        int    // bytes read from subflows waiting for their mapping
	RxOOO       int    // out-of-order bytes
	RxDup       uint64 // bytes received twice (retransmitted or reinjected)
	RxReady     int    // bytes waiting for Read
	SndUna      uint64
	SndNxt      uint64
	SndEnd      uint64
	FinSet      bool
	FinAcked    bool
	DatapathAck uint64 // the datapath's data-level ACK (rx_ack)
	PeerDataAck uint64
	PeerWndEnd  uint64     // the peer's window end
	WindowWaits uint64     // times new data waited for the peer's window
	Reinject    int        // bytes waiting to be sent again
	Events      [16]uint64 // datapath events handled, by type
	Subflows    []SubflowInfo
}

// SubflowInfo describes one subflow.
type SubflowInfo struct {
	Slot       uint32
	Local      string
	Remote     string
	LocalID    uint8
	RemoteID   uint8
	Backup     bool // ours
	PeerBackup bool // the peer's (MP_JOIN B flag or MP_PRIO)
	Ready      bool // may carry data
	Stale      bool
	Lossy      bool // in loss recovery holding the oldest data: its data went elsewhere too
	SRTT       time.Duration
	Cwnd       uint32
	BytesSent  uint64 // written to the socket
	BytesRecv  uint64 // read from the socket
	Retrans    uint32
	Held       int    // bytes read whose mapping has not come
	HeldAt     uint32 // relative SSN of the first held byte
	Mapped     uint32 // relative SSN up to which bytes were mapped
	RxMaps     string // the peer's mappings not fully read: ssn+len>dsn
}

// Info returns a snapshot of the connection's state; ok is false once it has ended.
func (c *Conn) Info() (ConnInfo, bool) {
	r := make(chan ConnInfo, 1)
	select {
	case c.infoCh <- r:
		return <-r, true
	case <-c.done:
		return ConnInfo{}, false
	}
}

func (c *Conn) info() ConnInfo {
	st := &c.st
	in := ConnInfo{
		Token: c.token, MPTCP: c.mptcp.Load(), Server: c.server, Local: addrString(c.laddr), Remote: addrString(c.raddr),
		Scheduler: c.sched.Name(), RcvNxt: uint64(st.rx.rcvNxt), PeerFin: st.rxFin,
		PeerFinDSN: uint64(st.rxFinDSN), RxEOF: st.rxEOF, RxOOO: st.rx.nOOO, RxDup: st.rx.dup,
		RxReady: c.rxq.len(), SndUna: uint64(st.sndUna), SndNxt: uint64(st.sndNxt), SndEnd: uint64(st.sndEnd),
		FinSet: st.finSet, FinAcked: st.finAcked,
		DatapathAck: atomic.LoadUint64(&c.shm.St.RxAck), PeerDataAck: atomic.LoadUint64(&c.shm.St.PeerDataAck),
		PeerWndEnd: atomic.LoadUint64(&c.shm.St.PeerWndEnd), WindowWaits: st.windowWaits,
		Events: st.events,
	}
	for _, r := range st.reinject {
		in.Reinject += r.n
	}
	for _, sf := range c.subs {
		for _, h := range sf.rxHeld {
			in.Held += len(h.data)
		}
		in.Subflows = append(in.Subflows, sf.info())
	}
	return in
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
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

// run is the connection's goroutine.
func (c *Conn) run() {
	defer close(c.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var evs []datapath.Event
	c.st.finRTO = 200 * time.Millisecond
	c.st.startedAt = time.Now()
	if c.pm != nil {
		c.pmq.wake = make(chan struct{}, 1)
		if !c.stack.goroutine(c.pmLoop) {
			c.pm = nil // the stack is closing: the path manager is told nothing more
		}
	}
	for _, ev := range c.early {
		c.handleEvent(ev)
	}
	c.early = nil
	if c.server && c.mptcp.Load() {
		// A client counts the connection fully established at our first DSS (RFC 8684
		// §3.1): the kernel's opens its subflows only then. Do not wait for data to send it.
		c.sendACK(c.subs[0])
	}
	for {
		var rxIn chan rxChunk
		if c.rxq.len() < rxLimit && !c.st.rxEOF {
			rxIn = c.rxCh
		}
		var finC, pumpC <-chan time.Time
		if c.st.finTimer != nil {
			finC = c.st.finTimer.C
		}
		if c.st.pumpTimer != nil {
			pumpC = c.st.pumpTimer.C
		}
		select {
		case <-c.evq.wake:
			var overflow bool
			evs, overflow = c.evq.take(evs)
			if err := c.eventsMissed(overflow); err != nil {
				c.resetSelf(err)
				return
			}
			for _, ev := range evs {
				c.handleEvent(ev)
			}
			clear(evs)
		case ch := <-rxIn:
			c.handleRx(ch)
			c.ackIfIdle()
		case d := <-c.txDoneCh:
			c.handleTxDone(d)
		case j := <-c.joinCh:
			c.attachSubflow(j)
		case op := <-c.ctl:
			if c.handleCtl(op) {
				return
			}
		case <-c.kick:
		case r := <-c.infoCh:
			r <- c.info()
		case f := <-c.cmdCh:
			f()
		case <-finC:
			c.st.finTimer = nil
			c.retransmitFin()
		case <-pumpC:
			c.st.pumpTimer = nil
		case <-tick.C:
			if err := c.eventsMissed(false); err != nil {
				c.resetSelf(err)
				return
			}
			c.checkDraining(false)
			c.checkSubflows()
			c.checkDataAck(time.Now())
			c.reportNoMapping()
			c.ackIfIdle()
			c.retransmitAnnounces()
		}
		if c.Err() != nil {
			c.teardown(c.st.resetOnErr)
			return
		}
		c.releaseRx()
		c.publishAck()
		c.pumpTx()
		c.checkFin()
		c.checkEstablished(false)
		if c.st.appClosed && c.closeDone() {
			c.teardown(false)
			return
		}
	}
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
	if c.st.finAcked && (c.st.rxEOF || len(c.subs) == 0) {
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

// eventsMissed returns the error to reset the connection with when it missed events: the
// datapath lost one (the ring buffer was full), or its queue refused one (overflow), counted.
func (c *Conn) eventsMissed(overflow bool) error {
	switch {
	case c.mptcp.Load() && atomic.LoadUint32(&c.shm.St.EvLost) != 0:
		c.stack.stats.EventLostReset.Add(1)
		return errEventLost
	case overflow:
		c.stack.stats.EventOverflowReset.Add(1)
		return errEventOverflow
	}
	return nil
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
		sf.shutdown(abort)
	}
	c.subs = nil
	c.checkDraining(true)
	for _, t := range []*time.Timer{c.st.finTimer, c.st.pumpTimer} {
		if t != nil {
			t.Stop()
		}
	}
	c.pmClosed()
	c.stack.removeToken(c.token)
	c.stack.releaseConn(c.slot, c.token)
	c.stack.releaseNetns(c.ns)
	c.ns = nil
	// Joins still being dialled or accepted end here.
	for {
		select {
		case j := <-c.joinCh:
			c.refuseJoin(j, RstUnspecified)
		default:
			return
		}
	}
}

// subBySlot returns the attached (or draining) subflow of a subflow slot.
func (c *Conn) subBySlot(slot uint32) *subflow {
	for _, sf := range c.subs {
		if sf.slot == slot {
			return sf
		}
	}
	for _, sf := range c.st.draining {
		if sf.slot == slot {
			return sf
		}
	}
	return nil
}

// drainTimeout bounds how long a closed subflow is read for the bytes its socket holds.
const drainTimeout = 2 * time.Second

// finishSubflow closes a detached subflow's socket with a reset and frees its slot: what it
// had not sent went again on other subflows, and unsent bytes leaving without a mapping after
// the datapath let the socket go would make the peer fall back.
func (c *Conn) finishSubflow(sf *subflow) {
	sf.shutdown(true)
	c.stack.releaseSub(sf.slot)
}

// checkDraining finishes the draining subflows that are read to their end, or out of time.
func (c *Conn) checkDraining(all bool) {
	now := time.Now()
	keep := c.st.draining[:0]
	for _, sf := range c.st.draining {
		if all || (sf.eof && len(sf.rxHeld) == 0) || now.After(sf.draining) {
			if len(sf.rxHeld) > 0 {
				c.stack.log.Warn("closed subflow: bytes without a mapping dropped", "token", c.token, "slot", sf.slot, "chunks", len(sf.rxHeld))
			}
			c.finishSubflow(sf)
			continue
		}
		keep = append(keep, sf)
	}
	clear(c.st.draining[len(keep):])
	c.st.draining = keep
}

// ---- receiving ----

func (c *Conn) handleEvent(ev datapath.Event) {
	if ev.Type < uint32(len(c.st.events)) {
		c.st.events[ev.Type]++
	}
	switch ev.Type {
	case datapath.EvDataFin:
		c.peerFin(seqnum.DSN(ev.A))
		return
	case datapath.EvDataAck:
		c.st.ackArmed = false
		return
	case datapath.EvFastclose:
		c.stack.stats.Fastclose.Add(1)
		c.fail(ErrFastclose)
		return
	}
	sf := c.subBySlot(ev.Sub)
	if sf == nil {
		// A subflow whose socket has not reached us yet (a join being dialled or accepted):
		// its events wait for it.
		if q := c.st.pendingSub[ev.Sub]; len(q) < 1024 {
			c.st.pendingSub[ev.Sub] = append(q, ev)
		}
		return
	}
	switch ev.Type {
	case datapath.EvRxMap:
		if ev.C&datapath.RxMapInfinite != 0 {
			c.stack.stats.InfiniteMapRx.Add(1)
			c.startRxFallback(sf)
			return
		}
		fin := ev.C&datapath.RxMapFin != 0
		n := uint32(ev.C & 0xffff)
		if n == 0 {
			// A first data whose MP_CAPABLE maps no bytes is an infinite mapping, as the
			// kernel reads it (§3.1, §3.7): the peer fell back.
			c.stack.stats.InfiniteMapRx.Add(1)
			c.startRxFallback(sf)
			return
		}
		if fin {
			n--
		}
		dsn := seqnum.DSN(ev.A)
		if ev.C&datapath.RxMapMPC != 0 {
			dsn = seqnum.DSN(c.shm.Ctl.PeerIdsn + 1)
		}
		if !c.acceptRxMap(sf, rxMap{dsn: dsn, ssn: seqnum.Value(ev.B), len: n, fin: fin}) {
			return
		}
		c.processHeld(sf)
	case datapath.EvTCPRst:
		sf.lastRst = &ResetError{Reason: uint8(ev.A), Transient: ev.B&1 != 0}
	case datapath.EvJoinAcked:
		sf.ready = true
	case datapath.EvOption:
		c.handleOption(sf, ev.Raw[:min(int(ev.RawLen), len(ev.Raw))])
	case datapath.EvMPFail:
		c.stack.log.Warn("peer sent MP_FAIL; continuing as plain TCP", "token", c.token, "dsn", ev.A)
		c.startRxFallback(sf)
		c.startTxFallback()
	case datapath.EvUnmapped:
		c.stack.log.Warn("data without a mapping: MP_FAIL and fall back (RFC 8684 §3.7)", "token", c.token)
		c.startRxFallback(sf)
		c.startTxFallback()
	}
}

// acceptRxMap stores a peer mapping after checking it against our windows, as the kernel does:
// one naming subflow bytes that cannot be in the subflow's receive window is dropped
// (DSSNoMatchTCP); one whose data lies beyond the connection's receive window is kept so that
// its bytes are recognised, but they are dropped when read (NoDSSInWindow), and the peer sends
// them again (we DATA_ACK only what the application took). It reports whether the subflow can
// go on.
func (c *Conn) acceptRxMap(sf *subflow, m rxMap) bool {
	if m.end().LessThanEq(sf.mapped) {
		return true // bytes read already: a repeat
	}
	win := c.stack.rxWindow
	if sf.mapped.Add(uint32(2*win)).LessThan(m.ssn) || m.ssn.Add(uint32(2*win)).LessThan(sf.mapped) {
		c.stack.stats.DSSNoMatchTCP.Add(1)
		return true
	}
	if c.st.rx.rcvNxt.Add(uint64(win)).LessThan(m.dsn.Add(uint64(m.len))) {
		c.stack.stats.NoDSSInWindow.Add(1)
		m.drop, m.fin = true, false
	}
	if !sf.rxMaps.add(m) {
		c.stack.stats.RxMapOverflow.Add(1)
		c.stack.log.Warn("subflow reset: too many mappings held", "token", c.token, "slot", sf.slot, "mappings", len(sf.rxMaps))
		c.resetSubflow(sf, RstMPTCPError, errors.New("mptcp: peer sent too many mappings ahead of its data"))
		return false
	}
	return true
}

func (c *Conn) handleRx(ch rxChunk) {
	sf := ch.sf
	if sf.gone {
		return
	}
	if !sf.draining.IsZero() {
		if ch.err != nil {
			sf.eof = true
			c.checkDraining(false)
			return
		}
	} else if ch.err != nil {
		c.subflowEnded(sf, ch.err)
		return
	}
	sf.bytesRecv += uint64(len(ch.data))
	c.st.lastRxSub = sf
	sf.rxHeld = append(sf.rxHeld, ch)
	sf.heldBytes += len(ch.data)
	c.processHeld(sf)
	if sf.heldBytes > rxLimit+c.stack.rxWindow && !sf.gone {
		// Bytes no mapping covers, more than a receive window of them: the peer maps nothing
		// it sends (in-order data without one already made us fall back, §3.7).
		c.stack.log.Warn("subflow reset: data without mappings", "token", c.token, "slot", sf.slot, "held", sf.heldBytes)
		c.resetSubflow(sf, RstMPTCPError, errors.New("mptcp: peer data without mappings"))
	}
}

// processHeld maps held bytes to DSNs with the peer's mappings and reassembles them; bytes
// whose mapping has not arrived wait for it.
func (c *Conn) processHeld(sf *subflow) {
	for len(sf.rxHeld) > 0 {
		ch := &sf.rxHeld[0]
		for len(ch.data) > 0 {
			m, ok := sf.rxMaps.find(ch.off)
			if !ok {
				if !c.st.rxFallback {
					c.deliverRx()
					return
				}
				// After an infinite mapping the bytes continue where the last mapping ended.
				m = rxMap{dsn: sf.lastEnd.dsn.Add(uint64(ch.off.Sub(sf.lastEnd.ssn))), ssn: ch.off, len: uint32(len(ch.data))}
				// Where the last mapping left them beyond the receive window (one the peer
				// mapped there, then fell back), they would never become in-order: held,
				// every later byte of the subflow would grow reassembly without bound.
				if c.st.rx.rcvNxt.Add(uint64(c.stack.rxWindow)).LessThan(m.dsn.Add(uint64(m.len))) {
					c.stack.stats.NoDSSInWindow.Add(1)
					m.drop = true
				}
			}
			n := min(uint32(len(ch.data)), m.end().Sub(ch.off))
			dsn := m.dsn.Add(uint64(ch.off.Sub(m.ssn)))
			dup := c.st.rx.dup
			if m.drop {
				c.st.rx.dropped += uint64(n)
			} else {
				c.st.rx.insert(dsn, ch.data[:n])
				if e := dsn.Add(uint64(n)); !ch.ended || ch.end.LessThan(e) {
					ch.end, ch.ended = e, true
				}
			}
			if c.st.rx.dup != dup {
				c.stack.log.Debug("bytes received twice", "token", c.token, "slot", sf.slot, "off", uint32(ch.off), "n", n,
					"map", fmt.Sprintf("%d+%d>%d", uint32(m.ssn), m.len, uint64(m.dsn)), "dup", c.st.rx.dup-dup, "rcvnxt", uint64(c.st.rx.rcvNxt))
			}
			ch.data = ch.data[n:]
			sf.heldBytes -= int(n)
			ch.off = ch.off.Add(n)
			sf.mapped = ch.off
			sf.lastEnd.ssn, sf.lastEnd.dsn = ch.off, dsn.Add(uint64(n))
			if ch.off == m.end() && m.fin {
				c.peerFin(m.dsn.Add(uint64(m.len)))
			}
		}
		if ch.pooled != nil && ch.ended {
			c.st.rxPooled = append(c.st.rxPooled, pooledRx{ch.pooled, ch.end})
		}
		sf.rxHeld[0] = rxChunk{}
		sf.rxHeld = sf.rxHeld[1:]
	}
	sf.rxMaps.prune(sf.mapped)
	c.deliverRx()
}

// pooledRx is a pool buffer whose bytes all lie below end in the data sequence space.
type pooledRx struct {
	buf *rxBuf
	end seqnum.DSN
}

// releaseRx returns to the pool the receive buffers whose bytes the application has consumed.
// Reassembly and the receive queue keep slices of them until then; the application consumes
// in DSN order, so a buffer whose highest DSN it has passed holds nothing anyone still reads.
func (c *Conn) releaseRx() {
	st := &c.st
	if len(st.rxPooled) == 0 {
		return
	}
	unconsumed := st.rxPushed - c.rxq.consumedBytes()
	consumed := st.rx.rcvNxt - seqnum.DSN(uint64(st.rx.nReady)+unconsumed)
	keep := st.rxPooled[:0]
	for _, p := range st.rxPooled {
		if consumed.LessThan(p.end) {
			keep = append(keep, p)
		} else {
			putRxBuf(p.buf)
		}
	}
	clear(st.rxPooled[len(keep):])
	st.rxPooled = keep
}

// deliverRx hands in-order bytes to Read and tells the datapath how far we have received.
func (c *Conn) deliverRx() {
	r := &c.st.rx
	for _, b := range r.ready {
		c.rxq.push(b)
		c.st.rxPushed += uint64(len(b))
	}
	clear(r.ready)
	r.ready = r.ready[:0]
	r.nReady = 0
	if c.st.rxFin && r.rcvNxt == c.st.rxFinDSN && !c.st.rxEOF {
		c.st.rxEOF = true
		c.rxq.finish(io.EOF)
	}
	c.publishAck()
}

// consumed is one past the last byte the application (or the relay's backend socket) has
// taken from the receive queue.
func (c *Conn) consumed() seqnum.DSN {
	st := &c.st
	unconsumed := st.rxPushed - c.rxq.consumedBytes()
	return st.rx.rcvNxt - seqnum.DSN(uint64(st.rx.nReady)+unconsumed)
}

// publishAck sets the DATA_ACK the datapath writes: what the application has taken, and the
// peer's DATA_FIN once it has taken everything before it. Bytes reassembled but not yet taken
// are not acknowledged: acknowledged data is never lost while the connection lives, whatever
// happens to this process's buffers, and the peer's window follows the application's pace.
func (c *Conn) publishAck() {
	if !c.mptcp.Load() {
		return
	}
	ack := c.consumed()
	fin := c.st.rxFin && c.st.rxEOF && ack == c.st.rxFinDSN
	if fin {
		ack++
	}
	if uint64(ack) == atomic.LoadUint64(&c.shm.Ctl.RcvNxt) {
		return
	}
	atomic.StoreUint64(&c.shm.Ctl.RcvNxt, uint64(ack))
	if fin && seqnum.DSN(atomic.LoadUint64(&c.shm.St.RxAck)).LessThan(ack) {
		c.sendACK(nil) // the datapath did not acknowledge the DATA_FIN on its own
		return
	}
	c.ackIfIdle()
}

// ackLag is how far our receive point may run ahead of the DATA_ACK we last sent before we send
// one of our own: the kernel ACKs a subflow's data before we read it, so without this the
// peer learns of what we received only with our next segment.
const ackLag = 256 << 10

// ackIfIdle sends a pure ACK when nothing more is waiting to be read and our receive point is
// ahead of the last DATA_ACK sent (or far ahead while data keeps coming).
func (c *Conn) ackIfIdle() {
	if !c.mptcp.Load() || len(c.subs) == 0 {
		return
	}
	// What the working subflows carried: a DATA_ACK written on a path that has died (the
	// segment built, then dropped) reached nobody.
	sent, found := seqnum.DSN(0), false
	for _, sf := range c.subs {
		if !sf.ready || sf.eof || sf.gone || sf.stale {
			continue
		}
		if a := seqnum.DSN(atomic.LoadUint64(&sf.shm.St.AckSent)); !found || sent.LessThan(a) {
			sent, found = a, true
		}
	}
	if !found {
		sent = seqnum.DSN(atomic.LoadUint64(&c.shm.St.AckSent))
	}
	rcv := seqnum.DSN(atomic.LoadUint64(&c.shm.Ctl.RcvNxt))
	if !sent.LessThan(rcv) {
		return
	}
	if len(c.rxCh) == 0 || rcv.Sub(sent) >= ackLag {
		sf := c.st.lastRxSub
		if sf != nil && (sf.gone || !sf.draining.IsZero()) {
			sf = nil
		}
		c.sendACK(sf)
	}
}

func (c *Conn) peerFin(dsn seqnum.DSN) {
	if c.st.rxFin {
		return
	}
	c.st.rxFin, c.st.rxFinDSN = true, dsn
	c.deliverRx()
}

// subflowEnded handles the end of a subflow's byte stream (FIN or error).
func (c *Conn) subflowEnded(sf *subflow, err error) {
	sf.eof = true
	last := len(c.subs) == 1
	if errors.Is(err, io.EOF) && !c.st.rxFin && atomic.LoadUint32(&c.shm.St.PeerFin) != 0 {
		// The DATA_FIN event may still be on its way; the datapath has it already.
		c.peerFin(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerFinDsn)))
	}
	if !last {
		// Other subflows carry on: what this one had in flight goes again on them.
		c.dropSubflow(sf, err)
		return
	}
	if errors.Is(err, io.EOF) {
		plain := !c.mptcp.Load() || c.st.rxFallback
		if plain {
			// Plain TCP: the peer's half-close. The subflow still carries our data.
			sf.halfClosed = true
		}
		if c.st.rxEOF {
			return
		}
		if plain {
			c.st.rxEOF = true
			c.rxq.finish(io.EOF)
			return
		}
		if c.st.rxFin {
			return // the remaining bytes are held for their mappings
		}
		c.fail(ErrNoDataFin)
		return
	}
	c.fail(c.resetError(sf, err))
}

// resetSubflow resets a subflow whose peer broke the protocol, with an MP_TCPRST reason
// (§3.6); with no other subflow left the connection ends with it.
func (c *Conn) resetSubflow(sf *subflow, reason uint8, err error) {
	if c.mptcp.Load() {
		sf.shm.Ctl.RstReason = reason
		sf.shm.Ctl.RstFlags = datapath.SubRstRequest
	}
	if len(c.subs) <= 1 {
		c.st.resetOnErr = true
		c.fail(&ResetError{Reason: reason, Err: err})
		return
	}
	// What it holds came from a peer we no longer trust with this subflow: not drained.
	sf.eof = true
	clear(sf.rxHeld)
	sf.rxHeld, sf.heldBytes = nil, 0
	c.dropSubflow(sf, err)
}

// dropSubflow detaches a failed or closed subflow and re-sends its unacknowledged data.
func (c *Conn) dropSubflow(sf *subflow, err error) {
	c.reinjectFrom(sf)
	for i, x := range c.subs {
		if x == sf {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	info := sf.info()
	if !sf.eof || len(sf.rxHeld) > 0 {
		// Bytes in its socket, or read and waiting for their mapping, are read and
		// reassembled before the socket goes: the peer need not send them again.
		sf.startDrain(drainTimeout)
		c.st.draining = append(c.st.draining, sf)
	} else {
		c.finishSubflow(sf)
	}
	c.stack.log.Debug("subflow closed", "token", c.token, "local", info.Local, "remote", info.Remote, "err", err)
	c.emitSub(EventSubClosed, sf, err)
	view := sf.pmView()
	c.toPM(func(p PathManager) { p.SubflowClosed(c, view, err) })
}

// resetError explains a subflow error with what the datapath saw on the reset: the peer's
// MP_FASTCLOSE or MP_TCPRST. The datapath state is read directly, as the event may still be
// on its way.
func (c *Conn) resetError(sf *subflow, err error) error {
	if c.mptcp.Load() {
		var st datapath.SkState
		var ok bool
		sf.raw.Control(func(fd uintptr) { st, ok, _ = c.stack.dp.State(int(fd)) })
		if ok && st.Flags&datapath.SubFastcloseRx != 0 {
			return ErrFastclose
		}
		if ok && st.Flags&datapath.SubRstRx != 0 && sf.lastRst == nil {
			sf.lastRst = &ResetError{Reason: st.RstReason}
		}
	}
	if sf.lastRst != nil {
		sf.lastRst.Err = err
		return sf.lastRst
	}
	return err
}

// startRxFallback continues reception as plain TCP on sf (§3.7).
func (c *Conn) startRxFallback(sf *subflow) {
	if c.st.rxFallback {
		return
	}
	c.st.rxFallback = true
	if sf.lastEnd.ssn == 0 {
		sf.lastEnd.ssn, sf.lastEnd.dsn = 1, c.st.rx.rcvNxt
	}
	c.processHeld(sf)
}

// startTxFallback sends MP_FAIL at the receive point, then stops writing MPTCP options.
func (c *Conn) startTxFallback() {
	if !c.mptcp.Load() {
		return
	}
	c.stack.stats.MPFailFallback.Add(1)
	c.shm.Ctl.MpFailDsn = uint64(c.st.rx.rcvNxt)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnMPFail)
	c.sendACK(nil)
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnFallback)
	c.mptcp.Store(false)
}

// ---- sending ----

func (c *Conn) handleTxDone(d txDone) {
	c.st.wrote(d.sf, d.err != nil)
	if d.sf.gone || !d.sf.draining.IsZero() {
		return
	}
	if d.err != nil {
		c.subflowEnded(d.sf, d.err)
		return
	}
	d.sf.queued -= d.n
}

// wrote drops sf's oldest mapping from the unwritten ones, or all of them when its writer
// stopped (on error it writes no more).
func (st *connState) wrote(sf *subflow, stopped bool) {
	w := st.unwritten[:0]
	done := false
	for _, u := range st.unwritten {
		if u.sf == sf && (stopped || !done) {
			done = true
			continue
		}
		w = append(w, u)
	}
	clear(st.unwritten[len(w):])
	st.unwritten = w
}

// poolWritten returns to the pool the acknowledged buffers no writer reads any more. A buffer a
// writer still reads waits: reused now, it would be overwritten under the writer. The
// acknowledgement runs ahead of the writer after a fallback, where it is everything handed
// over, and for a retransmission the original's DATA_ACK overtook.
func (st *connState) poolWritten() {
	keep := st.freedLate[:0]
	for _, p := range st.freedLate {
		if st.beingWritten(dsnRange{p.dsn, len(p.data)}) {
			keep = append(keep, p)
		} else {
			putBuf(p.data)
		}
	}
	clear(st.freedLate[len(keep):])
	st.freedLate = keep
}

// beingWritten reports whether a writer has still to write bytes of r.
func (st *connState) beingWritten(r dsnRange) bool {
	for _, u := range st.unwritten {
		if u.r.overlaps(r) {
			return true
		}
	}
	return false
}

// pumpTx frees what the peer DATA_ACKed, takes new data from Write and hands mappings to the
// subflows' writers, as the scheduler picks them.
func (c *Conn) pumpTx() {
	st := &c.st
	if c.mptcp.Load() {
		una := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck))
		if st.sndUna.LessThan(una) && una.LessThanEq(st.sndNxt.Add(1)) {
			st.sndUna = una
		}
	} else {
		st.sndUna = st.sndNxt // plain TCP: the kernel keeps what is unacknowledged
	}
	for len(st.sendBuf) > 0 && st.unsent > 0 {
		ch := st.sendBuf[0]
		if st.sndUna.LessThan(ch.dsn.Add(uint64(len(ch.data)))) {
			break
		}
		st.freedLate = append(st.freedLate, ch)
		st.sendBuf[0] = sendPiece{}
		st.sendBuf = st.sendBuf[1:]
		st.unsent--
	}
	st.poolWritten()
	for _, sf := range c.subs {
		sf.trimInflight(st.sndUna)
	}
	if room := sendLimit - int(st.sndEnd.Sub(st.sndUna)); room > 0 {
		for _, b := range c.txq.take(room) {
			st.sendBuf = append(st.sendBuf, sendPiece{dsn: st.sndEnd, data: b})
			st.sndEnd = st.sndEnd.Add(uint64(len(b)))
		}
	} else if c.mptcp.Load() && !st.ackArmed && c.txq.len() > 0 {
		// Blocked on DATA_ACKs: ring the doorbell, then look again in case one just came.
		st.ackArmed = true
		atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
		if una := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck)); st.sndUna.LessThan(una) {
			c.poke()
		}
	}
	c.schedule()
}

// schedule hands mappings to subflows while there is data and a subflow to take it.
func (c *Conn) schedule() {
	st := &c.st
	var cands []*subflow
	var views []SubflowView
	for c.pending() {
		cands = cands[:0]
		u := usable(c.subs)
		if len(u) > 1 && c.mptcp.Load() && atomic.LoadUint32(&c.shm.St.PeerWndSet) == 0 {
			// Until the peer announces its window, data goes on one subflow, in order: we sent
			// up to an assumed initial window, and a receiver like the kernel's takes only
			// in-order data then, dropping what arrives ahead (NoDSSInWindow).
			u = u[:1]
		}
		for _, sf := range u {
			// Only this goroutine sends on txCh, and only while it has room: never blocks.
			if sf.queued < writerQueued && len(sf.txCh) < cap(sf.txCh) {
				cands = append(cands, sf)
			}
		}
		if len(cands) == 0 {
			return
		}
		var picks []int
		if len(cands) == 1 && len(c.subs) == 1 {
			picks = []int{0} // one subflow: the socket's own buffer is the only limit
		} else {
			views = views[:0]
			for _, sf := range cands {
				views = append(views, sf.view())
			}
			if picks = c.sched.Pick(views); len(picks) == 0 {
				// Nothing has room: look again shortly, as ACKs free the windows.
				if st.pumpTimer == nil {
					st.pumpTimer = time.NewTimer(time.Millisecond)
				}
				return
			}
		}
		ch, ok := c.nextMapping()
		if !ok {
			if c.windowLimited() {
				st.windowWaits++
			}
			if c.windowLimited() && !st.ackArmed && c.mptcp.Load() {
				// Wait for the peer's window to open: the doorbell wakes us.
				st.ackArmed = true
				atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
				if st.pumpTimer == nil {
					st.pumpTimer = time.NewTimer(5 * time.Millisecond)
				}
			}
			return
		}
		end := ch.dsn.Add(uint64(ch.n))
		if st.sndNxt.LessThan(end) {
			if c.mptcp.Load() {
				atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(end))
			}
			st.sndNxt = end
		}
		for k, i := range picks {
			sf := cands[i]
			if k > 0 {
				// Each writer gets its own slice of buffers: a partial write shortens its
				// first buffer in place.
				ch.bufs = append([][]byte(nil), ch.bufs...)
			}
			sf.txCh <- ch
			sf.queued += ch.n
			st.unwritten = append(st.unwritten, unwritten{sf, dsnRange{ch.dsn, ch.n}})
			sf.inflight = append(sf.inflight, dsnRange{ch.dsn, ch.n})
		}
	}
}

// windowLimited reports whether new data waits for the peer's window.
func (c *Conn) windowLimited() bool {
	st := &c.st
	if st.unsent >= len(st.sendBuf) {
		return false
	}
	dsn := st.sendBuf[st.unsent].dsn.Add(uint64(st.unsentN))
	return !dsn.LessThan(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerWndEnd)))
}

// pending reports whether data waits for a subflow.
func (c *Conn) pending() bool {
	return len(c.st.reinject) > 0 || c.st.unsent < len(c.st.sendBuf)
}

// usable returns the subflows that may carry data now: ready, neither stale nor lossy, the
// backups only when no other subflow is (§3.3.8). When none is, the lossy ones, which still
// deliver, however slowly; and when every subflow is stale, the stale ones, as nothing else is
// left.
func usable(subs []*subflow) []*subflow {
	var regular, backup, lossy, stale []*subflow
	for _, sf := range subs {
		switch {
		case !sf.ready || sf.eof && !sf.halfClosed || sf.gone:
		case sf.stale:
			stale = append(stale, sf)
		case sf.lossy:
			lossy = append(lossy, sf)
		case sf.backup || sf.peerBackup:
			backup = append(backup, sf)
		default:
			regular = append(regular, sf)
		}
	}
	switch {
	case len(regular) > 0:
		return regular
	case len(backup) > 0:
		return backup
	case len(lossy) > 0:
		return lossy
	}
	return stale
}

// nextMapping cuts the next mapping: data to send again first, then unsent data; up to
// maxMapping bytes over as many buffers as it takes, without copying.
func (c *Conn) nextMapping() (txChunk, bool) {
	st := &c.st
	for len(st.reinject) > 0 {
		r := &st.reinject[0]
		if r.dsn.LessThan(st.sndUna) { // acknowledged meanwhile
			skip := min(uint64(r.n), st.sndUna.Sub(r.dsn))
			r.dsn, r.n = r.dsn.Add(skip), r.n-int(skip)
		}
		if r.n <= 0 {
			st.reinject = st.reinject[1:]
			continue
		}
		ch := c.sendBufRange(r.dsn, min(r.n, maxMapping))
		if ch.n == 0 {
			st.reinject = st.reinject[1:]
			continue
		}
		r.dsn, r.n = r.dsn.Add(uint64(ch.n)), r.n-ch.n
		if r.n == 0 {
			st.reinject = st.reinject[1:]
		}
		c.stack.stats.ReinjectedBytes.Add(uint64(ch.n))
		return ch, true
	}
	if st.unsent >= len(st.sendBuf) {
		return txChunk{}, false
	}
	ch := txChunk{dsn: st.sendBuf[st.unsent].dsn.Add(uint64(st.unsentN))}
	limit := maxMapping
	if c.mptcp.Load() {
		// New data stays within the peer's connection-level window (§3.3.4): data far ahead of
		// a slow subflow would fill its receive buffer and close every subflow's window.
		wnd := seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerWndEnd))
		if !ch.dsn.LessThan(wnd) {
			return txChunk{}, false
		}
		limit = int(min(uint64(limit), wnd.Sub(ch.dsn)))
	}
	for ch.n < limit && st.unsent < len(st.sendBuf) && len(ch.bufs) < maxMappingBufs {
		r := st.sendBuf[st.unsent].data[st.unsentN:]
		n := min(len(r), limit-ch.n)
		ch.bufs = append(ch.bufs, r[:n])
		ch.n += n
		st.advanceUnsent(n)
	}
	return ch, true
}

// sendBufRange returns a mapping of up to n bytes at dsn from the send buffer.
func (c *Conn) sendBufRange(dsn seqnum.DSN, n int) txChunk {
	st := &c.st
	i := sort.Search(len(st.sendBuf), func(i int) bool {
		p := st.sendBuf[i]
		return dsn.LessThan(p.dsn.Add(uint64(len(p.data))))
	})
	ch := txChunk{dsn: dsn}
	for ; i < len(st.sendBuf) && ch.n < n && len(ch.bufs) < maxMappingBufs; i++ {
		p := st.sendBuf[i]
		if dsn.LessThan(p.dsn) {
			break
		}
		off := int(dsn.Sub(p.dsn))
		take := min(len(p.data)-off, n-ch.n)
		ch.bufs = append(ch.bufs, p.data[off:off+take])
		ch.n += take
		dsn = dsn.Add(uint64(take))
	}
	return ch
}

func (st *connState) advanceUnsent(n int) {
	st.unsentN += n
	if st.unsentN == len(st.sendBuf[st.unsent].data) {
		st.unsent++
		st.unsentN = 0
	}
}

// reinjectFrom queues what a subflow had in flight, not yet DATA_ACKed, to go again on others.
// otherUsable reports whether a subflow other than sf can carry data now.
func (c *Conn) otherUsable(sf *subflow) bool {
	for _, x := range c.subs {
		if x != sf && x.ready && !x.eof && !x.gone && !x.stale && !x.lossy && x.draining.IsZero() {
			return true
		}
	}
	return false
}

func (c *Conn) reinjectFrom(sf *subflow) {
	sf.trimInflight(c.st.sndUna)
	c.st.reinject = append(c.st.reinject, sf.inflight...)
	sf.inflight = nil
}

// reportNoMapping logs data segments the datapath wrote without a DSS because no mapping in
// the subflow's table covered them (counted as DSSTxNoMapping): the peer cannot place those
// bytes. The log shows where the table stood.
func (c *Conn) reportNoMapping() {
	if !c.mptcp.Load() {
		return
	}
	for _, sf := range c.subs {
		n := atomic.LoadUint64(&sf.shm.St.TxNomap)
		if n == sf.nomapSeen {
			continue
		}
		sf.nomapSeen = n
		head := atomic.LoadUint64(&sf.shm.Ctl.TxmapHead)
		lo := head - min(head, uint64(datapath.TxMapRing-1))
		first, last := sf.shm.Ctl.Txmap[lo%uint64(datapath.TxMapRing)], sf.shm.Ctl.Txmap[(head-1)%uint64(datapath.TxMapRing)]
		una, _, _ := sf.ackedRel()
		c.stack.log.Warn("data segment written without a mapping", "token", c.token, "slot", sf.slot, "count", n,
			"ssn", atomic.LoadUint32(&sf.shm.St.NomapRel), "una", uint32(una), "head", head,
			"oldest", fmt.Sprintf("%d+%d", first.Ssn, first.Len), "newest", fmt.Sprintf("%d+%d", last.Ssn, last.Len),
			"written", sf.written.Load())
	}
}

// checkSubflows marks subflows stale that make no progress with data outstanding: their data
// goes on the other subflows. RFC 8684 leaves the test to us; the kernel waits for four RTOs
// (stale_loss_cnt), we for max(250 ms, 3 RTT) without an acknowledgement.
//
// A subflow long in loss recovery (max(250 ms, 4 RTT)) that holds the connection's oldest
// unacknowledged data holds up everything behind it: without SACK (see the README) TCP repairs a burst loss one segment per
// round trip, and the peer's connection-level window stays full meanwhile. Its data in flight
// goes on the other subflows too, and it gets no new data until TCP has recovered, as the
// kernel's MPTCP-level retransmission does for data stuck on a subflow.
func (c *Conn) checkSubflows() {
	if len(c.subs) < 2 {
		// Alone, a subflow carries everything whatever its state: one left stale by the
		// others' departure gets its own retransmission timeouts back.
		for _, sf := range c.subs {
			if sf.stale {
				sf.stale = false
				c.setFastProbe(sf, false)
			}
		}
		return
	}
	now := time.Now()
	for _, sf := range c.subs {
		if !sf.ready || sf.eof {
			continue
		}
		info, err := sf.tcpInfo()
		if err != nil {
			continue
		}
		una, outstanding := sf.ackedFrom(info)
		// In recovery only while it holds data: without SACK, Linux keeps a socket in its
		// loss state until something above the recovery point is acknowledged, and a subflow
		// we call lossy gets nothing new, so it would never leave that state.
		inLoss := info.Ca_state >= tcpCARecovery && outstanding
		switch {
		case !inLoss:
			sf.lossSince = time.Time{}
			if sf.lossy {
				sf.lossy = false
				c.stack.log.Debug("subflow recovered from loss", "token", c.token, "slot", sf.slot)
			}
		case sf.lossSince.IsZero():
			sf.lossSince = now
		}
		// A short recovery (random loss) repairs itself; a long one is a burst loss.
		longLoss := inLoss && now.Sub(sf.lossSince) >= max(250*time.Millisecond, 4*sf.srtt())
		if !sf.lossy && longLoss && sf.holds(c.st.sndUna) && c.otherUsable(sf) {
			sf.lossy = true
			c.stack.stats.SubflowLossy.Add(1)
			c.stack.log.Debug("subflow in loss recovery holds the oldest data: re-sending it elsewhere", "token", c.token, "slot", sf.slot)
			c.reinjectFrom(sf)
		}
		if una != sf.lastUna || !outstanding {
			sf.lastUna, sf.lastProgress = una, now
			if sf.stale {
				sf.stale = false
				c.stack.log.Debug("subflow recovered", "token", c.token, "slot", sf.slot)
				c.setFastProbe(sf, false)
			}
			continue
		}
		limit := max(250*time.Millisecond, 3*sf.srtt())
		if !sf.stale && now.Sub(sf.lastProgress) > limit {
			sf.stale = true
			c.stack.stats.SubflowStale.Add(1)
			c.stack.log.Debug("subflow stale: re-sending its data elsewhere", "token", c.token, "slot", sf.slot)
			c.reinjectFrom(sf)
			c.setFastProbe(sf, true)
		}
	}
	// Data handed to a subflow after it went stale (while every subflow was) goes again once
	// another one works.
	fresh := false
	for _, sf := range c.subs {
		fresh = fresh || (sf.ready && !sf.eof && !sf.stale)
	}
	if fresh {
		for _, sf := range c.subs {
			if sf.stale && len(sf.inflight) > 0 {
				c.reinjectFrom(sf)
			}
		}
	}
}

// setFastProbe turns a subflow's fast probing on or off; a failure (an old kernel) only costs
// the faster notice of its path's return.
func (c *Conn) setFastProbe(sf *subflow, on bool) {
	if err := sf.setFastProbe(on); err != nil {
		c.stack.log.Debug("subflow: fast probing", "token", c.token, "slot", sf.slot, "err", err)
	}
}

// dataRtx is the connection-level retransmission timer's state.
type dataRtx struct {
	una     seqnum.DSN // the DATA_ACK the timer runs for
	since   time.Time  // when the data at una last reached the peer at the subflow level
	backoff uint       // retransmissions of una so far
}

// maxDataRtxChunk bounds one connection-level retransmission.
const maxDataRtxChunk = 64 << 10

// checkDataAck is the connection-level retransmission timer (RFC 8684 §3.3.6): data that every
// subflow carrying it delivered, and that the peer still does not DATA_ACK, was dropped above
// TCP (a receiver discards a mapping outside its connection-level window, which the kernel
// counts as NoDSSInWindow). Without this the connection waits for it forever. The timer runs
// from the moment TCP delivered the data, so a slow or lossy subflow, which checkSubflows
// handles, does not set it off; it is max(200 ms, 2 RTT) of the slowest subflow, doubled on
// each retransmission of the same byte, at most 10 s.
func (c *Conn) checkDataAck(now time.Time) {
	st := &c.st
	r := &st.dataRtx
	if !c.mptcp.Load() || !st.sndUna.LessThan(st.sndNxt) || st.sndUna != r.una {
		// Nothing outstanding, or the DATA_ACK moved: the timer starts over.
		*r = dataRtx{una: st.sndUna, since: now}
		return
	}
	for _, q := range st.reinject {
		if q.contains(st.sndUna) {
			r.since = now // already on its way again
			return
		}
	}
	var srtt time.Duration
	for _, sf := range c.subs {
		srtt = max(srtt, sf.srtt())
		if !sf.holds(st.sndUna) {
			continue
		}
		if sf.queued > 0 {
			r.since = now
			return
		}
		if _, outstanding, err := sf.ackedRel(); err == nil && outstanding {
			r.since = now
			return
		}
	}
	wait := min(max(200*time.Millisecond, 2*srtt)<<min(r.backoff, 6), 10*time.Second)
	if now.Sub(r.since) < wait {
		return
	}
	n := int(min(uint64(maxDataRtxChunk), st.sndNxt.Sub(st.sndUna)))
	st.reinject = append(st.reinject, dsnRange{st.sndUna, n})
	r.backoff++
	r.since = now
	c.stack.stats.DataRetransmit.Add(1)
	c.stack.log.Debug("no DATA_ACK for data the subflows delivered: sending it again", "token", c.token,
		"dsn", uint64(st.sndUna), "bytes", n, "retransmission", r.backoff)
}

// sendPiece is a buffer of application data at its DSN, kept until DATA_ACKed.
type sendPiece struct {
	dsn  seqnum.DSN
	data []byte
}

// checkFin sends our DATA_FIN once everything written before CloseWrite is handed to a
// subflow, and notices its DATA_ACK.
func (c *Conn) checkFin() {
	st := &c.st
	if !st.wrClosed || c.Err() != nil {
		return
	}
	if !c.mptcp.Load() {
		if !st.finSet && st.unsent == len(st.sendBuf) && c.txq.len() == 0 && len(c.subs) > 0 && c.subs[0].queued == 0 {
			st.finSet, st.finAcked = true, true
			c.subs[0].tc.CloseWrite()
		}
		return
	}
	if !st.finSet {
		if c.pending() || c.txq.len() > 0 {
			return
		}
		st.finSet = true
		st.finDSN = st.sndEnd
		c.shm.Ctl.SndFinDsn = uint64(st.finDSN)
		atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(st.finDSN))
		atomicOr32(&c.shm.Ctl.Flags, datapath.ConnDataFin)
		st.finTimer = time.NewTimer(0) // sent by the first timer tick once the writers drained
		return
	}
	if !st.finAcked {
		if st.finDSN.LessThan(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerDataAck))) {
			st.finAcked = true
			if st.finTimer != nil {
				st.finTimer.Stop()
				st.finTimer = nil
			}
		} else if !st.ackArmed {
			st.ackArmed = true
			atomicAdd32(&c.shm.Ctl.AckWakeup, 1)
		}
	}
}

// retransmitFin sends a pure ACK carrying our DATA_FIN until the peer acknowledges it.
func (c *Conn) retransmitFin() {
	st := &c.st
	if st.finAcked || c.Err() != nil {
		return
	}
	for _, sf := range c.subs {
		if sf.queued > 0 {
			st.finTimer = time.NewTimer(time.Millisecond)
			return
		}
	}
	c.sendACK(nil)
	st.finTimer = time.NewTimer(st.finRTO)
	st.finRTO = min(2*st.finRTO, 5*time.Second)
}

// sendACK sends a pure ACK (with whatever the datapath writes on it) on sf, or on the first
// usable subflow when sf is nil.
func (c *Conn) sendACK(sf *subflow) {
	if sf == nil {
		if u := usable(c.subs); len(u) > 0 {
			sf = u[0]
		} else if len(c.subs) > 0 {
			sf = c.subs[0]
		} else {
			return
		}
	}
	var err error
	cerr := sf.raw.Control(func(fd uintptr) { err = c.stack.dp.SendACK(int(fd), sf.slot) })
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		c.stack.log.Debug("send ACK", "token", c.token, "err", err)
	}
}

func atomicOr32(p *uint32, v uint32) { atomic.OrUint32(p, v) }

func atomicAdd32(p *uint32, v uint32) { atomic.AddUint32(p, v) }
