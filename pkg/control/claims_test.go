package control

import (
	"errors"
	"io"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/seqnum"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// Tests of what the README says of the connection core, each named after the claim it holds
// to: the RTT terms of the timers, when a subflow in loss recovery is lossy and when it gets
// data again, a closing subflow read to its end, and the bounds a peer meets (mappings held,
// unmapped bytes held, the receive window, the events queued).

// TestDataRetransmitTimerRTT: the connection-level retransmission timer is max(200 ms, 2 RTT),
// doubling. With an SRTT of 200 ms it waits 400 ms from the first sample (50 ms), then 800 ms.
func TestDataRetransmitTimerRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 200*time.Millisecond)
		w, stop := runCoreConn(t, c, fp, true)
		defer stop()
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))); synctest.Wait() }
		rtx := func() uint64 { return c.stack.stats.DataRetransmit.Load() }

		if _, err := c.Write(pattern(coreSndStart, 1000)); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			at   time.Duration
			want uint64
		}{{440 * time.Millisecond, 0}, {460 * time.Millisecond, 1}, {1240 * time.Millisecond, 1}, {1260 * time.Millisecond, 2}} {
			at(step.at)
			if got := rtx(); got != step.want {
				t.Fatalf("DataRetransmit %d at %v with an SRTT of 200 ms, want %d", got, step.at, step.want)
			}
		}
		got := w[0].taken()
		if len(got) != 3 {
			t.Fatalf("%d mappings written, want the original and two retransmissions", len(got))
		}
		checkChunk(t, got[2], coreSndStart, 1000)
	})
}

// TestStaleAfterThreeRTT: a subflow goes stale after max(250 ms, 3 RTT) without progress; with
// an SRTT of 200 ms, not at 600 ms, just after.
func TestStaleAfterThreeRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		a := addCoreSub(c, 200*time.Millisecond)
		b := addCoreSub(c, 400*time.Millisecond)
		queueWrite(c, 20000)
		c.pumpTx()
		if len(handed(a)) != 1 {
			t.Fatal("the first mapping did not go on the faster subflow")
		}
		a.written.Store(20000)
		c.handleTxDone(txDone{sf: a, n: 20000})

		start := time.Now()
		c.checkSubflows(start) // outstanding, unacknowledged: progress noted now
		for _, d := range []time.Duration{250 * time.Millisecond, 400 * time.Millisecond, 600 * time.Millisecond} {
			time.Sleep(time.Until(start.Add(d)))
			c.checkSubflows(time.Now())
			if a.health.stale || len(c.st.reinject) != 0 {
				t.Fatalf("stale %v after its last progress, with an SRTT of 200 ms (3 RTT: 600 ms)", d)
			}
		}
		time.Sleep(time.Millisecond)
		c.checkSubflows(time.Now())
		if !a.health.stale || !fp.probing(a) || c.stack.stats.SubflowStale.Load() != 1 {
			t.Fatalf("601 ms without progress: stale %t, fast probing %t, SubflowStale %d", a.health.stale, fp.probing(a), c.stack.stats.SubflowStale.Load())
		}
		c.pumpTx()
		if got := handed(b); len(got) != 1 {
			t.Fatalf("%d mappings on the working subflow, want 1", len(got))
		} else {
			checkChunk(t, got[0], coreSndStart, 20000)
		}
	})
}

// lossyStart hands 30000 bytes to a (the faster of two subflows), written and in TCP loss
// recovery from now on.
func lossyStart(t *testing.T, srttA, srttB time.Duration) (c *Conn, fp *fakePlane, a, b *subflow) {
	t.Helper()
	c, fp = newCoreConn(t, "default")
	a = addCoreSub(c, srttA)
	b = addCoreSub(c, srttB)
	queueWrite(c, 30000)
	c.pumpTx()
	if len(handed(a)) != 1 {
		t.Fatal("the first mapping did not go on the faster subflow")
	}
	a.written.Store(30000)
	c.handleTxDone(txDone{sf: a, n: 30000})
	fp.setCA(a, tcpCARecovery)
	return c, fp, a, b
}

// setCA has TCP_INFO report sf's congestion state.
func (f *fakePlane) setCA(sf *subflow, state uint8) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.caState[sf] = state
}

