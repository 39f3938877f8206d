// Package transparent intercepts the outgoing TCP connections of a network namespace with eBPF
// (bpf/transparent.bpf.c), for `mptcpd --transparent`: each one is sent to mptcpd's listener on
// loopback, which looks up the destination the application asked for with Original and carries
// the connection there over MPTCP.
//
// The programs are attached to a cgroup (the cgroup2 root unless told otherwise) through BPF
// links, never pinned: they go when the process closes them or dies, however it dies. Cgroups
// are host-wide, so connect looks at the socket's network namespace and leaves every other one
// alone. Loopback destinations, the connections of mptcpd's own cgroup, the subflows of the
// kernel's MPTCP and the sockets the kernel makes for itself are never intercepted; Exclusions
// leave more out. The application sees, with getpeername, the address it connected to.
//
// It needs Linux 5.19 (bpf_skc_to_mptcp_sock in connect), with BTF; Start says what is missing.
package transparent

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/mptcpgo/mptcpgo/internal/bpfenum"

	"github.com/mptcpgo/mptcpgo/internal/cgroup2"
	"golang.org/x/sys/unix"
)

const (
	afInet  = unix.AF_INET
	afInet6 = unix.AF_INET6
)

// errClosed: the Interceptor is closed.
var errClosed = errors.New("transparent: closed")

// Config says what to intercept and where to send it.
type Config struct {
	// Cgroup is the cgroup v2 directory to attach to: connections of processes in its subtree
	// are intercepted. "" is the root of the cgroup v2 hierarchy: every process.
	Cgroup string
	// NetnsCookie is the network namespace whose connections are intercepted
	// (SO_NETNS_COOKIE); 0 is the calling thread's.
	NetnsCookie uint64
	// OwnCgroupID is the id of a cgroup whose processes' connections are never intercepted:
	// mptcpd's own. 0 is the calling process's current cgroup.
	OwnCgroupID uint64
	// Listen4 is mptcpd's IPv4 listener, to which connections to IPv4 destinations go
	// (127.0.0.1:port). Required.
	Listen4 netip.AddrPort
	// Listen6 is mptcpd's IPv6 listener ([::1]:port). The zero value leaves connections to IPv6
	// destinations alone; those of dual-stack sockets to IPv4-mapped addresses still go to
	// Listen4, in the mapped form.
	Listen6 netip.AddrPort
	// Exclude lists destinations never intercepted.
	Exclude []Exclusion
}

// Interceptor is a running interception. Original and Counters may be called concurrently;
// Close ends it.
type Interceptor struct {
	objs         TransparentObjects
	links        []link.Link // in attach order
	counterNames []string    // by enum tp_counter
}

// program is one of the programs and where it goes.
type program struct {
	name   string // its section, for errors
	since  string // the Linux version that brought the attach type
	prog   func(*TransparentObjects) *ebpf.Program
	attach ebpf.AttachType
}

// programs, in attach order: connect last, so that whatever it intercepts finds sock_ops and
// getpeername in place. Close detaches in the reverse order.
var programs = []program{
	{"sockops", "4.13", func(o *TransparentObjects) *ebpf.Program { return o.TpSockops }, ebpf.AttachCGroupSockOps},
	{"cgroup/getpeername4", "5.8", func(o *TransparentObjects) *ebpf.Program { return o.TpGetpeername4 }, ebpf.AttachCgroupInet4GetPeername},
	{"cgroup/getpeername6", "5.8", func(o *TransparentObjects) *ebpf.Program { return o.TpGetpeername6 }, ebpf.AttachCgroupInet6GetPeername},
	{"cgroup/connect4", "4.17", func(o *TransparentObjects) *ebpf.Program { return o.TpConnect4 }, ebpf.AttachCGroupInet4Connect},
	{"cgroup/connect6", "4.17", func(o *TransparentObjects) *ebpf.Program { return o.TpConnect6 }, ebpf.AttachCGroupInet6Connect},
}

// Start loads the programs and attaches them.
func Start(cfg Config) (_ *Interceptor, err error) {
	var tc TransparentTpConfig
	if err := listenConfig(cfg, &tc); err != nil {
		return nil, err
	}
	for _, e := range cfg.Exclude {
		if !e.Prefix.IsValid() {
			return nil, fmt.Errorf("transparent: exclusion %v: no prefix", e)
		}
	}
	if tc.NetnsCookie = cfg.NetnsCookie; tc.NetnsCookie == 0 {
		if tc.NetnsCookie, err = netnsCookie(); err != nil {
			return nil, fmt.Errorf("transparent: %w", err)
		}
	}
	root, err := cgroup2.OpenRoot()
	if err != nil {
		return nil, fmt.Errorf("transparent: %w", err)
	}
	defer root.Close() // what is opened through it stays valid
	if tc.OwnCgroup = cfg.OwnCgroupID; tc.OwnCgroup == 0 {
		dir, err := root.CurrentDir()
		if err == nil {
			tc.OwnCgroup, err = cgroupID(dir)
		}
		if err != nil {
			return nil, fmt.Errorf("transparent: own cgroup: %w", err)
		}
	}
	dir := cfg.Cgroup
	if dir == "" {
		dir = root.Dir
	}
	cg, err := openCgroup(dir)
	if err != nil {
		return nil, fmt.Errorf("transparent: %w", err)
	}
	defer cg.Close() // the links hold the cgroup

	if err := haveFeatures(); err != nil {
		return nil, fmt.Errorf("transparent: %w", err)
	}
	spec, err := LoadTransparent()
	if err != nil {
		return nil, fmt.Errorf("transparent: %w", err)
	}
	names, err := counterNames(spec)
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["tp_cfg"].Set(tc); err != nil {
		return nil, fmt.Errorf("transparent: configure: %w", err)
	}
	spec.Maps["tp_exclude"].MaxEntries = uint32(max(1, len(cfg.Exclude)))
	i := &Interceptor{counterNames: names}
	if err := spec.LoadAndAssign(&i.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("transparent: load (the programs need Linux 5.19 and its BTF): %w\n%+v", err, ve)
		}
		return nil, fmt.Errorf("transparent: load (the programs need Linux 5.19 and its BTF): %w", err)
	}
	defer func() {
		if err != nil {
			i.Close()
		}
	}()
	for _, e := range cfg.Exclude {
		k := e.key()
		if err := i.objs.TpExclude.Put(&k, uint32(1)); err != nil {
			return nil, fmt.Errorf("transparent: exclusion %v: %w", e, err)
		}
	}
	for _, p := range programs {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: p.prog(&i.objs), Attach: p.attach})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("transparent: attach %s to %s through a BPF link: %w (cgroup links need Linux 5.7, %s Linux %s)", p.name, dir, err, p.name, p.since)
			}
			return nil, fmt.Errorf("transparent: attach %s to %s: %w", p.name, dir, err)
		}
		i.links = append(i.links, l)
	}
	return i, nil
}

