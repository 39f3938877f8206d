package netns_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TCP header flags.
const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// synTTL is the TTL (hop limit) of the SYNs sent here: an answer carrying 64 was written anew.
const synTTL = 7

// TestJoinUnknownToken: an MP_JOIN SYN to our listener naming a token we do not have is answered
// as the kernel answers it (subflow_v4_route_req): a reset carrying MP_TCPRST with reason
// "MPTCP-specific error" and no T flag, counted as MPJoinNoTokenFound. A plain SYN to the same
// listener still gets its SYN/ACK, and an MP_JOIN SYN naming the token of a connection we have
// still gets an MP_JOIN SYN/ACK: the reset touches nothing else.
//
// No kernel sends a join with a made-up token, so the SYNs are written by hand on a raw socket
// in A, which also reads the answers.
//
//	namespace A (kernel)                        namespace B (ours, kernel MPTCP off)
//	raw socket 10.0.0.1 / fd00:0::1  ==path 0==  our listener 10.0.0.2 / fd00:0::2
//	kernel MPTCP client                          (SYN rewriter on veth0 ingress)
func TestJoinUnknownToken(t *testing.T) {
	topo := netns.New(t, netns.Config{Paths: 1, IPv6: true, B: ourSide})
	ourPM(t, pm.DefaultLimits)
	for _, f := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(f.String(), func(t *testing.T) { testJoinUnknownToken(t, topo, f) })
	}
}

