package wire

const lenFail = 12 // TCPOLEN_MPTCP_FAIL

// MPFail is the MP_FAIL option (RFC 8684 §3.7):
//
//	kind=30 | length=12 | subtype=6, rsv (12 bits) | DSN (64)
//
// DSN is the data sequence number of the start of the failed mapping.
type MPFail struct {
	DSN uint64
}

var _ Option = MPFail{}

// Subtype returns SubtypeMPFail.
func (MPFail) Subtype() Subtype { return SubtypeMPFail }

// Len returns 12.
func (MPFail) Len() int { return lenFail }

// Append appends the encoded option to b.
func (f MPFail) Append(b []byte) []byte {
	b = appendHeader(b, SubtypeMPFail, lenFail, 0)
	b = append(b, 0)
	return be.AppendUint64(b, f.DSN)
}

// parseMPFail decodes an MP_FAIL; the reserved 12 bits are ignored.
func parseMPFail(b []byte) (MPFail, int, error) {
	n, err := subHeader(b, SubtypeMPFail)
	if err != nil {
		return MPFail{}, 0, err
	}
	if n != lenFail {
		return MPFail{}, 0, badLength(SubtypeMPFail, n)
	}
	return MPFail{DSN: be.Uint64(b[4:])}, n, nil
}
