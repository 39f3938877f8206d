package mpcrypto

import (
	"encoding/binary"
	"net/netip"
)

// PassiveKeyAttempts bounds how many derivations PassiveKey tries before it gives up on a
// zero key (each has probability 2^-64).
const PassiveKeyAttempts = 4

// PassiveKey is the key our listeners' SYN/ACKs carry: the leftmost 64 bits of
// HMAC-SHA256(secret, msg), never zero, where msg is 48 bytes: the local address (16 bytes),
// the remote address (16), the local port, the remote port (2 each), the client's ISN (4), the
// IP version (4) and an attempt counter (4), all big-endian; an IPv4 address (or an IPv4-mapped
// IPv6 one) takes the first 4 bytes of its 16, the rest zero.
//
// A key derived rather than drawn costs nothing until the third ACK echoes it: that is how
// the datapath keeps SYN floods from taking keys and slots (bpf/synkey.h, whose derivation this
// is the reference of). The secret, from crypto/rand, keeps keys unpredictable (RFC 8684 §3.1).
// It returns 0 only if every attempt gave a zero key.
func PassiveKey(secret [32]byte, local, remote netip.AddrPort, clientISN uint32) uint64 {
	var msg [48]byte
	version := uint32(6)
	la, ra := local.Addr().Unmap(), remote.Addr().Unmap()
	if la.Is4() {
		version = 4
		b := la.As4()
		copy(msg[0:], b[:])
		b = ra.As4()
		copy(msg[16:], b[:])
	} else {
		b := la.As16()
		copy(msg[0:], b[:])
		b = ra.As16()
		copy(msg[16:], b[:])
	}
	binary.BigEndian.PutUint16(msg[32:], local.Port())
	binary.BigEndian.PutUint16(msg[34:], remote.Port())
	binary.BigEndian.PutUint32(msg[36:], clientISN)
	binary.BigEndian.PutUint32(msg[40:], version)
	for attempt := range uint32(PassiveKeyAttempts) {
		binary.BigEndian.PutUint32(msg[44:], attempt)
		h := HMACSHA256(secret[:], msg[:])
		if key := binary.BigEndian.Uint64(h[:8]); key != 0 {
			return key
		}
	}
	return 0
}
