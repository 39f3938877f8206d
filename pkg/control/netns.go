package control

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/datapath"
)

// currentNetns returns the cookie of the calling thread's network namespace. Unlike its inode,
// a cookie is never reused by a later namespace.
func currentNetns() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return c, nil
}

// netnsRescan is how often Dial and Listen look for new interfaces in a namespace.
const netnsRescan = time.Second

// prepareNetns attaches the SYN option rewriter to every interface of the calling thread's
// network namespace that does not have it yet. Callers run on the thread that will create the
// socket (Dial, Listen).
func (s *Stack) prepareNetns() error {
	ns, err := currentNetns()
	if err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	if s.mu.netnsScan == nil {
		s.mu.netnsScan = map[uint64]time.Time{}
	}
	last, seen := s.mu.netnsScan[ns]
	s.mu.Unlock()
	if seen && now.Sub(last) < netnsRescan {
		return nil
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
	s.mu.Lock()
	s.mu.netnsScan[ns] = now
	s.mu.Unlock()
	return nil
}
