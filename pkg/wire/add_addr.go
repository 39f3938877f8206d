package wire

import "net/netip"

// ADD_ADDR lengths (the kernel's TCPOLEN_MPTCP_ADD_ADDR*). The _BASE forms are
// the echo forms, which carry no HMAC.
const (
	lenAddAddr          = 16 // TCPOLEN_MPTCP_ADD_ADDR
	lenAddAddrPort      = 18 // TCPOLEN_MPTCP_ADD_ADDR_PORT
	lenAddAddrBase      = 8  // TCPOLEN_MPTCP_ADD_ADDR_BASE
	lenAddAddrBasePort  = 10 // TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT
	lenAddAddr6         = 28 // TCPOLEN_MPTCP_ADD_ADDR6
	lenAddAddr6Port     = 30 // TCPOLEN_MPTCP_ADD_ADDR6_PORT
	lenAddAddr6Base     = 20 // TCPOLEN_MPTCP_ADD_ADDR6_BASE
	lenAddAddr6BasePort = 22 // TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT
	lenPort             = 2  // TCPOLEN_MPTCP_PORT_LEN
	lenAddAddrHMAC      = 8

	addAddrEcho = 0x01 // MPTCP_ADDR_ECHO, bit 0 of byte 2
)

// AddAddr is the ADD_ADDR option (RFC 8684 §3.4.1):
//
//	kind=30 | length | subtype=3, rsv, E | address ID | address (4 or 16) |
//	port (2, optional) | truncated HMAC (8, absent when E is set)
//
// The address family follows from the length: IPv4 16 (18 with port), IPv6 28
// (30); the echo forms without HMAC are 8/10 and 20/22.
//
// Port: the port is on the wire when HasPort is set or Port is non-zero, so
// AddAddr{Port: 8080} does what it says. Parse sets HasPort exactly when the
// option carried a port field; a port field of 0, which the kernel accepts (and
// then treats as "no port"), therefore round-trips with HasPort set and Port 0.
// Use PortPresent to ask whether the port is on the wire.
//
// Addr: an IPv4 address (Is4) encodes in the IPv4 forms; anything else,
// IPv4-mapped IPv6 included, in the IPv6 forms (the zero Addr as ::). Parse
// returns a 4-byte Addr for the IPv4 forms and a 16-byte one, never unmapped,
// for the IPv6 forms.
//
// HMAC is the rightmost 64 bits of the HMAC (§3.4.1); it is not on the wire
// and is ignored by Append when Echo is set.
type AddAddr struct {
	Echo    bool
	AddrID  uint8
	Addr    netip.Addr
	HasPort bool
	Port    uint16
	HMAC    uint64
}

var _ Option = AddAddr{}

// Subtype returns SubtypeAddAddr.
func (AddAddr) Subtype() Subtype { return SubtypeAddAddr }

// PortPresent reports whether Append writes a port field.
func (a AddAddr) PortPresent() bool { return a.HasPort || a.Port != 0 }

// Len returns the wire length of a.
func (a AddAddr) Len() int {
	n := 4 + 16 // kind, length, subtype, ID, IPv6 address
	if a.Addr.Is4() {
		n = 4 + 4
	}
	if a.PortPresent() {
		n += lenPort
	}
	if !a.Echo {
		n += lenAddAddrHMAC
	}
	return n
}

// Append appends the encoded option to b.
func (a AddAddr) Append(b []byte) []byte {
	var nib uint8
	if a.Echo {
		nib = addAddrEcho
	}
	b = appendHeader(b, SubtypeAddAddr, a.Len(), nib)
	b = append(b, a.AddrID)
	if a.Addr.Is4() {
		ip := a.Addr.As4()
		b = append(b, ip[:]...)
	} else {
		ip := a.Addr.As16() // all zero for the zero Addr
		b = append(b, ip[:]...)
	}
	if a.PortPresent() {
		b = be.AppendUint16(b, a.Port)
	}
	if !a.Echo {
		b = be.AppendUint64(b, a.HMAC)
	}
	return b
}

// parseAddAddr decodes an ADD_ADDR. As in the kernel, the E flag selects the
// set of four lengths that are accepted, and the length selects family and
// port presence; every other length is rejected. The reserved bits of byte 2
// are ignored. (The kernel accepts IPv6 forms only when built with IPv6; this
// package always does.)
func parseAddAddr(b []byte) (AddAddr, int, error) {
	n, err := subHeader(b, SubtypeAddAddr)
	if err != nil {
		return AddAddr{}, 0, err
	}
	a := AddAddr{Echo: b[2]&addAddrEcho != 0}
	var v6 bool
	if a.Echo {
		switch n {
		case lenAddAddrBase:
		case lenAddAddrBasePort:
			a.HasPort = true
		case lenAddAddr6Base:
			v6 = true
		case lenAddAddr6BasePort:
			v6, a.HasPort = true, true
		default:
			return AddAddr{}, 0, badLength(SubtypeAddAddr, n)
		}
	} else {
		switch n {
		case lenAddAddr:
		case lenAddAddrPort:
			a.HasPort = true
		case lenAddAddr6:
			v6 = true
		case lenAddAddr6Port:
			v6, a.HasPort = true, true
		default:
			return AddAddr{}, 0, badLength(SubtypeAddAddr, n)
		}
	}
	a.AddrID = b[3]
	p := 4
	if v6 {
		a.Addr = netip.AddrFrom16([16]byte(b[p : p+16]))
		p += 16
	} else {
		a.Addr = netip.AddrFrom4([4]byte(b[p : p+4]))
		p += 4
	}
	if a.HasPort {
		a.Port = be.Uint16(b[p:])
		p += lenPort
	}
	if !a.Echo {
		a.HMAC = be.Uint64(b[p:])
	}
	return a, n, nil
}
