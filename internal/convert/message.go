package convert

import (
	"errors"
	"fmt"
	"io"
)

// Message is one Convert message (§5): the fixed header, implied (version 1, Total Length
// computed), and its TLVs in order. A message may hold no TLV, a header of Total Length 1:
// §5.1 forbids only a zero length, and the RFC's figures show such an empty message ("[ ]")
// in the converter's SYN+ACK, though §5 also says a header is followed by TLVs.
type Message struct {
	TLVs []TLV
}

// Len returns the message's length on the wire in bytes, header included.
func (m Message) Len() int {
	n := HeaderLen
	for _, t := range m.TLVs {
		if t != nil {
			n += t.Len()
		}
	}
	return n
}

// Append appends the encoded message to b. It refuses, with b unchanged, a message that
// Parse would refuse: a nil TLV, two TLVs of one type (§5.2.1), a TLV whose contents break
// its section's rules, or more than MaxLen bytes (ErrTooLong).
func (m Message) Append(b []byte) ([]byte, error) {
	var seen typeSet
	n := HeaderLen
	for i, t := range m.TLVs {
		if t == nil {
			return b, fmt.Errorf("convert: TLV %d is nil", i)
		}
		if !seen.add(t.Type()) {
			return b, fmt.Errorf("convert: two %v TLVs (RFC 8803 §5.2.1 allows one)", t.Type())
		}
		if err := t.check(); err != nil {
			return b, fmt.Errorf("convert: %v TLV: %w", t.Type(), err)
		}
		n += t.Len()
	}
	if n > MaxLen {
		return b, fmt.Errorf("%w: %d", ErrTooLong, n)
	}
	b = appendHeader(b, n)
	for _, t := range m.TLVs {
		b = t.Append(b)
	}
	return b, nil
}

// Marshal returns the encoded message; see Append.
func (m Message) Marshal() ([]byte, error) {
	return m.Append(make([]byte, 0, m.Len()))
}

// Parse decodes the Convert message at the start of b, e.g. the payload of a SYN, and returns
// it with its length in bytes; bytes after it are user data. The TLVs do not alias b.
//
// Every failure is a *ParseError. When b ends inside the message it wraps
// io.ErrUnexpectedEOF (the rest may come in later segments).
func Parse(b []byte) (Message, int, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Message{}, 0, err
	}
	n := h.Len()
	if len(b) < n {
		e := malformed(len(b), "message is %d bytes, %d received", n, len(b))
		e.Err = io.ErrUnexpectedEOF
		e.Received = append([]byte(nil), b...)
		return Message{}, 0, e
	}
	m, err := parseBody(append([]byte(nil), b[:n]...))
	if err != nil {
		return Message{}, 0, err
	}
	return m, n, nil
}

// parseBody decodes the TLVs of msg, a whole message whose fixed header has been checked.
// The TLVs alias msg, and so does ParseError.Received.
func parseBody(msg []byte) (Message, error) {
	var (
		m    Message
		seen typeSet
	)
	for off := HeaderLen; off < len(msg); {
		// The message and every TLV are whole words, so at least 4 bytes are left.
		t, words := Type(msg[off]), int(msg[off+1])
		if words == 0 {
			return Message{}, withReceived(malformed(off+1, "%v TLV has length 0", t), msg)
		}
		end := off + 4*words
		if end > len(msg) {
			return Message{}, withReceived(malformed(off+1, "%v TLV of %d bytes overruns the message by %d",
				t, 4*words, end-len(msg)), msg)
		}
		v, err := parseTLV(t, msg[off:end])
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				pe = malformed(0, "%v", err)
			}
			pe.Offset += off
			pe.Reason = fmt.Sprintf("%v TLV: %s", t, pe.Reason)
			return Message{}, withReceived(pe, msg)
		}
		if !seen.add(t) {
			return Message{}, withReceived(malformed(off, "second %v TLV (RFC 8803 §5.2.1 allows one)", t), msg)
		}
		m.TLVs = append(m.TLVs, v)
		off = end
	}
	return m, nil
}

// parseTLV decodes one TLV; b is the whole TLV, type and length bytes included, 4*Length
// bytes long. Errors are *ParseError with offsets from the start of the TLV.
func parseTLV(t Type, b []byte) (TLV, error) {
	var (
		v   TLV
		err error
	)
	switch t {
	case TypeInfo:
		v, err = parseInfo(b)
	case TypeConnect:
		v, err = parseConnect(b)
	case TypeExtendedTCPHeader:
		v, err = parseExtendedTCPHeader(b)
	case TypeSupportedTCPExtensions:
		v, err = parseSupportedTCPExtensions(b)
	case TypeCookie:
		v, err = parseCookie(b)
	case TypeError:
		v, err = parseErrorTLV(b)
	case 0:
		// Reserved: Unsupported Message (§5.2.2).
		return nil, &ParseError{Code: CodeUnsupportedMessage, Reason: "reserved type"}
	default:
		return nil, &ParseError{Code: CodeUnsupportedMessage, Reason: "unknown type"}
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

func withReceived(e *ParseError, msg []byte) *ParseError {
	e.Received = msg
	return e
}

// typeSet is a set of TLV types, to refuse a second TLV of one type.
type typeSet [256 / 64]uint64

// add adds t and reports whether it was absent.
func (s *typeSet) add(t Type) bool {
	w, bit := t/64, uint64(1)<<(t%64)
	if s[w]&bit != 0 {
		return false
	}
	s[w] |= bit
	return true
}
