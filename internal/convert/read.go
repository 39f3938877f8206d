package convert

import (
	"errors"
	"fmt"
	"io"
)

// ReadMessage reads one Convert message from r, e.g. the start of a connection's bytestream,
// however the bytes arrive: the fixed header, then exactly the rest of the message that its
// Total Length announces, never a byte more, so user data after the message stays in r.
//
// It returns io.EOF if r ends before the first byte. A message r cut short, a bad header or
// bad TLVs give a *ParseError (wrapping io.ErrUnexpectedEOF for a cut); for a version other
// than Version it stops after the header. Other read errors come back wrapped as they are.
// It allocates at most the announced message length (MaxLen bytes) plus the decoded TLVs.
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [HeaderLen]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return Message{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			_, perr := ParseHeader(hdr[:n])
			return Message{}, perr
		}
		return Message{}, fmt.Errorf("convert: read fixed header: %w", err)
	}
	h, err := ParseHeader(hdr[:])
	if err != nil {
		return Message{}, err
	}
	msg := make([]byte, h.Len())
	copy(msg, hdr[:])
	if n, err := io.ReadFull(r, msg[HeaderLen:]); err != nil {
		got := HeaderLen + n
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			e := malformed(got, "message is %d bytes, stream ended after %d", len(msg), got)
			e.Err = io.ErrUnexpectedEOF
			e.Received = msg[:got]
			return Message{}, e
		}
		return Message{}, fmt.Errorf("convert: read message: %w", err)
	}
	return parseBody(msg)
}
