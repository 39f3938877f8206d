package control

import (
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// TestScheduleNextMapping: the default scheduler gives the next mapping to the subflow that
// delivers it soonest, and to the other one once that one has no room; each mapping carries the
// stream's bytes at its DSN.
func TestScheduleNextMapping(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	slow := addCoreSub(c, 40*time.Millisecond)
	fast := addCoreSub(c, 10*time.Millisecond)

	queueWrite(c, 3000)
	c.pumpTx()
	if got := handed(slow); len(got) != 0 {
		t.Fatalf("the slow subflow got %d mappings", len(got))
	}
	got := handed(fast)
	if len(got) != 1 {
		t.Fatalf("the fast subflow got %d mappings, want 1", len(got))
	}
	checkChunk(t, got[0], coreSndStart, 3000)
	if c.st.snd.nxt != coreSndStart.Add(3000) || c.shm.Ctl.SndNxt != uint64(coreSndStart.Add(3000)) {
		t.Fatalf("snd.nxt %d, datapath's %d, want %d", uint64(c.st.snd.nxt), c.shm.Ctl.SndNxt, uint64(coreSndStart.Add(3000)))
	}
	if fast.queued != 3000 || len(fast.inflight) != 1 || len(c.st.snd.unwritten) != 1 {
		t.Fatalf("queued %d, inflight %v, unwritten %v", fast.queued, fast.inflight, c.st.snd.unwritten)
	}

	// The fast subflow's socket holds more than the scheduler lets it: the next mapping goes
	// on the slow one.
	fast.written.Store(1 << 20)
	fast.shm.St.SndUnaRel = 1
	queueWrite(c, 500)
	c.pumpTx()
	if got := handed(fast); len(got) != 0 {
		t.Fatalf("the full subflow got %d more mappings", len(got))
	}
	got = handed(slow)
	if len(got) != 1 {
		t.Fatalf("the slow subflow got %d mappings, want 1", len(got))
	}
	checkChunk(t, got[0], coreSndStart.Add(3000), 500)

	// Neither has room: the data waits, and the send path looks again in a millisecond.
	slow.written.Store(1 << 20)
	slow.shm.St.SndUnaRel = 1
	queueWrite(c, 100)
	c.pumpTx()
	if n := len(handed(fast)) + len(handed(slow)); n != 0 {
		t.Fatalf("%d mappings handed to subflows without room", n)
	}
	if c.st.pumpAt.IsZero() || !c.st.snd.hasUnsent() {
		t.Fatalf("no retry armed (pumpAt %v) or the data is gone", c.st.pumpAt)
	}
}

// TestScheduleOneSubflowUntilWindowKnown: until the peer announced its window, data goes on
// the first usable subflow, in order, even when another would deliver it sooner.
func TestScheduleOneSubflowUntilWindowKnown(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	c.shm.St.PeerWndSet = 0
	first := addCoreSub(c, 40*time.Millisecond)
	other := addCoreSub(c, 10*time.Millisecond)
	queueWrite(c, 1000)
	c.pumpTx()
	if len(handed(other)) != 0 || len(handed(first)) != 1 {
		t.Fatal("data left the first subflow before the peer's window was known")
	}
	// Roundrobin takes turns once the window is known.
	c.shm.St.PeerWndSet = 1
	c.sched, _ = NewScheduler("roundrobin")
	for range 4 {
		queueWrite(c, 10)
		c.pumpTx()
	}
	if a, b := len(handed(first)), len(handed(other)); a != 2 || b != 2 {
		t.Fatalf("roundrobin: %d and %d mappings, want 2 and 2", a, b)
	}
}

// TestWindowEdge: new data stops at the peer's connection-level window end (§3.3.4); the wait
// is counted, the DATA_ACK doorbell rung once and a retry armed; the data follows as the
// window opens, from where it stopped.
func TestWindowEdge(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	sf := addCoreSub(c, 10*time.Millisecond)
	c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(3000))
	queueWrite(c, 10000)
	c.pumpTx()
	got := handed(sf)
	if len(got) != 1 {
		t.Fatalf("%d mappings, want 1", len(got))
	}
	checkChunk(t, got[0], coreSndStart, 3000)
	if c.st.windowWaits != 1 || !c.st.ackArmed || c.shm.Ctl.AckWakeup != 1 || c.st.pumpAt.IsZero() {
		t.Fatalf("window waits %d, doorbell armed %t rung %d, retry %v", c.st.windowWaits, c.st.ackArmed, c.shm.Ctl.AckWakeup, c.st.pumpAt)
	}
	c.pumpTx()
	if len(handed(sf)) != 0 || c.shm.Ctl.AckWakeup != 1 {
		t.Fatalf("sent beyond the window, or rang the doorbell again (%d)", c.shm.Ctl.AckWakeup)
	}

	// The peer acknowledges 2000 bytes and opens its window to 7000: 4000 more go, at 4000.
	c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(7000))
	c.shm.St.PeerDataAck = uint64(coreSndStart.Add(2000))
	c.handleEvent(datapath.Event{Type: datapath.EvDataAck})
	c.pumpTx()
	got = handed(sf)
	if len(got) != 1 {
		t.Fatalf("%d mappings after the window opened, want 1", len(got))
	}
	checkChunk(t, got[0], coreSndStart.Add(3000), 4000)
	if c.st.snd.una != coreSndStart.Add(2000) {
		t.Fatalf("una %d, want %d", uint64(c.st.snd.una), uint64(coreSndStart.Add(2000)))
	}
	if c.st.snd.outstanding() != 8000 {
		t.Fatalf("%d bytes kept, want 8000 (unacknowledged and unsent)", c.st.snd.outstanding())
	}
}

