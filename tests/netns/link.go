package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Path is one veth pair between the namespaces: A is its end in namespace A, B its end
// in namespace B.
//
// Methods without an error result report failures with the test's Fatal and must be
// called from the test goroutine.
type Path struct {
	Index int
	A, B  *Iface

	topo *Topology
}

// End returns the path's end in side s.
func (p *Path) End(s Side) *Iface {
	if s == SideB {
		return p.B
	}
	return p.A
}

// Iface is one end of a path.
type Iface struct {
	NS    *Namespace
	Path  *Path
	Peer  *Iface     // the other end of the path
	Name  string     // "veth<i>"
	Index int        // ifindex inside NS
	V4    netip.Addr // 10.i.0.1 on A, 10.i.0.2 on B
	V6    netip.Addr // fd00:i::1 on A, fd00:i::2 on B; invalid without Config.IPv6
	Table int        // the routing table of this path (100+i)
}

// Addr returns the interface's address of family f (invalid if not configured).
func (e *Iface) Addr(f Family) netip.Addr {
	if f == IPv6 {
		return e.V6
	}
	return e.V4
}

// HostPort returns "addr:port" (IPv6 in brackets) for Listen and Dial.
func (e *Iface) HostPort(f Family, port uint16) string {
	return net.JoinHostPort(e.Addr(f).String(), strconv.Itoa(int(port)))
}

func (e *Iface) String() string { return e.NS.name + "/" + e.Name }

// Link returns the link as netlink sees it now, with fresh statistics.
func (e *Iface) Link() (netlink.Link, error) {
	l, err := e.NS.nl.LinkByIndex(e.Index)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e, err)
	}
	return l, nil
}

// Stats returns the link's current counters (TxBytes, RxBytes, TxDropped, ...).
func (e *Iface) Stats() (netlink.LinkStatistics, error) {
	l, err := e.Link()
	if err != nil {
		return netlink.LinkStatistics{}, err
	}
	if l.Attrs().Statistics == nil {
		return netlink.LinkStatistics{}, fmt.Errorf("%s: no statistics", e)
	}
	return *l.Attrs().Statistics, nil
}

// TBF is a token-bucket rate limit on a link's egress (tc-tbf(8)).
type TBF struct {
	// Rate in bits per second.
	Rate uint64
	// Burst is the bucket size in bytes; 0 means max(32 KiB, 4 ms at Rate). Packets (GSO
	// included) larger than Burst are segmented by the qdisc.
	Burst uint32
	// Latency bounds the time a packet may wait in the queue; 0 means 100 ms. Ignored
	// when Limit is set.
	Latency time.Duration
	// Limit is the queue size in bytes; 0 derives it from Latency.
	Limit uint32
}

// Qdisc returns the netlink TBF qdisc for link index.
func (c TBF) Qdisc(index int) *netlink.Tbf {
	rate := c.Rate / 8 // bytes per second
	if rate == 0 {
		rate = 1
	}
	burst := c.Burst
	if burst == 0 {
		burst = uint32(max(32<<10, rate/250))
	}
	limit := c.Limit
	if limit == 0 {
		lat := c.Latency
		if lat == 0 {
			lat = 100 * time.Millisecond
		}
		limit = uint32(min(uint64(rate)*uint64(lat)/uint64(time.Second)+uint64(burst), 1<<31))
	}
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: index,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate:   rate,
		Limit:  limit,
		Buffer: netlink.Xmittime(rate, burst),
	}
}

// SetTBF installs (or replaces) a TBF root qdisc on this end's egress: it limits the
// traffic this end sends.
func (e *Iface) SetTBF(c TBF) {
	e.NS.topo.tb.Helper()
	if err := e.NS.nl.QdiscReplace(c.Qdisc(e.Index)); err != nil {
		e.NS.topo.tb.Fatalf("netns: tbf on %s: %v", e, err)
	}
}

// ClearTBF removes the root qdisc, if any, restoring the default.
func (e *Iface) ClearTBF() {
	e.NS.topo.tb.Helper()
	q := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: e.Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}}
	err := e.NS.nl.QdiscDel(q)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		e.NS.topo.tb.Fatalf("netns: clear qdisc on %s: %v", e, err)
	}
}

// TBF returns the TBF root qdisc on this end with its statistics, or nil if there is none.
func (e *Iface) TBF() (*netlink.Tbf, error) {
	l, err := e.Link()
	if err != nil {
		return nil, err
	}
	qs, err := e.NS.nl.QdiscList(l)
	if err != nil {
		return nil, fmt.Errorf("%s: list qdiscs: %w", e, err)
	}
	for _, q := range qs {
		if t, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return t, nil
		}
	}
	return nil, nil
}

// Down sets this end administratively down. Its peer loses carrier: packets sent into
// the path from the other side are dropped, while this side has no route through it.
func (e *Iface) Down() {
	e.NS.topo.tb.Helper()
	l, err := e.Link()
	if err == nil {
		err = e.NS.nl.LinkSetDown(l)
	}
	if err != nil {
		e.NS.topo.tb.Fatalf("netns: set %s down: %v", e, err)
	}
}

// Up sets this end up again and restores its addresses and routes (the kernel flushes a
// link's routes when it goes down).
func (e *Iface) Up() {
	e.NS.topo.tb.Helper()
	l, err := e.Link()
	if err == nil {
		err = e.NS.nl.LinkSetUp(l)
	}
	if err == nil {
		err = e.configure(l)
	}
	if err != nil {
		e.NS.topo.tb.Fatalf("netns: set %s up: %v", e, err)
	}
}

// AddMPTCPEndpoint adds this interface's address of family f as a kernel MPTCP endpoint
// on this interface: `ip mptcp endpoint add ADDR dev vethI FLAGS...` (flags such as
// "subflow", "signal", "backup", "fullmesh", "id", "3").
func (e *Iface) AddMPTCPEndpoint(f Family, flags ...string) {
	e.NS.topo.tb.Helper()
	e.NS.AddMPTCPEndpoint(e.Addr(f), e.Name, flags...)
}

// SetTBF rate-limits both directions of the path.
func (p *Path) SetTBF(c TBF) {
	p.topo.tb.Helper()
	p.A.SetTBF(c)
	p.B.SetTBF(c)
}

// ClearTBF removes the rate limits of both ends.
func (p *Path) ClearTBF() {
	p.topo.tb.Helper()
	p.A.ClearTBF()
	p.B.ClearTBF()
}

// Down sets both ends down.
func (p *Path) Down() {
	p.topo.tb.Helper()
	p.A.Down()
	p.B.Down()
}

// Up sets both ends up and restores their addresses and routes.
func (p *Path) Up() {
	p.topo.tb.Helper()
	p.A.Up()
	p.B.Up()
}
