package tcattach_test

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"github.com/mptcpgo/mptcpgo/internal/testbpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// pair is two network namespaces joined by a veth, IPv4 only (nothing but the test's datagrams
// is IP traffic on it), with a UDP socket at each end:
//
//	A: tca 10.199.0.1 ---- veth ---- tcb 10.199.0.2 :B
//
// Programs go on tca: its egress sees what A sends, its ingress what B sends.
type pair struct {
	t      *testing.T
	a, b   vnetns.NsHandle
	nl     *netlink.Handle // in A
	idx    int             // tca's index
	ua, ub *net.UDPConn
}

func newPair(t *testing.T) *pair {
	t.Helper()
	testenv.RequireRoot(t)
	p := &pair{t: t}
	var err error
	if p.a, err = newNetns(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.a.Close() })
	if p.b, err = newNetns(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.b.Close() })
	if p.nl, err = netlink.NewHandleAt(p.a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.nl.Close)
	nlb, err := netlink.NewHandleAt(p.b)
	if err != nil {
		t.Fatal(err)
	}
	defer nlb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tca"}, PeerName: "tcb", PeerNamespace: netlink.NsFd(p.b)}
	if err := p.nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, end := range []struct {
		nl   *netlink.Handle
		name string
		addr string
	}{{p.nl, "tca", "10.199.0.1/24"}, {nlb, "tcb", "10.199.0.2/24"}} {
		l, err := end.nl.LinkByName(end.name)
		if err != nil {
			t.Fatal(err)
		}
		if end.name == "tca" {
			p.idx = l.Attrs().Index
		}
		addr, _ := netlink.ParseAddr(end.addr)
		if err := end.nl.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := end.nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	listen := func(ns vnetns.NsHandle, ip string) *net.UDPConn {
		var c *net.UDPConn
		err := inNetns(ns, func() error {
			var err error
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	p.ua, p.ub = listen(p.a, "10.199.0.1"), listen(p.b, "10.199.0.2")
	return p
}

// newNetns creates a network namespace without IPv6 (no router solicitations or MLD reports).
func newNetns() (vnetns.NsHandle, error) {
	type result struct {
		ns  vnetns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer orig.Close()
		ns, err := vnetns.New()
		if err != nil {
			done <- result{err: err}
			return
		}
		for _, f := range []string{"all", "default"} {
			if err == nil {
				err = os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0)
			}
		}
		if serr := vnetns.Set(orig); serr != nil {
			done <- result{ns, errors.Join(err, serr)} // the thread stays locked and ends
			return
		}
		runtime.UnlockOSThread()
		done <- result{ns, err}
	}()
	r := <-done
	return r.ns, r.err
}

// inNetns runs f on a thread in ns, as the daemon's callers of Attach do.
func inNetns(ns vnetns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = f()
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// attach attaches prog to tca from a thread in A; the test closes it from its own goroutine.
func (p *pair) attach(prog *ebpf.Program, dir tcattach.Direction, opts tcattach.Options) *tcattach.Link {
	p.t.Helper()
	var l *tcattach.Link
	err := inNetns(p.a, func() error {
		var err error
		l, err = tcattach.Attach(p.idx, prog, dir, opts)
		return err
	})
	if err != nil {
		p.t.Fatalf("attach %v: %v", dir, err)
	}
	p.t.Cleanup(func() { l.Close() })
	return l
}

// send sends n datagrams from one end to the other and, unless they are to be dropped, reads
// them at the other end: once send returns, every hook on the way has seen them.
func (p *pair) send(fromA bool, n int, delivered bool) {
	p.t.Helper()
	from, to := p.ua, p.ub
	if !fromA {
		from, to = p.ub, p.ua
	}
	dst := to.LocalAddr().(*net.UDPAddr)
	for i := range n {
		if _, err := from.WriteToUDP(fmt.Appendf(nil, "datagram %d", i), dst); err != nil {
			p.t.Fatal(err)
		}
	}
	if !delivered {
		return
	}
	to.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for i := range n {
		if _, _, err := to.ReadFromUDP(buf); err != nil {
			p.t.Fatalf("datagram %d of %d not received: %v", i, n, err)
		}
	}
}

// qdisc returns the type of the qdisc in clsact's place on tca, "" if none.
func (p *pair) qdisc() string {
	p.t.Helper()
	qs, err := p.nl.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: p.idx}})
	if err != nil {
		p.t.Fatal(err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_CLSACT {
			return q.Type()
		}
	}
	return ""
}

// filters returns the cls_bpf filters on one side of tca.
func (p *pair) filters(dir tcattach.Direction) []*netlink.BpfFilter {
	p.t.Helper()
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if dir == tcattach.Egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	fs, err := p.nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: p.idx}}, parent)
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: no qdisc
		p.t.Fatal(err)
	}
	var bs []*netlink.BpfFilter
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Handle != 0 { // handle 0: the priority's header
			bs = append(bs, b)
		}
	}
	return bs
}

