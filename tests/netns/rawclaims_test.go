package netns_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The README's claims about what our stack does with a peer that breaks the protocol, each
// proven with a userspace MPTCP client (netns.RawMPTCP, behind a TUN device) that sends what
// the kernel's MPTCP never would: our counters, the segments our stack answers with, and the
// bytes the application and the client receive.
//
//	namespace B (ours, net.mptcp.enabled=0)
//	  our listener 0.0.0.0:port ── atk0 10.250.0.1/24 ══ TUN ══ the test: RawMPTCP at 10.250.0.2

// rawRig is our listener in namespace B and the TUN device behind which the test runs its
// client.
type rawRig struct {
	t      *testing.T
	ctx    context.Context
	topo   *netns.Topology
	tun    *netns.TUN
	ln     *control.Listener
	dst    netip.AddrPort
	before map[string]uint64
}

func newRawRig(t *testing.T, d time.Duration) *rawRig {
	testenv.RequireRoot(t)
	r := &rawRig{t: t, ctx: caseCtx(t, d), topo: netns.New(t, netns.Config{Paths: 1, B: ourSide})}
	r.ln = listenOurs(t, r.topo.B, "0.0.0.0:0")
	r.tun = r.topo.B.AddTUN(t, "atk0", netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("10.250.0.2"))
	r.dst = netip.AddrPortFrom(r.tun.Local, uint16(r.ln.Addr().(*net.TCPAddr).Port))
	return r
}

// dial opens the client's connection from sport and accepts it; the counters' deltas start
// here. Both ends close with the test.
func (r *rawRig) dial(sport uint16, o netns.RawOptions) (*netns.RawMPTCP, net.Conn) {
	r.t.Helper()
	r.before = r.counters()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := netns.Accept(r.ctx, r.ln)
		if err != nil {
			r.t.Error(err)
		}
		accepted <- c
	}()
	c, err := r.tun.DialRaw(r.ctx, sport, r.dst, o)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(c.Close)
	srv := <-accepted
	if srv == nil {
		r.t.FailNow()
	}
	r.t.Cleanup(func() { srv.Close() })
	return c, srv
}

func (r *rawRig) counters() map[string]uint64 {
	r.t.Helper()
	c, err := ourStack(r.t).Counters()
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *rawRig) delta(name string) uint64 { return r.counters()[name] - r.before[name] }

