package transparent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Exclusion is a rule of --transparent-exclude: connections to an address of Prefix (and to
// Port, unless it is 0) are never intercepted.
type Exclusion struct {
	Prefix netip.Prefix
	Port   uint16 // 0: every port
}

func (e Exclusion) String() string {
	switch {
	case e.Port == 0:
		return e.Prefix.String()
	case e.Prefix.Addr().Is4():
		return fmt.Sprintf("%s:%d", e.Prefix, e.Port)
	default:
		return fmt.Sprintf("[%s]:%d", e.Prefix, e.Port)
	}
}

// ParseExclusion parses CIDR[:PORT]: "10.0.0.0/8", "10.0.0.0/8:443", "192.0.2.1" (a /32),
// "192.0.2.1:25", "2001:db8::/32", "2001:db8::1" (a /128), and, with a port, IPv6 in brackets:
// "[2001:db8::/32]:443", "[2001:db8::1]:443". An IPv4-mapped prefix (::ffff:10.0.0.0/104) is
// the IPv4 one: connections of dual-stack sockets to mapped addresses are matched as IPv4.
func ParseExclusion(s string) (Exclusion, error) {
	e, err := parseExclusion(s)
	if err != nil {
		return Exclusion{}, fmt.Errorf("exclusion %q: %w", s, err)
	}
	return e, nil
}

func parseExclusion(s string) (Exclusion, error) {
	var e Exclusion
	addr, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return e, errors.New("missing ]")
		}
		addr = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			var ok bool
			if port, ok = strings.CutPrefix(rest, ":"); !ok {
				return e, fmt.Errorf("unexpected %q after ]", rest)
			}
			if port == "" {
				return e, errors.New("missing port after :")
			}
		}
		if !strings.Contains(addr, ":") {
			return e, errors.New("brackets are for IPv6 only: write an IPv4 rule as 10.0.0.0/8:443")
		}
	case strings.Count(s, ":") == 1: // IPv4 with a port
		i := strings.LastIndex(s, ":")
		addr, port = s[:i], s[i+1:]
		if port == "" {
			return e, errors.New("missing port after :")
		}
	case strings.Contains(s, ":"): // IPv6 without brackets: no port
		if _, bits, ok := strings.Cut(s, "/"); ok && strings.Contains(bits, ":") {
			return e, errors.New("an IPv6 rule with a port needs brackets: [2001:db8::/32]:443")
		}
	}
	if addr == "" {
		return e, errors.New("empty address")
	}
	if strings.Contains(addr, "%") {
		return e, errors.New("an address with a zone cannot be excluded")
	}
	if strings.Contains(addr, "/") {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return e, err
		}
		if p != p.Masked() {
			return e, fmt.Errorf("%s has host bits set: the prefix is %s", p, p.Masked())
		}
		e.Prefix = p
	} else {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return e, err
		}
		e.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if a := e.Prefix.Addr(); a.Is4In6() { // a masked prefix shorter than /96 never is
		e.Prefix = netip.PrefixFrom(a.Unmap(), e.Prefix.Bits()-96)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return e, fmt.Errorf("port %q: not a number from 1 to 65535", port)
		}
		if n == 0 {
			return e, errors.New("port 0: leave the port out to exclude every port")
		}
		e.Port = uint16(n)
	}
	return e, nil
}

// key is the rule as tp_exclude's key (struct tp_excl_key): family and port are matched in full,
// then the prefix's bits.
func (e Exclusion) key() TransparentTpExclKey {
	p := e.Prefix.Masked()
	if p.Addr().Is4In6() { // as ParseExclusion makes it: mapped destinations are looked up as IPv4
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	a := p.Addr()
	k := TransparentTpExclKey{Prefixlen: 32 + uint32(p.Bits()), Port: htons(e.Port)}
	if a.Is4() {
		k.Family = afInet
	} else {
		k.Family = afInet6
	}
	k.Addr = addrWords(a)
	return k
}

// addrWords returns an address as the C side's __u32 addr[4], in network byte order, IPv4 in
// the first word.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = binary.NativeEndian.Uint32(b[:])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// wordsAddr is addrWords' inverse for family (AF_INET or AF_INET6).
func wordsAddr(family uint16, w [4]uint32) (netip.Addr, bool) {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	switch family {
	case afInet:
		return netip.AddrFrom4([4]byte(b[:4])), true
	case afInet6:
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// htons returns the value whose memory holds port in network byte order.
func htons(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

func ntohs(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}
