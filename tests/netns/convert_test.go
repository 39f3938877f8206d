package netns_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The RFC 8803 Transport Converter (mptcpd --convert) and its client (--forward with
// --convert-via). The tests speak the protocol through a client and a converter written here
// from the RFC alone (rfcConnect, readConvertRaw, rfcConverter), byte by byte, not through the
// daemon's own code (internal/convert).

// rfcConnect is a Convert message (RFC 8803 §5.1) holding a Connect TLV (§5.2.5) for dst and,
// when cookie is not empty, a Cookie TLV (§5.2.7).
func rfcConnect(dst netip.AddrPort, cookie string) []byte {
	m := []byte{1, 0, 0, 0} // version 1, total length set below, unassigned
	m = append(m, 10, 5, byte(dst.Port()>>8), byte(dst.Port()))
	a := dst.Addr().As16() // IPv4 as IPv4-mapped IPv6
	m = append(m, a[:]...)
	if cookie != "" {
		c := append([]byte{22, 0, 0, 0}, cookie...)
		for len(c)%4 != 0 {
			c = append(c, 0)
		}
		c[1] = byte(len(c) / 4)
		m = append(m, c...)
	}
	m[1] = byte(len(m) / 4)
	return m
}

// readConvertRaw reads one Convert message as §5.1 frames it: 4 bytes, the second the total
// length in 32-bit words.
func readConvertRaw(r io.Reader) ([]byte, error) {
	m := make([]byte, 4)
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, err
	}
	if m[1] == 0 {
		return m, errors.New("total length 0")
	}
	m = append(m, make([]byte, int(m[1])*4-4)...)
	_, err := io.ReadFull(r, m[4:])
	return m, err
}

// unhex decodes "01 02 00 00" and the like.
func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// Answers of a converter (§5.2.8): the empty message, and Error TLVs (type 30, one word).
var (
	convertOK            = unhex("01 01 00 00")
	convertMissingCookie = unhex("01 02 00 00  1e 01 03 00")
	convertNotAuthorized = unhex("01 02 00 00  1e 01 20 00")
	convertConnReset     = unhex("01 02 00 00  1e 01 60 00")
	convertBadVersion    = unhex("01 02 00 00  1e 01 00 01") // Unsupported Version, listing version 1
	convertUnreachable   = unhex("01 02 00 00  1e 01 61 01") // Destination Unreachable, host (ICMP code 1)
)

// tfoDialer dials plain TCP, or the kernel's MPTCP, with TCP_FASTOPEN_CONNECT, as an RFC 8803
// client does: the first write goes in the SYN when the kernel holds a cookie for the server,
// else the SYN asks for one.
func tfoDialer(mptcp bool) *net.Dialer {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1) })
		return errors.Join(err, serr)
	}}
	d.SetMultipathTCP(mptcp)
	return d
}

// convertAsk sends msg on a new connection to the converter at addr (over the kernel's MPTCP
// when mptcp, else plain TCP with TFO) and returns the connection and the converter's answer.
func convertAsk(t *testing.T, ctx context.Context, ns *netns.Namespace, addr string, mptcp bool, msg []byte) (net.Conn, []byte) {
	t.Helper()
	if mptcp {
		c, err := ns.DialMPTCP(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		return convertAskOn(t, c, msg)
	}
	return convertAskWith(t, ctx, ns, tfoDialer(false), addr, msg)
}

// convertAskWith is convertAsk on a connection d makes.
func convertAskWith(t *testing.T, ctx context.Context, ns *netns.Namespace, d *net.Dialer, addr string, msg []byte) (net.Conn, []byte) {
	t.Helper()
	c, err := ns.Dial(ctx, d, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return convertAskOn(t, c, msg)
}

// convertAskOn sends msg on c and returns c and the converter's answer.
func convertAskOn(t *testing.T, c net.Conn, msg []byte) (net.Conn, []byte) {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	reply, err := readConvertRaw(c)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		t.Fatalf("the converter's answer to % x: % x, %v", msg, reply, err)
	}
	return c, reply
}

// expectClosed checks that the converter closed the connection after its answer.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil || n != 0 {
		t.Errorf("after the answer: %d bytes, %v; want the end of the connection", n, err)
	}
}

