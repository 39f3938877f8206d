package mpcrypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// HMACSHA256 returns HMAC-SHA256(key, msg) (RFC 2104).
func HMACSHA256(key, msg []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// keyPairHMAC returns HMAC-SHA256 keyed with key1‖key2 (both big-endian), the
// keying every MPTCP v1 HMAC uses.
func keyPairHMAC(key1, key2 uint64, msg []byte) [sha256.Size]byte {
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], key1)
	binary.BigEndian.PutUint64(k[8:], key2)
	return HMACSHA256(k[:], msg)
}

// nonceMsg lays out nonce1‖nonce2 big-endian.
func nonceMsg(nonce1, nonce2 uint32) []byte {
	var m [8]byte
	binary.BigEndian.PutUint32(m[:4], nonce1)
	binary.BigEndian.PutUint32(m[4:], nonce2)
	return m[:]
}

// JoinSynAckHMAC returns the truncated HMAC carried in an MP_JOIN SYN/ACK: the
// leftmost 64 bits of HMAC-SHA256(key = keyB‖keyA, msg = nonceB‖nonceA).
// B is the listener that sends the SYN/ACK, A the subflow initiator
// (RFC 8684 §3.2).
func JoinSynAckHMAC(keyB, keyA uint64, nonceB, nonceA uint32) uint64 {
	h := keyPairHMAC(keyB, keyA, nonceMsg(nonceB, nonceA))
	return binary.BigEndian.Uint64(h[:8])
}

// JoinAckHMAC returns the truncated HMAC carried in the MP_JOIN third ACK: the
// leftmost 160 bits of HMAC-SHA256(key = keyA‖keyB, msg = nonceA‖nonceB).
// A is the subflow initiator, B the listener (RFC 8684 §3.2).
func JoinAckHMAC(keyA, keyB uint64, nonceA, nonceB uint32) [20]byte {
	h := keyPairHMAC(keyA, keyB, nonceMsg(nonceA, nonceB))
	return [20]byte(h[:20])
}

// AddAddrHMAC returns the truncated HMAC carried in a non-echo ADD_ADDR: the
// rightmost 64 bits of HMAC-SHA256(key = senderKey‖receiverKey,
// msg = id‖address‖port), where the address is 4 bytes for an IPv4 addr and
// 16 bytes for an IPv6 one, and port is 2 bytes big-endian, 0 when the option
// carries no port (RFC 8684 §3.4.1).
//
// The address family is taken from addr as given: pass addr.Unmap() if an
// IPv4-mapped IPv6 address is advertised as IPv4. The zone is ignored. addr
// must be valid.
func AddAddrHMAC(senderKey, receiverKey uint64, id uint8, addr netip.Addr, port uint16) uint64 {
	msg := make([]byte, 0, 1+16+2)
	msg = append(msg, id)
	msg = append(msg, addr.AsSlice()...)
	msg = binary.BigEndian.AppendUint16(msg, port)
	h := keyPairHMAC(senderKey, receiverKey, msg)
	return binary.BigEndian.Uint64(h[sha256.Size-8:])
}
