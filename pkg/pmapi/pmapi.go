// Package pmapi is the contract between MPTCP connections and a path manager: the commands a
// path manager gives a connection, the events it receives, and the endpoints it works with.
//
// The split follows mptcpd's plugin.h: a PathManager is told what happens to connections (events)
// and acts on them through Conn (commands). Neither the connection layer nor a path manager
// imports the other; only cmd/ wires a concrete one into a stack.
package pmapi

import (
	"errors"
	"net/netip"
)

// Conn is the command interface a connection offers the path manager.
type Conn interface {
	Token() uint32
	// Remote returns the peer's address of the initial subflow; Local ours.
	Remote() netip.AddrPort
	Local() netip.AddrPort
	// Server reports whether we accepted the connection (announce) or opened it (create subflows).
	Server() bool
	// AddSubflow opens an MP_JOIN subflow from local to remote.
	AddSubflow(local netip.Addr, localID uint8, remote netip.AddrPort, remoteID uint8, backup bool) error
	// CloseSubflows closes the subflows whose local or remote address ID matches.
	CloseSubflows(localID, remoteID int) int
	// CloseSubflowsFrom closes the subflows from a local address with err, all but the last.
	CloseSubflowsFrom(local netip.Addr, err error) int
	// Announce sends ADD_ADDR (retransmitted until echoed); Withdraw sends REMOVE_ADDR.
	Announce(id uint8, addr netip.Addr, port uint16) error
	Withdraw(ids ...uint8) error
	// SetBackup sends MP_PRIO on the subflows from local address ID id (-1: all).
	SetBackup(localID int, backup bool) error
	// Subflows describes the subflows.
	Subflows() []Subflow
}

// Subflow is what the path manager knows of a subflow.
type Subflow struct {
	Local    netip.AddrPort
	Remote   netip.AddrPort
	LocalID  uint8
	RemoteID uint8
	Backup   bool
	Active   bool // we opened it (a client's join), so we may open it again
}

// PathManager is told about connections and their subflows, and drives them through the Conn
// commands. Its methods run in goroutines of their own.
type PathManager interface {
	Established(c Conn)
	AddrAnnounced(c Conn, id uint8, addr netip.AddrPort)
	AddrRemoved(c Conn, id uint8)
	SubflowClosed(c Conn, sf Subflow, err error)
	Closed(c Conn)
}

// EndpointWatcher is a path manager that tells of its endpoints: f learns of every endpoint,
// present and future (present is true when it is added, false when deleted). The connection
// layer uses it to listen where peers join and to give the datapath the address IDs.
type EndpointWatcher interface {
	OnEndpoint(f func(e Endpoint, present bool))
}

// RetryCounter is a path manager that counts the subflows it opened again after a failure: the
// connection layer reports the count as JoinRetries.
type RetryCounter interface {
	Retries() uint64
}

// ErrRemoved is the reason of subflows closed because their address was removed.
var ErrRemoved = errors.New("address removed")
