package control

import (
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
)

// TestDatapathConfig: after the passive-open ticket queue (a quarter of the slots) the slots
// cover the connections and the reserve; subflow slots are twice the connection slots and the
// passive joins' queue.
func TestDatapathConfig(t *testing.T) {
	for _, n := range []int{1, 8, 4096, MaxConnsLimit} {
		c := DatapathConfig(n)
		if left := c.MaxConns - c.MaxConns/4; left < n+connSlotsReserve {
			t.Errorf("DatapathConfig(%d): %d slots leave %d after the ticket queue, want %d", n, c.MaxConns, left, n+connSlotsReserve)
		}
		if c.MaxSubs != 2*c.MaxConns+joinTarget {
			t.Errorf("DatapathConfig(%d).MaxSubs = %d, want %d", n, c.MaxSubs, 2*c.MaxConns+joinTarget)
		}
	}
	if c := DatapathConfig(8); c.MaxConns != 182 || c.MaxSubs != 428 {
		t.Errorf("DatapathConfig(8) = %+v, want 182 connection and 428 subflow slots", c)
	}
	if c := DatapathConfig(MaxConnsLimit); c.MaxConns > datapath.MaxSlots || c.MaxSubs > datapath.MaxSlots {
		t.Errorf("DatapathConfig(MaxConnsLimit) = %+v: beyond the datapath's %d slots", c, datapath.MaxSlots)
	}
}
