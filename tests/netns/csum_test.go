package netns_test

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
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
