package pm

import (
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// TestAnnouncedWithinLimits: the peer's ADD_ADDRs are joined from the address routing picks,
// up to add_addr_accepted of them per connection; one beyond the limit, or a repeated ID, opens
// nothing.
func TestAnnouncedWithinLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		if err := m.SetLimits(Limits{Subflows: 8, AddAddrAccepted: 2}); err != nil {
			t.Fatal(err)
		}
		c := newFake(false)
		m.Established(c)
		c.expectNoRetryWithin(t, "no endpoints", 0)
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.0.1.2:0"))
		c.expectAdd(t, "first announcement", "invalid IP/0->10.0.1.2:80/5 backup=false") // the connection's port
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.0.1.2:0"))
		c.expectNoRetryWithin(t, "the same ID again", 0)
		m.AddrAnnounced(c, 6, netip.MustParseAddrPort("10.0.2.2:8080"))
		c.expectAdd(t, "second announcement", "invalid IP/0->10.0.2.2:8080/6 backup=false")
		m.AddrAnnounced(c, 7, netip.MustParseAddrPort("10.0.3.2:0"))
		c.expectNoRetryWithin(t, "beyond add_addr_accepted", 0)
	})
	synctest.Test(t, func(t *testing.T) {
		m := New(nil) // the kernel's defaults: add_addr_accepted 0
		c := newFake(false)
		m.Established(c)
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.0.1.2:0"))
		c.expectNoRetryWithin(t, "add_addr_accepted 0", 0)
	})
}

// TestFullmesh: a fullmesh endpoint opens a subflow to the peer's first address and to each
// address it announced (of its family), whichever comes first; an announcement is then joined
// from every fullmesh endpoint and not from the default address; the subflows limit holds.
func TestFullmesh(t *testing.T) {
	fm := pmapi.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), ID: 2, Flags: pmapi.FlagSubflow | pmapi.FlagFullmesh}
	fm6 := pmapi.Endpoint{Addr: netip.MustParseAddr("fd00:1::1"), ID: 3, Flags: pmapi.FlagSubflow | pmapi.FlagFullmesh}
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		if err := m.SetLimits(Limits{Subflows: 8, AddAddrAccepted: 8}); err != nil {
			t.Fatal(err)
		}
		for _, e := range []pmapi.Endpoint{fm, fm6} {
			if _, err := m.AddEndpoint(e); err != nil {
				t.Fatal(err)
			}
		}
		c := newFake(false)
		m.Established(c)
		c.expectAdd(t, "established", "10.1.0.1/2->10.0.0.2:80/0 backup=false") // the IPv6 endpoint: not to an IPv4 peer
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.0.1.2:0"))
		c.expectAdd(t, "announced", "10.1.0.1/2->10.0.1.2:80/5 backup=false")
		m.AddrAnnounced(c, 6, netip.MustParseAddrPort("[fd00:2::2]:0"))
		c.expectAdd(t, "announced IPv6", "fd00:1::1/3->[fd00:2::2]:80/6 backup=false")

		// A fullmesh endpoint added later reaches the first address and every announced one
		// of its family.
		late := pmapi.Endpoint{Addr: netip.MustParseAddr("10.2.0.1"), ID: 4, Flags: pmapi.FlagSubflow | pmapi.FlagFullmesh | pmapi.FlagBackup}
		if _, err := m.AddEndpoint(late); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		got := map[string]bool{}
		for _, a := range c.take() {
			got[a.s] = true
		}
		want := []string{"10.2.0.1/4->10.0.0.2:80/0 backup=true", "10.2.0.1/4->10.0.1.2:80/5 backup=true"}
		if len(got) != len(want) || !got[want[0]] || !got[want[1]] {
			t.Fatalf("late fullmesh endpoint: AddSubflow calls %v, want %v", got, want)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		if err := m.SetLimits(Limits{Subflows: 0, AddAddrAccepted: 8}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.AddEndpoint(fm); err != nil {
			t.Fatal(err)
		}
		c := newFake(false)
		m.Established(c)
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.0.1.2:0"))
		c.expectNoRetryWithin(t, "subflows limit 0", 0)
	})
}

// TestFlushOneRemoveAddr: a flush sends each connection one REMOVE_ADDR with the IDs its peer
// knows (the kernel drops one that comes while it handles the previous), at most eight a
// REMOVE_ADDR.
func TestFlushOneRemoveAddr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		for i := range 10 {
			e := pmapi.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(i + 1), 0, 1}), ID: uint8(i + 1), Flags: pmapi.FlagSignal}
			if i == 2 || i == 8 {
				e.Flags = pmapi.FlagSubflow // used by a subflow of the client below, not announced
			}
			if _, err := m.AddEndpoint(e); err != nil {
				t.Fatal(err)
			}
		}
		client := newFake(false)
		client.subs = append(client.subs,
			pmapi.Subflow{Local: netip.MustParseAddrPort("10.3.0.1:40001"), Remote: client.Remote(), LocalID: 3, Active: true},
			pmapi.Subflow{Local: netip.MustParseAddrPort("10.9.0.1:40002"), Remote: client.Remote(), LocalID: 9, Active: true})
		server := newFake(true)
		m.Established(client)
		m.Established(server)
		synctest.Wait()
		m.Flush()
		if got := client.withdrawn; len(got) != 1 || fmt.Sprint(got[0]) != "[3 9]" {
			t.Errorf("client: REMOVE_ADDRs %v, want one of [3 9]", got)
		}
		// The server announced its eight signal endpoints: eight IDs fit in one REMOVE_ADDR.
		if got := server.withdrawn; len(got) != 1 || fmt.Sprint(got[0]) != "[1 2 4 5 6 7 8 10]" {
			t.Errorf("server: REMOVE_ADDRs %v, want one of the eight announced IDs", got)
		}
	})
}

// TestFlushForgetsRetries: endpoints a flush removed start their retries afresh when added
// again, as after DeleteEndpoint.
func TestFlushForgetsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		for range 3 { // three losses: the next retry would wait 8 s
			m.SubflowClosed(c, lostEp1, errLost)
			time.Sleep(retryMax)
			synctest.Wait()
			c.take()
		}
		m.Flush()
		if _, err := m.AddEndpoint(ep1); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		c.take() // the endpoint's subflow, opened again
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost after the flush and the endpoint's return", retryMin, fromEp1)
	})
}
