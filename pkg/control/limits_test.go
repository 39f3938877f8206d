package control

import "testing"

// TestDatapathConfig: the slots cover the connections, the passive-open tickets queued
// beside them and as many again; subflow slots are twice the connection slots and the
// passive joins' queue.
func TestDatapathConfig(t *testing.T) {
	for _, n := range []int{1, 8, 4096, MaxConnsLimit} {
		c := DatapathConfig(n)
		if c.MaxConns != n+2*ticketTarget {
			t.Errorf("DatapathConfig(%d).MaxConns = %d, want %d", n, c.MaxConns, n+2*ticketTarget)
		}
		if c.MaxSubs != 2*c.MaxConns+ticketTarget {
			t.Errorf("DatapathConfig(%d).MaxSubs = %d, want %d", n, c.MaxSubs, 2*c.MaxConns+ticketTarget)
		}
	}
	if c := DatapathConfig(8); c.MaxConns != 136 || c.MaxSubs != 336 {
		t.Errorf("DatapathConfig(8) = %+v, want 136 connection and 336 subflow slots", c)
	}
}
