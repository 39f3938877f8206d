// Package wire encodes and decodes MPTCP v1 TCP options (RFC 8684, §3).
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// OptionKind is the TCP option kind of every MPTCP option (RFC 8684 §3).
const OptionKind = 30

// SupportedVersion is the MPTCP version this package speaks (the kernel's
// MPTCP_SUPPORTED_VERSION).
const SupportedVersion = 1

// Subtype is the MPTCP option subtype, the high nibble of the option's third byte.
type Subtype uint8

// MPTCP option subtypes (RFC 8684 §7.2; the kernel's MPTCPOPT_*).
const (
	SubtypeMPCapable   Subtype = 0x0
	SubtypeMPJoin      Subtype = 0x1
	SubtypeDSS         Subtype = 0x2
	SubtypeAddAddr     Subtype = 0x3
	SubtypeRemoveAddr  Subtype = 0x4
	SubtypeMPPrio      Subtype = 0x5
	SubtypeMPFail      Subtype = 0x6
	SubtypeMPFastclose Subtype = 0x7
	SubtypeMPTCPRst    Subtype = 0x8
)

func (s Subtype) String() string {
	switch s {
	case SubtypeMPCapable:
		return "MP_CAPABLE"
	case SubtypeMPJoin:
		return "MP_JOIN"
	case SubtypeDSS:
		return "DSS"
	case SubtypeAddAddr:
		return "ADD_ADDR"
	case SubtypeRemoveAddr:
		return "REMOVE_ADDR"
	case SubtypeMPPrio:
		return "MP_PRIO"
	case SubtypeMPFail:
		return "MP_FAIL"
	case SubtypeMPFastclose:
		return "MP_FASTCLOSE"
	case SubtypeMPTCPRst:
		return "MP_TCPRST"
	default:
		return fmt.Sprintf("subtype(%d)", uint8(s))
	}
}

// Option is one decoded MPTCP option. The concrete types are the value types
// MPCapable, MPJoin, DSS, AddAddr, RemoveAddr, MPPrio, MPFail, MPFastclose and
// MPTCPRst.
type Option interface {
	// Subtype is the option's MPTCP subtype.
	Subtype() Subtype
	// Len is the option's length on the wire, kind and length bytes included.
	Len() int
	// Append appends the encoded option (exactly Len bytes, no padding) to b.
	// Reserved bits are written as zero.
	Append(b []byte) []byte
}

// Sentinel errors. Every error returned by Parse wraps exactly one of them.
var (
	// ErrTruncated: the buffer ends before the option's declared length.
	ErrTruncated = errors.New("truncated option")
	// ErrBadLength: the length byte is not one the kernel accepts for the subtype
	// (and, for the TCP options walker, a length < 2 or past the end).
	ErrBadLength = errors.New("bad option length")
	// ErrUnknownSubtype: the subtype is not one of RFC 8684's.
	ErrUnknownSubtype = errors.New("unknown MPTCP subtype")
	// ErrBadKind: the option kind is not OptionKind.
	ErrBadKind = errors.New("not an MPTCP option")
	// ErrBadVersion: an MP_CAPABLE with a version the kernel ignores (not 1;
	// on the SYN form anything >= 1 is accepted).
	ErrBadVersion = errors.New("unsupported MPTCP version")
	// ErrBadFlags: an MP_CAPABLE whose flags the kernel ignores (H clear, or
	// B or any of D-G set).
	ErrBadFlags = errors.New("unsupported MP_CAPABLE flags")
)

// minLen is the shortest MPTCP option: kind, length and the subtype byte.
const minLen = 3

// Parse decodes one MPTCP option. b starts at the kind byte (OptionKind); bytes
// after the option's declared length are ignored. It returns the option (one of
// the value types listed at Option) and the number of bytes consumed, which is
// the option's length byte. Malformed input returns an error wrapping one of the
// sentinel errors, and Parse never panics.
//
// Length checks are as strict as the Linux kernel's mptcp_parse_option, except
// where the kernel needs the segment's TCP flags (see MPCapable.FitsSegment and
// MPTCPRst).
func Parse(b []byte) (Option, int, error) {
	if len(b) < 2 {
		return nil, 0, fmt.Errorf("parse MPTCP option: %d bytes: %w", len(b), ErrTruncated)
	}
	if b[0] != OptionKind {
		return nil, 0, fmt.Errorf("parse MPTCP option: kind %d: %w", b[0], ErrBadKind)
	}
	if _, err := header(b, "MPTCP option"); err != nil {
		return nil, 0, err
	}
	var (
		o   Option
		n   int
		err error
	)
	switch st := Subtype(b[2] >> 4); st {
	case SubtypeMPCapable:
		o, n, err = parseMPCapable(b)
	case SubtypeMPJoin:
		o, n, err = parseMPJoin(b)
	case SubtypeDSS:
		o, n, err = parseDSS(b)
	case SubtypeAddAddr:
		o, n, err = parseAddAddr(b)
	case SubtypeRemoveAddr:
		o, n, err = parseRemoveAddr(b)
	case SubtypeMPPrio:
		o, n, err = parseMPPrio(b)
	case SubtypeMPFail:
		o, n, err = parseMPFail(b)
	case SubtypeMPFastclose:
		o, n, err = parseMPFastclose(b)
	case SubtypeMPTCPRst:
		o, n, err = parseMPTCPRst(b)
	default:
		return nil, 0, fmt.Errorf("parse MPTCP option: %v: %w", st, ErrUnknownSubtype)
	}
	if err != nil {
		return nil, 0, err
	}
	return o, n, nil
}

// header checks what every suboption parser needs: an MPTCP kind, a length of
// at least 3 and no more than len(b). It returns the option length.
func header(b []byte, what string) (int, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("parse %s: %d bytes: %w", what, len(b), ErrTruncated)
	}
	if b[0] != OptionKind {
		return 0, fmt.Errorf("parse %s: kind %d: %w", what, b[0], ErrBadKind)
	}
	n := int(b[1])
	if n < minLen {
		return 0, fmt.Errorf("parse %s: length %d: %w", what, n, ErrBadLength)
	}
	if n > len(b) {
		return 0, fmt.Errorf("parse %s: length %d, have %d bytes: %w", what, n, len(b), ErrTruncated)
	}
	return n, nil
}

// subHeader is header plus a check that the option has subtype st, for the
// parseX functions, which may be called on their own.
func subHeader(b []byte, st Subtype) (int, error) {
	n, err := header(b, st.String())
	if err != nil {
		return 0, err
	}
	if got := Subtype(b[2] >> 4); got != st {
		return 0, fmt.Errorf("parse %v: subtype is %v: %w", st, got, ErrUnknownSubtype)
	}
	return n, nil
}

func badLength(st Subtype, n int) error {
	return fmt.Errorf("parse %v: length %d: %w", st, n, ErrBadLength)
}

// appendHeader appends kind, length and the subtype byte (subtype<<4 | nibble).
func appendHeader(b []byte, st Subtype, n int, nibble uint8) []byte {
	return append(b, OptionKind, byte(n), byte(st)<<4|nibble&0x0f)
}

var be = binary.BigEndian
