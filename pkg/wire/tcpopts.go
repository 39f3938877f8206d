package wire

import "fmt"

// TCP option kinds the walker knows (RFC 9293 §3.1).
const (
	tcpOptEOL = 0
	tcpOptNOP = 1
)

// WalkTCPOptions calls fn for each option in the TCP options area opts (the
// bytes after the fixed 20-byte TCP header). An EOL ends the walk and NOPs are
// skipped; neither is passed to fn. opt includes the kind and length bytes and
// aliases opts. fn returns false to stop the walk.
//
// The walk is as tolerant as the kernel's mptcp_get_options (and gVisor's
// ParseTCPOptions): options are not interpreted. A malformed length (a missing
// length byte, a length < 2, or one running past the end) stops the walk and
// returns an error wrapping ErrBadLength; fn has then already seen the options
// before it.
func WalkTCPOptions(opts []byte, fn func(kind uint8, opt []byte) bool) error {
	_, err := walkTCPOptions(opts, fn)
	return err
}

// walkTCPOptions is WalkTCPOptions that also returns the kind of the option
// whose length stopped the walk.
func walkTCPOptions(opts []byte, fn func(kind uint8, opt []byte) bool) (uint8, error) {
	for i := 0; i < len(opts); {
		kind := opts[i]
		switch kind {
		case tcpOptEOL:
			return 0, nil
		case tcpOptNOP:
			i++
			continue
		}
		if len(opts)-i < 2 {
			return kind, fmt.Errorf("tcp option %d at offset %d: no length byte: %w", kind, i, ErrBadLength)
		}
		n := int(opts[i+1])
		if n < 2 || n > len(opts)-i {
			return kind, fmt.Errorf("tcp option %d at offset %d: length %d of %d bytes left: %w",
				kind, i, n, len(opts)-i, ErrBadLength)
		}
		if !fn(kind, opts[i:i+n:i+n]) {
			return 0, nil
		}
		i += n
	}
	return 0, nil
}

// ParseMPTCPOptions returns every well-formed MPTCP option in a TCP options
// area, in order, and the number of malformed MPTCP options skipped: those Parse
// rejects, plus one if the walk stopped at an MPTCP option with a bad length. A
// malformed option of another kind stops the walk like in the kernel; the
// options before it are still returned. Semantic checks that need the TCP
// header (MPCapable.FitsSegment, MP_TCPRST only with RST) are the caller's.
func ParseMPTCPOptions(opts []byte) (options []Option, malformed int) {
	badKind, err := walkTCPOptions(opts, func(kind uint8, opt []byte) bool {
		if kind != OptionKind {
			return true
		}
		o, _, err := Parse(opt)
		if err != nil {
			malformed++
			return true
		}
		options = append(options, o)
		return true
	})
	if err != nil && badKind == OptionKind {
		malformed++
	}
	return options, malformed
}

// AppendPadded appends o and then NOPs until the bytes it appended are a
// multiple of 4 long, as the TCP options area needs (RFC 8684 §3). The padding
// is relative to len(b) on entry, so b may be any buffer.
func AppendPadded(b []byte, o Option) []byte {
	start := len(b)
	b = o.Append(b)
	for (len(b)-start)%4 != 0 {
		b = append(b, tcpOptNOP)
	}
	return b
}
