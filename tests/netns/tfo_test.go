package netns_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestConvertFastOpen: RFC 8803's way, the Convert message in a TCP Fast Open SYN, from the
// kernel's MPTCP client (RFC 8684 Appendix B) to mptcpd --convert. The first connection asks
// for a cookie: its SYN/ACK has no room for our MP_CAPABLE beside the cookie and timestamps, so
// TC gives it theirs, and the connection is MPTCP; the next ones carry the Connect in their SYN: the kernel counts the SYN's data accepted
// (TCPFastOpenPassive), our datapath reads the client's key off the third ACK, and the
// connection is MPTCP on both paths, byte-exact both ways, the converter having read the
// Connect from the SYN's data, before the data sequence space. Two such connections run, one
// with 16 MiB each way, one with a Connect refused (its Error TLV).
func TestConvertFastOpen(t *testing.T) {
	// The converter on its address, and on the wildcard (a dual-stack socket, whose IPv4
	// connections have mapped addresses).
	for _, listen := range []string{"address", "wildcard"} {
		t.Run(listen, func(t *testing.T) {
			t.Parallel()
			testConvertFastOpen(t, listen == "wildcard")
		})
	}
}

func testConvertFastOpen(t *testing.T, wildcard bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.A.SetMPTCPLimits(2, 0)
	topo.A.AddMPTCPEndpoint(p1.A.Addr(netns.IPv4), p1.A.Name, "subflow")
	topo.A.SetSysctl("net.ipv4.tcp_fastopen", "1")
	topo.B.SetSysctl("net.ipv4.tcp_fastopen", "3")
	server, err := topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(server.Addr().String())
	sock := ctlSocket(t)
	mptcpctl(t)
	listen := p0.B.HostPort(netns.IPv4, 0)
	if wildcard {
		listen = ":0"
	}
	_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--convert", listen,
		"--convert-allow", dst.Addr().String()+"/32")
	conv := addrs[0]
	if wildcard {
		_, port, err := net.SplitHostPort(conv)
		if err != nil {
			t.Fatal(err)
		}
		conv = net.JoinHostPort(p0.B.Addr(netns.IPv4).String(), port)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("B's counters: %v", nonzero(daemonStats(t, sock)))
		}
	})

	// The cookie.
	file, stopCapture := capture(t, ctx, p0.B)
	served := netns.ServeOne(ctx, server, 1<<20, 2)
	c, reply := convertAskWith(t, ctx, topo.A, tfoDialer(true), conv, rfcConnect(dst, ""))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("the first connection's answer: % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, 1<<20, 1<<20)
	if m, err := netns.IsMPTCP(c); err != nil || !m {
		t.Errorf("the connection that got the cookie: MPTCP %v (%v), want MPTCP", m, err)
	}
	c.Close()
	if st := daemonStats(t, sock); st["SynAckRoomMade"] != 1 || st["TFOSynDataRx"] != 0 {
		t.Errorf("SynAckRoomMade = %d, TFOSynDataRx = %d after the connection that got the cookie; want 1 and 0", st["SynAckRoomMade"], st["TFOSynDataRx"])
	}
	// That SYN/ACK, as tshark reads it: our MP_CAPABLE, SACK-permitted (moved into the
	// cookie's padding), the cookie, no timestamps, nothing malformed.
	stopCapture()
	synacks, err := netns.DissectTCP(file, "tcp.flags.syn == 1 && tcp.flags.ack == 1")
	if err != nil {
		t.Fatal(err)
	}
	want, err := netns.DissectTCP(file, "tcp.flags.syn == 1 && tcp.flags.ack == 1 && tcp.options.sack_perm && tcp.options.tfo.cookie && !tcp.options.timestamp.tsval")
	if err != nil {
		t.Fatal(err)
	}
	if len(synacks) != 1 || len(want) != 1 || synacks[0].Malformed || len(synacks[0].MPTCP) != 1 || synacks[0].MPTCP[0].Subtype() != stMPC {
		t.Errorf("the SYN/ACK with the cookie: %v; want one, with our MP_CAPABLE, SACK-permitted, the cookie and no timestamps (%d such)", synacks, len(want))
	}

	kb, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	before := daemonStats(t, sock)
	shapeForShares(p0, p1)
	tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
	const up, down = 64 << 20, 64 << 20
	served = netns.ServeOne(ctx, server, down, 2)
	c, reply = convertAskWith(t, ctx, topo.A, tfoDialer(true), conv, rfcConnect(dst, ""))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("the answer: % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, up, down)
	if m, err := netns.IsMPTCP(c); err != nil || !m {
		t.Errorf("the client's connection: MPTCP %v (%v), want MPTCP", m, err)
	}
	c.Close()
	if d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1; d0 < 4<<20 || d1 < 4<<20 {
		t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 4 MiB of the 64", d0, d1)
	}

	// Refused in the SYN: the Error TLV, then the end.
	c, err = topo.A.Dial(ctx, tfoDialer(true), "tcp", conv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(rfcConnect(netip.MustParseAddrPort("127.0.0.1:22"), "")); err != nil {
		t.Fatal(err)
	}
	if reply, err := readConvertRaw(c); err != nil || !bytes.Equal(reply, convertNotAuthorized) {
		t.Errorf("a Connect to loopback in the SYN: answer % x (%v), want % x", reply, err, convertNotAuthorized)
	}
	expectClosed(t, c)
	c.Close()

	// The SYN/ACK lost: every one sent again carries our MP_CAPABLE too (the kernel moved the
	// SYN it is derived from to the new socket; the datapath kept the option). Whether the
	// connection is MPTCP then depends on the client: when its own SYN went again first (both
	// wait 1 s), the kernel's MPTCP puts no MP_CAPABLE on its third ACK (that retransmitted
	// SYN, without data, reset its count of the sequence number the option goes on), and the
	// connection continues as plain TCP, as it would with the kernel's MPTCP as the converter.
	dr := p0.B.DropFirst(1, 0x12 /* SYN|ACK */, 0)
	lostFile, stopLost := capture(t, ctx, p0.A)
	mid := daemonStats(t, sock)
	served = netns.ServeOne(ctx, server, 1<<20, 2)
	c, reply = convertAskWith(t, ctx, topo.A, tfoDialer(true), conv, rfcConnect(dst, ""))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("SYN/ACK lost: the answer % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, 1<<20, 1<<20)
	lostMPTCP, _ := netns.IsMPTCP(c)
	c.Close()
	stopLost()
	if n, err := dr.Matched(); err != nil || n < 2 {
		t.Errorf("%d SYN/ACKs seen (%v), want 2 or more: the first one dropped", n, err)
	}
	all, err := netns.DissectTCP(lostFile, "tcp.flags.syn == 1 && tcp.flags.ack == 1")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		if f.Malformed || len(f.MPTCP) != 1 || f.MPTCP[0].Subtype() != stMPC {
			t.Errorf("SYN/ACK lost: a SYN/ACK without our MP_CAPABLE: %v", f)
		}
	}
	if len(all) < 2 {
		t.Errorf("SYN/ACK lost: %d SYN/ACKs captured, want 2 or more", len(all))
	}
	st := daemonStats(t, sock)
	keyed, plain := st["TFOKeyRx"]-mid["TFOKeyRx"], st["TFOFallback"]-mid["TFOFallback"]
	if st["TFOSynDataRx"]-mid["TFOSynDataRx"] != 1 || keyed+plain != 1 || (keyed == 1) != lostMPTCP {
		t.Errorf("SYN/ACK lost: TFOSynDataRx +%d, TFOKeyRx +%d, TFOFallback +%d, client MPTCP %v; want +1, and the key read exactly when MPTCP",
			st["TFOSynDataRx"]-mid["TFOSynDataRx"], keyed, plain, lostMPTCP)
	}
	t.Logf("SYN/ACK lost: the connection is MPTCP: %v", lostMPTCP)

	// Plain TCP with the same cookie (the kernel keeps one per server address): the SYN's
	// data is the start of a plain TCP stream.
	served = netns.ServeOne(ctx, server, 1<<20, 2)
	c, reply = convertAskWith(t, ctx, topo.A, tfoDialer(false), conv, rfcConnect(dst, ""))
	if !bytes.Equal(reply, convertOK) {
		t.Fatalf("plain TCP: the answer % x, want % x", reply, convertOK)
	}
	exchangeServed(t, ctx, c, served, 1<<20, 1<<20)
	c.Close()

	ka, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	if d := ka["TCPFastOpenPassive"] - kb["TCPFastOpenPassive"]; d != 4 {
		t.Errorf("the kernel accepted the data of %d SYNs (TCPFastOpenPassive), want 4", d)
	}
	after := daemonStats(t, sock)
	// The connection whose SYN/ACK was lost is checked above; the others: two keyed, and the
	// plain TCP client.
	lost := uint64(0)
	if lostMPTCP {
		lost = 1
	}
	for name, want := range map[string]uint64{
		"TFOKeyRx": 2 + lost, "PassiveFastOpen": 2 + lost, "TFOFallback": 1 - lost, "FallbackPassive": 2 - lost,
		"TFOSynDataRx": 3, "ConvertConverted": 3, "ConvertRefused": 1,
	} {
		if d := after[name] - before[name]; d != want {
			t.Errorf("%s moved by %d, want %d", name, d, want)
		}
	}
}

// setFastOpen lets clients send data in their SYN to ln (a kernel TCP or MPTCP listener).
func setFastOpen(t *testing.T, ln net.Listener) {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16) }); err != nil || serr != nil {
		t.Fatalf("TCP_FASTOPEN: %v %v", err, serr)
	}
}

