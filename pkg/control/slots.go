package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
)

// Connection and subflow slots in the datapath's shared arrays, tokens, and the queues the
// datapath takes slots from for passive opens (tickets) and passive joins. Guarded by Stack.mu.

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
// The queue holds min(ticketTargetMax, MaxConns/4) tickets: with maintainEvery alone that
// refills more than 10,000 connections per second (1024 per 100 ms), and each ticket reserves
// slots that live connections cannot use, and their memory (a subflow slot is 6.4 KB: 1024
// tickets hold one chunk of each array).
const (
	ticketQueueMax  = 4096 // the datapath's queue (bpf/datapath_maps.h)
	ticketTargetMax = 1024 // the most tickets kept queued
	joinTarget      = 64   // subflow slots and nonces queued for passive joins
	ticketTimeout   = 2 * time.Minute
	maintainEvery   = 100 * time.Millisecond
	maintainFast    = 10 * time.Millisecond
)

type freeSlot struct {
	slot uint32
	at   time.Time
}

type ticketRec struct {
	datapath.Ticket
	takenAt time.Time
}

// ticketSlotLocked reports whether a conn slot belongs to a ticket not yet accepted.
func (s *Stack) ticketSlotLocked(slot uint32) bool {
	return s.mu.claimed[slot] || s.mu.inTicket[slot]
}

// growAhead is how many fresh slots before a chunk's first one its creation starts, in the
// background (datapath.GrowConnAhead), so that the stack's lock is seldom held over it.
const growAhead = 256

// allocLocked takes a slot from a free list (past its cooldown) or a fresh one, for which grow
// makes room in the datapath's arrays first (they grow by a chunk of slots at a time; ahead
// starts the next chunk in the background).
func allocLocked(free *[]freeSlot, next *uint32, max int, grow func(uint32) error, ahead func(uint32)) (uint32, error) {
	now := time.Now()
	if len(*free) > 0 && now.Sub((*free)[0].at) >= slotCooldown {
		slot := (*free)[0].slot
		*free = (*free)[1:]
		return slot, nil
	}
	if int(*next) < max {
		if err := grow(*next); err != nil {
			return 0, err
		}
		*next++
		if int(*next)+growAhead < max {
			ahead(*next + growAhead)
		}
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
	if conn, err = allocLocked(&s.mu.freeConns, &s.mu.nextConn, s.dp.MaxConns(), s.dp.GrowConn, s.dp.GrowConnAhead); err != nil {
		return 0, 0, 0, 0, err
	}
	if sub, err = allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs(), s.dp.GrowSub, s.dp.GrowSubAhead); err != nil {
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
	clearSub(s.dp.Sub(sub))
	return conn, sub, key, token, nil
}

// newTicketSlotsLocked allocates a connection and a subflow slot for a passive-open ticket and
// clears them; the datapath fills the connection in for the key it derived (bpf/handshake.h
// passive_conn_init) when a third ACK takes the ticket.
func (s *Stack) newTicketSlotsLocked() (conn, sub uint32, err error) {
	if s.mu.closed {
		return 0, 0, errStackClosed
	}
	if conn, err = allocLocked(&s.mu.freeConns, &s.mu.nextConn, s.dp.MaxConns(), s.dp.GrowConn, s.dp.GrowConnAhead); err != nil {
		return 0, 0, err
	}
	if sub, err = allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs(), s.dp.GrowSub, s.dp.GrowSubAhead); err != nil {
		s.mu.freeConns = append(s.mu.freeConns, freeSlot{conn, time.Time{}})
		return 0, 0, err
	}
	*s.dp.Conn(conn) = datapath.Conn{}
	// The connection's congestion control is the stack's: it starts with the subflow, before
	// Go takes the connection over.
	s.dp.Conn(conn).Ctl.Cc = uint32(s.cc)
	clearSub(s.dp.Sub(sub))
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
	sub, err := allocLocked(&s.mu.freeSubs, &s.mu.nextSub, s.dp.MaxSubs(), s.dp.GrowSub, s.dp.GrowSubAhead)
	if err != nil {
		return 0, fmt.Errorf("no free subflow slots: %w", err)
	}
	clearSub(s.dp.Sub(sub))
	return sub, nil
}

// addToken makes a connection joinable by its token; removeToken ends that.
func (s *Stack) addToken(c *Conn) {
	if err := s.dp.AddToken(c.token, datapath.TokenVal{Conn: c.slot, LocalKey: c.localKey, RemoteKey: c.remoteKey}); err != nil {
		s.log.Warn("connection not joinable", "token", c.token, "err", err)
	}
}

// dropPassiveToken removes the token the datapath registered for a passive open in slot conn
// (with our key localKey) that the stack does not accept.
func (s *Stack) dropPassiveToken(conn uint32, localKey uint64) {
	if localKey == 0 {
		return
	}
	if err := s.dp.DeleteTokenOf(mpcrypto.Token(localKey), conn); err != nil {
		s.log.Warn("remove token", "token", mpcrypto.Token(localKey), "err", err)
	}
}

func (s *Stack) removeToken(token uint32) {
	if err := s.dp.DeleteToken(token); err != nil {
		s.log.Warn("remove token", "token", token, "err", err)
	}
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
		s.dropPassiveToken(conn, s.dp.Conn(conn).Ctl.LocalKey)
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

// clearSub resets a subflow slot for a new subflow, all but its mapping table: the datapath
// reads only the entries written since (txmap_head starts at 0 again, and Go writes an entry
// whole before publishing it). The table is 6 KB of the slot's 6.5: on a fresh chunk, whose
// pages the kernel maps on first touch, a subflow that carries little never makes most of it
// resident.
func clearSub(sb *datapath.Sub) {
	b := unsafe.Slice((*byte)(unsafe.Pointer(sb)), unsafe.Sizeof(*sb))
	ring := unsafe.Offsetof(sb.Ctl) + unsafe.Offsetof(sb.Ctl.Txmap)
	clear(b[:ring])
	clear(b[ring+unsafe.Sizeof(sb.Ctl.Txmap):])
}
