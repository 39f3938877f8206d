package control

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// initialWindow is the data-level send window before the peer advertised one.
const initialWindow = 64 << 10

// Slot reuse waits this long after a connection ended, so that events still queued for the
// old connection are not delivered to the new one.
const slotCooldown = 2 * time.Second

// Passive-open tickets: a connection and a subflow slot that the datapath gives an MP_CAPABLE
// handshake our listener completed. SYN/ACKs take none: their key is derived from the SYN and
// checked at the third ACK (bpf/synkey.h), so a SYN flood costs no ticket and the queue drains
// only as fast as handshakes complete. It is topped up on every accept, and by maintain: every
// maintainEvery, or every maintainFast while tickets are being taken. A ticket taken and never
// accepted (a listener closed with connections in its backlog) is reclaimed after ticketTimeout.
//
// The queue holds min(ticketQueueMax, MaxConns/4) tickets: with maintainEvery alone that
// refills more than 10,000 connections per second (1024 per 100 ms with the default 4096
// slots), and each ticket reserves slots that live connections cannot use.
const (
	ticketQueueMax = 4096 // the datapath's queue (bpf/datapath_maps.h)
	joinTarget     = 64   // subflow slots and nonces queued for passive joins
	ticketTimeout  = 2 * time.Minute
	maintainEvery  = 100 * time.Millisecond
	maintainFast   = 10 * time.Millisecond
)

// StackConfig configures a Stack.
type StackConfig struct {
	Datapath    datapath.Config
	Logger      *slog.Logger
	Rand        io.Reader   // key source; crypto/rand when nil
	Scheduler   string      // default scheduler of new connections ("" = default)
	PathManager PathManager // nil: no extra subflows, no announcements
	// MemoryLimit, in bytes, makes the stack refuse new connections while the Go heap in use
	// is above 90% of it (mempressure.go); 0 is no limit. The process's soft memory limit
	// (runtime/debug.SetMemoryLimit) is the caller's to set: mptcpd --memory-limit sets both.
	MemoryLimit int64
}

// Stack is a process's MPTCP stack: the datapath and the connections that use it. Its
// dispatcher goroutine reads datapath events and hands them to the connection they belong to.
//
// Locking: the fields under mu are guarded by it; methods that need it held end in Locked.
type Stack struct {
	dp        *datapath.Datapath
	log       *slog.Logger
	rand      io.Reader
	tokens    mpcrypto.TokenSet
	stats     Stats
	scheduler string
	pm        PathManager
	rxWindow  int        // the largest receive window a subflow advertises: data beyond it is dropped
	mon       monitor    // event subscribers and live connections (monitor.go)
	nsRefs    nsRefs     // shared network-namespace handles (netns.go)
	joinLn    joinListen // listeners, signal endpoints, sockets for joins to announced addresses (joinlisten.go)
	mem       memGuard   // refuses new connections near the memory limit (mempressure.go)
	done      chan struct{}
	rt        routines // every goroutine of the stack, its listeners and connections (routines.go)

	ticketTarget int // how many passive-open tickets the datapath's queue is kept at

	lostSeen uint64        // the datapath's EventLost counter at maintain's last look
	lostGen  atomic.Uint64 // moves when EventLost moved: connections then look at their flag

	mu struct {
		sync.Mutex
		freeConns []freeSlot
		freeSubs  []freeSlot
		nextConn  uint32
		nextSub   uint32
		conns     map[uint32]*Conn            // by conn slot
		pending   map[uint32][]datapath.Event // events for slots not claimed yet (passive opens)
		claimed   map[uint32]bool             // conn slots accepted, their Conn not registered yet
		listeners int
		queued    []ticketRec          // pushed, not taken yet (FIFO, as the BPF queue)
		taken     map[uint32]ticketRec // by conn slot: taken by a third ACK, not yet accepted
		takenFIFO []uint32             // conn slots in the order taken, for reclaiming (may hold claimed ones)
		inTicket  map[uint32]bool      // conn slots of queued and taken tickets
		usedSeen  uint64               // the datapath's PassiveTicketUsed when last read
		subQueued []ticketRec          // subflow slots queued for passive joins (Ticket.Sub)
		subTaken  []ticketRec          // taken by a join SYN/ACK, not yet accepted
		subSeen   uint64               // the datapath's JoinSlotUsed when last read
		nonces    int                  // nonces pushed
		netnsScan map[uint64]time.Time // namespaces whose interfaces were scanned, and when
		closed    bool
	}
}

