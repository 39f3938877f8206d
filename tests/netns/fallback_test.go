package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestFallbackToPlainServer: our client reaches a plain TCP server, which answers without
// MP_CAPABLE; the connection continues as TCP, byte-exact.
func TestFallbackToPlainServer(t *testing.T) { forFamilies(t, testFallbackToPlainServer) }

func testFallbackToPlainServer(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, IPv6: fam == netns.IPv6})
	p := topo.Path(0)
	ln, err := topo.B.ListenTCP(p.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	served := netns.ServeOne(ctx, ln, 4<<20, 2)
	var c net.Conn
	d := ourCounterDeltas(t, func() {
		c = dialOurs(t, ctx, topo.A, ln.Addr().String())
	})
	if control.IsMPTCP(c) {
		t.Fatal("connection to a plain TCP server claims MPTCP")
	}
	if d["MPCapableFallbackSYNACK"] != 1 || d["FallbackActive"] != 1 {
		t.Errorf("MPCapableFallbackSYNACK moved by %d, FallbackActive by %d; want 1 each", d["MPCapableFallbackSYNACK"], d["FallbackActive"])
	}
	exchangeServed(t, ctx, c, served, 8<<20, 4<<20)
}

// TestFallbackFromPlainClient: a plain TCP client reaches our listener and is served as TCP.
func TestFallbackFromPlainClient(t *testing.T) { forFamilies(t, testFallbackFromPlainClient) }

func testFallbackFromPlainClient(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide, IPv6: fam == netns.IPv6})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(fam, 0))
	type res struct {
		tr    netns.Transfer
		mptcp bool
		err   error
	}
	done := make(chan res, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			done <- res{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, 4<<20, 2)
		done <- res{tr, control.IsMPTCP(c), err}
	}()
	var cr netns.Result
	d := ourCounterDeltas(t, func() {
		c, err := topo.A.DialTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cr = <-netns.ExchangeAsync(ctx, c, 8<<20, 1)
	})
	if cr.Err != nil {
		t.Fatal(cr.Err)
	}
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	checkDigests(t, cr.Transfer, s.tr, 8<<20, 4<<20)
	if s.mptcp {
		t.Errorf("a plain TCP client was served as MPTCP")
	}
	if d["FallbackPassive"] != 1 || d["MPCapableSYNRX"] != 0 {
		t.Errorf("FallbackPassive moved by %d (want 1), MPCapableSYNRX by %d (want 0)", d["FallbackPassive"], d["MPCapableSYNRX"])
	}
}

// TestFastclose: MP_FASTCLOSE both ways, ours as client and as server of the kernel, over both
// families. The side that aborts sends MP_FASTCLOSE on a reset of its subflow; the other side
// counts it, its application sees the connection reset, and no subflow is left on either side.
func TestFastclose(t *testing.T) {
	forFamilies(t, func(t *testing.T, fam netns.Family) {
		for _, ourServer := range []bool{false, true} {
			for _, byUs := range []bool{true, false} {
				name := map[bool]string{false: "our-client", true: "our-server"}[ourServer] +
					map[bool]string{true: "/by-us", false: "/by-kernel"}[byUs]
				t.Run(name, func(t *testing.T) { testFastclose(t, fam, ourServer, byUs) })
			}
		}
	})
}

