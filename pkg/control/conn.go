package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/datapath"
	"github.com/mptcpgo/mptcpgo/pkg/mpcrypto"
	"github.com/mptcpgo/mptcpgo/pkg/seqnum"
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
	sf           *subflow

	rxq      *byteQueue
	txq      *byteQueue
	rdl, wdl *deadline

	evCh     chan datapath.Event
	rxCh     chan rxChunk
	txDoneCh chan txDone
	kick     chan struct{}
	ctl      chan ctlOp
	infoCh   chan chan ConnInfo
	done     chan struct{} // closed when run returned
	closed   chan struct{} // closed by Close
	closeMu  sync.Once
	errMu    sync.Mutex
	err      error

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
	rxFallback bool // infinite mapping: the subflow's bytes continue the stream in order

	sndUna  seqnum.DSN  // the peer's DATA_ACK
	sndNxt  seqnum.DSN  // next DSN to hand to a writer
	sndEnd  seqnum.DSN  // one past the last byte taken from Write
	sendBuf []sendPiece // taken from Write, not yet DATA_ACKed, by DSN
	unsent  int         // index in sendBuf of the first chunk not handed to a writer
	unsentN int         // bytes of sendBuf[unsent] already handed over

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
}

func newConn(s *Stack) *Conn {
	return &Conn{
		stack:    s,
		rxq:      newByteQueue(rxLimit),
		txq:      newByteQueue(txLimit),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
		evCh:     make(chan datapath.Event, 64),
		rxCh:     make(chan rxChunk, 16),
		txDoneCh: make(chan txDone, 16),
		kick:     make(chan struct{}, 1),
		ctl:      make(chan ctlOp, 4),
		infoCh:   make(chan chan ConnInfo),
		done:     make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// start sets the data-level state once keys are known and starts the goroutines.
func (c *Conn) start() {
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
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnCanAck)
	c.mptcp.Store(true)
	c.stack.register(c)
	go c.sf.readLoop()
	go c.sf.writeLoop()
	go c.run()
}

func (c *Conn) deliver(ev datapath.Event) {
	select {
	case c.evCh <- ev:
	case <-c.done:
	}
}

func (c *Conn) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Read reads in-order data.
func (c *Conn) Read(b []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, errConnClosed
	default:
	}
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
		bufs, err := c.rxq.popAll(c.rdl, c.closed)
		for _, b := range bufs {
			n, werr := w.Write(b)
			total += int64(n)
			if werr != nil {
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
	RcvNxt      uint64 // data level: next DSN expected
	PeerFin     bool
	PeerFinDSN  uint64
	RxEOF       bool
	Held        int // bytes read from subflows waiting for their mapping
	HeldOff     uint32
	RxMaps      int
	RxOOO       int // out-of-order bytes
	RxReady     int // bytes waiting for Read
	SndUna      uint64
	SndNxt      uint64
	SndEnd      uint64
	FinSet      bool
	FinAcked    bool
	DatapathAck uint64 // the datapath's data-level ACK (rx_ack)
	PeerDataAck uint64
	Events      [16]uint64 // datapath events handled, by type
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
		Token: c.token, MPTCP: c.mptcp.Load(), RcvNxt: uint64(st.rx.rcvNxt), PeerFin: st.rxFin,
		PeerFinDSN: uint64(st.rxFinDSN), RxEOF: st.rxEOF, RxMaps: len(c.sf.rxMaps), RxOOO: st.rx.nOOO,
		RxReady: c.rxq.len(), SndUna: uint64(st.sndUna), SndNxt: uint64(st.sndNxt), SndEnd: uint64(st.sndEnd),
		FinSet: st.finSet, FinAcked: st.finAcked,
		DatapathAck: atomic.LoadUint64(&c.shm.St.RxAck), PeerDataAck: atomic.LoadUint64(&c.shm.St.PeerDataAck),
		Events: st.events,
	}
	for i, h := range c.sf.rxHeld {
		if i == 0 {
			in.HeldOff = uint32(h.off)
		}
		in.Held += len(h.data)
	}
	return in
}

// abort ends the connection from outside its goroutine (stack shutdown).
func (c *Conn) abort(err error, fastclose bool) {
	c.closeMu.Do(func() { close(c.closed) })
	if fastclose {
		c.send(opAbort)
		return
	}
	c.fail(err)
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
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	c.st.finRTO = 200 * time.Millisecond
	for {
		var rxIn chan rxChunk
		if c.rxq.len() < rxLimit && !c.st.rxEOF {
			rxIn = c.rxCh
		}
		var finC <-chan time.Time
		if c.st.finTimer != nil {
			finC = c.st.finTimer.C
		}
		select {
		case ev := <-c.evCh:
			c.handleEvent(ev)
		case ch := <-rxIn:
			c.handleRx(ch)
		case d := <-c.txDoneCh:
			c.handleTxDone(d)
		case op := <-c.ctl:
			if c.handleCtl(op) {
				return
			}
		case <-c.kick:
		case r := <-c.infoCh:
			r <- c.info()
		case <-finC:
			c.st.finTimer = nil
			c.retransmitFin()
		case <-tick.C:
		}
		if c.Err() != nil {
			c.teardown(false)
			return
		}
		c.pumpTx()
		c.checkFin()
		if c.st.appClosed && c.closeDone() {
			c.teardown(false)
			return
		}
	}
}

func (c *Conn) closeDone() bool {
	if c.st.finAcked && (c.st.rxEOF || c.sf.eof) {
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
			c.sf.shm.Ctl.RstReason = uint8(c.rstReason.Load())
			c.sf.shm.Ctl.RstFlags = datapath.SubRstRequest
		}
		c.teardown(true)
		return true
	}
	return false
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
	close(c.sf.txCh)
	c.sf.close(abort)
	if c.st.finTimer != nil {
		c.st.finTimer.Stop()
	}
	c.stack.releaseSlots(c.slot, c.sf.slot, c.token)
}

