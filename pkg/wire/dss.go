package wire

// DSS lengths (the kernel's TCPOLEN_MPTCP_DSS_*).
const (
	lenDSSBase     = 4  // TCPOLEN_MPTCP_DSS_BASE
	lenDSSAck32    = 4  // TCPOLEN_MPTCP_DSS_ACK32
	lenDSSAck64    = 8  // TCPOLEN_MPTCP_DSS_ACK64
	lenDSSMap32    = 10 // TCPOLEN_MPTCP_DSS_MAP32: DSN 4, SSN 4, length 2
	lenDSSMap64    = 14 // TCPOLEN_MPTCP_DSS_MAP64: DSN 8, SSN 4, length 2
	lenDSSChecksum = 2  // TCPOLEN_MPTCP_DSS_CHECKSUM
)

// MaxDSSLen is the longest DSS option (28): 8-byte data ACK, mapping with an
// 8-byte DSN, and checksum.
const MaxDSSLen = lenDSSBase + lenDSSAck64 + lenDSSMap64 + lenDSSChecksum

// DSS flags, byte 3 (RFC 8684 §3.3; the kernel's MPTCP_DSS_*).
const (
	dssDataFIN  = 0x10 // F
	dssDSN64    = 0x08 // m
	dssHasMap   = 0x04 // M
	dssAck64    = 0x02 // a
	dssHasAck   = 0x01 // A
	dssFlagMask = 0x1f // the three high bits are reserved and ignored
)

// DSS is the Data Sequence Signal option (RFC 8684 §3.3):
//
//	kind=30 | length | subtype=2, rsv | rsv(3) F m M a A |
//	data ACK (4 or 8, if A) |
//	DSN (4 or 8), subflow sequence number (4), data-level length (2) (if M) |
//	checksum (2, if negotiated)
//
// A 4-byte data ACK or DSN is stored in the low 32 bits of DataAck or DSN;
// expanding it to 64 bits is the connection's job (seqnum). Append writes the
// low 32 bits when Ack64 or DSN64 is false.
//
// Ack64 and DSN64 mirror the a and m flags even when A or M is clear (the
// kernel accepts such options and ignores the flag), so every accepted option
// round-trips. Likewise HasChecksum without HasMap: the kernel accepts the two
// extra bytes after the data ACK and ignores them (RFC 8684 §3.3.0 is enforced
// later, in subflow_data_ready); Parse keeps them in Checksum and the
// connection layer should ignore them. Reserved bits are ignored.
type DSS struct {
	DataFIN     bool
	HasAck      bool
	Ack64       bool
	DataAck     uint64
	HasMap      bool
	DSN64       bool
	DSN         uint64
	SSN         uint32 // relative to the subflow's initial sequence number
	DataLen     uint16 // 0 with HasMap is the infinite mapping (§3.7)
	HasChecksum bool
	Checksum    uint16
}

var _ Option = DSS{}

// Subtype returns SubtypeDSS.
func (DSS) Subtype() Subtype { return SubtypeDSS }

// lenNoChecksum is the length the flags imply, without the checksum: the
// kernel's expected_opsize.
func (d DSS) lenNoChecksum() int {
	n := lenDSSBase
	if d.HasAck {
		if d.Ack64 {
			n += lenDSSAck64
		} else {
			n += lenDSSAck32
		}
	}
	if d.HasMap {
		if d.DSN64 {
			n += lenDSSMap64
		} else {
			n += lenDSSMap32
		}
	}
	return n
}

// Len returns 4 + data ACK (0/4/8) + mapping (0/10/14) + checksum (0/2).
func (d DSS) Len() int {
	n := d.lenNoChecksum()
	if d.HasChecksum {
		n += lenDSSChecksum
	}
	return n
}

func (d DSS) flags() uint8 {
	var f uint8
	if d.DataFIN {
		f |= dssDataFIN
	}
	if d.DSN64 {
		f |= dssDSN64
	}
	if d.HasMap {
		f |= dssHasMap
	}
	if d.Ack64 {
		f |= dssAck64
	}
	if d.HasAck {
		f |= dssHasAck
	}
	return f
}

// Append appends the encoded option to b.
func (d DSS) Append(b []byte) []byte {
	b = appendHeader(b, SubtypeDSS, d.Len(), 0)
	b = append(b, d.flags())
	if d.HasAck {
		if d.Ack64 {
			b = be.AppendUint64(b, d.DataAck)
		} else {
			b = be.AppendUint32(b, uint32(d.DataAck))
		}
	}
	if d.HasMap {
		if d.DSN64 {
			b = be.AppendUint64(b, d.DSN)
		} else {
			b = be.AppendUint32(b, uint32(d.DSN))
		}
		b = be.AppendUint32(b, d.SSN)
		b = be.AppendUint16(b, d.DataLen)
	}
	if d.HasChecksum {
		b = be.AppendUint16(b, d.Checksum)
	}
	return b
}

// parseDSS decodes a DSS. As in the kernel, the length must be exactly what
// the flags imply, or that plus 2 for a checksum; the checksum is accepted
// whether or not a mapping is present.
func parseDSS(b []byte) (DSS, int, error) {
	n, err := subHeader(b, SubtypeDSS)
	if err != nil {
		return DSS{}, 0, err
	}
	if n < lenDSSBase {
		return DSS{}, 0, badLength(SubtypeDSS, n)
	}
	f := b[3] & dssFlagMask
	d := DSS{
		DataFIN: f&dssDataFIN != 0,
		DSN64:   f&dssDSN64 != 0,
		HasMap:  f&dssHasMap != 0,
		Ack64:   f&dssAck64 != 0,
		HasAck:  f&dssHasAck != 0,
	}
	switch want := d.lenNoChecksum(); n {
	case want:
	case want + lenDSSChecksum:
		d.HasChecksum = true
	default:
		return DSS{}, 0, badLength(SubtypeDSS, n)
	}
	p := lenDSSBase
	if d.HasAck {
		if d.Ack64 {
			d.DataAck = be.Uint64(b[p:])
			p += 8
		} else {
			d.DataAck = uint64(be.Uint32(b[p:]))
			p += 4
		}
	}
	if d.HasMap {
		if d.DSN64 {
			d.DSN = be.Uint64(b[p:])
			p += 8
		} else {
			d.DSN = uint64(be.Uint32(b[p:]))
			p += 4
		}
		d.SSN = be.Uint32(b[p:])
		d.DataLen = be.Uint16(b[p+4:])
		p += 6
	}
	if d.HasChecksum {
		d.Checksum = be.Uint16(b[p:])
	}
	return d, n, nil
}
