package pm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// fakeConn records the path manager's commands.
type fakeConn struct {
	server bool
	mu     sync.Mutex
	subs   []pmapi.Subflow
	adds   []string
	added  chan string
}

func newFake(server bool) *fakeConn {
	return &fakeConn{server: server, added: make(chan string, 16),
		subs: []pmapi.Subflow{{Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80")}}}
}

func (f *fakeConn) Token() uint32          { return 1 }
func (f *fakeConn) Remote() netip.AddrPort { return netip.MustParseAddrPort("10.0.0.2:80") }
func (f *fakeConn) Local() netip.AddrPort  { return netip.MustParseAddrPort("10.0.0.1:40000") }
func (f *fakeConn) Server() bool           { return f.server }
func (f *fakeConn) AddSubflow(local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) error {
	s := fmt.Sprintf("%v/%d->%v/%d backup=%v", local, localID, remote, remoteID, backup)
	f.mu.Lock()
	f.adds = append(f.adds, s)
	f.mu.Unlock()
	f.added <- s
	return nil
}
func (f *fakeConn) CloseSubflows(localID, remoteID int) int               { return 0 }
func (f *fakeConn) CloseSubflowsFrom(local netip.Addr, err error) int     { return 0 }
func (f *fakeConn) Announce(id uint8, addr netip.Addr, port uint16) error { return nil }
func (f *fakeConn) Withdraw(ids ...uint8) error                           { return nil }
func (f *fakeConn) SetBackup(localID int, backup bool) error              { return nil }
func (f *fakeConn) Subflows() []pmapi.Subflow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pmapi.Subflow(nil), f.subs...)
}

func (f *fakeConn) next(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case s := <-f.added:
		return s
	case <-time.After(within):
		return ""
	}
}

func fastRetries(t *testing.T) {
	oldMin, oldMax, oldLimit := retryMin, retryMax, retryLimit
	retryMin, retryMax, retryLimit = 10*time.Millisecond, 40*time.Millisecond, 3
	t.Cleanup(func() { retryMin, retryMax, retryLimit = oldMin, oldMax, oldLimit })
}

func TestRetryLostSubflow(t *testing.T) {
	fastRetries(t)
	m := New(nil)
	if _, err := m.AddEndpoint(pmapi.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), ID: 1, Flags: pmapi.FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	c := newFake(false)
	m.Established(c)
	const want = "10.1.0.1/1->10.0.0.2:80/0 backup=false"
	if got := c.next(t, time.Second); got != want {
		t.Fatalf("established: AddSubflow %q, want %q", got, want)
	}
	lost := pmapi.Subflow{Local: netip.MustParseAddrPort("10.1.0.1:0"), Remote: c.Remote(), LocalID: 1, Active: true}
	// Closed on purpose, or by the peer's FIN, or not ours: not opened again.
	for _, tc := range []struct {
		sf  pmapi.Subflow
		err error
	}{{lost, nil}, {lost, pmapi.ErrRemoved}, {lost, io.EOF}, {pmapi.Subflow{Local: lost.Local, Remote: lost.Remote, LocalID: 1}, errors.New("reset")}} {
		m.SubflowClosed(c, tc.sf, tc.err)
		if got := c.next(t, 100*time.Millisecond); got != "" {
			t.Fatalf("closed with %v (active %v): reopened %q", tc.err, tc.sf.Active, got)
		}
	}
	// Lost to errors: opened again, at most retryLimit times in a row.
	for i := range retryLimit {
		m.SubflowClosed(c, lost, errors.New("connection timed out"))
		if got := c.next(t, time.Second); got != want {
			t.Fatalf("retry %d: AddSubflow %q, want %q", i+1, got, want)
		}
	}
	if got := m.Retries(); got != uint64(retryLimit) {
		t.Errorf("Retries() = %d, want %d", got, retryLimit)
	}
	m.SubflowClosed(c, lost, errors.New("connection timed out"))
	if got := c.next(t, 200*time.Millisecond); got != "" {
		t.Fatalf("retried past the limit: %q", got)
	}
}

func TestRetryStopsWhenEndpointGone(t *testing.T) {
	fastRetries(t)
	m := New(nil)
	m.SetLimits(Limits{Subflows: 2, AddAddrAccepted: 2})
	c := newFake(false)
	m.Established(c)
	m.AddrAnnounced(c, 5, netip.MustParseAddrPort("10.5.0.2:0"))
	if got, want := c.next(t, time.Second), "invalid IP/0->10.5.0.2:80/5 backup=false"; got != want {
		t.Fatalf("ADD_ADDR: AddSubflow %q, want %q", got, want)
	}
	lost := pmapi.Subflow{Local: netip.MustParseAddrPort("10.0.0.1:41000"), Remote: netip.MustParseAddrPort("10.5.0.2:80"), RemoteID: 5, Active: true}
	m.SubflowClosed(c, lost, errors.New("reset"))
	if got, want := c.next(t, time.Second), "invalid IP/0->10.5.0.2:80/5 backup=false"; got != want {
		t.Fatalf("retry: AddSubflow %q, want %q", got, want)
	}
	// The peer removes the address: no more retries to it.
	m.AddrRemoved(c, 5)
	m.SubflowClosed(c, lost, errors.New("reset"))
	if got := c.next(t, 200*time.Millisecond); got != "" {
		t.Fatalf("retried a removed address: %q", got)
	}
	// Our endpoint is deleted while a retry waits: it does not happen.
	if _, err := m.AddEndpoint(pmapi.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), ID: 1, Flags: pmapi.FlagSubflow}); err != nil {
		t.Fatal(err)
	}
	c.next(t, time.Second)
	retryMin = 100 * time.Millisecond
	m.SubflowClosed(c, pmapi.Subflow{Local: netip.MustParseAddrPort("10.1.0.1:0"), Remote: c.Remote(), LocalID: 1, Active: true}, errors.New("reset"))
	if _, err := m.DeleteEndpoint(1, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if got := c.next(t, 300*time.Millisecond); got != "" {
		t.Fatalf("retried a deleted endpoint: %q", got)
	}
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
