// Package transparentdev intercepts, for `mptcpd --transparent-dev IFNAME`, the TCP connections
// that a router forwards from the hosts behind an interface: a TC ingress program
// (bpf/transparent_dev.bpf.c) assigns each SYN to be forwarded to mptcpd's listener with
// bpf_sk_assign, as iptables' TPROXY does, and mptcpd carries the connection over MPTCP to where
// it was going. The accepted connection's LocalAddr is that original destination.
//
// # What the kernel needs
//
// A packet assigned a socket at TC ingress reaches it only if the routing decision delivers it
// locally: ip_forward and ip6_forward drop a packet that carries a socket. So the program marks
// what it assigns (Mark), and Start adds, for each device and family, the policy rule
//
//	ip rule add pref RulePriority fwmark Mark/Mark iif IFNAME lookup Table proto Protocol
//
// over the routes "local 0.0.0.0/0 dev lo" and "local ::/0 dev lo" in Table (proto Protocol).
// The rule matches packets that arrived on an intercepted device only: never a lookup for a
// packet this host sends, nor the reverse-path check of one it receives.
//
// The listener must have IP_TRANSPARENT (IPV6_TRANSPARENT on an IPv6 socket), which Start sets;
// ListenConfig makes listeners with it from the start. Without it the IPv4 handshake never
// completes: the SYN/ACK's source is the original destination, no address of this host, and
// ip_route_output_key_hash_rcu refuses a source for which __ip_dev_find finds no device
// (-ENETUNREACH) unless the flow has FLOWI_FLAG_ANYSRC, which inet_sk_flowi_flags sets for a
// transparent socket (tcp_conn_request copies the listener's bit into the request's
// no_srccheck for its replies). __ip_dev_find falls back to the local table only, not to
// Table: the kernel selftest prog_tests/sk_assign.c needs no IP_TRANSPARENT because it puts
// "local default dev lo" in the local table itself, which a router cannot do. IPv6 route
// lookups make no such check, and IPv6 handshakes complete without the bit (Linux 6.18), but it
// costs nothing and keeps both families alike. Setting it needs CAP_NET_ADMIN or CAP_NET_RAW.
// The listener's own address does not matter: one on loopback takes no other connection.
//
// # Leftovers
//
// The rules and routes outlive the process: Close removes them, and Start first removes those a
// previous run left (killed before its Close), recognised by RulePriority, Table and Protocol.
// So one process per network namespace uses this package. The program is attached through tcx
// links (Linux 6.6), which go with the process however it ends; on older kernels it is a
// cls_bpf filter named FilterName, which outlives it, and Start removes every filter of that
// name in the namespace.
//
// It needs Linux 5.7 (bpf_sk_assign) and BTF; Start says what is missing.
package transparentdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/mptcpgo/mptcpgo/internal/bpfenum"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
)

// The policy routing of the interception, fixed so that a later run finds what an earlier one
// left: `ip rule show pref 262`, `ip route show table 262`.
const (
	// Table is the routing table that holds "local 0.0.0.0/0 dev lo" and "local ::/0 dev lo".
	// 262 is IPPROTO_MPTCP.
	Table = 262
	// RulePriority is the preference of the rules that send marked packets to Table: after the
	// local table's rule (0), before the usual ones (main is 32766).
	RulePriority = 262
	// Protocol is the routing protocol number ("proto") of the rules and routes, unassigned in
	// iproute2's rt_protos.
	Protocol = 0x6d // 'm'
	// Mark is the packet mark bit that the program sets on the packets it assigns and the rules
	// match (fwmark Mark/Mark); other bits of the mark are left as they are.
	Mark = 0x2000
	// FilterName names the cls_bpf filter on kernels without tcx.
	FilterName = "mptcpd_tpdev"
)

// errClosed: the Interceptor is closed.
var errClosed = errors.New("transparentdev: closed")

// Config says where to intercept and where to send the connections.
type Config struct {
	// Devs are the interfaces whose incoming TCP connections to be forwarded are intercepted:
	// Ethernet devices (a bridge, not its ports).
	Devs []string
	// Listen4 is mptcpd's listener for IPv4 connections, plain TCP (not MPTCP): an IPv4 socket
	// or a dual-stack IPv6 one. Required.
	Listen4 *net.TCPListener
	// Listen6 is mptcpd's listener for IPv6 connections, an IPv6 socket (it may be Listen4).
	// nil leaves IPv6 alone.
	Listen6 *net.TCPListener
	// Exclude lists destinations never intercepted. The router's own addresses need not be
	// here: the program asks the routing tables whether each packet is delivered locally, so an
	// address added after Start is left alone as well. An IPv4-mapped prefix is the IPv4 one.
	Exclude []netip.Prefix

	legacy bool // tests: a cls_bpf filter even where tcx works
}

// Interceptor is a running interception. Counters and Close may be called from any goroutine.
type Interceptor struct {
	counterNames []string // by enum tpd_counter

	mu     sync.Mutex // guards what follows
	objs   TransparentdevObjects
	links  []*tcattach.Link
	nl     *netlink.Handle // a route socket in the namespace Start ran in
	rules  []netlink.Rule
	routes []netlink.Route
	closed bool
}

