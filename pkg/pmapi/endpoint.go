package pmapi

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Endpoint flags, as `ip mptcp endpoint` names them.
const (
	FlagSubflow  = 1 << iota // create subflows from this address to the peer
	FlagSignal               // announce this address to peers (ADD_ADDR)
	FlagBackup               // subflows from this address are backups
	FlagFullmesh             // a subflow from this address to every address the peer announces
)

// flagNames are the endpoint flags by name, in `ip mptcp endpoint`'s order.
var flagNames = []struct {
	bit  int
	name string
}{{FlagSignal, "signal"}, {FlagSubflow, "subflow"}, {FlagBackup, "backup"}, {FlagFullmesh, "fullmesh"}}

// Endpoint is one local address the path manager uses.
type Endpoint struct {
	Addr  netip.Addr
	ID    uint8  // MP_JOIN/ADD_ADDR address ID, 1..255 (0 is the initial subflow's)
	Flags int    // Flag*
	Port  uint16 // signal: announce this port (0: the connection's)
	Dev   string // optional interface name
}

// FlagNames returns an endpoint's flags by name.
func FlagNames(flags int) []string {
	var out []string
	for _, f := range flagNames {
		if flags&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// flagBit returns the bit of a flag name, 0 if there is no such flag.
func flagBit(name string) int {
	for _, f := range flagNames {
		if f.name == name {
			return f.bit
		}
	}
	return 0
}

// flagList is the flag names for messages: "signal, subflow, backup or fullmesh".
func flagList(last string) string {
	var b strings.Builder
	for i, f := range flagNames {
		switch {
		case i == 0:
		case i == len(flagNames)-1 && last != "":
			b.WriteString(last)
		default:
			b.WriteString(", ")
		}
		b.WriteString(f.name)
	}
	return b.String()
}

// CheckFlag checks one flag name.
func CheckFlag(name string) error {
	if flagBit(name) == 0 {
		return fmt.Errorf("unknown endpoint flag %q (want %s)", name, flagList(" or "))
	}
	return nil
}

// ParseFlags parses flag names (signal, subflow, backup, fullmesh).
func ParseFlags(names []string) (int, error) {
	flags := 0
	for _, n := range names {
		if err := CheckFlag(n); err != nil {
			return 0, err
		}
		flags |= flagBit(n)
	}
	return flags, nil
}

func (e Endpoint) String() string {
	s := fmt.Sprintf("%s id %d", e.Addr, e.ID)
	if f := FlagNames(e.Flags); len(f) > 0 {
		s += " " + strings.Join(f, " ")
	}
	if e.Port != 0 {
		s += fmt.Sprintf(" port %d", e.Port)
	}
	if e.Dev != "" {
		s += " dev " + e.Dev
	}
	return s
}

// Spec returns the endpoint in ParseEndpoint's form.
func (e Endpoint) Spec() string {
	parts := append([]string{e.Addr.String()}, FlagNames(e.Flags)...)
	if e.Port != 0 {
		parts = append(parts, "port="+strconv.Itoa(int(e.Port)))
	}
	if e.ID != 0 {
		parts = append(parts, "id="+strconv.Itoa(int(e.ID)))
	}
	if e.Dev != "" {
		parts = append(parts, "dev="+e.Dev)
	}
	return strings.Join(parts, ",")
}

// Check reports what makes an endpoint unusable: no address, an IPv4-mapped IPv6 address (use
// the IPv4 one), flags that are not endpoint flags or exclude each other, an interface name the
// kernel would refuse. An ID or port of 0 means none.
func (e Endpoint) Check() error {
	if !e.Addr.IsValid() {
		return errors.New("endpoint: no address")
	}
	if e.Addr.Is4In6() {
		return fmt.Errorf("endpoint %s: an IPv4-mapped address (want %s)", e.Addr, e.Addr.Unmap())
	}
	if bad := e.Flags &^ (FlagSubflow | FlagSignal | FlagBackup | FlagFullmesh); bad != 0 {
		return fmt.Errorf("endpoint %s: unknown flags %#x", e.Addr, bad)
	}
	if e.Flags&FlagFullmesh != 0 && e.Flags&FlagSignal != 0 {
		return fmt.Errorf("endpoint %s: fullmesh and signal exclude each other", e.Addr)
	}
	if e.Dev != "" {
		if err := checkDevName(e.Dev); err != nil {
			return fmt.Errorf("endpoint %s: %w", e.Addr, err)
		}
	}
	return nil
}

// ParseEndpoint parses the --endpoint form ADDR[,subflow|signal|backup|fullmesh][,port=N][,id=N][,dev=IF].
func ParseEndpoint(s string) (Endpoint, error) {
	parts := strings.Split(s, ",")
	var e Endpoint
	a, err := netip.ParseAddr(parts[0])
	if err != nil {
		return e, fmt.Errorf("endpoint %q: %w", s, err)
	}
	e.Addr = a.Unmap()
	for _, p := range parts[1:] {
		k, v, hasV := strings.Cut(p, "=")
		switch {
		case !hasV && flagBit(k) != 0:
			e.Flags |= flagBit(k)
		case k == "port" && hasV:
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return e, fmt.Errorf("endpoint %q: bad port %q", s, v)
			}
			e.Port = uint16(n)
		case k == "id" && hasV:
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil || n == 0 {
				return e, fmt.Errorf("endpoint %q: bad id %q (1..255)", s, v)
			}
			e.ID = uint8(n)
		case k == "dev" && hasV && v != "":
			if err := checkDevName(v); err != nil {
				return e, fmt.Errorf("endpoint %s: %w", e.Addr, err)
			}
			e.Dev = v
		default:
			return e, fmt.Errorf("endpoint %q: unknown flag %q (want %s, port=N, id=N, dev=IF)", s, p, flagList(""))
		}
	}
	if e.Flags&FlagFullmesh != 0 && e.Flags&FlagSignal != 0 {
		return e, fmt.Errorf("endpoint %q: fullmesh and signal exclude each other", s)
	}
	return e, nil
}

// ifNameSize is the kernel's IFNAMSIZ: an interface name has at most ifNameSize-1 bytes.
const ifNameSize = 16

// checkDevName checks an interface name as the kernel's dev_valid_name does: 1..15 bytes, not
// "." or "..", without '/', ':' or whitespace; control characters are refused too.
func checkDevName(name string) error {
	bad := func(why string) error {
		q := name
		if len(q) > 2*ifNameSize {
			q = q[:ifNameSize] + "..."
		}
		return fmt.Errorf("dev %q: %s", q, why)
	}
	switch {
	case name == "":
		return errors.New("dev: empty interface name")
	case len(name) >= ifNameSize:
		return bad(fmt.Sprintf("%d bytes, an interface name has at most %d", len(name), ifNameSize-1))
	case name == "." || name == "..":
		return bad("not an interface name")
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return bad(fmt.Sprintf("%q in an interface name", rune(c)))
		}
	}
	return nil
}
