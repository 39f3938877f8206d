package wire

import "fmt"

// MP_JOIN lengths (the kernel's TCPOLEN_MPTCP_MPJ_*).
const (
	lenMPJSyn    = 12 // TCPOLEN_MPTCP_MPJ_SYN
	lenMPJSynAck = 16 // TCPOLEN_MPTCP_MPJ_SYNACK
	lenMPJAck    = 24 // TCPOLEN_MPTCP_MPJ_ACK

	mpjBackup = 0x01 // MPTCPOPT_BACKUP, bit 0 of byte 2
)

// HMACLen is the length of the HMAC carried by the MP_JOIN third ACK (the
// leftmost 160 bits of HMAC-SHA256; the kernel's MPTCPOPT_HMAC_LEN).
const HMACLen = 20

// MPJForm is the form of an MP_JOIN option; the form follows from the length.
type MPJForm uint8

// MP_JOIN forms (RFC 8684 §3.2).
const (
	MPJSyn    MPJForm = iota // SYN: 12 bytes
	MPJSynAck                // SYN/ACK: 16 bytes
	MPJAck                   // third ACK: 24 bytes
)

func (f MPJForm) String() string {
	switch f {
	case MPJSyn:
		return "SYN"
	case MPJSynAck:
		return "SYN/ACK"
	case MPJAck:
		return "ACK"
	default:
		return fmt.Sprintf("MPJForm(%d)", uint8(f))
	}
}

// MPJoin is the MP_JOIN option (RFC 8684 §3.2):
//
//	SYN:     kind=30 | 12 | subtype=1, rsv, B | address ID | receiver's token (32) | sender's nonce (32)
//	SYN/ACK: kind=30 | 16 | subtype=1, rsv, B | address ID | sender's truncated HMAC (64) | sender's nonce (32)
//	ACK:     kind=30 | 24 | subtype=1, rsv (12 bits) | sender's HMAC (160)
//
// Fields that the Form does not carry are ignored by Append and zero after
// Parse. A Form outside the MPJ* constants encodes as MPJSyn. Reserved bits are
// ignored on Parse, as the kernel does.
type MPJoin struct {
	Form      MPJForm
	Backup    bool   // SYN and SYN/ACK
	AddrID    uint8  // SYN and SYN/ACK
	Token     uint32 // SYN: the receiver's token
	Nonce     uint32 // SYN and SYN/ACK: the sender's random number
	TruncHMAC uint64 // SYN/ACK: leftmost 64 bits of the HMAC
	HMAC      [HMACLen]byte
}

var _ Option = MPJoin{}

// Subtype returns SubtypeMPJoin.
func (MPJoin) Subtype() Subtype { return SubtypeMPJoin }

// Len returns the wire length of j's form.
func (j MPJoin) Len() int {
	switch j.Form {
	case MPJSynAck:
		return lenMPJSynAck
	case MPJAck:
		return lenMPJAck
	default:
		return lenMPJSyn
	}
}

// Append appends the encoded option to b.
func (j MPJoin) Append(b []byte) []byte {
	n := j.Len()
	if n == lenMPJAck {
		b = appendHeader(b, SubtypeMPJoin, n, 0)
		b = append(b, 0)
		return append(b, j.HMAC[:]...)
	}
	var nib uint8
	if j.Backup {
		nib = mpjBackup
	}
	b = appendHeader(b, SubtypeMPJoin, n, nib)
	b = append(b, j.AddrID)
	if n == lenMPJSynAck {
		b = be.AppendUint64(b, j.TruncHMAC)
	} else {
		b = be.AppendUint32(b, j.Token)
	}
	return be.AppendUint32(b, j.Nonce)
}

// parseMPJoin decodes an MP_JOIN. The kernel accepts exactly the three lengths
// 12, 16 and 24 and ignores the reserved bits; it checks the form against the
// segment's flags later, outside the parser.
func parseMPJoin(b []byte) (MPJoin, int, error) {
	n, err := subHeader(b, SubtypeMPJoin)
	if err != nil {
		return MPJoin{}, 0, err
	}
	var j MPJoin
	switch n {
	case lenMPJSyn:
		j.Form = MPJSyn
		j.Token = be.Uint32(b[4:])
		j.Nonce = be.Uint32(b[8:])
	case lenMPJSynAck:
		j.Form = MPJSynAck
		j.TruncHMAC = be.Uint64(b[4:])
		j.Nonce = be.Uint32(b[12:])
	case lenMPJAck:
		j.Form = MPJAck
		copy(j.HMAC[:], b[4:n])
		return j, n, nil
	default:
		return MPJoin{}, 0, badLength(SubtypeMPJoin, n)
	}
	j.Backup = b[2]&mpjBackup != 0
	j.AddrID = b[3]
	return j, n, nil
}
