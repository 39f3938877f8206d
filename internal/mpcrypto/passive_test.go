package mpcrypto

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestPassiveKeyLayout spells the message of PassiveKey out byte by byte, for IPv4 and IPv6.
func TestPassiveKeyLayout(t *testing.T) {
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(i + 1)
	}
	for _, tc := range []struct {
		local, remote netip.AddrPort
		la, ra        []byte
		version       byte
	}{
		{netip.MustParseAddrPort("10.0.0.2:443"), netip.MustParseAddrPort("10.0.0.1:50000"),
			[]byte{10, 0, 0, 2}, []byte{10, 0, 0, 1}, 4},
		{netip.MustParseAddrPort("[::ffff:10.0.0.2]:443"), netip.MustParseAddrPort("[::ffff:10.0.0.1]:50000"),
			[]byte{10, 0, 0, 2}, []byte{10, 0, 0, 1}, 4},
		{netip.MustParseAddrPort("[fd00::2]:443"), netip.MustParseAddrPort("[fd00::1]:50000"),
			netip.MustParseAddr("fd00::2").AsSlice(), netip.MustParseAddr("fd00::1").AsSlice(), 6},
	} {
		var msg [48]byte
		copy(msg[0:], tc.la)
		copy(msg[16:], tc.ra)
		binary.BigEndian.PutUint16(msg[32:], 443)
		binary.BigEndian.PutUint16(msg[34:], 50000)
		binary.BigEndian.PutUint32(msg[36:], 0xdeadbeef)
		msg[43] = tc.version
		h := HMACSHA256(secret[:], msg[:])
		want := binary.BigEndian.Uint64(h[:8])
		if got := PassiveKey(secret, tc.local, tc.remote, 0xdeadbeef); got != want {
			t.Errorf("%v %v: key %016x, want %016x", tc.local, tc.remote, got, want)
		}
	}
}
