package control

import (
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// TestTicketRefillRate: filling the passive-open ticket queue from empty, as after a burst
// took every ticket, runs far above 10,000 tickets per second; maintain refills the whole queue
// every 10 ms while tickets are being taken, and every accept refills too.
func TestTicketRefillRate(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := NewStack(StackConfig{Datapath: datapath.Config{MaxConns: 16384}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ticketTarget != ticketTargetMax {
		t.Fatalf("ticket target %d with 16384 slots, want %d", s.ticketTarget, ticketTargetMax)
	}
	start := time.Now()
	s.addListener(1) // fills the queue
	el := time.Since(start)
	defer s.addListener(-1)
	s.mu.Lock()
	queued := len(s.mu.queued)
	s.mu.Unlock()
	if queued != ticketTargetMax {
		t.Fatalf("%d tickets queued, want %d", queued, ticketTargetMax)
	}
	rate := float64(queued) / el.Seconds()
	t.Logf("%d tickets queued in %v: %.0f per second; per maintainFast period %.0f", queued, el, rate, rate*maintainFast.Seconds())
	if rate < 10000 {
		t.Errorf("tickets refilled at %.0f per second, want at least 10,000", rate)
	}
}