// ---- receiving ----

func (c *Conn) handleEvent(ev datapath.Event) {
	sf := c.sf
	if ev.Type < uint32(len(c.st.events)) {
		c.st.events[ev.Type]++
	}
	switch ev.Type {
	case datapath.EvRxMap:
		if ev.Sub != sf.slot {
			return
		}
		if ev.C&datapath.RxMapInfinite != 0 {
			c.startRxFallback(sf)
			return
		}
		fin := ev.C&datapath.RxMapFin != 0
		n := uint32(ev.C & 0xffff)
		if fin {
			n--
		}
		dsn := seqnum.DSN(ev.A)
		if ev.C&datapath.RxMapMPC != 0 {
			dsn = seqnum.DSN(c.shm.Ctl.PeerIdsn + 1)
		}
		sf.addRxMap(rxMap{dsn: dsn, ssn: seqnum.Value(ev.B), len: n, fin: fin})
		c.processHeld(sf)
	case datapath.EvDataFin:
		c.peerFin(seqnum.DSN(ev.A))
	case datapath.EvDataAck:
		c.st.ackArmed = false
	case datapath.EvFastclose:
		c.stack.stats.Fastclose.Add(1)
		c.fail(ErrFastclose)
	case datapath.EvTCPRst:
		c.st.lastRst = &ResetError{Reason: uint8(ev.A), Transient: ev.B&1 != 0}
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

func (c *Conn) handleRx(ch rxChunk) {
	sf := ch.sf
	if ch.err != nil {
		c.subflowEnded(sf, ch.err)
		return
	}
	sf.rxHeld = append(sf.rxHeld, ch)
	c.processHeld(sf)
}

// processHeld maps held bytes to DSNs with the peer's mappings and reassembles them; bytes
// whose mapping has not arrived wait for it.
func (c *Conn) processHeld(sf *subflow) {
	for len(sf.rxHeld) > 0 {
		ch := &sf.rxHeld[0]
		for len(ch.data) > 0 {
			m, ok := sf.mapFor(ch.off)
			if !ok {
				if !c.st.rxFallback {
					c.deliverRx()
					return
				}
				// After an infinite mapping the bytes continue where the last mapping ended.
				m = rxMap{dsn: sf.lastEnd.dsn.Add(uint64(ch.off.Sub(sf.lastEnd.ssn))), ssn: ch.off, len: uint32(len(ch.data))}
			}
			n := min(uint32(len(ch.data)), m.end().Sub(ch.off))
			dsn := m.dsn.Add(uint64(ch.off.Sub(m.ssn)))
			c.st.rx.insert(dsn, ch.data[:n])
			ch.data = ch.data[n:]
			ch.off = ch.off.Add(n)
			sf.mapped = ch.off
			sf.lastEnd.ssn, sf.lastEnd.dsn = ch.off, dsn.Add(uint64(n))
			if ch.off == m.end() && m.fin {
				c.peerFin(m.dsn.Add(uint64(m.len)))
			}
		}
		sf.rxHeld[0] = rxChunk{}
		sf.rxHeld = sf.rxHeld[1:]
	}
	sf.pruneRx(sf.mapped)
	c.deliverRx()
}

// deliverRx hands in-order bytes to Read and tells the datapath how far we have received.
func (c *Conn) deliverRx() {
	r := &c.st.rx
	for _, b := range r.ready {
		c.rxq.push(b)
	}
	clear(r.ready)
	r.ready = r.ready[:0]
	r.nReady = 0
	rcv := uint64(r.rcvNxt)
	if c.st.rxFin && r.rcvNxt == c.st.rxFinDSN && !c.st.rxEOF {
		c.st.rxEOF = true
		rcv++
		c.rxq.finish(io.EOF)
		if c.mptcp.Load() {
			atomic.StoreUint64(&c.shm.Ctl.RcvNxt, rcv)
			if seqnum.DSN(atomic.LoadUint64(&c.shm.St.RxAck)).LessThan(seqnum.DSN(rcv)) {
				c.sendACK() // the datapath did not acknowledge the DATA_FIN on its own
			}
		}
		return
	}
	if c.st.rxEOF {
		rcv++
	}
	if c.mptcp.Load() {
		atomic.StoreUint64(&c.shm.Ctl.RcvNxt, rcv)
	}
}

func (c *Conn) peerFin(dsn seqnum.DSN) {
	if c.st.rxFin {
		return
	}
	c.st.rxFin, c.st.rxFinDSN = true, dsn
	c.deliverRx()
}

// subflowEnded handles the end of the (only) subflow's byte stream.
func (c *Conn) subflowEnded(sf *subflow, err error) {
	sf.eof = true
	if errors.Is(err, io.EOF) {
		if !c.st.rxFin && atomic.LoadUint32(&c.shm.St.PeerFin) != 0 {
			// The DATA_FIN event may still be on its way; the datapath has it already.
			c.peerFin(seqnum.DSN(atomic.LoadUint64(&c.shm.St.PeerFinDsn)))
		}
		if c.st.rxEOF {
			return
		}
		if !c.mptcp.Load() || c.st.rxFallback {
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
	c.fail(c.resetError(err))
}

// resetError explains a subflow error with what the datapath saw on the reset: the peer's
// MP_FASTCLOSE or MP_TCPRST. The datapath state is read directly, as the event may still be
// on its way.
func (c *Conn) resetError(err error) error {
	if c.mptcp.Load() {
		var st datapath.SkState
		var ok bool
		c.sf.raw.Control(func(fd uintptr) { st, ok, _ = c.stack.dp.State(int(fd)) })
		if ok && st.Flags&datapath.SubFastcloseRx != 0 {
			return ErrFastclose
		}
		if ok && st.Flags&datapath.SubRstRx != 0 && c.st.lastRst == nil {
			c.st.lastRst = &ResetError{Reason: st.RstReason}
		}
	}
	if c.st.lastRst != nil {
		c.st.lastRst.Err = err
		return c.st.lastRst
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
	c.sendACK()
	atomicOr32(&c.shm.Ctl.Flags, datapath.ConnFallback)
	c.mptcp.Store(false)
}

// ---- sending ----

func (c *Conn) handleTxDone(d txDone) {
	if d.err != nil {
		c.fail(c.resetError(d.err))
		return
	}
	d.sf.queued -= d.n
}

// pumpTx frees what the peer DATA_ACKed, takes new data from Write and hands mappings to the
// subflow's writer.
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
		putBuf(ch.data)
		st.sendBuf[0] = sendPiece{}
		st.sendBuf = st.sendBuf[1:]
		st.unsent--
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
	sf := c.sf
	// Only this goroutine sends on txCh, and only while it has room: the send never blocks.
	for sf.queued < writerQueued && st.unsent < len(st.sendBuf) && len(sf.txCh) < cap(sf.txCh) {
		ch := c.nextMapping()
		end := ch.dsn.Add(uint64(ch.n))
		if c.mptcp.Load() {
			atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(end))
		}
		sf.txCh <- ch
		sf.queued += ch.n
		st.sndNxt = end
	}
}

// nextMapping cuts the next mapping from the unsent data: up to maxMapping bytes over as many
// buffers as it takes, without copying.
func (c *Conn) nextMapping() txChunk {
	st := &c.st
	ch := txChunk{dsn: st.sendBuf[st.unsent].dsn.Add(uint64(st.unsentN))}
	for ch.n < maxMapping && st.unsent < len(st.sendBuf) {
		r := st.sendBuf[st.unsent].data[st.unsentN:]
		n := min(len(r), maxMapping-ch.n)
		ch.bufs = append(ch.bufs, r[:n])
		ch.n += n
		st.advanceUnsent(n)
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

// sendPiece is a buffer of application data at its DSN, kept until DATA_ACKed.
type sendPiece struct {
	dsn  seqnum.DSN
	data []byte
}

// checkFin sends our DATA_FIN once everything written before CloseWrite is handed to the
// subflow, and notices its DATA_ACK.
func (c *Conn) checkFin() {
	st := &c.st
	if !st.wrClosed || c.Err() != nil {
		return
	}
	if !c.mptcp.Load() {
		if !st.finSet && st.unsent == len(st.sendBuf) && c.sf.queued == 0 && c.txq.len() == 0 {
			st.finSet, st.finAcked = true, true
			c.sf.tc.CloseWrite()
		}
		return
	}
	if !st.finSet {
		if st.unsent < len(st.sendBuf) || c.txq.len() > 0 {
			return
		}
		st.finSet = true
		st.finDSN = st.sndEnd
		c.shm.Ctl.SndFinDsn = uint64(st.finDSN)
		atomic.StoreUint64(&c.shm.Ctl.SndNxt, uint64(st.finDSN))
		atomicOr32(&c.shm.Ctl.Flags, datapath.ConnDataFin)
		st.finTimer = time.NewTimer(0) // sent by the first timer tick once the writer drained
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
	if c.sf.queued > 0 {
		st.finTimer = time.NewTimer(time.Millisecond)
		return
	}
	c.sendACK()
	st.finTimer = time.NewTimer(st.finRTO)
	st.finRTO = min(2*st.finRTO, 5*time.Second)
}

// sendACK sends a pure ACK (with whatever the datapath writes on it) on the subflow now.
func (c *Conn) sendACK() {
	sf := c.sf
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
