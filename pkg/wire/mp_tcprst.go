package wire

import "fmt"

const lenRst = 4 // TCPOLEN_MPTCP_RST

// RstFlagTransient is the T flag of MP_TCPRST: the error is transient and the
// subflow may be retried (MPTCP_RST_TRANSIENT). The U, V and W bits (0x8, 0x4,
// 0x2) are unassigned; Parse and Append preserve them.
const RstFlagTransient = 0x01

// MP_TCPRST reason codes (RFC 8684 §3.6; the kernel's MPTCP_RST_E*).
const (
	RstEUnspec    = 0 // unspecified error
	RstEMPTCP     = 1 // MPTCP-specific error
	RstEResource  = 2 // lack of resources
	RstEProhibit  = 3 // administratively prohibited
	RstEWQ2Big    = 4 // too much outstanding data
	RstEBadPerf   = 5 // unacceptable performance
	RstEMiddlebox = 6 // middlebox interference
)

// MPTCPRst is the MP_TCPRST option (RFC 8684 §3.6):
//
//	kind=30 | length=4 | subtype=8, U V W T | reason
//
// The kernel honours it only on a segment with RST set; Parse cannot see the
// TCP header, so that check is the caller's.
type MPTCPRst struct {
	Flags  uint8 // low nibble: RstFlagTransient and the unassigned U V W
	Reason uint8 // RstE*
}

var _ Option = MPTCPRst{}

// Subtype returns SubtypeMPTCPRst.
func (MPTCPRst) Subtype() Subtype { return SubtypeMPTCPRst }

// Len returns 4.
func (MPTCPRst) Len() int { return lenRst }

// Transient reports whether the T flag is set.
func (r MPTCPRst) Transient() bool { return r.Flags&RstFlagTransient != 0 }

// Append appends the encoded option to b; only the low nibble of Flags is
// written.
func (r MPTCPRst) Append(b []byte) []byte {
	b = appendHeader(b, SubtypeMPTCPRst, lenRst, r.Flags)
	return append(b, r.Reason)
}

// ReasonString names an MP_TCPRST reason code.
func ReasonString(reason uint8) string {
	switch reason {
	case RstEUnspec:
		return "unspecified error"
	case RstEMPTCP:
		return "MPTCP-specific error"
	case RstEResource:
		return "lack of resources"
	case RstEProhibit:
		return "administratively prohibited"
	case RstEWQ2Big:
		return "too much outstanding data"
	case RstEBadPerf:
		return "unacceptable performance"
	case RstEMiddlebox:
		return "middlebox interference"
	default:
		return fmt.Sprintf("reason %d", reason)
	}
}

// parseMPTCPRst decodes an MP_TCPRST. Any reason value is accepted, as the
// kernel does.
func parseMPTCPRst(b []byte) (MPTCPRst, int, error) {
	n, err := subHeader(b, SubtypeMPTCPRst)
	if err != nil {
		return MPTCPRst{}, 0, err
	}
	if n != lenRst {
		return MPTCPRst{}, 0, badLength(SubtypeMPTCPRst, n)
	}
	return MPTCPRst{Flags: b[2] & 0x0f, Reason: b[3]}, n, nil
}
