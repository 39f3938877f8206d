package control

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestLoopEndsWhenIdle checks the connection's loop on demand: idle with nothing due, it ends
// after runLinger (no goroutine left), and whatever comes next starts it again: the
// application's data (through Write's poke), a question (Info), a write handed to a subflow,
// and at last an abort, which ends the connection.
func TestLoopEndsWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, fp := newCoreConn(t, "default")
		addCoreSub(c, 10*time.Millisecond)
		writers, stop := runCoreConn(t, c, fp, true)
		idle := func(what string) {
			t.Helper()
			time.Sleep(runLinger + time.Millisecond)
			synctest.Wait()
			if c.running.Load() {
				t.Fatalf("%s: the loop still runs %v after the connection went idle", what, runLinger)
			}
		}
		idle("at start")
		if in, ok := c.Info(); !ok || in.Token != c.token {
			t.Fatalf("Info of an idle connection: %+v, %v", in, ok)
		}
		idle("after Info")
		if n, err := c.Write(make([]byte, 5000)); n != 5000 || err != nil {
			t.Fatalf("write %d, %v", n, err)
		}
		synctest.Wait()
		var handed int
		for _, ch := range writers[0].taken() {
			handed += ch.n
		}
		if handed != 5000 {
			t.Fatalf("%d bytes handed to the subflow after a write to an idle connection, want 5000", handed)
		}
		// Data is outstanding (not DATA_ACKed): the loop samples it and does not end.
		time.Sleep(3 * runLinger)
		synctest.Wait()
		if !c.running.Load() {
			t.Fatal("the loop ended with data not DATA_ACKed")
		}
		dataAck(c, coreSndStart.Add(5000))
		idle("all DATA_ACKed")
		stop() // the abort starts the loop, which ends the connection
	})
}
