package control

import "github.com/mptcpgo/mptcpgo/pkg/datapath"

// MaxConnsLimit is the most connections DatapathConfig sizes a stack for.
const MaxConnsLimit = 65536

// connSlotsReserve are the connection slots a stack needs beyond the connections it carries:
// the passive-open tickets queued in the datapath while a listener exists (ticketTarget), and
// as many again for tickets taken by a SYN/ACK and not yet accepted and for slots in their
// cooldown after a connection ended.
const connSlotsReserve = 2 * ticketTarget

// DatapathConfig sizes the datapath for maxConns connections at once (1 to MaxConnsLimit):
// connection slots for them and the reserve, and twice as many subflow slots (an initial
// subflow and a join each, as datapath.Config's default) plus the passive joins' queue. A
// connection costs about 8.5 KB of kernel memory (a 256-byte connection slot, two 4 KB subflow
// slots).
func DatapathConfig(maxConns int) datapath.Config {
	conns := maxConns + connSlotsReserve
	return datapath.Config{MaxConns: conns, MaxSubs: 2*conns + ticketTarget}
}
