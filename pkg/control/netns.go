package control

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/datapath"
)

// currentNetns returns the inode of the calling thread's network namespace.
func currentNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("stat network namespace: %w", err)
	}
	return st.Ino, nil
}

// prepareNetns attaches the SYN option rewriter to every interface of the calling thread's
// network namespace that does not have it yet. Callers run on the thread that will create the
// socket (Dial, Listen).
func (s *Stack) prepareNetns() error {
	ns, err := currentNetns()
	if err != nil {
		return err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		k := datapath.IfaceKey{Netns: ns, Ifindex: l.Attrs().Index}
		if s.dp.Attached(k) {
			continue
		}
		if err := s.dp.AttachInterface(k); err != nil {
			return err
		}
	}
	return nil
}