func testJoinUnknownToken(t *testing.T, topo *netns.Topology, f netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(f, 0))
	lap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw := openRawTCP(t, topo.A, p.A.Addr(f))
	sport := uint16(40000 + rand.N(10000))

	// A join for a connection we do not have: the reset, written over the SYN.
	t.Run("unknown token", func(t *testing.T) {
		sport++
		seq := rand.Uint32()
		opts := joinSynOpts(rand.Uint32(), rand.Uint32())
		var ans segment
		d := ourCounterDeltas(t, func() {
			if err := raw.send(lap, sport, seq, tcpSYN, opts); err != nil {
				t.Fatal(err)
			}
			ans = raw.recv(t, ctx, lap, sport)
		})
		// The SYN carried a full checksum (a raw socket's), which the reset must keep right.
		if !ans.csumOK {
			t.Errorf("answer has a bad TCP checksum")
		}
		if ans.flags() != tcpRST|tcpACK {
			t.Errorf("answer flags %#02x, want RST|ACK (%#02x)", ans.flags(), tcpRST|tcpACK)
		}
		if ans.seq() != 0 || ans.ack() != seq+1 {
			t.Errorf("answer seq %d ack %d, want 0 and %d (the SYN's seq + 1)", ans.seq(), ans.ack(), seq+1)
		}
		if w := binary.BigEndian.Uint16(ans.tcp[14:]); w != 0 {
			t.Errorf("answer window %d, want 0", w)
		}
		if ans.ttl != 64 {
			t.Errorf("answer TTL/hop limit %d, want 64", ans.ttl)
		}
		if len(ans.tcp) != 20+len(opts) {
			t.Errorf("answer TCP length %d, want the SYN's %d", len(ans.tcp), 20+len(opts))
		}
		// MP_TCPRST first, NOPs over the rest of the SYN's option area.
		want := wire.AppendPadded(nil, wire.MPTCPRst{Reason: wire.RstEMPTCP})
		for len(want) < len(opts) {
			want = append(want, 1)
		}
		if got := ans.opts(); string(got) != string(want) {
			t.Errorf("answer options % x, want % x", got, want)
		}
		mo, bad := wire.ParseMPTCPOptions(ans.opts())
		if bad != 0 || len(mo) != 1 {
			t.Fatalf("answer MPTCP options %+v (%d malformed), want one MP_TCPRST", mo, bad)
		}
		rst, ok := mo[0].(wire.MPTCPRst)
		if !ok || rst.Reason != wire.RstEMPTCP || rst.Transient() || rst.Flags != 0 {
			t.Errorf("answer option %#v, want MP_TCPRST reason %d (%s) without flags", mo[0], wire.RstEMPTCP,
				wire.ReasonString(wire.RstEMPTCP))
		}
		if d["MPJoinNoTokenFound"] != 1 || d["MPJoinSynRx"] != 0 || d["MPJoinSynAckTx"] != 0 {
			t.Errorf("ours: MPJoinNoTokenFound +%d (want 1), MPJoinSynRx +%d, MPJoinSynAckTx +%d (want 0)",
				d["MPJoinNoTokenFound"], d["MPJoinSynRx"], d["MPJoinSynAckTx"])
		}
	})

	// A plain SYN to the same listener: its SYN/ACK, as ever.
	t.Run("plain SYN", func(t *testing.T) {
		sport++
		seq := rand.Uint32()
		var ans segment
		d := ourCounterDeltas(t, func() {
			if err := raw.send(lap, sport, seq, tcpSYN, synOpts()); err != nil {
				t.Fatal(err)
			}
			ans = raw.recv(t, ctx, lap, sport)
		})
		if ans.flags() != tcpSYN|tcpACK || ans.ack() != seq+1 {
			t.Errorf("answer flags %#02x ack %d, want SYN|ACK and %d", ans.flags(), ans.ack(), seq+1)
		}
		if mo, _ := wire.ParseMPTCPOptions(ans.opts()); len(mo) != 0 {
			t.Errorf("SYN/ACK to a plain SYN carries MPTCP options %+v", mo)
		}
		if d["MPJoinNoTokenFound"] != 0 {
			t.Errorf("ours: MPJoinNoTokenFound +%d, want 0", d["MPJoinNoTokenFound"])
		}
	})

	// A join for a connection we have (a kernel client's): our MP_JOIN SYN/ACK.
	t.Run("known token", func(t *testing.T) {
		c, err := topo.A.DialMPTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := netns.Accept(ctx, ln)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		oc := sc.(*control.Conn)
		if in, ok := oc.Info(); !ok || !in.MPTCP {
			t.Fatalf("the kernel client's connection is not MPTCP: %+v", in)
		}
		sport++
		seq := rand.Uint32()
		var ans segment
		d := ourCounterDeltas(t, func() {
			if err := raw.send(lap, sport, seq, tcpSYN, joinSynOpts(oc.Token(), rand.Uint32())); err != nil {
				t.Fatal(err)
			}
			ans = raw.recv(t, ctx, lap, sport)
		})
		if ans.flags() != tcpSYN|tcpACK || ans.ack() != seq+1 {
			t.Errorf("answer flags %#02x ack %d, want SYN|ACK and %d", ans.flags(), ans.ack(), seq+1)
		}
		mo, bad := wire.ParseMPTCPOptions(ans.opts())
		if bad != 0 || len(mo) != 1 {
			t.Fatalf("answer MPTCP options %+v (%d malformed), want one MP_JOIN", mo, bad)
		}
		if j, ok := mo[0].(wire.MPJoin); !ok || j.Form != wire.MPJSynAck {
			t.Errorf("answer option %#v, want an MP_JOIN SYN/ACK", mo[0])
		}
		if d["MPJoinNoTokenFound"] != 0 || d["MPJoinSynRx"] != 1 || d["MPJoinSynAckTx"] != 1 {
			t.Errorf("ours: MPJoinNoTokenFound +%d (want 0), MPJoinSynRx +%d, MPJoinSynAckTx +%d (want 1)",
				d["MPJoinNoTokenFound"], d["MPJoinSynRx"], d["MPJoinSynAckTx"])
		}
	})
}

// synOpts are the options of a kernel SYN: MSS, SACK-permitted, timestamps, window scale.
func synOpts() []byte {
	return []byte{
		2, 4, 0x05, 0xb4, // MSS 1460
		4, 2, // SACK-permitted
		8, 10, 0, 0, 0, 1, 0, 0, 0, 0, // timestamps
		1, 3, 3, 7, // NOP, window scale 7
	}
}

// joinSynOpts are a kernel MP_JOIN SYN's options (32 bytes) naming token.
func joinSynOpts(token, nonce uint32) []byte {
	return wire.MPJoin{Form: wire.MPJSyn, AddrID: 1, Token: token, Nonce: nonce}.Append(synOpts())
}

// rawTCP sends hand-written TCP segments from one local address through a raw socket (the kernel
// writes the IP header) and reads the TCP segments that come back to it.
type rawTCP struct {
	fd    int
	local netip.Addr
}