// TestReinjectAfterSubflowEnds: what a failed subflow had in flight and the peer did not
// DATA_ACK goes again on the other subflow, whole and from the DATA_ACK on.
func TestReinjectAfterSubflowEnds(t *testing.T) {
	c, fp := newCoreConn(t, "default")
	a := addCoreSub(c, 10*time.Millisecond)
	b := addCoreSub(c, 40*time.Millisecond)
	queueWrite(c, 5000)
	c.pumpTx()
	if len(handed(a)) != 1 {
		t.Fatal("the first mapping did not go on the faster subflow")
	}
	c.handleTxDone(txDone{sf: a, n: 5000})
	c.shm.St.PeerDataAck = uint64(coreSndStart.Add(1000)) // the peer has the first 1000 bytes

	c.subflowEnded(a, syscall.ECONNRESET)
	if len(c.subs) != 1 || c.subs[0] != b {
		t.Fatalf("subflows after the failure: %d", len(c.subs))
	}
	if abort, ok := fp.closed[a]; !ok || !abort || len(fp.released) != 1 || fp.released[0] != a.slot {
		t.Fatalf("failed subflow closed %t (abort %t), slots released %v", ok, abort, fp.released)
	}
	c.pumpTx()
	got := handed(b)
	if len(got) != 1 {
		t.Fatalf("%d mappings on the remaining subflow, want 1", len(got))
	}
	checkChunk(t, got[0], coreSndStart.Add(1000), 4000)
	if n := c.stack.stats.ReinjectedBytes.Load(); n != 4000 {
		t.Fatalf("Reinjected %d, want 4000", n)
	}
	if c.Err() != nil {
		t.Fatalf("the connection failed with one subflow left: %v", c.Err())
	}
}

// TestReinjectFromStaleSubflow: a subflow that makes no progress with data outstanding for
// max(250 ms, 3 RTT) goes stale: its data goes again on the other subflow, its retransmission
// timeout is capped, and it comes back when TCP acknowledges again.
func TestReinjectFromStaleSubflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		a := addCoreSub(c, 10*time.Millisecond)
		b := addCoreSub(c, 40*time.Millisecond)
		queueWrite(c, 20000)
		c.pumpTx()
		if len(handed(a)) != 1 {
			t.Fatal("the first mapping did not go on the faster subflow")
		}
		a.written.Store(20000)
		c.handleTxDone(txDone{sf: a, n: 20000})

		c.checkSubflows(time.Now()) // outstanding, unacknowledged: progress noted now
		time.Sleep(250 * time.Millisecond)
		c.checkSubflows(time.Now())
		if a.health.stale || len(c.st.reinject) != 0 {
			t.Fatal("stale after exactly 250 ms")
		}
		time.Sleep(pollInterval)
		c.checkSubflows(time.Now())
		if !a.health.stale || !fp.probing(a) || c.stack.stats.SubflowStale.Load() != 1 {
			t.Fatalf("stale %t, fast probing %t, SubflowStale %d", a.health.stale, fp.probing(a), c.stack.stats.SubflowStale.Load())
		}
		c.pumpTx()
		got := handed(b)
		if len(got) != 1 {
			t.Fatalf("%d mappings on the working subflow, want 1", len(got))
		}
		checkChunk(t, got[0], coreSndStart, 20000)
		if len(handed(a)) != 0 {
			t.Fatal("new data on the stale subflow")
		}

		// Its path returns: TCP acknowledges, the subflow is fresh again.
		fp.setAcked(a, 20000)
		c.checkSubflows(time.Now())
		if a.health.stale || fp.probing(a) {
			t.Fatalf("stale %t, fast probing %t after progress", a.health.stale, fp.probing(a))
		}
	})
}

// runCoreConn starts the connection's goroutine with a fake writer on each subflow; stop aborts
// the connection and waits for the goroutine.
func runCoreConn(t *testing.T, c *Conn, fp *fakePlane, deliver bool) (writers []*fakeWriter, stop func()) {
	for _, sf := range c.subs {
		writers = append(writers, startFakeWriter(c, fp, sf, deliver))
	}
	c.running.Store(true)
	c.live.Store(true)
	go c.run()
	return writers, func() {
		c.Abort()
		<-c.done
		if !fp.connDone {
			t.Error("the connection's slot was not released")
		}
	}
}

