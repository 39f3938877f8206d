package netns_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/mpcrypto"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The README's "Security and limits" claims about the handshakes of our listener, proven with
// the userspace client behind a TUN device (rawclaims_test.go has the rig): a third ACK our
// listener cannot take as MPTCP makes a plain TCP connection, not a dropped one; a connection
// our listener will not serve is reset with the MP_TCPRST reason the README names.

// plainBothWays checks that a connection our listener fell back on is plain TCP: data both
// ways, byte-exact, and no MPTCP option on any segment of ours after the SYN/ACK.
func plainBothWays(t *testing.T, ctx context.Context, c *netns.RawMPTCP, srv net.Conn, seed byte) {
	t.Helper()
	if control.IsMPTCP(srv) {
		t.Fatalf("the accepted connection is MPTCP")
	}
	c.Fallback()
	app := readApp(t, srv)
	up, down := pattern(128<<10, seed), pattern(160<<10, seed+1)
	exchangeRaw(t, ctx, c, c, srv, app, up, up, down)
	segs := c.Segments()
	for i, s := range segs[1:] {
		if opts, err := s.MPTCP(); s.Flags&netns.TCPSYN == 0 && (len(opts) != 0 || err != nil) { // but a SYN/ACK sent again
			t.Errorf("after the fallback our segment %d of %d, %v, carries MPTCP options", i+1, len(segs)-1, s)
			break
		}
	}
}

// wantDeltas is r.wantDeltas for counters our stack has: a name it does not know fails.
func wantDeltas(r *rawRig, want map[string]uint64) {
	r.t.Helper()
	now := r.counters()
	for name := range want {
		if _, ok := now[name]; !ok {
			r.t.Errorf("our stack has no counter %s", name)
		}
	}
	r.wantDeltas(want)
}

// synAckKey returns the key of the MP_CAPABLE our SYN/ACK (a client's first segment) carried.
func synAckKey(t *testing.T, c *netns.RawMPTCP) uint64 {
	t.Helper()
	segs := c.Segments()
	mpc, ok := option[wire.MPCapable](segs[0])
	if !ok || mpc.Form != wire.MPCSynAck || segs[0].Flags != netns.TCPSYN|netns.TCPACK {
		t.Fatalf("our SYN/ACK: %v, want MP_CAPABLE", segs[0])
	}
	return mpc.SenderKey
}

// awaitReset waits for our reset of c and returns the MP_TCPRST it carries.
func awaitReset(t *testing.T, ctx context.Context, c *netns.RawMPTCP) (wire.MPTCPRst, bool) {
	t.Helper()
	i, err := c.Await(ctx, 0, func(s netns.Seg) bool { return s.Flags&netns.TCPRST != 0 })
	if err != nil {
		t.Fatalf("no reset: %v", err)
	}
	s := c.Segments()[i]
	for _, p := range c.Segments()[1:i] {
		t.Logf("before the reset, our side sent %v", p)
	}
	rst, ok := option[wire.MPTCPRst](s)
	if !ok {
		t.Errorf("our reset %v carries no MP_TCPRST", s)
	}
	return rst, ok
}