// waitDelta waits until our counter name has risen by at least n since dial.
func (r *rawRig) waitDelta(name string, n uint64) {
	r.t.Helper()
	for r.delta(name) < n {
		select {
		case <-r.ctx.Done():
			r.logCounters()
			r.t.Fatalf("%s +%d, want +%d", name, r.delta(name), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// wantDeltas checks that our counters rose by exactly these amounts since dial.
func (r *rawRig) wantDeltas(want map[string]uint64) {
	r.t.Helper()
	now := r.counters()
	for name, n := range want {
		if d := now[name] - r.before[name]; d != n {
			r.t.Errorf("%s +%d, want +%d", name, d, n)
		}
	}
}

func (r *rawRig) logCounters() {
	d := map[string]uint64{}
	for k, v := range r.counters() {
		d[k] = v - r.before[k]
	}
	logNonZero(r.t, "ours (deltas)", d)
}

// waitNoConns waits up to d until our stack has no connection left (those of earlier tests
// end), and reports whether it got there.
func waitNoConns(t *testing.T, d time.Duration) bool {
	for end := time.Now().Add(d); len(ourStack(t).Conns()) != 0; {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// pattern returns n bytes no two tests share, so that misplaced bytes show.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

// appReader collects what the application reads from a connection.
type appReader struct {
	mu   sync.Mutex
	b    []byte
	err  error
	done chan struct{}
}

func readApp(t *testing.T, c net.Conn) *appReader {
	a := &appReader{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			a.mu.Lock()
			a.b = append(a.b, buf[:n]...)
			a.err = err
			a.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-a.done })
	return a
}

// wait waits until the application has read want, and checks it has read that and nothing else.
func (a *appReader) wait(ctx context.Context, want []byte) error {
	for {
		a.mu.Lock()
		got, err := a.b, a.err
		a.mu.Unlock()
		switch {
		case len(got) >= len(want):
			if !bytes.Equal(got, want) {
				return fmt.Errorf("the application read %d bytes, not the %d sent (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			return nil
		case err != nil:
			return fmt.Errorf("the application read %d of %d bytes, then %w", len(got), len(want), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the application read %d of %d bytes: %w", len(got), len(want), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitClientData waits until the client has received want from our stack, in order, and
// checks it has received that and nothing else.
func waitClientData(ctx context.Context, c *netns.RawMPTCP, want []byte) error {
	for {
		got, unmapped := c.Data()
		switch {
		case unmapped != 0:
			return fmt.Errorf("the client got %d bytes from us that no mapping placed", unmapped)
		case len(got) >= len(want):
			if !bytes.Equal(got, want) {
				return fmt.Errorf("the client got %d bytes, not the %d we wrote (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the client got %d of %d bytes: %w", len(got), len(want), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// option returns the first MPTCP option of type T in s.
func option[T wire.Option](s netns.Seg) (T, bool) {
	opts, _ := s.MPTCP()
	for _, o := range opts {
		if v, ok := o.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// exchangeRaw moves data both ways at once: the raw peer sends up, mapped, on its subflow from
// while our application srv writes down; the application must have read appWant (what it read
// in all, up last) and the raw client c received down, both byte-exact.
func exchangeRaw(t *testing.T, ctx context.Context, from, c *netns.RawMPTCP, srv net.Conn, app *appReader, up, appWant, down []byte) {
	t.Helper()
	wrote := writeAsync(srv, down)
	if err := from.SendMapped(ctx, up); err != nil {
		t.Fatal(err)
	}
	if err := from.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.wait(ctx, appWant); err != nil {
		t.Error(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := waitClientData(ctx, c, down); err != nil {
		t.Error(err)
	}
}

// writeAsync writes b to c on a goroutine; the error comes on the channel.
func writeAsync(c net.Conn, b []byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		ch <- err
	}()
	return ch
}

// TestRawThirdAckWithoutMPCapable: a client sends an MP_CAPABLE SYN, gets our SYN/ACK with
// MP_CAPABLE, and answers with a third ACK without it (RFC 8684 §3.1: the client continues as
// plain TCP). Our listener falls back: counted (MPCapableFallbackACK, FallbackPassive), the
// accepted connection is not MPTCP, the data both ways is plain TCP (no MPTCP option on any
// segment after the SYN/ACK) and byte-exact.
func TestRawThirdAckWithoutMPCapable(t *testing.T) {
	r := newRawRig(t, 30*time.Second)
	c, srv := r.dial(41001, netns.RawOptions{NoMPCAck: true, Track: true})
	app := readApp(t, srv)
	segs := c.Segments()
	if mpc, ok := option[wire.MPCapable](segs[0]); !ok || mpc.Form != wire.MPCSynAck {
		t.Fatalf("our SYN/ACK: %v, want MP_CAPABLE", segs[0])
	}
	if control.IsMPTCP(srv) {
		t.Errorf("the accepted connection is MPTCP")
	}
	up, down := pattern(192<<10, 1), pattern(256<<10, 2)
	exchangeRaw(t, r.ctx, c, c, srv, app, up, up, down)
	segs = c.Segments()
	for i, s := range segs[1:] {
		if opts, err := s.MPTCP(); s.Flags&netns.TCPSYN == 0 && (len(opts) != 0 || err != nil) { // a SYN/ACK sent again may
			t.Errorf("after the fallback our segment %d of %d, %v, carries MPTCP options", i+1, len(segs)-1, s)
			break
		}
	}
	r.wantDeltas(map[string]uint64{"MPCapableFallbackACK": 1, "FallbackPassive": 1, "MPCapableACKRX": 0})
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawAddAddrHMAC: the client announces an address with a wrong HMAC (RFC 8684 §3.4.1):
// ignored (no echo, no subflow to it) and counted (AddAddrHMacFailure). Then an address with
// the right HMAC: accepted, echoed, and joined (an MP_JOIN SYN reaches it). The second proves
// the test's HMAC right, so the first is refused for its HMAC and nothing else.
func TestRawAddAddrHMAC(t *testing.T) {
	ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
	r := newRawRig(t, 30*time.Second)
	c, _ := r.dial(41002, netns.RawOptions{Track: true})
	badAddr, goodAddr := netip.MustParseAddr("10.250.0.3"), netip.MustParseAddr("10.250.0.4")
	const badID, goodID, badPort, goodPort = 11, 12, 7001, 7002
	badSyn, err := r.tun.Watch(badPort)
	if err != nil {
		t.Fatal(err)
	}
	goodSyn, err := r.tun.Watch(goodPort)
	if err != nil {
		t.Fatal(err)
	}

	bad := wire.AddAddr{AddrID: badID, Addr: badAddr, Port: badPort, HasPort: true,
		HMAC: mpcrypto.AddAddrHMAC(c.Key, c.PeerKey, badID, badAddr, badPort) ^ 1}
	if err := c.SendAck(bad.Append(nil)); err != nil {
		t.Fatal(err)
	}
	r.waitDelta("AddAddrHMacFailure", 1)

	good := wire.AddAddr{AddrID: goodID, Addr: goodAddr, Port: goodPort, HasPort: true,
		HMAC: mpcrypto.AddAddrHMAC(c.Key, c.PeerKey, goodID, goodAddr, goodPort)}
	if err := c.SendAck(good.Append(nil)); err != nil {
		t.Fatal(err)
	}
	r.waitDelta("AddAddrAccepted", 1)
	isEcho := func(id uint8) func(netns.Seg) bool {
		return func(s netns.Seg) bool {
			a, ok := option[wire.AddAddr](s)
			return ok && a.Echo && a.AddrID == id
		}
	}
	i, err := c.Await(r.ctx, 0, isEcho(goodID))
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := option[wire.AddAddr](c.Segments()[i]); a.Addr != goodAddr || a.Port != goodPort {
		t.Errorf("echo %+v, want %v port %d", a, goodAddr, goodPort)
	}
	// Our subflow to the address: its SYN carries MP_JOIN with the client's token.
	for syn := false; !syn; {
		select {
		case s := <-goodSyn:
			j, ok := option[wire.MPJoin](s)
			syn = s.Flags == netns.TCPSYN && ok && j.Form == wire.MPJSyn && j.Token == mpcrypto.Token(c.Key) && s.Dst == goodAddr
			if !syn {
				t.Logf("to the announced address: %v", s)
			}
		case <-r.ctx.Done():
			r.logCounters()
			t.Fatal("no MP_JOIN SYN to the address announced with the right HMAC")
		}
	}
	// The bad announcement came first: its echo and its subflow's SYN, had there been any, would
	// have come before the good one's.
	if _, err := c.Await(caseCtx(t, 0), 0, isEcho(badID)); err == nil {
		t.Errorf("the address announced with a wrong HMAC was echoed")
	}
	select {
	case s := <-badSyn:
		t.Errorf("a segment to the address announced with a wrong HMAC: %v", s)
	default:
	}
	r.wantDeltas(map[string]uint64{"AddAddrHMacFailure": 1, "AddAddrAccepted": 1, "EchoAddTx": 1})
	if t.Failed() {
		r.logCounters()
	}
}

// The retransmission schedule of our ADD_ADDRs (pkg/control/join.go: announceRTO, and
// retransmitAnnounces doubles it at each try): sent, then again after 1 s, 2 s, 4 s, ...
const (
	announceRTO  = time.Second
	announceSlop = 500 * time.Millisecond // timer and scheduling latency on a loaded machine
)

// TestRawAddAddrRetransmitted: our server announces an address (a signal endpoint) to a
// client that does not echo it: the ADD_ADDR comes again after the retransmission timeout
// (RFC 8684 §3.4.1). Once the client echoes it, no ADD_ADDR comes for two more timeouts,
// while our ACKs of the client's data keep coming: the announcement is done.
func TestRawAddAddrRetransmitted(t *testing.T) {
	m := ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
	r := newRawRig(t, 40*time.Second)
	addr := r.topo.Path(0).B.Addr(netns.IPv4)
	const id = 21
	ep, err := pmapi.ParseEndpoint(fmt.Sprintf("%v,id=%d,signal", addr, id))
	if err != nil {
		t.Fatal(err)
	}
	// The path manager announces a new endpoint on every server connection of the stack: the
	// counters are this connection's alone when no other is left from earlier tests.
	alone := waitNoConns(t, 5*time.Second)
	addEndpoint(t, m, ep)
	c, srv := r.dial(41003, netns.RawOptions{Track: true})
	app := readApp(t, srv)
	isAdd := func(s netns.Seg) bool {
		a, ok := option[wire.AddAddr](s)
		return ok && !a.Echo && a.AddrID == id
	}
	first, err := c.Await(r.ctx, 0, isAdd)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := option[wire.AddAddr](c.Segments()[first])
	if a.Addr != addr || a.PortPresent() {
		t.Errorf("ADD_ADDR %+v, want %v without a port", a, addr)
	}
	if want := mpcrypto.AddAddrHMAC(c.PeerKey, c.Key, id, addr, 0); a.HMAC != want {
		t.Errorf("ADD_ADDR HMAC %#x, want %#x", a.HMAC, want)
	}
	second, err := c.Await(r.ctx, first+1, isAdd)
	if err != nil {
		t.Fatal(err)
	}
	segs := c.Segments()
	if gap := segs[second].At.Sub(segs[first].At); gap < announceRTO-100*time.Millisecond || gap >= 2*announceRTO {
		t.Errorf("the ADD_ADDR came again after %v, want the retransmission timeout, %v", gap, announceRTO)
	}
	r.waitDelta("AddAddrTx", 2)

	echoed := len(c.Segments())
	if err := c.SendAck(wire.AddAddr{Echo: true, AddrID: id, Addr: addr}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	r.waitDelta("EchoAdd", 1)
	// Without the echo, the next two would have gone 2 s and 6 s after the second. Until then
	// and a while after, the client sends data and our side ACKs it: it sees our segments.
	quiet := segs[second].At.Add(announceRTO<<1 + announceRTO<<2 + announceSlop)
	var up []byte
	for i := 0; ; i++ {
		p := pattern(1000, byte(i))
		if err := c.SendMapped(r.ctx, p); err != nil {
			t.Fatal(err)
		}
		up = append(up, p...)
		if time.Now().After(quiet) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.Flush(r.ctx); err != nil {
		t.Fatal(err)
	}
	segs = c.Segments()
	if last := segs[len(segs)-1].At; last.Before(quiet) {
		t.Fatalf("the client's last segment from our side came at %v, before the end of the watch", last)
	}
	for _, s := range segs[echoed:] {
		if isAdd(s) {
			t.Errorf("after the echo, the ADD_ADDR came again at +%v", s.At.Sub(segs[first].At).Round(time.Millisecond))
		}
	}
	t.Logf("after the echo: %d segments from our side over %v", len(segs)-echoed, segs[len(segs)-1].At.Sub(segs[echoed-1].At).Round(time.Millisecond))
	if err := app.wait(r.ctx, up); err != nil {
		t.Error(err)
	}
	if alone && len(ourStack(t).Conns()) == 1 {
		r.wantDeltas(map[string]uint64{"AddAddrTx": 2, "EchoAdd": 1})
	} else {
		t.Logf("other connections of our stack: AddAddrTx +%d counts theirs too", r.delta("AddAddrTx"))
	}
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawJoinAckHMAC: the client opens a second subflow with MP_JOIN (RFC 8684 §3.2); our
// SYN/ACK's HMAC is checked, and the client's third ACK carries a wrong HMAC. Our side resets
// the subflow with MP_TCPRST and counts it (MPJoinAckHMacFailure, MPRstTx); the first subflow
// still carries data both ways, byte-exact. Then a join with the right HMAC gets the fourth ACK
// and is counted (MPJoinAckRx), proving the test's HMAC right.
func TestRawJoinAckHMAC(t *testing.T) {
	ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
	r := newRawRig(t, 30*time.Second)
	c, srv := r.dial(41004, netns.RawOptions{Track: true})
	oc, ok := srv.(*control.Conn)
	if !ok || !oc.MPTCP() {
		t.Fatalf("accepted %T, not an MPTCP connection", srv)
	}
	app := readApp(t, srv)

	j, err := c.Join(r.ctx, 41005, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Close)
	third := len(j.Segments())
	if err := j.SendAck(j.JoinAck(true)); err != nil {
		t.Fatal(err)
	}
	i, err := j.Await(r.ctx, third, func(s netns.Seg) bool { return s.Flags&netns.TCPRST != 0 })
	if err != nil {
		r.logCounters()
		t.Fatalf("no reset of the subflow whose third ACK had a wrong HMAC: %v", err)
	}
	segs := j.Segments()
	for _, s := range segs[third:i] {
		if s.Flags&netns.TCPSYN == 0 { // but our SYN/ACK again
			t.Errorf("before the reset, our side sent %v", s)
		}
	}
	// The reset carries MP_TCPRST (RFC 8684 §3.6) with the reason the kernel gives a third ACK
	// whose HMAC is wrong: administratively prohibited.
	if rst, ok := option[wire.MPTCPRst](segs[i]); !ok {
		t.Errorf("our reset %v carries no MP_TCPRST", segs[i])
	} else if rst.Reason != wire.RstEProhibit {
		t.Errorf("our reset carries MP_TCPRST reason %d (%s), want %d (%s)", rst.Reason, wire.ReasonString(rst.Reason), wire.RstEProhibit, wire.ReasonString(wire.RstEProhibit))
	}
	r.waitDelta("MPJoinAckHMacFailure", 1)
	if n := len(oc.Subflows()); n != 1 {
		t.Errorf("%d subflows after the refused join, want 1", n)
	}

	up, down := pattern(256<<10, 3), pattern(384<<10, 4)
	exchangeRaw(t, r.ctx, c, c, srv, app, up, up, down)
	if d := r.delta("MPJoinAckRx"); d != 0 {
		t.Errorf("MPJoinAckRx +%d after a join with a wrong HMAC", d)
	}

	// The right HMAC: the fourth ACK (RFC 8684 §3.2), and the subflow joins.
	j2, err := c.Join(r.ctx, 41006, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j2.Close)
	third = len(j2.Segments())
	if err := j2.SendAck(j2.JoinAck(false)); err != nil {
		t.Fatal(err)
	}
	if _, err := j2.Await(r.ctx, third, func(s netns.Seg) bool { return s.Flags&^netns.TCPPSH == netns.TCPACK }); err != nil {
		t.Errorf("no fourth ACK for a join with the right HMAC: %v", err)
	}
	r.waitDelta("MPJoinAckRx", 1)
	for len(oc.Subflows()) != 2 && r.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(oc.Subflows()); n != 2 {
		t.Errorf("%d subflows after a join with the right HMAC, want 2", n)
	}
	if j2.Reset() {
		t.Errorf("the join with the right HMAC was reset")
	}
	r.wantDeltas(map[string]uint64{"MPJoinAckHMacFailure": 1, "MPJoinAckRx": 1, "JoinRefused": 1, "Joins": 1, "MPRstTx": 1})
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawMappingConflict: the client maps 3,000 subflow bytes to DSNs and sends the first
// 1,000; then sends the next 1,000 under a mapping that gives them other DSNs (RFC 8684
// §3.3.1: a mapping may not change). Our side counts it (DSSNotMatching) and, with one subflow,
// sends MP_FAIL and falls back to TCP (DssFallback, MPFailFallback; §3.7). The application
// reads the bytes where the first mapping put them, then the plain TCP that follows; our data
// reaches the client as plain TCP, byte-exact.
func TestRawMappingConflict(t *testing.T) {
	r := newRawRig(t, 30*time.Second)
	c, srv := r.dial(41007, netns.RawOptions{Track: true})
	oc, ok := srv.(*control.Conn)
	if !ok || !oc.MPTCP() {
		t.Fatalf("accepted %T, not an MPTCP connection", srv)
	}
	app := readApp(t, srv)
	const n = 1000
	p1, p2, p3 := pattern(n, 5), pattern(n, 6), pattern(64<<10, 7)
	dsn := c.IDSN() + 1
	if err := c.SendData(r.ctx, p1, c.DSS(dsn, 1, 3*n)); err != nil {
		t.Fatal(err)
	}
	if err := app.wait(r.ctx, p1); err != nil {
		t.Fatal(err)
	}
	// Bytes n+1 .. 3n again, to DSNs n/2 further on than the first mapping said. It covers more
	// than its segment, so that it is still news when it is handled after its bytes were read.
	if err := c.SendData(r.ctx, p2, c.DSS(dsn+n+n/2, n+1, 2*n)); err != nil {
		t.Fatal(err)
	}
	r.waitDelta("DSSNotMatching", 1)
	i, err := c.Await(r.ctx, 0, func(s netns.Seg) bool { _, ok := option[wire.MPFail](s); return ok })
	if err != nil {
		r.logCounters()
		t.Fatalf("no MP_FAIL: %v", err)
	}
	if f, _ := option[wire.MPFail](c.Segments()[i]); f.DSN != dsn+n && f.DSN != dsn+2*n {
		t.Errorf("MP_FAIL at DSN %d, want %d or %d (the bytes received in order)", f.DSN, dsn+n, dsn+2*n)
	}
	for oc.MPTCP() && r.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if oc.MPTCP() {
		t.Error("the connection is still MPTCP after MP_FAIL")
	}
	if err := app.wait(r.ctx, append(append([]byte(nil), p1...), p2...)); err != nil {
		t.Error(err)
	}

	// Plain TCP from now on, both ways.
	down := pattern(128<<10, 8)
	exchangeRaw(t, r.ctx, c, c, srv, app, p3, bytes.Join([][]byte{p1, p2, p3}, nil), down)
	segs := c.Segments()
	for _, s := range segs[i+1:] {
		if opts, err := s.MPTCP(); len(opts) != 0 || err != nil {
			t.Errorf("after MP_FAIL our segment %v carries MPTCP options", s)
			break
		}
	}
	r.wantDeltas(map[string]uint64{"DSSNotMatching": 1, "DssFallback": 1, "MPFailFallback": 1, "UnmappedDataRx": 0})
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawMappingConflictJoined: as TestRawMappingConflict, on a connection that has had a
// second subflow. The connection cannot know where its stream stands on the subflow with the
// contradicting mapping, which is reset (RFC 8684 §3.7), counted (DSSNotMatching) without a
// fallback; the client sends again on the other subflow the data our side did not DATA_ACK,
// and the data both ways goes on there, byte-exact, over MPTCP.
func TestRawMappingConflictJoined(t *testing.T) {
	ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
	r := newRawRig(t, 30*time.Second)
	c, srv := r.dial(41008, netns.RawOptions{Track: true})
	oc, ok := srv.(*control.Conn)
	if !ok || !oc.MPTCP() {
		t.Fatalf("accepted %T, not an MPTCP connection", srv)
	}
	app := readApp(t, srv)
	j, err := c.Join(r.ctx, 41009, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Close)
	third := len(j.Segments())
	if err := j.SendAck(j.JoinAck(false)); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Await(r.ctx, third, func(s netns.Seg) bool { return s.Flags&^netns.TCPPSH == netns.TCPACK }); err != nil {
		t.Fatalf("no fourth ACK: %v", err)
	}
	for len(oc.Subflows()) != 2 && r.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}

	const n = 1000
	p1, p2, p3 := pattern(n, 9), pattern(n, 10), pattern(64<<10, 11)
	dsn := c.IDSN() + 1
	if err := c.SendData(r.ctx, p1, c.DSS(dsn, 1, 3*n)); err != nil {
		t.Fatal(err)
	}
	if err := app.wait(r.ctx, p1); err != nil {
		t.Fatal(err)
	}
	from := len(c.Segments())
	if err := c.SendData(r.ctx, p2, c.DSS(dsn+n+n/2, n+1, 2*n)); err != nil {
		t.Fatal(err)
	}
	r.waitDelta("DSSNotMatching", 1)
	i, err := c.Await(r.ctx, from, func(s netns.Seg) bool { return s.Flags&netns.TCPRST != 0 })
	if err != nil {
		r.logCounters()
		t.Fatalf("the subflow with the contradicting mapping was not reset: %v", err)
	}
	if rst, ok := option[wire.MPTCPRst](c.Segments()[i]); !ok || rst.Reason != wire.RstEMPTCP {
		t.Errorf("our reset %v: want MP_TCPRST reason %d (%s)", c.Segments()[i], wire.RstEMPTCP, wire.ReasonString(wire.RstEMPTCP))
	}
	for _, s := range c.Segments()[from:] {
		if _, ok := option[wire.MPFail](s); ok {
			t.Errorf("MP_FAIL on a connection that had a second subflow: %v", s)
		}
	}

	// What our side did not DATA_ACK goes again on the other subflow, then more, both ways.
	j.SetNextDSN(dsn + n)
	down := pattern(128<<10, 12)
	exchangeRaw(t, r.ctx, j, c, srv, app, append(append([]byte(nil), p2...), p3...), bytes.Join([][]byte{p1, p2, p3}, nil), down)
	if !oc.MPTCP() {
		t.Error("the connection fell back")
	}
	if n := len(oc.Subflows()); n != 1 {
		t.Errorf("%d subflows, want 1 (the joined one)", n)
	}
	r.wantDeltas(map[string]uint64{"DSSNotMatching": 1, "DssFallback": 0, "MPFailFallback": 0, "MPFailTx": 0})
	if t.Failed() {
		r.logCounters()
	}
}
