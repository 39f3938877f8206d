package tcattach

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// filterHandle is the handle of every filter this package adds: each has a priority of its own.
const filterHandle = 1

// maxAddTries bounds the retries when another process takes the priority chosen, or removes
// the qdisc, between the listing and the add.
const maxAddTries = 8

// The interfaces this process has filters on, with what it knows about their clsact qdisc. A
// qdisc is removed with the last of this process's filters on its interface, if this process
// created it and nobody else's filter is left. Another process's filters keep it; when that
// process created it, it is left to that process.
var ifaces = struct {
	sync.Mutex
	m map[ifaceKey]*iface
}{m: map[ifaceKey]*iface{}}

type ifaceKey struct {
	netns   string // vnetns UniqueId: device and inode of the namespace
	ifindex int
}

type iface struct {
	key     ifaceKey
	nl      *netlink.Handle // a route socket opened in the interface's namespace
	created bool            // this process added the clsact qdisc
	users   int             // this process's filters on the interface
}

// filter is one cls_bpf filter this package added.
type filter struct {
	ifc    *iface
	parent uint32
	prio   uint16
	progID int // the program's ID, 0 if the kernel does not tell
}

func parentOf(dir Direction) uint32 {
	if dir == Egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// attachFilter adds prog as a direct-action cls_bpf filter on the clsact qdisc of ifindex in the
// calling thread's network namespace, creating the qdisc if there is none.
func attachFilter(ifindex int, prog *ebpf.Program, dir Direction, opts Options) (*filter, error) {
	first := opts.Priority
	if first == 0 {
		first = DefaultPriority
	}
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("program info: %w", err)
	}
	id, _ := info.ID()
	name := opts.Name
	if name == "" {
		name = info.Name
	}

	ifaces.Lock()
	defer ifaces.Unlock()
	ifc, err := getIface(ifindex)
	if err != nil {
		return nil, err
	}
	f := &filter{ifc: ifc, parent: parentOf(dir), progID: int(id)}
	err = ifc.addFilter(f, prog, name, dir, first)
	if err != nil {
		ifc.release()
		return nil, err
	}
	ifc.users++
	return f, nil
}

// getIface returns this process's record of interface ifindex in the calling thread's network
// namespace, opening a netlink socket there for a new one. The caller holds ifaces.
func getIface(ifindex int) (*iface, error) {
	// The namespace and the socket must be the same thread's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := vnetns.Get()
	if err != nil {
		return nil, fmt.Errorf("current network namespace: %w", err)
	}
	key := ifaceKey{netns: ns.UniqueId(), ifindex: ifindex}
	ns.Close()
	if ifc := ifaces.m[key]; ifc != nil {
		return ifc, nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	ifc := &iface{key: key, nl: h}
	ifaces.m[key] = ifc
	return ifc, nil
}

func (ifc *iface) link() netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifc.key.ifindex}}
}

// ensureQdisc adds the clsact qdisc, or checks that the one there takes filters on dir.
func (ifc *iface) ensureQdisc(dir Direction) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifc.key.ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	err := ifc.nl.QdiscAdd(q)
	if err == nil {
		ifc.created = true
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	qs, err := ifc.nl.QdiscList(ifc.link())
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Attrs().Parent != netlink.HANDLE_CLSACT {
			continue
		}
		// An ingress qdisc sits where clsact would and has the ingress side only.
		if q.Type() == "clsact" || q.Type() == "ingress" && dir == Ingress {
			return nil
		}
		return fmt.Errorf("a %s qdisc holds the place of clsact", q.Type())
	}
	return fmt.Errorf("add clsact qdisc: %w", unix.EEXIST)
}

// filters lists the filters on one side, nil when the qdisc or the interface is gone.
func (ifc *iface) filters(parent uint32) ([]netlink.Filter, error) {
	var err error
	for range 3 { // a dump interrupted by a change is repeated
		var fs []netlink.Filter
		fs, err = ifc.nl.FilterList(ifc.link(), parent)
		switch {
		case err == nil:
			return fs, nil
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT):
			return nil, nil
		case !errors.Is(err, netlink.ErrDumpInterrupted):
			return nil, fmt.Errorf("list filters: %w", err)
		}
	}
	return nil, fmt.Errorf("list filters: %w", err)
}

// addFilter adds f for prog at the first free priority after the filters in its range.
func (ifc *iface) addFilter(f *filter, prog *ebpf.Program, name string, dir Direction, first uint16) error {
	var err error
	for range maxAddTries {
		if err = ifc.ensureQdisc(dir); err != nil {
			return err
		}
		var fs []netlink.Filter
		if fs, err = ifc.filters(f.parent); err != nil {
			return err
		}
		if f.prio, err = choosePriority(fs, first); err != nil {
			return err
		}
		err = ifc.nl.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifc.key.ifindex,
				Parent:    f.parent,
				Handle:    filterHandle,
				Priority:  f.prio,
				Protocol:  unix.ETH_P_ALL,
			},
			Fd:           prog.FD(),
			Name:         name,
			DirectAction: true,
		})
		// Another process may have taken the priority since the listing (EEXIST, or EINVAL
		// with another protocol), or removed the qdisc (EINVAL): then try again.
		if err == nil || !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.EINVAL) || !ifc.raced(f) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("add filter: %w", err)
	}
	return nil
}

