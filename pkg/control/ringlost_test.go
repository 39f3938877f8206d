package control

import (
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
)

// TestLostEventsResetConnection: through the connection's goroutine, the datapath's mark of a
// connection whose events the full ring buffer refused (ev_lost, internal/datapath's
// TestRingFullMarksConnection) resets it once the stack saw EventLost move and woke it
// (checkLostEvents): MP_FASTCLOSE on every subflow, counted EventLostReset, and Read reports
// the reset with a lack-of-resources reason. The mark alone, before the stack saw the count
// move, is not looked at.
func TestLostEventsResetConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		sf := addCoreSub(c, 10*time.Millisecond)
		_, stop := runCoreConn(t, c, fp, true)
		defer stop()
		atomic.StoreUint32(&c.shm.St.EvLost, 1)
		c.poke()
		synctest.Wait()
		if c.Err() != nil {
			t.Fatalf("reset before the stack saw EventLost move: %v", c.Err())
		}
		// What checkLostEvents does when the counter moved.
		c.stack.lostGen.Add(1)
		c.poke()
		synctest.Wait()
		select {
		case <-c.done:
		default:
			t.Fatal("the connection goes on with events lost")
		}
		if n := c.stack.stats.EventLostReset.Load(); n != 1 {
			t.Fatalf("EventLostReset %d, want 1", n)
		}
		if atomic.LoadUint32(&c.shm.Ctl.Flags)&datapath.ConnFastclose == 0 || !fp.closed[sf] {
			t.Fatalf("no MP_FASTCLOSE (flags %#x) or the subflow not reset (%t)", c.shm.Ctl.Flags, fp.closed[sf])
		}
		var re *ResetError
		if _, err := c.Read(make([]byte, 1)); !errors.As(err, &re) || re.Reason != RstLackOfResources {
			t.Fatalf("Read: %v, want the reset with reason %d", err, RstLackOfResources)
		}
	})
}
