package convert

import (
	"errors"
	"fmt"
	"net/netip"
)

// lenConnect is the Base Connect TLV: type, length, port and a 128-bit address.
const lenConnect = 20

// Connect is the Connect TLV (§5.2.5): the Client asks the converter to open a connection to
// Remote (or, on an incoming connection, the converter tells the Client whom it comes from).
//
//	Type=10 | Length | Remote Peer Port (16)
//	Remote Peer IP Address (128): IPv6, or IPv4 as an IPv4-mapped IPv6 address
//	TCP Options (optional, Extended Connect TLV), zero-padded to a 32-bit boundary
//
// §5.2.5 forbids multicast, broadcast and loopback addresses; this package leaves the address
// to the converter's policy (checkRemote) and refuses only port 0. Parse returns an
// IPv4-mapped address as IPv4.
//
// TCPOptions holds the TCP options the converter must put in its SYN to Remote, as they are
// in a TCP header but without padding: kind, length (at least 2) and value each, no EOL (0)
// or NOP (1), at most 40 bytes. An option of length 2 asks the converter for its own value.
type Connect struct {
	Remote     netip.AddrPort
	TCPOptions []byte
}

var _ TLV = Connect{}

// Type returns TypeConnect.
func (Connect) Type() Type { return TypeConnect }

// Len returns 20 plus the TCP options padded to a multiple of 4.
func (c Connect) Len() int { return lenConnect + pad4(len(c.TCPOptions)) }

// Append appends the encoded TLV to b.
func (c Connect) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeConnect, c.Len())
	b = append(b, byte(c.Remote.Port()>>8), byte(c.Remote.Port()))
	a := c.Remote.Addr().As16() // IPv4 becomes IPv4-mapped
	b = append(b, a[:]...)
	b = append(b, c.TCPOptions...)
	return appendPadding(b, len(c.TCPOptions))
}

func (c Connect) check() error {
	a := c.Remote.Addr()
	if !a.IsValid() {
		return errors.New("no remote address")
	}
	if a.Zone() != "" {
		return fmt.Errorf("remote address %v has a zone", a)
	}
	if err := checkRemote(c.Remote); err != nil {
		return err
	}
	n, err := tcpOptionsLen(c.TCPOptions)
	if err != nil {
		return err
	}
	if n != len(c.TCPOptions) {
		return fmt.Errorf("TCP options end in %d zero bytes", len(c.TCPOptions)-n)
	}
	return nil
}

// OptionKinds returns the kinds of the TCP options, in order: what the converter checks
// against those it supports before answering Unsupported TCP Option (§5.2.5). It stops at
// the first option that is not well formed.
func (c Connect) OptionKinds() []uint8 {
	var kinds []uint8
	for b := c.TCPOptions; len(b) >= 2 && b[0] > 1 && b[1] >= 2 && int(b[1]) <= len(b); b = b[b[1]:] {
		kinds = append(kinds, b[0])
	}
	return kinds
}

// parseConnect decodes a Connect TLV, base or extended.
func parseConnect(b []byte) (Connect, error) {
	if len(b) < lenConnect {
		return Connect{}, malformed(1, "%d bytes, want at least %d", len(b), lenConnect)
	}
	port := uint16(b[2])<<8 | uint16(b[3])
	c := Connect{Remote: netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[4:20])).Unmap(), port)}
	if err := checkRemote(c.Remote); err != nil {
		off := 4 // the address
		if errors.Is(err, errPort0) {
			off = 2
		}
		return Connect{}, malformed(off, "%v", err)
	}
	opts := b[lenConnect:]
	n, err := tcpOptionsLen(opts)
	if err != nil {
		var oe *optionError
		off := 0
		if errors.As(err, &oe) {
			off = oe.off
		}
		return Connect{}, malformed(lenConnect+off, "%v", err)
	}
	if n > 0 {
		c.TCPOptions = opts[:n]
	}
	return c, nil
}

// checkRemote refuses port 0, which names no server. Which addresses a converter connects to
// is its policy, not the message's form: §5.2.5 forbids a Client to ask for a multicast,
// broadcast or loopback address, and a converter refuses those (and more) with Not Authorized
// unless its operator allowed them, as mptcpd --convert-allow does. Parse leaves the address
// to it.
func checkRemote(ap netip.AddrPort) error {
	if ap.Port() == 0 {
		return errPort0
	}
	return nil
}

var errPort0 = errors.New("port 0")

// optionError is a malformed TCP Options field, at its byte off.
type optionError struct {
	off    int
	reason string
}

func (e *optionError) Error() string {
	return fmt.Sprintf("TCP Options field, byte %d: %s", e.off, e.reason)
}

// tcpOptionsLen walks the TCP Options field of a Connect TLV (§5.2.5) and returns the length
// of its options without the zero padding after them. The padding must be shorter than a word
// (so that re-encoding gives the same bytes) and the options at most 40 bytes.
func tcpOptionsLen(b []byte) (int, error) {
	i := 0
	for i < len(b) {
		switch b[i] {
		case 0: // padding to the end
			for j := i; j < len(b); j++ {
				if b[j] != 0 {
					return 0, &optionError{j, "non-zero byte after the padding started"}
				}
			}
			if len(b)-i >= 4 {
				return 0, &optionError{i, fmt.Sprintf("%d bytes of padding, want at most 3", len(b)-i)}
			}
			return i, nil
		case 1:
			return 0, &optionError{i, "NOP (kind 1) is not allowed"}
		}
		if len(b)-i < 2 {
			return 0, &optionError{i, fmt.Sprintf("kind %d without a length", b[i])}
		}
		l := int(b[i+1])
		if l < 2 || l > len(b)-i {
			return 0, &optionError{i, fmt.Sprintf("kind %d has length %d, %d bytes left", b[i], l, len(b)-i)}
		}
		i += l
		if i > maxTCPOptions {
			return 0, &optionError{i - l, fmt.Sprintf("options exceed %d bytes", maxTCPOptions)}
		}
	}
	return i, nil
}
