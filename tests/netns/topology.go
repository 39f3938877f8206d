// Package netns builds two-namespace, multi-path topologies for tests against the kernel's MPTCP.
package netns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// RunDir is where named namespaces are pinned, as `ip netns` does.
const RunDir = "/run/netns"

// NamePrefix starts the name of every namespace this package creates. The full name is
// NamePrefix + PID + "-" + random suffix + "-a" or "-b"; the PID lets New remove namespaces
// left behind by a test binary that was killed before its cleanup ran.
const NamePrefix = "mpg-"

const (
	tableBase     = 100  // path i routes in table tableBase+i
	firstPrioBase = 1000 // priority of the preferred rule of path i: firstPrioBase+i
	thenPrioBase  = 2000 // priority of the other rule of path i: thenPrioBase+i
)

// Config describes a topology. The zero value gives one IPv4-only path.
type Config struct {
	// Paths is the number of veth paths between A and B; 0 means 1. At most 255.
	Paths int
	// IPv6 also configures the fd00:i::/64 addresses, routes and rules.
	IPv6 bool
	// Initiator is the side that creates subflows (the MPTCP client, or whichever side
	// binds sockets to chosen addresses); the zero value is A. Every connection runs,
	// in both directions, over the path of its address on the Initiator side: see
	// Topology.
	Initiator Side
	// A and B configure the two namespaces.
	A, B NamespaceConfig
}

// NamespaceConfig configures one namespace of a topology.
type NamespaceConfig struct {
	// Sysctls are written before the links exist (so net.*.conf.default.* applies to the
	// veths) and again, for keys that did not exist yet, once the links do (per-interface
	// keys such as net.ipv4.conf.veth1.rp_filter). Keys use dots: "net.mptcp.enabled".
	Sysctls map[string]string
}

// Topology is two network namespaces, A and B, joined by len(Paths) veth pairs.
//
//	          namespace A                                   namespace B
//	        mpg-PID-RAND-a                                mpg-PID-RAND-b
//	+---------------------------+    path 0    +---------------------------+
//	| veth0  10.0.0.1/24        |==============| veth0  10.0.0.2/24        |
//	|        fd00:0::1/64       |              |        fd00:0::2/64       |
//	| veth1  10.1.0.1/24        |==============| veth1  10.1.0.2/24        |
//	|        fd00:1::1/64       |    path 1    |        fd00:1::2/64       |
//	|  ...   10.i.0.1           |     ...      |  ...   10.i.0.2           |
//	| lo up                     |              | lo up                     |
//	+---------------------------+              +---------------------------+
//	 table 100+i:                                table 100+i:
//	   10.i.0.0/24 dev vethi src 10.i.0.1          10.i.0.0/24 dev vethi src 10.i.0.2
//	   default via 10.i.0.2 dev vethi              default via 10.i.0.1 dev vethi
//	 rules (A is the Initiator, the default):    rules:
//	   1000+i from 10.i.0.1     lookup 100+i       1000+i to 10.i.0.0/24   lookup 100+i
//	   2000+i to   10.i.0.0/24  lookup 100+i       2000+i from 10.i.0.2    lookup 100+i
//
// Path i (0-based) has 10.i.0.1 on A and 10.i.0.2 on B, and with IPv6 fd00:i::1 and
// fd00:i::2 (i in hex; nodad, so usable at once); its veth is "veth<i>" on both sides.
//
// Routing: the Initiator side (Config.Initiator, A by default) routes by source address
// first, so a socket bound to its path-i address leaves through path i whatever the
// destination. The other side routes by destination first, so it answers through the
// path of the Initiator's address. Every connection therefore runs over one path in both
// directions, the path of its Initiator-side address: a subflow from A's 10.1.0.1 to B's
// 10.0.0.2 uses path 1 both ways. That symmetry is required, not cosmetic: the kernel's
// subflows from an endpoint with "dev" are bound to that device and drop what arrives
// through another one. (Per-socket marks cannot do this: the kernel copies the MPTCP
// socket's mark and bound device onto every join subflow.) The price: a socket of the
// other side bound to its path-j address and connected to the Initiator's path-i
// address (i != j) leaves through path i. Unbound sockets pick the path of the destination.
// rp_filter is off, and IPv6 addresses survive a link going down.
//
// Everything is removed by a cleanup registered with the test: processes still in the
// namespaces are killed, sockets opened through the harness are closed, the veths are
// deleted and the namespaces are unmounted and removed.
type Topology struct {
	A, B  *Namespace
	Paths []*Path

	tb  testing.TB
	cfg Config
}

// Side names a namespace of a topology.
type Side int

// Sides.
const (
	SideA Side = iota
	SideB
)

func (s Side) String() string { return string(rune('A' + s)) }

// Other returns the other side.
func (s Side) Other() Side { return 1 - s }

// Family selects IPv4 or IPv6.
type Family int

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string { return "IPv" + strconv.Itoa(int(f)) }

