package netns_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// DSS checksums (RFC 8684 §3.3.1) against the kernel's MPTCP: negotiated when either side
// requires them (the kernel's net.mptcp.checksum_enabled, our Datapath.SetChecksum), carried
// and verified both ways.

// kernelCsum reads mptcpi_csum_enabled from a kernel MPTCP socket's MPTCP_INFO
// (include/uapi/linux/mptcp.h: byte 42); ok is false when the socket has no MPTCP_INFO (plain
// TCP, or fallen back).
func kernelCsum(c net.Conn) (on, ok bool) {
	const solMPTCP, mptcpInfoOpt, csumOff = 284, 1, 42
	sc, isSC := c.(syscall.Conn)
	if !isSC {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	var buf [256]byte
	var errno syscall.Errno
	n := uint32(len(buf))
	raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, solMPTCP, mptcpInfoOpt,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	})
	if errno != 0 || n <= csumOff {
		return false, false
	}
	return buf[csumOff] != 0, true
}

// csumSides is what each end said of the connection after a transfer.
type csumSides struct {
	kernelCsum, kernelInfo bool // the kernel's MPTCP_INFO: checksums on, and the info there at all
	oursCsum, oursMPTCP    bool // our Conn's Info
}

// csumTransfer runs one connection over path 0 between our stack and the kernel (role r), up
// bytes from the client and down from the server at once, byte-exact, and reads both ends'
// view of checksums before closing.
func csumTransfer(t *testing.T, ctx context.Context, topo *netns.Topology, r role, fam netns.Family, up, down int64) csumSides {
	t.Helper()
	p := topo.Path(0)
	var sides csumSides
	ours := func(c net.Conn) {
		if in, ok := c.(*control.Conn).Info(); ok {
			sides.oursCsum, sides.oursMPTCP = in.Checksums, in.MPTCP
		}
	}
	kernel := func(c net.Conn) { sides.kernelCsum, sides.kernelInfo = kernelCsum(c) }
	type end struct {
		tr  netns.Transfer
		err error
	}
	serverDone := make(chan end, 1)
	var addr string
	var ln net.Listener
	if r.ourServer() {
		l := listenOurs(t, topo.B, p.B.HostPort(fam, 0))
		ln = l
	} else {
		l, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ln = l
	}
	addr = ln.Addr().String()
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			serverDone <- end{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, down, 2)
		if r.ourServer() {
			ours(c)
		} else {
			kernel(c)
		}
		serverDone <- end{tr, err}
	}()
	var c net.Conn
	if r.ourClient() {
		c = dialOurs(t, ctx, topo.A, addr)
	} else {
		var err error
		if c, err = topo.A.DialMPTCP(ctx, addr); err != nil {
			t.Fatal(err)
		}
	}
	client, err := netns.Exchange(ctx, c, up, 1)
	if r.ourClient() {
		ours(c)
	} else {
		kernel(c)
	}
	c.Close()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	s := <-serverDone
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	checkDigests(t, client, s.tr, up, down)
	return sides
}

