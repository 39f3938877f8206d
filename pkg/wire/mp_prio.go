package wire

const (
	lenPrio = 3 // TCPOLEN_MPTCP_PRIO

	prioBackup = 0x01 // MPTCP_PRIO_BKUP, bit 0 of byte 2
)

// MPPrio is the MP_PRIO option (RFC 8684 §3.3.8):
//
//	kind=30 | length=3 | subtype=5, rsv, B
//
// It applies to the subflow it is sent on. The 4-byte form with an address ID
// is RFC 6824 (v0) only; the kernel, and Parse, reject any length but 3.
type MPPrio struct {
	Backup bool
}

var _ Option = MPPrio{}

// Subtype returns SubtypeMPPrio.
func (MPPrio) Subtype() Subtype { return SubtypeMPPrio }

// Len returns 3.
func (MPPrio) Len() int { return lenPrio }

// Append appends the encoded option to b.
func (p MPPrio) Append(b []byte) []byte {
	var nib uint8
	if p.Backup {
		nib = prioBackup
	}
	return appendHeader(b, SubtypeMPPrio, lenPrio, nib)
}

// parseMPPrio decodes an MP_PRIO; the reserved bits are ignored.
func parseMPPrio(b []byte) (MPPrio, int, error) {
	n, err := subHeader(b, SubtypeMPPrio)
	if err != nil {
		return MPPrio{}, 0, err
	}
	if n != lenPrio {
		return MPPrio{}, 0, badLength(SubtypeMPPrio, n)
	}
	return MPPrio{Backup: b[2]&prioBackup != 0}, n, nil
}
