package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// impl is the MPTCP implementation on one side of a multipath test.
type impl int

const (
	kernelImpl impl = iota
	oursImpl
)

func (i impl) String() string {
	if i == oursImpl {
		return "ours"
	}
	return "kernel"
}

// pairing is who is the client (in namespace A) and who the server (B).
type pairing struct{ client, server impl }

func (p pairing) String() string { return p.client.String() + "-to-" + p.server.String() }

// pairings are the combinations every multipath case runs in: each of our roles against the
// kernel, and ours on both sides.
var pairings = []pairing{{oursImpl, kernelImpl}, {kernelImpl, oursImpl}, {oursImpl, oursImpl}}

// rig is a multipath test bed: a topology, the implementations on each side, their path
// managers' endpoints, and one connection with its transfer.
type rig struct {
	t    testing.TB
	ctx  context.Context
	topo *netns.Topology
	p    pairing
	fam  netns.Family
	m    *pm.Manager // our path manager, when one side is ours

	ln       net.Listener
	port     uint16
	cli, srv net.Conn
	before   map[netns.Side]map[string]uint64
}

type rigConfig struct {
	paths int
	fam   netns.Family // of the initial subflow
	ipv6  bool         // configure IPv6 addresses too (implied by fam IPv6)
}

// newRig builds the topology with limits wide open on both sides and a listener on the server
// (on the wildcard address, so that joins to announced addresses reach it).
func newRig(t testing.TB, ctx context.Context, p pairing, cfg rigConfig) *rig {
	t.Helper()
	if cfg.fam == 0 {
		cfg.fam = netns.IPv4
	}
	nc := netns.Config{Paths: cfg.paths, IPv6: cfg.ipv6 || cfg.fam == netns.IPv6}
	if p.client == oursImpl {
		nc.A = ourSide
	}
	if p.server == oursImpl {
		nc.B = ourSide
	}
	r := &rig{t: t, ctx: ctx, topo: netns.New(t, nc), p: p, fam: cfg.fam}
	if p.client == oursImpl || p.server == oursImpl {
		r.m = ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
		// Our path manager follows the addresses and links of the namespaces it runs in, as
		// mptcpd does its own.
		for _, s := range []netns.Side{netns.SideA, netns.SideB} {
			if r.impl(s) != oursImpl {
				continue
			}
			h, err := vnetns.GetFromPath(r.topo.NS(s).NsPath())
			if err != nil {
				t.Fatal(err)
			}
			wctx, stop := context.WithCancel(ctx)
			t.Cleanup(func() { stop(); h.Close() })
			if err := r.m.Watch(wctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		if r.impl(s) == kernelImpl {
			r.topo.NS(s).SetMPTCPLimits(8, 8)
		}
	}
	wild := "0.0.0.0:0"
	if cfg.fam == netns.IPv6 || nc.IPv6 {
		wild = "[::]:0"
	}
	var err error
	if p.server == oursImpl {
		r.ln = listenOurs(t, r.topo.B, wild)
	} else if r.ln, err = r.topo.B.ListenMPTCP(wild); err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r.port = ap.Port()
	if dir := os.Getenv("MPTCPGO_PCAP"); dir != "" {
		// Debugging aid: keep the headers of every path (A's ends) in dir.
		for i := range max(cfg.paths, 1) {
			e := r.topo.Path(i).A
			file := filepath.Join(dir, fmt.Sprintf("%s-path%d.pcapng", strings.ReplaceAll(t.Name(), "/", "_"), i))
			p, err := e.StartCapture(ctx, file, 120)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop() })
		}
	}
	return r
}

func (r *rig) impl(s netns.Side) impl {
	if s == netns.SideA {
		return r.p.client
	}
	return r.p.server
}

// epID is the address ID the rig gives the endpoint of path i on side s (distinct per side, as
// ours-to-ours shares one path manager).
func epID(s netns.Side, path int) uint8 {
	if s == netns.SideA {
		return uint8(path)
	}
	return uint8(100 + path)
}

