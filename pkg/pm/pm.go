// Package pm is the path manager: which subflows a connection has, which addresses it
// announces and removes, following the endpoints and limits an operator configures.
package pm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
)

// Limits bound what a connection does, with the kernel's defaults.
type Limits struct {
	Subflows        int // extra subflows per connection (kernel default 2)
	AddAddrAccepted int // ADD_ADDRs acted on per connection (kernel default 0)
}

// DefaultLimits are the kernel's defaults.
var DefaultLimits = Limits{Subflows: 2, AddAddrAccepted: 0}

// MaxLimit is the largest value of either limit, as the kernel's MPTCP_PM_ADDR_MAX.
const MaxLimit = 8

// ParseLimits parses subflows=N,add-addr-accepted=N (either may be left out).
func ParseLimits(s string, base Limits) (Limits, error) {
	l := base
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 || n > MaxLimit {
			return l, fmt.Errorf("limits %q: want subflows=N,add-addr-accepted=N with N in 0..%d", s, MaxLimit)
		}
		switch k {
		case "subflows":
			l.Subflows = n
		case "add-addr-accepted", "add_addr_accepted":
			l.AddAddrAccepted = n
		default:
			return l, fmt.Errorf("limits %q: unknown limit %q", s, k)
		}
	}
	return l, nil
}

var (
	_ pmapi.PathManager     = (*Manager)(nil)
	_ pmapi.EndpointWatcher = (*Manager)(nil)
	_ pmapi.RetryCounter    = (*Manager)(nil)
)

// Manager is the path manager: endpoints and limits shared by all connections.
//
// Locking: fields under mu are guarded by it; methods that need it held end in Locked.
type Manager struct {
	log *slog.Logger

	retries atomic.Uint64 // subflows opened again after a failure

	mu struct {
		sync.Mutex
		endpoints []pmapi.Endpoint
		limits    Limits
		conns     map[pmapi.Conn]*connState
		hooks     []func(e pmapi.Endpoint, present bool)
		absent    map[netip.Addr]bool // local addresses gone (Watch): removed, or link down
	}
}

// OnEndpoint registers f to learn of every endpoint, present and future: present is true when
// it is added, false when deleted. The stack uses it to give the datapath the address IDs
// that its MP_JOIN SYN/ACKs carry. f must not call back into the manager.
func (m *Manager) OnEndpoint(f func(e pmapi.Endpoint, present bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.hooks = append(m.mu.hooks, f)
	for _, e := range m.mu.endpoints {
		f(e, true)
	}
}

func (m *Manager) notifyLocked(e pmapi.Endpoint, present bool) {
	for _, f := range m.mu.hooks {
		f(e, present)
	}
}

// connState is what the manager remembers of one connection.
type connState struct {
	announced map[uint8]netip.AddrPort // the peer's ADD_ADDRs we acted on
	accepted  int                      // ADD_ADDRs acted on
	retries   map[retryKey]*retry      // subflows we opened and lost, being opened again
}

// A subflow we opened that failed or broke is opened again after a backoff that doubles from
// retryMin to retryMax, at most retryLimit times in a row: the path may come back (a link down
// for a minute), or the peer may refuse for good (its limits), and then we stop. A subflow that
// breaks more than retryReset after its last retry worked for a while: its backoff starts again
// from retryMin. The kernel's path manager does not retry at all.
const (
	retryMin   = time.Second
	retryMax   = time.Minute
	retryLimit = 8
	retryReset = 2 * retryMax
)

type retryKey struct {
	localID uint8
	local   netip.Addr // for local ID 0: routing picks (invalid address)
	remote  netip.AddrPort
}

type retry struct {
	fails   int
	lastTry time.Time
	timer   *time.Timer
}

// New returns a manager with the kernel's default limits and no endpoints.
func New(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{log: log}
	m.mu.limits = DefaultLimits
	m.mu.conns = map[pmapi.Conn]*connState{}
	m.mu.absent = map[netip.Addr]bool{}
	return m
}

// ErrExists is returned when an endpoint's address or ID is taken.
var ErrExists = errors.New("endpoint exists")

// AddEndpoint adds an endpoint; a zero ID gets the lowest free one. Existing connections act on
// it: a subflow endpoint opens subflows, a signal endpoint is announced.
func (m *Manager) AddEndpoint(e pmapi.Endpoint) (pmapi.Endpoint, error) {
	m.mu.Lock()
	for _, x := range m.mu.endpoints {
		if x.Addr == e.Addr || (e.ID != 0 && x.ID == e.ID) {
			m.mu.Unlock()
			return e, fmt.Errorf("%v: %w (%v)", e.Addr, ErrExists, x)
		}
	}
	if e.ID == 0 {
		e.ID = m.freeIDLocked()
		if e.ID == 0 {
			m.mu.Unlock()
			return e, errors.New("no free endpoint ID")
		}
	}
	m.mu.endpoints = append(m.mu.endpoints, e)
	sort.Slice(m.mu.endpoints, func(i, j int) bool { return m.mu.endpoints[i].ID < m.mu.endpoints[j].ID })
	m.notifyLocked(e, true)
	conns := m.connsLocked()
	m.mu.Unlock()
	for _, c := range conns {
		m.applyEndpoint(c, e)
	}
	return e, nil
}

func (m *Manager) freeIDLocked() uint8 {
	used := map[uint8]bool{}
	for _, x := range m.mu.endpoints {
		used[x.ID] = true
	}
	for id := 1; id < 256; id++ {
		if !used[uint8(id)] {
			return uint8(id)
		}
	}
	return 0
}

// Endpoints returns the endpoints.
func (m *Manager) Endpoints() []pmapi.Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]pmapi.Endpoint(nil), m.mu.endpoints...)
}