// New builds a topology, or fails the test. Call it from the test goroutine.
func New(tb testing.TB, cfg Config) *Topology {
	tb.Helper()
	testenv.RequireRoot(tb)
	if cfg.Paths == 0 {
		cfg.Paths = 1
	}
	if cfg.Paths < 0 || cfg.Paths > 255 {
		tb.Fatalf("netns: %d paths, want 1..255", cfg.Paths)
	}
	if cfg.Initiator != SideA && cfg.Initiator != SideB {
		tb.Fatalf("netns: bad Initiator %d", cfg.Initiator)
	}
	sweepStale()

	t := &Topology{tb: tb, cfg: cfg}
	tb.Cleanup(t.cleanup) // registered first: runs last, after sockets and processes
	var base string
	var err error
	for range 5 { // the names are random: retry on the unlikely collision
		base = fmt.Sprintf("%s%d-%06x", NamePrefix, os.Getpid(), rand.Uint32()&0xffffff)
		if t.A, err = newNamespace(t, base+"-a", SideA); !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		tb.Fatalf("netns: %v", err)
	}
	if t.B, err = newNamespace(t, base+"-b", SideB); err != nil {
		tb.Fatalf("netns: %v", err)
	}
	if err := t.build(); err != nil {
		tb.Fatalf("netns: build topology %s: %v", base, err)
	}
	tb.Logf("netns: A=%s B=%s, %d path(s), IPv6 %t, initiator %v", t.A.name, t.B.name, cfg.Paths, cfg.IPv6, cfg.Initiator)
	return t
}

// NS returns the namespace of side s.
func (t *Topology) NS(s Side) *Namespace {
	if s == SideB {
		return t.B
	}
	return t.A
}

// Path returns path i, or fails the test.
func (t *Topology) Path(i int) *Path {
	t.tb.Helper()
	if i < 0 || i >= len(t.Paths) {
		t.tb.Fatalf("netns: no path %d (have %d)", i, len(t.Paths))
	}
	return t.Paths[i]
}

func (t *Topology) build() error {
	base := []struct{ k, v string }{
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv6.conf.all.keep_addr_on_down", "1"},
		{"net.ipv6.conf.default.keep_addr_on_down", "1"},
	}
	var later [2]map[string]string
	for s, ns := range []*Namespace{t.A, t.B} {
		for _, kv := range base {
			if err := ns.writeSysctl(kv.k, kv.v); err != nil {
				return err
			}
		}
		later[s] = map[string]string{}
		for k, v := range ns.cfg().Sysctls {
			if err := ns.writeSysctl(k, v); errors.Is(err, os.ErrNotExist) {
				later[s][k] = v
			} else if err != nil {
				return err
			}
		}
		lo, err := ns.nl.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("%s: lo: %w", ns.name, err)
		}
		if err := ns.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("%s: set lo up: %w", ns.name, err)
		}
	}

	for i := range t.cfg.Paths {
		name := "veth" + strconv.Itoa(i)
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name},
			PeerName:      name,
			PeerNamespace: netlink.NsFd(int(t.B.fd)),
		}
		// Created inside A with its peer created directly inside B: the pair never
		// appears in the caller's namespace.
		if err := t.A.nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth pair %s: %w", name, err)
		}
		p := &Path{Index: i, topo: t}
		p.A = &Iface{NS: t.A, Path: p, Name: name, Table: tableBase + i}
		p.B = &Iface{NS: t.B, Path: p, Name: name, Table: tableBase + i}
		p.A.Peer, p.B.Peer = p.B, p.A
		p.A.V4 = netip.AddrFrom4([4]byte{10, byte(i), 0, 1})
		p.B.V4 = netip.AddrFrom4([4]byte{10, byte(i), 0, 2})
		if t.cfg.IPv6 {
			a := [16]byte{0xfd, 0x00, byte(i >> 8), byte(i), 15: 1}
			p.A.V6 = netip.AddrFrom16(a)
			a[15] = 2
			p.B.V6 = netip.AddrFrom16(a)
		}
		t.Paths = append(t.Paths, p)
	}

	for s, ns := range []*Namespace{t.A, t.B} {
		for k, v := range later[s] {
			if err := ns.writeSysctl(k, v); err != nil {
				return err
			}
		}
	}
	for _, p := range t.Paths {
		if err := p.setup(); err != nil {
			return err
		}
	}
	return nil
}

func (p *Path) setup() error {
	for _, e := range []*Iface{p.A, p.B} {
		link, err := e.NS.nl.LinkByName(e.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", e, err)
		}
		e.Index = link.Attrs().Index
		if err := e.NS.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", e, err)
		}
		if err := e.configure(link); err != nil {
			return err
		}
	}
	return nil
}

