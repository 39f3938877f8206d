package control

import (
	"fmt"
	"iter"
	"reflect"
	"sync/atomic"

	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

// Stats are the connection layer's own counters. Counters reports each under its field's name
// (`mptcpctl stats` prints them with the MPTcpExt prefix, mptcpd exports them as metrics): the
// field names are the contract and follow the kernel's MPTcpExt MIB where it has the counter.
// Every field is an atomic.Uint64 (checked when the package loads).
type Stats struct {
	ActiveOpens     atomic.Uint64
	PassiveOpens    atomic.Uint64
	FallbackActive  atomic.Uint64 // our connects that continued as plain TCP
	FallbackPassive atomic.Uint64 // accepted connections that are plain TCP
	PassiveFastOpen atomic.Uint64 // accepted MPTCP connections whose SYN carried data (TCP Fast Open)
	ActiveFastOpen  atomic.Uint64 // our MPTCP connections whose SYN's data the server acknowledged
	// Our MPTCP connects whose SYN's data the server did not acknowledge: reset, dialled again.
	FastOpenDataRefused atomic.Uint64
	TFOKeyTimeout       atomic.Uint64 // TCP Fast Open children reset: the client's third ACK never came
	Fastclose           atomic.Uint64 // connections aborted with MP_FASTCLOSE (either side)
	MPFailFallback      atomic.Uint64 // fallbacks we started with MP_FAIL (options vanished)
	EventsOrphaned      atomic.Uint64 // events for no known connection
	TicketsReclaimed    atomic.Uint64 // tickets taken by a completed handshake and never accepted
	TokenCollision      atomic.Uint64 // passive opens reset at accept: their token was taken meanwhile
	// Our MP_JOIN third ACKs sent again: no fourth ACK showed the peer had it (RFC 8684 §3.2).
	MPJoinAckRexmit atomic.Uint64
	Joins           atomic.Uint64 // MP_JOIN subflows attached (both roles)
	JoinRefused     atomic.Uint64 // MP_JOIN subflows reset: failed HMAC, unknown connection
	ReinjectedBytes atomic.Uint64 // bytes sent again on another subflow
	// Opportunistic retransmissions: the bytes at the peer's window's left edge sent again on a
	// faster subflow while a slow one held them and new data waited for the window.
	OpportunisticRetransmit atomic.Uint64
	SubflowStale            atomic.Uint64 // subflows found stale
	SubflowLossy            atomic.Uint64 // subflows in loss recovery whose data was re-sent elsewhere
	SubflowCloseReset       atomic.Uint64 // MPTCP subflows reset at the connection's graceful close: their socket or writer still held data
	DataRetransmit          atomic.Uint64 // connection-level retransmissions: delivered data never DATA_ACKed
	AddAddrAccepted         atomic.Uint64 // ADD_ADDRs with a valid HMAC
	AddAddrHMacFailure      atomic.Uint64 // ADD_ADDRs ignored for a wrong HMAC
	RmAddrAccepted          atomic.Uint64 // REMOVE_ADDRs received (each may remove several addresses)
	MPPrioAccepted          atomic.Uint64 // MP_PRIOs received: the subflow takes the peer's backup flag
	EchoAdd                 atomic.Uint64 // echoes of our ADD_ADDRs
	AddAddrTx               atomic.Uint64 // ADD_ADDRs sent, retransmissions included
	EchoAddTx               atomic.Uint64
	RmAddrTx                atomic.Uint64
	MPPrioTx                atomic.Uint64
	RmSubflow               atomic.Uint64 // subflows closed for a REMOVE_ADDR or a withdrawn endpoint

	EventsRefused      atomic.Uint64 // events refused: their connection's queue was full
	EventOverflowReset atomic.Uint64 // connections reset for falling behind their events
	EventLostReset     atomic.Uint64 // connections reset because the datapath lost an event of theirs
	NoDSSInWindow      atomic.Uint64 // mappings beyond the receive window, dropped (the kernel's name)
	DSSNoMatchTCP      atomic.Uint64 // mappings for subflow bytes far outside the receive window, dropped; added to the datapath's counter of the name
	RxMapOverflow      atomic.Uint64 // subflows reset for holding too many of the peer's mappings
	InfiniteMapRx      atomic.Uint64 // infinite mappings received: the peer fell back (the kernel's name)
	DssFallback        atomic.Uint64 // connections that fell back (MP_FAIL) for data their mappings cannot place (the kernel's name)
	DSSNotMatching     atomic.Uint64 // mappings that change the DSNs of bytes already mapped (the kernel's name)

	// DSS checksums (RFC 8684 §3.3.1, §3.7)
	DataCsumVerified      atomic.Uint64 // peer mappings whose DSS checksum was right
	DataCsumErr           atomic.Uint64 // peer mappings whose DSS checksum was wrong (the kernel's name)
	DSSCorruptionFallback atomic.Uint64 // connections that fell back with MP_FAIL for a wrong checksum, their only subflow kept (the kernel's name)
	DSSCorruptionReset    atomic.Uint64 // subflows reset (MP_TCPRST) for a wrong checksum on a connection that had a join (the kernel's name)
	DSSCsumMismatch       atomic.Uint64 // peer mappings with a checksum where none was negotiated or without one where it was: bad mappings (§3.3.0)

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
	if r, ok := s.pm.(pmapi.RetryCounter); ok {
		c["JoinRetries"] = r.Retries() // lost subflows opened again
	}
	return c, nil
}
