package mpcrypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"testing"
)

const (
	vecKeyA   = 0x0102030405060708 // subflow initiator, ADD_ADDR sender
	vecKeyB   = 0xdeadbeefcafebabe // listener, ADD_ADDR receiver
	vecNonceA = 0x11111111
	vecNonceB = 0x22222222
)

func TestJoinSynAckHMAC(t *testing.T) {
	const want uint64 = 0x8e64145617bf5e05
	if got := JoinSynAckHMAC(vecKeyB, vecKeyA, vecNonceB, vecNonceA); got != want {
		t.Fatalf("JoinSynAckHMAC = %016x, want %016x", got, want)
	}
}

func TestJoinAckHMAC(t *testing.T) {
	const want = "647aa3d121b28a4d74f425da1a5cc1903a03680c"
	got := JoinAckHMAC(vecKeyA, vecKeyB, vecNonceA, vecNonceB)
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("JoinAckHMAC = %x, want %s", got, want)
	}
}

// The two MP_JOIN HMACs are the same function with the roles swapped; the
// SYN/ACK one is a prefix of what the initiator would compute for B.
func TestJoinHMACsAreRoleSwapped(t *testing.T) {
	ack := JoinAckHMAC(vecKeyB, vecKeyA, vecNonceB, vecNonceA)
	synack := JoinSynAckHMAC(vecKeyB, vecKeyA, vecNonceB, vecNonceA)
	if got := hex.EncodeToString(ack[:8]); got != "8e64145617bf5e05" {
		t.Fatalf("leftmost 64 bits of the swapped ACK HMAC = %s, want SYN/ACK HMAC %016x", got, synack)
	}
}

func TestAddAddrHMAC(t *testing.T) {
	addr := netip.MustParseAddr("10.0.2.1")
	for _, tc := range []struct {
		name string
		port uint16
		want uint64
	}{
		{"no port", 0, 0x54953fe27e82d961},
		{"port 10100", 10100, 0x00da04e620204704},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AddAddrHMAC(vecKeyA, vecKeyB, 5, addr, tc.port); got != tc.want {
				t.Fatalf("AddAddrHMAC = %016x, want %016x", got, tc.want)
			}
		})
	}
}

// TestAddAddrHMACIPv6 checks the 16-byte address layout against an HMAC
// computed here with crypto/hmac over bytes laid out by hand.
func TestAddAddrHMACIPv6(t *testing.T) {
	addr := netip.MustParseAddr("2001:db8::1:2")
	const id, port = 7, 0xbeef

	msg := []byte{
		id,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0x02,
		0xbe, 0xef,
	}
	key := []byte{
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sender key A
		0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe, // receiver key B
	}
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	sum := m.Sum(nil)
	var want uint64
	for _, b := range sum[24:] { // rightmost 64 bits
		want = want<<8 | uint64(b)
	}

	if got := AddAddrHMAC(vecKeyA, vecKeyB, id, addr, port); got != want {
		t.Fatalf("AddAddrHMAC(IPv6) = %016x, want %016x", got, want)
	}
	// A zone does not change the bytes on the wire.
	if got := AddAddrHMAC(vecKeyA, vecKeyB, id, addr.WithZone("eth0"), port); got != want {
		t.Fatalf("AddAddrHMAC(IPv6 with zone) = %016x, want %016x", got, want)
	}
	// The IPv4 and IPv6 forms of one address hash differently: the family
	// is part of the message.
	v4 := netip.MustParseAddr("10.0.2.1")
	if AddAddrHMAC(vecKeyA, vecKeyB, 5, v4, 0) == AddAddrHMAC(vecKeyA, vecKeyB, 5, netip.AddrFrom16(v4.As16()), 0) {
		t.Fatal("IPv4 and IPv4-mapped IPv6 ADD_ADDR HMACs are equal")
	}
}

// Kernel KUnit vectors (net/mptcp/crypto_test.c): key and message are the
// ASCII bytes of the strings shown.
func TestHMACSHA256(t *testing.T) {
	for _, tc := range []struct{ key, msg, want string }{
		{"0b0b0b0b0b0b0b0b", "48692054", "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"},
		{"aaaaaaaaaaaaaaaa", "dddddddd", "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"},
		{"0102030405060708", "cdcdcdcd", "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"},
	} {
		got := HMACSHA256([]byte(tc.key), []byte(tc.msg))
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("HMACSHA256(%q, %q) = %x, want %s", tc.key, tc.msg, got, tc.want)
		}
	}
}