// EndpointID returns the ID of the endpoint with this address, 0 if none.
func (m *Manager) EndpointID(a netip.Addr) uint8 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.mu.endpoints {
		if e.Addr == a.Unmap() {
			return e.ID
		}
	}
	return 0
}

// SetLimits replaces the limits.
func (m *Manager) SetLimits(l Limits) error {
	if l.Subflows < 0 || l.Subflows > MaxLimit || l.AddAddrAccepted < 0 || l.AddAddrAccepted > MaxLimit {
		return fmt.Errorf("limits out of range 0..%d", MaxLimit)
	}
	m.mu.Lock()
	m.mu.limits = l
	m.mu.Unlock()
	return nil
}

// Limits returns the limits.
func (m *Manager) Limits() Limits {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.limits
}

func (m *Manager) connsLocked() []pmapi.Conn {
	var out []pmapi.Conn
	for c := range m.mu.conns {
		out = append(out, c)
	}
	return out
}

// Established is called when a connection is fully established.
func (m *Manager) Established(c pmapi.Conn) {
	m.mu.Lock()
	m.mu.conns[c] = &connState{announced: map[uint8]netip.AddrPort{}, retries: map[retryKey]*retry{}}
	eps := append([]pmapi.Endpoint(nil), m.mu.endpoints...)
	m.mu.Unlock()
	for _, e := range eps {
		m.applyEndpoint(c, e)
	}
}

// Closed is called when a connection ends.
func (m *Manager) Closed(c pmapi.Conn) {
	m.mu.Lock()
	if st := m.mu.conns[c]; st != nil {
		for _, r := range st.retries {
			if r.timer != nil {
				r.timer.Stop()
			}
		}
	}
	delete(m.mu.conns, c)
	m.mu.Unlock()
}

// Retries returns how many subflows were opened again after a failure (JoinRetries).
func (m *Manager) Retries() uint64 { return m.retries.Load() }