// raced reports whether adding f failed because its priority is taken or the qdisc is gone.
func (ifc *iface) raced(f *filter) bool {
	qs, err := ifc.nl.QdiscList(ifc.link())
	if err != nil {
		return false
	}
	if !slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Attrs().Parent == netlink.HANDLE_CLSACT }) {
		return true
	}
	fs, err := ifc.filters(f.parent)
	return err == nil && slices.ContainsFunc(fs, func(g netlink.Filter) bool { return g.Attrs().Priority == f.prio })
}

// choosePriority returns the priority after the highest one in use in [first,
// first+PrioritySpan), so that a filter added later runs later, as with tcx; when the range is
// full up to its end, the lowest free one in it.
func choosePriority(fs []netlink.Filter, first uint16) (uint16, error) {
	end := min(int(first)+PrioritySpan, 1<<16) // exclusive
	used := map[int]bool{}
	top := -1
	for _, f := range fs {
		p := int(f.Attrs().Priority)
		used[p] = true
		if p >= int(first) && p < end {
			top = max(top, p)
		}
	}
	if top < 0 {
		return first, nil
	}
	if top+1 < end {
		return uint16(top + 1), nil
	}
	for p := int(first); p < end; p++ {
		if !used[p] {
			return uint16(p), nil
		}
	}
	return 0, fmt.Errorf("no free priority in [%#x, %#x)", first, end)
}

// close removes the filter if it is still the one this package added, then the qdisc when
// nothing else needs it.
func (f *filter) close() error {
	ifaces.Lock()
	defer ifaces.Unlock()
	ifc := f.ifc
	err := f.remove()
	ifc.users--
	return errors.Join(err, ifc.release())
}

func (f *filter) remove() error {
	fs, err := f.ifc.filters(f.parent)
	if err != nil {
		return err
	}
	for _, g := range fs {
		a := g.Attrs()
		if a.Priority != f.prio || a.Handle != filterHandle {
			continue
		}
		if b, ok := g.(*netlink.BpfFilter); !ok || f.progID != 0 && b.Id != f.progID {
			return nil // replaced by someone else: ours is gone
		}
		err := f.ifc.nl.FilterDel(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
			LinkIndex: f.ifc.key.ifindex,
			Parent:    f.parent,
			Handle:    filterHandle,
			Priority:  f.prio,
			Protocol:  unix.ETH_P_ALL,
		}})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete filter on ifindex %d prio %#x: %w", f.ifc.key.ifindex, f.prio, err)
		}
		return nil
	}
	return nil
}

// release forgets an interface that has none of this process's filters left, removing the
// clsact qdisc if this process created it and no filter is left on either side. The caller
// holds ifaces.
func (ifc *iface) release() error {
	if ifc.users > 0 {
		return nil
	}
	delete(ifaces.m, ifc.key)
	defer ifc.nl.Close()
	if !ifc.created {
		return nil
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := ifc.filters(parent)
		if err != nil || len(fs) > 0 {
			return err
		}
	}
	err := ifc.nl.QdiscDel(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifc.key.ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	})
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete clsact qdisc on ifindex %d: %w", ifc.key.ifindex, err)
	}
	return nil
}

// RemoveStale deletes the cls_bpf filters on either side of interface ifindex (in the calling
// thread's network namespace) whose name stale accepts: those a process killed before it could
// close its links left behind (filters, unlike tcx links, outlive their process). It returns
// the names of the filters it deleted. Interfaces without a clsact qdisc have none. A clsact qdisc
// left empty by the removal is deleted too.
func RemoveStale(ifindex int, stale func(name string) bool) ([]string, error) {
	ifaces.Lock()
	defer ifaces.Unlock()
	ifc, err := getIface(ifindex)
	if err != nil {
		return nil, err
	}
	defer func() {
		if ifc.users == 0 { // a record made for this call alone
			ifc.nl.Close()
			delete(ifaces.m, ifc.key)
		}
	}()
	var removed []string
	var errs []error
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := ifc.filters(parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range fs {
			b, ok := f.(*netlink.BpfFilter)
			if !ok || b.Name == "" || !stale(b.Name) {
				continue
			}
			if err := ifc.nl.FilterDel(b); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete stale filter %s: %w", b.Name, err))
				continue
			}
			removed = append(removed, b.Name)
		}
	}
	if len(removed) > 0 && len(errs) == 0 && ifc.users == 0 {
		// The qdisc that held only stale filters goes with them (its creator is gone, or it
		// would have nothing to remove): the next Attach adds its own and removes it at Close.
		in, err1 := ifc.filters(netlink.HANDLE_MIN_INGRESS)
		out, err2 := ifc.filters(netlink.HANDLE_MIN_EGRESS)
		if err1 == nil && err2 == nil && len(in)+len(out) == 0 {
			q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
			if err := ifc.nl.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("delete emptied clsact qdisc: %w", err))
			}
		}
	}
	return removed, errors.Join(errs...)
}