type freeSlot struct {
	slot uint32
	at   time.Time
}

type ticketRec struct {
	datapath.Ticket
	takenAt time.Time
}

// Stats are the connection layer's own counters. Counters reports each under its field's name
// (`mptcpctl stats` prints them with the MPTcpExt prefix, mptcpd exports them as metrics): the
// field names are the contract and follow the kernel's MPTcpExt MIB where it has the counter.
// Every field is an atomic.Uint64 (checked when the package loads).
type Stats struct {
	ActiveOpens        atomic.Uint64
	PassiveOpens       atomic.Uint64
	FallbackActive     atomic.Uint64 // our connects that continued as plain TCP
	FallbackPassive    atomic.Uint64 // accepted connections that are plain TCP
	Fastclose          atomic.Uint64 // connections aborted with MP_FASTCLOSE (either side)
	MPFailFallback     atomic.Uint64 // fallbacks we started with MP_FAIL (options vanished)
	EventsOrphaned     atomic.Uint64 // events for no known connection
	TicketsReclaimed   atomic.Uint64 // tickets taken by a completed handshake and never accepted
	TokenCollision     atomic.Uint64 // passive opens reset at accept: their token was taken meanwhile
	Joins              atomic.Uint64 // MP_JOIN subflows attached (both roles)
	JoinRefused        atomic.Uint64 // MP_JOIN subflows reset: failed HMAC, unknown connection
	ReinjectedBytes    atomic.Uint64 // bytes sent again on another subflow
	SubflowStale       atomic.Uint64 // subflows found stale
	SubflowLossy       atomic.Uint64 // subflows in loss recovery whose data was re-sent elsewhere
	DataRetransmit     atomic.Uint64 // connection-level retransmissions: delivered data never DATA_ACKed
	AddAddrAccepted    atomic.Uint64 // ADD_ADDRs with a valid HMAC
	AddAddrHMacFailure atomic.Uint64 // ADD_ADDRs ignored for a wrong HMAC
	RmAddrAccepted     atomic.Uint64 // REMOVE_ADDRs received (each may remove several addresses)
	MPPrioAccepted     atomic.Uint64 // MP_PRIOs received: the subflow takes the peer's backup flag
	EchoAdd            atomic.Uint64 // echoes of our ADD_ADDRs
	AddAddrTx          atomic.Uint64 // ADD_ADDRs sent, retransmissions included
	EchoAddTx          atomic.Uint64
	RmAddrTx           atomic.Uint64
	MPPrioTx           atomic.Uint64
	RmSubflow          atomic.Uint64 // subflows closed for a REMOVE_ADDR or a withdrawn endpoint

	EventsRefused      atomic.Uint64 // events refused: their connection's queue was full
	EventOverflowReset atomic.Uint64 // connections reset for falling behind their events
	EventLostReset     atomic.Uint64 // connections reset because the datapath lost an event of theirs
	NoDSSInWindow      atomic.Uint64 // mappings beyond the receive window, dropped (the kernel's name)
	DSSNoMatchTCP      atomic.Uint64 // mappings for subflow bytes far outside the receive window, dropped; added to the datapath's counter of the name
	RxMapOverflow      atomic.Uint64 // subflows reset for holding too many of the peer's mappings
	InfiniteMapRx      atomic.Uint64 // infinite mappings received: the peer fell back (the kernel's name)

	MPCapableEndpAttempt  atomic.Uint64 // MP_CAPABLE or plain TCP connections to a join socket, reset (the kernel's name)
	MemoryPressureRefused atomic.Uint64 // new connections refused near the memory limit (accepts reset, dials failed)
}

