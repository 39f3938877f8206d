package netns_test

import (
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMultipathAddressRemoved: an address of ours that goes away while its link stays up (`ip
// addr del`) sends REMOVE_ADDR and closes its subflows; when it is added back, the subflows
// come back and carry data. As our client's subflow endpoint, and as our server's signal
// endpoint (re-announced, and the kernel client joins it again).
func TestMultipathAddressRemoved(t *testing.T) {
	for _, c := range []struct {
		p     pairing
		ours  netns.Side
		flags string
	}{{pairing{oursImpl, kernelImpl}, A, "subflow"}, {pairing{kernelImpl, oursImpl}, B, "signal"}} {
		t.Run(c.p.String(), func(t *testing.T) {
			r := newRig(t, caseCtx(t, 60*time.Second), c.p, rigConfig{paths: 2})
			r.endpoint(c.ours, 1, netns.IPv4, c.flags)
			r.connect()
			r.waitSubflows(A, 2)
			r.waitSubflows(B, 2)
			e := r.iface(c.ours, 1)
			e.NS.IP("addr", "del", e.Addr(netns.IPv4).String()+"/24", "dev", e.Name)
			// The link is up: only the address is gone. REMOVE_ADDR reaches the kernel, and
			// the subflow closes on both sides.
			r.waitSubflows(A, 1)
			r.waitSubflows(B, 1)
			r.wantDelta(c.ours.Other(), "RmAddr", 1)
			r.wantDelta(c.ours, "RmAddrTx", 1)
			if l, err := e.Link(); err != nil || l.Attrs().OperState != 6 /* netlink.OperUp */ {
				t.Fatalf("the link went down (%v): the test is about the address alone", err)
			}
			e.Up() // the address and its routes back
			r.waitSubflows(A, 2)
			r.waitSubflows(B, 2)
			tx := r.linkTx(c.ours, 1)
			r.start(32<<20, 32<<20).wait()
			if d := r.linkTx(c.ours, 1) - tx; d < 2<<20 {
				t.Errorf("the path of the restored address carried %d bytes, want a share", d)
			}
			r.checkHealthy()
		})
	}
}