// TestConvertIndependentClient: mptcpd --convert against a client written from RFC 8803.
// Over the kernel's MPTCP (two paths) and plain TCP with TCP_FASTOPEN_CONNECT, a Connect with
// the right cookie reaches a plain TCP server byte-exact; Info is answered with the Supported
// TCP Extensions TLV; every refusal comes as its Error TLV, byte for byte: no cookie, a wrong
// one, loopback and the converter's own address (not in --convert-allow), a closed port, an
// unknown version; a client outside --convert-clients is refused. The counters say the same.
func TestConvertIndependentClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.A.SetMPTCPLimits(2, 0)
	topo.A.AddMPTCPEndpoint(p1.A.Addr(netns.IPv4), p1.A.Name, "subflow")
	server, err := topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(server.Addr().String())
	closed := netip.AddrPortFrom(dst.Addr(), 9) // nothing listens there
	sock := ctlSocket(t)
	mptcpctl(t)
	const cookie = "open-sesame-0123"
	_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--convert", p0.B.HostPort(netns.IPv4, 0),
		"--convert-allow", dst.Addr().String()+"/32", "--convert-cookie", cookie)
	conv := addrs[0]

	for _, mptcp := range []bool{true, false} {
		const up, down = 16 << 20, 16 << 20
		served := netns.ServeOne(ctx, server, down, 2)
		c, reply := convertAsk(t, ctx, topo.A, conv, mptcp, rfcConnect(dst, cookie))
		if !bytes.Equal(reply, convertOK) {
			t.Fatalf("mptcp %v: answer % x, want % x", mptcp, reply, convertOK)
		}
		exchangeServed(t, ctx, c, served, up, down)
		if m, err := netns.IsMPTCP(c); err != nil || m != mptcp {
			t.Errorf("the client's connection: MPTCP %v (%v), want %v", m, err, mptcp)
		}
	}

	// Info (§5.2.3): the Supported TCP Extensions TLV (type 21, two words: window scale, SACK
	// permitted, timestamps), then the end of the connection.
	c, reply := convertAsk(t, ctx, topo.A, conv, true, unhex("01 02 00 00  01 01 00 00"))
	if want := unhex("01 03 00 00  15 02 00 00  03 04 08 00"); !bytes.Equal(reply, want) {
		t.Errorf("answer to Info: % x, want % x", reply, want)
	}
	expectClosed(t, c)

	for _, tc := range []struct {
		name string
		msg  []byte
		want []byte
	}{
		{"no cookie", rfcConnect(dst, ""), convertMissingCookie},
		{"wrong cookie", rfcConnect(dst, "open-sesame-0124"), convertNotAuthorized},
		{"loopback", rfcConnect(netip.MustParseAddrPort("127.0.0.1:22"), cookie), convertNotAuthorized},
		{"the converter's own address", rfcConnect(netip.AddrPortFrom(p1.B.Addr(netns.IPv4), dst.Port()), cookie), convertNotAuthorized},
		{"closed port", rfcConnect(closed, cookie), convertConnReset},
		{"version 2", unhex("02 01 00 00"), convertBadVersion},
	} {
		c, reply := convertAsk(t, ctx, topo.A, conv, true, tc.msg)
		if !bytes.Equal(reply, tc.want) {
			t.Errorf("%s: answer % x, want % x", tc.name, reply, tc.want)
		}
		expectClosed(t, c)
	}
	st := daemonStats(t, sock)
	for name, want := range map[string]uint64{
		"ConvertConverted": 2, "ConvertRefused": 4, "ConvertErrorsSent": 6, "ProxyAccepted": 9, "ProxyMPTCP": 1,
	} {
		if st[name] != want {
			t.Errorf("%s = %d, want %d", name, st[name], want)
		}
	}

	// --convert-clients: a client outside it is refused before it says anything.
	topo2 := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	q := topo2.Path(0)
	_, addrs2 := startMptcpd(t, ctx, topo2.B, "--ctl", "", "--convert", q.B.HostPort(netns.IPv4, 0),
		"--convert-clients", "192.0.2.0/24", "--convert-clients", q.A.Addr(netns.IPv4).String()+"/32")
	c, reply = convertAsk(t, ctx, topo2.A, addrs2[0], false, unhex("01 02 00 00  01 01 00 00"))
	if want := unhex("01 03 00 00  15 02 00 00  03 04 08 00"); !bytes.Equal(reply, want) {
		t.Errorf("a client in --convert-clients: answer % x, want % x", reply, want)
	}
	expectClosed(t, c)
	topo3 := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	_, addrs3 := startMptcpd(t, ctx, topo3.B, "--ctl", "", "--convert", topo3.Path(0).B.HostPort(netns.IPv4, 0), "--convert-clients", "192.0.2.0/24")
	c, reply = convertAsk(t, ctx, topo3.A, addrs3[0], false, unhex("01 02 00 00  01 01 00 00"))
	if !bytes.Equal(reply, convertNotAuthorized) {
		t.Errorf("a client outside --convert-clients: answer % x, want % x", reply, convertNotAuthorized)
	}
	expectClosed(t, c)
}