// TestDataRetransmitTimerRuns drives the connection-level retransmission timer through the
// connection's goroutine and its one timer: data the subflow delivered at the TCP level and the
// peer does not DATA_ACK goes again after the timeout (max(200 ms, 2 RTT), from the last time a
// subflow held it), then after twice that, and no more once it is DATA_ACKed.
func TestDataRetransmitTimerRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 10*time.Millisecond)
		w, stop := runCoreConn(t, c, fp, true)
		defer stop()
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))); synctest.Wait() }
		rtx := func() uint64 { return c.stack.stats.DataRetransmit.Load() }

		if _, err := c.Write(pattern(coreSndStart, 1000)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := w[0].taken(); len(got) != 1 {
			t.Fatalf("%d mappings written, want 1", len(got))
		}
		// The timer starts at the first sample (50 ms); the data is delivered, never DATA_ACKed.
		at(240 * time.Millisecond)
		if rtx() != 0 {
			t.Fatalf("retransmitted %d times before the timeout", rtx())
		}
		at(260 * time.Millisecond)
		if rtx() != 1 {
			t.Fatalf("DataRetransmit %d at 260 ms, want 1", rtx())
		}
		got := w[0].taken()
		if len(got) != 2 {
			t.Fatalf("%d mappings written, want the original and its retransmission", len(got))
		}
		checkChunk(t, got[1], coreSndStart, 1000)
		// Backed off: 400 ms after the retransmission.
		at(640 * time.Millisecond)
		if rtx() != 1 {
			t.Fatalf("DataRetransmit %d before the backed-off timeout", rtx())
		}
		at(660 * time.Millisecond)
		if rtx() != 2 {
			t.Fatalf("DataRetransmit %d at 660 ms, want 2", rtx())
		}
		// DATA_ACKed: nothing more, however long.
		dataAck(c, coreSndStart.Add(1000))
		at(20 * time.Second)
		if rtx() != 2 || len(w[0].taken()) != 3 {
			t.Fatalf("DataRetransmit %d, %d mappings after the DATA_ACK", rtx(), len(w[0].taken()))
		}
		var una uint64
		c.do(func() { una = uint64(c.st.snd.una) })
		if una != uint64(coreSndStart.Add(1000)) {
			t.Fatalf("una %d after the DATA_ACK", una)
		}
	})
}

// TestDataFin: our DATA_FIN is set only once the last byte is handed to a subflow, at the DSN
// after it; it goes on a pure ACK at once, again after 200 ms, 400 ms more (doubling), and no
// more once the peer DATA_ACKs it.
func TestDataFin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(600)) // the last bytes wait for the window
		addCoreSub(c, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		flags := func() uint32 { return atomic.LoadUint32(&c.shm.Ctl.Flags) }

		if _, err := c.Write(pattern(coreSndStart, 1000)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		synctest.Wait()
		if flags()&datapath.ConnDataFin != 0 || fp.ackCount() != 0 {
			t.Fatal("DATA_FIN set before the last byte was handed to a subflow")
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, errWriteClosed) {
			t.Fatalf("Write after CloseWrite: %v", err)
		}

		c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(1 << 20))
		dataAck(c, coreSndStart.Add(600)) // the window opens with the DATA_ACK
		synctest.Wait()
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))); synctest.Wait() }
		if flags()&datapath.ConnDataFin == 0 || c.shm.Ctl.SndFinDsn != uint64(coreSndStart.Add(1000)) {
			t.Fatalf("DATA_FIN flag %t at %d, want set at %d", flags()&datapath.ConnDataFin != 0,
				c.shm.Ctl.SndFinDsn, uint64(coreSndStart.Add(1000)))
		}
		if n := fp.ackCount(); n != 1 {
			t.Fatalf("%d pure ACKs with the DATA_FIN at once, want 1", n)
		}
		at(199 * time.Millisecond)
		if n := fp.ackCount(); n != 1 {
			t.Fatalf("%d pure ACKs before 200 ms, want 1", n)
		}
		at(200 * time.Millisecond)
		if n := fp.ackCount(); n != 2 {
			t.Fatalf("%d pure ACKs at 200 ms, want 2", n)
		}
		at(599 * time.Millisecond)
		if n := fp.ackCount(); n != 2 {
			t.Fatalf("%d pure ACKs before 600 ms, want 2", n)
		}
		at(600 * time.Millisecond)
		if n := fp.ackCount(); n != 3 {
			t.Fatalf("%d pure ACKs at 600 ms, want 3", n)
		}

		dataAck(c, coreSndStart.Add(1001)) // the data and the DATA_FIN
		at(30 * time.Second)
		if n := fp.ackCount(); n != 3 {
			t.Fatalf("%d pure ACKs after the DATA_FIN was acknowledged, want 3", n)
		}
		var set, acked bool
		c.do(func() { set, acked = c.st.fin.set, c.st.fin.acked })
		if !set || !acked {
			t.Fatalf("DATA_FIN set %t acked %t", set, acked)
		}
	})
}

