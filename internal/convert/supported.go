package convert

import "fmt"

// SupportedTCPExtensions is the Supported TCP Extensions TLV (§5.2.4): the converter's answer
// to Info, listing the TCP options (by kind, IANA "TCP Parameters") for which it offers a
// conversion service, e.g. 30 for Multipath TCP.
//
//	Type=21 | Length | Unassigned (16)
//	Kind #1 | Kind #2 | ..., zero-padded to a 32-bit boundary
//
// Kinds 0, 1 and 2 (EOL, NOP, MSS) must not appear: every TCP has them. Since 0 cannot be a
// kind, the trailing zeros are padding; Parse wants fewer than 4 of them, and ignores the
// Unassigned field.
type SupportedTCPExtensions struct {
	Kinds []uint8
}

var _ TLV = SupportedTCPExtensions{}

// Type returns TypeSupportedTCPExtensions.
func (SupportedTCPExtensions) Type() Type { return TypeSupportedTCPExtensions }

// Len returns 4 plus the kinds padded to a multiple of 4.
func (s SupportedTCPExtensions) Len() int { return 4 + pad4(len(s.Kinds)) }

// Append appends the encoded TLV to b.
func (s SupportedTCPExtensions) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeSupportedTCPExtensions, s.Len())
	b = append(b, 0, 0)
	b = append(b, s.Kinds...)
	return appendPadding(b, len(s.Kinds))
}

func (s SupportedTCPExtensions) check() error {
	for i, k := range s.Kinds {
		if k <= 2 {
			return fmt.Errorf("kind %d (entry %d) must not be listed", k, i)
		}
	}
	return nil
}

// parseSupportedTCPExtensions decodes a Supported TCP Extensions TLV.
func parseSupportedTCPExtensions(b []byte) (SupportedTCPExtensions, error) {
	list := b[4:]
	n := len(list)
	for n > 0 && list[n-1] == 0 {
		n--
	}
	if len(list)-n >= 4 {
		return SupportedTCPExtensions{}, malformed(4+n, "%d bytes of padding, want at most 3", len(list)-n)
	}
	s := SupportedTCPExtensions{}
	if n > 0 {
		s.Kinds = list[:n]
	}
	for i, k := range s.Kinds {
		if k <= 2 {
			return SupportedTCPExtensions{}, malformed(4+i, "kind %d must not be listed", k)
		}
	}
	return s, nil
}