// TestChecksums runs transfers with DSS checksums in both roles and both families, required
// by the kernel (net.mptcp.checksum_enabled=1 in its namespace) or by our side only: both
// ends use them (the kernel's MPTCP_INFO, our Info), every mapping we send carries one (the
// kernel verifies them: DataCsumErr 0), every mapping the kernel sends is verified here, and
// nobody falls back.
func TestChecksums(t *testing.T) {
	const size = 8 << 20
	for _, requiredBy := range []string{"kernel", "ours"} {
		for _, r := range []role{ourClientKernelServer, kernelClientOurServer} {
			for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
				t.Run(fmt.Sprintf("required-by-%s/%v/%v", requiredBy, r, fam), func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
					defer cancel()
					cfg := netns.Config{Paths: 1, IPv6: fam == netns.IPv6}
					kernelNS := func(topo *netns.Topology) *netns.Namespace { return topo.B }
					if r.ourClient() {
						cfg.A = ourSide
					} else {
						cfg.B = ourSide
						kernelNS = func(topo *netns.Topology) *netns.Namespace { return topo.A }
					}
					topo := netns.New(t, cfg)
					kns := kernelNS(topo)
					dp := ourStack(t).Datapath()
					if requiredBy == "kernel" {
						kns.SetSysctl("net.mptcp.checksum_enabled", "1")
						if dp.Checksum() {
							t.Fatal("our datapath requires checksums already")
						}
					} else {
						if got := kns.Sysctl("net.mptcp.checksum_enabled"); got != "0" {
							t.Fatalf("kernel net.mptcp.checksum_enabled = %s, want 0", got)
						}
						if err := dp.SetChecksum(true); err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { dp.SetChecksum(false) })
					}
					var sides csumSides
					d := ourCounterDeltas(t, func() { sides = csumTransfer(t, ctx, topo, r, fam, size, size) })
					if !sides.kernelInfo || !sides.kernelCsum {
						t.Errorf("kernel MPTCP_INFO: present %t, csum_enabled %t; want both", sides.kernelInfo, sides.kernelCsum)
					}
					if !sides.oursMPTCP || !sides.oursCsum {
						t.Errorf("our connection: MPTCP %t, checksums %t; want both", sides.oursMPTCP, sides.oursCsum)
					}
					checkOurs(t, d)
					for name, want := range map[string]uint64{"CsumEnabled": 1} {
						if d[name] != want {
							t.Errorf("our %s moved by %d, want %d", name, d[name], want)
						}
					}
					// Every mapping of 8 MiB each way: at least 8 MiB / 64 KiB of them.
					for _, name := range []string{"DSSCsumTx", "DataCsumVerified"} {
						if d[name] < size/(64<<10) {
							t.Errorf("our %s moved by %d, want >= %d", name, d[name], size/(64<<10))
						}
					}
					for _, name := range []string{"DataCsumErr", "DSSCsumMissing", "DSSCsumMismatch", "MPFailTx", "MPFailRx",
						"DSSCorruptionFallback", "DSSCorruptionReset", "MPFailFallback", "DssFallback", "InfiniteMapRx"} {
						if d[name] != 0 {
							t.Errorf("our %s moved by %d, want 0", name, d[name])
						}
					}
					kc := counters(t, kns)
					checkNoFallback(t, kc)
					for _, name := range []string{"DataCsumErr", "MPFailTx", "MPFailRx", "DSSCorruptionReset", "DSSNoMatchTCP", "DSSNotMatching", "InfiniteMapTx"} {
						if v, ok := kc[name]; !ok {
							t.Errorf("the kernel exports no counter %s", name)
						} else if v != 0 {
							t.Errorf("kernel %s = %d, want 0", name, v)
						}
					}
					waitKernelClosed(t, kns)
					if t.Failed() {
						logNonZero(t, "ours (delta)", d)
						logNonZero(t, "kernel", kc)
					}
				})
			}
		}
	}
}

// corruptResult is what a one-way transfer with a corrupted segment gave.
type corruptResult struct {
	sent          netns.Digest
	read, ndiff   int64
	diffs         []netns.ByteDiff
	seg           netns.CorruptedSegment
	senderMPTCP   bool // the connections' state after the transfer
	receiverMPTCP bool
	senderErr     error
	receiverErr   error
	stalled       bool // the receiver read nothing for a while before the end
}

// idleReader reads from c until EOF, or until nothing came for idle: then it reports EOF
// and stalled.
type idleReader struct {
	c       net.Conn
	idle    time.Duration
	stalled bool
}

func (r *idleReader) Read(b []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(r.idle))
	n, err := r.c.Read(b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		r.stalled = true
		return n, io.EOF
	}
	return n, err
}

