package control

import "github.com/mptcpgo/mptcpgo/internal/datapath"

// MaxConnsLimit is the most connections DatapathConfig sizes a stack for.
const MaxConnsLimit = 65536

// connSlotsReserve are connection slots a stack needs beyond the connections it carries and
// the passive-open tickets: slots in their cooldown after a connection ended, and tickets taken
// at a third ACK whose connection was not accepted yet.
const connSlotsReserve = 128

// DatapathConfig sizes the datapath for maxConns connections at once (1 to MaxConnsLimit):
// the passive-open ticket queue is kept at a quarter of the connection slots (Stack.ticketTarget),
// so the other three quarters cover the connections and the reserve; subflow slots are twice the
// connection slots (an initial subflow and a join each, as datapath.Config's default) plus the
// passive joins' queue. A connection costs about 8.5 KB of kernel memory (a 256-byte connection
// slot, two 4 KB subflow slots).
func DatapathConfig(maxConns int) datapath.Config {
	conns := (4*(maxConns+connSlotsReserve) + 2) / 3
	return datapath.Config{MaxConns: conns, MaxSubs: 2*conns + joinTarget}
}