// applyEndpoint acts on one endpoint for one connection.
func (m *Manager) applyEndpoint(c pmapi.Conn, e pmapi.Endpoint) {
	if m.Absent(e.Addr) {
		return // when it returns
	}
	remote := c.Remote()
	if e.Flags&pmapi.FlagSignal != 0 && c.Server() {
		port := e.Port
		if err := c.Announce(e.ID, e.Addr, port); err != nil {
			m.log.Debug("announce", "token", c.Token(), "endpoint", e.String(), "err", err)
		}
	}
	if e.Flags&pmapi.FlagSubflow == 0 || c.Server() {
		return
	}
	if e.Addr.Is4() != remote.Addr().Is4() || e.Addr == c.Local().Addr() {
		return
	}
	targets := []netip.AddrPort{remote}
	ids := []uint8{0}
	if e.Flags&pmapi.FlagFullmesh != 0 {
		m.mu.Lock()
		if st := m.mu.conns[c]; st != nil {
			for id, a := range st.announced {
				if a.Addr().Is4() == e.Addr.Is4() {
					targets, ids = append(targets, a), append(ids, id)
				}
			}
		}
		m.mu.Unlock()
	}
	for i, t := range targets {
		if !m.subflowAllowed(c) {
			return
		}
		if err := c.AddSubflow(e.Addr, e.ID, t, ids[i], e.Flags&pmapi.FlagBackup != 0); err != nil {
			m.log.Debug("add subflow", "token", c.Token(), "from", e.Addr, "to", t, "err", err)
		}
	}
}

// subflowAllowed reports whether a connection may have one more subflow.
func (m *Manager) subflowAllowed(c pmapi.Conn) bool {
	return len(c.Subflows())-1 < m.Limits().Subflows
}

// AddrAnnounced is called for an ADD_ADDR the peer sent (its HMAC already checked). Within the
// add_addr_accepted limit, a subflow is opened to it from our default address, and from every
// fullmesh endpoint.
func (m *Manager) AddrAnnounced(c pmapi.Conn, id uint8, addr netip.AddrPort) {
	m.mu.Lock()
	st := m.mu.conns[c]
	if st == nil {
		m.mu.Unlock()
		return
	}
	if _, ok := st.announced[id]; ok || st.accepted >= m.mu.limits.AddAddrAccepted {
		m.mu.Unlock()
		return
	}
	if addr.Port() == 0 {
		// No port: the connection's (§3.4.1).
		addr = netip.AddrPortFrom(addr.Addr(), c.Remote().Port())
	}
	st.accepted++
	st.announced[id] = addr
	var fullmesh []pmapi.Endpoint
	for _, e := range m.mu.endpoints {
		if e.Flags&pmapi.FlagFullmesh != 0 && e.Addr.Is4() == addr.Addr().Is4() {
			fullmesh = append(fullmesh, e)
		}
	}
	m.mu.Unlock()
	if len(fullmesh) == 0 {
		// From the address routing picks: our subflows are sockets of their own, so the
		// announced address may be of the other family than the connection's first.
		if m.subflowAllowed(c) {
			if err := c.AddSubflow(netip.Addr{}, 0, addr, id, false); err != nil {
				m.log.Debug("join announced address", "token", c.Token(), "to", addr, "err", err)
			}
		}
		return
	}
	for _, e := range fullmesh {
		if !m.subflowAllowed(c) {
			return
		}
		if err := c.AddSubflow(e.Addr, e.ID, addr, id, e.Flags&pmapi.FlagBackup != 0); err != nil {
			m.log.Debug("join announced address", "token", c.Token(), "from", e.Addr, "to", addr, "err", err)
		}
	}
}

// AddrRemoved is called for a REMOVE_ADDR the peer sent: the subflows to that address close.
func (m *Manager) AddrRemoved(c pmapi.Conn, id uint8) {
	m.mu.Lock()
	if st := m.mu.conns[c]; st != nil {
		if a, ok := st.announced[id]; ok {
			st.forgetRetriesLocked(func(k retryKey) bool { return k.remote.Addr() == a.Addr() })
		}
		delete(st.announced, id)
	}
	m.mu.Unlock()
	c.CloseSubflows(-1, int(id))
}

