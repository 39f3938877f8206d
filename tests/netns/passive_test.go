package netns_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// The handshakes of our listener with a kernel MPTCP client that the SYN/ACK's derived key must
// survive: SYN cookies (no request socket at all), a lost SYN/ACK (retransmitted from the
// request socket, with no SYN of its own) and a lost third ACK (the first data completes the
// handshake with a 22-byte MP_CAPABLE).

// passiveOnce runs one kernel client connection to our listener with up and down bytes and
// checks it: MPTCP on both sides, intact bytes, no fallback on the kernel client.
func passiveOnce(t *testing.T, ctx context.Context, topo *netns.Topology, up, down int64) map[string]uint64 {
	t.Helper()
	ln := listenOurs(t, topo.B, topo.Path(0).B.HostPort(netns.IPv4, 0))
	return passiveTo(t, ctx, topo, serveAll(ctx, ln, down), ln.Addr().String(), up, down)
}

// passiveTo is passiveOnce to addr, where our server srv serves.
func passiveTo(t *testing.T, ctx context.Context, topo *netns.Topology, srv <-chan served, addr string, up, down int64) map[string]uint64 {
	t.Helper()
	var k kernelClient
	d := ourCounterDeltas(t, func() {
		k = dialKernel(ctx, topo.A, addr, up)
		if bad := checkPassiveOpens(t, ctx, []kernelClient{k}, srv, up, down); bad > 0 {
			t.Errorf("the connection failed")
		}
	})
	for name, want := range map[string]uint64{"MPCapableACKRX": 1, "PassiveTicketUsed": 1, "PassiveOpens": 1,
		"FallbackPassive": 0, "MPCapableACKBadKey": 0} {
		if d[name] != want {
			t.Errorf("our %s moved by %d, want %d", name, d[name], want)
		}
	}
	checkOurs(t, d)
	checkNoFallback(t, counters(t, topo.A))
	return d
}

// TestPassiveSynCookies: the server namespace answers every SYN with a SYN cookie
// (tcp_syncookies=2): the third ACK's key is checked against the key derived again.
func TestPassiveSynCookies(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: netns.NamespaceConfig{Sysctls: map[string]string{
		"net.mptcp.enabled": "0", "net.ipv4.tcp_syncookies": "2"}}})
	tcp0, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	passiveOnce(t, ctx, topo, 4<<20, 4<<20)
	tcp1, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	if s, r := tcp1["SyncookiesSent"]-tcp0["SyncookiesSent"], tcp1["SyncookiesRecv"]-tcp0["SyncookiesRecv"]; s != 1 || r != 1 {
		t.Errorf("SYN cookies sent %d, received %d; want 1 each", s, r)
	}
}

// TestPassiveSynAckLost: our first SYN/ACK is lost; the one sent again comes from the request
// socket, where the SYN is no longer at hand: the kernel kept its headers (TCP_SAVE_SYN), and
// the key derived from them is the same.
func TestPassiveSynAckLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	dr := topo.Path(0).B.DropFirst(1, 0x12 /* SYN|ACK */, 0)
	d := passiveOnce(t, ctx, topo, 1<<20, 1<<20)
	if n, err := dr.Matched(); err != nil || n < 2 {
		t.Errorf("%d SYN/ACKs seen (%v), want 2: the first one dropped", n, err)
	}
	if d["MPCapableSYNACKTX"] < 2 {
		t.Errorf("our MPCapableSYNACKTX moved by %d, want 2 (the SYN/ACK and its retransmission)", d["MPCapableSYNACKTX"])
	}
}

// TestPassiveThirdAckLost: the client's third ACK (MP_CAPABLE with both keys, 20 bytes) is
// lost; its first data, with MP_CAPABLE and the data-level length (22 bytes), completes the
// handshake at our listener.
func TestPassiveThirdAckLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	// A pure ACK of 72 bytes: IP 20, TCP 20, timestamps 12, MP_CAPABLE 20.
	dr := topo.Path(0).A.DropFirst(1, 0x10 /* ACK */, 72)
	d := passiveOnce(t, ctx, topo, 1<<20, 1<<20)
	if n, err := dr.Matched(); err != nil || n != 1 {
		t.Errorf("%d third ACKs seen (%v), want 1, dropped", n, err)
	}
	if d["MappingRx"] < 1 {
		t.Errorf("our MappingRx moved by %d, want the first data's implicit mapping", d["MappingRx"])
	}
}

// TestPassiveDualStack: our listener on [::] (a dual-stack socket) takes an IPv4 and an IPv6
// client. For the IPv4 one the request socket has the family AF_INET6 but no IPv6 addresses,
// and the accepted socket v4-mapped ones: the key must come out the same from both.
func TestPassiveDualStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, IPv6: true, B: ourSide})
	ln := listenOurs(t, topo.B, "[::]:0")
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	srv := serveAll(ctx, ln, 1<<20)
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			passiveTo(t, ctx, topo, srv, topo.Path(0).B.HostPort(fam, port), 1<<20, 1<<20)
		})
	}
}
