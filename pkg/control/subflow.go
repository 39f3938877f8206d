package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/dsscsum"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// maxMapping is the largest mapping we write: the DSS data-level length is 16 bits, and one
// DSN is kept free for a DATA_FIN riding on the last mapping.
const maxMapping = 65535 - 1

// maxMappingBufs bounds the buffers of one mapping: it is written with one sendmsg, which takes
// at most UIO_MAXIOV (1024) of them (more fail with EMSGSIZE). Small writes share buffers
// (byteQueue.pushWait), so only a mapping made of many small reads comes near it.
const maxMappingBufs = 1024

// subflow is one TCP subflow of a connection: a plain kernel TCP socket whose MPTCP options the
// datapath writes and parses. Its reader goroutine passes received bytes to the connection; its
// writer goroutine writes mappings, each as one MSG_EOR write recorded in the datapath's table
// first, so that a retransmission carries exactly its original mapping.
type subflow struct {
	c    *Conn
	slot uint32
	tc   *net.TCPConn
	raw  syscall.RawConn
	fd   int
	shm  *datapath.Sub
	txCh chan *txChunk

	local, remote     netip.AddrPort
	localID, remoteID uint8
	active            bool // we opened it (the first subflow of our connect, or our join)

	// Owned by the connection's goroutine.
	rxMaps     rxMaps    // the peer's mappings not yet fully read, by SSN
	rxHeld     []rxChunk // bytes read whose mapping has not arrived yet
	heldBytes  int       // bytes in rxHeld
	mapped     seqnum.Value
	queued     int // bytes handed to the writer and not yet written
	eof        bool
	halfClosed bool     // eof was a plain TCP peer's half-close: sending goes on
	fastProbe  struct { // setFastProbe's state: on, and the socket's settings before
		on                  bool
		rtoMax, userTimeout int
	}
	gone       bool      // detached from the connection; its goroutines' reports are ignored
	finished   bool      // closed and its slot released (finishSubflow)
	draining   time.Time // detached and being read to its end until then (zero: not)
	txClosed   bool
	ready      bool          // may carry data (a join: after the fourth ACK)
	backup     bool          // ours (MP_JOIN B flag we sent, or MP_PRIO we sent)
	peerBackup bool          // the peer's (its MP_JOIN B flag, or its MP_PRIO)
	inflight   []dsnRange    // mappings handed to this subflow not yet DATA_ACKed
	health     subflowHealth // what checkSubflows learnt of its progress
	rttVar     time.Duration // RTT mean deviation at checkSubflows' last TCP_INFO sample
	ackBase    uint64        // TCP_INFO bytes_acked before any data (1 on an active open: the SYN)
	bytesRecv  uint64
	lastRst    *ResetError
	joinAck    struct { // an active join's third ACK, sent again until the fourth ACK comes
		at  time.Time
		rto time.Duration
	}
	optQueue [][]byte // options for pure ACKs of their own, in order
	lastEnd  struct { // end of the last mapping consumed, for an infinite-mapping fallback
		ssn seqnum.Value
		dsn seqnum.DSN
	}
	csumEnd struct { // DSS checksums of the peer's mappings (csum.go)
		ssn seqnum.Value // end of the last mapping verified: its bytes before ssn passed
		ok  bool         // ssn is set
	}

	// The writer: a goroutine that runs while txCh holds mappings (hand starts it), so that an
	// idle subflow holds none. Its state below is the writer's; one runs at a time (wRunning).
	startWriter func() bool // starts writeRun on a tracked goroutine (nil: a test drains txCh)
	// wMu is held by the writer while it records a mapping and writes it; stopWriter sets
	// wStop under it. Once stopWriter returns, no writer touches the socket or the slot again:
	// the slot may go to another subflow, the descriptor number to another socket.
	wMu      sync.Mutex
	wStop    atomic.Bool
	wRunning atomic.Bool
	wPending atomic.Int32  // mappings in txCh (hand adds after sending, the writer takes off)
	wSndRel  seqnum.Value  // relative SSN of the next byte written
	wAcked   uint32        // relative SSN known acknowledged (cached TCP_INFO)
	written  atomic.Uint64 // bytes written to the socket (writer goroutine)
	txWait   *time.Timer   // the writer's wait for a mapping slot (claimTxSlot), reused

	// The reader: a goroutine that runs while the socket has data; a reader that finds it
	// empty parks it with the stack's poller and ends (readLoop). Its state below is the
	// reader's; one runs at a time (the poller starts the next).
	rdStarted bool         // the first run set rdOff and rdSize
	rdOff     seqnum.Value // relative SSN of the next byte read
	rdSize    int          // the size of the next read's buffer
	rdPark    parking      // the socket's registration with the poller (under its lock)
}

