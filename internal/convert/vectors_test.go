package convert

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// h decodes hex bytes written with spaces and line breaks between them.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// vector is a message and its bytes, written by hand from RFC 8803's figures. msg is what
// Parse returns for wire, so the round trip is exact both ways.
type vector struct {
	name string
	msg  Message
	wire []byte
}

// Fields used in several vectors.
var (
	// An 8-byte cookie (§5.2.7).
	testCookie = h("c0 ff ee 00 11 22 33 44")
	// A Linux SYN+ACK's options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
	testSynAckOptions = h("02 04 05 b4  04 02 08 0a  00 00 00 01  00 00 00 02  01 03 03 07")
)

func vectors() []vector {
	return []vector{{
		// §5.1, "The Convert Fixed Header": a header alone, Total Length 1 word. What a
		// converter sends in its SYN+ACK to confirm a Base Connect.
		name: "header only",
		msg:  Message{},
		wire: h("01 01 00 00"),
	}, {
		// §5.2.3, "The Info TLV": Type=0x1, Length=1, Zero.
		name: "info",
		msg:  Message{TLVs: []TLV{Info{}}},
		wire: h("01 02 00 00  01 01 00 00"),
	}, {
		// §5.2.4, "The Supported TCP Extensions TLV", with the RFC's example: a converter for
		// Multipath TCP lists kind 30, then 3 bytes of zero padding.
		name: "supported MPTCP",
		msg:  Message{TLVs: []TLV{SupportedTCPExtensions{Kinds: []uint8{30}}}},
		wire: h("01 03 00 00  15 02 00 00  1e 00 00 00"),
	}, {
		// §5.2.4: four kinds fill the word, no padding (window scale, SACK permitted,
		// timestamps, MPTCP).
		name: "supported four kinds",
		msg:  Message{TLVs: []TLV{SupportedTCPExtensions{Kinds: []uint8{3, 4, 8, 30}}}},
		wire: h("01 03 00 00  15 02 00 00  03 04 08 1e"),
	}, {
		// §5.2.4: a converter that converts nothing: the TLV is its first word alone.
		name: "supported none",
		msg:  Message{TLVs: []TLV{SupportedTCPExtensions{}}},
		wire: h("01 02 00 00  15 01 00 00"),
	}, {
		// §5.2.5, "The Base Connect TLV": Type=0xA, Length=5, port 443, 192.0.2.1 as the
		// IPv4-mapped IPv6 address ::ffff:192.0.2.1.
		name: "base connect IPv4",
		msg:  Message{TLVs: []TLV{Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443")}}},
		wire: h(`01 06 00 00
			0a 05 01 bb
			00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01`),
	}, {
		// §5.2.5, "The Base Connect TLV" with an IPv6 address, port 80.
		name: "base connect IPv6",
		msg:  Message{TLVs: []TLV{Connect{Remote: netip.MustParseAddrPort("[2001:db8::10]:80")}}},
		wire: h(`01 06 00 00
			0a 05 00 50
			20 01 0d b8  00 00 00 00  00 00 00 00  00 00 00 10`),
	}, {
		// §5.2.5, "The Extended Connect TLV" and "The TCP Options Field": SACK permitted and
		// a TCP Fast Open cookie request (kind 34, length 2: the converter makes its own
		// value). 4 bytes of options, no padding.
		name: "extended connect",
		msg: Message{TLVs: []TLV{Connect{
			Remote:     netip.MustParseAddrPort("198.51.100.7:8080"),
			TCPOptions: h("04 02 22 02"),
		}}},
		wire: h(`01 07 00 00
			0a 06 1f 90
			00 00 00 00  00 00 00 00  00 00 ff ff  c6 33 64 07
			04 02 22 02`),
	}, {
		// §5.2.5: a TCP Fast Open option with an 8-byte cookie for the server (10 bytes,
		// copied as is into the SYN), padded with 2 zero bytes.
		name: "extended connect padded",
		msg: Message{TLVs: []TLV{Connect{
			Remote:     netip.MustParseAddrPort("[2001:db8::10]:443"),
			TCPOptions: h("22 0a c0 ff ee 00 11 22 33 44"),
		}}},
		wire: h(`01 09 00 00
			0a 08 01 bb
			20 01 0d b8  00 00 00 00  00 00 00 00  00 00 00 10
			22 0a c0 ff  ee 00 11 22  33 44 00 00`),
	}, {
		// §5.2.5 and §5.2.7: a Client's SYN payload with a Connect and a Cookie.
		name: "connect with cookie",
		msg: Message{TLVs: []TLV{
			Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443")},
			Cookie{Opaque: testCookie},
		}},
		wire: h(`01 09 00 00
			0a 05 01 bb
			00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01
			16 03 00 00
			c0 ff ee 00  11 22 33 44`),
	}, {
		// §5.2.6, "The Extended TCP Header TLV": Type=0x14, Length=6, Unassigned, then the
		// 20 bytes of the SYN+ACK's options.
		name: "extended TCP header",
		msg:  Message{TLVs: []TLV{ExtendedTCPHeader{Options: testSynAckOptions}}},
		wire: h(`01 07 00 00
			14 06 00 00
			02 04 05 b4  04 02 08 0a  00 00 00 01  00 00 00 02  01 03 03 07`),
	}, {
		// §5.2.8, "The Error TLV": Unsupported Version (0) listing version 1.
		name: "error unsupported version",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeUnsupportedVersion, Value: []byte{1}}}},
		wire: h("01 02 00 00  1e 01 00 01"),
	}, {
		// §5.2.8: Malformed Message (1) echoing the 4-byte message "01 01 00 00" after
		// one zero byte, so the echo starts on a word.
		name: "error malformed echo",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeMalformedMessage, Value: h("00  01 01 00 00")}}},
		wire: h("01 03 00 00  1e 02 01 00  01 01 00 00"),
	}, {
		// §5.2.8: Missing Cookie (3): a zero byte, then the cookie to use.
		name: "error missing cookie",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeMissingCookie, Value: h("00  c0 ff ee 00 11 22 33 44")}}},
		wire: h("01 04 00 00  1e 03 03 00  c0 ff ee 00  11 22 33 44"),
	}, {
		// §5.2.8: Not Authorized (32), Value zero.
		name: "error not authorized",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeNotAuthorized, Value: []byte{0}}}},
		wire: h("01 02 00 00  1e 01 20 00"),
	}, {
		// §5.2.8: Unsupported TCP Option (33) listing kinds 34 and 29, padded to the word.
		name: "error unsupported TCP options",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeUnsupportedTCPOption, Value: h("22 1d 00 00 00")}}},
		wire: h("01 03 00 00  1e 02 21 22  1d 00 00 00"),
	}, {
		// §5.2.8: Resource Exceeded (64), retry after 60 seconds.
		name: "error resource exceeded",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeResourceExceeded, Value: []byte{60}}}},
		wire: h("01 02 00 00  1e 01 40 3c"),
	}, {
		// §5.2.8: Network Failure (65), Value zero: the default delay.
		name: "error network failure",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeNetworkFailure, Value: []byte{0}}}},
		wire: h("01 02 00 00  1e 01 41 00"),
	}, {
		// §5.2.8: Connection Reset (96), Value zero.
		name: "error connection reset",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeConnectionReset, Value: []byte{0}}}},
		wire: h("01 02 00 00  1e 01 60 00"),
	}, {
		// §5.2.8: Destination Unreachable (97) echoing ICMP code 3 (port unreachable).
		name: "error destination unreachable",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: CodeDestinationUnreachable, Value: []byte{3}}}},
		wire: h("01 02 00 00  1e 01 61 03"),
	}, {
		// §5.2.8: a private-use code (200); codes this package does not know are kept, with
		// their Value.
		name: "error private code",
		msg:  Message{TLVs: []TLV{ErrorTLV{Code: 200, Value: h("aa bb cc dd ee")}}},
		wire: h("01 03 00 00  1e 02 c8 aa  bb cc dd ee"),
	}, {
		// §5.1: the longest message, 255 words: a Cookie TLV of 254 words.
		name: "maximal length",
		msg:  Message{TLVs: []TLV{Cookie{Opaque: make([]byte, MaxLen-8)}}},
		wire: append(h("01 ff 00 00  16 fe 00 00"), make([]byte, MaxLen-8)...),
	}}
}

