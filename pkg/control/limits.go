package control

import "github.com/mptcpgo/mptcpgo/internal/datapath"

// MaxConnsLimit is the most connections DatapathConfig sizes a stack for: a ceiling, not a
// reservation (the datapath's slot arrays grow with demand, a chunk of datapath.SlotChunk slots
// at a time). What bounds the connections below it is memory (StackConfig.MemoryLimit) and
// file descriptors.
const MaxConnsLimit = 1 << 20

// connSlotsReserve are connection slots a stack needs beyond the connections it carries and
// the passive-open tickets: slots in their cooldown after a connection ended, and tickets taken
// at a third ACK whose connection was not accepted yet.
const connSlotsReserve = 128

// DatapathConfig sizes the datapath for maxConns connections at once (1 to MaxConnsLimit):
// the passive-open ticket queue may take a quarter of the connection slots (Stack.ticketTarget),
// so the other three quarters cover the connections and the reserve; subflow slots are twice the
// connection slots (an initial subflow and a join each, as datapath.Config's default) plus the
// passive joins' queue. These are ceilings: a connection in use costs about 6.7 KB of kernel
// memory (a 296-byte connection slot and a 6,424-byte subflow slot, more for each further
// subflow), taken a chunk of slots at a time as connections come.
func DatapathConfig(maxConns int) datapath.Config {
	conns := (4*(maxConns+connSlotsReserve) + 2) / 3
	return datapath.Config{MaxConns: conns, MaxSubs: 2*conns + joinTarget}
}