// TestLossyAfterFourRTT: a subflow holding the oldest data goes lossy after max(250 ms, 4 RTT)
// in loss recovery; with an SRTT of 200 ms, not before 800 ms, at 800 ms. TCP repairs a segment
// per sample meanwhile, so that it never goes stale.
func TestLossyAfterFourRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp, a, b := lossyStart(t, 200*time.Millisecond, 400*time.Millisecond)
		start := time.Now()
		acked := uint64(0)
		sample := func(d time.Duration) {
			time.Sleep(time.Until(start.Add(d)))
			acked += 500
			fp.setAcked(a, acked)
			c.checkSubflows(time.Now())
		}
		for d := time.Duration(0); d < 800*time.Millisecond; d += pollInterval {
			sample(d)
			if a.health.lossy || a.health.stale || len(c.st.reinject) != 0 {
				t.Fatalf("lossy %t stale %t after %v in recovery, with an SRTT of 200 ms (4 RTT: 800 ms)", a.health.lossy, a.health.stale, d)
			}
		}
		sample(799 * time.Millisecond)
		if a.health.lossy {
			t.Fatal("lossy 799 ms into recovery")
		}
		sample(800 * time.Millisecond)
		if !a.health.lossy || a.health.stale || c.stack.stats.SubflowLossy.Load() != 1 {
			t.Fatalf("800 ms into recovery: lossy %t stale %t SubflowLossy %d", a.health.lossy, a.health.stale, c.stack.stats.SubflowLossy.Load())
		}
		c.pumpTx()
		if got := handed(b); len(got) != 1 {
			t.Fatalf("%d mappings on the other subflow, want 1", len(got))
		} else {
			checkChunk(t, got[0], coreSndStart, 30000)
		}
	})
}

// TestLossyOnlyWithOldestData: a subflow long in loss recovery that does not hold the
// connection's oldest unacknowledged byte is not lossy; once the peer DATA_ACKs what lies
// before its data, it holds that byte, and is.
func TestLossyOnlyWithOldestData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "roundrobin")
		a := addCoreSub(c, 10*time.Millisecond)
		b := addCoreSub(c, 10*time.Millisecond)
		queueWrite(c, 10000)
		c.pumpTx()
		queueWrite(c, 10000)
		c.pumpTx()
		if len(handed(a)) != 1 || len(handed(b)) != 1 {
			t.Fatal("roundrobin did not put one mapping on each subflow")
		}
		for _, sf := range []*subflow{a, b} {
			sf.written.Store(10000)
			c.handleTxDone(txDone{sf: sf, n: 10000})
		}
		fp.setAcked(a, 10000) // a delivered its bytes, not yet DATA_ACKed: it holds the oldest
		fp.setCA(b, tcpCARecovery)
		if !a.holds(c.st.snd.una) || b.holds(c.st.snd.una) {
			t.Fatal("a does not hold the oldest data, or b does")
		}

		start := time.Now()
		acked := uint64(0)
		for d := time.Duration(0); d <= time.Second; d += pollInterval {
			time.Sleep(time.Until(start.Add(d)))
			acked += 100 // b repairs slowly: never stale
			fp.setAcked(b, acked)
			c.checkSubflows(time.Now())
			if b.health.lossy || b.health.stale || len(c.st.reinject) != 0 || c.stack.stats.SubflowLossy.Load() != 0 {
				t.Fatalf("%v into recovery without the oldest data: lossy %t stale %t, %d bytes to send again, SubflowLossy %d",
					d, b.health.lossy, b.health.stale, c.st.reinject.bytes(), c.stack.stats.SubflowLossy.Load())
			}
		}

		// The peer DATA_ACKs a's bytes: b now holds the oldest, and has been in recovery long.
		c.shm.St.PeerDataAck = uint64(coreSndStart.Add(10000))
		c.handleEvent(datapath.Event{Type: datapath.EvDataAck})
		c.pumpTx()
		time.Sleep(pollInterval)
		acked += 100
		fp.setAcked(b, acked)
		c.checkSubflows(time.Now())
		if !b.health.lossy || c.stack.stats.SubflowLossy.Load() != 1 {
			t.Fatalf("holding the oldest data after 1 s in recovery: lossy %t, SubflowLossy %d", b.health.lossy, c.stack.stats.SubflowLossy.Load())
		}
		c.pumpTx()
		if got := handed(a); len(got) != 1 {
			t.Fatalf("%d mappings of b's data on a, want 1", len(got))
		} else {
			checkChunk(t, got[0], coreSndStart.Add(10000), 10000)
		}
	})
}