func TestVectorsEncode(t *testing.T) {
	for _, v := range vectors() {
		got, err := v.msg.Marshal()
		if err != nil {
			t.Errorf("%s: Marshal: %v", v.name, err)
			continue
		}
		if string(got) != string(v.wire) {
			t.Errorf("%s: Marshal =\n% x\nwant\n% x", v.name, got, v.wire)
		}
		if v.msg.Len() != len(v.wire) {
			t.Errorf("%s: Len = %d, want %d", v.name, v.msg.Len(), len(v.wire))
		}
		for _, tlv := range v.msg.TLVs {
			if n := len(tlv.Append(nil)); n != tlv.Len() || n%4 != 0 {
				t.Errorf("%s: %v TLV Append gives %d bytes, Len %d", v.name, tlv.Type(), n, tlv.Len())
			}
		}
		// Append appends.
		pre := []byte("prefix")
		got, err = v.msg.Append(pre)
		if err != nil || string(got) != "prefix"+string(v.wire) {
			t.Errorf("%s: Append after a prefix = % x, %v", v.name, got, err)
		}
	}
}

func TestVectorsDecode(t *testing.T) {
	for _, v := range vectors() {
		trailer := []byte("user data")
		m, n, err := Parse(append(append([]byte(nil), v.wire...), trailer...))
		if err != nil {
			t.Errorf("%s: Parse: %v", v.name, err)
			continue
		}
		if n != len(v.wire) {
			t.Errorf("%s: Parse consumed %d, want %d", v.name, n, len(v.wire))
		}
		if !equalMessages(m, v.msg) {
			t.Errorf("%s: Parse = %#v\nwant %#v", v.name, m, v.msg)
		}
	}
}
