package netns

import (
	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
)

// Stripper is a middlebox on one end's ingress that, once enabled, removes the MPTCP options
// of every TCP segment arriving there (IPv4 and IPv6), as some middleboxes do.
type Stripper struct {
	objs testbpf.StripperObjects
	l    *tcattach.Link
}

// StripMPTCP attaches a disabled stripper to this end's ingress; Enable turns it on.
func (e *Iface) StripMPTCP() *Stripper {
	tb := e.NS.topo.tb
	tb.Helper()
	st := &Stripper{}
	if err := testbpf.LoadStripperObjects(&st.objs, nil); err != nil {
		tb.Fatalf("netns: load stripper: %v", err)
	}
	tb.Cleanup(func() {
		if st.l != nil {
			st.l.Close()
		}
		st.objs.Close()
	})
	err := e.NS.Do(func() error {
		var err error
		st.l, err = tcattach.Attach(e.Index, st.objs.StripMptcp, tcattach.Ingress, tcattach.Options{})
		return err
	})
	if err != nil {
		tb.Fatalf("netns: attach stripper to %s: %v", e, err)
	}
	return st
}

// Enable starts stripping.
func (st *Stripper) Enable() error {
	return st.objs.StripOn.Update(uint32(0), uint32(1), ebpf.UpdateAny)
}

// Stripped returns how many segments lost their MPTCP options.
func (st *Stripper) Stripped() (uint64, error) {
	var per []uint64
	if err := st.objs.StripStats.Lookup(uint32(0), &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// Disable stops stripping.
func (st *Stripper) Disable() error {
	return st.objs.StripOn.Update(uint32(0), uint32(0), ebpf.UpdateAny)
}
