package control

import (
	"errors"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// writerSub is a subflow over a real loopback socket whose writer a test drives by hand.
func writerSub(t *testing.T, c *Conn) *subflow {
	t.Helper()
	tc, _ := tcpPair(t)
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	sf := &subflow{c: c, tc: tc, raw: raw, shm: new(datapath.Sub), txCh: make(chan *txChunk, 64), wSndRel: 1}
	raw.Control(func(fd uintptr) { sf.fd = int(fd) })
	return sf
}

// writeStopped runs writeChunk on its own goroutine, stops the writer once it is waiting, and
// returns what it reported.
func writeStopped(t *testing.T, c *Conn, sf *subflow, ch txChunk) txDone {
	t.Helper()
	ret := make(chan bool, 1)
	go func() { ret <- sf.writeChunk(ch) }()
	time.Sleep(50 * time.Millisecond) // the writer waits: for a mapping slot, or for room
	select {
	case <-ret:
		t.Fatal("the writer did not wait")
	default:
	}
	stopped := make(chan struct{})
	go func() { sf.stopWriter(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stopWriter did not return: the writer's wait was not interrupted")
	}
	select {
	case ok := <-ret:
		if ok {
			t.Fatal("a stopped writer reported its mapping written")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not end")
	}
	select {
	case d := <-c.txDoneCh:
		if d.err == nil || d.sf != sf {
			t.Fatalf("the writer reported %+v, want its failure", d)
		}
		return d
	default:
		t.Fatal("the writer ended without reporting: what it held would stay unwritten forever")
	}
	return txDone{}
}

// TestStopWriterWaitingForSlot: a writer waiting for a mapping slot (the ring full of mappings
// the peer has not acknowledged) ends when stopped, and records nothing in the slot afterwards:
// the slot may belong to another subflow by then.
func TestStopWriterWaitingForSlot(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	sf := writerSub(t, c)
	ring := uint64(datapath.TxMapRing)
	for i := range ring {
		sf.shm.Ctl.Txmap[i] = datapath.TxMap{Ssn: 1 + uint32(i)*1000, Len: 1000}
	}
	sf.shm.Ctl.TxmapHead = ring
	d := writeStopped(t, c, sf, txChunk{dsn: 5, bufs: [][]byte{make([]byte, 100)}, n: 100})
	if !errors.Is(d.err, errWriterStopped) {
		t.Fatalf("the writer ended with %v, want errWriterStopped", d.err)
	}
	if sf.shm.Ctl.TxmapHead != ring {
		t.Fatalf("a stopped writer recorded a mapping: head %d, want %d", sf.shm.Ctl.TxmapHead, ring)
	}
}

// TestStopWriterWaitingForRoom: a writer blocked in its write (the peer reads nothing, the
// socket's buffer is full) gives up as soon as it is stopped, and a chunk it is handed after
// that is neither recorded nor written.
func TestStopWriterWaitingForRoom(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	sf := writerSub(t, c)
	sf.tc.SetWriteBuffer(64 << 10)
	big := make([]byte, 32<<20) // far more than both sockets' buffers
	writeStopped(t, c, sf, txChunk{dsn: 5, bufs: [][]byte{big}, n: len(big)})
	head := sf.shm.Ctl.TxmapHead
	written := sf.written.Load()
	if sf.writeChunk(txChunk{dsn: seqnum.DSN(5 + len(big)), bufs: [][]byte{make([]byte, 10)}, n: 10}) {
		t.Fatal("a stopped writer wrote a mapping")
	}
	if sf.shm.Ctl.TxmapHead != head || sf.written.Load() != written {
		t.Fatalf("a stopped writer touched the slot or the socket: head %d→%d, written %d→%d", head, sf.shm.Ctl.TxmapHead, written, sf.written.Load())
	}
	if d := <-c.txDoneCh; !errors.Is(d.err, errWriterStopped) {
		t.Fatalf("the later chunk ended with %v, want errWriterStopped", d.err)
	}
}
