package pm

import (
	"fmt"
	"strconv"
	"strings"
)

// flagNames are the endpoint flags by name, in `ip mptcp endpoint`'s order.
var flagNames = []struct {
	bit  int
	name string
}{{FlagSignal, "signal"}, {FlagSubflow, "subflow"}, {FlagBackup, "backup"}, {FlagFullmesh, "fullmesh"}}

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

// ParseFlags parses flag names (signal, subflow, backup, fullmesh).
func ParseFlags(names []string) (int, error) {
	flags := 0
	for _, n := range names {
		ok := false
		for _, f := range flagNames {
			if f.name == n {
				flags |= f.bit
				ok = true
			}
		}
		if !ok {
			return 0, fmt.Errorf("unknown endpoint flag %q (want signal, subflow, backup or fullmesh)", n)
		}
	}
	return flags, nil
}

// Spec returns the endpoint in ParseEndpoint's form, so that ParseEndpoint(e.Spec()) checks it.
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
