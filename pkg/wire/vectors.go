package wire

import (
	"fmt"
	"net/netip"
)

// Vector is a known-answer test vector: Parse(Bytes) must return Option and
// len(Bytes), and Option.Append(nil) must return Bytes.
type Vector struct {
	Name   string
	Bytes  []byte
	Option Option
}

// Vectors returns a fresh table of well-formed options covering every form of
// every suboption: the five MP_CAPABLE forms, the three MP_JOIN forms, all 32
// DSS flag combinations with and without checksum, ADD_ADDR IPv4/IPv6 with and
// without port and echo, REMOVE_ADDR with one, several and the most IDs,
// MP_PRIO, MP_FAIL, MP_FASTCLOSE and MP_TCPRST. The bytes are written out from
// the RFC 8684 layouts, not produced by Append, so other parsers (the BPF
// datapath) can be tested against them.
//
// The values are consistent known answers for key A = 0x0102030405060708 (the
// initiator) and key B = 0xdeadbeefcafebabe (the listener): the MP_JOIN SYN
// carries B's token 3f8a286a and R-A = 0x11111111, the SYN/ACK the truncated
// HMAC for R-B = 0x22222222 and the ACK the full one; the IPv4 ADD_ADDR
// vectors carry A's HMAC for address ID 5, 10.0.2.1, without port and with
// port 10100; MP_FAIL carries A's IDSN + 1.
func Vectors() []Vector {
	const (
		keyA = 0x0102030405060708
		keyB = 0xdeadbeefcafebabe
	)
	v := []Vector{
		// MP_CAPABLE: 30, len, 0x0|version, flags, [sender key, [receiver key, [data len, [csum]]]]
		{"mp_capable/syn", []byte{30, 4, 0x01, 0x01},
			MPCapable{Form: MPCSyn, Version: 1, Flags: FlagHMACSHA256}},
		{"mp_capable/syn-checksum-nojoin0", []byte{30, 4, 0x01, 0xa1},
			MPCapable{Form: MPCSyn, Version: 1, Flags: FlagChecksum | FlagNoJoinInitialAddr | FlagHMACSHA256}},
		{"mp_capable/syn-version2", []byte{30, 4, 0x02, 0x01},
			MPCapable{Form: MPCSyn, Version: 2, Flags: FlagHMACSHA256}},
		{"mp_capable/synack", []byte{30, 12, 0x01, 0x01,
			0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe},
			MPCapable{Form: MPCSynAck, Version: 1, Flags: FlagHMACSHA256, SenderKey: keyB}},
		{"mp_capable/ack", []byte{30, 20, 0x01, 0x01,
			0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
			0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe},
			MPCapable{Form: MPCAck, Version: 1, Flags: FlagHMACSHA256, SenderKey: keyA, ReceiverKey: keyB}},
		{"mp_capable/data", []byte{30, 22, 0x01, 0x01,
			0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
			0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe,
			0x05, 0xdc},
			MPCapable{Form: MPCData, Version: 1, Flags: FlagHMACSHA256, SenderKey: keyA, ReceiverKey: keyB, DataLen: 1500}},
		{"mp_capable/data-checksum", []byte{30, 24, 0x01, 0x81,
			0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
			0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe,
			0x05, 0xdc, 0xbe, 0xef},
			MPCapable{Form: MPCDataCsum, Version: 1, Flags: FlagChecksum | FlagHMACSHA256,
				SenderKey: keyA, ReceiverKey: keyB, DataLen: 1500, Checksum: 0xbeef}},

		// MP_JOIN
		{"mp_join/syn", []byte{30, 12, 0x10, 0x05,
			0x3f, 0x8a, 0x28, 0x6a, // token of keyB
			0x11, 0x11, 0x11, 0x11},
			MPJoin{Form: MPJSyn, AddrID: 5, Token: 0x3f8a286a, Nonce: 0x11111111}},
		{"mp_join/syn-backup", []byte{30, 12, 0x11, 0x00,
			0x3f, 0x8a, 0x28, 0x6a,
			0x11, 0x11, 0x11, 0x11},
			MPJoin{Form: MPJSyn, Backup: true, AddrID: 0, Token: 0x3f8a286a, Nonce: 0x11111111}},
		{"mp_join/synack", []byte{30, 16, 0x10, 0x07,
			0x8e, 0x64, 0x14, 0x56, 0x17, 0xbf, 0x5e, 0x05,
			0x22, 0x22, 0x22, 0x22},
			MPJoin{Form: MPJSynAck, AddrID: 7, TruncHMAC: 0x8e64145617bf5e05, Nonce: 0x22222222}},
		{"mp_join/synack-backup", []byte{30, 16, 0x11, 0xff,
			0x8e, 0x64, 0x14, 0x56, 0x17, 0xbf, 0x5e, 0x05,
			0x22, 0x22, 0x22, 0x22},
			MPJoin{Form: MPJSynAck, Backup: true, AddrID: 255, TruncHMAC: 0x8e64145617bf5e05, Nonce: 0x22222222}},
		{"mp_join/ack", []byte{30, 24, 0x10, 0x00,
			0x64, 0x7a, 0xa3, 0xd1, 0x21, 0xb2, 0x8a, 0x4d, 0x74, 0xf4,
			0x25, 0xda, 0x1a, 0x5c, 0xc1, 0x90, 0x3a, 0x03, 0x68, 0x0c},
			MPJoin{Form: MPJAck, HMAC: [HMACLen]byte{
				0x64, 0x7a, 0xa3, 0xd1, 0x21, 0xb2, 0x8a, 0x4d, 0x74, 0xf4,
				0x25, 0xda, 0x1a, 0x5c, 0xc1, 0x90, 0x3a, 0x03, 0x68, 0x0c}}},
	}
	v = append(v, dssVectors()...)

	v4 := netip.AddrFrom4([4]byte{10, 0, 2, 1})
	v6 := netip.MustParseAddr("2001:db8::1")
	v6b := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	v = append(v, []Vector{
		// ADD_ADDR: 30, len, 0x30|E, ID, address, [port], [HMAC]
		{"add_addr/v4", []byte{30, 16, 0x30, 0x05, 10, 0, 2, 1,
			0x54, 0x95, 0x3f, 0xe2, 0x7e, 0x82, 0xd9, 0x61},
			AddAddr{AddrID: 5, Addr: v4, HMAC: 0x54953fe27e82d961}},
		{"add_addr/v4-port", []byte{30, 18, 0x30, 0x05, 10, 0, 2, 1, 0x27, 0x74,
			0x00, 0xda, 0x04, 0xe6, 0x20, 0x20, 0x47, 0x04},
			AddAddr{AddrID: 5, Addr: v4, HasPort: true, Port: 10100, HMAC: 0x00da04e620204704}},
		{"add_addr/v4-port0", []byte{30, 18, 0x30, 0x05, 10, 0, 2, 1, 0x00, 0x00,
			0x54, 0x95, 0x3f, 0xe2, 0x7e, 0x82, 0xd9, 0x61},
			AddAddr{AddrID: 5, Addr: v4, HasPort: true, HMAC: 0x54953fe27e82d961}},
		{"add_addr/v6", cat([]byte{30, 28, 0x30, 0x09}, v6b,
			[]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}),
			AddAddr{AddrID: 9, Addr: v6, HMAC: 0x0123456789abcdef}},
		{"add_addr/v6-port", cat([]byte{30, 30, 0x30, 0x09}, v6b, []byte{0x1f, 0x90},
			[]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}),
			AddAddr{AddrID: 9, Addr: v6, HasPort: true, Port: 8080, HMAC: 0x0123456789abcdef}},
		{"add_addr/echo-v4", []byte{30, 8, 0x31, 0x05, 10, 0, 2, 1},
			AddAddr{Echo: true, AddrID: 5, Addr: v4}},
		{"add_addr/echo-v4-port", []byte{30, 10, 0x31, 0x05, 10, 0, 2, 1, 0x27, 0x74},
			AddAddr{Echo: true, AddrID: 5, Addr: v4, HasPort: true, Port: 10100}},
		{"add_addr/echo-v6", cat([]byte{30, 20, 0x31, 0x09}, v6b),
			AddAddr{Echo: true, AddrID: 9, Addr: v6}},
		{"add_addr/echo-v6-port", cat([]byte{30, 22, 0x31, 0x09}, v6b, []byte{0x1f, 0x90}),
			AddAddr{Echo: true, AddrID: 9, Addr: v6, HasPort: true, Port: 8080}},

		// REMOVE_ADDR: 30, 3+n, 0x40, IDs
		{"remove_addr/one", []byte{30, 4, 0x40, 0x05}, RemoveAddr{IDs: []uint8{5}}},
		{"remove_addr/three", []byte{30, 6, 0x40, 1, 2, 3}, RemoveAddr{IDs: []uint8{1, 2, 3}}},
		{"remove_addr/max", []byte{30, 11, 0x40, 0, 1, 2, 3, 4, 5, 254, 255},
			RemoveAddr{IDs: []uint8{0, 1, 2, 3, 4, 5, 254, 255}}},

		// MP_PRIO: 30, 3, 0x50|B
		{"mp_prio/regular", []byte{30, 3, 0x50}, MPPrio{}},
		{"mp_prio/backup", []byte{30, 3, 0x51}, MPPrio{Backup: true}},

		// MP_FAIL: 30, 12, 0x60, 0, DSN
		{"mp_fail", []byte{30, 12, 0x60, 0x00,
			0xf5, 0xa1, 0x01, 0xd3, 0xd2, 0x9d, 0x6f, 0x73},
			MPFail{DSN: 0xf5a101d3d29d6f73}},

		// MP_FASTCLOSE: 30, 12, 0x70, 0, receiver's key
		{"mp_fastclose", []byte{30, 12, 0x70, 0x00,
			0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe},
			MPFastclose{ReceiverKey: keyB}},

		// MP_TCPRST: 30, 4, 0x80|UVWT, reason
		{"mp_tcprst/unspecified", []byte{30, 4, 0x80, 0x00}, MPTCPRst{Reason: RstEUnspec}},
		{"mp_tcprst/transient-resource", []byte{30, 4, 0x81, 0x02},
			MPTCPRst{Flags: RstFlagTransient, Reason: RstEResource}},
		{"mp_tcprst/all-flags-middlebox", []byte{30, 4, 0x8f, 0x06},
			MPTCPRst{Flags: 0x0f, Reason: RstEMiddlebox}},
	}...)
	return v
}