// rxChunk is bytes read from a subflow starting at relative SSN off, or its end (err).
type rxChunk struct {
	sf   *subflow
	off  seqnum.Value
	data []byte
	err  error

	pooled *rxBuf     // the pool buffer data is in (nil: not pooled)
	end    seqnum.DSN // one past the highest DSN of its bytes reassembled so far
	ended  bool       // end is set
}

// txChunk is one mapping for the writer: DSNs [dsn, dsn+n) in one or more buffers, written
// with a single vectored MSG_EOR write (no copy to join them).
type txChunk struct {
	dsn  seqnum.DSN
	bufs [][]byte
	n    int
}

// txDone reports bytes written by a subflow's writer, or its failure.
type txDone struct {
	sf  *subflow
	n   int
	err error
}

func newSubflow(c *Conn, slot uint32, tc *net.TCPConn) (*subflow, error) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	sf := &subflow{c: c, slot: slot, tc: tc, raw: raw, txCh: make(chan *txChunk, 64), wSndRel: 1}
	if c.stack != nil {
		sf.startWriter = func() bool { return c.stack.goroutine(sf.writeRun) }
	}
	sf.health.lastProgress = time.Now()
	if a, ok := tc.LocalAddr().(*net.TCPAddr); ok {
		sf.local = a.AddrPort()
		sf.local = netip.AddrPortFrom(sf.local.Addr().Unmap(), sf.local.Port())
	}
	if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		sf.remote = a.AddrPort()
		sf.remote = netip.AddrPortFrom(sf.remote.Addr().Unmap(), sf.remote.Port())
	}
	if c.stack != nil {
		sf.shm = c.stack.dp.Sub(slot)
	}
	if err := raw.Control(func(fd uintptr) { sf.fd = int(fd) }); err != nil {
		return nil, err
	}
	// TCP counts the SYN in bytes_acked on an active open: the baseline taken before any data
	// is written makes acknowledged relative SSNs exact in both roles. The datapath scales the
	// peer's window with its window scale (the DATA_ACK's window, §3.3.4). One read for both.
	if info, err := unix.GetsockoptTCPInfo(sf.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
		sf.ackBase = info.Bytes_acked
		if sf.shm != nil {
			sf.shm.Ctl.SndWscale = sndWscale(info)
		}
	}
	return sf, nil
}

// Read buffer sizes: an idle subflow holds a small buffer, a busy one reads in large ones.
const (
	minReadBuf = 4 << 10
	maxReadBuf = 256 << 10
)