// addForeign adds what another tool would: a clsact qdisc (if absent) and, unless prog is nil, a
// cls_bpf filter at tc's first automatic priority.
func (p *pair) addForeign(prog *ebpf.Program, dir tcattach.Direction) {
	p.t.Helper()
	err := p.nl.QdiscAdd(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: p.idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		p.t.Fatal(err)
	}
	if prog == nil {
		return
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if dir == tcattach.Egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	err = p.nl.FilterAdd(&netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: p.idx, Parent: parent, Handle: 1, Priority: 0xc000, Protocol: unix.ETH_P_ALL},
		Fd:           prog.FD(),
		Name:         "foreign",
		DirectAction: true,
	})
	if err != nil {
		p.t.Fatal(err)
	}
}

// counter is the dropper's drop_random program: it counts the IP packets it sees and drops
// none until told to.
type counter struct {
	t    *testing.T
	objs testbpf.DropperObjects
	id   int
}

func newCounter(t *testing.T) *counter {
	t.Helper()
	c := &counter{t: t}
	if err := testbpf.LoadDropperObjects(&c.objs, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.objs.Close() })
	info, err := c.objs.DropRandom.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	c.id = int(id)
	return c
}

func (c *counter) prog() *ebpf.Program { return c.objs.DropRandom }

