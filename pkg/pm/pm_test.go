package pm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// fakeConn records the path manager's commands, each AddSubflow with the time it came (in a
// synctest bubble, the bubble's virtual time).
type fakeConn struct {
	server    bool
	mu        sync.Mutex
	subs      []pmapi.Subflow
	adds      []addCall
	withdrawn [][]uint8 // the IDs of each REMOVE_ADDR asked for
}

type addCall struct {
	at time.Time
	s  string
}

func (a addCall) String() string { return a.s }

func newFake(server bool) *fakeConn {
	return &fakeConn{server: server,
		subs: []pmapi.Subflow{{Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80")}}}
}

func (f *fakeConn) Token() uint32          { return 1 }
func (f *fakeConn) Remote() netip.AddrPort { return netip.MustParseAddrPort("10.0.0.2:80") }
func (f *fakeConn) Local() netip.AddrPort  { return netip.MustParseAddrPort("10.0.0.1:40000") }
func (f *fakeConn) Server() bool           { return f.server }
func (f *fakeConn) AddSubflow(local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds = append(f.adds, addCall{time.Now(), fmt.Sprintf("%v/%d->%v/%d backup=%v", local, localID, remote, remoteID, backup)})
	return nil
}
func (f *fakeConn) CloseSubflows(localID, remoteID int) int               { return 0 }
func (f *fakeConn) CloseSubflowsFrom(local netip.Addr, err error) int     { return 0 }
func (f *fakeConn) Announce(id uint8, addr netip.Addr, port uint16) error { return nil }
func (f *fakeConn) Withdraw(ids ...uint8) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withdrawn = append(f.withdrawn, append([]uint8(nil), ids...))
	return nil
}
func (f *fakeConn) SetBackup(localID int, backup bool) error { return nil }
func (f *fakeConn) Subflows() []pmapi.Subflow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pmapi.Subflow(nil), f.subs...)
}

// take returns the AddSubflow calls since the last take.
func (f *fakeConn) take() []addCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.adds
	f.adds = nil
	return a
}

// expectAdd checks that exactly one AddSubflow came since the last take, the one wanted.
func (f *fakeConn) expectAdd(t *testing.T, what, want string) {
	t.Helper()
	synctest.Wait()
	if got := f.take(); len(got) != 1 || got[0].s != want {
		t.Fatalf("%s: AddSubflow calls %v, want one %q", what, got, want)
	}
}

// expectRetryAfter checks, in a synctest bubble, that a subflow lost just now is opened again d
// later to the nanosecond: not at d-1ns, once at d.
func (f *fakeConn) expectRetryAfter(t *testing.T, what string, d time.Duration, want string) {
	t.Helper()
	t0 := time.Now()
	time.Sleep(d - time.Nanosecond)
	synctest.Wait()
	if got := f.take(); len(got) != 0 {
		t.Fatalf("%s: opened again %v after the loss, before its backoff of %v (%q)", what, got[0].at.Sub(t0), d, got[0].s)
	}
	time.Sleep(time.Nanosecond)
	synctest.Wait()
	got := f.take()
	if len(got) != 1 || got[0].s != want || !got[0].at.Equal(t0.Add(d)) {
		t.Fatalf("%s: AddSubflow calls %v at %v after the loss, want one %q", what, got, d, want)
	}
}

// expectNoRetry checks, in a synctest bubble, that nothing is opened within an hour: far past
// the longest backoff (a minute), so every timer the manager could have set has fired.
func (f *fakeConn) expectNoRetry(t *testing.T, what string) {
	t.Helper()
	f.expectNoRetryWithin(t, what, time.Hour)
}

// expectNoRetryWithin checks that nothing is opened within d.
func (f *fakeConn) expectNoRetryWithin(t *testing.T, what string, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	synctest.Wait()
	if got := f.take(); len(got) != 0 {
		t.Fatalf("%s: opened again %q", what, got[0].s)
	}
}

var (
	ep1     = pmapi.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), ID: 1, Flags: pmapi.FlagSubflow}
	fromEp1 = "10.1.0.1/1->10.0.0.2:80/0 backup=false"
	lostEp1 = pmapi.Subflow{Local: netip.MustParseAddrPort("10.1.0.1:41000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"), LocalID: 1, Active: true}
	errLost = errors.New("connection timed out")
)

// withEndpoint returns a manager with a subflow endpoint and a client connection that opened
// its subflow. Call it inside the bubble: the manager's timers belong to it.
func withEndpoint(t *testing.T) (*Manager, *fakeConn) {
	t.Helper()
	m := New(nil)
	if _, err := m.AddEndpoint(ep1); err != nil {
		t.Fatal(err)
	}
	c := newFake(false)
	m.Established(c)
	c.expectAdd(t, "established", fromEp1)
	return m, c
}