// statNames are the names of Stats's fields, in order: the one list of the counters' names.
var statNames = func() []string {
	t := reflect.TypeFor[Stats]()
	names := make([]string, t.NumField())
	for i := range names {
		f := t.Field(i)
		if f.Type != reflect.TypeFor[atomic.Uint64]() {
			panic(fmt.Sprintf("control.Stats.%s is a %v, not a counter", f.Name, f.Type))
		}
		names[i] = f.Name
	}
	return names
}()

// all yields every counter by name.
func (st *Stats) all() iter.Seq2[string, uint64] {
	return func(yield func(string, uint64) bool) {
		v := reflect.ValueOf(st).Elem()
		for i, name := range statNames {
			if !yield(name, v.Field(i).Addr().Interface().(*atomic.Uint64).Load()) {
				return
			}
		}
	}
}

// stackOpen is set while a stack exists: a process belongs to one cgroup, so it can have only
// one stack at a time.
var stackOpen atomic.Bool

// ErrStackExists is returned by NewStack when the process already has a stack.
var ErrStackExists = errors.New("mptcp: this process already has a stack (one per process: it owns the process's cgroup)")

// NewStack opens the datapath and starts the dispatcher. A process can have one stack at a
// time; Dial and Listen use DefaultStack.
func NewStack(cfg StackConfig) (*Stack, error) {
	if !stackOpen.CompareAndSwap(false, true) {
		return nil, ErrStackExists
	}
	dp, err := datapath.Open(cfg.Datapath)
	if err != nil {
		stackOpen.Store(false)
		return nil, err
	}
	if _, err := NewScheduler(cfg.Scheduler); err != nil {
		dp.Close()
		stackOpen.Store(false)
		return nil, err
	}
	s := &Stack{dp: dp, log: cfg.Logger, rand: cfg.Rand, scheduler: cfg.Scheduler, pm: cfg.PathManager, done: make(chan struct{}), rxWindow: receiveWindow()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	s.mu.conns = map[uint32]*Conn{}
	s.mu.pending = map[uint32][]datapath.Event{}
	s.mu.claimed = map[uint32]bool{}
	s.mu.taken = map[uint32]ticketRec{}
	s.mu.inTicket = map[uint32]bool{}
	s.ticketTarget = min(ticketQueueMax, dp.TicketQueue(), dp.MaxConns()/4)
	s.joinLn.init()
	s.rt.init()
	s.mem.init(cfg.MemoryLimit, s.log)
	s.mem.goroutine = func(f func()) { s.goroutine(f) }
	if w, ok := cfg.PathManager.(pmapi.EndpointWatcher); ok {
		w.OnEndpoint(func(e pmapi.Endpoint, present bool) {
			// MP_JOIN SYN/ACKs carry the ID of the endpoint the join came to.
			id := e.ID
			if !present {
				id = 0
			}
			if err := dp.SetLocalID(e.Addr, id); err != nil {
				s.log.Warn("address ID to datapath", "endpoint", e.String(), "err", err)
			}
			// Peers join the addresses we announce: listen there before any announcement.
			s.endpointChanged(e, present)
		})
	}
	s.goroutine(s.dispatch, s.maintain)
	return s, nil
}

// receiveWindow is the largest window our subflows can advertise, relative to the DATA_ACK we
// send: the socket's receive buffer grows to tcp_rmem's maximum (we do not set SO_RCVBUF), and
// the window is smaller than the buffer. A peer may send nothing beyond it (§3.3.4).
func receiveWindow() int {
	const fallback, floor, ceil = 32 << 20, 1 << 20, 1 << 30
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_rmem")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return fallback
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return fallback
	}
	return min(max(n, floor), ceil)
}

var defaultStack struct {
	once  sync.Once
	log   *slog.Logger
	pm    PathManager
	stack *Stack
	err   error
}

// SetDefaultLogger sets the logger of the default stack; it has effect before its first use.
func SetDefaultLogger(l *slog.Logger) { defaultStack.log = l }

// SetDefaultPathManager sets the path manager of the default stack; it has effect before its
// first use.
func SetDefaultPathManager(p PathManager) { defaultStack.pm = p }