// corruptTransfer sends n bytes one way over path 0 (from the kernel when kernelSends, else
// from ours; r says who is the client) while a corrupter flips one payload byte of the
// sender's skip-th large segment; the receiver compares what it reads with what was sent.
func corruptTransfer(t *testing.T, ctx context.Context, topo *netns.Topology, r role, fam netns.Family, kernelSends bool, n int64, xor byte) corruptResult {
	t.Helper()
	p := topo.Path(0)
	senderIface := p.A // the client's end
	clientSends := kernelSends != r.ourClient()
	if !clientSends {
		senderIface = p.B
	}
	co := senderIface.CorruptOne(20, 1000, 333, xor)
	var res corruptResult
	var senderConn atomic.Pointer[net.Conn]
	isMPTCP := func(c net.Conn) bool {
		if oc, ok := c.(*control.Conn); ok {
			return control.IsMPTCP(oc)
		}
		m, _ := netns.IsMPTCP(c)
		return m
	}
	run := func(c net.Conn, sender bool) {
		if sender {
			senderConn.Store(&c)
			res.sent, res.senderErr = netns.Send(c, n, 7)
			if res.senderErr == nil {
				res.senderErr = c.(interface{ CloseWrite() error }).CloseWrite()
			}
			if res.senderErr == nil {
				_, res.senderErr = netns.Receive(c) // the receiver's close
			}
			res.senderMPTCP = isMPTCP(c)
			return
		}
		ir := &idleReader{c: c, idle: 3 * time.Second}
		res.read, res.diffs, res.ndiff, res.receiverErr = netns.CompareStream(ir, n, 7)
		res.stalled = ir.stalled
		if res.stalled {
			// The sender, a kernel whose segments all fail, may still be writing or waiting
			// for our close: it ends shortly.
			if sc := senderConn.Load(); sc != nil {
				(*sc).SetDeadline(time.Now().Add(2 * time.Second))
			}
		}
		res.receiverMPTCP = isMPTCP(c)
		if oc, ok := c.(*control.Conn); ok && res.receiverErr != nil {
			in, _ := oc.Info()
			t.Logf("our receiving connection: %+v", in)
		}
	}
	var ln net.Listener
	if r.ourServer() {
		ln = listenOurs(t, topo.B, p.B.HostPort(fam, 0))
	} else {
		l, err := topo.B.ListenMPTCP(p.B.HostPort(fam, 0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ln = l
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			res.receiverErr = err
			return
		}
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		run(c, !clientSends)
		c.Close()
	}()
	var c net.Conn
	if r.ourClient() {
		c = dialOurs(t, ctx, topo.A, ln.Addr().String())
	} else {
		var err error
		if c, err = topo.A.DialMPTCP(ctx, ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	run(c, clientSends)
	stop()
	c.Close()
	<-done
	var err error
	if res.seg, err = co.State(); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestChecksumCorruption has a middlebox flip one payload byte of one data segment (and fix
// the TCP checksum, so that TCP takes it) on a connection's only subflow, in each direction
// and role: the receiver's DSS checksum check catches it and does what RFC 8684 §3.7 says
// for a connection that never had a second subflow, as the kernel does. The receiver sends
// MP_FAIL with the DSN of the mapping, the sender answers with MP_FAIL (and the kernel with
// an infinite mapping), and both continue as plain TCP. The data: TCP acknowledged the
// corrupted segment, so nobody sends it again; the receiver delivers the mapping as it came
// (the kernel does the same): the application reads every byte that was sent, in order, and
// exactly one of them differs, by the flipped bits. Counted on both sides: DataCsumErr and
// MPFailTx at the receiver, MPFailRx at the sender.
func TestChecksumCorruption(t *testing.T) {
	const size = 4 << 20
	const xor = 0x5a
	for _, kernelSends := range []bool{true, false} {
		for _, r := range []role{ourClientKernelServer, kernelClientOurServer} {
			for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
				who := "ours-sends"
				if kernelSends {
					who = "kernel-sends"
				}
				t.Run(fmt.Sprintf("%s/%v/%v", who, r, fam), func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
					defer cancel()
					cfg := netns.Config{Paths: 1, IPv6: fam == netns.IPv6}
					if r.ourClient() {
						cfg.A = ourSide
					} else {
						cfg.B = ourSide
					}
					topo := netns.New(t, cfg)
					// At 200 Mbit/s the 4 MiB take about 170 ms: the MP_FAIL exchange, a round
					// trip after the corrupted segment near 0.5 MiB, happens while data still
					// flows (the peer falls back with data after it), not after the end.
					topo.Path(0).SetTBF(netns.TBF{Rate: 200e6})
					kns := topo.B
					if !r.ourClient() {
						kns = topo.A
					}
					kns.SetSysctl("net.mptcp.checksum_enabled", "1")
					var res corruptResult
					d := ourCounterDeltas(t, func() { res = corruptTransfer(t, ctx, topo, r, fam, kernelSends, size, xor) })
					kc := counters(t, kns)
					t.Logf("corrupted: %+v; read %d bytes, %d differ: %+v", res.seg, res.read, res.ndiff, res.diffs)
					if res.receiverErr != nil {
						t.Logf("ss A:\n%s\nss B:\n%s", topo.A.Run("ss", "-tinM"), topo.B.Run("ss", "-tinM"))
					}
					if !res.seg.Done || res.seg.New != res.seg.Old^xor {
						t.Fatalf("no segment corrupted: %+v", res.seg)
					}
					// A stalled receiver gave up and closed: the sender's wait for that timed out.
					if (res.senderErr != nil && !res.stalled) || res.receiverErr != nil {
						t.Errorf("sender: %v; receiver: %v", res.senderErr, res.receiverErr)
					}
					if res.sent.Bytes != size && !(kernelSends && res.stalled) {
						t.Errorf("sent %d bytes, want %d", res.sent.Bytes, size)
					}
					if res.read != size {
						// The kernel's direction, after its infinite mapping, on Linux 6.18: every
						// segment it builds is longer than the MTU and fails ip_fragment (as in
						// TestOptionsVanish), and what it had not sent yet never comes (the
						// receiver waits, or the kernel's FIN follows what it did send). Allowed
						// there only, and only when the kernel counts the failures.
						frag := fragFails(t, kns)
						t.Logf("the receiver read %d of %d bytes, then nothing for 3 s (kernel IP fragmentation failures: %d)", res.read, size, frag)
						if !kernelSends || frag == 0 {
							t.Errorf("read %d bytes, want %d", res.read, size)
						}
					}
					if res.ndiff != 1 || len(res.diffs) != 1 || res.diffs[0].Got != res.diffs[0].Want^xor {
						t.Errorf("%d bytes differ (%+v), want exactly one, by %#x", res.ndiff, res.diffs, xor)
					}
					if !kernelSends && (res.senderMPTCP || res.receiverMPTCP) {
						t.Errorf("after the transfer: sender MPTCP %t, receiver MPTCP %t; want both fallen back", res.senderMPTCP, res.receiverMPTCP)
					}
					// The kernel answers our MP_FAIL with its infinite mapping on its next data, and
					// falls back; when it had sent everything before our MP_FAIL came, it has
					// none to send: it stays MPTCP and the transfer ends as one (all of it read).
					if kernelSends {
						switch inf := counters(t, kns)["InfiniteMapTx"]; {
						case inf > 0 && res.senderMPTCP:
							t.Errorf("after the transfer: the kernel's sender MPTCP %t after its infinite mapping; want fallen back", res.senderMPTCP)
						case inf == 0 && (!res.senderMPTCP || res.read != size):
							t.Errorf("no infinite mapping from the kernel, its sender MPTCP %t, %d of %d bytes read: want MPTCP and all of them", res.senderMPTCP, res.read, size)
						case inf == 0:
							t.Logf("the kernel had sent all before our MP_FAIL came: no infinite mapping, the connection stayed MPTCP")
						}
					}
					// The receiver: the checksum error, once, and MP_FAIL sent; the sender: MP_FAIL
					// received and answered (each MP_FAIL the receiver wrote, on every ACK while
					// its request stood, gets an answer).
					ourExact := map[string]uint64{"DSSCorruptionReset": 0, "DSSCsumMismatch": 0, "DSSCsumMissing": 0}
					ourMin := map[string]uint64{"MPFailRx": 1, "MPFailTx": 1}
					kernelExact := map[string]uint64{"DSSCorruptionReset": 0}
					kernelMin := map[string]uint64{"MPFailRx": 1, "MPFailTx": 1}
					if kernelSends {
						ourExact["DataCsumErr"], ourExact["DSSCorruptionFallback"] = 1, 1
						kernelExact["DataCsumErr"] = 0
					} else {
						ourExact["DataCsumErr"], ourExact["DSSCorruptionFallback"] = 0, 0
						kernelExact["DataCsumErr"] = 1
					}
					checkCsumCounters(t, d, kc, ourExact, ourMin, kernelExact, kernelMin)
				})
			}
		}
	}
}

// fragFails returns the namespace's IpFragFails plus Ip6FragFails (nstat).
func fragFails(t *testing.T, ns *netns.Namespace) uint64 {
	var sum uint64
	for _, line := range strings.Split(ns.Run("nstat", "-asz", "IpFragFails", "Ip6FragFails"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasSuffix(f[0], "FragFails") {
			var v uint64
			fmt.Sscan(f[1], &v)
			sum += v
		}
	}
	return sum
}

// TestChecksumCorruptionJoined: the same corruption on a connection with two subflows (ours as
// client, a subflow endpoint on path 1, the kernel server requiring checksums). After a join
// there is no fallback (RFC 8684 §3.7): the receiver resets the subflow that carried the
// corrupted segment (MP_TCPRST, reason 6 "middlebox interference", as the kernel), drops what it
// held of it, and the sender sends again on the other subflow everything it never had
// DATA_ACKed. The data: byte-exact at the application, both ways. Counted: DataCsumErr at the
// receiver (ours: DSSCorruptionReset too), MP_TCPRST sent and received.
func TestChecksumCorruptionJoined(t *testing.T) {
	for _, kernelSends := range []bool{true, false} {
		name := "ours-sends"
		if kernelSends {
			name = "kernel-sends"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			const size = 16 << 20
			up, down := int64(size), int64(0)
			if kernelSends {
				up, down = 0, size
			}
			topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
			p0, p1 := topo.Path(0), topo.Path(1)
			topo.B.SetSysctl("net.mptcp.checksum_enabled", "1")
			m := ourPM(t, pm.DefaultLimits)
			addEndpoint(t, m, pmapi.Endpoint{Addr: p1.A.Addr(netns.IPv4), Flags: pmapi.FlagSubflow})
			topo.B.SetMPTCPLimits(2, 0)
			for _, p := range []*netns.Path{p0, p1} {
				p.SetTBF(netns.TBF{Rate: 1e9, Latency: 20 * time.Millisecond})
			}
			ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			joined := make(chan struct{})
			served := make(chan netns.Result, 1)
			go func() {
				c, err := netns.Accept(ctx, ln)
				if err != nil {
					served <- netns.Result{Err: err}
					return
				}
				select { // the kernel's data only once the join is there
				case <-joined:
				case <-ctx.Done():
				}
				served <- <-netns.ExchangeAsync(ctx, c, down, 2)
			}()
			var tr netns.Transfer
			var seg netns.CorruptedSegment
			d := ourCounterDeltas(t, func() {
				c := dialOurs(t, ctx, topo.A, ln.Addr().String())
				if err := topo.B.WaitMPTCPCounter(ctx, "MPJoinAckRx", 1); err != nil {
					t.Fatal(err)
				}
				sender := p0.A
				if kernelSends {
					sender = p0.B
				}
				co := sender.CorruptOne(5, 1000, 333, 0x5a)
				close(joined)
				tr, err = netns.Exchange(ctx, c, up, 1)
				if err != nil {
					t.Fatalf("ours: %v", err)
				}
				if seg, err = co.State(); err != nil {
					t.Fatal(err)
				}
			})
			s := <-served
			if s.Err != nil {
				t.Fatalf("kernel: %v", s.Err)
			}
			kc := counters(t, topo.B)
			t.Logf("corrupted: %+v", seg)
			if !seg.Done {
				t.Fatalf("no segment corrupted: %+v", seg)
			}
			checkDigests(t, tr, s.Transfer, up, down)
			checkNoFallback(t, kc)
			ourExact := map[string]uint64{"DSSCorruptionFallback": 0, "MPFailFallback": 0}
			ourMin := map[string]uint64{}
			kernelExact := map[string]uint64{}
			kernelMin := map[string]uint64{}
			if kernelSends {
				ourExact["DataCsumErr"], ourExact["DSSCorruptionReset"] = 1, 1
				ourMin["MPRstTx"] = 1
				kernelExact["DataCsumErr"] = 0
				kernelMin["MPRstRx"] = 1
			} else {
				ourExact["DataCsumErr"], ourExact["DSSCorruptionReset"] = 0, 0
				ourMin["MPRstRx"], ourMin["ReinjectedBytes"] = 1, 1
				kernelExact["DataCsumErr"] = 1
				kernelMin["MPRstTx"] = 1
			}
			checkCsumCounters(t, d, kc, ourExact, ourMin, kernelExact, kernelMin)
		})
	}
}

// TestChecksumsLossy: DSS checksums with 2 % loss both ways on the only path (100 Mbit/s each
// way), ours as client and as server of the kernel (which requires them): SACK blocks crowd out
// mappings, which the TC rewrite puts back with their checksums (SackRwData moves). 16 MiB each
// way byte-exact, the kernel finds no checksum wrong and nobody falls back.
func TestChecksumsLossy(t *testing.T) {
	const size = 16 << 20
	for _, r := range []role{ourClientKernelServer, kernelClientOurServer} {
		t.Run(r.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
			defer cancel()
			cfg := netns.Config{Paths: 1}
			kns := func(topo *netns.Topology) *netns.Namespace { return topo.B }
			if r.ourClient() {
				cfg.A = ourSide
			} else {
				cfg.B = ourSide
				kns = func(topo *netns.Topology) *netns.Namespace { return topo.A }
			}
			topo := netns.New(t, cfg)
			kns(topo).SetSysctl("net.mptcp.checksum_enabled", "1")
			path := topo.Path(0)
			// The same rate both ways keeps the two directions overlapping for the whole
			// transfer: our data segments carry SACK blocks only while we also hold
			// out-of-order data from the kernel. Unshaped, one direction could finish first
			// and leave no data segment to rewrite.
			path.SetTBF(netns.TBF{Rate: 100e6, Latency: 20 * time.Millisecond})
			for _, e := range []*netns.Iface{path.A, path.B} {
				// Per-segment loss: without segmentation offloads each packet is one segment.
				e.NS.Run("ethtool", "-K", e.Name, "tso", "off", "gso", "off", "gro", "off")
				e.SetLoss(0.02)
			}
			var sides csumSides
			d := ourCounterDeltas(t, func() { sides = csumTransfer(t, ctx, topo, r, netns.IPv4, size, size) })
			kc := counters(t, kns(topo))
			logNonZero(t, "ours (delta)", d)
			logNonZero(t, "kernel", kc)
			if !sides.kernelCsum || !sides.oursCsum || !sides.oursMPTCP {
				t.Errorf("checksums: kernel %t, ours %t (MPTCP %t); want all", sides.kernelCsum, sides.oursCsum, sides.oursMPTCP)
			}
			if d["SackRwData"] == 0 {
				t.Errorf("our SackRwData moved by 0: no mapping was put back by the rewrite")
			}
			for _, name := range []string{"DataCsumErr", "DSSCsumMissing", "DSSCsumMismatch", "SackRwFail", "MPFailTx", "DssFallback"} {
				if d[name] != 0 {
					t.Errorf("our %s moved by %d, want 0", name, d[name])
				}
			}
			checkNoFallback(t, kc)
			for _, name := range []string{"DataCsumErr", "MPFailTx", "MPFailRx", "DSSNoMatchTCP"} {
				if kc[name] != 0 {
					t.Errorf("kernel %s = %d, want 0", name, kc[name])
				}
			}
		})
	}
}

// TestMptcpdChecksum: mptcpd --checksum requires DSS checksums of a kernel server that does not
// (net.mptcp.checksum_enabled=0): the kernel's MPTCP_INFO shows them on, the data relayed is
// byte-exact both ways, and the kernel finds no checksum wrong and does not fall back.
func TestMptcpdChecksum(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	if got := topo.B.Sysctl("net.mptcp.checksum_enabled"); got != "0" {
		t.Fatalf("kernel net.mptcp.checksum_enabled = %s, want 0", got)
	}
	ln, err := topo.B.ListenMPTCP(topo.Path(0).B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, addrs := startMptcpd(t, ctx, topo.A, "--checksum", "--forward", "127.0.0.1:0="+ln.Addr().String())
	const up, down = 8 << 20, 8 << 20
	type served struct {
		tr         netns.Transfer
		csum, info bool
		err        error
	}
	done := make(chan served, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			done <- served{err: err}
			return
		}
		defer c.Close()
		var s served
		s.tr, s.err = netns.Exchange(ctx, c, down, 2)
		s.csum, s.info = kernelCsum(c)
		done <- s
	}()
	c, err := topo.A.DialTCP(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	tr, err := netns.Exchange(ctx, c, up, 1)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	checkDigests(t, tr, s.tr, up, down)
	if !s.info || !s.csum {
		t.Errorf("kernel MPTCP_INFO: present %t, csum_enabled %t; want both", s.info, s.csum)
	}
	kc := counters(t, topo.B)
	checkNoFallback(t, kc)
	for _, name := range []string{"DataCsumErr", "MPFailTx", "MPFailRx"} {
		if kc[name] != 0 {
			t.Errorf("kernel %s = %d, want 0", name, kc[name])
		}
	}
	stopMptcpd(t, d)
}

// checkCsumCounters checks our counters' deltas d and the kernel's counters kc against exact
// values and lower bounds, and logs both.
func checkCsumCounters(t *testing.T, d, kc, ourExact, ourMin, kernelExact, kernelMin map[string]uint64) {
	t.Helper()
	for name, want := range ourExact {
		if d[name] != want {
			t.Errorf("our %s moved by %d, want %d", name, d[name], want)
		}
	}
	for name, want := range ourMin {
		if d[name] < want {
			t.Errorf("our %s moved by %d, want >= %d", name, d[name], want)
		}
	}
	for name, want := range kernelExact {
		if kc[name] != want {
			t.Errorf("kernel %s = %d, want %d", name, kc[name], want)
		}
	}
	for name, want := range kernelMin {
		if kc[name] < want {
			t.Errorf("kernel %s = %d, want >= %d", name, kc[name], want)
		}
	}
	logNonZero(t, "ours (delta)", d)
	logNonZero(t, "kernel", kc)
}
