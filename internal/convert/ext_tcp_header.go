package convert

import "fmt"

// ExtendedTCPHeader is the Extended TCP Header TLV (§5.2.6): the converter returns to the
// Client the TCP options of the SYN+ACK it received from the server, so that the Client learns
// what the server supports (e.g. MP_CAPABLE, and then it can bypass the converter next time).
// The converter must send it when the Client sent an Extended Connect TLV and the server
// accepted the connection.
//
//	Type=20 | Length | Unassigned (16)
//	Returned Extended TCP Header: the SYN+ACK's TCP options
//
// Options is a copy of those options as the SYN+ACK carried them (its NOPs, EOL and padding
// included), at most 40 bytes; Append pads it with zeros (EOL) to a 32-bit boundary, and
// Parse returns all the bytes of the TLV after the Unassigned field, which it ignores. The
// options are not checked: they are the server's.
type ExtendedTCPHeader struct {
	Options []byte
}

var _ TLV = ExtendedTCPHeader{}

// Type returns TypeExtendedTCPHeader.
func (ExtendedTCPHeader) Type() Type { return TypeExtendedTCPHeader }

// Len returns 4 plus the options padded to a multiple of 4.
func (h ExtendedTCPHeader) Len() int { return 4 + pad4(len(h.Options)) }

// Append appends the encoded TLV to b.
func (h ExtendedTCPHeader) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeExtendedTCPHeader, h.Len())
	b = append(b, 0, 0)
	b = append(b, h.Options...)
	return appendPadding(b, len(h.Options))
}

func (h ExtendedTCPHeader) check() error {
	if len(h.Options) > maxTCPOptions {
		return fmt.Errorf("%d bytes of TCP options, want at most %d", len(h.Options), maxTCPOptions)
	}
	return nil
}

// parseExtendedTCPHeader decodes an Extended TCP Header TLV; more than the 40 bytes a TCP
// header has room for is malformed.
func parseExtendedTCPHeader(b []byte) (ExtendedTCPHeader, error) {
	h := ExtendedTCPHeader{Options: b[4:]}
	if err := h.check(); err != nil {
		return ExtendedTCPHeader{}, malformed(1, "%v", err)
	}
	if len(h.Options) == 0 {
		h.Options = nil
	}
	return h, nil
}