// SubflowClosed is called when a subflow ends, or one we dialled did not come up. One we opened
// that was lost to an error (not closed on purpose by us or the peer) is opened again after a
// backoff, while its endpoint and the peer's address remain.
func (m *Manager) SubflowClosed(c pmapi.Conn, sf pmapi.Subflow, err error) {
	if err == nil || !sf.Active || errors.Is(err, pmapi.ErrRemoved) || errors.Is(err, io.EOF) {
		return
	}
	k := retryKey{localID: sf.LocalID, remote: sf.Remote, local: sf.Local.Addr().Unmap()}
	pathDown := errors.Is(err, ErrPathDown)
	if sf.LocalID == 0 && !pathDown {
		k.local = netip.Addr{} // the address routing picked: let it pick again
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.mu.conns[c]
	if st == nil {
		return
	}
	r := st.retries[k]
	if r == nil {
		r = &retry{}
		st.retries[k] = r
	}
	if pathDown {
		return // opened again when the address returns (addrBack)
	}
	if r.timer != nil {
		return // a retry is already scheduled
	}
	if !r.lastTry.IsZero() && time.Since(r.lastTry) > retryReset {
		r.fails = 0 // it worked for a while: start the backoff again
	}
	r.fails++
	if r.fails > retryLimit {
		m.log.Debug("subflow given up", "token", c.Token(), "from", sf.Local, "to", sf.Remote, "err", err)
		return
	}
	delay := min(retryMin<<(r.fails-1), retryMax)
	m.log.Debug("subflow lost, retrying", "token", c.Token(), "from", sf.Local, "to", sf.Remote, "in", delay, "err", err)
	r.timer = time.AfterFunc(delay, func() { m.retry(c, k, sf.Backup) })
}

// forgetRetriesLocked drops the retry state of the subflows that match, waiting retries included:
// their endpoint or the peer's address is gone. A subflow opened to it again later (the
// endpoint added back, the address announced again) starts its backoff afresh, rather than
// given up at its first loss for the losses of the one before. Call it with m.mu held.
func (st *connState) forgetRetriesLocked(match func(retryKey) bool) {
	for k, r := range st.retries {
		if match(k) {
			if r.timer != nil {
				r.timer.Stop()
			}
			delete(st.retries, k)
		}
	}
}

// retry opens a lost subflow again if its endpoint and the peer's address are still there.
func (m *Manager) retry(c pmapi.Conn, k retryKey, backup bool) {
	m.mu.Lock()
	st := m.mu.conns[c]
	if st == nil {
		m.mu.Unlock()
		return
	}
	r := st.retries[k]
	if r == nil {
		m.mu.Unlock()
		return
	}
	r.timer = nil
	if k.local.IsValid() && m.mu.absent[k.local] {
		m.mu.Unlock()
		return // opened again when the address returns (addrBack)
	}
	r.lastTry = time.Now()
	ok := true
	if k.localID != 0 {
		ok = false
		for _, e := range m.mu.endpoints {
			if e.ID == k.localID && e.Addr == k.local {
				ok, backup = true, e.Flags&pmapi.FlagBackup != 0
			}
		}
	}
	if k.remote != c.Remote() {
		found := false
		for _, a := range st.announced {
			if a.Addr() == k.remote.Addr() {
				found = true
			}
		}
		ok = ok && found
	}
	remoteID := uint8(0)
	for id, a := range st.announced {
		if a.Addr() == k.remote.Addr() {
			remoteID = id
		}
	}
	m.mu.Unlock()
	if !ok || !m.subflowAllowed(c) {
		return
	}
	for _, sf := range c.Subflows() {
		if sf.Remote == k.remote && (!k.local.IsValid() || sf.Local.Addr() == k.local) {
			return // back already
		}
	}
	m.retries.Add(1)
	if err := c.AddSubflow(k.local, k.localID, k.remote, remoteID, backup); err != nil {
		m.log.Debug("retry subflow", "token", c.Token(), "from", k.local, "to", k.remote, "err", err)
	}
}

// DeleteEndpoint removes an endpoint by ID (or address when id is 0). As the kernel does, every
// connection that announced it or has subflows from it sends REMOVE_ADDR with its ID, and those
// subflows close.
func (m *Manager) DeleteEndpoint(id uint8, addr netip.Addr) (pmapi.Endpoint, error) {
	m.mu.Lock()
	var e pmapi.Endpoint
	found := false
	for i, x := range m.mu.endpoints {
		if (id != 0 && x.ID == id) || (id == 0 && x.Addr == addr.Unmap()) {
			e, found = x, true
			m.mu.endpoints = append(m.mu.endpoints[:i], m.mu.endpoints[i+1:]...)
			break
		}
	}
	if found {
		m.notifyLocked(e, false)
		for _, st := range m.mu.conns {
			st.forgetRetriesLocked(func(k retryKey) bool { return k.localID == e.ID && k.localID != 0 })
		}
	}
	conns := m.connsLocked()
	m.mu.Unlock()
	if !found {
		return e, fmt.Errorf("no endpoint %d %v", id, addr)
	}
	for _, c := range conns {
		m.withdraw(c, e)
	}
	return e, nil
}

// withdraw sends one REMOVE_ADDR on a connection for the endpoints the peer knows (announced,
// or subflows from them), and closes their subflows.
func (m *Manager) withdraw(c pmapi.Conn, es ...pmapi.Endpoint) {
	ids := m.usedIDs(c, es)
	// One REMOVE_ADDR holds at most MaxRemoveAddrIDs; the kernel would truncate a longer list.
	for len(ids) > 0 {
		n := min(len(ids), wire.MaxRemoveAddrIDs)
		if err := c.Withdraw(ids[:n]...); err != nil {
			m.log.Debug("withdraw", "token", c.Token(), "ids", ids[:n], "err", err)
		}
		ids = ids[n:]
	}
}

// usedIDs returns the IDs of the endpoints among es that the peer of c knows: announced to it,
// or the source of one of its subflows.
func (m *Manager) usedIDs(c pmapi.Conn, es []pmapi.Endpoint) []uint8 {
	var ids []uint8
	subs := c.Subflows()
	for _, e := range es {
		used := e.Flags&pmapi.FlagSignal != 0 && c.Server()
		for _, sf := range subs {
			if sf.LocalID == e.ID && sf.LocalID != 0 {
				used = true
			}
		}
		if used {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// Flush removes every endpoint. Each connection gets one REMOVE_ADDR listing them all, as the
// kernel's flush sends: the kernel acts on one REMOVE_ADDR at a time and drops one that comes
// while it is busy with the previous (RmAddrDrop).
func (m *Manager) Flush() {
	m.mu.Lock()
	es := m.mu.endpoints
	m.mu.endpoints = nil
	flushed := map[uint8]bool{}
	for _, e := range es {
		m.notifyLocked(e, false)
		flushed[e.ID] = true
	}
	for _, st := range m.mu.conns {
		// As DeleteEndpoint: an endpoint added again starts its retries afresh.
		st.forgetRetriesLocked(func(k retryKey) bool { return k.localID != 0 && flushed[k.localID] })
	}
	conns := m.connsLocked()
	m.mu.Unlock()
	for _, c := range conns {
		m.withdraw(c, es...)
	}
}

// SetBackup changes an endpoint's backup flag (by ID, or address when id is 0), as
// `ip mptcp endpoint change ... backup|nobackup`: the subflows from it send MP_PRIO and are
// treated as backups (or not) from now on, on every connection.
func (m *Manager) SetBackup(id uint8, addr netip.Addr, backup bool) (pmapi.Endpoint, error) {
	m.mu.Lock()
	var e pmapi.Endpoint
	found := false
	for i := range m.mu.endpoints {
		x := &m.mu.endpoints[i]
		if (id != 0 && x.ID == id) || (id == 0 && x.Addr == addr.Unmap()) {
			if backup {
				x.Flags |= pmapi.FlagBackup
			} else {
				x.Flags &^= pmapi.FlagBackup
			}
			e, found = *x, true
			m.notifyLocked(e, true) // joins to its address from now on take its flag
			break
		}
	}
	conns := m.connsLocked()
	m.mu.Unlock()
	if !found {
		return e, fmt.Errorf("no endpoint %d %v", id, addr)
	}
	for _, c := range conns {
		for _, sf := range c.Subflows() {
			if sf.LocalID == e.ID {
				if err := c.SetBackup(int(e.ID), backup); err != nil {
					m.log.Debug("set backup", "token", c.Token(), "endpoint", e.String(), "err", err)
				}
				break
			}
		}
	}
	return e, nil
}
