package control

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Event kinds, as `ip mptcp monitor` names them (the kernel's MPTCP_EVENT_*).
const (
	EventCreated        = "created"         // MP_CAPABLE handshake done
	EventEstablished    = "established"     // fully established (RFC 8684 §3.1)
	EventClosed         = "closed"          // the connection ended
	EventAnnounced      = "announced"       // the peer announced an address (ADD_ADDR)
	EventRemoved        = "removed"         // the peer removed an address (REMOVE_ADDR)
	EventSubEstablished = "sub_established" // an MP_JOIN subflow was attached
	EventSubClosed      = "sub_closed"      // a subflow was detached
	EventSubPriority    = "sub_priority"    // the peer changed a subflow's priority (MP_PRIO)
)

// Event is what happened to a connection, for monitors.
type Event struct {
	Kind   string
	Time   time.Time
	Token  uint32
	Server bool // we accepted the connection
	// Local and Remote are the connection's initial subflow's addresses, or the subflow's for
	// sub_* events.
	Local, Remote     netip.AddrPort
	LocalID, RemoteID uint8          // sub_*: the subflow's address IDs
	Backup            bool           // sub_*: the subflow is a backup (sub_priority: the peer's flag)
	AddrID            uint8          // announced, removed: the peer's address ID
	Addr              netip.AddrPort // announced: the address (port 0: the connection's)
	Err               string         // sub_closed, closed: why, if not a plain close
}

// monitor is a stack's event subscribers and the connections between their created and closed
// events. Emitting never blocks: a subscriber that does not keep up loses events, counted.
//
// Locking: the fields under mu are guarded by it.
type monitor struct {
	mu struct {
		sync.Mutex
		subs  map[*Subscription]struct{}
		conns map[*Conn]struct{}
	}
}

// Subscription receives a stack's events until it is cancelled.
type Subscription struct {
	C       <-chan Event
	c       chan Event
	dropped atomic.Uint64
	m       *monitor
}

// Dropped returns how many events this subscription lost because its channel was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Cancel ends the subscription; C is not closed.
func (s *Subscription) Cancel() {
	s.m.mu.Lock()
	delete(s.m.mu.subs, s)
	s.m.mu.Unlock()
}

// Subscribe returns a subscription to the stack's events with a channel of buf events.
func (s *Stack) Subscribe(buf int) *Subscription {
	ch := make(chan Event, max(buf, 1))
	sub := &Subscription{C: ch, c: ch, m: &s.mon}
	s.mon.mu.Lock()
	if s.mon.mu.subs == nil {
		s.mon.mu.subs = map[*Subscription]struct{}{}
	}
	s.mon.mu.subs[sub] = struct{}{}
	s.mon.mu.Unlock()
	return sub
}

// Conns returns the stack's MPTCP connections, from their created event to their closed one.
func (s *Stack) Conns() []*Conn {
	s.mon.mu.Lock()
	defer s.mon.mu.Unlock()
	out := make([]*Conn, 0, len(s.mon.mu.conns))
	for c := range s.mon.mu.conns {
		out = append(out, c)
	}
	return out
}

func (m *monitor) emit(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sub := range m.mu.subs {
		select {
		case sub.c <- ev:
		default:
			sub.dropped.Add(1)
		}
	}
}

// connEvent is the event for a connection as a whole.
func (c *Conn) connEvent(kind string) Event {
	return Event{Kind: kind, Time: time.Now(), Token: c.token, Server: c.server, Local: c.Local(), Remote: c.Remote()}
}

// emitCreated, emitEstablished, emitClosed, emitAddr, emitSub and emitPrio are the event hooks
// the connection's goroutine calls.
func (c *Conn) emitCreated() {
	m := &c.stack.mon
	m.mu.Lock()
	if m.mu.conns == nil {
		m.mu.conns = map[*Conn]struct{}{}
	}
	m.mu.conns[c] = struct{}{}
	m.mu.Unlock()
	m.emit(c.connEvent(EventCreated))
}

func (c *Conn) emitEstablished() { c.stack.mon.emit(c.connEvent(EventEstablished)) }

func (c *Conn) emitClosed(err error) {
	m := &c.stack.mon
	m.mu.Lock()
	_, ok := m.mu.conns[c]
	delete(m.mu.conns, c)
	m.mu.Unlock()
	if !ok {
		return
	}
	ev := c.connEvent(EventClosed)
	if err != nil && err != errConnClosed {
		ev.Err = err.Error()
	}
	m.emit(ev)
}

func (c *Conn) emitAddr(kind string, id uint8, addr netip.AddrPort) {
	ev := c.connEvent(kind)
	ev.AddrID, ev.Addr = id, addr
	c.stack.mon.emit(ev)
}

func (c *Conn) emitSub(kind string, sf *subflow, err error) {
	ev := c.connEvent(kind)
	ev.Local, ev.Remote = sf.local, sf.remote
	ev.LocalID, ev.RemoteID = sf.localID, sf.remoteID
	ev.Backup = sf.backup || sf.peerBackup
	if kind == EventSubPriority {
		ev.Backup = sf.peerBackup
	}
	if err != nil {
		ev.Err = err.Error()
	}
	c.stack.mon.emit(ev)
}