// Start loads the program, puts the listeners in its map, sets up the policy routing (after
// removing what a previous run left) and attaches the program to the ingress of each device. It
// must run on a thread in the devices' network namespace, which must also be the listeners'.
func Start(cfg Config) (_ *Interceptor, err error) {
	if err := checkConfig(cfg); err != nil {
		return nil, fmt.Errorf("transparentdev: %w", err)
	}
	if err := haveFeatures(); err != nil {
		return nil, fmt.Errorf("transparentdev: %w", err)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("transparentdev: netlink: %w", err)
	}
	i := &Interceptor{nl: nl}
	defer func() {
		if err != nil {
			i.Close()
		}
	}()
	devs, err := i.devices(cfg.Devs)
	if err != nil {
		return nil, fmt.Errorf("transparentdev: %w", err)
	}
	if err := i.removeLeftovers(); err != nil {
		return nil, fmt.Errorf("transparentdev: remove what a previous run left: %w", err)
	}
	if i.counterNames, err = load(&i.objs, cfg.Exclude); err != nil {
		return nil, err
	}
	if err := i.putListener(cfg.Listen4, listen4); err != nil {
		return nil, fmt.Errorf("transparentdev: IPv4 listener %v: %w", cfg.Listen4.Addr(), err)
	}
	families := []int{unix.AF_INET}
	if cfg.Listen6 != nil {
		if err := i.putListener(cfg.Listen6, listen6); err != nil {
			return nil, fmt.Errorf("transparentdev: IPv6 listener %v: %w", cfg.Listen6.Addr(), err)
		}
		families = append(families, unix.AF_INET6)
	}
	// The routing first: the first SYN the program assigns must be delivered.
	if err := i.addRouting(devs, families); err != nil {
		return nil, fmt.Errorf("transparentdev: %w", err)
	}
	for _, d := range devs {
		l, err := tcattach.Attach(d.Attrs().Index, i.objs.TpdIngress, tcattach.Ingress, tcattach.Options{Legacy: cfg.legacy, Name: FilterName})
		if err != nil {
			return nil, fmt.Errorf("transparentdev: %s: %w", d.Attrs().Name, err)
		}
		i.links = append(i.links, l)
	}
	return i, nil
}

// load loads the program and its maps into objs, with the exclusions in place, and returns the
// counters' names.
func load(objs *TransparentdevObjects, exclude []netip.Prefix) ([]string, error) {
	spec, err := LoadTransparentdev()
	if err != nil {
		return nil, fmt.Errorf("transparentdev: %w", err)
	}
	names, err := counterNames(spec)
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["tpd_cfg"].Set(TransparentdevTpdConfig{Mark: Mark}); err != nil {
		return nil, fmt.Errorf("transparentdev: configure: %w", err)
	}
	spec.Maps["tpd_exclude"].MaxEntries = uint32(max(1, len(exclude)))
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("transparentdev: load (the program needs Linux 5.7 and its BTF): %w\n%+v", err, ve)
		}
		return nil, fmt.Errorf("transparentdev: load (the program needs Linux 5.7 and its BTF): %w", err)
	}
	for _, p := range exclude {
		k := exclusionKey(p)
		if err := objs.TpdExclude.Put(&k, uint32(1)); err != nil {
			objs.Close()
			*objs = TransparentdevObjects{}
			return nil, fmt.Errorf("transparentdev: exclusion %v: %w", p, err)
		}
	}
	return names, nil
}