func testFastclose(t *testing.T, fam netns.Family, ourServer, byUs bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := netns.Config{Paths: 1, IPv6: fam == netns.IPv6}
	if ourServer {
		cfg.B = ourSide
	} else {
		cfg.A = ourSide
	}
	topo := netns.New(t, cfg)
	kernelNS := topo.B
	if ourServer {
		kernelNS = topo.A
	}
	oc, kc := connectKernel(t, ctx, topo, fam, ourServer)
	// One byte each way first: the connection is fully established at the data level.
	buf := make([]byte, 16)
	for _, dir := range [][2]net.Conn{{oc, kc}, {kc, oc}} {
		if _, err := dir[0].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		dir[1].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(dir[1], buf[:1]); err != nil {
			t.Fatal(err)
		}
	}
	var rerr, werr error
	var d map[string]uint64
	if byUs {
		d = ourCounterDeltas(t, func() {
			oc.Abort()
			kc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, rerr = kc.Read(buf)
		})
		if !errors.Is(rerr, syscall.ECONNRESET) {
			t.Errorf("kernel socket read after our fastclose: %v, want ECONNRESET", rerr)
		}
		if _, werr = kc.Write([]byte("late")); !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
			t.Errorf("kernel socket write after our fastclose: %v, want ECONNRESET or EPIPE", werr)
		}
		if _, rerr = oc.Read(buf); rerr == nil {
			t.Error("our aborted connection still reads")
		}
	} else {
		// Bytes from us that the kernel's application never reads: closing its socket then
		// aborts the connection with MP_FASTCLOSE.
		if _, err := oc.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		waitInq(t, ctx, kc)
		d = ourCounterDeltas(t, func() {
			kc.Close()
			oc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, rerr = oc.Read(buf)
		})
		if !errors.Is(rerr, control.ErrFastclose) {
			t.Errorf("our read after the kernel's fastclose: %v, want ErrFastclose", rerr)
		}
		if _, werr = oc.Write([]byte("late")); !errors.Is(werr, control.ErrFastclose) {
			t.Errorf("our write after the kernel's fastclose: %v, want ErrFastclose", werr)
		}
	}
	tx, rx := "MPFastcloseTx", "MPFastcloseRx"
	if !byUs {
		tx, rx = rx, tx
	}
	kcnt := counters(t, kernelNS)
	if d[tx] != 1 || d["Fastclose"] != 1 {
		t.Errorf("our %s moved by %d, Fastclose by %d; want 1 each", tx, d[tx], d["Fastclose"])
	}
	if kcnt[rx] != 1 {
		t.Errorf("kernel %s = %d, want 1", rx, kcnt[rx])
	}
	if d[rx] != 0 || kcnt[tx] != 0 {
		t.Errorf("our %s moved by %d, kernel %s = %d; want 0 each", rx, d[rx], tx, kcnt[tx])
	}
	// The kernel adds MP_TCPRST to its MP_FASTCLOSE reset; ours carries MP_FASTCLOSE alone.
	wantRst := uint64(0)
	if !byUs {
		wantRst = 1
	}
	if kcnt["MPRstTx"] != wantRst || d["MPRstRx"] != wantRst || kcnt["MPRstRx"] != 0 || d["MPRstTx"] != 0 {
		t.Errorf("MP_TCPRST: kernel MPRstTx %d, MPRstRx %d; ours MPRstTx +%d, MPRstRx +%d; want %d, 0, 0, %d",
			kcnt["MPRstTx"], kcnt["MPRstRx"], d["MPRstTx"], d["MPRstRx"], wantRst, wantRst)
	}
	// No subflow left on either side.
	for _, ns := range []*netns.Namespace{topo.A, topo.B} {
		waitNoSubflow(t, ctx, ns)
	}
	if !byUs {
		return
	}
	// The kernel's MPTCP socket, still open in its application, is closed.
	if st, err := tcpState(kc); err != nil || st != unix.BPF_TCP_CLOSE {
		t.Errorf("kernel MPTCP socket state %d (%v), want CLOSE (%d)", st, err, unix.BPF_TCP_CLOSE)
	}
}