// TestRawThirdAckBadKey: the client's third ACK echoes a key that is not the one our SYN/ACK
// carried (RFC 8684 §3.1). Our listener takes no ticket and serves the connection as plain TCP:
// counted (MPCapableACKBadKey, MPCapableFallbackACK, FallbackPassive); the accepted connection
// is not MPTCP, and the data both ways is plain TCP, byte-exact.
func TestRawThirdAckBadKey(t *testing.T) {
	r := newRawRig(t, 30*time.Second)
	c, srv := r.dial(41040, netns.RawOptions{BadAckKey: true, Track: true})
	if k := synAckKey(t, c); k != c.PeerKey {
		t.Fatalf("our SYN/ACK's key %#x, the client took %#x", k, c.PeerKey)
	}
	plainBothWays(t, r.ctx, c, srv, 20)
	wantDeltas(r, map[string]uint64{"MPCapableACKBadKey": 1, "MPCapableFallbackACK": 1, "FallbackPassive": 1,
		"MPCapableACKRX": 0, "PassiveTicketUsed": 0, "TokenFallbackInit": 0})
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawThirdAckTokenInUse: our listener's key for a connection is derived from its 4-tuple
// and the client's ISN, so a client that opens a connection again from the same port with the
// same ISN gets the same key, while the first connection still holds the key's token. The
// first connection has a second subflow, and its first is reset: the 4-tuple is free and the
// connection lives on. The second connection's third ACK echoes our key right, and the token
// is in use: our listener serves it as plain TCP, counted (TokenFallbackInit, FallbackPassive),
// without a ticket; the data of both connections is byte-exact.
func TestRawThirdAckTokenInUse(t *testing.T) {
	ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
	r := newRawRig(t, 30*time.Second)
	const sport, iss = 41041, 0x5eed0001
	c1, srv1 := r.dial(sport, netns.RawOptions{Track: true, ISS: iss})
	oc, ok := srv1.(*control.Conn)
	if !ok || !oc.MPTCP() {
		t.Fatalf("accepted %T, not an MPTCP connection", srv1)
	}
	app1 := readApp(t, srv1)
	j, err := c1.Join(r.ctx, 41042, 1)
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
	c1.Close() // a reset of the first subflow
	for (len(oc.Subflows()) != 1 || !oc.MPTCP()) && r.ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(oc.Subflows()); n != 1 || !oc.MPTCP() {
		t.Fatalf("after the reset of its first subflow: %d subflows (want 1), MPTCP %v", n, oc.MPTCP())
	}
	if oc.Token() != mpcrypto.Token(c1.PeerKey) {
		t.Fatalf("our token %#x, not the one of our key %#x", oc.Token(), c1.PeerKey)
	}

	c2, srv2 := r.dial(sport, netns.RawOptions{Track: true, ISS: iss})
	if k := synAckKey(t, c2); k != c1.PeerKey {
		t.Fatalf("our SYN/ACK to the same 4-tuple and ISN: key %#x, not the first connection's %#x", k, c1.PeerKey)
	}
	plainBothWays(t, r.ctx, c2, srv2, 22)

	// The first connection goes on over its second subflow, both ways.
	up, down := pattern(64<<10, 24), pattern(64<<10, 25)
	exchangeRaw(t, r.ctx, j, j, srv1, app1, up, up, down)
	if !oc.MPTCP() {
		t.Error("the first connection fell back")
	}
	wantDeltas(r, map[string]uint64{"TokenFallbackInit": 1, "FallbackPassive": 1, "MPCapableACKRX": 0,
		"PassiveTicketUsed": 0, "MPCapableACKBadKey": 0, "TokenCollision": 0})
	if t.Failed() {
		r.logCounters()
	}
}

// smallStackEnv has TestRawNoTicket run its part in a process of its own (the test binary run
// again), whose stack has noTicketConns connection slots: a process has one stack.
const smallStackEnv = "MPTCPGO_NETNS_SMALL_STACK"

// noTicketConns is the connection slots of TestRawNoTicket's stack: its ticket queue is kept
// at a quarter of them (Stack.ticketTarget).
const noTicketConns = 8

// TestRawNoTicket: a stack whose connection slots are all taken has no ticket to give a
// completed handshake (MPCapableNoTicket). With 8 slots the queue holds 2 tickets; every
// connection accepted (and kept open) takes one, and each accept refills the queue while slots
// are free: the first 8 connections are MPTCP. The next ones find the queue empty: they are not
// dropped but served as plain TCP, byte-exact, counted (MPCapableNoTicket, FallbackPassive).
// Once a connection ends and its slot is free again, connections are MPTCP again.
func TestRawNoTicket(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv(smallStackEnv) == "" {
		ctx := caseCtx(t, 90*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRawNoTicket$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), smallStackEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestRawNoTicket")) {
			t.Fatalf("the test in a process with a small stack: %v\n%s", err, out)
		}
		t.Logf("in a process with a small stack:\n%s", out)
		return
	}
	stackOnce.Do(func() {
		stackOnce.pm = pm.New(nil)
		// Subflow slots for the connections, and the passive joins' queue (64).
		cfg := datapath.Config{MaxConns: noTicketConns, MaxSubs: 2*noTicketConns + 64}
		stackOnce.s, stackOnce.err = control.NewStack(control.StackConfig{Datapath: cfg, PathManager: stackOnce.pm})
	})
	s := ourStack(t)
	t.Cleanup(func() { s.Close() })
	r := newRawRig(t, 60*time.Second)
	start := r.counters()
	var first *netns.RawMPTCP
	var firstSrv net.Conn
	for i := range noTicketConns {
		c, srv := r.dial(uint16(41050+i), netns.RawOptions{Track: true})
		if !control.IsMPTCP(srv) {
			r.logCounters()
			t.Fatalf("connection %d of %d is not MPTCP", i+1, noTicketConns)
		}
		if i == 0 {
			first, firstSrv = c, srv
		}
	}
	r.before = start
	wantDeltas(r, map[string]uint64{"PassiveTicketUsed": noTicketConns, "PassiveOpens": noTicketConns, "MPCapableNoTicket": 0})

	for i := range 2 {
		c, srv := r.dial(uint16(41050+noTicketConns+i), netns.RawOptions{Track: true})
		synAckKey(t, c)
		plainBothWays(t, r.ctx, c, srv, byte(30+2*i))
		wantDeltas(r, map[string]uint64{"MPCapableNoTicket": 1, "FallbackPassive": 1, "PassiveTicketUsed": 0,
			"MPCapableACKRX": 0, "PassiveOpens": 0})
	}

	// A connection that ends frees its slot (after its cooldown, 2 s): the queue refills and
	// connections are MPTCP again.
	first.Close()
	firstSrv.Close()
	ended := time.Now()
	for port := uint16(41070); ; port++ {
		_, srv := r.dial(port, netns.RawOptions{Track: true})
		if control.IsMPTCP(srv) {
			t.Logf("MPTCP again %v after a connection ended, at try %d", time.Since(ended).Round(time.Millisecond), port-41070+1)
			break
		}
		if port == 41070+40 {
			r.logCounters()
			t.Fatal("no MPTCP connection in 40 tries, 250 ms apart, after a connection ended")
		}
		time.Sleep(250 * time.Millisecond)
	}
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawJoinSocketRefusesMPCapable: an MP_CAPABLE connection to the join socket of a signal
// endpoint (the extra listener at an announced address our listener does not cover) is reset
// with MP_TCPRST reason 3, administratively prohibited, and counted (MPCapableEndpAttempt), as
// the kernel does at its port-based endpoints.
//
//	namespace B (ours): listener at path 0's address; signal endpoint 10.250.0.1, the TUN's
//	address: its join socket 10.250.0.1:port ══ TUN ══ the test's client
func TestRawJoinSocketRefusesMPCapable(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := caseCtx(t, 30*time.Second)
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	m := ourPM(t, pm.DefaultLimits)
	tun := topo.B.AddTUN(t, "atk0", netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("10.250.0.2"))
	ln := listenOurs(t, topo.B, topo.Path(0).B.HostPort(netns.IPv4, 0))
	addEndpoint(t, m, pmapi.Endpoint{Addr: tun.Local, Flags: pmapi.FlagSignal})
	at := netip.AddrPortFrom(tun.Local, uint16(ln.Addr().(*net.TCPAddr).Port))
	if got := ourStack(t).JoinAddrs(); !slices.Contains(got, at) {
		t.Fatalf("join sockets %v, want %v among them", got, at)
	}
	r := &rawRig{t: t, ctx: ctx}
	r.before = r.counters()
	c, err := tun.DialRaw(ctx, 41060, at, netns.RawOptions{Track: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	synAckKey(t, c)
	if rst, ok := awaitReset(t, ctx, c); ok && rst.Reason != wire.RstEProhibit {
		t.Errorf("our reset carries MP_TCPRST reason %d (%s), want %d (%s)", rst.Reason, wire.ReasonString(rst.Reason),
			wire.RstEProhibit, wire.ReasonString(wire.RstEProhibit))
	}
	r.waitDelta("MPCapableEndpAttempt", 1)
	wantDeltas(r, map[string]uint64{"MPCapableEndpAttempt": 1, "MPRstTx": 1, "PassiveOpens": 0})
	if t.Failed() {
		r.logCounters()
	}
}

// TestRawMemoryPressureReset: with its memory limit below the heap it uses, our stack resets
// the connection its listener accepted with MP_TCPRST reason 2, lack of resources, counted
// (MemoryPressureRefused); with the limit lifted the next one is served over MPTCP.
func TestRawMemoryPressureReset(t *testing.T) {
	r := newRawRig(t, 30*time.Second)
	s := ourStack(t)
	s.SetMemoryLimit(1) // far below any heap
	t.Cleanup(func() { s.SetMemoryLimit(0) })
	r.before = r.counters()
	c, err := r.tun.DialRaw(r.ctx, 41061, r.dst, netns.RawOptions{Track: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	synAckKey(t, c)
	if rst, ok := awaitReset(t, r.ctx, c); ok && rst.Reason != wire.RstEResource {
		t.Errorf("our reset carries MP_TCPRST reason %d (%s), want %d (%s)", rst.Reason, wire.ReasonString(rst.Reason),
			wire.RstEResource, wire.ReasonString(wire.RstEResource))
	}
	r.waitDelta("MemoryPressureRefused", 1)
	wantDeltas(r, map[string]uint64{"MemoryPressureRefused": 1, "MPRstTx": 1, "PassiveOpens": 0})

	s.SetMemoryLimit(1 << 40)
	_, srv := r.dial(41062, netns.RawOptions{Track: true})
	if !control.IsMPTCP(srv) {
		t.Errorf("under the limit, the accepted connection is not MPTCP")
	}
	if t.Failed() {
		r.logCounters()
	}
}