// readLoop passes everything the socket delivers to the connection, starting at relative SSN 1.
// It runs while the socket has data: once it finds the socket empty it parks it with the
// stack's poller and ends, and the poller starts it again when data, the end or an error
// arrive. Without a poller (a test, or one that failed) it waits on its own goroutine.
func (sf *subflow) readLoop() {
	if !sf.rdStarted {
		sf.rdStarted, sf.rdOff, sf.rdSize = true, 1, minReadBuf
	}
	var pooled *rxBuf
	take := func() []byte {
		if sf.rdSize == maxReadBuf {
			// A busy subflow reads into pooled buffers, which come back once the application
			// has consumed them (Conn.releaseRx): fresh large buffers cost page faults and
			// zeroing.
			pooled = getRxBuf()
			return pooled[:]
		}
		return make([]byte, sf.rdSize)
	}
	drop := func([]byte) {
		if pooled != nil {
			putRxBuf(pooled)
			pooled = nil
		}
	}
	for {
		pooled = nil
		buf, n, err, empty := readSocket(sf.raw, take, drop, false)
		if empty {
			if sf.parkReader() {
				return
			}
			buf, n, err = readReady(sf.raw, take, drop)
		}
		switch size := sf.rdSize; {
		case n == size && size < maxReadBuf:
			sf.rdSize *= 2
		case n < size/4 && size > minReadBuf:
			sf.rdSize /= 2
		}
		if n > 0 {
			select {
			case sf.c.rxCh <- &rxChunk{sf: sf, off: sf.rdOff, data: buf[:n:n], pooled: pooled}:
				sf.c.wake()
			case <-sf.c.done:
				return
			}
			sf.rdOff = sf.rdOff.Add(uint32(n))
		}
		if err != nil {
			select {
			case sf.c.rxCh <- &rxChunk{sf: sf, off: sf.rdOff, err: err}:
				sf.c.wake()
			case <-sf.c.done:
			}
			return
		}
	}
}

// parkReader parks the empty socket with the stack's poller, which starts readLoop again
// once it is readable; false when it cannot (no poller, or it is closing, or epoll failed):
// the reader then waits itself.
func (sf *subflow) parkReader() bool {
	s := sf.c.stack
	if s == nil || s.poll == nil {
		return false
	}
	return s.poll.park(sf.raw, &sf.rdPark, func() {
		s.goroutine(sf.readLoop) // refused once the stack closes: its connections are ending
	}) == nil
}

// wakeWriter counts the mapping hand queued and starts the writer for it, unless it runs.
func (sf *subflow) wakeWriter() {
	sf.wPending.Add(1)
	if sf.startWriter != nil && sf.wRunning.CompareAndSwap(false, true) && !sf.startWriter() {
		sf.wRunning.Store(false) // the stack is closing: nothing more is written
	}
}

// writeRun writes the queued mappings and ends when none is left (or txCh closed). A mapping
// queued as it ends finds either the writer still running or wRunning false, which starts
// another. After a failure it ends with wRunning set: no writer starts again, txCh fills and
// the subflow takes nothing more (takes).
func (sf *subflow) writeRun() {
	for {
		var ch *txChunk
		var ok bool
		select {
		case ch, ok = <-sf.txCh:
			if !ok {
				return
			}
			sf.wPending.Add(-1)
		default:
			// hand counts a mapping after sending it and then tries to start a writer: either
			// it sees this one stopped and starts another, or this one sees the count.
			sf.wRunning.Store(false)
			if sf.wPending.Load() == 0 || !sf.wRunning.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		if !sf.writeChunk(*ch) {
			return
		}
	}
}

// writeChunk writes one mapping, recorded in the datapath's table first, and reports it; false
// when the subflow failed.
func (sf *subflow) writeChunk(ch txChunk) bool {
	mptcp := sf.c.mptcp.Load()
	if mptcp {
		if err := sf.claimTxSlot(&sf.wAcked); err != nil {
			sf.reportTx(0, err)
			return false
		}
	}
	sf.wMu.Lock()
	if sf.wStop.Load() {
		sf.wMu.Unlock()
		sf.reportTx(0, errWriterStopped)
		return false
	}
	if mptcp {
		sf.addTxMap(ch, sf.wSndRel)
	}
	err := sf.writeEOR(ch.bufs)
	sf.wMu.Unlock()
	if err != nil {
		sf.reportTx(0, err)
		return false
	}
	sf.wSndRel = sf.wSndRel.Add(uint32(ch.n))
	sf.written.Add(uint64(ch.n))
	sf.reportTx(ch.n, nil)
	return true
}

func (sf *subflow) reportTx(n int, err error) {
	select {
	case sf.c.txDoneCh <- txDone{sf: sf, n: n, err: err}:
		sf.c.wake()
	case <-sf.c.done:
	}
}

// claimTxSlot waits until the mappings the next one pushes out of the datapath's view are
// acknowledged at the subflow level: a retransmission can then no longer need them. Writing
// entry head reuses the slot of entry head-RING, and once head+1 is published the datapath
// searches only the last RING-1 entries, so entry head-(RING-1) leaves its view as well: that
// one, the later of the two, must be acknowledged.
func (sf *subflow) claimTxSlot(acked *uint32) error {
	head := sf.shm.Ctl.TxmapHead
	if head < uint64(datapath.TxMapRing-1) {
		return nil
	}
	old := sf.shm.Ctl.Txmap[(head+1)%uint64(datapath.TxMapRing)]
	end := seqnum.Value(old.Ssn).Add(uint32(old.Len))
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		if end.LessThanEq(seqnum.Value(*acked)) {
			return nil
		}
		if sf.wStop.Load() {
			return errWriterStopped
		}
		una, _, err := sf.ackedRel()
		if err != nil {
			return err
		}
		*acked = uint32(una)
		if end.LessThanEq(seqnum.Value(*acked)) {
			return nil
		}
		if sf.txWait == nil {
			sf.txWait = time.NewTimer(wait)
		} else {
			sf.txWait.Reset(wait)
		}
		select {
		case <-sf.c.done:
			sf.txWait.Stop()
			return errConnClosed
		case <-sf.txWait.C:
		}
	}
}

