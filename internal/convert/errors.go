package convert

import (
	"errors"
	"fmt"
)

// ErrTooLong is returned by Message.Append for a message longer than MaxLen bytes.
var ErrTooLong = errors.New("convert: message longer than 1020 bytes")

// ParseError is a Convert message that cannot be accepted. Code is the Error TLV code the
// receiver answers with (§5.2.8): Unsupported Version for a version other than 1, Unsupported
// Message for an unknown or reserved TLV type, Malformed Message for everything else. Reply
// builds that answer.
type ParseError struct {
	// Code is the error to report to the peer.
	Code ErrorCode
	// Offset is the byte, from the start of the fixed header, where the fault lies.
	Offset int
	// Reason says what is wrong, for logs.
	Reason string
	// Received holds the bytes of the message received before the fault was found (at most
	// MaxLen, owned by the error), for the echo of Malformed and Unsupported Message.
	Received []byte
	// Err is the cause when there is one: io.ErrUnexpectedEOF when the input ended inside
	// the message (Parse: more bytes may still come; ReadMessage: the peer closed).
	Err error
}

func (e *ParseError) Error() string {
	s := fmt.Sprintf("convert: %v at byte %d: %s", e.Code, e.Offset, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ParseError) Unwrap() error { return e.Err }

// Reply returns the Error TLV that answers the fault (§5.2.8): for Unsupported Version the
// versions this package supports, for Malformed and Unsupported Message an echo of Received.
func (e *ParseError) Reply() ErrorTLV {
	switch e.Code {
	case CodeUnsupportedVersion:
		return ErrorTLV{Code: CodeUnsupportedVersion, Value: []byte{Version}}
	case CodeMalformedMessage, CodeUnsupportedMessage:
		return NewEchoError(e.Code, e.Received)
	default:
		return ErrorTLV{Code: e.Code}
	}
}

func malformed(off int, format string, args ...any) *ParseError {
	return &ParseError{Code: CodeMalformedMessage, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
