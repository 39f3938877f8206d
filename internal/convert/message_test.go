package convert

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// malformedCase is an input Parse must refuse, with the code the converter answers and the
// offset of the fault.
type malformedCase struct {
	name   string
	in     []byte
	code   ErrorCode
	offset int
	eof    bool // wraps io.ErrUnexpectedEOF
}

// A Base Connect TLV to 192.0.2.1:443, for building inputs.
const connect4 = `0a 05 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01`

func malformedCases() []malformedCase {
	return []malformedCase{
		// §5.1: the fixed header.
		{name: "empty", in: nil, code: CodeMalformedMessage, offset: 0, eof: true},
		{name: "1 byte", in: h("01"), code: CodeMalformedMessage, offset: 1, eof: true},
		{name: "3 bytes", in: h("01 02 00"), code: CodeMalformedMessage, offset: 3, eof: true},
		{name: "version 0", in: h("00 01 00 00"), code: CodeUnsupportedVersion},
		{name: "version 2", in: h("02 02 00 00  01 01 00 00"), code: CodeUnsupportedVersion},
		{name: "version 255", in: h("ff 01 00 00"), code: CodeUnsupportedVersion},
		{name: "total length 0", in: h("01 00 00 00"), code: CodeMalformedMessage, offset: 1},
		{name: "total length 0 with TLV", in: h("01 00 00 00  01 01 00 00"), code: CodeMalformedMessage, offset: 1},
		{name: "total length past the data", in: h("01 03 00 00  01 01 00 00"), code: CodeMalformedMessage, offset: 8, eof: true},
		{name: "total length 255, 8 bytes", in: h("01 ff 00 00  01 01 00 00"), code: CodeMalformedMessage, offset: 8, eof: true},

		// §5.2.1: generic TLV lengths.
		{name: "TLV length 0", in: h("01 02 00 00  01 00 00 00"), code: CodeMalformedMessage, offset: 5},
		{name: "TLV overruns message", in: h("01 02 00 00  16 02 00 00  aa bb cc dd"), code: CodeMalformedMessage, offset: 5},
		{name: "second TLV overruns", in: h("01 03 00 00  01 01 00 00  16 02 00 00"), code: CodeMalformedMessage, offset: 9},
		{name: "TLV length 255", in: h("01 02 00 00  1e ff 00 00"), code: CodeMalformedMessage, offset: 5},
		{name: "two Info", in: h("01 03 00 00  01 01 00 00  01 01 00 00"), code: CodeMalformedMessage, offset: 8},
		{name: "two Error", in: h("01 03 00 00  1e 01 20 00  1e 01 40 00"), code: CodeMalformedMessage, offset: 8},

		// §5.2.2: reserved and unknown types.
		{name: "type 0", in: h("01 02 00 00  00 01 00 00"), code: CodeUnsupportedMessage, offset: 4},
		{name: "type 2", in: h("01 02 00 00  02 01 00 00"), code: CodeUnsupportedMessage, offset: 4},
		{name: "private type 200", in: h("01 03 00 00  c8 02 00 00  aa bb cc dd"), code: CodeUnsupportedMessage, offset: 4},
		{name: "unknown after Info", in: h("01 03 00 00  01 01 00 00  1f 01 00 00"), code: CodeUnsupportedMessage, offset: 8},

		// §5.2.3: the Info TLV is one word.
		{name: "Info 2 words", in: h("01 03 00 00  01 02 00 00  00 00 00 00"), code: CodeMalformedMessage, offset: 5},

		// §5.2.4: Supported TCP Extensions.
		{name: "supported NOP", in: h("01 03 00 00  15 02 00 00  1e 01 00 00"), code: CodeMalformedMessage, offset: 9},
		{name: "supported MSS", in: h("01 03 00 00  15 02 00 00  02 00 00 00"), code: CodeMalformedMessage, offset: 8},
		{name: "supported zero inside", in: h("01 03 00 00  15 02 00 00  1e 00 22 00"), code: CodeMalformedMessage, offset: 9},
		{name: "supported padding word", in: h("01 04 00 00  15 03 00 00  1e 00 00 00  00 00 00 00"), code: CodeMalformedMessage, offset: 9},
		{name: "supported zero word", in: h("01 03 00 00  15 02 00 00  00 00 00 00"), code: CodeMalformedMessage, offset: 8},

		// §5.2.5: Connect.
		{name: "connect 1 word", in: h("01 02 00 00  0a 01 01 bb"), code: CodeMalformedMessage, offset: 5},
		{name: "connect 4 words", in: h("01 05 00 00  0a 04 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff"), code: CodeMalformedMessage, offset: 5},
		{name: "connect port 0", in: h("01 06 00 00  0a 05 00 00  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01"), code: CodeMalformedMessage, offset: 6},
		{name: "connect NOP option", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  01 04 02 00"), code: CodeMalformedMessage, offset: 24},
		{name: "connect NOP after option", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  04 02 01 00"), code: CodeMalformedMessage, offset: 26},
		{name: "connect option length 1", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  04 01 00 00"), code: CodeMalformedMessage, offset: 24},
		{name: "connect option overruns", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  1e 0c 00 81"), code: CodeMalformedMessage, offset: 24},
		{name: "connect option without length", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  1e 03 00 04"), code: CodeMalformedMessage, offset: 27},
		{name: "connect padding word", in: h("01 08 00 00  0a 07 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  04 02 00 00  00 00 00 00"), code: CodeMalformedMessage, offset: 26},
		{name: "connect all padding", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  00 00 00 00"), code: CodeMalformedMessage, offset: 24},
		{name: "connect byte after padding", in: h("01 07 00 00  0a 06 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01  04 02 00 05"), code: CodeMalformedMessage, offset: 27},
		{name: "connect 44 bytes of options", in: append(h("01 11 00 00  0a 10 01 bb  00 00 00 00  00 00 00 00  00 00 ff ff  c0 00 02 01"),
			h("fe 0a 00 00 00 00 00 00 00 00  fe 0a 00 00 00 00 00 00 00 00  fe 0a 00 00 00 00 00 00 00 00  fe 0a 00 00 00 00 00 00 00 00  fd 04 00 00")...),
			code: CodeMalformedMessage, offset: 64},

		// §5.2.6: more TCP options than a TCP header holds.
		{name: "extended TCP header 44 bytes", in: append(h("01 0d 00 00  14 0c 00 00"), make([]byte, 44)...), code: CodeMalformedMessage, offset: 5},

		// §5.2.7: an empty cookie.
		{name: "empty cookie", in: h("01 02 00 00  16 01 00 00"), code: CodeMalformedMessage, offset: 5},
	}
}

func TestParseMalformed(t *testing.T) {
	for _, c := range malformedCases() {
		m, n, err := Parse(c.in)
		pe, ok := errors.AsType[*ParseError](err)
		if !ok {
			t.Errorf("%s: Parse(% x) = %v, %d, %v; want a *ParseError", c.name, c.in, m, n, err)
			continue
		}
		if n != 0 || m.TLVs != nil {
			t.Errorf("%s: Parse returned %v, %d with an error", c.name, m, n)
		}
		if pe.Code != c.code || pe.Offset != c.offset || errors.Is(err, io.ErrUnexpectedEOF) != c.eof {
			t.Errorf("%s: Parse(% x) = %v (code %d, offset %d, eof %v); want code %d, offset %d, eof %v",
				c.name, c.in, err, pe.Code, pe.Offset, errors.Is(err, io.ErrUnexpectedEOF), c.code, c.offset, c.eof)
		}
		if len(pe.Received) > MaxLen || !bytes.HasPrefix(c.in, pe.Received) {
			t.Errorf("%s: Received = % x, not a prefix of the input", c.name, pe.Received)
		}
		if !strings.HasPrefix(err.Error(), "convert: ") {
			t.Errorf("%s: error %q", c.name, err)
		}
	}
}

// TestParseMalformedReceived checks that Received is the whole message (for the echo) when the
// fault is in a TLV, and that it does not alias the input.
func TestParseMalformedReceived(t *testing.T) {
	in := h("01 03 00 00  01 01 00 00  1f 01 00 00  ff ff")
	_, _, err := Parse(in)
	pe, ok := errors.AsType[*ParseError](err)
	if !ok || !bytes.Equal(pe.Received, in[:12]) {
		t.Fatalf("Parse = %v", err)
	}
	in[4] = 0xee
	if pe.Received[4] != 0x01 {
		t.Error("Received aliases the input")
	}
	want := h("1e 04 02 00  01 03 00 00  01 01 00 00  1f 01 00 00")
	if got := pe.Reply().Append(nil); !bytes.Equal(got, want) {
		t.Errorf("Reply = % x, want % x", got, want)
	}
}

// TestParsePrefixes checks that every cut of every vector fails as a truncation.
func TestParsePrefixes(t *testing.T) {
	for _, v := range vectors() {
		for i := range len(v.wire) {
			_, _, err := Parse(v.wire[:i])
			pe, ok := errors.AsType[*ParseError](err)
			if !ok || pe.Code != CodeMalformedMessage || !errors.Is(err, io.ErrUnexpectedEOF) || pe.Offset != i {
				t.Errorf("%s: Parse of %d of %d bytes = %v", v.name, i, len(v.wire), err)
			}
		}
	}
}

// TestParseIgnoresReserved checks that Unassigned and Zero fields are ignored on receipt and
// sent as zero (§5.1, §5.2.3, §5.2.4, §5.2.6, §5.2.7).
func TestParseIgnoresReserved(t *testing.T) {
	in := h(`01 09 12 34
		01 01 ff ff
		15 02 ab cd  1e 00 00 00
		14 02 01 01  02 04 05 b4
		16 03 80 00  c0 ff ee 00  11 22 33 44`)
	want := h(`01 09 00 00
		01 01 00 00
		15 02 00 00  1e 00 00 00
		14 02 00 00  02 04 05 b4
		16 03 00 00  c0 ff ee 00  11 22 33 44`)
	m, n, err := Parse(in)
	if err != nil || n != len(in) {
		t.Fatalf("Parse = %v, %d, %v", m, n, err)
	}
	got, err := m.Marshal()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("Marshal = % x, %v; want % x", got, err, want)
	}
}

func TestParseErrorReply(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want []byte
	}{
		// Unsupported Version lists version 1 (§5.2.8).
		{h("02 01 00 00"), h("1e 01 00 01")},
		// Malformed Message echoes what was received after a zero byte.
		{h("01 00 00 00"), h("1e 02 01 00  01 00 00 00")},
		{h("01 02"), h("1e 02 01 00  01 02 00 00")},
	} {
		_, _, err := Parse(c.in)
		pe, ok := errors.AsType[*ParseError](err)
		if !ok {
			t.Fatalf("Parse(% x) = %v", c.in, err)
		}
		if got := pe.Reply().Append(nil); !bytes.Equal(got, c.want) {
			t.Errorf("Parse(% x): Reply = % x, want % x", c.in, got, c.want)
		}
	}
	// An echo of the longest message is cut so that the reply is itself a valid message.
	in := append(h("01 ff 00 00  c8 fe 00 00"), make([]byte, MaxLen-8)...)
	_, _, err := Parse(in)
	pe, ok := errors.AsType[*ParseError](err)
	if !ok || pe.Code != CodeUnsupportedMessage {
		t.Fatalf("Parse = %v", err)
	}
	reply, err := Message{TLVs: []TLV{pe.Reply()}}.Marshal()
	if err != nil || len(reply) != MaxLen {
		t.Fatalf("reply: %d bytes, %v", len(reply), err)
	}
	m, _, err := Parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := Find[ErrorTLV](m)
	if !bytes.Equal(e.Data(), in[:MaxLen-8]) {
		t.Errorf("echo = % x...", e.Data()[:16])
	}
}

func TestAppendRefuses(t *testing.T) {
	ok := Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443")}
	for _, c := range []struct {
		name string
		msg  Message
		want error
	}{
		{"nil TLV", Message{TLVs: []TLV{nil}}, nil},
		{"two Connect", Message{TLVs: []TLV{ok, ok}}, nil},
		{"two Error", Message{TLVs: []TLV{ErrorTLV{}, ErrorTLV{Code: 1}}}, nil},
		{"too long", Message{TLVs: []TLV{Cookie{Opaque: make([]byte, MaxLen-7)}}}, ErrTooLong},
		{"too long in sum", Message{TLVs: []TLV{ok, Cookie{Opaque: make([]byte, MaxLen-8-20)}, Info{}}}, ErrTooLong},
		{"error value too long", Message{TLVs: []TLV{ErrorTLV{Value: make([]byte, MaxLen)}}}, ErrTooLong},
		{"connect no address", Message{TLVs: []TLV{Connect{}}}, nil},
		{"connect zone", Message{TLVs: []TLV{Connect{Remote: netip.MustParseAddrPort("[fe80::1%eth0]:443")}}}, nil},
		{"connect port 0", Message{TLVs: []TLV{Connect{Remote: netip.MustParseAddrPort("192.0.2.1:0")}}}, nil},
		{"connect NOP", Message{TLVs: []TLV{Connect{Remote: ok.Remote, TCPOptions: h("01 04 02")}}}, nil},
		{"connect padding", Message{TLVs: []TLV{Connect{Remote: ok.Remote, TCPOptions: h("04 02 00")}}}, nil},
		{"connect truncated option", Message{TLVs: []TLV{Connect{Remote: ok.Remote, TCPOptions: h("22 0a 01")}}}, nil},
		{"connect 42 bytes of options", Message{TLVs: []TLV{Connect{Remote: ok.Remote, TCPOptions: append(h("fe 2a"), make([]byte, 40)...)}}}, nil},
		{"supported MSS", Message{TLVs: []TLV{SupportedTCPExtensions{Kinds: []uint8{30, 2}}}}, nil},
		{"supported EOL", Message{TLVs: []TLV{SupportedTCPExtensions{Kinds: []uint8{0}}}}, nil},
		{"empty cookie", Message{TLVs: []TLV{Cookie{}}}, nil},
		{"extended TCP header 41 bytes", Message{TLVs: []TLV{ExtendedTCPHeader{Options: make([]byte, 41)}}}, nil},
	} {
		b, err := c.msg.Append([]byte("x"))
		if err == nil || string(b) != "x" {
			t.Errorf("%s: Append = % x, %v; want an error and b unchanged", c.name, b, err)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: Append error %v, want %v", c.name, err, c.want)
		}
	}
}

// TestRoundTrip checks that messages built from constructors parse back to the same TLVs,
// but for the documented canonical forms: IPv4 for an IPv4-mapped address, padding kept in
// Cookie, Extended TCP Header and Error values.
func TestRoundTrip(t *testing.T) {
	msg := Message{TLVs: []TLV{
		Connect{Remote: netip.MustParseAddrPort("[::ffff:192.0.2.1]:443"), TCPOptions: h("1e 04 01 81")},
		Cookie{Opaque: h("01 02 03 04 05")},
	}}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, n, err := Parse(b)
	if err != nil || n != len(b) {
		t.Fatalf("Parse = %v, %d, %v", m, n, err)
	}
	want := Message{TLVs: []TLV{
		Connect{Remote: netip.MustParseAddrPort("192.0.2.1:443"), TCPOptions: h("1e 04 01 81")},
		Cookie{Opaque: h("01 02 03 04 05 00 00 00")},
	}}
	if !equalMessages(m, want) {
		t.Errorf("Parse = %#v, want %#v", m, want)
	}
	b2, err := m.Marshal()
	if err != nil || !bytes.Equal(b, b2) {
		t.Errorf("second encoding % x, %v; first % x", b2, err, b)
	}
}
