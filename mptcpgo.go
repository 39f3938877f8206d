// Package mptcpgo is Multipath TCP (RFC 8684) for Go programs: Dial and Listen return a
// net.Conn and a net.Listener whose connections run over MPTCP with the eBPF datapath, and fall
// back to plain TCP with peers that do not speak MPTCP.
package mptcpgo

import (
	"context"
	"net"

	"github.com/mptcpgo/mptcpgo/pkg/control"
)

// Dial connects to address ("host:port") on network "tcp", "tcp4" or "tcp6" over MPTCP.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return control.Dial(ctx, network, address)
}

// Listen listens on address for MPTCP clients; plain TCP clients are accepted as TCP.
func Listen(network, address string) (net.Listener, error) {
	return control.Listen(network, address)
}

// IsMPTCP reports whether a connection from Dial or Accept uses MPTCP, false when it fell
// back to plain TCP.
func IsMPTCP(c net.Conn) bool { return control.IsMPTCP(c) }