// DefaultStack returns the process-wide stack that Dial and Listen use, opening it on first use.
func DefaultStack() (*Stack, error) {
	defaultStack.once.Do(func() {
		defaultStack.stack, defaultStack.err = NewStack(StackConfig{Logger: defaultStack.log, PathManager: defaultStack.pm})
	})
	return defaultStack.stack, defaultStack.err
}

// Datapath returns the stack's datapath.
func (s *Stack) Datapath() *datapath.Datapath { return s.dp }

// Stats returns the connection layer's counters.
func (s *Stack) Stats() *Stats { return &s.stats }

// Counters returns the datapath's counters and the connection layer's, by name.
func (s *Stack) Counters() (map[string]uint64, error) {
	c, err := s.dp.Counters()
	if err != nil {
		return nil, err
	}
	// A name both count (DSSNoMatchTCP: mappings outside the subflow's window, which the
	// datapath drops mostly and Go the rest) is their sum.
	for name, v := range s.stats.all() {
		c[name] += v
	}
	if r, ok := s.pm.(interface{ Retries() uint64 }); ok {
		c["JoinRetries"] = r.Retries() // lost subflows opened again
	}
	return c, nil
}

// Close stops the stack and unloads the datapath. Connections still open stop working, and
// listeners are closed.
//
// The order (routines.go): nothing new starts; listeners, join sockets and connections are
// closed and the event reader stopped, which ends every goroutine of the stack; Close waits for
// them (closeWait at most), and only then unmaps the datapath's shared memory. If some did not
// end in time, the error says how many, and the memory stays mapped: leaked, not unmapped under
// a goroutine that may still touch it.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true // from now on nothing under mu touches the shared memory
	conns := make([]*Conn, 0, len(s.mu.conns))
	for _, c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, l := range s.stopRoutines() {
		l.Close()
	}
	s.closeJoinSockets()
	for _, c := range conns {
		c.abort(errStackClosed, false)
	}
	close(s.done)
	s.dp.StopEvents() // ends the dispatcher's blocking read
	defer stackOpen.Store(false)
	if err := s.waitRoutines(closeWait); err != nil {
		s.log.Error("stack close: goroutines did not end; the datapath's shared memory is left mapped", "running", s.goroutines(), "waited", closeWait)
		return errors.Join(err, s.dp.CloseLeavingMemory())
	}
	return s.dp.Close()
}

var errStackClosed = errors.New("mptcp stack closed")

func (s *Stack) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// dispatch routes datapath events to their connections.
func (s *Stack) dispatch() {
	var ev datapath.Event
	for {
		if err := s.dp.ReadEvent(&ev); err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			s.log.Error("read datapath event", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		c := s.mu.conns[ev.Conn]
		if c == nil {
			if len(s.mu.pending[ev.Conn]) < 4096 && s.ticketSlotLocked(ev.Conn) {
				s.mu.pending[ev.Conn] = append(s.mu.pending[ev.Conn], ev)
			} else {
				s.stats.EventsOrphaned.Add(1)
			}
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if !c.deliver(ev) {
			s.stats.EventsRefused.Add(1)
		}
	}
}

// ticketSlotLocked reports whether a conn slot belongs to a ticket not yet accepted.
func (s *Stack) ticketSlotLocked(slot uint32) bool {
	return s.mu.claimed[slot] || s.mu.inTicket[slot]
}

// maintain keeps the ticket queue filled while listeners exist and reclaims stale tickets: every
// maintainEvery, and every maintainFast while handshakes are taking tickets (accept refills too).
func (s *Stack) maintain() {
	t := time.NewTimer(maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		next := maintainEvery
		s.checkLostEvents()
		if s.refillTickets() > 0 {
			next = maintainFast
		}
		s.mu.Lock()
		if s.mu.listeners > 0 || len(s.mu.subTaken) > 0 {
			if err := s.refillJoinsLocked(time.Now()); err != nil {
				s.log.Warn("refill passive-join slots", "err", err)
			}
		}
		s.mu.Unlock()
		t.Reset(next)
	}
}

// checkLostEvents wakes every connection when the datapath lost events since the last look (its
// ring buffer was full): each looks at its own flag and resets itself if its events were lost.
// Run by maintain.
func (s *Stack) checkLostEvents() {
	n, err := s.dp.Counter(datapath.CounterEventLost)
	if err != nil || n == s.lostSeen {
		return
	}
	s.lostSeen = n
	s.lostGen.Add(1)
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.mu.conns))
	for _, c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.poke()
	}
}