// TestOneTimerDeadlines: a connection with nothing to do arms no timer, MPTCP or not; data
// waiting for its DATA_ACK, or a DATA_ACK the datapath has not sent, starts the sampling
// pollInterval later, with fresh samplers; the earliest job's deadline wins.
func TestOneTimerDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCoreConn(t, "default")
		sf := addCoreSub(c, 10*time.Millisecond)
		now := time.Now()
		if d := c.nextDeadline(now); !d.IsZero() {
			t.Fatalf("idle MPTCP connection: deadline %v, want none", d)
		}

		// Data handed to the subflow and not DATA_ACKed: sampling starts, its clocks at now.
		sf.health.lastProgress, sf.health.lossSince = now.Add(-time.Hour), now.Add(-time.Hour)
		c.st.rtx.since = now.Add(-time.Hour)
		c.st.snd.nxt = c.st.snd.una.Add(1000)
		if d := c.nextDeadline(now); !d.Equal(now.Add(pollInterval)) {
			t.Fatalf("data outstanding: deadline %v, want the sample at %v", d, now.Add(pollInterval))
		}
		if !sf.health.lastProgress.Equal(now) || !sf.health.lossSince.IsZero() || !c.st.rtx.since.Equal(now) {
			t.Fatalf("samplers not restarted: progress %v, loss since %v, rtx since %v",
				sf.health.lastProgress, sf.health.lossSince, c.st.rtx.since)
		}
		later := now.Add(10 * time.Millisecond)
		if d := c.nextDeadline(later); !d.Equal(now.Add(pollInterval)) {
			t.Fatalf("deadline moved to %v while sampling", d)
		}
		c.st.fin.at = now.Add(time.Millisecond)
		if d := c.nextDeadline(later); !d.Equal(c.st.fin.at) {
			t.Fatalf("deadline %v, want the DATA_FIN's %v", d, c.st.fin.at)
		}
		c.st.fin.at = time.Time{}

		// All DATA_ACKed: the sampling stops.
		c.st.snd.una = c.st.snd.nxt
		if d := c.nextDeadline(later); !d.IsZero() || !c.st.pollAt.IsZero() {
			t.Fatalf("all acknowledged: deadline %v, sample at %v, want none", d, c.st.pollAt)
		}

		// A DATA_ACK published and not yet sent by the datapath is watched.
		rcv := c.shm.Ctl.RcvNxt
		c.shm.Ctl.RcvNxt = rcv + 100
		if d := c.nextDeadline(later); !d.Equal(later.Add(pollInterval)) {
			t.Fatalf("DATA_ACK not sent: deadline %v, want %v", d, later.Add(pollInterval))
		}
		c.shm.Ctl.RcvNxt = rcv
		if d := c.nextDeadline(later); !d.IsZero() {
			t.Fatalf("DATA_ACK sent: deadline %v, want none", d)
		}

		c.mptcp.Store(false)
		if d := c.nextDeadline(later); !d.IsZero() {
			t.Fatalf("idle plain TCP connection: deadline %v, want none", d)
		}
		c.st.appClosed, c.st.lingerAt = true, now.Add(lingerTime)
		if d := c.nextDeadline(later); !d.After(c.st.lingerAt) || d.After(c.st.lingerAt.Add(time.Microsecond)) {
			t.Fatalf("closed connection: deadline %v, want just after the linger %v", d, c.st.lingerAt)
		}

		var tm connTimer
		tm.set(now.Add(10 * time.Millisecond))
		tm.set(now.Add(20 * time.Millisecond)) // moved: the earlier deadline is gone
		select {
		case <-tm.c():
			t.Fatal("fired before any deadline")
		default:
		}
		time.Sleep(15 * time.Millisecond)
		select {
		case <-tm.c():
			t.Fatal("fired at a deadline it was moved from")
		default:
		}
		time.Sleep(5 * time.Millisecond)
		select {
		case <-tm.c():
		default:
			t.Fatal("did not fire at its deadline")
		}
		tm.stop()
	})
}

