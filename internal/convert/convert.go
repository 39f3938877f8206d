// Package convert encodes and decodes the messages of the 0-RTT TCP Convert Protocol (RFC 8803 §5).
//
// A Convert message opens the bytestream in each direction between a Client and a Transport
// Converter: a 4-byte fixed header (§5.1) whose Total Length counts the message in 32-bit
// words, followed by TLVs (§5.2), each a multiple of 4 bytes long. Whatever follows the
// message in the bytestream is user data.
//
// Parsing is strict about structure and never trusts a length it has not checked: every
// failure is a *ParseError carrying the Error TLV code (§5.2.8) the receiver answers with.
// Fields the RFC calls Unassigned or Zero are ignored on receipt and written as zero; TLV
// padding is written as zero. Parse never allocates more than one copy of the message
// (at most MaxLen bytes) plus the decoded TLVs, and never panics.
//
// The package knows nothing of sockets beyond io.Reader: the converter (mptcpd --convert) and
// the client (--convert-via) decide what to do with a message, e.g. answer a Connect whose
// TCP options they do not support with Unsupported TCP Option.
package convert

import "fmt"

// Version is the Convert Protocol version this package speaks (§5.1; version 0 is reserved).
const Version = 1

const (
	// HeaderLen is the length of the fixed header (§5.1).
	HeaderLen = 4
	// MaxLen is the longest Convert message: Total Length is an 8-bit count of 32-bit words
	// (§5.1), so 255 words.
	MaxLen = 255 * 4
	// maxTLVLen is the longest TLV that fits in a message beside the fixed header.
	maxTLVLen = MaxLen - HeaderLen
	// maxTCPOptions is the TCP option space of a SYN or SYN+ACK: 60-byte header less 20 fixed.
	maxTCPOptions = 40
)

// Type is a Convert TLV type (§5.2.2, IANA "Convert TLVs").
type Type uint8

// The TLV types of RFC 8803 §5.2.2. Type 0 is reserved.
const (
	TypeInfo                   Type = 1
	TypeConnect                Type = 10
	TypeExtendedTCPHeader      Type = 20
	TypeSupportedTCPExtensions Type = 21
	TypeCookie                 Type = 22
	TypeError                  Type = 30
)

// String returns the TLV's name as RFC 8803 writes it, without "TLV".
func (t Type) String() string {
	switch t {
	case TypeInfo:
		return "Info"
	case TypeConnect:
		return "Connect"
	case TypeExtendedTCPHeader:
		return "Extended TCP Header"
	case TypeSupportedTCPExtensions:
		return "Supported TCP Extensions"
	case TypeCookie:
		return "Cookie"
	case TypeError:
		return "Error"
	default:
		return fmt.Sprintf("type %d", uint8(t))
	}
}

// ErrorCode is the code of an Error TLV (§5.2.8, IANA "Convert Errors"). Its range tells who
// is at fault: 0-31 the message, 32-63 the Client, 64-95 the Transport Converter, 96-127 the
// destination server; 192-255 are for private use.
type ErrorCode uint8

// The error codes of RFC 8803 §5.2.8.
const (
	// CodeUnsupportedVersion: the fixed header's version is not supported. The value lists
	// the versions the sender supports, one byte each.
	CodeUnsupportedVersion ErrorCode = 0
	// CodeMalformedMessage: the message could not be parsed or validated (including a
	// Connect TLV with a multicast, broadcast or loopback address). The value echoes the
	// message after one zero byte.
	CodeMalformedMessage ErrorCode = 1
	// CodeUnsupportedMessage: a TLV type the receiver does not support. The value echoes the
	// message after one zero byte.
	CodeUnsupportedMessage ErrorCode = 2
	// CodeMissingCookie: the converter requires a Cookie TLV and got none. The value is one
	// zero byte and then the cookie the client should use.
	CodeMissingCookie ErrorCode = 3
	// CodeNotAuthorized: the converter refuses the client (including an invalid Cookie).
	CodeNotAuthorized ErrorCode = 32
	// CodeUnsupportedTCPOption: the Connect TLV asked for TCP options the converter cannot
	// use. The value lists their kinds.
	CodeUnsupportedTCPOption ErrorCode = 33
	// CodeResourceExceeded: the converter lacks the resources for the connection. The value
	// may suggest a delay in seconds before trying again.
	CodeResourceExceeded ErrorCode = 64
	// CodeNetworkFailure: the converter cannot forward the connection. The value may suggest
	// a delay in seconds before trying again.
	CodeNetworkFailure ErrorCode = 65
	// CodeConnectionReset: the destination answered with a RST.
	CodeConnectionReset ErrorCode = 96
	// CodeDestinationUnreachable: an ICMP destination unreachable came back; the value is its
	// Code field.
	CodeDestinationUnreachable ErrorCode = 97
)

// String returns the error's name as RFC 8803 and the IANA registry write it.
func (c ErrorCode) String() string {
	switch c {
	case CodeUnsupportedVersion:
		return "Unsupported Version"
	case CodeMalformedMessage:
		return "Malformed Message"
	case CodeUnsupportedMessage:
		return "Unsupported Message"
	case CodeMissingCookie:
		return "Missing Cookie"
	case CodeNotAuthorized:
		return "Not Authorized"
	case CodeUnsupportedTCPOption:
		return "Unsupported TCP Option"
	case CodeResourceExceeded:
		return "Resource Exceeded"
	case CodeNetworkFailure:
		return "Network Failure"
	case CodeConnectionReset:
		return "Connection Reset"
	case CodeDestinationUnreachable:
		return "Destination Unreachable"
	default:
		return fmt.Sprintf("error code %d", uint8(c))
	}
}

// TLV is one Convert TLV (§5.2.1). The concrete types are the value types Info, Connect,
// ExtendedTCPHeader, SupportedTCPExtensions, Cookie and ErrorTLV.
type TLV interface {
	// Type is the TLV's type.
	Type() Type
	// Len is the TLV's length on the wire in bytes: type and length bytes and padding
	// included, so a multiple of 4.
	Len() int
	// Append appends the encoded TLV, exactly Len bytes, to b. Unassigned and Zero fields
	// and padding are written as zero. It does not check the TLV: Message.Append does.
	Append(b []byte) []byte
	// check reports why the TLV could not be sent: the rules Parse enforces on receipt.
	check() error
}

// Find returns the first TLV of type T in m.
func Find[T TLV](m Message) (T, bool) {
	for _, t := range m.TLVs {
		if v, ok := t.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// pad4 rounds n up to a multiple of 4, the TLV alignment (§5.2.1).
func pad4(n int) int { return (n + 3) &^ 3 }

// appendTLVHeader appends the type and the length in 32-bit words of a TLV of n bytes
// (already a multiple of 4).
func appendTLVHeader(b []byte, t Type, n int) []byte {
	return append(b, byte(t), byte(n/4))
}

// appendPadding appends the zero bytes that bring a TLV of n bytes to a 32-bit boundary.
func appendPadding(b []byte, n int) []byte {
	for range pad4(n) - n {
		b = append(b, 0)
	}
	return b
}
