package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestFallbackToPlainServer: our client reaches a plain TCP server, which answers without
// MP_CAPABLE; the connection continues as TCP, byte-exact.
func TestFallbackToPlainServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenTCP(p.B.HostPort(netns.IPv4, 0))
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
func TestFallbackFromPlainClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
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

// TestFastcloseFromUs: our Abort sends MP_FASTCLOSE; the kernel resets its socket and counts it.
func TestFastcloseFromUs(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := netns.Accept(ctx, ln)
		accepted <- c
	}()
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	kc := <-accepted
	if kc == nil {
		t.Fatal("no connection accepted")
	}
	defer kc.Close()
	// Some data first, so that the connection is fully established at the data level.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(kc, buf); err != nil {
		t.Fatal(err)
	}
	d := ourCounterDeltas(t, func() {
		c.(*control.Conn).Abort()
		kc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = kc.Read(buf)
	})
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("kernel socket read after our fastclose: %v, want ECONNRESET", err)
	}
	if d["MPFastcloseTx"] != 1 {
		t.Errorf("our MPFastcloseTx moved by %d, want 1", d["MPFastcloseTx"])
	}
	if n := counters(t, topo.B)["MPFastcloseRx"]; n != 1 {
		t.Errorf("kernel MPFastcloseRx = %d, want 1", n)
	}
}

// TestFastcloseFromKernel: the kernel aborts (close with unread data sends MP_FASTCLOSE); our
// connection ends with ErrFastclose.
func TestFastcloseFromKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := netns.Accept(ctx, ln)
		accepted <- c
	}()
	c := dialOurs(t, ctx, topo.A, ln.Addr().String())
	kc := <-accepted
	if kc == nil {
		t.Fatal("no connection accepted")
	}
	if _, err := c.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	if err := topo.B.WaitMPTCPCounter(ctx, "MPCapableACKRX", 1); err != nil {
		t.Fatal(err)
	}
	// Wait until the bytes sit unread in the kernel socket.
	for {
		n, err := inq(kc)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the bytes never reached the kernel socket")
		case <-time.After(5 * time.Millisecond):
		}
	}
	d := ourCounterDeltas(t, func() {
		kc.Close() // unread data: the kernel aborts with MP_FASTCLOSE
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 16))
	})
	if !errors.Is(err, control.ErrFastclose) {
		t.Errorf("our read after the kernel's fastclose: %v, want ErrFastclose", err)
	}
	if n := counters(t, topo.B)["MPFastcloseTx"]; n != 1 {
		t.Errorf("kernel MPFastcloseTx = %d, want 1", n)
	}
	if d["MPFastcloseRx"] != 1 {
		t.Errorf("our MPFastcloseRx moved by %d, want 1", d["MPFastcloseRx"])
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
// byte received before is exact, and our direction carries on as plain TCP.
//
// Not asserted: the kernel's own data after its infinite mapping. On this kernel a
// retransmission of that segment can be dropped on its side (ip_fragment on an oversized
// window probe), so the kernel-to-us direction may stall; that is the peer's behaviour.
func TestOptionsVanish(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	strip := p.A.StripMPTCP()
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	const half = 4 << 20
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := netns.Accept(ctx, ln)
		accepted <- c
	}()
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
	d := ourCounterDeltas(t, func() {
		if err := strip.Enable(); err != nil {
			t.Fatal(err)
		}
		close(second)
		// Keep reading what arrives; the fallback happens on the way.
		go io.Copy(io.Discard, c)
		for control.IsMPTCP(c) {
			select {
			case <-ctx.Done():
				t.Fatal("no fallback after the options vanished")
			case <-time.After(10 * time.Millisecond):
			}
		}
		if err := topo.B.WaitMPTCPCounter(ctx, "MPFailTx", 1); err != nil {
			t.Fatal(err)
		}
	})
	if n, _ := strip.Stripped(); n == 0 {
		t.Fatal("the middlebox stripped nothing")
	}
	if d["UnmappedDataRx"] == 0 || d["MPFailTx"] < 1 || d["MPFailFallback"] != 1 {
		t.Errorf("UnmappedDataRx moved by %d (want > 0), MPFailTx by %d (want >= 1), MPFailFallback by %d (want 1)",
			d["UnmappedDataRx"], d["MPFailTx"], d["MPFailFallback"])
	}
	// The kernel accepted MP_FAIL and answered it (its MP_FAIL response and infinite mapping go
	// out with its next data).
	if kc := counters(t, topo.B); kc["MPFailRx"] < 1 || kc["MPFailTx"] < 1 {
		t.Errorf("kernel MPFailRx = %d, MPFailTx = %d; want both >= 1", kc["MPFailRx"], kc["MPFailTx"])
	}
	// Our direction carries on, as plain TCP now.
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	kc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(kc, buf); err != nil || string(buf) != "after" {
		t.Errorf("kernel read after the fallback: %q, %v", buf, err)
	}
}

// TestResetReason: our Reset sends MP_TCPRST with the reason on the subflow's reset; the kernel
// counts it, and its subflow is gone. (The kernel keeps an MPTCP socket whose last subflow was
// reset without MP_FASTCLOSE open, as more subflows could join.)
func TestResetReason(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	p := topo.Path(0)
	ln, err := topo.B.ListenMPTCP(p.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := netns.Accept(ctx, ln)
		accepted <- c
	}()
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
func TestEarlyFallbackToKernelClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	strip := p.A.StripMPTCP()
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
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
	if d["UnmappedDataRx"] == 0 || d["MPFailFallback"] != 1 {
		t.Errorf("ours: UnmappedDataRx moved by %d (want > 0), MPFailFallback by %d (want 1)", d["UnmappedDataRx"], d["MPFailFallback"])
	}
}