func openRawTCP(t *testing.T, ns *netns.Namespace, local netip.Addr) *rawTCP {
	t.Helper()
	r := &rawTCP{fd: -1, local: local}
	err := ns.Do(func() error {
		af := unix.AF_INET
		if local.Is6() {
			af = unix.AF_INET6
		}
		fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		r.fd = fd
		if local.Is6() {
			err = errors.Join(
				unix.Bind(fd, &unix.SockaddrInet6{Addr: local.As16()}),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, synTTL),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1))
		} else {
			err = errors.Join(
				unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}),
				unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, synTTL))
		}
		return errors.Join(err, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}))
	})
	if r.fd >= 0 {
		t.Cleanup(func() { unix.Close(r.fd) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send sends a segment with a correct checksum and no payload.
func (r *rawTCP) send(to netip.AddrPort, sport uint16, seq uint32, flags uint8, opts []byte) error {
	h := make([]byte, 20, 20+len(opts))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], to.Port())
	binary.BigEndian.PutUint32(h[4:], seq)
	h[12] = byte((20+len(opts))/4) << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 64240)
	h = append(h, opts...)
	binary.BigEndian.PutUint16(h[16:], ^fold(pseudoSum(r.local, to.Addr(), len(h))+sum16(h)))
	var sa unix.Sockaddr
	if to.Addr().Is6() {
		sa = &unix.SockaddrInet6{Addr: to.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: to.Addr().As4()}
	}
	if err := unix.Sendto(r.fd, h, 0, sa); err != nil {
		return fmt.Errorf("send SYN to %s: %w", to, err)
	}
	return nil
}

// segment is a TCP segment read from a raw socket.
type segment struct {
	tcp    []byte // the TCP header and what follows
	ttl    int    // the IP TTL or hop limit
	csumOK bool   // the TCP checksum is right (a local sender's is left to the veth peer: CHECKSUM_PARTIAL)
}

func (s segment) seq() uint32  { return binary.BigEndian.Uint32(s.tcp[4:]) }
func (s segment) ack() uint32  { return binary.BigEndian.Uint32(s.tcp[8:]) }
func (s segment) flags() uint8 { return s.tcp[13] }
func (s segment) opts() []byte { return s.tcp[20 : int(s.tcp[12]>>4)*4] }
func (s segment) String() string {
	return fmt.Sprintf("flags %#02x seq %d ack %d ttl %d", s.flags(), s.seq(), s.ack(), s.ttl)
}

// recv returns the next segment from `from` to our port sport, checking its IPv4 header
// checksum; it fails the test when none comes before ctx ends.
func (r *rawTCP) recv(t *testing.T, ctx context.Context, from netip.AddrPort, sport uint16) segment {
	t.Helper()
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for ctx.Err() == nil {
		n, oobn, _, sa, err := unix.Recvmsg(r.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("raw receive: %v", err)
		}
		var src netip.Addr
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			src = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			src = netip.AddrFrom16(sa.Addr)
		}
		s := segment{tcp: buf[:n], ttl: -1}
		if r.local.Is4() {
			// IPv4 raw sockets read the IP header too.
			if n < 20 || int(buf[0]&0x0f)*4 > n {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if fold(sum16(buf[:ihl])) != 0xffff {
				t.Errorf("segment from %s: bad IPv4 header checksum", src)
			}
			s.tcp, s.ttl = buf[ihl:n], int(buf[8])
		} else if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cm.Header.Level == unix.IPPROTO_IPV6 && cm.Header.Type == unix.IPV6_HOPLIMIT && len(cm.Data) >= 4 {
					s.ttl = int(binary.NativeEndian.Uint32(cm.Data))
				}
			}
		}
		if src != from.Addr() || len(s.tcp) < 20 || int(s.tcp[12]>>4)*4 < 20 || int(s.tcp[12]>>4)*4 > len(s.tcp) ||
			binary.BigEndian.Uint16(s.tcp[0:]) != from.Port() || binary.BigEndian.Uint16(s.tcp[2:]) != sport {
			continue
		}
		s.csumOK = fold(pseudoSum(src, r.local, len(s.tcp))+sum16(s.tcp)) == 0xffff
		s.tcp = append([]byte(nil), s.tcp...)
		t.Logf("answer from %s: %s, options % x", from, s, s.opts())
		return s
	}
	t.Fatalf("no answer from %s to port %d: %v", from, sport, ctx.Err())
	return segment{}
}

// sum16 is the ones'-complement sum of b as 16-bit big-endian words, unfolded.
func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// pseudoSum is the sum of the TCP pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
func pseudoSum(src, dst netip.Addr, n int) uint32 {
	s := sum16(src.AsSlice()) + sum16(dst.AsSlice()) + unix.IPPROTO_TCP
	return s + uint32(n>>16) + uint32(n&0xffff)
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