// TestLossyGetsDataAgain: a lossy subflow gets new data again once TCP has recovered, or once
// TCP acknowledged everything it was given, even while TCP_INFO still shows loss recovery
// (Linux stays there until something above the recovery point is acknowledged).
func TestLossyGetsDataAgain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ca        uint8  // TCP_INFO's congestion state afterwards
		acked     uint64 // bytes of a acknowledged at the subflow level afterwards
		sndUnaRel uint32 // the datapath's SndUnaRel afterwards
	}{{"recovered", 0, 5000, 5001}, {"all acknowledged", tcpCARecovery, 30000, 30001}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, fp, a, b := lossyStart(t, 10*time.Millisecond, 40*time.Millisecond)
				for i := range 6 { // 0 to 250 ms in recovery, holding the oldest data
					fp.setAcked(a, uint64(1000*i))
					c.checkSubflows(time.Now())
					if i < 5 {
						time.Sleep(pollInterval)
					}
				}
				if !a.health.lossy {
					t.Fatal("not lossy after 250 ms in recovery")
				}
				c.pumpTx()
				if len(handed(b)) != 1 {
					t.Fatal("a's data did not go again on b")
				}
				queueWrite(c, 100)
				c.pumpTx()
				if len(handed(a)) != 0 || len(handed(b)) != 1 {
					t.Fatal("new data went on the lossy subflow")
				}

				time.Sleep(pollInterval)
				fp.setCA(a, tc.ca)
				fp.setAcked(a, tc.acked)
				a.shm.St.SndUnaRel = tc.sndUnaRel
				c.checkSubflows(time.Now())
				if a.health.lossy {
					t.Fatalf("still lossy (TCP state %d, %d of 30000 bytes acknowledged)", tc.ca, tc.acked)
				}
				queueWrite(c, 200)
				c.pumpTx()
				if got := handed(a); len(got) != 1 {
					t.Fatalf("%d mappings of new data on a, want 1", len(got))
				} else {
					checkChunk(t, got[0], coreSndStart.Add(30100), 200)
				}
			})
		})
	}
}

// rxMapEvent is the datapath's event for a peer mapping on sf: DSNs [dsn, dsn+n) on subflow
// bytes [ssn, ssn+n).
func rxMapEvent(sf *subflow, dsn seqnum.DSN, ssn seqnum.Value, n int) datapath.Event {
	return datapath.Event{Type: datapath.EvRxMap, Sub: sf.slot, A: uint64(dsn), B: uint64(ssn), C: uint64(n)}
}

// readConn reads n bytes from c within a (synctest) deadline of a minute.
func readConn(t *testing.T, c *Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// TestClosedSubflowReadToEnd: a subflow that closes is read to its end before its socket goes,
// so that the peer need not send its bytes again at the data level: the application gets them
// and our DATA_ACK covers them. Both orders of the peer's mapping and the bytes: mapped, then
// the path manager closes the subflow with the bytes still in its socket; or the bytes read,
// the subflow's FIN, then their mapping.
func TestClosedSubflowReadToEnd(t *testing.T) {
	const n = 3000
	for _, tc := range []struct {
		name        string
		mappedFirst bool
	}{{"mapped, closed, then read", true}, {"read, ended, then mapped", false}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, fp := newCoreConn(t, "default")
				a := addCoreSub(c, 10*time.Millisecond)
				b := addCoreSub(c, 10*time.Millisecond)
				b.localID = 1
				_, stop := runCoreConn(t, c, fp, true)
				defer stop()
				data := pattern(coreRcvStart, n)
				bytesIn := func() {
					c.rxCh <- &rxChunk{sf: b, off: 1, data: append([]byte(nil), data...)}
					c.rxCh <- &rxChunk{sf: b, err: io.EOF}
					synctest.Wait()
				}
				if tc.mappedFirst {
					c.deliver(rxMapEvent(b, coreRcvStart, 1, n))
					synctest.Wait()
					if got := c.CloseSubflows(1, -1); got != 1 {
						t.Fatalf("CloseSubflows closed %d, want 1", got)
					}
					bytesIn()
				} else {
					bytesIn()
					c.deliver(rxMapEvent(b, coreRcvStart, 1, n))
					synctest.Wait()
				}
				if got := atomic.LoadUint64(&c.shm.Ctl.RcvNxt); got != uint64(coreRcvStart) {
					t.Fatalf("DATA_ACK %d before the application read, want %d", got, uint64(coreRcvStart))
				}
				if got := readConn(t, c, n); string(got) != string(data) {
					t.Fatal("the closed subflow's bytes read are not the stream's")
				}
				synctest.Wait()
				if got := atomic.LoadUint64(&c.shm.Ctl.RcvNxt); got != uint64(coreRcvStart.Add(n)) {
					t.Fatalf("DATA_ACK %d after the read, want %d: the peer would send them again", got, uint64(coreRcvStart.Add(n)))
				}
				time.Sleep(pollInterval) // a subflow read to its end is let go at the next sample
				synctest.Wait()
				var subs, draining int
				c.do(func() { subs, draining = len(c.subs), len(c.st.draining) })
				fp.mu.Lock()
				abort, closed := fp.closed[b]
				released := slices.Contains(fp.released, b.slot)
				_, aClosed := fp.closed[a]
				fp.mu.Unlock()
				if subs != 1 || draining != 0 || !closed || !abort || !released || aClosed {
					t.Fatalf("subflows %d, draining %d; the closed one closed %t (reset %t), slot released %t; the other closed %t",
						subs, draining, closed, abort, released, aClosed)
				}
				if c.Err() != nil {
					t.Fatalf("the connection failed: %v", c.Err())
				}
			})
		})
	}
}