// connectKernel connects our stack and the kernel's over path 0 (ours the client unless
// ourServer) and returns our connection and the kernel's socket, both closed with the test.
func connectKernel(t *testing.T, ctx context.Context, topo *netns.Topology, fam netns.Family, ourServer bool) (*control.Conn, net.Conn) {
	t.Helper()
	p := topo.Path(0)
	var ln net.Listener
	var err error
	if ourServer {
		ln = listenOurs(t, topo.B, p.B.HostPort(fam, 0))
	} else if ln, err = topo.B.ListenMPTCP(p.B.HostPort(fam, 0)); err != nil {
		t.Fatal(err)
	}
	accepted := netns.AcceptAsync(ctx, ln)
	var cli net.Conn
	if ourServer {
		if cli, err = topo.A.DialMPTCP(ctx, ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
	} else {
		cli = dialOurs(t, ctx, topo.A, ln.Addr().String())
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	oc, kc := cli, srv
	if ourServer {
		oc, kc = srv, cli
	}
	if !control.IsMPTCP(oc) {
		t.Fatal("our connection is not MPTCP")
	}
	if m, err := netns.IsMPTCP(kc); err != nil || !m {
		t.Fatalf("kernel socket TCP_IS_MPTCP = %v (%v), want true", m, err)
	}
	return oc.(*control.Conn), kc
}

// waitInq waits until bytes sit unread in the kernel socket c.
func waitInq(t *testing.T, ctx context.Context, c net.Conn) {
	t.Helper()
	for {
		n, err := inq(c)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the bytes never reached the kernel socket")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitNoSubflow waits until ns has no TCP socket but listeners and TIME-WAIT ones.
func waitNoSubflow(t *testing.T, ctx context.Context, ns *netns.Namespace) {
	t.Helper()
	var out string
	for {
		out = strings.TrimSpace(ns.Run("ss", "-Htn", "state", "connected", "exclude", "time-wait"))
		if out == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s: subflows left after the fastclose:\n%s", ns.Name(), out)
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// tcpState returns the state of a kernel socket (TCP_INFO's tcpi_state; an MPTCP socket reports
// the connection's).
func tcpState(c net.Conn) (uint8, error) {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO) }); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, ierr
	}
	return info.State, nil
}

// families are the address families the single-path cases run over.
var families = []netns.Family{netns.IPv4, netns.IPv6}

// forFamilies runs f as a subtest per address family.
func forFamilies(t *testing.T, f func(t *testing.T, fam netns.Family)) {
	for _, fam := range families {
		t.Run(fam.String(), func(t *testing.T) { f(t, fam) })
	}
}

// inq returns the bytes waiting to be read on a kernel socket (SIOCINQ).
func inq(c net.Conn) (int, error) {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}

// TestOptionsVanish: a middlebox starts removing the MPTCP options of the kernel's segments in
// the middle of a connection. We notice in-order data that no mapping covers, send MP_FAIL and
// continue as plain TCP (RFC 8684 §3.7); the kernel accepts the MP_FAIL and answers it. Every
// byte before the options vanish arrives exact, every byte of the kernel's that arrives after
// them is exact too, and our direction carries on as plain TCP.
//
// Not required: that the kernel's whole second half arrives. On this kernel (6.18) its
// direction stalls after our MP_FAIL in one of two ways: the kernel sends its infinite mapping
// only with new data, and our connection, fallen back at once, no longer sends the DATA_ACKs
// that would open its connection-level window (the kernel stays MPTCP, InfiniteMapTx 0); or it
// sends the infinite mapping, falls back, and then every segment it builds fails ip_fragment
// (longer than the MTU with DF set, counted in IpFragFails) while we have acknowledged all it
// put on the wire. The test logs which.
func TestOptionsVanish(t *testing.T) { forFamilies(t, testOptionsVanish) }

// testOptionsVanish tries up to three connections: the kernel answers MP_FAIL only while it may
// still fall back to an infinite mapping, which it forbids for good once it retransmitted at
// the data level (__mptcp_retrans clears allow_infinite_fallback). It does that, rarely,
// when its MPTCP retransmission timer, armed from the subflow's pending timer (a loss probe
// can be 10 ms away), runs out before our DATA_ACK follows the subflow's ACK.
func testOptionsVanish(t *testing.T, fam netns.Family) {
	for attempt := 1; ; attempt++ {
		retrans := optionsVanishOnce(t, fam)
		if retrans == 0 {
			return
		}
		if attempt == 3 {
			t.Fatalf("the kernel retransmitted at the data level (MPTCPRetrans %d) before the options vanished, in %d connections out of %d", retrans, attempt, attempt)
		}
		t.Logf("connection %d: the kernel retransmitted at the data level (MPTCPRetrans %d) before the options vanished, so it may not fall back; another connection", attempt, retrans)
	}
}

// optionsVanishOnce runs the scenario on one connection; it returns the kernel's MPTCPRetrans
// when that moved before the middlebox started stripping (nothing was tested), else 0.
func optionsVanishOnce(t *testing.T, fam netns.Family) uint64 {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, IPv6: fam == netns.IPv6})
	p := topo.Path(0)
	strip := p.A.StripMPTCP()
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	const half = 4 << 20
	accepted := netns.AcceptAsync(ctx, ln)
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	kc := <-accepted
	if kc == nil {
		t.Fatal("no connection accepted")
	}
	defer kc.Close()
	second := make(chan struct{})
	go func() { // the second half only once the middlebox strips; ends when the test closes kc
		if _, err := netns.Send(kc, half, 5); err != nil {
			return
		}
		<-second
		netns.Send(kc, half, 6)
	}()
	first, err := netns.Receive(io.LimitReader(c, half))
	if err != nil {
		t.Fatal(err)
	}
	if first != netns.StreamDigest(half, 5) {
		t.Fatalf("first half differs: %v", first)
	}
	if !control.IsMPTCP(c) {
		t.Fatal("not MPTCP before the options vanish")
	}
	k0 := counters(t, topo.B)
	if n := k0["MPTCPRetrans"]; n != 0 {
		return n
	}
	got := make(chan netns.Result, 1)
	rc := &countReader{r: io.LimitReader(c, half)}
	d := ourCounterDeltas(t, func() {
		if err := strip.Enable(); err != nil {
			t.Fatal(err)
		}
		close(second)
		// The kernel's second half, read while the fallback happens on the way.
		go func() {
			dg, err := netns.Receive(rc)
			got <- netns.Result{Transfer: netns.Transfer{Received: dg}, Err: err}
		}()
		for control.IsMPTCP(c) {
			select {
			case <-ctx.Done():
				t.Fatal("no fallback after the options vanished")
			case <-time.After(10 * time.Millisecond):
			}
		}
		if err := topo.B.WaitMPTCPCounter(ctx, "MPFailTx", k0["MPFailTx"]+1); err != nil {
			k := counters(t, topo.B)
			t.Fatalf("%v (kernel MPFailRx moved by %d, MPTCPRetrans by %d)", err, k["MPFailRx"]-k0["MPFailRx"], k["MPTCPRetrans"]-k0["MPTCPRetrans"])
		}
	})
	// The kernel to us, after the fallback: what arrives (until 2 s pass without a byte) is an
	// exact prefix of the second half.
	r := receiveUntilIdle(ctx, c, rc, got, 2*time.Second)
	if r.Received != netns.StreamDigest(r.Received.Bytes, 6) {
		t.Errorf("kernel to us after the fallback: received %v, not a prefix of the %v sent", r.Received, netns.StreamDigest(half, 6))
	}
	if r.Received.Bytes < half {
		kcnt := counters(t, topo.B)
		t.Logf("kernel to us after the fallback: %d of %d bytes, then nothing (kernel InfiniteMapTx %d, IP fragmentation failures %s)",
			r.Received.Bytes, int64(half), kcnt["InfiniteMapTx"], strings.Join(strings.Fields(topo.B.Run("nstat", "-asz", "IpFragFails", "Ip6FragFails"))[1:], " "))
	}
	if n, _ := strip.Stripped(); n == 0 {
		t.Fatal("the middlebox stripped nothing")
	}
	if d["UnmappedDataRx"] == 0 || d["MPFailTx"] < 1 || d["MPFailFallback"] != 1 {
		t.Errorf("UnmappedDataRx moved by %d (want > 0), MPFailTx by %d (want >= 1), MPFailFallback by %d (want 1)",
			d["UnmappedDataRx"], d["MPFailTx"], d["MPFailFallback"])
	}
	// The kernel accepted our MP_FAIL and answered it with its own (its infinite mapping, sent
	// only with new data, is not required: see above).
	kcnt := counters(t, topo.B)
	for _, name := range []string{"MPFailRx", "MPFailTx"} {
		if kcnt[name]-k0[name] < 1 {
			t.Errorf("kernel %s moved by %d, want >= 1", name, kcnt[name]-k0[name])
		}
	}
	if n := kcnt["InfiniteMapRx"]; n != 0 {
		t.Errorf("kernel InfiniteMapRx = %d, want 0 (the sender of MP_FAIL sends no infinite mapping)", n)
	}
	// Our direction carries on, as plain TCP now: bytes, exact.
	const after = 16 << 10
	sent := make(chan error, 1)
	go func() {
		_, err := netns.Send(c, after, 7)
		sent <- err
	}()
	kc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if dg, err := netns.Receive(io.LimitReader(kc, after)); err != nil || dg != netns.StreamDigest(after, 7) {
		t.Errorf("us to the kernel after the fallback: received %v (%v), want %v", dg, err, netns.StreamDigest(after, 7))
	}
	if err := <-sent; err != nil {
		t.Errorf("our send after the fallback: %v", err)
	}
	return 0
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (cr *countReader) Read(b []byte) (int, error) {
	n, err := cr.r.Read(b)
	cr.n.Add(int64(n))
	return n, err
}

// receiveUntilIdle waits for the receive into got to end, or until idle passes without a byte
// through rc; then it ends the receive (a read deadline on c).
func receiveUntilIdle(ctx context.Context, c net.Conn, rc *countReader, got <-chan netns.Result, idle time.Duration) netns.Result {
	last, at := rc.n.Load(), time.Now()
	for {
		select {
		case r := <-got:
			return r
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
			if n := rc.n.Load(); n != last {
				last, at = n, time.Now()
				continue
			}
			if time.Since(at) < idle {
				continue
			}
		}
		c.SetReadDeadline(time.Now())
		return <-got
	}
}

// TestResetReason: our Reset sends MP_TCPRST with the reason on the subflow's reset; the kernel
// counts it, and its subflow is gone. (The kernel keeps an MPTCP socket whose last subflow was
// reset without MP_FASTCLOSE open, as more subflows could join.)
func TestResetReason(t *testing.T) { forFamilies(t, testResetReason) }

func testResetReason(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, IPv6: fam == netns.IPv6})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	accepted := netns.AcceptAsync(ctx, ln)
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	kc := <-accepted
	if kc == nil {
		t.Fatal("no connection accepted")
	}
	defer kc.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(kc, buf); err != nil {
		t.Fatal(err)
	}
	d := ourCounterDeltas(t, func() {
		c.(*control.Conn).Reset(control.RstAdminProhibited)
		if err := topo.B.WaitMPTCPCounter(ctx, "MPRstRx", 1); err != nil {
			t.Error(err)
		}
	})
	if out := topo.B.Run("ss", "-Htn", "state", "established"); strings.TrimSpace(out) != "" {
		t.Errorf("the kernel's subflow survived the reset:\n%s", out)
	}
	if d["MPRstTx"] != 1 || d["MPFastcloseTx"] != 0 {
		t.Errorf("MPRstTx moved by %d (want 1), MPFastcloseTx by %d (want 0)", d["MPRstTx"], d["MPFastcloseTx"])
	}
	if n := counters(t, topo.B)["MPRstRx"]; n != 1 {
		t.Errorf("kernel MPRstRx = %d, want 1", n)
	}
}