// allocLocked takes a slot from a free list (past its cooldown) or a fresh one.
func allocLocked(free *[]freeSlot, next *uint32, max int) (uint32, error) {
	now := time.Now()
	if len(*free) > 0 && now.Sub((*free)[0].at) >= slotCooldown {
		slot := (*free)[0].slot
		*free = (*free)[1:]
		return slot, nil
	}
	if int(*next) < max {
		*next++
		return *next - 1, nil
	}
	return 0, errors.New("no free connection slots")
}

// newSlotsLocked allocates a connection and a subflow slot and initialises their shared state
// for our key: the data-level send side starts at our IDSN+1.
func (s *Stack) newSlotsLocked() (conn, sub uint32, key uint64, token uint32, err error) {
	if s.mu.closed {
		return 0, 0, 0, 0, errStackClosed
	}
	if conn, err = allocLocked(&s.mu.freeConns, &s.mu.nextConn, s.dp.MaxConns()); err != nil {
		return 0, 0, 0, 0, err
	}
	if sub, err = allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs()); err != nil {
		s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Time{}})
		return 0, 0, 0, 0, err
	}
	if key, token, err = s.tokens.NewKey(s.rand); err != nil {
		s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Time{}})
		s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{sub, time.Time{}})
		return 0, 0, 0, 0, fmt.Errorf("new key: %w", err)
	}
	idsn := mpcrypto.IDSN(key)
	c := s.dp.Conn(conn)
	*c = datapath.Conn{}
	c.Ctl.LocalKey = key
	c.Ctl.SndNxt = idsn + 1
	c.St.PeerDataAck = idsn + 1
	// Until the peer's first DATA_ACK tells its window, send at most one initial window.
	c.St.PeerWndEnd = idsn + 1 + initialWindow
	*s.dp.Sub(sub) = datapath.Sub{}
	return conn, sub, key, token, nil
}

// newTicketSlotsLocked allocates a connection and a subflow slot for a passive-open ticket and
// clears them; the datapath fills the connection in for the key it derived (bpf/handshake.h
// passive_conn_init) when a third ACK takes the ticket.
func (s *Stack) newTicketSlotsLocked() (conn, sub uint32, err error) {
	if s.mu.closed {
		return 0, 0, errStackClosed
	}
	if conn, err = allocLocked(&s.mu.freeConns, &s.mu.nextConn, s.dp.MaxConns()); err != nil {
		return 0, 0, err
	}
	if sub, err = allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs()); err != nil {
		s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Time{}})
		return 0, 0, err
	}
	*s.dp.Conn(conn) = datapath.Conn{}
	*s.dp.Sub(sub) = datapath.Sub{}
	return conn, sub, nil
}

// releaseSlots returns a connection's slots and token after a cooldown.
func (s *Stack) releaseSlots(conn, sub uint32, token uint32) {
	s.releaseConn(conn, token)
	s.releaseSub(sub)
}

// releaseConn returns a connection slot and its token after a cooldown.
func (s *Stack) releaseConn(conn uint32, token uint32) {
	s.tokens.Release(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.conns, conn)
	delete(s.mu.pending, conn)
	delete(s.mu.claimed, conn)
	if s.mu.closed {
		return // the shared memory is being unmapped
	}
	s.dp.Conn(conn).Ctl.LocalKey = 0
	s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Now()})
}

// releaseSub returns a subflow slot after a cooldown.
func (s *Stack) releaseSub(sub uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{sub, time.Now()})
}

// allocSub takes a subflow slot for a join and clears it.
func (s *Stack) allocSub() (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allocSubLocked()
}