// TestConvertOursBothEnds: mptcpd --forward --convert-via in A, mptcpd --convert in B, two
// paths: an application's plain TCP connection reaches a plain TCP server behind the
// converter, byte-exact both ways, over MPTCP on both paths. A destination the converter does
// not allow reaches the application as a reset, counted on both sides.
func TestConvertOursBothEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	server, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sockB, sockA := ctlSocket(t), ctlSocket(t)
	mptcpctl(t)
	_, conv := startMptcpd(t, ctx, topo.B, "--ctl", sockB, "--convert", p0.B.HostPort(netns.IPv4, 0),
		"--convert-allow", "127.0.0.1", "--convert-cookie", "k3y")
	notAllowed := netip.AddrPortFrom(p1.B.Addr(netns.IPv4), 80).String()
	_, fwd := startMptcpd(t, ctx, topo.A, "--ctl", sockA, "--endpoint", p1.A.Addr(netns.IPv4).String()+",subflow",
		"--forward", "127.0.0.1:0="+server.Addr().String(), "--forward", "127.0.0.1:0="+notAllowed,
		"--convert-via", conv[0], "--convert-cookie", "k3y")

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's counters: %v\nB's counters: %v", nonzero(daemonStats(t, sockA)), nonzero(daemonStats(t, sockB)))
		}
	})
	shapeForShares(p0, p1)
	tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
	// 64 MiB each way at once. The Connect is A's first data, the application's follow at
	// once: A's later mappings may take the 32-bit DSN, which our converter once expanded
	// against a wrong base when that data had come before the connection was accepted (one
	// run in five stalled).
	const up, down = 64 << 20, 64 << 20
	served := netns.ServeOne(ctx, server, down, 2)
	c, err := topo.A.DialTCP(ctx, fwd[0])
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := waitRelay(t, ctx, sockA, server.Addr().String()), waitRelay(t, ctx, sockB, server.Addr().String())
	if ra.Relay.Mode != "forward" || ra.Relay.Via != conv[0] || rb.Relay.Mode != "convert" || rb.Token == 0 {
		t.Errorf("mptcpctl show: A relays %+v, B %+v", *ra.Relay, *rb.Relay)
	}
	exchangeServed(t, ctx, c, served, up, down)
	c.Close()
	d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1
	if d0 < 4<<20 || d1 < 4<<20 {
		t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 4 MiB of the 64", d0, d1)
	}

	// Refused by the converter: the application's connection is reset.
	if err := appReset(ctx, topo.A, fwd[1]); err != nil {
		t.Errorf("an application through the converter to a destination not allowed: %v", err)
	}
	stA, stB := daemonStats(t, sockA), daemonStats(t, sockB)
	for _, ck := range []struct {
		side string
		st   map[string]uint64
		name string
		want uint64
	}{
		// Both of A's connections to the converter were MPTCP: the refused one is relayed
		// too, from the Connect on, until the converter's answer.
		{"A", stA, "ConvertConverted", 1}, {"A", stA, "ConvertErrorsReceived", 1}, {"A", stA, "ProxyMPTCP", 2},
		{"B", stB, "ConvertConverted", 1}, {"B", stB, "ConvertRefused", 1}, {"B", stB, "ConvertErrorsSent", 1},
	} {
		if ck.st[ck.name] != ck.want {
			t.Errorf("%s: %s = %d, want %d", ck.side, ck.name, ck.st[ck.name], ck.want)
		}
	}
}

// rfcConverter is a minimal Transport Converter written from RFC 8803 alone, on the kernel's
// MPTCP: for each connection it reads one Convert message, takes the Connect TLV (which it
// expects first), and either answers refusal (an Error TLV) when the destination is refuse and
// closes, or connects to the destination, waits for the client's first data byte (which may
// follow the Connect at once), answers with the empty message and relays. It
// reports each message it read and whether the client's connection was MPTCP.
type rfcConverter struct {
	ln      net.Listener
	refuse  netip.AddrPort
	refusal []byte
	seen    chan rfcSeen
}

type rfcSeen struct {
	msg   []byte
	mptcp bool
	early int // bytes of the client's data read before answering
	err   error
}

