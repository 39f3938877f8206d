package control

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

func TestRxMapsMergeAndRepeats(t *testing.T) {
	var ms rxMaps
	// A peer's writes, each mapped on its own: they continue one another and become one.
	for i := range 100 {
		if ms.add(rxMap{dsn: seqnum.DSN(5000 + 100*i), ssn: seqnum.Value(1 + 100*i), len: 100}) != addStored {
			t.Fatal("add refused")
		}
	}
	if len(ms) != 1 || ms[0].len != 10000 {
		t.Fatalf("contiguous mappings not merged: %d entries, first %+v", len(ms), ms[0])
	}
	// Retransmissions repeat mappings the merged one covers: nothing is added.
	for _, i := range []int{0, 42, 99} {
		ms.add(rxMap{dsn: seqnum.DSN(5000 + 100*i), ssn: seqnum.Value(1 + 100*i), len: 100})
	}
	if len(ms) != 1 {
		t.Fatalf("repeats added entries: %d", len(ms))
	}
	// A mapping on another DSN range (another subflow carried the bytes between), then one
	// that arrives out of order: sorted by SSN.
	ms.add(rxMap{dsn: 90000, ssn: 20001, len: 50})
	ms.add(rxMap{dsn: 80000, ssn: 10001, len: 50})
	for _, c := range []struct {
		off  uint32
		want uint64 // DSN, 0: no mapping
	}{{1, 5000}, {5000, 9999}, {10000, 14999}, {10001, 80000}, {10050, 80049}, {10051, 0}, {20025, 90024}, {20051, 0}} {
		m, ok := ms.find(seqnum.Value(c.off))
		got := uint64(0)
		if ok {
			got = uint64(m.dsn.Add(uint64(seqnum.Value(c.off).Sub(m.ssn))))
		}
		if got != c.want {
			t.Errorf("SSN %d maps to DSN %d, want %d", c.off, got, c.want)
		}
	}
	ms.prune(10051)
	if len(ms) != 1 || ms[0].ssn != 20001 {
		t.Fatalf("prune: %+v", ms)
	}
}

func TestRxMapsBounded(t *testing.T) {
	var ms rxMaps
	// Byte-sized mappings with gaps, the worst a peer can send: bounded, and found.
	for i := range maxRxMaps {
		if ms.add(rxMap{dsn: seqnum.DSN(2 * i), ssn: seqnum.Value(1 + 2*(maxRxMaps-1-i)), len: 1}) != addStored {
			t.Fatalf("refused at %d", i)
		}
	}
	if ms.add(rxMap{dsn: 1 << 40, ssn: seqnum.Value(1 + 2*maxRxMaps), len: 1}) == addStored {
		t.Fatal("a mapping beyond maxRxMaps was stored")
	}
	for i := 1; i < len(ms); i++ {
		if !ms[i-1].ssn.LessThan(ms[i].ssn) {
			t.Fatalf("not sorted at %d", i)
		}
	}
	if m, ok := ms.find(seqnum.Value(1 + 2*10)); !ok || m.dsn != seqnum.DSN(2*(maxRxMaps-1-10)) {
		t.Fatalf("find: %+v %v", m, ok)
	}
}

func TestEvQueueBounded(t *testing.T) {
	q := newEvQueue()
	for i := range maxConnEvents {
		if !q.put(datapath.Event{A: uint64(i)}) {
			t.Fatalf("refused event %d", i)
		}
	}
	if q.put(datapath.Event{}) {
		t.Fatal("an event beyond maxConnEvents was queued")
	}
	select {
	case <-q.wake:
	default:
		t.Fatal("no wake-up")
	}
	evs, overflow := q.take(nil)
	if len(evs) != maxConnEvents || !overflow || evs[0].A != 0 || evs[len(evs)-1].A != maxConnEvents-1 {
		t.Fatalf("take: %d events, overflow %v", len(evs), overflow)
	}
	if q.put(datapath.Event{}) {
		t.Fatal("queued an event after the overflow")
	}
}

// testConn is a connection with a stack and shared state but no datapath or subflow sockets.
func testConn(rcvNxt seqnum.DSN) (*Conn, *subflow) {
	s := &Stack{log: slog.New(slog.DiscardHandler), rxWindow: 1 << 20}
	c := newConn(s)
	c.shm = new(datapath.Conn)
	c.mptcp.Store(true)
	c.st.rcv.rx.rcvNxt = rcvNxt
	c.shm.Ctl.RcvNxt = uint64(rcvNxt)
	c.shm.St.RxAck = uint64(rcvNxt)
	sf := &subflow{c: c, mapped: 1}
	return c, sf
}