// TestEarlyFallbackToKernelClient: a middlebox strips the MPTCP options of our server's
// segments to a kernel client from the handshake on, so the client never sees a mapping: it
// falls back to TCP (MPCapableDataFallback before our first DSS reached it, DssFallback after)
// and sends its data unmapped; our server sees unmapped data, sends MP_FAIL and falls back too.
// Both streams arrive intact, each direction half-closed on its own. This caught two bugs: the
// fallback freed buffers the subflow's writer had not written yet (a stretch of our stream
// replaced by later bytes), and the client's FIN stopped our sending.
func TestEarlyFallbackToKernelClient(t *testing.T) { forFamilies(t, testEarlyFallbackToKernelClient) }

func testEarlyFallbackToKernelClient(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide, IPv6: fam == netns.IPv6})
	p := topo.Path(0)
	strip := p.A.StripMPTCP()
	ln := listenOurs(t, topo.B, p.B.HostPort(fam, 0))
	const n = 8 << 20
	served := make(chan netns.Result, 1)
	go func() {
		oc, err := netns.Accept(ctx, ln)
		if err != nil {
			served <- netns.Result{Err: err}
			return
		}
		defer oc.Close()
		tr, err := netns.Exchange(ctx, oc, n, 2)
		served <- netns.Result{Transfer: tr, Err: err, MPTCP: control.IsMPTCP(oc)}
	}()
	c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := strip.Enable(); err != nil {
		t.Fatal(err)
	}
	var tr netns.Transfer
	d := ourCounterDeltas(t, func() {
		if tr, err = netns.Exchange(ctx, c, n, 1); err != nil {
			t.Fatal(err)
		}
	})
	s := <-served
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	checkDigests(t, tr, s.Transfer, n, n)
	if n, _ := strip.Stripped(); n == 0 {
		t.Error("the middlebox stripped nothing")
	}
	if s.MPTCP {
		t.Error("our server still MPTCP after the options vanished")
	}
	if m, err := netns.IsMPTCP(c); err != nil || m {
		t.Errorf("kernel client TCP_IS_MPTCP = %v (%v), want false: fallen back", m, err)
	}
	kc := counters(t, topo.A)
	t.Logf("kernel: MPCapableDataFallback=%d DssFallback=%d; ours: UnmappedDataRx=+%d MPFailTx=+%d",
		kc["MPCapableDataFallback"], kc["DssFallback"], d["UnmappedDataRx"], d["MPFailTx"])
	if kc["MPCapableDataFallback"]+kc["DssFallback"] != 1 {
		t.Errorf("kernel MPCapableDataFallback + DssFallback = %d, want 1", kc["MPCapableDataFallback"]+kc["DssFallback"])
	}
	// Our server saw the unmapped data and sent MP_FAIL (which the middlebox removes).
	if d["UnmappedDataRx"] == 0 || d["MPFailFallback"] != 1 || d["MPFailTx"] < 1 {
		t.Errorf("ours: UnmappedDataRx moved by %d (want > 0), MPFailFallback by %d (want 1), MPFailTx by %d (want >= 1)",
			d["UnmappedDataRx"], d["MPFailFallback"], d["MPFailTx"])
	}
}