// TestRxMapOverflowResetsSubflow: a subflow holds at most maxRxMaps of the peer's mappings; the
// next one resets it with MP_TCPRST (MPTCP error), counted as RxMapOverflow. The connection goes
// on on its other subflow, or, with none, ends with that reset.
func TestRxMapOverflowResetsSubflow(t *testing.T) {
	for _, alone := range []bool{false, true} {
		t.Run(map[bool]string{false: "two subflows", true: "alone"}[alone], func(t *testing.T) {
			c, fp := newCoreConn(t, "default")
			var a *subflow
			if !alone {
				a = addCoreSub(c, 10*time.Millisecond)
			}
			b := addCoreSub(c, 10*time.Millisecond)
			// One-byte mappings with a byte between each, none read yet: none merges with another.
			for i := range maxRxMaps {
				c.handleEvent(rxMapEvent(b, coreRcvStart.Add(uint64(2*i)), seqnum.Value(1+2*i), 1))
			}
			st := &c.stack.stats
			if len(b.rxMaps) != maxRxMaps || st.RxMapOverflow.Load() != 0 || b.shm.Ctl.RstFlags != 0 || c.Err() != nil {
				t.Fatalf("at the bound: %d mappings, RxMapOverflow %d, reset flags %#x, err %v", len(b.rxMaps), st.RxMapOverflow.Load(), b.shm.Ctl.RstFlags, c.Err())
			}
			c.handleEvent(rxMapEvent(b, coreRcvStart.Add(2*maxRxMaps), 1+2*maxRxMaps, 1))
			if st.RxMapOverflow.Load() != 1 || b.shm.Ctl.RstFlags != datapath.SubRstRequest || b.shm.Ctl.RstReason != RstMPTCPError {
				t.Fatalf("past the bound: RxMapOverflow %d, reset flags %#x reason %d; want 1, a reset with MPTCP error",
					st.RxMapOverflow.Load(), b.shm.Ctl.RstFlags, b.shm.Ctl.RstReason)
			}
			if alone {
				var re *ResetError
				if !errors.As(c.Err(), &re) || re.Reason != RstMPTCPError || !c.st.resetOnErr {
					t.Fatalf("alone: the connection's error %v (reset on error %t), want the reset", c.Err(), c.st.resetOnErr)
				}
				return
			}
			if c.Err() != nil || len(c.subs) != 1 || c.subs[0] != a || !fp.closed[b] || !slices.Contains(fp.released, b.slot) {
				t.Fatalf("err %v, %d subflows left, the reset one closed with a reset %t, its slot released %t",
					c.Err(), len(c.subs), fp.closed[b], slices.Contains(fp.released, b.slot))
			}
			queueWrite(c, 100)
			c.pumpTx()
			if got := handed(a); len(got) != 1 {
				t.Fatalf("%d mappings on the remaining subflow, want 1", len(got))
			}
		})
	}
}