// configure gives the interface its addresses, its path's routing table and the policy
// rules. It is idempotent and also restores what a link going down removed.
func (e *Iface) configure(link netlink.Link) error {
	h := e.NS.nl
	for _, f := range e.families() {
		local, peer := e.Addr(f), e.Peer.Addr(f)
		bits, all := 24, "0.0.0.0/0"
		if f == IPv6 {
			bits, all = 64, "::/0"
		}
		pfx := netip.PrefixFrom(local, bits)
		addr := &netlink.Addr{IPNet: ipNet(pfx)}
		if f == IPv6 {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("%s: address %s: %w", e, pfx, err)
		}
		routes := []*netlink.Route{
			{LinkIndex: e.Index, Dst: ipNet(pfx.Masked()), Src: local.AsSlice(), Scope: netlink.SCOPE_LINK, Table: e.Table},
			{LinkIndex: e.Index, Dst: ipNet(netip.MustParsePrefix(all)), Gw: peer.AsSlice(), Table: e.Table},
		}
		for _, r := range routes {
			if err := h.RouteReplace(r); err != nil {
				return fmt.Errorf("%s: route %s: %w", e, r, err)
			}
		}
		src := netlink.NewRule()
		src.Family = familyAF(f)
		src.Src = ipNet(netip.PrefixFrom(local, local.BitLen()))
		src.Table = e.Table
		dst := netlink.NewRule()
		dst.Family = familyAF(f)
		dst.Dst = ipNet(pfx.Masked())
		dst.Table = e.Table
		first, then := src, dst
		if e.NS.side != e.NS.topo.cfg.Initiator {
			first, then = dst, src
		}
		first.Priority = firstPrioBase + e.Path.Index
		then.Priority = thenPrioBase + e.Path.Index
		for _, r := range []*netlink.Rule{first, then} {
			if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%s: %s: %w", e.NS.name, r, err)
			}
		}
	}
	return nil
}

func (e *Iface) families() []Family {
	if e.V6.IsValid() {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

func familyAF(f Family) int {
	if f == IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (t *Topology) cleanup() {
	t.tb.Helper()
	for _, ns := range []*Namespace{t.A, t.B} {
		if ns != nil {
			ns.closeSockets()
		}
	}
	for _, ns := range []*Namespace{t.A, t.B} {
		if ns == nil {
			continue
		}
		if err := killProcsIn(ns.NsPath()); err != nil {
			t.tb.Errorf("netns: kill processes in %s: %v", ns.name, err)
		}
	}
	for _, ns := range []*Namespace{t.A, t.B} {
		if ns == nil {
			continue
		}
		if err := deleteLinks(ns.nl); err != nil {
			t.tb.Errorf("netns: delete links in %s: %v", ns.name, err)
		}
	}
	for _, ns := range []*Namespace{t.A, t.B} {
		if ns == nil {
			continue
		}
		ns.nl.Close()
		ns.fd.Close()
		if err := removeNamed(ns.name); err != nil {
			t.tb.Errorf("netns: remove %s: %v", ns.name, err)
		}
	}
}

// createNamed creates a network namespace pinned at RunDir/name, like `ip netns add`.
func createNamed(name string) error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return err
	}
	pin := filepath.Join(RunDir, name)
	f, err := os.OpenFile(pin, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it leaves the process with this goroutine, so
		// no goroutine ever runs on a thread that was moved to the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", pin, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount %s: %w", pin, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(pin)
		return err
	}
	return nil
}

// removeNamed unmounts and removes a pinned namespace.
func removeNamed(name string) error {
	pin := filepath.Join(RunDir, name)
	err := unix.Unmount(pin, unix.MNT_DETACH)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point
		return fmt.Errorf("unmount %s: %w", pin, err)
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// deleteLinks deletes every link of a namespace but lo. Deleting one end of a veth
// deletes both.
func deleteLinks(h *netlink.Handle) error {
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			continue
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// killProcsIn SIGKILLs every process (other than this one) whose network namespace is
// the one pinned at pin, and waits until none is left.
func killProcsIn(pin string) error {
	var want unix.Stat_t
	if err := unix.Stat(pin, &want); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	for range 200 {
		pids, err := procsIn(want)
		if err != nil || len(pids) == 0 {
			return err
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		// Killed processes leave their namespace when they exit; zombies of our own
		// children stay in it until reaped, so wait for them by pid.
		for _, pid := range pids {
			waitGone(pid)
		}
	}
	return fmt.Errorf("processes in %s survive SIGKILL", pin)
}

func procsIn(want unix.Stat_t) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+ent.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// waitGone waits briefly for a killed pid to exit. A zombie (state Z) counts as gone:
// its parent reaps it.
func waitGone(pid int) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	unix.Poll(fds, 2000)
}

// sweepStale removes namespaces that a test binary which no longer runs left behind
// (killed by a timeout or a signal before its cleanup could run).
func sweepStale() {
	ents, err := os.ReadDir(RunDir)
	if err != nil {
		return
	}
	for _, ent := range ents {
		rest, ok := strings.CutPrefix(ent.Name(), NamePrefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		pin := filepath.Join(RunDir, ent.Name())
		killProcsIn(pin)
		if fd, err := vnetns.GetFromPath(pin); err == nil {
			if h, err := netlink.NewHandleAt(fd); err == nil {
				deleteLinks(h)
				h.Close()
			}
			fd.Close()
		}
		removeNamed(ent.Name())
	}
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
