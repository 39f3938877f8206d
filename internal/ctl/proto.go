// Package ctl is mptcpd's control protocol: versioned JSON requests and responses, one per
// line, over a root-only Unix socket, spoken by mptcpctl.
//
// A request is {"v":1,"op":"endpoint.add","args":{...}}; its response {"v":1,"ok":true,
// "data":{...}} or {"v":1,"ok":false,"error":"..."}. A connection carries any number of
// requests, answered in order. "monitor" is answered once, then with one {"v":1,"event":{...}}
// line per event until the client closes the connection.
package ctl

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Version is the protocol version this package speaks.
const Version = 1

// DefaultSocket is where mptcpd listens unless told otherwise (--ctl).
const DefaultSocket = "/run/mptcpd/mptcpd.sock"

// MaxLine bounds a request line.
const MaxLine = 64 << 10

// Operations.
const (
	OpVersion        = "version"
	OpEndpointAdd    = "endpoint.add"
	OpEndpointDelete = "endpoint.delete"
	OpEndpointChange = "endpoint.change"
	OpEndpointShow   = "endpoint.show"
	OpEndpointFlush  = "endpoint.flush"
	OpLimitsGet      = "limits.get"
	OpLimitsSet      = "limits.set"
	OpSetPrio        = "prio.set"
	OpShow           = "show"
	OpStats          = "stats"
	OpFeatures       = "features"
	OpMonitor        = "monitor"
)

// Request is one request line.
type Request struct {
	V    int             `json:"v"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is one response line; a monitor stream's lines carry Event instead.
type Response struct {
	V     int             `json:"v"`
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Event *Event          `json:"event,omitempty"`
	// Lost counts events a monitor lost since its last line because it did not keep up.
	Lost uint64 `json:"lost,omitempty"`
}

// VersionInfo answers OpVersion.
type VersionInfo struct {
	Protocol int    `json:"protocol"`
	Daemon   string `json:"daemon"`
}

// Endpoint is a path-manager endpoint, as `ip mptcp endpoint` shows it.
type Endpoint struct {
	Addr  netip.Addr `json:"addr"`
	ID    uint8      `json:"id,omitempty"`
	Flags []string   `json:"flags,omitempty"` // subflow, signal, backup, fullmesh
	Port  uint16     `json:"port,omitempty"`
	Dev   string     `json:"dev,omitempty"`
}

// EndpointRef names an endpoint by ID, or by address when ID is 0.
type EndpointRef struct {
	ID   uint8      `json:"id,omitempty"`
	Addr netip.Addr `json:"addr,omitzero"`
}

func (r EndpointRef) String() string {
	if r.ID != 0 {
		return fmt.Sprintf("id %d", r.ID)
	}
	return r.Addr.String()
}

// ChangeArgs are OpEndpointChange's arguments.
type ChangeArgs struct {
	EndpointRef
	Backup bool `json:"backup"`
}

// Limits are the path manager's limits.
type Limits struct {
	Subflows        int `json:"subflows"`
	AddAddrAccepted int `json:"add_addr_accepted"`
}

// LimitsArgs are OpLimitsSet's arguments: the limits to change.
type LimitsArgs struct {
	Subflows        *int `json:"subflows,omitempty"`
	AddAddrAccepted *int `json:"add_addr_accepted,omitempty"`
}

// PrioArgs are OpSetPrio's arguments: every subflow from Addr, or the one subflow of the
// connection Token from Local to Remote.
type PrioArgs struct {
	Addr   netip.Addr     `json:"addr,omitzero"`
	Token  uint32         `json:"token,omitempty"`
	Local  netip.AddrPort `json:"local,omitzero"`
	Remote netip.AddrPort `json:"remote,omitzero"`
	Backup bool           `json:"backup"`
}

// Feature is one kernel facility the datapath probed at start (OpFeatures).
type Feature struct {
	Name   string `json:"name"`
	Active bool   `json:"active"`
	Kernel string `json:"kernel"`         // the first Linux release that has it
	Cost   string `json:"cost,omitempty"` // what its absence costs (when not active)
}

// PrioResult answers OpSetPrio.
type PrioResult struct {
	Subflows int `json:"subflows"` // subflows that sent MP_PRIO
}

// FlushResult answers OpEndpointFlush.
type FlushResult struct {
	Removed int `json:"removed"`
}

// Connection is one MPTCP connection.
type Connection struct {
	Token     uint32         `json:"token"`
	Local     netip.AddrPort `json:"local"`
	Remote    netip.AddrPort `json:"remote"`
	Server    bool           `json:"server"` // we accepted it
	State     string         `json:"state"`
	Scheduler string         `json:"scheduler"`
	// CongestionControl is the subflows' congestion control: cubic, reno, lia, olia, balia.
	CongestionControl string    `json:"congestion_control"`
	BytesSent         uint64    `json:"bytes_sent"`
	BytesRecv         uint64    `json:"bytes_received"`
	Subflows          []Subflow `json:"subflows"`
	// Relay is what mptcpd carries on the connection, when it does: its mode, the
	// application's (or client's) address, and where it goes.
	Relay *Relay `json:"relay,omitempty"`
}

// Relay is the proxy side of a connection mptcpd carries.
type Relay struct {
	Mode string         `json:"mode"` // forward, accept, convert, transparent
	From netip.AddrPort `json:"from"`
	// Destination is where the connection goes: the rule's remote, the original destination
	// (transparent) or the RFC 8803 Connect TLV's (convert).
	Destination string `json:"destination"`
	Via         string `json:"via,omitempty"` // the Transport Converter it goes through
}

// Subflow is one subflow of a connection.
type Subflow struct {
	Local      netip.AddrPort `json:"local"`
	Remote     netip.AddrPort `json:"remote"`
	LocalID    uint8          `json:"local_id"`
	RemoteID   uint8          `json:"remote_id"`
	Backup     bool           `json:"backup"`      // ours
	PeerBackup bool           `json:"peer_backup"` // the peer's
	Ready      bool           `json:"ready"`
	Stale      bool           `json:"stale"`
	RTT        time.Duration  `json:"rtt_ns"`
	Cwnd       uint32         `json:"cwnd"`
	BytesSent  uint64         `json:"bytes_sent"`
	BytesRecv  uint64         `json:"bytes_received"`
	Retrans    uint32         `json:"retrans"`
}

// Event is one event of a monitor stream.
type Event struct {
	Kind     string         `json:"kind"`
	Time     time.Time      `json:"time"`
	Token    uint32         `json:"token"`
	Server   bool           `json:"server"`
	Local    netip.AddrPort `json:"local,omitzero"`
	Remote   netip.AddrPort `json:"remote,omitzero"`
	LocalID  uint8          `json:"local_id"`
	RemoteID uint8          `json:"remote_id"`
	Backup   bool           `json:"backup,omitempty"`
	AddrID   uint8          `json:"addr_id,omitempty"`
	Addr     netip.AddrPort `json:"addr,omitzero"`
	Err      string         `json:"error,omitempty"`
	// Relay is what a "relay" event reports: a connection mptcpd began to carry (its token is
	// the MPTCP side's, 0 when the connection fell back to TCP on both sides).
	Relay *Relay `json:"relay,omitempty"`
}

// Error is an error the daemon answered with.
type Error struct {
	Op  string
	Msg string
}

func (e *Error) Error() string { return e.Msg }
