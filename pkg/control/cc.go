package control

import (
	"slices"
	"sync/atomic"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
)

// setCC sets the connection's congestion control, which each of its subflows' struct_ops
// program reads (bpf/congestion.h): before the first subflow connects, or it starts with the
// one the slot held.
func (c *Conn) setCC(cc datapath.CC) {
	c.cc = cc
	atomic.StoreUint32(&c.shm.Ctl.Cc, uint32(cc))
}

// publishCC lists for the datapath the subflows whose windows a coupled congestion control
// couples: those that carry the connection's data, the regular ones, or the backups when no
// regular one is left, at most datapath.CCMaxSubflows. Each subflow's program reads the others'
// published windows and RTTs through this list; a subflow not on it (one just joined, a backup)
// runs Reno meanwhile. Written only when it changes.
func (c *Conn) publishCC() {
	if !c.cc.Coupled() || !c.mptcp.Load() {
		return
	}
	var slots [datapath.CCMaxSubflows]uint32
	n := 0
	add := func(backups bool) {
		for _, sf := range c.subs {
			if n == len(slots) {
				return
			}
			if !sf.ready || sf.gone || (sf.backup || sf.peerBackup) != backups {
				continue
			}
			slots[n] = sf.slot
			n++
		}
	}
	add(false)
	if n == 0 {
		add(true)
	}
	if slices.Equal(slots[:n], c.st.ccSubs) {
		return
	}
	// BPF reads cc_n, then the slots below it, without a lock: shrink the count first, change
	// the slots, then grow it, so that a reader sees only slots of this connection's subflows,
	// old or new.
	ctl := &c.shm.Ctl
	atomic.StoreUint32(&ctl.CcN, uint32(min(n, len(c.st.ccSubs))))
	for i := range n {
		atomic.StoreUint32(&ctl.CcSubs[i], slots[i])
	}
	atomic.StoreUint32(&ctl.CcN, uint32(n))
	c.st.ccSubs = append(c.st.ccSubs[:0], slots[:n]...)
}

// CongestionControlNames lists the subflows' congestion controls: cubic, reno, and the coupled
// lia, olia, balia.
func CongestionControlNames() []string { return datapath.CCNames() }

// CheckCongestionControl reports whether name is a congestion control ("" is the default).
func CheckCongestionControl(name string) error {
	_, err := datapath.ParseCC(name)
	return err
}
