package wire

const lenFastclose = 12 // TCPOLEN_MPTCP_FASTCLOSE

// MPFastclose is the MP_FASTCLOSE option (RFC 8684 §3.5):
//
//	kind=30 | length=12 | subtype=7, rsv (12 bits) | option receiver's key (64)
//
// The receiver closes the whole connection if ReceiverKey is its own key and
// ignores the option otherwise.
type MPFastclose struct {
	ReceiverKey uint64
}

var _ Option = MPFastclose{}

// Subtype returns SubtypeMPFastclose.
func (MPFastclose) Subtype() Subtype { return SubtypeMPFastclose }

// Len returns 12.
func (MPFastclose) Len() int { return lenFastclose }

// Append appends the encoded option to b.
func (f MPFastclose) Append(b []byte) []byte {
	b = appendHeader(b, SubtypeMPFastclose, lenFastclose, 0)
	b = append(b, 0)
	return be.AppendUint64(b, f.ReceiverKey)
}

// parseMPFastclose decodes an MP_FASTCLOSE; the reserved 12 bits are ignored.
func parseMPFastclose(b []byte) (MPFastclose, int, error) {
	n, err := subHeader(b, SubtypeMPFastclose)
	if err != nil {
		return MPFastclose{}, 0, err
	}
	if n != lenFastclose {
		return MPFastclose{}, 0, badLength(SubtypeMPFastclose, n)
	}
	return MPFastclose{ReceiverKey: be.Uint64(b[4:])}, n, nil
}