// TestAnnounceRetransmitted: our ADD_ADDR goes again on the connection's timer until the peer
// echoes it, after 1 s, then 2 s and 4 s more (doubling); the echo ends it.
func TestAnnounceRetransmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		sf := addCoreSub(c, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		tx := func() uint64 { return c.stack.stats.AddAddrTx.Load() }
		addr := netip.MustParseAddr("192.0.2.7")
		time.Sleep(20 * time.Millisecond) // off the 50 ms samples: the ADD_ADDR has its own deadline
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))); synctest.Wait() }

		if err := c.Announce(3, addr, 0); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			at   time.Duration
			want uint64
		}{{999 * time.Millisecond, 1}, {time.Second, 2}, {2999 * time.Millisecond, 2}, {3 * time.Second, 3},
			{6999 * time.Millisecond, 3}, {7 * time.Second, 4}} {
			at(step.at)
			if got := tx(); got != step.want {
				t.Fatalf("AddAddrTx %d at %v, want %d", got, step.at, step.want)
			}
		}
		echo := wire.AddAddr{Echo: true, AddrID: 3, Addr: addr}.Append(nil)
		ev := datapath.Event{Type: datapath.EvOption, Sub: sf.slot, RawLen: uint32(len(echo))}
		copy(ev.Raw[:], echo)
		c.deliver(ev)
		at(time.Minute)
		if got, echoed := tx(), c.stack.stats.EchoAdd.Load(); got != 4 || echoed != 1 {
			t.Fatalf("AddAddrTx %d, EchoAddRx %d after the echo, want 4 and 1", got, echoed)
		}
	})
}

// TestLossySubflowReinjects: a subflow long in loss recovery (max(250 ms, 4 RTT)) that holds
// the oldest data, while still making progress, gets its data sent again on the other
// subflow and no new data until TCP has recovered.
func TestLossySubflowReinjects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		a := addCoreSub(c, 10*time.Millisecond)
		b := addCoreSub(c, 40*time.Millisecond)
		queueWrite(c, 30000)
		c.pumpTx()
		if len(handed(a)) != 1 {
			t.Fatal("the first mapping did not go on the faster subflow")
		}
		a.written.Store(30000)
		c.handleTxDone(txDone{sf: a, n: 30000})
		fp.mu.Lock()
		fp.caState[a] = tcpCARecovery
		fp.mu.Unlock()

		for i := range 5 { // 0 to 200 ms: TCP repairs a segment per sample, slowly
			fp.setAcked(a, uint64(1000*i))
			c.checkSubflows(time.Now())
			time.Sleep(pollInterval)
		}
		if a.health.lossy || a.health.stale || len(c.st.reinject) != 0 {
			t.Fatalf("lossy %t stale %t before 250 ms in recovery", a.health.lossy, a.health.stale)
		}
		fp.setAcked(a, 5000) // 250 ms
		c.checkSubflows(time.Now())
		if !a.health.lossy || a.health.stale || c.stack.stats.SubflowLossy.Load() != 1 {
			t.Fatalf("lossy %t stale %t SubflowLossy %d after 250 ms in recovery", a.health.lossy, a.health.stale, c.stack.stats.SubflowLossy.Load())
		}
		c.pumpTx()
		got := handed(b)
		if len(got) != 1 {
			t.Fatalf("%d mappings on the other subflow, want 1", len(got))
		}
		checkChunk(t, got[0], coreSndStart, 30000)

		queueWrite(c, 100) // new data avoids the lossy subflow
		c.pumpTx()
		if len(handed(a)) != 0 || len(handed(b)) != 1 {
			t.Fatal("new data went on the lossy subflow")
		}

		fp.mu.Lock()
		fp.caState[a] = 0
		fp.mu.Unlock()
		c.checkSubflows(time.Now())
		if a.health.lossy {
			t.Fatal("still lossy once TCP left loss recovery")
		}
	})
}

// TestPauseKeepsDeadSubflowClock: the peer DATA_ACKs everything (it had the bytes from another
// subflow, as with the redundant scheduler) while one subflow's path is dead; sampling pauses.
// When new data resumes it, that subflow still holds the same unacknowledged bytes: its clock
// is kept, and it goes stale max(250 ms, 3 RTT) after its last progress, pause included. The
// working subflow's clock starts over.
func TestPauseKeepsDeadSubflowClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCoreConn(t, "default")
		a := addCoreSub(c, 10*time.Millisecond)
		b := addCoreSub(c, 10*time.Millisecond)
		a.written.Store(20000) // on a's path, never acknowledged by TCP
		c.st.snd.nxt = c.st.snd.una.Add(20000)
		start := time.Now()
		c.checkSubflows(start)
		if got := c.nextDeadline(start); !got.Equal(start.Add(pollInterval)) {
			t.Fatalf("data outstanding: deadline %v", got)
		}

		c.st.snd.una = c.st.snd.nxt // the peer DATA_ACKed it all
		if got := c.nextDeadline(start); !got.IsZero() {
			t.Fatalf("all DATA_ACKed: deadline %v, want none", got)
		}
		time.Sleep(200 * time.Millisecond)

		now := time.Now()
		c.st.snd.nxt = c.st.snd.una.Add(1000) // new data: sampling resumes
		c.nextDeadline(now)
		if !a.health.lastProgress.Equal(start) {
			t.Fatalf("the dead subflow's clock moved to %v across the pause", a.health.lastProgress)
		}
		if !b.health.lastProgress.Equal(now) {
			t.Fatalf("the working subflow's clock is %v, want %v", b.health.lastProgress, now)
		}
		time.Sleep(100 * time.Millisecond)
		c.checkSubflows(time.Now())
		if !a.health.stale || b.health.stale {
			t.Fatalf("after 300 ms without progress: dead subflow stale %t, working one stale %t", a.health.stale, b.health.stale)
		}
	})
}

