package datapath

import (
	"fmt"
	"strings"
)

// CC is a connection's congestion control (bpf/datapath_types.h enum cc_algo), which the
// datapath's struct_ops runs on each of its subflows: conn_ctl.cc.
type CC uint32

const (
	CCCubic CC = iota // the kernel's CUBIC, each subflow on its own
	CCReno            // Reno, each subflow on its own
	CCLIA             // Linked Increases (RFC 6356), coupled
	CCOLIA            // Opportunistic Linked Increases (Khalili et al.), coupled
	CCBALIA           // Balanced Linked Adaptation (Peng et al.), coupled
)

// CCMaxSubflows is how many subflows of a connection the coupled algorithms couple
// (CC_MAX_SUBS): conn_ctl.cc_subs.
const CCMaxSubflows = 8

var ccNames = [...]string{CCCubic: "cubic", CCReno: "reno", CCLIA: "lia", CCOLIA: "olia", CCBALIA: "balia"}

func (c CC) String() string {
	if int(c) < len(ccNames) {
		return ccNames[c]
	}
	return fmt.Sprintf("cc(%d)", uint32(c))
}

// Coupled reports whether the algorithm couples the subflows' windows.
func (c CC) Coupled() bool { return c == CCLIA || c == CCOLIA || c == CCBALIA }

// CCNames lists the congestion controls by name.
func CCNames() []string { return ccNames[:] }

// ParseCC returns the congestion control of a name ("" is CUBIC).
func ParseCC(name string) (CC, error) {
	if name == "" {
		return CCCubic, nil
	}
	for i, n := range ccNames {
		if n == name {
			return CC(i), nil
		}
	}
	return 0, fmt.Errorf("unknown congestion control %q (have %s)", name, strings.Join(ccNames[:], ", "))
}
