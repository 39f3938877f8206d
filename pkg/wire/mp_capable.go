package wire

import "fmt"

// MP_CAPABLE lengths (the kernel's TCPOLEN_MPTCP_MPC_*).
const (
	lenMPCSyn         = 4  // TCPOLEN_MPTCP_MPC_SYN
	lenMPCSynAck      = 12 // TCPOLEN_MPTCP_MPC_SYNACK
	lenMPCAck         = 20 // TCPOLEN_MPTCP_MPC_ACK
	lenMPCAckData     = 22 // TCPOLEN_MPTCP_MPC_ACK_DATA
	lenMPCAckDataCsum = 24 // TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM
)

// MP_CAPABLE flags (RFC 8684 §3.1; the kernel's MPTCP_CAP_*).
const (
	FlagChecksum          = 0x80 // A: checksum required
	FlagExtensibility     = 0x40 // B: extensibility, must be 0 in v1
	FlagNoJoinInitialAddr = 0x20 // C: do not join the sender's initial address
	FlagHMACSHA256        = 0x01 // H: HMAC-SHA256, must be set in v1
)

const (
	// mpcFlagMask is MPTCP_CAP_FLAG_MASK: under it only H may be set (D-G zero).
	mpcFlagMask    = 0x1f
	mpcVersionMask = 0x0f // MPTCP_VERSION_MASK
)

// MPCForm is the form of an MP_CAPABLE option; the form follows from the length.
type MPCForm uint8

// MP_CAPABLE forms (RFC 8684 §3.1).
const (
	MPCSyn      MPCForm = iota // SYN: 4 bytes, no key
	MPCSynAck                  // SYN/ACK: 12 bytes, the listener's key
	MPCAck                     // third ACK: 20 bytes, sender key then receiver key
	MPCData                    // first data: 22 bytes, both keys and a data-level length
	MPCDataCsum                // first data with checksum: 24 bytes
)

func (f MPCForm) String() string {
	switch f {
	case MPCSyn:
		return "SYN"
	case MPCSynAck:
		return "SYN/ACK"
	case MPCAck:
		return "ACK"
	case MPCData:
		return "data"
	case MPCDataCsum:
		return "data+checksum"
	default:
		return fmt.Sprintf("MPCForm(%d)", uint8(f))
	}
}

// MPCapable is the MP_CAPABLE option (RFC 8684 §3.1):
//
//	kind=30 | length | subtype=0 | version | A B C D E F G H |
//	sender's key (64, from SYN/ACK on) | receiver's key (64, from third ACK on) |
//	data-level length (16, data forms) | checksum (16, data+checksum form)
//
// Fields that the Form does not carry are ignored by Append and zero after
// Parse. A Form outside the MPC* constants encodes as MPCSyn. Append writes
// Version as given (set it to SupportedVersion) and Flags verbatim.
type MPCapable struct {
	Form        MPCForm
	Version     uint8 // low nibble of byte 2
	Flags       uint8 // Flag* bits
	SenderKey   uint64
	ReceiverKey uint64
	DataLen     uint16 // data-level length, MPCData and MPCDataCsum
	Checksum    uint16 // MPCDataCsum only
}

var _ Option = MPCapable{}

// Subtype returns SubtypeMPCapable.
func (MPCapable) Subtype() Subtype { return SubtypeMPCapable }

// Len returns the wire length of m's form.
func (m MPCapable) Len() int {
	switch m.Form {
	case MPCSynAck:
		return lenMPCSynAck
	case MPCAck:
		return lenMPCAck
	case MPCData:
		return lenMPCAckData
	case MPCDataCsum:
		return lenMPCAckDataCsum
	default:
		return lenMPCSyn
	}
}

// Append appends the encoded option to b.
func (m MPCapable) Append(b []byte) []byte {
	n := m.Len()
	b = appendHeader(b, SubtypeMPCapable, n, m.Version)
	b = append(b, m.Flags)
	if n >= lenMPCSynAck {
		b = be.AppendUint64(b, m.SenderKey)
	}
	if n >= lenMPCAck {
		b = be.AppendUint64(b, m.ReceiverKey)
	}
	if n >= lenMPCAckData {
		b = be.AppendUint16(b, m.DataLen)
	}
	if n == lenMPCAckDataCsum {
		b = be.AppendUint16(b, m.Checksum)
	}
	return b
}

// FitsSegment reports whether m's form is the one the kernel expects on a
// segment with the given SYN and ACK flags and payload presence: MPCSyn on a
// SYN, MPCSynAck on a SYN/ACK, MPCAck on a non-SYN without payload, and MPCData
// or MPCDataCsum on a non-SYN with payload. Parse cannot check this because it
// does not see the TCP header; the kernel ignores an MP_CAPABLE that does not fit.
func (m MPCapable) FitsSegment(syn, ack, payload bool) bool {
	switch {
	case syn && ack:
		return m.Form == MPCSynAck
	case syn:
		return m.Form == MPCSyn
	case payload:
		return m.Form == MPCData || m.Form == MPCDataCsum
	default:
		return m.Form == MPCAck
	}
}

// parseMPCapable decodes an MP_CAPABLE. Like the kernel it accepts only the five
// lengths of the five forms, ignores (here: rejects with ErrBadVersion) a
// version other than 1 except that a SYN may carry any version >= 1 ("be gentle
// with future versions on the initial SYN"), and rejects flags without H or
// with B or any of D-G set (ErrBadFlags). A and C may be set on every form.
func parseMPCapable(b []byte) (MPCapable, int, error) {
	n, err := subHeader(b, SubtypeMPCapable)
	if err != nil {
		return MPCapable{}, 0, err
	}
	var m MPCapable
	switch n {
	case lenMPCSyn:
		m.Form = MPCSyn
	case lenMPCSynAck:
		m.Form = MPCSynAck
	case lenMPCAck:
		m.Form = MPCAck
	case lenMPCAckData:
		m.Form = MPCData
	case lenMPCAckDataCsum:
		m.Form = MPCDataCsum
	default:
		return MPCapable{}, 0, badLength(SubtypeMPCapable, n)
	}
	m.Version = b[2] & mpcVersionMask
	if m.Version < SupportedVersion || (m.Form != MPCSyn && m.Version != SupportedVersion) {
		return MPCapable{}, 0, fmt.Errorf("parse MP_CAPABLE %v: version %d: %w", m.Form, m.Version, ErrBadVersion)
	}
	m.Flags = b[3]
	if m.Flags&mpcFlagMask != FlagHMACSHA256 || m.Flags&FlagExtensibility != 0 {
		return MPCapable{}, 0, fmt.Errorf("parse MP_CAPABLE %v: flags %#02x: %w", m.Form, m.Flags, ErrBadFlags)
	}
	if n >= lenMPCSynAck {
		m.SenderKey = be.Uint64(b[4:])
	}
	if n >= lenMPCAck {
		m.ReceiverKey = be.Uint64(b[12:])
	}
	if n >= lenMPCAckData {
		m.DataLen = be.Uint16(b[20:])
	}
	if n == lenMPCAckDataCsum {
		m.Checksum = be.Uint16(b[22:])
	}
	return m, n, nil
}
