package convert

const lenInfo = 4

// Info is the Info TLV (§5.2.3), which a Client sends to learn which TCP extensions the
// Transport Converter offers; the converter answers with SupportedTCPExtensions.
//
//	Type=1 | Length=1 | Zero (16)
//
// The Zero field is ignored on receipt.
type Info struct{}

var _ TLV = Info{}

// Type returns TypeInfo.
func (Info) Type() Type { return TypeInfo }

// Len returns 4.
func (Info) Len() int { return lenInfo }

// Append appends the encoded TLV to b.
func (Info) Append(b []byte) []byte {
	return append(appendTLVHeader(b, TypeInfo, lenInfo), 0, 0)
}

func (Info) check() error { return nil }

// parseInfo decodes an Info TLV, which is one word long (§5.2.2).
func parseInfo(b []byte) (Info, error) {
	if len(b) != lenInfo {
		return Info{}, malformed(1, "%d bytes, want %d", len(b), lenInfo)
	}
	return Info{}, nil
}