// addTxMap records the mapping for the bytes about to be written, then publishes it. On a
// connection with DSS checksums the entry carries the sum of its bytes and pseudo-header: the
// datapath completes it with the length it writes (RFC 8684 §3.3.1).
func (sf *subflow) addTxMap(ch txChunk, ssn seqnum.Value) {
	head := sf.shm.Ctl.TxmapHead
	e := &sf.shm.Ctl.Txmap[head%uint64(datapath.TxMapRing)]
	e.Dsn = uint64(ch.dsn)
	e.Ssn = uint32(ssn)
	e.Len = uint16(ch.n)
	e.Flags = 0
	if ssn == 1 && ch.dsn == sf.c.firstDSN {
		e.Flags = datapath.TxMapMPCData // may ride on MP_CAPABLE (txmap_on_mpc)
	}
	e.Csum = 0
	if sf.c.csumOn() {
		var sum dsscsum.Sum
		for _, b := range ch.bufs {
			sum.Add(b)
		}
		e.Csum = dsscsum.Partial(uint64(ch.dsn), uint32(ssn), &sum)
	}
	atomic.StoreUint64(&sf.shm.Ctl.TxmapHead, head+1)
}

// writeEOR writes the buffers completely with MSG_EOR, so the kernel never appends other bytes
// to the last socket buffer of this mapping. A partial write continues with the rest of the
// same mapping, which keeps the mapping table right.
func (sf *subflow) writeEOR(bufs [][]byte) error {
	for len(bufs) > 0 {
		var n int
		var werr error
		err := sf.raw.Write(func(fd uintptr) bool {
			n, werr = unix.SendmsgBuffers(int(fd), bufs, nil, nil, unix.MSG_EOR|unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			return !errors.Is(werr, unix.EAGAIN)
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return err
		}
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
	}
	return nil
}

// shutdown stops the writer and closes the socket. A graceful close first deletes the socket's
// datapath state, so that segments still arriving (FIN states) produce no events for a reused
// slot; abort resets the socket (with MP_FASTCLOSE or MP_TCPRST when the connection asked).
//
// A graceful close of an MPTCP subflow whose socket or writer still holds bytes (unwritten,
// unsent, or sent and not acknowledged) resets it instead: the kernel would go on sending them
// after close() while the datapath, its state gone, writes no DSS on them, and the peer would
// see data no mapping covers (§3.7). After a normal close the peer has DATA_ACKed everything, so
// those bytes are copies it has; after the linger ran out or the stack closed, the connection is
// given up and they go unsent. A subflow that is plain TCP (the connection fell back, either
// way) closes gracefully and delivers them.
func (sf *subflow) shutdown(abort bool) {
	if sf.gone {
		return
	}
	sf.gone = true
	sf.closeTx()
	if !abort && sf.c.stack != nil && sf.c.mptcp.Load() && !sf.c.st.rcv.fallback {
		n, err := unix.IoctlGetInt(sf.fd, unix.SIOCOUTQ)
		if err == nil && n+sf.queued > 0 {
			abort = true
			sf.c.stack.stats.SubflowCloseReset.Add(1)
			sf.c.stack.log.Debug("subflow closed with a reset: it still held data", "token", sf.c.token, "slot", sf.slot, "socket", n, "writer", sf.queued)
		}
	}
	if abort {
		sf.tc.SetLinger(0)
	} else if sf.c.stack != nil {
		sf.c.stack.dp.Forget(sf.fd)
	}
	// A parked reader is forgotten before the descriptor goes (its number may be reused); it
	// is not started again: the subflow is gone, and what it would read is ignored.
	if s := sf.c.stack; s != nil && s.poll != nil {
		s.poll.unpark(&sf.rdPark)
	}
	sf.tc.Close()
}

// closeTx ends the writer: nothing more is handed to it, and what it still holds is not
// written.
func (sf *subflow) closeTx() {
	if !sf.txClosed {
		sf.txClosed = true
		close(sf.txCh)
		sf.stopWriter()
	}
}

// errWriterStopped ends a writer stopped by stopWriter.
var errWriterStopped = errors.New("subflow writer stopped")

// stopWriter stops the writer for good: a write it waits in gives up at once (a deadline in the
// past), and once this returns it touches neither the socket nor the datapath slot again. A
// writer that outlived its subflow would otherwise record mappings in a slot another subflow
// took after the cooldown, or read TCP_INFO through a descriptor number another socket took.
// The writer reports its end (errWriterStopped, or the interrupted write's error), which drops
// what it still held.
func (sf *subflow) stopWriter() {
	sf.wStop.Store(true)
	if sf.tc != nil {
		sf.tc.SetWriteDeadline(time.Now())
	}
	sf.wMu.Lock()
	sf.wMu.Unlock()
}

// startDrain detaches a subflow that still has bytes to give: what reached its socket is read
// and reassembled before the socket goes, so that the peer need not send it again at the data
// level. The writer ends, and reading stops at what the socket holds (SHUT_RD: the queue, then
// EOF).
func (sf *subflow) startDrain(d time.Duration) {
	sf.draining = time.Now().Add(d)
	// From now on the datapath does not acknowledge a DATA_FIN arriving on this subflow by
	// itself: what arrives after the reads end is not taken.
	atomic.OrUint32(&sf.shm.Ctl.Flags, datapath.SubDrain)
	sf.closeTx()
	if !sf.eof {
		unix.Shutdown(sf.fd, unix.SHUT_RD)
	}
}

// tcpCARecovery is TCP_CA_Recovery in tcpi_ca_state; TCP_CA_Loss (after an RTO) follows it.
const tcpCARecovery = 3

// Fast probing of a stale subflow's path (setFastProbe).
const (
	staleRTOMax = time.Second
	// Linux gives up on a socket when its retransmissions have taken as long as tcp_retries2
	// (15) of them would with the backoff capped at its maximum RTO: with the cap at a second,
	// 14 s. A stale subflow keeps the time of the default cap instead (924.6 s), through
	// TCP_USER_TIMEOUT, which replaces that model while set.
	staleGiveUp = 925 * time.Second
)

// setFastProbe caps the retransmission timeout of a stale subflow at staleRTOMax while on, so
// that TCP retransmits within about a second of its path coming back; with the usual
// exponential backoff the next retransmission after an outage of ten seconds can be ten
// seconds later. Turned off, the socket's own settings return. Kernels before Linux 6.15 lack
// TCP_RTO_MAX_MS: nothing changes there.
func (sf *subflow) setFastProbe(on bool) error {
	if on == sf.fastProbe.on {
		return nil
	}
	p := &sf.fastProbe
	if on {
		rto, err := unix.GetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS)
		if err != nil {
			return fmt.Errorf("read TCP_RTO_MAX_MS: %w", err)
		}
		ut, err := unix.GetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if err != nil {
			return fmt.Errorf("read TCP_USER_TIMEOUT: %w", err)
		}
		if ut == 0 {
			if err := unix.SetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(staleGiveUp.Milliseconds())); err != nil {
				return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
			}
		}
		if err := unix.SetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS, int(staleRTOMax.Milliseconds())); err != nil {
			unix.SetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ut)
			return fmt.Errorf("set TCP_RTO_MAX_MS: %w", err)
		}
		p.on, p.rtoMax, p.userTimeout = true, rto, ut
		return nil
	}
	p.on = false
	err := unix.SetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS, p.rtoMax)
	if err2 := unix.SetsockoptInt(sf.fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, p.userTimeout); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("restore the retransmission timeouts: %w", err)
	}
	return nil
}

