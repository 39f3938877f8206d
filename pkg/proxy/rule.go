package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// checkHostPort checks one side of a rule: HOST:PORT with a numeric port in 1..65535 and a host
// that is an IP address (IPv6 in brackets) or a DNS name. A listening side may leave the host
// empty (every address) and give port 0 (one the kernel picks).
func checkHostPort(a string, listen bool) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT", a)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case port == "":
		return fmt.Errorf("%q has no port", a)
	case err != nil:
		return fmt.Errorf("%q: port %q is not a number in 1..65535", a, port)
	case n == 0 && !listen:
		return fmt.Errorf("%q: port 0", a)
	}
	if host == "" {
		if listen {
			return nil
		}
		return fmt.Errorf("%q has no host", a)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if err := checkDNSName(host); err != nil {
		return fmt.Errorf("%q: host %q is neither an IP address nor a DNS name: %w", a, host, err)
	}
	return nil
}

// checkDNSName checks the syntax of a host name (RFC 1123 section 2.1, RFC 3696 section 2):
// dot-separated labels of 1..63 letters, digits, hyphens (not first or last) or underscores,
// 253 characters in all without the trailing dot, and a last label that is not all digits
// (10.0.0.300 is a mistyped address, not a name).
func checkDNSName(h string) error {
	h = strings.TrimSuffix(h, ".")
	if len(h) == 0 || len(h) > 253 {
		return errors.New("want 1..253 characters")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return errors.New("each label wants 1..63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", l)
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q", c)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return errors.New("an all-numeric last label")
	}
	return nil
}