// TestLoneLossySubflowIdles: a subflow left alone is neither stale nor lossy (it carries
// everything), so a connection with nothing outstanding stops sampling.
func TestLoneLossySubflowIdles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newCoreConn(t, "default")
		a := addCoreSub(c, 10*time.Millisecond)
		a.health.lossy, a.health.lossSince = true, time.Now()
		if !c.polled() {
			t.Fatal("a lossy subflow is not watched")
		}
		c.checkSubflows(time.Now())
		if a.health.lossy || !a.health.lossSince.IsZero() {
			t.Fatalf("alone: lossy %t since %v", a.health.lossy, a.health.lossSince)
		}
		if c.polled() {
			t.Fatal("an idle connection with one subflow keeps sampling")
		}
	})
}

// TestRedundantWritersOwnBuffers: with the redundant scheduler every subflow's writer gets the
// mapping's buffers in a slice of its own, made before any writer starts. A writer that starts at
// once and shortens its first buffer after a partial write (writeEOR) must not shorten another
// writer's: that one would write fewer bytes than its mapping says, and the peer would see the
// next mapping inside this one (the kernel's DSSNotMatching).
func TestRedundantWritersOwnBuffers(t *testing.T) {
	c, _ := newCoreConn(t, "redundant")
	subs := []*subflow{addCoreSub(c, 10*time.Millisecond), addCoreSub(c, 10*time.Millisecond)}
	var got []txChunk
	for _, sf := range subs {
		sf.startWriter = func() bool {
			// A writer that runs at once and sends the first 100 bytes.
			ch := <-sf.txCh
			sf.wPending.Add(-1)
			ch.bufs[0] = ch.bufs[0][100:]
			got = append(got, *ch)
			sf.wRunning.Store(false)
			return true
		}
	}
	queueWrite(c, 5000)
	c.pumpTx()
	if len(got) != 2 {
		t.Fatalf("%d mappings handed, want one to each subflow", len(got))
	}
	for k, ch := range got {
		n := 0
		for _, b := range ch.bufs {
			n += len(b)
		}
		if n != ch.n-100 {
			t.Errorf("writer %d: %d bytes left after writing 100 of a %d-byte mapping, want %d", k, n, ch.n, ch.n-100)
		}
	}
}

// TestBadMapping: data a subflow's mappings cannot place (no mapping, or one contradicting an
// earlier mapping) makes a connection that never had a second subflow send MP_FAIL and fall
// back (DssFallback), and one that had reset that subflow only (RFC 8684 §3.7, as the kernel).
func TestBadMapping(t *testing.T) {
	rxMapEv := func(sf *subflow, dsn seqnum.DSN, ssn, n uint32) datapath.Event {
		return datapath.Event{Type: datapath.EvRxMap, Sub: sf.slot, A: uint64(dsn), B: uint64(ssn), C: uint64(n)}
	}
	for _, c := range []struct {
		name     string
		joined   bool
		conflict bool // a contradicting mapping, else data without one
	}{{"unmapped", false, false}, {"unmapped joined", true, false}, {"conflict", false, true}, {"conflict joined", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			conn, _ := newCoreConn(t, "default")
			a := addCoreSub(conn, 10*time.Millisecond)
			b := addCoreSub(conn, 10*time.Millisecond)
			conn.st.joined = c.joined
			conn.handleEvent(rxMapEv(b, coreRcvStart, 1, 1000))
			if len(b.rxMaps) != 1 {
				t.Fatalf("first mapping not stored: %+v", b.rxMaps)
			}
			if c.conflict {
				conn.handleEvent(rxMapEv(b, coreRcvStart.Add(1), 1, 1000))
			} else {
				conn.handleEvent(datapath.Event{Type: datapath.EvUnmapped, Sub: b.slot})
			}
			st := &conn.stack.stats
			if want := uint64(map[bool]int{false: 0, true: 1}[c.conflict]); st.DSSNotMatching.Load() != want {
				t.Errorf("DSSNotMatching %d, want %d", st.DSSNotMatching.Load(), want)
			}
			mpFail := conn.shm.Ctl.Flags&datapath.ConnMPFail != 0
			if c.joined {
				if conn.st.rcv.fallback || !conn.mptcp.Load() || mpFail || st.DssFallback.Load() != 0 {
					t.Errorf("a joined connection fell back: rx %t, MPTCP %t, MP_FAIL %t, DssFallback %d",
						conn.st.rcv.fallback, conn.mptcp.Load(), mpFail, st.DssFallback.Load())
				}
				if len(conn.subs) != 1 || conn.subs[0] != a || b.shm.Ctl.RstFlags != datapath.SubRstRequest || b.shm.Ctl.RstReason != RstMPTCPError {
					t.Errorf("subflows %d, the bad one's reset flags %#x reason %d: want it reset with MPTCP error, the other kept",
						len(conn.subs), b.shm.Ctl.RstFlags, b.shm.Ctl.RstReason)
				}
				if conn.Err() != nil {
					t.Errorf("the connection failed: %v", conn.Err())
				}
				return
			}
			if !conn.st.rcv.fallback || conn.mptcp.Load() || !mpFail || st.DssFallback.Load() != 1 || st.MPFailFallback.Load() != 1 {
				t.Errorf("want MP_FAIL and fallback: rx %t, MPTCP %t, MP_FAIL %t, DssFallback %d, MPFailFallback %d",
					conn.st.rcv.fallback, conn.mptcp.Load(), mpFail, st.DssFallback.Load(), st.MPFailFallback.Load())
			}
			if len(conn.subs) != 2 || b.shm.Ctl.RstFlags != 0 {
				t.Errorf("subflows %d, reset flags %#x: fallback resets nothing", len(conn.subs), b.shm.Ctl.RstFlags)
			}
		})
	}
}

