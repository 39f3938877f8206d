package control

import (
	"log/slog"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/seqnum"
)

// TestDataRetransmitTimer drives the connection-level retransmission timer: data that no
// subflow holds at the TCP level and the peer does not DATA_ACK is queued again from the
// DATA_ACK, once per timeout, with the timeout doubling; a DATA_ACK that moves resets it.
func TestDataRetransmitTimer(t *testing.T) {
	s := &Stack{log: slog.New(slog.DiscardHandler)}
	c := newConn(s)
	c.mptcp.Store(true)
	una := seqnum.DSN(1<<64 - 1000) // across the 64-bit wrap
	c.st.snd.una, c.st.snd.nxt = una, una.Add(100<<10)
	t0 := time.Unix(1000, 0)

	c.checkDataAck(t0) // arms the timer for una
	c.checkDataAck(t0.Add(199 * time.Millisecond))
	if len(c.st.reinject) != 0 {
		t.Fatalf("retransmitted before the timeout: %v", c.st.reinject)
	}
	c.checkDataAck(t0.Add(200 * time.Millisecond))
	if len(c.st.reinject) != 1 || c.st.reinject[0] != (dsnRange{una, maxDataRtxChunk}) {
		t.Fatalf("reinject = %v, want one chunk of %d at %d", c.st.reinject, maxDataRtxChunk, uint64(una))
	}
	if got := s.stats.DataRetransmit.Load(); got != 1 {
		t.Fatalf("DataRetransmit = %d, want 1", got)
	}

	// While the retransmission waits for a subflow, the timer does not fire again.
	c.checkDataAck(t0.Add(2 * time.Second))
	if len(c.st.reinject) != 1 {
		t.Fatalf("queued twice: %v", c.st.reinject)
	}
	// Sent, still no DATA_ACK: the next one comes after twice the timeout.
	c.st.reinject = nil
	at := t0.Add(2 * time.Second)
	c.checkDataAck(at.Add(399 * time.Millisecond))
	if len(c.st.reinject) != 0 {
		t.Fatal("backoff not applied")
	}
	c.checkDataAck(at.Add(400 * time.Millisecond))
	if len(c.st.reinject) != 1 || s.stats.DataRetransmit.Load() != 2 {
		t.Fatalf("second retransmission missing: %v", c.st.reinject)
	}

	// The DATA_ACK moves: the timer restarts from the base timeout, and a short tail is sent whole.
	c.st.reinject = nil
	c.st.snd.una = c.st.snd.nxt.Add(^uint64(99)) // 100 bytes left
	at = at.Add(time.Second)
	c.checkDataAck(at)
	c.checkDataAck(at.Add(200 * time.Millisecond))
	if len(c.st.reinject) != 1 || c.st.reinject[0] != (dsnRange{c.st.snd.una, 100}) {
		t.Fatalf("reinject = %v, want the 100-byte tail", c.st.reinject)
	}

	// Everything acknowledged: nothing to do.
	c.st.reinject = nil
	c.st.snd.una = c.st.snd.nxt
	c.checkDataAck(at.Add(time.Minute))
	c.checkDataAck(at.Add(2 * time.Minute))
	if len(c.st.reinject) != 0 {
		t.Fatalf("retransmitted with nothing outstanding: %v", c.st.reinject)
	}
}
