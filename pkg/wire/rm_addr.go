package wire

import "slices"

const lenRMAddrBase = 3 // TCPOLEN_MPTCP_RM_ADDR_BASE

// MaxRemoveAddrIDs is the most address IDs one REMOVE_ADDR may carry: the
// kernel's MPTCP_RM_IDS_MAX. The kernel ignores a longer REMOVE_ADDR, so a
// sender with more IDs must split them over several options.
const MaxRemoveAddrIDs = 8

// RemoveAddr is the REMOVE_ADDR option (RFC 8684 §3.4.2):
//
//	kind=30 | length=3+n | subtype=4, rsv | address ID | ...
//
// Parse accepts 1 to MaxRemoveAddrIDs IDs (length 4 to 11), as the kernel does.
// Append writes IDs as given, so an empty list or one longer than
// MaxRemoveAddrIDs encodes an option that Parse rejects.
type RemoveAddr struct {
	IDs []uint8
}

var _ Option = RemoveAddr{}

// Subtype returns SubtypeRemoveAddr.
func (RemoveAddr) Subtype() Subtype { return SubtypeRemoveAddr }

// Len returns 3 + the number of IDs.
func (r RemoveAddr) Len() int { return lenRMAddrBase + len(r.IDs) }

// Append appends the encoded option to b.
func (r RemoveAddr) Append(b []byte) []byte {
	b = appendHeader(b, SubtypeRemoveAddr, r.Len(), 0)
	return append(b, r.IDs...)
}

// parseRemoveAddr decodes a REMOVE_ADDR; the reserved nibble is ignored. The
// returned IDs do not alias b.
func parseRemoveAddr(b []byte) (RemoveAddr, int, error) {
	n, err := subHeader(b, SubtypeRemoveAddr)
	if err != nil {
		return RemoveAddr{}, 0, err
	}
	if n < lenRMAddrBase+1 || n > lenRMAddrBase+MaxRemoveAddrIDs {
		return RemoveAddr{}, 0, badLength(SubtypeRemoveAddr, n)
	}
	return RemoveAddr{IDs: slices.Clone(b[lenRMAddrBase:n])}, n, nil
}