// TestBadMappingOnDrainingSubflow: a subflow being read to its end after it was detached (a
// REMOVE_ADDR, say) still receives the peer's mappings; a bad one finishes that subflow with a
// reset and touches nothing else: the connection, with one live subflow left, goes on, and the
// slot is released once.
func TestBadMappingOnDrainingSubflow(t *testing.T) {
	for _, conflict := range []bool{false, true} {
		conn, fp := newCoreConn(t, "default")
		a := addCoreSub(conn, 10*time.Millisecond)
		b := addCoreSub(conn, 10*time.Millisecond)
		conn.st.joined = true
		conn.handleEvent(datapath.Event{Type: datapath.EvRxMap, Sub: b.slot, A: uint64(coreRcvStart), B: 1, C: 1000})
		conn.dropSubflow(b, nil)
		if len(conn.subs) != 1 || len(conn.st.draining) != 1 {
			t.Fatalf("after the detach: %d live, %d draining", len(conn.subs), len(conn.st.draining))
		}
		if conflict {
			conn.handleEvent(datapath.Event{Type: datapath.EvRxMap, Sub: b.slot, A: uint64(coreRcvStart.Add(7)), B: 1, C: 1000})
		} else {
			conn.handleEvent(datapath.Event{Type: datapath.EvUnmapped, Sub: b.slot})
		}
		conn.checkDraining(true) // as the connection's end would
		if conn.Err() != nil || len(conn.subs) != 1 || conn.subs[0] != a || len(conn.st.draining) != 0 {
			t.Fatalf("conflict %t: err %v, live %d, draining %d: want the connection going on over the other subflow",
				conflict, conn.Err(), len(conn.subs), len(conn.st.draining))
		}
		if abort, ok := fp.closed[b]; !ok || !abort || len(fp.released) != 1 || fp.released[0] != b.slot {
			t.Fatalf("conflict %t: the bad subflow closed %t (reset %t), slots released %v: want it reset and its slot released once",
				conflict, ok, abort, fp.released)
		}
		if b.shm.Ctl.RstFlags != datapath.SubRstRequest || b.shm.Ctl.RstReason != RstMPTCPError {
			t.Fatalf("conflict %t: reset flags %#x reason %d", conflict, b.shm.Ctl.RstFlags, b.shm.Ctl.RstReason)
		}
	}
}

// TestMPFailAfterJoinIgnored: a peer's MP_FAIL on a connection that had a second subflow does
// not make it fall back (§3.7: no fallback once a subflow joined; the kernel ignores it too).
func TestMPFailAfterJoinIgnored(t *testing.T) {
	for _, joined := range []bool{false, true} {
		conn, _ := newCoreConn(t, "default")
		a := addCoreSub(conn, 10*time.Millisecond)
		conn.st.joined = joined
		conn.handleEvent(datapath.Event{Type: datapath.EvMPFail, Sub: a.slot, A: uint64(coreRcvStart)})
		if fellBack := !conn.mptcp.Load(); fellBack != !joined {
			t.Errorf("joined %t: fell back %t, want %t", joined, fellBack, !joined)
		}
	}
}