// TestUnmappedHeldBounded: bytes no mapping covers are held for their mapping, up to 4 MiB + a
// receive window per subflow; one more resets the subflow (MPTCP error), drops what it held,
// and the connection goes on on the other.
func TestUnmappedHeldBounded(t *testing.T) {
	c, fp := newCoreConn(t, "default")
	c.st.joined = true
	a := addCoreSub(c, 10*time.Millisecond)
	b := addCoreSub(c, 10*time.Millisecond)
	limit := rxLimit + c.stack.rxWindow
	const chunk = 64 << 10
	off := seqnum.Value(1)
	for held := 0; held < limit; held += chunk {
		c.handleRx(rxChunk{sf: b, off: off, data: make([]byte, min(chunk, limit-held))})
		off = off.Add(uint32(min(chunk, limit-held)))
	}
	if b.heldBytes != limit || b.shm.Ctl.RstFlags != 0 || len(c.subs) != 2 {
		t.Fatalf("at the bound: %d bytes held (want %d), reset flags %#x, %d subflows", b.heldBytes, limit, b.shm.Ctl.RstFlags, len(c.subs))
	}
	c.handleRx(rxChunk{sf: b, off: off, data: []byte{1}})
	if b.shm.Ctl.RstFlags != datapath.SubRstRequest || b.shm.Ctl.RstReason != RstMPTCPError {
		t.Fatalf("one byte past the bound: reset flags %#x reason %d, want a reset with MPTCP error", b.shm.Ctl.RstFlags, b.shm.Ctl.RstReason)
	}
	if b.heldBytes != 0 || len(b.rxHeld) != 0 || len(c.subs) != 1 || c.subs[0] != a || !fp.closed[b] || c.Err() != nil {
		t.Fatalf("held %d bytes in %d chunks, %d subflows, the reset one closed with a reset %t, err %v",
			b.heldBytes, len(b.rxHeld), len(c.subs), fp.closed[b], c.Err())
	}
}

// TestReceiveWindowEdge: a mapping whose data ends at the receive point plus the receive window
// (everything received was read, so that is the DATA_ACK plus the window) is taken; one byte
// further, its bytes are read and dropped (NoDSSInWindow). The window is tcp_rmem's maximum.
func TestReceiveWindowEdge(t *testing.T) {
	c, _ := newCoreConn(t, "default")
	c.stack.rxWindow = receiveWindow()
	win := uint64(c.stack.rxWindow)
	sf := addCoreSub(c, 10*time.Millisecond)
	// Subflow bytes 1..100 carry DSNs ending exactly at the edge, 101..200 one byte beyond it.
	c.handleEvent(rxMapEvent(sf, coreRcvStart.Add(win-100), 1, 100))
	if c.stack.stats.NoDSSInWindow.Load() != 0 || len(sf.rxMaps) != 1 || sf.rxMaps[0].drop {
		t.Fatalf("a mapping ending at the edge: NoDSSInWindow %d, %+v", c.stack.stats.NoDSSInWindow.Load(), sf.rxMaps)
	}
	c.handleEvent(rxMapEvent(sf, coreRcvStart.Add(win-99), 101, 100))
	if c.stack.stats.NoDSSInWindow.Load() != 1 || len(sf.rxMaps) != 2 || !sf.rxMaps[1].drop {
		t.Fatalf("a mapping one byte beyond the edge: NoDSSInWindow %d, %+v", c.stack.stats.NoDSSInWindow.Load(), sf.rxMaps)
	}
	c.handleRx(rxChunk{sf: sf, off: 1, data: make([]byte, 200)})
	if c.st.rcv.rx.dropped != 100 || c.st.rcv.rx.buffered() != 100 || sf.heldBytes != 0 {
		t.Fatalf("dropped %d, buffered %d, held %d: want 100, 100, 0", c.st.rcv.rx.dropped, c.st.rcv.rx.buffered(), sf.heldBytes)
	}
}

// TestReceiveWindowFromRmem: the receive window is tcp_rmem's maximum, at least 1 MiB and at
// most 1 GiB. Each case sets tcp_rmem in a network namespace of its own (root).
func TestReceiveWindowFromRmem(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		rmem string
		want int
	}{{"4096 131072 6291456", 6291456}, {"4096 131072 33554432", 32 << 20}, {"4096 131072 524288", 1 << 20},
		{"4096 131072 2147483647", 1 << 30}} {
		got, err := inNewNetns(func() (int, error) {
			if err := os.WriteFile("/proc/sys/net/ipv4/tcp_rmem", []byte(tc.rmem), 0); err != nil {
				return 0, err
			}
			return receiveWindow(), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("tcp_rmem %q: receive window %d, want %d", tc.rmem, got, tc.want)
		}
	}
}

