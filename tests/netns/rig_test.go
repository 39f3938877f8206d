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
//
// With ours at both ends each side has a stack of its own, so that each side's counters are
// its own: the client is the test binary's stack, the server mptcpd in B (rigDaemon), and the
// server's end of the connection (srv) is the plain TCP connection mptcpd relays it to.
type rig struct {
	t    testing.TB
	ctx  context.Context
	topo *netns.Topology
	p    pairing
	fam  netns.Family
	m    *pm.Manager // the test binary's path manager, when a side runs its stack
	d    *rigDaemon  // side B, when ours is at both ends

	ln       net.Listener // the server's (with mptcpd, the plain TCP listener it relays to)
	port     uint16       // where the client connects
	cli, srv net.Conn
	before   map[netns.Side]map[string]uint64
	sched    string // rigConfig.scheduler
	cc       string // rigConfig.cc
}

type rigConfig struct {
	paths int
	fam   netns.Family // of the initial subflow
	ipv6  bool         // configure IPv6 addresses too (implied by fam IPv6)
	// scheduler is our stack's scheduler where ours opens the connection and where mptcpd
	// serves it ("": the default).
	scheduler string
	// cc is our subflows' congestion control in the same places ("": the default, CUBIC).
	cc string
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
	r := &rig{t: t, ctx: ctx, topo: netns.New(t, nc), p: p, fam: cfg.fam, sched: cfg.scheduler, cc: cfg.cc}
	// The kernel's sockets run CUBIC, as ours do: this host's default (BBR, which namespaces
	// inherit) would compare two congestion controls instead of two MPTCP stacks.
	for _, ns := range []*netns.Namespace{r.topo.A, r.topo.B} {
		ns.SetCongestion("cubic")
	}
	wild := "0.0.0.0:0"
	if cfg.fam == netns.IPv6 || nc.IPv6 {
		wild = "[::]:0"
	}
	var err error
	if p.client == oursImpl && p.server == oursImpl {
		if r.ln, err = r.topo.B.ListenTCP("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.ln.Close() })
		var extra []string
		if cfg.scheduler != "" {
			extra = []string{"--scheduler", cfg.scheduler}
		}
		if cfg.cc != "" {
			extra = append(extra, "--cc", cfg.cc)
		}
		r.d = startRigDaemon(t, ctx, r.topo.B, wild, r.ln.Addr().String(), extra...)
	}
	if r.inProcess(netns.SideA) || r.inProcess(netns.SideB) {
		r.m = ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
		// Our path manager follows the addresses and links of the namespace it runs in, as
		// mptcpd does its own.
		for _, s := range []netns.Side{netns.SideA, netns.SideB} {
			if !r.inProcess(s) {
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
	switch {
	case r.d != nil:
		r.port = r.d.port // r.ln is the plain listener mptcpd relays to
	case p.server == oursImpl:
		r.ln = listenOurs(t, r.topo.B, wild)
	default:
		if r.ln, err = r.topo.B.ListenMPTCP(wild); err != nil {
			t.Fatal(err)
		}
	}
	if r.port == 0 {
		ap, err := netip.ParseAddrPort(r.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		r.port = ap.Port()
	}
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

// inProcess reports whether side s is the test binary's stack.
func (r *rig) inProcess(s netns.Side) bool {
	return r.impl(s) == oursImpl && r.daemon(s) == nil
}

// daemon returns side s's mptcpd, nil unless s is B with ours at both ends.
func (r *rig) daemon(s netns.Side) *rigDaemon {
	if s == netns.SideB {
		return r.d
	}
	return nil
}

// side names side s and who runs it, for messages: "side B (ours, mptcpd)".
func (r *rig) side(s netns.Side) string {
	if r.daemon(s) != nil {
		return fmt.Sprintf("side %v (%v, mptcpd)", s, r.impl(s))
	}
	return fmt.Sprintf("side %v (%v)", s, r.impl(s))
}

// epID is the address ID the rig gives the endpoint of path i on side s (distinct per side,
// which makes captures and logs easier to read).
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
	// The device too, as the kernel's endpoint above gets it: subflows from it are bound to it.
	spec := e.Addr(fam).String() + ",id=" + strconv.Itoa(int(id)) + ",dev=" + e.Name
	for _, f := range flags {
		spec += "," + f
	}
	ep, err := pmapi.ParseEndpoint(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	if d := r.daemon(s); d != nil {
		got, err := d.addEndpoint(ep)
		if err != nil {
			r.t.Fatalf("%s: add endpoint %s: %v", r.side(s), spec, err)
		}
		if got.ID != id || got.Addr != ep.Addr {
			r.t.Fatalf("%s: endpoint %s added as %+v", r.side(s), spec, got)
		}
		return
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
	if d := r.daemon(s); d != nil {
		if err := d.deleteEndpoint(id); err != nil {
			r.t.Fatalf("%s: delete endpoint %d: %v", r.side(s), id, err)
		}
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
	if d := r.daemon(s); d != nil {
		if err := d.setBackup(id, backup); err != nil {
			r.t.Fatalf("%s: change endpoint %d: %v", r.side(s), id, err)
		}
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
		r.cli = dialOursWith(r.t, r.ctx, r.topo.A, addr, control.Dialer{Scheduler: r.sched, CongestionControl: r.cc})
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
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		if ok, err := r.isMPTCP(s); err != nil || !ok {
			r.t.Fatalf("%s: the connection from %v is not MPTCP (%v)", r.side(s), r.cli.LocalAddr(), err)
		}
	}
}

// isMPTCP reports whether side s's end of the connection is MPTCP.
func (r *rig) isMPTCP(s netns.Side) (bool, error) {
	if d := r.daemon(s); d != nil {
		c, err := d.conn(r.cli.LocalAddr())
		return err == nil && c.State != "fallback", err
	}
	return isMPTCP(r.conn(s))
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
	if d := r.daemon(s); d != nil {
		c, err := d.conn(r.cli.LocalAddr())
		return len(c.Subflows), err
	}
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
			r.t.Fatalf("%s: %d subflows (err %v), want %d", r.side(s), got, err, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// counters returns side s's MPTCP counters: the kernel's MPTcpExt, the test binary's stack's,
// or mptcpd's (its stack's and its proxies').
func (r *rig) counters(s netns.Side) map[string]uint64 {
	r.t.Helper()
	if d := r.daemon(s); d != nil {
		c, err := d.counters()
		if err != nil {
			r.t.Fatalf("%s: %v", r.side(s), err)
		}
		return c
	}
	if r.impl(s) == oursImpl {
		c, err := ourStack(r.t).Counters()
		if err != nil {
			r.t.Fatal(err)
		}
		return c
	}
	return counters(r.t, r.topo.NS(s))
}

// moved returns how much side s's counter moved since connect, and false if side s does not
// export a counter of that name.
func (r *rig) moved(s netns.Side, name string) (uint64, bool) {
	r.t.Helper()
	v, ok := r.counters(s)[name]
	b, okb := r.before[s][name]
	return v - b, ok && okb
}

// delta returns how much side s's counter moved since connect; a name side s does not export
// fails the test (a check of it could never fail).
func (r *rig) delta(s netns.Side, name string) uint64 {
	r.t.Helper()
	d, ok := r.moved(s, name)
	if !ok {
		r.t.Fatalf("%s exports no counter %s", r.side(s), name)
	}
	return d
}

// newerKernelCounters are the kernel's MPTcpExt counters that Linux 6.1 does not have yet (read
// off 6.1.192 and 6.18): where a kernel side lacks one, a check of it is left out (and logged),
// not failed. Any other missing name is still a failure.
var newerKernelCounters = map[string]bool{
	"AddAddrTx": true, "AddAddrTxDrop": true, "Blackhole": true, "DssFallback": true, "EchoAddTx": true,
	"EchoAddTxDrop": true, "FallbackFailed": true, "MD5SigFallback": true, "MPCapableDataFallback": true,
	"MPCapableSYNTXDisabled": true, "MPCapableSYNTXDrop": true, "MPCurrEstab": true, "MPJoinRejected": true,
	"MPJoinSynTx": true, "MPJoinSynTxBindErr": true, "MPJoinSynTxConnectErr": true,
	"MPJoinSynTxCreatSkErr": true, "RmAddrTx": true, "RmAddrTxDrop": true, "SimultConnectFallback": true,
	"WinProbe": true,
}

// olderKernelLacks reports (and logs) that side s is a kernel without counter name, one newer
// kernels have.
func (r *rig) olderKernelLacks(s netns.Side, name string) bool {
	r.t.Helper()
	if r.impl(s) != kernelImpl || !newerKernelCounters[name] {
		return false
	}
	if _, ok := r.counters(s)[name]; ok {
		return false
	}
	r.t.Logf("%s: this kernel has no counter %s (a newer kernel's): not checked", r.side(s), name)
	return true
}

// wantDelta checks that side s's counter moved by at least n.
func (r *rig) wantDelta(s netns.Side, name string, n uint64) {
	r.t.Helper()
	if r.olderKernelLacks(s, name) {
		return
	}
	if d, ok := r.moved(s, name); !ok {
		r.t.Errorf("%s exports no counter %s (want +%d)", r.side(s), name, n)
	} else if d < n {
		r.t.Errorf("%s: %s +%d, want >= %d", r.side(s), name, d, n)
	}
}

// wantNoDelta checks that none of side s's counters moved, and that side s exports each.
func (r *rig) wantNoDelta(s netns.Side, names ...string) {
	r.t.Helper()
	for _, name := range names {
		if r.olderKernelLacks(s, name) {
			continue
		}
		if d, ok := r.moved(s, name); !ok {
			r.t.Errorf("%s exports no counter %s (want +0)", r.side(s), name)
		} else if d != 0 {
			r.t.Errorf("%s: %s +%d, want 0", r.side(s), name, d)
		}
	}
}

// checkHealthy checks what every case wants on both sides: no HMAC failure, no fallback, none
// of our datapath's mapping failures.
func (r *rig) checkHealthy() {
	r.t.Helper()
	for _, s := range []netns.Side{netns.SideA, netns.SideB} {
		r.wantNoDelta(s, r.healthCounters(s)...)
		r.logNonZeroDelta(s, "DataRetransmit", "SubflowStale", "SubflowLossy", "SubflowCloseReset")
	}
}

// healthCounters are the counters checkHealthy wants unmoved on side s. Every one is a name
// side s exports (wantNoDelta fails otherwise): the kernel's MPTcpExt, and ours under the same
// names (our datapath's enum dp_counter and control.Stats), plus our own.
func (r *rig) healthCounters(s netns.Side) []string {
	names := []string{"MPJoinAckHMacFailure", "MPJoinSynAckHMacFailure", "MPCapableFallbackACK",
		"MPCapableFallbackSYNACK", "DssFallback", "DSSNotMatching", "InfiniteMapRx", "MPFailTx"}
	if r.impl(s) == oursImpl {
		names = append(names, "OptionNoSpace", "DSSTxNoMapping", "UnmappedDataRx", "EventLost", "DataAckInvalid", "ScratchNested", "NoState",
			"AddAddrHMacFailure", "FallbackActive", "FallbackPassive")
		if r.daemon(s) != nil {
			// mptcpd's relay: its dial to the test's listener failed, or it refused a connection.
			names = append(names, "ProxyFailed", "ProxyRefused")
		}
		return names
	}
	if r.impl(s.Other()) == oursImpl {
		// A kernel receiver drops data beyond the connection-level window it announced. With
		// the kernel at both ends it counts some on emulated paths (the scenario suite), so
		// only ours as the sender is held to it.
		return append(names, "NoDSSInWindow")
	}
	return names
}

// logNonZeroDelta logs the counters of side s that moved (those it exports).
func (r *rig) logNonZeroDelta(s netns.Side, names ...string) {
	r.t.Helper()
	for _, name := range names {
		if d, ok := r.moved(s, name); ok && d != 0 {
			r.t.Logf("%s: %s +%d", r.side(s), name, d)
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
		r.logConns("after 5 s, ")
	})
	c, s := <-x.cli, <-x.srv
	slow.Stop()
	if c.err != nil || s.err != nil {
		for _, side := range []netns.Side{netns.SideA, netns.SideB} {
			logNonZero(r.t, r.side(side), r.counters(side))
		}
		r.logConns("")
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
		logNonZero(r.t, r.side(s), r.counters(s))
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
func (r *rig) logInfo() { r.logConns("") }

// logConns logs the state of our ends of the connection, each line after prefix.
func (r *rig) logConns(prefix string) {
	for _, side := range []netns.Side{netns.SideA, netns.SideB} {
		if d := r.daemon(side); d != nil {
			if c, err := d.conn(r.cli.LocalAddr()); err == nil {
				r.t.Logf("%s%s: %+v", prefix, r.side(side), c)
			}
			continue
		}
		if oc, ok := r.conn(side).(*control.Conn); ok {
			if in, ok := oc.Info(); ok {
				r.t.Logf("%s%s: %+v", prefix, r.side(side), in)
			}
		}
	}
}

// shapeForShares rate-limits the paths (200 Mbit/s each way), so that a transfer over them has
// to use each: on unshaped veths the subflow with the lowest RTT can carry nearly all of it, and
// a test that wants every path to carry a share then fails now and then (in CI: 0.4 MiB of 64
// on one path, 0.9 MiB of 32 on another).
func shapeForShares(paths ...*netns.Path) {
	for _, p := range paths {
		p.SetTBF(netns.TBF{Rate: 200e6, Latency: 20 * time.Millisecond})
	}
}