// dssVectors returns one DSS vector for each of the 32 flag combinations,
// without and with the 2-byte checksum. The 4-byte data ACK and DSN use values
// different from the low halves of the 8-byte ones so a parser that reads the
// wrong width fails.
func dssVectors() []Vector {
	const (
		ack64 = 0x0102030405060708
		ack32 = 0xa1a2a3a4
		dsn64 = 0x1112131415161718
		dsn32 = 0xb1b2b3b4
		ssn   = 0xc1c2c3c4
		dlen  = 0x05dc
		csum  = 0xbeef
	)
	var v []Vector
	for _, withCsum := range []bool{false, true} {
		for flags := range uint8(32) {
			d := DSS{
				DataFIN:     flags&0x10 != 0,
				DSN64:       flags&0x08 != 0,
				HasMap:      flags&0x04 != 0,
				Ack64:       flags&0x02 != 0,
				HasAck:      flags&0x01 != 0,
				HasChecksum: withCsum,
			}
			body := []byte{0x20, flags}
			if d.HasAck {
				if d.Ack64 {
					d.DataAck = ack64
					body = append(body, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08)
				} else {
					d.DataAck = ack32
					body = append(body, 0xa1, 0xa2, 0xa3, 0xa4)
				}
			}
			if d.HasMap {
				if d.DSN64 {
					d.DSN = dsn64
					body = append(body, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18)
				} else {
					d.DSN = dsn32
					body = append(body, 0xb1, 0xb2, 0xb3, 0xb4)
				}
				d.SSN, d.DataLen = ssn, dlen
				body = append(body, 0xc1, 0xc2, 0xc3, 0xc4, 0x05, 0xdc)
			}
			if withCsum {
				d.Checksum = csum
				body = append(body, 0xbe, 0xef)
			}
			name := fmt.Sprintf("dss/F%d-m%d-M%d-a%d-A%d",
				flags>>4&1, flags>>3&1, flags>>2&1, flags>>1&1, flags&1)
			if withCsum {
				name += "-csum"
			}
			v = append(v, Vector{Name: name, Bytes: append([]byte{30, byte(2 + len(body))}, body...), Option: d})
		}
	}
	return v
}

