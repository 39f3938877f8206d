package control

import (
	"math"
	"testing"
	"time"
)

// recordSched picks nothing and keeps what it was shown.
type recordSched struct {
	views []SubflowView
	conn  ConnView
}

func (*recordSched) Name() string { return "record" }

func (r *recordSched) Pick(v []SubflowView, c ConnView) []int {
	r.views, r.conn = append([]SubflowView(nil), v...), c
	return nil
}

// TestScheduleConnView: the scheduler sees the bytes waiting, in Write's queue or in the send
// buffer, the peer's window from its DATA_ACK, and a subflow whose writer is full as blocked;
// nothing is handed over while it picks none, and the send path looks again.
func TestScheduleConnView(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	r := &recordSched{}
	c.sched = r
	a := addCoreSub(c, 10*time.Millisecond)
	b := addCoreSub(c, 40*time.Millisecond)
	for range cap(b.txCh) {
		b.txCh <- &txChunk{}
	}
	c.shm.St.PeerDataAck = uint64(coreSndStart.Add(1000))
	c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(71000))
	queueWrite(c, 5000)
	if v := c.connView(time.Now()); v.Backlog != 5000 {
		t.Errorf("written, not yet taken: backlog %d, want 5000", v.Backlog)
	}
	c.pumpTx()
	if r.conn.Backlog != 5000 || r.conn.Window != 70000 {
		t.Errorf("scheduler saw backlog %d, window %d; want 5000, 70000", r.conn.Backlog, r.conn.Window)
	}
	if len(r.views) != 2 || r.views[0].Blocked || !r.views[1].Blocked {
		t.Errorf("views %+v, want two, the second blocked", r.views)
	}
	if len(a.txCh) != 0 || c.st.pumpAt.IsZero() || !c.st.snd.hasUnsent() {
		t.Errorf("handed %d mappings, retry at %v, unsent %t; want none, a retry, the data kept", len(a.txCh), c.st.pumpAt, c.st.snd.hasUnsent())
	}
	c.shm.St.PeerWndSet = 0
	c.st.pumpAt = time.Time{}
	c.pumpTx()
	if r.conn.Window != math.MaxInt {
		t.Errorf("window not announced: scheduler saw %d, want none (MaxInt)", r.conn.Window)
	}
}

// pickSched always picks the same indexes.
type pickSched []int

func (pickSched) Name() string { return "pick" }

func (p pickSched) Pick([]SubflowView, ConnView) []int { return p }

// TestScheduleDropsBadPicks: picks of a subflow whose writer is full, or of no subflow, are
// dropped before a mapping is cut: the send path neither blocks on the writer nor loses the
// data, and looks again later.
func TestScheduleDropsBadPicks(t *testing.T) {
	for _, picks := range []pickSched{{1}, {2}, {-1}} {
		c, _ := newCoreConn(t, "default")
		c.sched = picks
		addCoreSub(c, 10*time.Millisecond)
		b := addCoreSub(c, 40*time.Millisecond)
		for range cap(b.txCh) {
			b.txCh <- &txChunk{}
		}
		queueWrite(c, 1000)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.pumpTx()
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("picks %v: the send path blocked", picks)
		}
		if c.st.snd.nxt != coreSndStart || !c.st.snd.hasUnsent() || c.st.pumpAt.IsZero() {
			t.Errorf("picks %v: nxt %d, unsent %t, retry %v; want nothing handed, the data kept, a retry", picks, uint64(c.st.snd.nxt), c.st.snd.hasUnsent(), c.st.pumpAt)
		}
	}
}