// inNewNetns runs f on an OS thread moved to a new network namespace, which ends with f (the
// thread is not returned to Go's pool): /proc/sys/net there shows that namespace's settings.
func inNewNetns(f func() (int, error)) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{0, err}
			return
		}
		n, err := f()
		ch <- result{n, err}
	}()
	r := <-ch
	return r.n, r.err
}

// TestEventOverflowResets: a connection's event queue holds at most maxConnEvents; past that,
// deliver (what the dispatcher calls) refuses the events and the connection resets itself with
// MP_FASTCLOSE (EventOverflowReset), while another connection of the stack goes on. The
// dispatcher's own loop reads a real datapath's ring buffer: its count of refusals
// (EventsRefused) is not run here.
func TestEventOverflowResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		sf := addCoreSub(c, 10*time.Millisecond)
		other, ofp := newCoreConn(t, "default")
		other.stack = c.stack
		addCoreSub(other, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		ow, ostop := runCoreConn(t, other, ofp, true)
		defer ostop()

		// The connection's goroutine is held up; the dispatcher keeps delivering.
		release := make(chan struct{})
		released := false
		letGo := func() {
			if !released {
				released = true
				close(release)
			}
		}
		defer letGo() // before the stops, also when the test fails early
		go c.do(func() { <-release })
		synctest.Wait()
		// The dispatcher's routing, by connection slot.
		s := c.stack
		c.slot, other.slot = 1, 2
		s.mu.conns = map[uint32]*Conn{c.slot: c, other.slot: other}
		st := &s.stats
		for i := range maxConnEvents {
			s.route(datapath.Event{Type: datapath.EvDataAck, Conn: c.slot, A: uint64(i)})
			if st.EventsRefused.Load() != 0 {
				t.Fatalf("event %d refused, the bound is %d", i, maxConnEvents)
			}
			if i%1024 == 0 {
				s.route(datapath.Event{Type: datapath.EvDataAck, Conn: other.slot})
			}
		}
		s.route(datapath.Event{Type: datapath.EvDataAck, Conn: c.slot})
		s.route(datapath.Event{Type: datapath.EvDataAck, Conn: c.slot})
		if n := st.EventsRefused.Load(); n != 2 {
			t.Fatalf("EventsRefused %d after two events past %d, want 2", n, maxConnEvents)
		}
		// An event for a slot no connection or ticket holds is orphaned, not queued.
		s.route(datapath.Event{Type: datapath.EvDataAck, Conn: 3})
		if n := st.EventsOrphaned.Load(); n != 1 || len(s.mu.pending) != 0 {
			t.Fatalf("EventsOrphaned %d, pending %d: want the event for slot 3 orphaned", n, len(s.mu.pending))
		}
		letGo()
		synctest.Wait()
		select {
		case <-c.done:
		default:
			t.Fatal("the connection still runs after its queue overflowed")
		}
		fastclose := atomic.LoadUint32(&c.shm.Ctl.Flags)&datapath.ConnFastclose != 0
		if !errors.Is(c.Err(), errEventOverflow) || st.EventOverflowReset.Load() != 1 || !fastclose || st.Fastclose.Load() != 1 {
			t.Fatalf("err %v, EventOverflowReset %d, MP_FASTCLOSE flag %t, Fastclose %d", c.Err(), st.EventOverflowReset.Load(), fastclose, st.Fastclose.Load())
		}
		fp.mu.Lock()
		abort, closed := fp.closed[sf]
		fp.mu.Unlock()
		if !closed || !abort {
			t.Fatalf("subflow closed %t, with a reset %t", closed, abort)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, errEventOverflow) {
			t.Fatalf("Read after the reset: %v", err)
		}

		// The other connection is untouched: it still sends.
		if other.Err() != nil || atomic.LoadUint32(&other.shm.Ctl.Flags)&datapath.ConnFastclose != 0 {
			t.Fatalf("the other connection: err %v, flags %#x", other.Err(), other.shm.Ctl.Flags)
		}
		if _, err := other.Write(pattern(coreSndStart, 500)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := ow[0].taken(); len(got) != 1 {
			t.Fatalf("the other connection wrote %d mappings, want 1", len(got))
		} else {
			checkChunk(t, got[0], coreSndStart, 500)
		}
	})
}