// checkConfig checks what Start can check without the kernel.
func checkConfig(cfg Config) error {
	if len(cfg.Devs) == 0 {
		return errors.New("no device to intercept on")
	}
	for n, d := range cfg.Devs {
		if d == "" {
			return errors.New("a device without a name")
		}
		if slices.Contains(cfg.Devs[:n], d) {
			return fmt.Errorf("device %s given twice", d)
		}
	}
	if cfg.Listen4 == nil {
		return errors.New("no IPv4 listener")
	}
	for _, p := range cfg.Exclude {
		if !p.IsValid() {
			return fmt.Errorf("exclusion %v: not a prefix", p)
		}
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
		{"TC programs", "4.1", func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
		{"sockmaps", "4.14", func() error { return features.HaveMapType(ebpf.SockMap) }},
		{"LPM trie maps", "4.11", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
		{"bpf_sk_assign", "5.7", func() error { return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkAssign) }},
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

// devices looks the devices up, refusing those without Ethernet headers (the program reads one).
func (i *Interceptor) devices(names []string) ([]netlink.Link, error) {
	var devs []netlink.Link
	for _, name := range names {
		d, err := i.nl.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", name, err)
		}
		if t := d.Attrs().EncapType; t != "ether" {
			return nil, fmt.Errorf("device %s: link type %s: only Ethernet devices are supported", name, t)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// The listeners' places in tpd_listeners (TPD_LISTEN4, TPD_LISTEN6).
const (
	listen4 uint32 = 0
	listen6 uint32 = 1
)

// putListener checks a listener, makes it transparent and puts it in tpd_listeners at key.
func (i *Interceptor) putListener(ln *net.TCPListener, key uint32) error {
	raw, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = raw.Control(func(fd uintptr) {
		if opErr = checkListener(int(fd), key == listen6); opErr != nil {
			return
		}
		if opErr = setTransparent(int(fd)); opErr != nil {
			return
		}
		if opErr = i.objs.TpdListeners.Update(key, uint64(fd), ebpf.UpdateAny); opErr != nil {
			opErr = fmt.Errorf("put in the sockmap: %w", opErr)
		}
	})
	return errors.Join(err, opErr)
}

// checkListener checks that fd is a listening plain TCP socket that takes IPv4 (or, with ipv6,
// IPv6) connections.
func checkListener(fd int, ipv6 bool) error {
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	if proto != unix.IPPROTO_TCP {
		return fmt.Errorf("protocol %d, not TCP: an MPTCP listener cannot be assigned a TCP SYN (use ListenConfig, or SetMultipathTCP(false))", proto)
	}
	on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("SO_ACCEPTCONN: %w", err)
	}
	if on == 0 {
		return errors.New("not listening")
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("SO_DOMAIN: %w", err)
	}
	switch {
	case ipv6 && dom != unix.AF_INET6:
		return errors.New("not an IPv6 socket")
	case !ipv6 && dom == unix.AF_INET6:
		only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		if only != 0 {
			return errors.New("an IPv6-only socket")
		}
	case !ipv6 && dom != unix.AF_INET:
		return fmt.Errorf("address family %d", dom)
	}
	return nil
}

// setTransparent sets IP_TRANSPARENT, or IPV6_TRANSPARENT on an IPv6 socket (the same bit of
// the socket, which a dual-stack socket's IPv4 connections use too).
func setTransparent(fd int) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("SO_DOMAIN: %w", err)
	}
	if dom == unix.AF_INET6 {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}
	if err != nil {
		return fmt.Errorf("set IP_TRANSPARENT (needs CAP_NET_ADMIN): %w", err)
	}
	return nil
}

// ListenConfig returns the configuration of a listener that Start takes: plain TCP, with
// IP_TRANSPARENT set before it listens. (Start sets IP_TRANSPARENT on a listener made otherwise:
// the option counts when a SYN comes, not at listen.)
func ListenConfig() net.ListenConfig {
	lc := net.ListenConfig{
		Control: func(network, address string, c syscall.RawConn) error {
			var opErr error
			if err := c.Control(func(fd uintptr) { opErr = setTransparent(int(fd)) }); err != nil {
				return err
			}
			return opErr
		},
	}
	lc.SetMultipathTCP(false)
	return lc
}

// exclusionKey returns a prefix as tpd_exclude's key (struct tpd_excl_key).
func exclusionKey(p netip.Prefix) TransparentdevTpdExclKey {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	k := TransparentdevTpdExclKey{Prefixlen: 32 + uint32(p.Bits()), Family: unix.AF_INET6}
	if p.Addr().Is4() {
		k.Family = unix.AF_INET
	}
	k.Addr = addrWords(p.Addr())
	return k
}

// addrWords returns an address as the C side's __u32 addr[4], in network byte order, IPv4 in the
// first word.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	b := a.AsSlice()
	for n := range len(b) / 4 {
		w[n] = binary.NativeEndian.Uint32(b[4*n:])
	}
	return w
}

// Counters reads the program's counters, summed over the CPUs, by name (TPD_SKIP_NO_ROUTE is
// SkipNoRoute). They count packets, except Intercepted4 and Intercepted6 (SYNs, connections but
// for the SYN's retransmissions) and AssignedCookie (connections).
func (i *Interceptor) Counters() (map[string]uint64, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, errClosed
	}
	out := make(map[string]uint64, len(i.counterNames))
	for c, name := range i.counterNames {
		var per []uint64
		if err := i.objs.TpdStats.Lookup(uint32(c), &per); err != nil {
			return nil, fmt.Errorf("transparentdev: counters: %w", err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Close detaches the program, removes the rules and routes and unloads the program. The
// connections intercepted before lose their packets to forwarding from then on: their peers
// see them reset.
func (i *Interceptor) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	var errs []error
	for _, l := range i.links {
		errs = append(errs, l.Close())
	}
	i.links = nil
	errs = append(errs, i.removeRouting())
	errs = append(errs, i.objs.Close())
	i.objs = TransparentdevObjects{}
	i.nl.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("transparentdev: close: %w", err)
	}
	return nil
}

// counterNames names the counters by index, from enum tpd_counter in the object's BTF:
// TPD_SKIP_NO_ROUTE is SkipNoRoute.
func counterNames(spec *ebpf.CollectionSpec) ([]string, error) {
	names, err := bpfenum.Names(spec, "tpd_counter", "TPD_", int(TransparentdevTpdCounterTPD_NR_COUNTERS))
	if err != nil {
		return nil, fmt.Errorf("transparentdev counters: %w", err)
	}
	return names, nil
}
