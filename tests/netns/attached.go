package netns

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
)

// TCAttached lists the TC programs attached to the namespace's interfaces, whichever way: tcx
// links (where the kernel has tcx), cls_bpf filters, and clsact qdiscs (which hold them), one
// string each, e.g. "veth0 tcx ingress prog 42" or "veth0 clsact".
func (ns *Namespace) TCAttached() ([]string, error) {
	links, err := ns.nl.LinkList()
	if err != nil {
		return nil, err
	}
	tcx := tcattach.HaveTCX() == nil
	var out []string
	for _, l := range links {
		name, idx := l.Attrs().Name, l.Attrs().Index
		for _, at := range []struct {
			t   ebpf.AttachType
			dir string
		}{{ebpf.AttachTCXIngress, "ingress"}, {ebpf.AttachTCXEgress, "egress"}} {
			if !tcx {
				break // the query is refused (EINVAL) where there is no tcx
			}
			var res *link.QueryResult
			err := ns.Do(func() error {
				var err error
				res, err = link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at.t})
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s: query tcx %s: %w", name, at.dir, err)
			}
			for _, p := range res.Programs {
				out = append(out, fmt.Sprintf("%s tcx %s prog %d", name, at.dir, p.ID))
			}
		}
		qs, err := ns.nl.QdiscList(l)
		if err != nil {
			return nil, err
		}
		for _, q := range qs {
			if q.Type() != "clsact" {
				continue
			}
			out = append(out, name+" clsact")
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, err := ns.nl.FilterList(l, parent)
				if err != nil {
					return nil, err
				}
				for _, f := range fs {
					if b, ok := f.(*netlink.BpfFilter); ok {
						out = append(out, fmt.Sprintf("%s cls_bpf %s", name, b.Name))
					}
				}
			}
		}
	}
	return out, nil
}