// TestRetryBackoff measures the retry schedule of a subflow lost again each time it is opened,
// with the real constants in virtual time: 1, 2, 4, 8, 16, 32, 60 and 60 s (the README's "from
// 1 s doubling to 60 s, at most 8 times in a row"), then no more.
func TestRetryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		schedule := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
		for i, d := range schedule {
			m.SubflowClosed(c, lostEp1, errLost)
			c.expectRetryAfter(t, fmt.Sprintf("loss %d", i+1), d*time.Second, fromEp1)
			if got := m.Retries(); got != uint64(i+1) {
				t.Fatalf("after retry %d: Retries() = %d", i+1, got)
			}
		}
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectNoRetry(t, fmt.Sprintf("loss %d, past the limit", len(schedule)+1))
		if got := m.Retries(); got != uint64(len(schedule)) {
			t.Errorf("Retries() = %d, want %d", got, len(schedule))
		}
	})
}

// TestRetryBackoffResets: a subflow that worked for more than two minutes after its last retry
// starts the backoff again from 1 s; one that worked for less carries on doubling.
func TestRetryBackoffResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "first loss", time.Second, fromEp1)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost at once", 2*time.Second, fromEp1)
		time.Sleep(2*time.Minute - time.Second)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost after working 1m59s", 4*time.Second, fromEp1)
		time.Sleep(2*time.Minute + time.Second)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost after working 2m1s", time.Second, fromEp1)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost at once after the reset", 2*time.Second, fromEp1)
		// A reset also gives back the whole allowance of retries: eight in a row again.
		for i, d := range []time.Duration{4, 8, 16, 32, 60, 60} {
			m.SubflowClosed(c, lostEp1, errLost)
			c.expectRetryAfter(t, fmt.Sprintf("loss %d after the reset", i+3), d*time.Second, fromEp1)
		}
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectNoRetry(t, "loss 9 after the reset")
	})
}

// TestNoRetry: a subflow closed on purpose, by us or the peer (REMOVE_ADDR, FIN), one we did not
// open, and one whose local address went away are not opened again by the backoff.
func TestNoRetry(t *testing.T) {
	notOurs := lostEp1
	notOurs.Active = false
	for _, tc := range []struct {
		name string
		sf   pmapi.Subflow
		err  error
	}{
		{"closed without error", lostEp1, nil},
		{"address removed", lostEp1, pmapi.ErrRemoved},
		{"address removed, wrapped", lostEp1, fmt.Errorf("subflow: %w", pmapi.ErrRemoved)},
		{"peer's FIN", lostEp1, io.EOF},
		{"opened by the peer", notOurs, errLost},
		{"local address gone", lostEp1, ErrPathDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, c := withEndpoint(t)
				m.SubflowClosed(c, tc.sf, tc.err)
				c.expectNoRetry(t, tc.name)
				if got := m.Retries(); got != 0 {
					t.Errorf("Retries() = %d", got)
				}
			})
		})
	}
}

// TestRetryStopsWhenEndpointGone: our endpoint deleted while a retry waits, the retry does not
// happen; re-added later, its new subflow gets the whole backoff again.
func TestRetryStopsWhenEndpointGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		m.SubflowClosed(c, lostEp1, errLost)
		time.Sleep(time.Second / 2)
		if _, err := m.DeleteEndpoint(1, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		c.expectNoRetry(t, "endpoint deleted while the retry waited")
		if got := m.Retries(); got != 0 {
			t.Errorf("Retries() = %d", got)
		}
	})
	// Given up after eight losses, then deleted and added again within two minutes: the new
	// subflow from it starts from 1 s, not past the limit.
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		for i, d := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60} {
			m.SubflowClosed(c, lostEp1, errLost)
			c.expectRetryAfter(t, fmt.Sprintf("loss %d", i+1), d*time.Second, fromEp1)
		}
		m.SubflowClosed(c, lostEp1, errLost)
		time.Sleep(time.Minute + time.Second) // past the longest backoff, within two minutes
		if synctest.Wait(); len(c.take()) != 0 {
			t.Fatal("opened again past the limit")
		}
		if _, err := m.DeleteEndpoint(1, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		m.SubflowClosed(c, lostEp1, pmapi.ErrRemoved) // what the connection reports as it closes it
		if _, err := m.AddEndpoint(ep1); err != nil {
			t.Fatal(err)
		}
		c.expectAdd(t, "endpoint added again", fromEp1)
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost after the endpoint came back", time.Second, fromEp1)
	})
}