// listenConfig checks the listeners and puts them into the programs' configuration.
func listenConfig(cfg Config, tc *TransparentTpConfig) error {
	l4 := cfg.Listen4
	if !l4.IsValid() || !l4.Addr().Unmap().Is4() || l4.Port() == 0 {
		return fmt.Errorf("transparent: the IPv4 listener %v is no IPv4 address and port", l4)
	}
	tc.Listen4Addr = addrWords(l4.Addr().Unmap())[0]
	tc.Listen4Port = htons(l4.Port())
	if l6 := cfg.Listen6; l6.IsValid() || l6.Port() != 0 {
		if !l6.Addr().Is6() || l6.Addr().Is4In6() || l6.Addr().Zone() != "" || l6.Port() == 0 {
			return fmt.Errorf("transparent: the IPv6 listener %v is no IPv6 address (without a zone) and port", l6)
		}
		tc.Listen6Addr = addrWords(l6.Addr())
		tc.Listen6Port = htons(l6.Port())
	}
	return nil
}

// haveFeatures checks for the kernel's program and map types, to say what is missing.
func haveFeatures() error {
	for _, f := range []struct {
		what  string
		since string
		have  func() error
	}{
		{"cgroup sock_addr programs", "4.17", func() error { return features.HaveProgramType(ebpf.CGroupSockAddr) }},
		{"sock_ops programs", "4.13", func() error { return features.HaveProgramType(ebpf.SockOps) }},
		{"socket-local storage maps", "5.2", func() error { return features.HaveMapType(ebpf.SkStorage) }},
		{"LPM trie maps", "4.11", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
		{"LRU hash maps", "4.10", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	} {
		switch err := f.have(); {
		case errors.Is(err, ebpf.ErrNotSupported):
			return fmt.Errorf("this kernel has no %s (Linux %s)", f.what, f.since)
		case err != nil:
			return fmt.Errorf("probe %s: %w", f.what, err)
		}
	}
	return nil
}

// Original returns the destination that the connection mptcpd accepted from peer (its
// RemoteAddr) was made to, and forgets it: a second call finds nothing. An IPv4-mapped original
// destination is returned as IPv4.
func (i *Interceptor) Original(peer netip.AddrPort) (netip.AddrPort, bool) {
	if i.objs.TpPeers == nil {
		return netip.AddrPort{}, false // closed
	}
	a := peer.Addr().Unmap().WithZone("")
	k := TransparentTpAddr{Addr: addrWords(a), Port: htons(peer.Port()), Family: afInet6}
	if a.Is4() {
		k.Family = afInet
	}
	var v TransparentTpAddr
	err := i.objs.TpPeers.LookupAndDelete(&k, &v)
	if errors.Is(err, ebpf.ErrNotSupported) { // before Linux 5.14 for hash maps
		if err = i.objs.TpPeers.Lookup(&k, &v); err == nil {
			i.objs.TpPeers.Delete(&k)
		}
	}
	if err != nil {
		return netip.AddrPort{}, false
	}
	orig, ok := wordsAddr(v.Family, v.Addr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(orig.Unmap(), ntohs(v.Port)), true
}

// Counters reads the programs' counters, summed over the CPUs, by name (TP_SKIP_OTHER_NETNS is
// SkipOtherNetns).
func (i *Interceptor) Counters() (map[string]uint64, error) {
	if i.objs.TpStats == nil {
		return nil, errClosed
	}
	out := make(map[string]uint64, len(i.counterNames))
	for c, name := range i.counterNames {
		var per []uint64
		if err := i.objs.TpStats.Lookup(uint32(c), &per); err != nil {
			return nil, fmt.Errorf("transparent: counters: %w", err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Close detaches the programs and unloads them. Connections intercepted before stay where they
// go, but their applications see mptcpd's listener as their peer from now on.
func (i *Interceptor) Close() error {
	var errs []error
	for n := len(i.links) - 1; n >= 0; n-- {
		errs = append(errs, i.links[n].Close())
	}
	i.links = nil
	errs = append(errs, i.objs.Close())
	i.objs = TransparentObjects{}
	return errors.Join(errs...)
}

// counterNames names the counters by index, from enum tp_counter in the object's BTF:
// TP_SKIP_OTHER_NETNS is SkipOtherNetns.
func counterNames(spec *ebpf.CollectionSpec) ([]string, error) {
	names, err := bpfenum.Names(spec, "tp_counter", "TP_", int(TransparentTpCounterTP_NR_COUNTERS))
	if err != nil {
		return nil, fmt.Errorf("transparent counters: %w", err)
	}
	return names, nil
}