// MalformedVectors returns a fresh table of MPTCP options that Parse must
// reject (Option is nil in each): lengths the kernel does not accept for the
// subtype, MP_CAPABLE versions and flags it ignores, unknown subtypes and
// truncated buffers. It is the negative half of Vectors for other parsers.
func MalformedVectors() []Vector {
	return []Vector{
		{Name: "short/empty", Bytes: []byte{}},
		{Name: "short/kind-only", Bytes: []byte{30}},
		{Name: "short/no-subtype", Bytes: []byte{30, 2}},
		{Name: "length/0", Bytes: []byte{30, 0, 0x20, 0x00}},
		{Name: "length/1", Bytes: []byte{30, 1, 0x20, 0x00}},
		{Name: "length/past-end", Bytes: []byte{30, 8, 0x20, 0x01, 0, 0, 0}},
		{Name: "kind/not-mptcp", Bytes: []byte{29, 4, 0x01, 0x01}},
		{Name: "subtype/9", Bytes: []byte{30, 4, 0x90, 0x00}},
		{Name: "subtype/15-experimental", Bytes: []byte{30, 4, 0xf0, 0x00}},
		{Name: "mp_capable/length-5", Bytes: []byte{30, 5, 0x01, 0x01, 0}},
		{Name: "mp_capable/length-8", Bytes: []byte{30, 8, 0x01, 0x01, 0, 0, 0, 0}},
		{Name: "mp_capable/syn-version0", Bytes: []byte{30, 4, 0x00, 0x01}},
		{Name: "mp_capable/synack-version2", Bytes: []byte{30, 12, 0x02, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}},
		{Name: "mp_capable/syn-no-H", Bytes: []byte{30, 4, 0x01, 0x00}},
		{Name: "mp_capable/syn-B", Bytes: []byte{30, 4, 0x01, 0x41}},
		{Name: "mp_capable/syn-D", Bytes: []byte{30, 4, 0x01, 0x11}},
		{Name: "mp_capable/syn-G", Bytes: []byte{30, 4, 0x01, 0x03}},
		{Name: "mp_join/length-13", Bytes: append([]byte{30, 13, 0x10, 0x05}, make([]byte, 9)...)},
		{Name: "mp_join/length-20", Bytes: append([]byte{30, 20, 0x10, 0x05}, make([]byte, 16)...)},
		{Name: "dss/length-3", Bytes: []byte{30, 3, 0x20}},
		{Name: "dss/ack32-length-11", Bytes: append([]byte{30, 11, 0x20, 0x01}, make([]byte, 7)...)},
		{Name: "dss/ack64-as-ack32", Bytes: append([]byte{30, 8, 0x20, 0x03}, make([]byte, 4)...)},
		{Name: "dss/map64-as-map32", Bytes: append([]byte{30, 14, 0x20, 0x0c}, make([]byte, 10)...)},
		{Name: "dss/full-plus-2", Bytes: append([]byte{30, 30, 0x20, 0x0f}, make([]byte, 26)...)},
		{Name: "add_addr/v4-echo-length", Bytes: []byte{30, 8, 0x30, 0x05, 10, 0, 2, 1}},
		{Name: "add_addr/echo-v4-hmac-length", Bytes: append([]byte{30, 16, 0x31, 0x05}, make([]byte, 12)...)},
		{Name: "add_addr/length-17", Bytes: append([]byte{30, 17, 0x30, 0x05}, make([]byte, 13)...)},
		{Name: "remove_addr/empty", Bytes: []byte{30, 3, 0x40}},
		{Name: "remove_addr/nine", Bytes: []byte{30, 12, 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{Name: "mp_prio/v0-with-id", Bytes: []byte{30, 4, 0x51, 0x05}},
		{Name: "mp_fail/length-11", Bytes: append([]byte{30, 11, 0x60, 0}, make([]byte, 7)...)},
		{Name: "mp_fastclose/length-13", Bytes: append([]byte{30, 13, 0x70, 0}, make([]byte, 9)...)},
		{Name: "mp_tcprst/length-3", Bytes: []byte{30, 3, 0x81}},
		{Name: "mp_tcprst/length-5", Bytes: []byte{30, 5, 0x81, 0x02, 0}},
	}
}
