package convert

import (
	"bytes"
	"time"
)

// maxEcho is the longest echo that fits in an Error TLV alone in a message: MaxLen less the
// fixed header, the TLV's type, length, code and the zero byte before the echo.
const maxEcho = MaxLen - HeaderLen - 4

// DefaultRetryAfter is the delay a Value of zero stands for in Resource Exceeded and Network
// Failure (§5.2.8: "at least 30 seconds").
const DefaultRetryAfter = 30 * time.Second

// ErrorTLV is the Error TLV (§5.2.8), with which a converter (or a peer) reports why it cannot
// serve a message; a Client that receives one resets the connection.
//
//	Type=30 | Length | Error Code (8) | Value (8)
//	(optional) more Value, zero-padded to a 32-bit boundary
//
// Value is everything after the code, padding included, as the TLV carried it: at least the
// one byte of the first word. What it means depends on Code; the accessors read it:
// Versions (Unsupported Version), Data (the echo of Malformed and Unsupported Message, the
// cookie of Missing Cookie), Kinds (Unsupported TCP Option), RetryAfter (Resource Exceeded,
// Network Failure), ICMPCode (Destination Unreachable). Not Authorized and Connection Reset
// have a zero Value: ErrorTLV{Code: c} encodes it. Codes this package does not know are kept.
type ErrorTLV struct {
	Code  ErrorCode
	Value []byte
}

var _ TLV = ErrorTLV{}

// NewEchoError returns a Malformed or Unsupported Message error echoing received, the message
// at fault, after one zero byte so that the echo keeps its 32-bit alignment (§5.2.8). The
// echo is cut to 1012 bytes, what a message holding only this TLV has room for (the RFC does
// not say how to echo a message of the maximal length).
func NewEchoError(code ErrorCode, received []byte) ErrorTLV {
	received = received[:min(len(received), maxEcho)]
	return ErrorTLV{Code: code, Value: append([]byte{0}, received...)}
}

// NewMissingCookieError returns a Missing Cookie error carrying the cookie the Client should
// send from now on: one zero byte, then the cookie (§5.2.8). §5.2.7 speaks of a message with
// "an Error TLV set to Missing Cookie and the computed Cookie"; this package reads that as
// §5.2.8 spells it out, the cookie inside the Error TLV, not a Cookie TLV beside it.
func NewMissingCookieError(cookie []byte) ErrorTLV {
	return ErrorTLV{Code: CodeMissingCookie, Value: append([]byte{0}, cookie...)}
}

// Type returns TypeError.
func (ErrorTLV) Type() Type { return TypeError }

// Len returns the code and value, after type and length, padded to a multiple of 4.
func (e ErrorTLV) Len() int { return pad4(3 + len(e.Value)) }

// Append appends the encoded TLV to b.
func (e ErrorTLV) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeError, e.Len())
	b = append(b, byte(e.Code))
	b = append(b, e.Value...)
	return appendPadding(b, 3+len(e.Value))
}

func (ErrorTLV) check() error { return nil }

// Versions returns the versions an Unsupported Version error lists, one byte each, the
// zero padding dropped (version 0 is reserved).
func (e ErrorTLV) Versions() []uint8 { return bytes.TrimRight(e.Value, "\x00") }

// Data returns the Value after its first byte: the echoed message of Malformed and
// Unsupported Message, the cookie of Missing Cookie (padding included: the RFC gives no
// length).
func (e ErrorTLV) Data() []byte {
	if len(e.Value) < 1 {
		return nil
	}
	return e.Value[1:]
}

// Kinds returns the TCP option kinds an Unsupported TCP Option error lists, the zero padding
// dropped (kind 0 is never an unsupported option).
func (e ErrorTLV) Kinds() []uint8 { return bytes.TrimRight(e.Value, "\x00") }

// RetryAfter returns how long the Client should wait before asking the converter again after
// Resource Exceeded or Network Failure: the first Value byte in seconds, DefaultRetryAfter
// when it is zero. The RFC does not give the field's width; one byte, the Value in the TLV's
// first word, is what this package sends and reads.
func (e ErrorTLV) RetryAfter() time.Duration {
	if len(e.Value) == 0 || e.Value[0] == 0 {
		return DefaultRetryAfter
	}
	return time.Duration(e.Value[0]) * time.Second
}

// ICMPCode returns the Code of the ICMP message a Destination Unreachable error echoes.
func (e ErrorTLV) ICMPCode() uint8 {
	if len(e.Value) == 0 {
		return 0
	}
	return e.Value[0]
}

// parseErrorTLV decodes an Error TLV; any code is accepted.
func parseErrorTLV(b []byte) (ErrorTLV, error) {
	return ErrorTLV{Code: ErrorCode(b[2]), Value: b[3:]}, nil
}