func (r *rig) iface(s netns.Side, path int) *netns.Iface {
	if s == netns.SideA {
		return r.topo.Path(path).A
	}
	return r.topo.Path(path).B
}

// endpoint adds the endpoint of path i on side s, with flags as `ip mptcp endpoint` spells them.
func (r *rig) endpoint(s netns.Side, path int, fam netns.Family, flags ...string) {
	r.t.Helper()
	e := r.iface(s, path)
	id := epID(s, path)
	if r.impl(s) == kernelImpl {
		e.NS.AddMPTCPEndpoint(e.Addr(fam), e.Name, append(flags, "id", strconv.Itoa(int(id)))...)
		return
	}
	spec := e.Addr(fam).String() + ",id=" + strconv.Itoa(int(id))
	for _, f := range flags {
		spec += "," + f
	}
	ep, err := pmapi.ParseEndpoint(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	addEndpoint(r.t, r.m, ep)
	if got, err := ourStack(r.t).Datapath().LocalID(ep.Addr); err != nil || got != id {
		r.t.Fatalf("datapath address ID of %v: %d (%v), want %d", ep.Addr, got, err, id)
	}
}

// deleteEndpoint removes the endpoint of path i on side s.
func (r *rig) deleteEndpoint(s netns.Side, path int) {
	r.t.Helper()
	id := epID(s, path)
	if r.impl(s) == kernelImpl {
		r.topo.NS(s).IP("mptcp", "endpoint", "delete", "id", strconv.Itoa(int(id)))
		return
	}
	if _, err := r.m.DeleteEndpoint(id, netip.Addr{}); err != nil {
		r.t.Fatal(err)
	}
}

// setBackup changes the backup flag of the endpoint of path i on side s.
func (r *rig) setBackup(s netns.Side, path int, backup bool) {
	r.t.Helper()
	id := epID(s, path)
	if r.impl(s) == kernelImpl {
		flag := "nobackup"
		if backup {
			flag = "backup"
		}
		r.topo.NS(s).IP("mptcp", "endpoint", "change", "id", strconv.Itoa(int(id)), flag)
		return
	}
	if _, err := r.m.SetBackup(id, netip.Addr{}, backup); err != nil {
		r.t.Fatal(err)
	}
}

// connect opens the connection from A to B's path-0 address and accepts it.
func (r *rig) connect() {
	r.t.Helper()
	r.before = map[netns.Side]map[string]uint64{netns.SideA: r.counters(netns.SideA), netns.SideB: r.counters(netns.SideB)}
	addr := r.topo.Path(0).B.HostPort(r.fam, r.port)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := netns.Accept(r.ctx, r.ln)
		if err != nil {
			r.t.Error(err)
		}
		accepted <- c
	}()
	if r.p.client == oursImpl {
		r.cli = dialOurs(r.t, r.ctx, r.topo.A, addr)
	} else {
		c, err := r.topo.A.DialMPTCP(r.ctx, addr)
		if err != nil {
			r.t.Fatal(err)
		}
		r.cli = c
	}
	r.srv = <-accepted
	if r.srv == nil {
		r.t.FailNow()
	}
	r.t.Cleanup(func() { r.srv.Close() })
	for _, c := range []net.Conn{r.cli, r.srv} {
		if ok, err := isMPTCP(c); err != nil || !ok {
			r.t.Fatalf("%v -> %v is not MPTCP (%v)", c.LocalAddr(), c.RemoteAddr(), err)
		}
	}
}

func isMPTCP(c net.Conn) (bool, error) {
	if oc, ok := c.(*control.Conn); ok {
		return oc.MPTCP(), nil
	}
	return netns.IsMPTCP(c)
}

func (r *rig) conn(s netns.Side) net.Conn {
	if s == netns.SideA {
		return r.cli
	}
	return r.srv
}

// subflows returns the number of subflows side s's connection has.
func (r *rig) subflows(s netns.Side) (int, error) {
	c := r.conn(s)
	if oc, ok := c.(*control.Conn); ok {
		return len(oc.Subflows()), nil
	}
	return kernelSubflows(c)
}