// tcpInfo reads the subflow socket's TCP_INFO.
func (sf *subflow) tcpInfo() (*unix.TCPInfo, error) {
	// Through the socket, not its descriptor number: the writer reads it too (claimTxSlot), and
	// once the subflow closes that number may belong to another socket.
	if sf.raw == nil {
		return nil, errors.New("read subflow TCP_INFO: no socket")
	}
	var info *unix.TCPInfo
	var err error
	if cerr := sf.raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil {
		return nil, fmt.Errorf("read subflow TCP_INFO: %w", cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("read subflow TCP_INFO: %w", err)
	}
	return info, nil
}

// ackedFrom returns the first relative SSN the peer has not acknowledged at the subflow level,
// and whether anything is outstanding: written to the socket and not acknowledged, whether
// TCP sent it or still queues it (a zero window, a dead path).
func (sf *subflow) ackedFrom(info *unix.TCPInfo) (una seqnum.Value, outstanding bool) {
	una = seqnum.Value(uint32(info.Bytes_acked-sf.ackBase) + 1)
	end := seqnum.Value(uint32(sf.written.Load()) + 1)
	return una, una.LessThan(end)
}

// ackedRel is ackedFrom on a fresh TCP_INFO.
func (sf *subflow) ackedRel() (una seqnum.Value, outstanding bool, err error) {
	info, err := sf.tcpInfo()
	if err != nil {
		return 0, false, err
	}
	una, outstanding = sf.ackedFrom(info)
	return una, outstanding, nil
}

// holds reports whether data at dsn was last handed to this subflow and is not yet DATA_ACKed.
func (sf *subflow) holds(dsn seqnum.DSN) bool {
	for _, r := range sf.inflight {
		if r.contains(dsn) {
			return true
		}
	}
	return false
}

// srtt is the subflow's smoothed RTT as the datapath last saw it.
func (sf *subflow) srtt() time.Duration {
	return time.Duration(atomic.LoadUint32(&sf.shm.St.SrttUs)) * time.Microsecond
}

// schedRTT is the RTT the scheduler compares: that of acknowledged data (sub_st.data_srtt_us),
// without the handshake's sample, which a SYN held for a second inflates for many round trips;
// 0 (unknown: the subflow takes two windows, which measure it) before data is acknowledged.
// Should no sample come once its first windows are acknowledged (a congestion control other
// than ours), TCP's own estimate.
func (sf *subflow) schedRTT() time.Duration {
	if us := atomic.LoadUint32(&sf.shm.St.DataSrttUs); us != 0 {
		return time.Duration(us) * time.Microsecond
	}
	if acked := atomic.LoadUint32(&sf.shm.St.SndUnaRel); acked != 0 && int32(acked-1) > schedRTTFallback {
		return sf.srtt()
	}
	return 0
}

// schedRTTFallback is how much data a subflow has acknowledged before schedRTT takes TCP's
// estimate for want of samples of its own.
const schedRTTFallback = 256 << 10

// inFlight is the bytes written to the socket and not yet acknowledged at the subflow level.
func (sf *subflow) inFlight() int {
	una := atomic.LoadUint32(&sf.shm.St.SndUnaRel)
	if una == 0 {
		return int(sf.written.Load())
	}
	return max(0, int(int64(sf.written.Load())-int64(una-1)))
}

// view is what the scheduler sees of the subflow.
func (sf *subflow) view() SubflowView {
	cwnd := int(atomic.LoadUint32(&sf.shm.St.SndCwnd))
	mss := int(atomic.LoadUint32(&sf.shm.St.Mss))
	if cwnd == 0 || mss == 0 {
		cwnd, mss = 10, 1400
	}
	return SubflowView{
		Backup: sf.backup || sf.peerBackup, SRTT: sf.schedRTT(), TCPRTT: sf.srtt(), RTTVar: sf.rttVar, Cwnd: cwnd, MSS: mss,
		InFlight: sf.inFlight(), Queued: sf.queued, Blocked: !sf.takes(),
	}
}

// takes reports whether the subflow's writer takes another mapping now.
func (sf *subflow) takes() bool { return sf.queued < writerQueued && len(sf.txCh) < cap(sf.txCh) }

// trimInflight drops the mappings the peer DATA_ACKed.
func (sf *subflow) trimInflight(una seqnum.DSN) {
	i := 0
	for i < len(sf.inflight) && sf.inflight[i].end().LessThanEq(una) {
		i++
	}
	sf.inflight = sf.inflight[i:]
}

func (sf *subflow) info() SubflowInfo {
	in := SubflowInfo{
		Slot: sf.slot, Local: sf.local.String(), Remote: sf.remote.String(), LocalID: sf.localID, RemoteID: sf.remoteID,
		Backup: sf.backup, PeerBackup: sf.peerBackup, Ready: sf.ready, Stale: sf.health.stale, Lossy: sf.health.lossy,
		BytesSent: sf.written.Load(), BytesRecv: sf.bytesRecv, Mapped: uint32(sf.mapped),
	}
	for i, h := range sf.rxHeld {
		if i == 0 {
			in.HeldAt = uint32(h.off)
		}
		in.Held += len(h.data)
	}
	for i, m := range sf.rxMaps {
		if i == 8 {
			in.RxMaps += " ..."
			break
		}
		in.RxMaps += fmt.Sprintf(" %d+%d>%d", uint32(m.ssn), m.len, uint64(m.dsn))
	}
	if sf.shm != nil {
		in.SRTT = sf.srtt()
		in.SchedRTT = sf.schedRTT()
		in.Cwnd = atomic.LoadUint32(&sf.shm.St.SndCwnd)
		in.Retrans = atomic.LoadUint32(&sf.shm.St.TotalRetrans)
		in.CCWindow = atomic.LoadUint32(&sf.shm.St.Cc.Cs.Path.Cwnd)
		in.CCSRTT = time.Duration(atomic.LoadUint32(&sf.shm.St.Cc.Cs.Path.SrttUs)) * time.Microsecond
		in.CCLossInt = uint64(atomic.LoadUint32(&sf.shm.St.Cc.Cs.Path.LossInt)) * 64
	}
	return in
}

func loadU32(p *uint32) uint32 { return atomic.LoadUint32(p) }

// sndWscale returns the peer's window scale from a connected socket's TCP_INFO (tcpi_snd_wscale,
// a bit field the Go struct leaves unnamed: the low nibble of byte 6).
func sndWscale(info *unix.TCPInfo) uint8 {
	return (*[8]byte)(unsafe.Pointer(info))[6] & 0x0f
}