func (s *Stack) allocSubLocked() (uint32, error) {
	if s.mu.closed {
		return 0, errStackClosed
	}
	sub, err := allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs())
	if err != nil {
		return 0, errors.New("no free subflow slots")
	}
	*s.dp.Sub(sub) = datapath.Sub{}
	return sub, nil
}

// addToken makes a connection joinable by its token; removeToken ends that.
func (s *Stack) addToken(c *Conn) {
	if err := s.dp.AddToken(c.token, datapath.TokenVal{Conn: c.slot, LocalKey: c.localKey, RemoteKey: c.remoteKey}); err != nil {
		s.log.Warn("connection not joinable", "token", c.token, "err", err)
	}
}

func (s *Stack) removeToken(token uint32) {
	if err := s.dp.DeleteToken(token); err != nil {
		s.log.Warn("remove token", "token", token, "err", err)
	}
}

// conn returns the connection of a slot, nil if none.
func (s *Stack) conn(slot uint32) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.conns[slot]
}

// register makes a connection receive the events of its slot. Those that arrived before it
// existed are handed over in the same step, so that its goroutine handles them first and in
// order: the dispatcher delivers newer ones only after the lock is released.
func (s *Stack) register(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.conns[c.slot] = c
	delete(s.mu.claimed, c.slot)
	c.early = append(c.early, s.mu.pending[c.slot]...)
	delete(s.mu.pending, c.slot)
}

// refillTickets tops the ticket queue up to ticketTarget, ticketChunk tickets per hold of the
// lock (a chunk takes about a millisecond: the dispatcher waits no longer). It returns how many
// tickets the datapath took since the last look.
func (s *Stack) refillTickets() int {
	used := 0
	for {
		s.mu.Lock()
		if s.mu.listeners == 0 && len(s.mu.taken) == 0 {
			s.mu.Unlock()
			return used
		}
		n, err := s.refillTicketsLocked()
		full := len(s.mu.queued) >= s.ticketTarget || s.mu.listeners == 0 || s.mu.closed
		s.mu.Unlock()
		used += n
		if err != nil {
			s.log.Warn("refill passive-open tickets", "err", err)
			return used
		}
		if full {
			return used
		}
	}
}

// ticketChunk bounds how many tickets refillTicketsLocked queues at a time.
const ticketChunk = 128

// refillTicketsLocked accounts for tickets the datapath took (it takes them in the order they
// were queued, and counts them), reclaims stale ones and queues up to ticketChunk more towards
// ticketTarget. It returns how many tickets were taken since the last call.
func (s *Stack) refillTicketsLocked() (int, error) {
	if s.mu.closed {
		return 0, nil
	}
	used, err := s.dp.Counter(datapath.CounterTicketUsed)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	n := 0
	for ; s.mu.usedSeen < used && len(s.mu.queued) > 0; s.mu.usedSeen++ {
		t := s.mu.queued[0]
		s.mu.queued = s.mu.queued[1:]
		t.takenAt = now
		s.mu.taken[t.Conn] = t
		s.mu.takenFIFO = append(s.mu.takenFIFO, t.Conn)
		n++
	}
	for len(s.mu.takenFIFO) > 0 {
		conn := s.mu.takenFIFO[0]
		t, ok := s.mu.taken[conn]
		if ok && now.Sub(t.takenAt) <= ticketTimeout {
			break
		}
		s.mu.takenFIFO = s.mu.takenFIFO[1:]
		if !ok {
			continue // accepted
		}
		delete(s.mu.taken, conn)
		delete(s.mu.inTicket, conn)
		s.stats.TicketsReclaimed.Add(1)
		s.dp.Conn(conn).Ctl.LocalKey = 0 // a late accept resets the connection (claimTicket)
		s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, now})
		s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{t.Sub, now})
	}
	if s.mu.listeners == 0 {
		return n, nil
	}
	for k := 0; k < ticketChunk && len(s.mu.queued) < s.ticketTarget; k++ {
		conn, sub, err := s.newTicketSlotsLocked()
		if err != nil {
			return n, err
		}
		t := ticketRec{Ticket: datapath.Ticket{Conn: conn, Sub: sub}}
		if err := s.dp.PushTicket(t.Ticket); err != nil {
			s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Time{}})
			s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{sub, time.Time{}})
			return n, err
		}
		s.mu.queued = append(s.mu.queued, t)
		s.mu.inTicket[conn] = true
	}
	return n, nil
}