func (c *counter) stat(i uint32) uint64 {
	c.t.Helper()
	var per []uint64
	if err := c.objs.DropStats.Lookup(i, &per); err != nil {
		c.t.Fatal(err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

func (c *counter) seen() uint64 { return c.stat(0) }

func (c *counter) dropAll() {
	c.t.Helper()
	if err := c.objs.DropRate.Update(uint32(0), uint32(math.MaxUint32), ebpf.UpdateAny); err != nil {
		c.t.Fatal(err)
	}
}

// wantSeen waits up to 10 s for each counter to have seen exactly its number of packets.
// Ingress runs in a softirq after the datagram is queued, possibly a moment after it was read.
func wantSeen(t *testing.T, what string, cs []*counter, want []uint64) {
	t.Helper()
	var got []uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = got[:0]
		for _, c := range cs {
			got = append(got, c.seen())
		}
		if slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: packets seen %v, want %v", what, got, want)
	}
}

// modes runs f with tcx (where the kernel has it, else its fallback) and with clsact.
func modes(t *testing.T, f func(t *testing.T, legacy bool, want tcattach.Mode)) {
	want := tcattach.TCX
	if err := tcattach.HaveTCX(); err != nil {
		t.Logf("no tcx here, the default falls back to clsact: %v", err)
		want = tcattach.Clsact
	}
	t.Run("tcx", func(t *testing.T) { f(t, false, want) })
	t.Run("clsact", func(t *testing.T) { f(t, true, tcattach.Clsact) })
}

// TestAttachSeesPackets: a program on tca's egress counts exactly what A sends, one on its
// ingress exactly what B sends; with clsact each is a direct-action cls_bpf filter of its own on
// a qdisc Attach created, and after Close neither filter nor qdisc is left and nothing more is
// counted.
func TestAttachSeesPackets(t *testing.T) {
	modes(t, func(t *testing.T, legacy bool, mode tcattach.Mode) {
		p := newPair(t)
		in, out := newCounter(t), newCounter(t)
		lin := p.attach(in.prog(), tcattach.Ingress, tcattach.Options{Legacy: legacy})
		lout := p.attach(out.prog(), tcattach.Egress, tcattach.Options{Legacy: legacy, Name: "counter_out"})
		for _, l := range []*tcattach.Link{lin, lout} {
			if l.Mode() != mode {
				t.Fatalf("%v attached with %v, want %v", l.Direction(), l.Mode(), mode)
			}
		}
		if mode == tcattach.Clsact {
			if q := p.qdisc(); q != "clsact" {
				t.Fatalf("qdisc %q after attach, want clsact", q)
			}
			for _, c := range []struct {
				dir  tcattach.Direction
				id   int
				name string
			}{{tcattach.Ingress, in.id, "drop_random"}, {tcattach.Egress, out.id, "counter_out"}} {
				fs := p.filters(c.dir)
				if len(fs) != 1 || fs[0].Id != c.id || !fs[0].DirectAction || fs[0].Name != c.name || fs[0].Protocol != unix.ETH_P_ALL {
					t.Fatalf("%v filters %+v, want one direct-action ETH_P_ALL filter named %s for program %d", c.dir, fs, c.name, c.id)
				}
			}
		} else if q := p.qdisc(); q != "" {
			t.Fatalf("tcx attach left a %s qdisc", q)
		}

		p.send(true, 5, true)
		wantSeen(t, "5 datagrams A to B", []*counter{in, out}, []uint64{0, 5})
		p.send(false, 7, true)
		wantSeen(t, "7 datagrams B to A", []*counter{in, out}, []uint64{7, 5})

		if err := lin.Close(); err != nil {
			t.Fatal(err)
		}
		if fs := p.filters(tcattach.Ingress); len(fs) != 0 {
			t.Fatalf("ingress filters after Close: %+v", fs)
		}
		if q := p.qdisc(); mode == tcattach.Clsact && q != "clsact" {
			t.Fatalf("qdisc %q with the egress filter still attached, want clsact", q)
		}
		if err := lout.Close(); err != nil {
			t.Fatal(err)
		}
		if fs := p.filters(tcattach.Egress); len(fs) != 0 {
			t.Fatalf("egress filters after Close: %+v", fs)
		}
		if q := p.qdisc(); q != "" {
			t.Fatalf("qdisc %q left after the last Close", q)
		}
		// Datagrams both ways arrive, and neither program saw them.
		p.send(true, 3, true)
		p.send(false, 3, true)
		wantSeen(t, "after Close", []*counter{in, out}, []uint64{7, 5})
	})
}

// TestForeignClsactSurvives: a clsact qdisc and a filter someone else added stay through our
// attach and Close, and the foreign filter goes on seeing packets, ours passing them on.
func TestForeignClsactSurvives(t *testing.T) {
	modes(t, func(t *testing.T, legacy bool, mode tcattach.Mode) {
		p := newPair(t)
		foreign, ours := newCounter(t), newCounter(t)
		p.addForeign(foreign.prog(), tcattach.Ingress)
		l := p.attach(ours.prog(), tcattach.Ingress, tcattach.Options{Legacy: legacy})
		p.send(false, 4, true)
		wantSeen(t, "foreign and ours", []*counter{foreign, ours}, []uint64{4, 4})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if q := p.qdisc(); q != "clsact" {
			t.Fatalf("qdisc %q after Close, want the foreign clsact", q)
		}
		if fs := p.filters(tcattach.Ingress); len(fs) != 1 || fs[0].Id != foreign.id || fs[0].Priority != 0xc000 {
			t.Fatalf("ingress filters after Close %+v, want the foreign one (program %d) alone", fs, foreign.id)
		}
		p.send(false, 2, true)
		wantSeen(t, "foreign after Close", []*counter{foreign, ours}, []uint64{6, 4})
	})
}

// TestForeignEmptyClsactSurvives: a clsact qdisc we did not create stays even when no filter is
// left on it.
func TestForeignEmptyClsactSurvives(t *testing.T) {
	p := newPair(t)
	p.addForeign(nil, tcattach.Ingress)
	c := newCounter(t)
	l := p.attach(c.prog(), tcattach.Egress, tcattach.Options{Legacy: true})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if fs := p.filters(tcattach.Egress); len(fs) != 0 {
		t.Fatalf("egress filters after Close: %+v", fs)
	}
	if q := p.qdisc(); q != "clsact" {
		t.Fatalf("qdisc %q after Close, want the foreign clsact", q)
	}
}

// TestClsactKeptForForeignFilter: a qdisc we created stays while someone else's filter is on it,
// here on the other side.
func TestClsactKeptForForeignFilter(t *testing.T) {
	p := newPair(t)
	ours, foreign := newCounter(t), newCounter(t)
	l := p.attach(ours.prog(), tcattach.Ingress, tcattach.Options{Legacy: true})
	p.addForeign(foreign.prog(), tcattach.Egress)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if q := p.qdisc(); q != "clsact" {
		t.Fatalf("qdisc %q after Close with a foreign egress filter, want clsact", q)
	}
	if fs := p.filters(tcattach.Egress); len(fs) != 1 || fs[0].Id != foreign.id {
		t.Fatalf("egress filters %+v, want the foreign one (program %d)", fs, foreign.id)
	}
	p.send(true, 3, true)
	wantSeen(t, "foreign egress", []*counter{foreign}, []uint64{3})
}

// TestTwoAttachments: two programs on the same side of one interface both see every packet, and
// each Close removes only its own.
func TestTwoAttachments(t *testing.T) {
	modes(t, func(t *testing.T, legacy bool, mode tcattach.Mode) {
		p := newPair(t)
		c1, c2 := newCounter(t), newCounter(t)
		l1 := p.attach(c1.prog(), tcattach.Ingress, tcattach.Options{Legacy: legacy})
		l2 := p.attach(c2.prog(), tcattach.Ingress, tcattach.Options{Legacy: legacy})
		if mode == tcattach.Clsact {
			if l1.Priority() == l2.Priority() {
				t.Fatalf("both filters at priority %#x", l1.Priority())
			}
			if fs := p.filters(tcattach.Ingress); len(fs) != 2 {
				t.Fatalf("ingress filters %+v, want 2", fs)
			}
		}
		p.send(false, 5, true)
		wantSeen(t, "both attached", []*counter{c1, c2}, []uint64{5, 5})

		if err := l1.Close(); err != nil {
			t.Fatal(err)
		}
		if mode == tcattach.Clsact {
			if fs := p.filters(tcattach.Ingress); len(fs) != 1 || fs[0].Id != c2.id || fs[0].Priority != l2.Priority() {
				t.Fatalf("ingress filters after the first Close %+v, want the second's (program %d, prio %#x)", fs, c2.id, l2.Priority())
			}
			if q := p.qdisc(); q != "clsact" {
				t.Fatalf("qdisc %q with the second filter attached, want clsact", q)
			}
		}
		p.send(false, 3, true)
		wantSeen(t, "the second alone", []*counter{c1, c2}, []uint64{5, 8})

		if err := l2.Close(); err != nil {
			t.Fatal(err)
		}
		if fs := p.filters(tcattach.Ingress); len(fs) != 0 {
			t.Fatalf("ingress filters after both Closed: %+v", fs)
		}
		if q := p.qdisc(); q != "" {
			t.Fatalf("qdisc %q left after both Closed", q)
		}
		p.send(false, 2, true)
		wantSeen(t, "neither", []*counter{c1, c2}, []uint64{5, 8})
	})
}

// TestAttachOrder: a program attached later runs later, with clsact as with tcx: the first drops
// every packet and the second never sees one. With clsact a lower Options.Priority runs first.
func TestAttachOrder(t *testing.T) {
	modes(t, func(t *testing.T, legacy bool, mode tcattach.Mode) {
		p := newPair(t)
		first, second := newCounter(t), newCounter(t)
		first.dropAll()
		p.attach(first.prog(), tcattach.Egress, tcattach.Options{Legacy: legacy})
		p.attach(second.prog(), tcattach.Egress, tcattach.Options{Legacy: legacy})
		var early *counter
		if mode == tcattach.Clsact {
			early = newCounter(t)
			p.attach(early.prog(), tcattach.Egress, tcattach.Options{Legacy: legacy, Priority: tcattach.DefaultPriority - tcattach.PrioritySpan})
		}
		p.send(true, 6, false)
		for deadline := time.Now().Add(10 * time.Second); first.stat(1) < 6 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := first.stat(1); n != 6 {
			t.Fatalf("first dropped %d of 6", n)
		}
		if n := second.seen(); n != 0 {
			t.Fatalf("the program attached second saw %d packets the first had dropped", n)
		}
		if early != nil {
			if n := early.seen(); n != 6 {
				t.Fatalf("the program at a lower priority saw %d of 6 packets", n)
			}
		}
	})
}

// TestHaveTCX: the probe agrees with what Attach does.
func TestHaveTCX(t *testing.T) {
	p := newPair(t)
	c := newCounter(t)
	l := p.attach(c.prog(), tcattach.Ingress, tcattach.Options{})
	err := tcattach.HaveTCX()
	if (err == nil) != (l.Mode() == tcattach.TCX) {
		t.Fatalf("HaveTCX: %v, and Attach used %v", err, l.Mode())
	}
	t.Logf("HaveTCX: %v; Attach used %v", err, l.Mode())
}

// TestCloseLeavesReplacement: when someone replaced our filter (same priority and handle,
// another program), Close leaves theirs.
func TestCloseLeavesReplacement(t *testing.T) {
	p := newPair(t)
	ours, theirs := newCounter(t), newCounter(t)
	l := p.attach(ours.prog(), tcattach.Ingress, tcattach.Options{Legacy: true})
	err := p.nl.FilterReplace(&netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: p.idx, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: l.Priority(), Protocol: unix.ETH_P_ALL},
		Fd:           theirs.prog().FD(),
		Name:         "theirs",
		DirectAction: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if fs := p.filters(tcattach.Ingress); len(fs) != 1 || fs[0].Id != theirs.id {
		t.Fatalf("ingress filters after Close %+v, want the replacement (program %d)", fs, theirs.id)
	}
	p.send(false, 3, true)
	wantSeen(t, "replacement", []*counter{ours, theirs}, []uint64{0, 3})
}

// TestFallbackWithoutTCX: where tcx is not supported, Attach without Legacy falls back to a
// clsact filter that sees packets and goes with Close, qdisc included.
func TestFallbackWithoutTCX(t *testing.T) {
	p := newPair(t)
	restore := tcattach.WithoutTCX()
	defer restore()
	c := newCounter(t)
	l := p.attach(c.prog(), tcattach.Egress, tcattach.Options{})
	if l.Mode() != tcattach.Clsact {
		t.Fatalf("attached with %v without tcx, want clsact", l.Mode())
	}
	if fs := p.filters(tcattach.Egress); len(fs) != 1 || fs[0].Id != c.id {
		t.Fatalf("egress filters %+v, want ours (program %d)", fs, c.id)
	}
	p.send(true, 4, true)
	wantSeen(t, "fallback", []*counter{c}, []uint64{4})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if q := p.qdisc(); q != "" {
		t.Fatalf("qdisc %q left after Close", q)
	}
}