func (cv *rfcConverter) serve(ctx context.Context, ns *netns.Namespace) {
	for {
		c, err := cv.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			msg, err := readConvertRaw(c)
			mp, _ := netns.IsMPTCP(c)
			seen := rfcSeen{msg: msg, mptcp: mp, err: err}
			if err != nil || len(msg) < 24 || msg[4] != 10 {
				cv.seen <- seen
				return
			}
			var a16 [16]byte
			copy(a16[:], msg[8:24])
			dst := netip.AddrPortFrom(netip.AddrFrom16(a16).Unmap(), uint16(msg[6])<<8|uint16(msg[7]))
			if dst == cv.refuse {
				cv.seen <- seen
				c.Write(cv.refusal)
				return
			}
			out, err := ns.DialTCP(ctx, dst.String())
			if err != nil {
				cv.seen <- seen
				c.Write(convertConnReset)
				return
			}
			defer out.Close()
			// The client's data may follow the Convert message at once. This converter
			// answers only once some arrived, so a client that waits for the answer first
			// never gets one.
			early := make([]byte, 1)
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			n, err := c.Read(early)
			c.SetReadDeadline(time.Time{})
			seen.early = n
			cv.seen <- seen
			if err != nil {
				return
			}
			if _, err := out.Write(early[:n]); err != nil {
				return
			}
			if _, err := c.Write(convertOK); err != nil {
				return
			}
			done := make(chan struct{})
			go func() {
				io.Copy(out, c)
				out.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			io.Copy(c, out)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

// TestConvertViaIndependentConverter: mptcpd --forward --convert-via against rfcConverter on
// the kernel's MPTCP. The converter reads exactly the Connect the RFC describes (no cookie),
// over MPTCP, and the application's bytes reach the server behind it exactly; the
// converter's Destination Unreachable reaches the application as a reset, counted.
func TestConvertViaIndependentConverter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 0)
	server, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	remote := netip.MustParseAddrPort(server.Addr().String())
	refused := netip.AddrPortFrom(remote.Addr(), 9)
	cv := &rfcConverter{ln: ln, refuse: refused, refusal: convertUnreachable, seen: make(chan rfcSeen, 4)}
	go cv.serve(ctx, topo.B)

	sock := ctlSocket(t)
	mptcpctl(t)
	_, fwd := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--endpoint", p1.A.Addr(netns.IPv4).String()+",subflow",
		"--forward", "127.0.0.1:0="+remote.String(), "--forward", "127.0.0.1:0="+refused.String(), "--convert-via", ln.Addr().String())
	const up, down = 16 << 20, 16 << 20
	served := netns.ServeOne(ctx, server, down, 2)
	c, err := topo.A.DialTCP(ctx, fwd[0])
	if err != nil {
		t.Fatal(err)
	}
	exchangeServed(t, ctx, c, served, up, down)
	c.Close()
	seen := <-cv.seen
	if want := rfcConnect(remote, ""); seen.err != nil || !bytes.Equal(seen.msg, want) {
		t.Errorf("the converter read % x (%v), want % x", seen.msg, seen.err, want)
	}
	if !seen.mptcp {
		t.Error("the client's connection to the converter is not MPTCP")
	}
	if seen.early == 0 {
		t.Error("the application's data did not follow the Connect before the converter answered")
	}

	// The rule whose destination the converter answers with Destination Unreachable.
	if err := appReset(ctx, topo.A, fwd[1]); err != nil {
		t.Errorf("through a converter that answers Destination Unreachable: %v", err)
	}
	if s := <-cv.seen; s.err != nil || !bytes.Equal(s.msg, rfcConnect(refused, "")) {
		t.Errorf("the converter read % x (%v), want % x", s.msg, s.err, rfcConnect(refused, ""))
	}
	st := daemonStats(t, sock)
	if st["ConvertErrorsReceived"] != 1 || st["ConvertConverted"] != 1 {
		t.Errorf("ConvertErrorsReceived = %d, ConvertConverted = %d; want 1 and 1", st["ConvertErrorsReceived"], st["ConvertConverted"])
	}
}

// nonzero is a map of counters without its zeros.
func nonzero(c map[string]uint64) map[string]uint64 {
	for k, v := range c {
		if v == 0 {
			delete(c, k)
		}
	}
	return c
}

// appReset connects to addr from ns and expects the connection reset: right after the connect
// (the daemon accepted it), or already in it when the reset came first. It returns what
// happened otherwise.
func appReset(ctx context.Context, ns *netns.Namespace, addr string) error {
	c, err := ns.DialTCP(ctx, addr)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		var n int
		n, err = c.Read(make([]byte, 16))
		c.Close()
		if err == nil {
			return fmt.Errorf("read %d bytes, want a reset", n)
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w, want a reset", err)
	}
	return nil
}

