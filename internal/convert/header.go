package convert

import (
	"io"
	"strconv"
)

// Header is the Convert fixed header (§5.1):
//
//	Version (8) | Total Length (8) | Unassigned (16)
//
// Total Length counts the whole message, header included, in 32-bit words; Unassigned is
// ignored on receipt and sent as zero.
type Header struct {
	Version uint8
	// Words is the Total Length field.
	Words uint8
}

// Len returns the length of the message in bytes, header included.
func (h Header) Len() int { return int(h.Words) * 4 }

// ParseHeader decodes the fixed header at the start of b and checks it: the version must be
// Version (else Unsupported Version: a receiver cannot trust the length of a version it does
// not know) and Total Length at least 1 word (a zero length is invalid, §5.1). Fewer than
// HeaderLen bytes give a *ParseError wrapping io.ErrUnexpectedEOF. The length is not
// checked against len(b).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		e := malformed(len(b), "fixed header is %d bytes, want %d", len(b), HeaderLen)
		e.Err = io.ErrUnexpectedEOF
		e.Received = append([]byte(nil), b...)
		return Header{}, e
	}
	h := Header{Version: b[0], Words: b[1]}
	if h.Version != Version {
		return Header{}, &ParseError{
			Code:     CodeUnsupportedVersion,
			Reason:   "version " + strconv.Itoa(int(h.Version)),
			Received: append([]byte(nil), b[:HeaderLen]...),
		}
	}
	if h.Words == 0 {
		e := malformed(1, "total length is 0 words")
		e.Received = append([]byte(nil), b[:HeaderLen]...)
		return Header{}, e
	}
	return h, nil
}

// appendHeader appends the fixed header of a message of n bytes (a multiple of 4, at most
// MaxLen).
func appendHeader(b []byte, n int) []byte {
	return append(b, Version, byte(n/4), 0, 0)
}