// TestRetryStopsWhenPeerAddressGone: a subflow to an address the peer announced is opened
// again, but not once the peer removed the address, whether the retry was waiting or the
// subflow is lost after the removal.
func TestRetryStopsWhenPeerAddressGone(t *testing.T) {
	const toAnnounced = "invalid IP/0->10.5.0.2:80/5 backup=false"
	lost := pmapi.Subflow{Local: netip.MustParseAddrPort("10.0.0.1:41000"), Remote: netip.MustParseAddrPort("10.5.0.2:80"), RemoteID: 5, Active: true}
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		m.SetLimits(Limits{Subflows: 2, AddAddrAccepted: 2})
		c := newFake(false)
		m.Established(c)
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.5.0.2:0"))
		c.expectAdd(t, "ADD_ADDR", toAnnounced)
		m.SubflowClosed(c, lost, errLost)
		c.expectRetryAfter(t, "lost", time.Second, toAnnounced)
		m.SubflowClosed(c, lost, errLost)
		time.Sleep(time.Second)
		m.AddrRemoved(c, 5) // while the retry waits (due at 2 s)
		c.expectNoRetryWithin(t, "address removed while the retry waited", time.Minute+time.Second)
		if got := m.Retries(); got != 1 {
			t.Errorf("Retries() = %d, want 1", got)
		}
		// Announced again within two minutes: opened, and its loss retried from 1 s.
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.5.0.2:0"))
		c.expectAdd(t, "ADD_ADDR again", toAnnounced)
		m.SubflowClosed(c, lost, errLost)
		c.expectRetryAfter(t, "lost after the address was announced again", time.Second, toAnnounced)
		// Removed again, then lost: not opened again.
		m.AddrRemoved(c, 5)
		m.SubflowClosed(c, lost, errLost)
		c.expectNoRetry(t, "lost after the address was removed")
		if got := m.Retries(); got != 2 {
			t.Errorf("Retries() = %d, want 2", got)
		}
	})
}

// TestRetryStopsWhenClosed: the connection ends while a retry waits.
func TestRetryStopsWhenClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		m.SubflowClosed(c, lostEp1, errLost)
		m.Closed(c)
		c.expectNoRetry(t, "connection closed while the retry waited")
	})
}

// TestRetryWhenLocalAddressBack: a subflow lost because its local address went away (here one
// from the address routing picked, to an address the peer announced) is not retried on the
// backoff; it is opened again, once and at once, from that address when it returns.
func TestRetryWhenLocalAddressBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(nil)
		m.SetLimits(Limits{Subflows: 2, AddAddrAccepted: 2})
		c := newFake(false)
		m.Established(c)
		m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.5.0.2:0"))
		c.expectAdd(t, "ADD_ADDR", "invalid IP/0->10.5.0.2:80/5 backup=false")
		a := netip.MustParseAddr("10.3.0.1")
		m.addrGone(a)
		m.SubflowClosed(c, pmapi.Subflow{Local: netip.AddrPortFrom(a, 41000), Remote: netip.MustParseAddrPort("10.5.0.2:80"), RemoteID: 5, Active: true}, ErrPathDown)
		c.expectNoRetry(t, "local address gone")
		m.addrBack(a)
		c.expectAdd(t, "address back", "10.3.0.1/0->10.5.0.2:80/5 backup=false")
		c.expectNoRetry(t, "after the address came back")
	})
}

// TestRetryEndpointBack: a subflow from an endpoint lost to an error, whose retry comes due
// while the endpoint's address is gone, is not opened then; when the address returns it is
// opened once (the endpoint acting again), not also by the retry.
func TestRetryEndpointBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, c := withEndpoint(t)
		m.SubflowClosed(c, lostEp1, errLost)
		time.Sleep(time.Second / 2)
		m.addrGone(ep1.Addr) // the retry, due in 0.5 s, finds the address gone
		c.expectNoRetry(t, "retry due while the local address is gone")
		m.addrBack(ep1.Addr)
		c.expectAdd(t, "address back", fromEp1)
		c.expectNoRetry(t, "after the address came back")
		// And its backoff starts again from 1 s.
		m.SubflowClosed(c, lostEp1, errLost)
		c.expectRetryAfter(t, "lost after the address came back", time.Second, fromEp1)
	})
}

func TestParseLimits(t *testing.T) {
	l, err := ParseLimits("subflows=4,add-addr-accepted=3", DefaultLimits)
	if err != nil || l != (Limits{Subflows: 4, AddAddrAccepted: 3}) {
		t.Errorf("got %+v, %v", l, err)
	}
	l, err = ParseLimits("add_addr_accepted=1", DefaultLimits)
	if err != nil || l != (Limits{Subflows: 2, AddAddrAccepted: 1}) {
		t.Errorf("got %+v, %v", l, err)
	}
	for _, bad := range []string{"", "subflows", "subflows=9", "subflows=-1", "foo=1", "subflows=x"} {
		if _, err := ParseLimits(bad, DefaultLimits); err == nil {
			t.Errorf("ParseLimits(%q): no error", bad)
		}
	}
}