func TestAcceptRxMapWindows(t *testing.T) {
	c, sf := testConn(1000)
	// Beyond the connection's receive window: the bytes are read and dropped.
	if !c.acceptRxMap(sf, rxMap{dsn: 1000 + 1<<40, ssn: 1, len: 100}) {
		t.Fatal("subflow ended")
	}
	// Subflow bytes that cannot be in the subflow's window: the mapping is dropped.
	c.acceptRxMap(sf, rxMap{dsn: 1000, ssn: seqnum.Value(1 + 3<<20), len: 100})
	// In the window.
	c.acceptRxMap(sf, rxMap{dsn: 1000, ssn: 101, len: 5})
	if got := c.stack.stats.NoDSSInWindow.Load(); got != 1 {
		t.Errorf("NoDSSInWindow %d, want 1", got)
	}
	if got := c.stack.stats.DSSNoMatchTCP.Load(); got != 1 {
		t.Errorf("DSSNoMatchTCP %d, want 1", got)
	}
	if len(sf.rxMaps) != 2 {
		t.Fatalf("%d mappings stored, want 2", len(sf.rxMaps))
	}
	data := append(bytes.Repeat([]byte{'x'}, 100), "hello"...)
	sf.rxHeld = append(sf.rxHeld, rxChunk{sf: sf, off: 1, data: data})
	sf.heldBytes = len(data)
	c.processHeld(sf)
	if c.st.rcv.rx.dropped != 100 || c.st.rcv.rx.buffered() != 0 || sf.heldBytes != 0 {
		t.Fatalf("dropped %d, buffered %d, held %d", c.st.rcv.rx.dropped, c.st.rcv.rx.buffered(), sf.heldBytes)
	}
	b := make([]byte, 10)
	if n, _ := c.rxq.popInto(b, newDeadline(), nil); string(b[:n]) != "hello" {
		t.Fatalf("read %q", b[:n])
	}
}

// TestDataAckFollowsConsumption: the DATA_ACK the datapath writes covers only what the
// application took, and the DATA_FIN once everything before it was taken.
func TestDataAckFollowsConsumption(t *testing.T) {
	c, sf := testConn(1000)
	c.acceptRxMap(sf, rxMap{dsn: 1000, ssn: 1, len: 100, fin: true})
	sf.rxHeld = append(sf.rxHeld, rxChunk{sf: sf, off: 1, data: make([]byte, 100)})
	c.processHeld(sf)
	if got := c.shm.Ctl.RcvNxt; got != 1000 {
		t.Fatalf("DATA_ACK %d before the application read, want 1000", got)
	}
	if n, _ := c.rxq.popInto(make([]byte, 60), newDeadline(), nil); n != 60 {
		t.Fatalf("read %d", n)
	}
	c.publishAck()
	if got := c.shm.Ctl.RcvNxt; got != 1060 {
		t.Fatalf("DATA_ACK %d after 60 bytes read, want 1060", got)
	}
	c.rxq.popInto(make([]byte, 100), newDeadline(), nil)
	c.publishAck()
	if got := c.shm.Ctl.RcvNxt; got != 1101 {
		t.Fatalf("DATA_ACK %d after everything and the DATA_FIN, want 1101", got)
	}
}

func TestEvQueueCoalescesMappings(t *testing.T) {
	q := newEvQueue()
	// One-byte segments, each with its own mapping, continuing one another.
	for i := range 100_000 {
		if !q.put(datapath.Event{Type: datapath.EvRxMap, Sub: 3, A: uint64(1000 + i), B: uint64(1 + i), C: 1}) {
			t.Fatalf("refused at %d", i)
		}
	}
	// Not merged: another subflow, a gap, a DATA_FIN.
	q.put(datapath.Event{Type: datapath.EvRxMap, Sub: 4, A: 101000, B: 100001, C: 1})
	q.put(datapath.Event{Type: datapath.EvRxMap, Sub: 3, A: 101001, B: 100002, C: 1})
	q.put(datapath.Event{Type: datapath.EvRxMap, Sub: 3, A: 101002, B: 100003, C: 2 | datapath.RxMapFin})
	evs, overflow := q.take(nil)
	if overflow {
		t.Fatal("overflow")
	}
	var total uint64
	for _, ev := range evs[:len(evs)-3] {
		total += ev.C & 0xffff
		if ev.C > 0xffff {
			t.Fatalf("merged length %#x", ev.C)
		}
	}
	if want := (100_000 + 0xfffe) / 0xffff; len(evs) != want+3 || total != 100_000 {
		t.Fatalf("%d events covering %d bytes, want %d and 100000", len(evs), total, want+3)
	}
	if evs[1].A != 1000+0xffff || evs[1].B != 1+0xffff {
		t.Fatalf("second event %+v", evs[1])
	}
}

