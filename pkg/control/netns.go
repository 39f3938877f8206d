package control

import (
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
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
	return s.prepareNetnsOf(ns)
}

// processNetns returns the cookie of the process's network namespace: the one of every thread
// that goroutines not locked to a thread run on (a thread that entered another namespace stays
// locked to its goroutine until it left it, or ends with it). Read once, on a goroutine of its
// own, so that a caller locked in another namespace does not answer for the process.
var processNetns = sync.OnceValues(func() (uint64, error) {
	type result struct {
		cookie uint64
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := currentNetns()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.cookie, r.err
})

// socketNetns returns the cookie of a socket's network namespace.
func socketNetns(fd int) (uint64, error) {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return c, nil
}

// netnsScan is a namespace's scan for interfaces: when the last one completed, and the one in
// progress.
type netnsScan struct {
	last     time.Time     // zero: none completed yet
	scanning chan struct{} // closed when the scan in progress ends; nil when none runs
}

// prepareNetnsOf is prepareNetns for the namespace whose cookie is ns, which the calling
// thread is in. One caller scans at a time: the others go on at once if a scan completed
// before (its interfaces have the rewriter; a new one is seen at most netnsRescan late, as
// between scans), or wait for the first one to end. Without that, a burst of dials in a
// namespace whose last scan was a second old all listed its interfaces at once (a netlink
// dump each, blocking their threads: mptcpd made threads, and kept them, for it).
func (s *Stack) prepareNetnsOf(ns uint64) error {
	for {
		now := time.Now()
		s.mu.Lock()
		if s.mu.netnsScan == nil {
			s.mu.netnsScan = map[uint64]*netnsScan{}
		}
		sc := s.mu.netnsScan[ns]
		if sc == nil {
			sc = &netnsScan{}
			s.mu.netnsScan[ns] = sc
		}
		if !sc.last.IsZero() && (now.Sub(sc.last) < netnsRescan || sc.scanning != nil) {
			s.mu.Unlock()
			return nil
		}
		if wait := sc.scanning; wait != nil {
			s.mu.Unlock()
			<-wait // the first scan: then go on, or scan again if it failed
			continue
		}
		done := make(chan struct{})
		sc.scanning = done
		s.mu.Unlock()
		scan := s.scanNetns
		if scan == nil {
			scan = s.attachInterfaces
		}
		err := scan(ns)
		s.mu.Lock()
		if err == nil {
			sc.last = now
		}
		sc.scanning = nil
		s.mu.Unlock()
		close(done)
		return err
	}
}

// attachInterfaces attaches the SYN option rewriter to each interface of the calling thread's
// namespace (cookie ns) that does not have it yet.
func (s *Stack) attachInterfaces(ns uint64) error {
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

// nsRefs are shared handles on the network namespaces of the stack's listeners and
// connections: one per namespace, closed when its last user releases it. Join subflows are
// dialled in their connection's namespace through it.
type nsRefs struct {
	mu sync.Mutex
	m  map[uint64]*nsRef // by namespace cookie
}

// nsRef is a counted handle on a network namespace; nil stands for none.
type nsRef struct {
	h      netns.NsHandle
	cookie uint64
	refs   int // guarded by nsRefs.mu
}

// handle returns the namespace handle, or a closed one for none.
func (r *nsRef) handle() netns.NsHandle {
	if r == nil {
		return netns.None()
	}
	return r.h
}

// acquireNetns returns a reference to the calling thread's network namespace.
func (s *Stack) acquireNetns() (*nsRef, error) {
	cookie, err := currentNetns()
	if err != nil {
		return nil, err
	}
	return s.acquireNetnsOf(cookie)
}

// acquireNetnsOf is acquireNetns for the namespace whose cookie is cookie, which the calling
// thread is in.
func (s *Stack) acquireNetnsOf(cookie uint64) (*nsRef, error) {
	s.nsRefs.mu.Lock()
	defer s.nsRefs.mu.Unlock()
	if r := s.nsRefs.m[cookie]; r != nil {
		r.refs++
		return r, nil
	}
	h, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("network namespace handle: %w", err)
	}
	if s.nsRefs.m == nil {
		s.nsRefs.m = map[uint64]*nsRef{}
	}
	r := &nsRef{h: h, cookie: cookie, refs: 1}
	s.nsRefs.m[cookie] = r
	return r, nil
}

// holdNetns takes another reference to r.
func (s *Stack) holdNetns(r *nsRef) *nsRef {
	if r == nil {
		return nil
	}
	s.nsRefs.mu.Lock()
	defer s.nsRefs.mu.Unlock()
	r.refs++
	return r
}

// releaseNetns drops a reference; the last one closes the handle.
func (s *Stack) releaseNetns(r *nsRef) {
	if r == nil {
		return
	}
	s.nsRefs.mu.Lock()
	defer s.nsRefs.mu.Unlock()
	if r.refs--; r.refs == 0 {
		delete(s.nsRefs.m, r.cookie)
		r.h.Close()
	}
}

// netnsHandles returns the number of namespace handles the stack holds open.
func (s *Stack) netnsHandles() int {
	s.nsRefs.mu.Lock()
	defer s.nsRefs.mu.Unlock()
	return len(s.nsRefs.m)
}