// TestOpportunisticRetransmit: new data waits for the peer's window while a slow subflow (a
// window of three packets) holds the bytes at its left edge: those bytes, up to oppChunk, go
// again on the fast subflow, once for each DATA_ACK; a subflow with a window of ten packets
// and an RTT not four times the fast one's is left to deliver its own.
func TestOpportunisticRetransmit(t *testing.T) {
	for _, tc := range []struct {
		name string
		cwnd uint32
		want bool
	}{{"three packets", 3, true}, {"ten packets", 10, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCoreConn(t, "default")
			a := addCoreSub(c, 30*time.Millisecond)
			a.shm.St.SndCwnd = tc.cwnd
			c.shm.St.PeerWndSet = 1
			c.shm.St.PeerWndEnd = uint64(coreSndStart.Add(20000))
			queueWrite(c, 20000)
			c.pumpTx()
			if got := handed(a); len(got) != 1 {
				t.Fatalf("%d mappings on the only subflow, want 1", len(got))
			}
			b := addCoreSub(c, 10*time.Millisecond)
			queueWrite(c, 10000) // waits for the window
			c.pumpTx()
			got := handed(b)
			if !tc.want {
				if len(got) != 0 || c.stack.stats.OpportunisticRetransmit.Load() != 0 {
					t.Fatalf("%d mappings sent again from a subflow of %d packets", len(got), tc.cwnd)
				}
				return
			}
			if len(got) != 1 || c.stack.stats.OpportunisticRetransmit.Load() != 1 {
				t.Fatalf("%d mappings on the fast subflow, %d retransmissions, want 1 and 1", len(got), c.stack.stats.OpportunisticRetransmit.Load())
			}
			checkChunk(t, got[0], coreSndStart, oppChunk)
			c.pumpTx()
			if n := len(handed(b)); n != 0 {
				t.Fatalf("%d more mappings for the same DATA_ACK", n)
			}
			// The peer acknowledges 10000 bytes without opening its window: b holds the left
			// edge now, nothing goes.
			c.shm.St.PeerDataAck = uint64(coreSndStart.Add(10000))
			c.handleEvent(datapath.Event{Type: datapath.EvDataAck})
			c.pumpTx()
			if n := len(handed(b)); n != 0 {
				t.Fatalf("%d mappings sent again while the fast subflow holds the left edge", n)
			}
			// Then 17000: the next left edge goes, up to the end of what a holds.
			c.shm.St.PeerDataAck = uint64(coreSndStart.Add(17000))
			c.handleEvent(datapath.Event{Type: datapath.EvDataAck})
			c.pumpTx()
			got = handed(b)
			if len(got) != 1 {
				t.Fatalf("%d mappings after the DATA_ACK moved, want 1", len(got))
			}
			checkChunk(t, got[0], coreSndStart.Add(17000), 3000)
			if c.stack.stats.ReinjectedBytes.Load() != oppChunk+3000 {
				t.Fatalf("ReinjectedBytes %d", c.stack.stats.ReinjectedBytes.Load())
			}
		})
	}
}

// TestJoinThirdAckRetransmitted: an active join that got no fourth ACK carries no data, and its
// third ACK goes again on a pure ACK, from 200 ms doubling, until the fourth ACK comes (RFC 8684
// §3.2). Without it a peer that sends nothing on that subflow left it unused for good (a one-way
// transfer between two mptcpd: path 1 carried 242 bytes of 1 GiB).
func TestJoinThirdAckRetransmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 10*time.Millisecond)
		j := addCoreSub(c, 10*time.Millisecond)
		j.active, j.ready = true, false
		j.joinAck.rto, j.joinAck.at = joinAckRTO, time.Now().Add(joinAckRTO)
		acksOn := func(sf *subflow) int {
			fp.mu.Lock()
			defer fp.mu.Unlock()
			n := 0
			for _, a := range fp.acks {
				if a == sf {
					n++
				}
			}
			return n
		}
		start := time.Now()
		var at []time.Duration
		for len(at) < 4 {
			d := c.nextDeadline(time.Now())
			if d.IsZero() {
				t.Fatal("no deadline while the join waits for its fourth ACK")
			}
			time.Sleep(time.Until(d))
			before := acksOn(j)
			c.onTimer(time.Now())
			if acksOn(j) > before {
				at = append(at, time.Since(start))
			}
		}
		want := []time.Duration{200 * time.Millisecond, 600 * time.Millisecond, 1400 * time.Millisecond, 3000 * time.Millisecond}
		if !slices.Equal(at, want) {
			t.Fatalf("third ACK sent again at %v, want %v", at, want)
		}
		if got := c.stack.stats.MPJoinAckRexmit.Load(); got != 4 {
			t.Fatalf("MPJoinAckRexmit %d, want 4", got)
		}
		// The fourth ACK comes: the join is ready and nothing more goes.
		c.handleEvent(datapath.Event{Type: datapath.EvJoinAcked, Sub: j.slot})
		if !j.ready || !c.joinAckDeadline().IsZero() {
			t.Fatalf("after the fourth ACK: ready %t, deadline %v", j.ready, c.joinAckDeadline())
		}
	})
}