// TestFallbackBeyondWindowDropped: after a fallback, bytes that continue a mapping the peer put
// beyond the receive window cannot become in-order; they are dropped, not held without bound.
func TestFallbackBeyondWindowDropped(t *testing.T) {
	c, sf := testConn(1000)
	c.acceptRxMap(sf, rxMap{dsn: 1000 + 1<<40, ssn: 1, len: 100})
	c.handleRx(rxChunk{sf: sf, off: 1, data: make([]byte, 100)})
	c.startRxFallback(sf)
	off := seqnum.Value(101)
	for range 40 {
		c.handleRx(rxChunk{sf: sf, off: off, data: make([]byte, 64<<10)})
		off = off.Add(64 << 10)
	}
	if n := c.st.rcv.rx.buffered(); n > c.stack.rxWindow {
		t.Fatalf("reassembly holds %d bytes, more than the receive window %d", n, c.stack.rxWindow)
	}
	if c.st.rcv.rx.dropped != 100+40*64<<10 || c.stack.stats.NoDSSInWindow.Load() == 0 {
		t.Fatalf("dropped %d bytes, NoDSSInWindow %d", c.st.rcv.rx.dropped, c.stack.stats.NoDSSInWindow.Load())
	}
}

// TestDataAckWithoutDataFin: reception that ended without a DATA_FIN (a fallen-back subflow's
// FIN) acknowledges no DATA_FIN, also where the consumed data ends at DSN 0, the unset FIN DSN.
func TestDataAckWithoutDataFin(t *testing.T) {
	c, sf := testConn(0)
	c.startRxFallback(sf)
	c.st.rcv.eof = true // subflowEnded on a plain half-close
	c.publishAck()
	if got := c.shm.Ctl.RcvNxt; got != 0 {
		t.Fatalf("DATA_ACK %d without a DATA_FIN, want 0", got)
	}
}

// TestEventsMissed: a connection whose event the datapath lost, or whose queue refused one, is
// to be reset with a lack-of-resources reason, and counted.
func TestEventsMissed(t *testing.T) {
	c, _ := testConn(1000)
	if err := c.eventsMissed(false); err != nil {
		t.Fatalf("nothing missed: %v", err)
	}
	if err := c.eventsMissed(true); err != errEventOverflow || c.stack.stats.EventOverflowReset.Load() != 1 {
		t.Fatalf("overflow: %v, counted %d", err, c.stack.stats.EventOverflowReset.Load())
	}
	c.shm.St.EvLost = 1 // set by the datapath when the ring buffer refused an event
	var re *ResetError
	if err := c.eventsMissed(false); err != errEventLost || !errors.As(err, &re) || re.Reason != RstLackOfResources {
		t.Fatalf("lost: %v", err)
	}
	if c.stack.stats.EventLostReset.Load() != 1 {
		t.Fatalf("EventLostReset %d", c.stack.stats.EventLostReset.Load())
	}
}

// TestLostEventsLooked: a connection looks at its lost-event flag only when the stack saw the
// datapath's EventLost counter move (an idle connection runs no timer to look), and then once.
func TestLostEventsLooked(t *testing.T) {
	c, _ := testConn(1000)
	c.shm.St.EvLost = 1
	if err := c.lostEvents(); err != nil {
		t.Fatalf("the stack saw no loss, the connection looked: %v", err)
	}
	c.stack.lostGen.Add(1)
	if err := c.lostEvents(); err != errEventLost {
		t.Fatalf("after the stack saw a loss: %v, want %v", err, errEventLost)
	}
	if err := c.lostEvents(); err != nil {
		t.Fatalf("looked twice for one loss: %v", err)
	}
	c.shm.St.EvLost = 0
	c.stack.lostGen.Add(1)
	if err := c.lostEvents(); err != nil {
		t.Fatalf("another connection's loss reset this one: %v", err)
	}
}