// TestConvertViaFastOpen: mptcpd --forward --convert-via puts the Connect in a TCP Fast Open SYN
// with MP_CAPABLE once the converter gave it a cookie, to the independent converter on the
// kernel's MPTCP (the kernel's placement of the SYN's data, before the data sequence space, is
// the judge) and to our own. Each first connection asks for the cookie; the second carries the
// Connect in its SYN: the converter's kernel counts the SYN's data accepted
// (TCPFastOpenPassive), ours counts ActiveFastOpen, and the application's 64 MiB each way arrive
// exact, over MPTCP on both paths.
func TestConvertViaFastOpen(t *testing.T) {
	for _, conv := range []string{"kernel", "ours"} {
		for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
			t.Run(conv+"/"+fam.String(), func(t *testing.T) {
				t.Parallel()
				testConvertViaFastOpen(t, conv == "ours", fam)
			})
		}
	}
}

func testConvertViaFastOpen(t *testing.T, oursConv bool, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cfg := netns.Config{Paths: 2, A: ourSide, IPv6: fam == netns.IPv6}
	if oursConv {
		cfg.B = ourSide
	}
	topo := netns.New(t, cfg)
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.A.SetSysctl("net.ipv4.tcp_fastopen", "1")
	topo.B.SetSysctl("net.ipv4.tcp_fastopen", "3")
	server, err := topo.B.ListenTCP(p0.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	remote := netip.MustParseAddrPort(server.Addr().String())
	var via string
	var cv *rfcConverter
	sockB := ""
	if oursConv {
		sockB = ctlSocket(t)
		_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sockB, "--convert", p0.B.HostPort(fam, 0),
			"--convert-allow", netip.PrefixFrom(remote.Addr(), remote.Addr().BitLen()).String())
		via = addrs[0]
	} else {
		topo.B.SetMPTCPLimits(2, 0)
		ln, err := topo.B.ListenMPTCP(p0.B.HostPort(fam, 0))
		if err != nil {
			t.Fatal(err)
		}
		setFastOpen(t, ln)
		cv = &rfcConverter{ln: ln, seen: make(chan rfcSeen, 4)}
		go cv.serve(ctx, topo.B)
		via = ln.Addr().String()
	}
	sockA := ctlSocket(t)
	mptcpctl(t)
	_, fwd := startMptcpd(t, ctx, topo.A, "--ctl", sockA, "--endpoint", p1.A.Addr(fam).String()+",subflow",
		"--forward", "127.0.0.1:0="+remote.String(), "--convert-via", via)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's counters: %v", nonzero(daemonStats(t, sockA)))
			if sockB != "" {
				t.Logf("B's counters: %v", nonzero(daemonStats(t, sockB)))
			}
		}
	})

	for i := range 2 {
		kb, err := topo.B.TCPCounters()
		if err != nil {
			t.Fatal(err)
		}
		before := daemonStats(t, sockA)
		size := int64(1 << 20)
		if i == 1 {
			size = 64 << 20
		}
		shapeForShares(p0, p1)
		tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
		served := netns.ServeOne(ctx, server, size, 2)
		c, err := topo.A.DialTCP(ctx, fwd[0])
		if err != nil {
			t.Fatal(err)
		}
		exchangeServed(t, ctx, c, served, size, size)
		c.Close()
		if cv != nil {
			if seen := <-cv.seen; seen.err != nil || !bytes.Equal(seen.msg, rfcConnect(remote, "")) {
				t.Errorf("connection %d: the converter read % x (%v), want % x", i, seen.msg, seen.err, rfcConnect(remote, ""))
			} else if i == 1 && !seen.mptcp {
				t.Error("the connection with the Connect in its SYN is not MPTCP at the converter")
			}
		}
		if i == 0 {
			continue
		}
		ka, err := topo.B.TCPCounters()
		if err != nil {
			t.Fatal(err)
		}
		if d := ka["TCPFastOpenPassive"] - kb["TCPFastOpenPassive"]; d != 1 {
			t.Errorf("the converter's kernel accepted the data of %d SYNs (TCPFastOpenPassive), want 1", d)
		}
		after := daemonStats(t, sockA)
		for name, want := range map[string]uint64{"ActiveFastOpen": 1, "FastOpenDataRefused": 0, "ConvertConverted": 1, "ProxyMPTCP": 1} {
			if d := after[name] - before[name]; d != want {
				t.Errorf("A: %s moved by %d, want %d", name, d, want)
			}
		}
		// Our client joins once the converter's first DSS came: the kernel's converter sends
		// none before its answer, which waits for the destination and for the first byte of
		// the application's, so the second path starts late (4 MiB of the 64 once in CI).
		if d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1; d0 < 1<<20 || d1 < 1<<20 {
			t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 1 MiB of the 64", d0, d1)
		}
	}
}
