package control

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// fakePlane is a dataplane without sockets or datapath: it records what the connection asked
// of it and answers TCP_INFO with what the test set. Safe for the test's goroutines and the
// connection's.
type fakePlane struct {
	mu        sync.Mutex
	acks      []*subflow // pure ACKs asked for, by subflow
	ackFlags  []uint32   // the connection's datapath flags when each was asked for
	acked     map[*subflow]uint64
	caState   map[*subflow]uint8
	fastProbe map[*subflow]bool
	closed    map[*subflow]bool // closeSubflow's abort, by subflow
	released  []uint32          // subflow slots returned
	connDone  bool              // releaseConn ran
}

var _ dataplane = (*fakePlane)(nil)

func newFakePlane() *fakePlane {
	return &fakePlane{acked: map[*subflow]uint64{}, caState: map[*subflow]uint8{},
		fastProbe: map[*subflow]bool{}, closed: map[*subflow]bool{}}
}

func (f *fakePlane) sendACK(sf *subflow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = append(f.acks, sf)
	if sf.c != nil && sf.c.shm != nil {
		f.ackFlags = append(f.ackFlags, atomic.LoadUint32(&sf.c.shm.Ctl.Flags))
	}
	return nil
}

// tcpInfo reports the bytes the test acknowledged at the subflow level (setAcked) and its
// congestion state.
func (f *fakePlane) tcpInfo(sf *subflow) (*unix.TCPInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &unix.TCPInfo{Bytes_acked: f.acked[sf], Ca_state: f.caState[sf]}, nil
}

func (f *fakePlane) setFastProbe(sf *subflow, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fastProbe[sf] = on
	return nil
}

func (f *fakePlane) sockState(*subflow) (datapath.SkState, bool) { return datapath.SkState{}, false }

func (f *fakePlane) closeSubflow(sf *subflow, abort bool) {
	f.mu.Lock()
	f.closed[sf] = abort
	f.mu.Unlock()
	if !sf.gone {
		sf.gone = true
		sf.closeTx()
	}
}

func (f *fakePlane) releaseSubflow(slot uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, slot)
}

func (f *fakePlane) releaseConn(*Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connDone = true
}

// setAcked has TCP_INFO report n bytes of sf acknowledged at the subflow level.
func (f *fakePlane) setAcked(sf *subflow, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked[sf] = n
}

func (f *fakePlane) ackCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acks)
}

func (f *fakePlane) probing(sf *subflow) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fastProbe[sf]
}

// Where the test connections' streams start.
const (
	coreSndStart = seqnum.DSN(1000)
	coreRcvStart = seqnum.DSN(500000)
)

// newCoreConn is an established MPTCP connection over a fake dataplane and shared memory of
// its own, without subflows (addCoreSub) and without its goroutine: the peer has announced a
// window of 1 GiB and acknowledged nothing, we have received nothing.
func newCoreConn(t *testing.T, sched string) (*Conn, *fakePlane) {
	t.Helper()
	s := &Stack{log: slog.New(slog.DiscardHandler), rxWindow: 1 << 20}
	c := newConn(s)
	fp := newFakePlane()
	c.plane = fp
	c.shm = new(datapath.Conn)
	c.mptcp.Store(true)
	var err error
	if c.sched, err = NewScheduler(sched); err != nil {
		t.Fatal(err)
	}
	c.st.snd.start(coreSndStart)
	c.st.rcv.rx.rcvNxt = coreRcvStart
	c.shm.Ctl.RcvNxt = uint64(coreRcvStart)
	c.shm.St.RxAck = uint64(coreRcvStart)
	c.shm.St.AckSent = uint64(coreRcvStart) // the datapath sent that DATA_ACK already
	c.shm.St.PeerDataAck = uint64(coreSndStart)
	c.shm.St.PeerWndSet = 1
	c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(1 << 30))
	c.st.pendingSub = map[uint32][]datapath.Event{}
	c.st.announces = map[uint8]*announce{}
	return c, fp
}

// addCoreSub attaches a ready subflow with the given smoothed RTT, as the datapath reports it.
func addCoreSub(c *Conn, srtt time.Duration) *subflow {
	sf := &subflow{c: c, slot: uint32(len(c.subs)), fd: -1, shm: new(datapath.Sub), txCh: make(chan *txChunk, 64),
		mapped: 1, ready: true}
	sf.health.lastProgress = time.Now()
	sf.shm.St.SrttUs = uint32(srtt.Microseconds())
	sf.shm.St.DataSrttUs = uint32(srtt.Microseconds()) // measured on data already
	sf.shm.St.SndCwnd = 20                             // two windows of room: 56000 bytes, more than the tests write at once
	sf.shm.St.Mss = 1400
	sf.shm.St.AckSent = c.shm.St.AckSent
	c.subs = append(c.subs, sf)
	return sf
}

// pattern is n bytes of the application's stream from DSN dsn on.
func pattern(dsn seqnum.DSN, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = streamByte(dsn.Add(uint64(i)))
	}
	return b
}

// queueWrite hands n bytes of the stream to the connection as Write does, without waiting.
func queueWrite(c *Conn, n int) {
	c.txq.push(pattern(c.st.snd.end.Add(uint64(c.txq.len())), n))
}

// handed takes the mappings handed to sf's writer so far.
func handed(sf *subflow) []txChunk {
	var out []txChunk
	for {
		select {
		case ch, ok := <-sf.txCh:
			if !ok {
				return out
			}
			out = append(out, *ch)
		default:
			return out
		}
	}
}

// checkChunk fails unless ch maps n bytes at dsn and carries the stream's bytes there.
func checkChunk(t *testing.T, ch txChunk, dsn seqnum.DSN, n int) {
	t.Helper()
	if ch.dsn != dsn || ch.n != n {
		t.Fatalf("mapping %d+%d, want %d+%d", uint64(ch.dsn), ch.n, uint64(dsn), n)
	}
	var got []byte
	for _, b := range ch.bufs {
		got = append(got, b...)
	}
	if string(got) != string(pattern(dsn, n)) {
		t.Fatalf("mapping at %d carries other bytes than the stream's", uint64(dsn))
	}
}

// fakeWriter stands in for a subflow's writer goroutine: it takes the mappings, counts them
// written, and reports them as writeLoop does; with deliver, TCP at once acknowledges them at
// the subflow level (TCP_INFO). It ends when the subflow's writer is closed.
type fakeWriter struct {
	mu     sync.Mutex
	chunks []txChunk
	n      atomic.Int64
}

func startFakeWriter(c *Conn, fp *fakePlane, sf *subflow, deliver bool) *fakeWriter {
	w := &fakeWriter{}
	go func() {
		for ch := range sf.txCh {
			w.mu.Lock()
			w.chunks = append(w.chunks, *ch)
			w.mu.Unlock()
			sf.written.Add(uint64(ch.n))
			if deliver {
				fp.setAcked(sf, sf.written.Load())
			}
			w.n.Add(int64(ch.n))
			select {
			case c.txDoneCh <- txDone{sf: sf, n: ch.n}:
			case <-c.done:
				return
			}
		}
	}()
	return w
}

func (w *fakeWriter) taken() []txChunk {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]txChunk(nil), w.chunks...)
}

// dataAck has the peer DATA_ACK everything below una: the datapath stores it and raises the
// event.
func dataAck(c *Conn, una seqnum.DSN) {
	atomic.StoreUint64(&c.shm.St.PeerDataAck, uint64(una))
	c.deliver(datapath.Event{Type: datapath.EvDataAck, A: uint64(una)})
}