// TestSmallWritesShareBuffers: many one-byte writes (Write, or ReadFrom's small reads) share
// pool buffers, so they neither hold a buffer each nor make a mapping of more iovecs than one
// sendmsg takes.
func TestSmallWritesShareBuffers(t *testing.T) {
	q := newByteQueue(1 << 20)
	for i := range 100_000 {
		if _, err := q.pushWait([]byte{byte(i)}, newDeadline(), nil, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	// The README's 64 KiB buffers (bufSize, 65,534 bytes: one full mapping): two of them.
	if len(q.bufs) != 2 || cap(q.bufs[0]) > 64<<10 || len(q.bufs[0]) != bufSize {
		t.Fatalf("100000 one-byte writes took %d buffers, the first of %d bytes (capacity %d), want 2 of 64 KiB",
			len(q.bufs), len(q.bufs[0]), cap(q.bufs[0]))
	}
	for i := range 100_000 {
		b := make([]byte, 1, minReadBuf)
		b[0] = byte(i)
		if err := q.pushOwned(b, newDeadline(), nil, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	if want := 4; len(q.bufs) > want+1 { // two more, and one shared at the seam
		t.Fatalf("then 100000 one-byte reads: %d buffers, want at most %d", len(q.bufs), want+1)
	}
	var got []byte
	for _, b := range q.bufs {
		got = append(got, b...)
	}
	for i := range 200_000 {
		if got[i] != byte(i%100_000) {
			t.Fatalf("byte %d is %d", i, got[i])
		}
	}

	// A mapping cut from a send buffer of one-byte pieces stays within one sendmsg's iovecs.
	c, _ := testConn(1000)
	c.mptcp.Store(false)
	for i := range 5000 {
		c.st.snd.pieces = append(c.st.snd.pieces, sendPiece{dsn: seqnum.DSN(1000 + i), data: []byte{byte(i)}})
	}
	ch, ok := c.nextMapping(maxMapping)
	if !ok || len(ch.bufs) != 1024 || ch.n != 1024 {
		t.Fatalf("mapping of %d bytes in %d buffers, want 1024 in 1024", ch.n, len(ch.bufs))
	}
	if r := c.st.snd.rangeAt(1000, maxMapping); len(r.bufs) != 1024 {
		t.Fatalf("range of %d buffers", len(r.bufs))
	}
}

// TestRxMapsConflict: a mapping may repeat or extend what a stored one maps, never map the same
// subflow bytes to other DSNs (the kernel's DSSNotMatching).
func TestRxMapsConflict(t *testing.T) {
	var ms rxMaps
	if ms.add(rxMap{dsn: 5000, ssn: 1, len: 1000}) != addStored || ms.add(rxMap{dsn: 9000, ssn: 2001, len: 100}) != addStored {
		t.Fatal("add refused")
	}
	for _, c := range []struct {
		m    rxMap
		want addResult
	}{
		{rxMap{dsn: 5000, ssn: 1, len: 1000}, addStored},                    // a repeat
		{rxMap{dsn: 5100, ssn: 101, len: 50}, addStored},                    // inside, the same DSNs
		{rxMap{dsn: 5000, ssn: 1, len: 1500}, addStored},                    // longer, the same start
		{rxMap{dsn: 5001, ssn: 1, len: 1000}, addConflict},                  // the same bytes, one DSN on
		{rxMap{dsn: 7000, ssn: 501, len: 10}, addConflict},                  // inside, other DSNs
		{rxMap{dsn: 9000 - 1100, ssn: 901, len: 200}, addConflict},          // across the first's end (the rest unmapped yet)
		{rxMap{dsn: 8000, ssn: 1901, len: 200}, addConflict},                // covering the second's start, other DSNs
		{rxMap{dsn: 8900, ssn: 1901, len: 200}, addStored},                  // covering the second's start, the same DSNs
		{rxMap{dsn: 70000, ssn: 3001, len: 100}, addStored},                 // elsewhere
		{rxMap{dsn: 5000 + 1500, ssn: 1501, len: 10, fin: true}, addStored}, // the same DSNs, a DATA_FIN after
	} {
		if got := ms.add(c.m); got != c.want {
			t.Errorf("add %+v = %d, want %d", c.m, got, c.want)
		}
	}
	// Conflicting mappings changed nothing: every stored byte maps as first stored.
	for _, c := range []struct{ off, dsn uint64 }{{1, 5000}, {501, 5500}, {1000, 5999}, {2001, 9000}, {2100, 9099}} {
		m, ok := ms.find(seqnum.Value(c.off))
		if !ok || uint64(m.dsnAt(seqnum.Value(c.off))) != c.dsn {
			t.Errorf("SSN %d maps to %+v (%t), want DSN %d", c.off, m, ok, c.dsn)
		}
	}
}