// kernelSubflows reads MPTCP_INFO's mptcpi_subflows (the subflows beyond the first).
func kernelSubflows(c net.Conn) (int, error) {
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return 0, fmt.Errorf("%T has no socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var serr error
	err = raw.Control(func(fd uintptr) {
		buf := make([]byte, 64)
		var got int
		got, serr = getsockoptBytes(int(fd), unix.SOL_MPTCP, mptcpInfo, buf)
		if serr == nil && got > 0 {
			n = 1 + int(buf[0])
		}
	})
	if err == nil {
		err = serr
	}
	return n, err
}

// waitSubflows waits until side s's connection has n subflows.
func (r *rig) waitSubflows(s netns.Side, n int) {
	r.t.Helper()
	var got int
	var err error
	for {
		if got, err = r.subflows(s); err == nil && got == n {
			return
		}
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("side %v (%v): %d subflows (err %v), want %d", s, r.impl(s), got, err, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// counters returns side s's MPTCP counters: the kernel's MPTcpExt, or our stack's.
func (r *rig) counters(s netns.Side) map[string]uint64 {
	r.t.Helper()
	if r.impl(s) == oursImpl {
		c, err := ourStack(r.t).Counters()
		if err != nil {
			r.t.Fatal(err)
		}
		return c
	}
	return counters(r.t, r.topo.NS(s))
}

// delta returns how much side s's counter moved since connect. Ours-to-ours shares one stack:
// both sides see the sum.
func (r *rig) delta(s netns.Side, name string) uint64 {
	r.t.Helper()
	return r.counters(s)[name] - r.before[s][name]
}

// wantDelta checks that side s's counter moved by at least n.
func (r *rig) wantDelta(s netns.Side, name string, n uint64) {
	r.t.Helper()
	if d := r.delta(s, name); d < n {
		r.t.Errorf("side %v (%v): %s +%d, want >= %d", s, r.impl(s), name, d, n)
	}
}

// wantNoDelta checks that none of side s's counters moved.
func (r *rig) wantNoDelta(s netns.Side, names ...string) {
	r.t.Helper()
	for _, name := range names {
		if d := r.delta(s, name); d != 0 {
			r.t.Errorf("side %v (%v): %s +%d, want 0", s, r.impl(s), name, d)
		}
	}
}

// checkHealthy checks what every case wants on both sides: no HMAC failure, no fallback, none
// of our datapath's mapping failures.
func (r *rig) checkHealthy() {
	r.t.Helper()
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		r.wantNoDelta(s, r.healthCounters(s)...)
		r.logNonZeroDelta(s, "DataRetransmit", "SubflowStale", "SubflowLossy")
	}
}

// healthCounters are the counters checkHealthy wants unmoved on side s.
func (r *rig) healthCounters(s netns.Side) []string {
	names := []string{"MPJoinAckHMacFailure", "MPJoinSynAckHMacFailure", "MPCapableFallbackACK",
		"MPCapableFallbackSYNACK", "DssFallback", "DSSNotMatching", "InfiniteMapRx", "MPFailTx"}
	if r.impl(s) == oursImpl {
		return append(names, "OptionNoSpace", "DSSTxNoMapping", "UnmappedDataRx", "EventLost", "DataAckInvalid",
			"AddAddrHMacFailure", "FallbackActive", "FallbackPassive")
	}
	if r.impl(s.Other()) == oursImpl {
		// A kernel receiver drops data beyond the connection-level window it announced. With
		// the kernel at both ends it counts some on emulated paths (the scenario suite), so
		// only ours as the sender is held to it.
		return append(names, "NoDSSInWindow")
	}
	return names
}

// logNonZeroDelta logs the counters of side s that moved.
func (r *rig) logNonZeroDelta(s netns.Side, names ...string) {
	r.t.Helper()
	for _, name := range names {
		if d := r.delta(s, name); d != 0 {
			r.t.Logf("side %v (%v): %s +%d", s, r.impl(s), name, d)
		}
	}
}

// flow is a running exchange in both directions.
type flow struct {
	r        *rig
	up, down int64
	cli, srv chan gapResult
}

type gapResult struct {
	netns.Transfer
	maxGap time.Duration // the longest wait for received bytes, after the first
	err    error
}

// start exchanges up bytes from the client and down bytes from the server.
func (r *rig) start(up, down int64) *flow {
	x := &flow{r: r, up: up, down: down, cli: make(chan gapResult, 1), srv: make(chan gapResult, 1)}
	run := func(c net.Conn, n int64, seed uint64, out chan gapResult) {
		g := &gapConn{Conn: c}
		tr, err := netns.Exchange(r.ctx, g, n, seed)
		out <- gapResult{tr, g.maxGap, err}
	}
	go run(r.cli, up, 1, x.cli)
	go run(r.srv, down, 2, x.srv)
	return x
}

// wait waits for both directions and checks the bytes; it returns the longest gap each
// receiver saw (client's, server's).
func (x *flow) wait() (cliGap, srvGap time.Duration) {
	r := x.r
	r.t.Helper()
	slow := time.AfterFunc(5*time.Second, func() {
		// A transfer this slow is stuck somewhere: record where, for the log.
		for _, side := range []netns.Side{netns.SideA, netns.SideB} {
			if oc, ok := r.conn(side).(*control.Conn); ok {
				if in, ok := oc.Info(); ok {
					r.t.Logf("after 5 s, %v: %+v", side, in)
				}
			}
		}
	})
	c, s := <-x.cli, <-x.srv
	slow.Stop()
	if c.err != nil || s.err != nil {
		for _, side := range []netns.Side{netns.SideA, netns.SideB} {
			logNonZero(r.t, fmt.Sprintf("%v %v", side, r.impl(side)), r.counters(side))
			if oc, ok := r.conn(side).(*control.Conn); ok {
				if in, ok := oc.Info(); ok {
					r.t.Logf("%v: %+v", side, in)
				}
			}
		}
		r.t.Fatalf("client: %v; server: %v", c.err, s.err)
	}
	checkDigests(r.t, c.Transfer, s.Transfer, x.up, x.down)
	return c.maxGap, s.maxGap
}

// gapConn measures the longest pause between reads that return data.
type gapConn struct {
	net.Conn
	last   time.Time
	maxGap time.Duration
}

func (g *gapConn) Read(b []byte) (int, error) {
	n, err := g.Conn.Read(b)
	if n > 0 {
		now := time.Now()
		if !g.last.IsZero() && now.Sub(g.last) > g.maxGap {
			g.maxGap = now.Sub(g.last)
		}
		g.last = now
	}
	return n, err
}

func (g *gapConn) CloseWrite() error {
	return g.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// linkTx returns the bytes side s sent on path i so far.
func (r *rig) linkTx(s netns.Side, path int) uint64 { return txBytes(r.t, r.iface(s, path)) }

// logState logs both sides' counters and sockets, for failures.
func (r *rig) logState() {
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		logNonZero(r.t, fmt.Sprintf("%v %v", s, r.impl(s)), r.counters(s))
		r.t.Logf("%v sockets:\n%s", s, strings.TrimSpace(r.topo.NS(s).Run("ss", "-tnM")))
	}
}

// mptcpInfo is the MPTCP_INFO socket option (include/uapi/linux/mptcp.h).
const mptcpInfo = 1

func getsockoptBytes(fd, level, opt int, buf []byte) (int, error) {
	l := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(l), nil
}

// logInfo logs our connections' state.
func (r *rig) logInfo() {
	for _, side := range []netns.Side{netns.SideA, netns.SideB} {
		if oc, ok := r.conn(side).(*control.Conn); ok {
			if in, ok := oc.Info(); ok {
				r.t.Logf("%v: %+v", side, in)
			}
		}
	}
}