// refillJoinsLocked keeps subflow slots and nonces queued for passive joins, and reclaims
// slots taken by join SYN/ACKs never accepted.
func (s *Stack) refillJoinsLocked(now time.Time) error {
	if s.mu.closed {
		return nil
	}
	used, err := s.dp.Counter(datapath.CounterSubslotUsed)
	if err != nil {
		return err
	}
	for ; s.mu.subSeen < used && len(s.mu.subQueued) > 0; s.mu.subSeen++ {
		t := s.mu.subQueued[0]
		s.mu.subQueued = s.mu.subQueued[1:]
		t.takenAt = now
		s.mu.subTaken = append(s.mu.subTaken, t)
	}
	for len(s.mu.subTaken) > 0 && now.Sub(s.mu.subTaken[0].takenAt) > ticketTimeout {
		s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{s.mu.subTaken[0].Sub, now})
		s.mu.subTaken = s.mu.subTaken[1:]
	}
	if s.mu.listeners == 0 {
		return nil
	}
	for len(s.mu.subQueued) < joinTarget {
		sub, err := s.allocSubLocked()
		if err != nil {
			return err
		}
		if err := s.dp.PushSubSlot(sub); err != nil {
			s.mu.freeSubs = append(s.mu.freeSubs, freeSlot{sub, time.Time{}})
			return err
		}
		s.mu.subQueued = append(s.mu.subQueued, ticketRec{Ticket: datapath.Ticket{Sub: sub}})
	}
	// Nonces: keep the queue topped up; each join SYN takes one.
	nonceUsed, err := s.dp.Counter(datapath.CounterMPJoinSynRx)
	if err != nil {
		return err
	}
	for int(uint64(s.mu.nonces)-nonceUsed) < joinTarget {
		var b [4]byte
		if _, err := io.ReadFull(s.rand, b[:]); err != nil {
			return err
		}
		if err := s.dp.PushNonce(binary.BigEndian.Uint32(b[:])); err != nil {
			return err
		}
		s.mu.nonces++
	}
	return nil
}

// claimSub takes a passive join's subflow slot out of the reclaim list.
func (s *Stack) claimSub(sub uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refillJoinsLocked(time.Now()); err != nil {
		s.log.Warn("refill join slots", "err", err)
	}
	for i, t := range s.mu.subTaken {
		if t.Sub == sub {
			s.mu.subTaken = append(s.mu.subTaken[:i], s.mu.subTaken[i+1:]...)
			return true
		}
	}
	return false
}

// claimTicket takes the ticket of an accepted MPTCP connection; false if the slots are not (or no
// longer) reserved for it. The queue is topped up at the same time: accepting keeps pace with
// the handshakes that take tickets.
func (s *Stack) claimTicket(conn, sub uint32, key uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.refillTicketsLocked(); err != nil {
		s.log.Warn("refill passive-open tickets", "err", err)
	}
	t, ok := s.mu.taken[conn]
	if !ok || t.Sub != sub || s.mu.closed || s.dp.Conn(conn).Ctl.LocalKey != key {
		return false
	}
	delete(s.mu.taken, conn)
	delete(s.mu.inTicket, conn)
	// Events keep being queued for the slot until its Conn is registered.
	s.mu.claimed[conn] = true
	return true
}

func (s *Stack) addListener(d int) {
	s.mu.Lock()
	s.mu.listeners += d
	if d > 0 {
		if err := s.refillJoinsLocked(time.Now()); err != nil {
			s.log.Warn("fill passive-join slots", "err", err)
		}
	}
	s.mu.Unlock()
	if d > 0 {
		s.refillTickets()
	}
}