// TestConvertHostileClients: many clients misuse the converter at once while one uses it. From
// A, 40 connections each: silent ones, ones that stop inside the header, ones that announce a
// long message and stop, garbage, a wrong cookie, a Connect to the converter's loopback. Beside
// them a client with the right cookie moves 16 MiB each way byte-exact while the silent ones
// are still held; every misuse gets its Error TLV or its end (the silent ones once the
// converter's 10 s for a Convert message ran out), the counters say so, and afterwards the
// converter relays nothing and still serves.
func TestConvertHostileClients(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p0 := topo.Path(0)
	server, err := topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(server.Addr().String())
	sock := ctlSocket(t)
	mptcpctl(t)
	const cookie = "k3y-k3y-k3y"
	_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--convert", p0.B.HostPort(netns.IPv4, 0),
		"--convert-allow", dst.Addr().String()+"/32", "--convert-cookie", cookie)
	conv := addrs[0]

	const each = 40
	garbage := make([]byte, 64)
	for i := range garbage {
		garbage[i] = byte(0x5a ^ i*7)
	}
	kinds := []struct {
		name   string
		msg    []byte
		answer []byte // nil: the converter says nothing and ends the connection
	}{
		{"silent", nil, nil},
		{"stops inside the header", []byte{1, 5}, nil},
		{"announces 255 words, sends 8 bytes", []byte{1, 255, 0, 0, 10, 5, 0, 80}, nil},
		{"garbage", garbage, convertBadVersion},
		{"wrong cookie", rfcConnect(dst, "k3y-k3y-k3z"), convertNotAuthorized},
		{"loopback", rfcConnect(netip.MustParseAddrPort("127.0.0.1:22"), cookie), convertNotAuthorized},
	}
	type hostile struct {
		kind int
		c    net.Conn
	}
	var hs []hostile
	for k, kd := range kinds {
		for range each {
			c, err := topo.A.DialTCP(ctx, conv)
			if err != nil {
				t.Fatalf("%s: %v", kd.name, err)
			}
			t.Cleanup(func() { c.Close() })
			if kd.msg != nil {
				if _, err := c.Write(kd.msg); err != nil {
					t.Fatalf("%s: %v", kd.name, err)
				}
			}
			hs = append(hs, hostile{k, c})
		}
	}

	const up, down = 16 << 20, 16 << 20
	served := netns.ServeOne(ctx, server, down, 2)
	c, reply := convertAsk(t, ctx, topo.A, conv, false, rfcConnect(dst, cookie))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("the legitimate client: answer % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, up, down)
	// The converter did not wait for the silent clients to serve this one: they are all still
	// connected, unanswered.
	for _, h := range hs {
		if kinds[h.kind].answer != nil {
			continue
		}
		h.c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if n, err := h.c.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: before the converter's timeout: %d bytes, %v; want it still waiting", kinds[h.kind].name, n, err)
		}
	}

	// Every misuse ends: with its Error TLV, or (nothing to answer) with the end of the
	// connection once the converter gave up waiting.
	for _, h := range hs {
		kd := kinds[h.kind]
		h.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if kd.answer != nil {
			got, err := readConvertRaw(h.c)
			if err != nil || !bytes.Equal(got, kd.answer) {
				t.Fatalf("%s: answer % x (%v), want % x", kd.name, got, err, kd.answer)
			}
		}
		if n, err := h.c.Read(make([]byte, 64)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: %d bytes, %v; want the end of the connection", kd.name, n, err)
		}
	}
	st := daemonStats(t, sock)
	for name, want := range map[string]uint64{
		"ConvertConverted": 1, "ConvertRefused": 2 * each, "ConvertErrorsSent": 3 * each, "ProxyAccepted": uint64(len(hs) + 1),
	} {
		if st[name] != want {
			t.Errorf("%s = %d, want %d", name, st[name], want)
		}
	}
	if st["ProxyFailed"] < 3*each {
		t.Errorf("ProxyFailed = %d, want at least %d (the clients that said too little)", st["ProxyFailed"], 3*each)
	}

	// And it still serves.
	served = netns.ServeOne(ctx, server, 1<<20, 2)
	c, reply = convertAsk(t, ctx, topo.A, conv, false, rfcConnect(dst, cookie))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("after the misuse: answer % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, 1<<20, 1<<20)
}
