package netns_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// lanHost is a third namespace behind A, as a host of a router's LAN: 192.168.77.2/24 and
// fd77::2/64 on eth0, its default routes via A's lan0 (192.168.77.1, fd77::1). A forwards, and B
// routes the LAN back through path 0 (for what A forwards without terminating it).
type lanHost struct {
	name string
	addr map[netns.Family]netip.Addr
}

func newLANHost(t testing.TB, topo *netns.Topology) *lanHost {
	t.Helper()
	h := &lanHost{
		name: fmt.Sprintf("mpglan-%d-%06x", os.Getpid(), rand.IntN(1<<24)),
		addr: map[netns.Family]netip.Addr{netns.IPv4: netip.MustParseAddr("192.168.77.2"), netns.IPv6: netip.MustParseAddr("fd77::2")},
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", h.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", h.name).Run() })
	a := topo.A.Name()
	run("ip", "link", "add", "lan0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", h.name)
	run("ip", "-n", a, "addr", "add", "192.168.77.1/24", "dev", "lan0")
	run("ip", "-n", a, "addr", "add", "fd77::1/64", "dev", "lan0", "nodad")
	run("ip", "-n", a, "link", "set", "lan0", "up")
	run("ip", "-n", h.name, "link", "set", "lo", "up")
	run("ip", "-n", h.name, "addr", "add", "192.168.77.2/24", "dev", "eth0")
	run("ip", "-n", h.name, "addr", "add", "fd77::2/64", "dev", "eth0", "nodad")
	run("ip", "-n", h.name, "link", "set", "eth0", "up")
	run("ip", "-n", h.name, "route", "add", "default", "via", "192.168.77.1")
	run("ip", "-n", h.name, "-6", "route", "add", "default", "via", "fd77::1")
	topo.A.SetSysctl("net.ipv4.ip_forward", "1")
	topo.A.SetSysctl("net.ipv6.conf.all.forwarding", "1")
	p0 := topo.Path(0)
	run("ip", "-n", topo.B.Name(), "route", "add", "192.168.77.0/24", "via", p0.A.Addr(netns.IPv4).String())
	run("ip", "-n", topo.B.Name(), "-6", "route", "add", "fd77::/64", "via", p0.A.Addr(netns.IPv6).String())
	return h
}

// dial connects with TCP from the LAN host.
func (h *lanHost) dial(ctx context.Context, addr string) (net.Conn, error) {
	return h.dialNet(ctx, "tcp", addr)
}

// dialNet dials from the LAN host: the socket is made on a thread in its namespace.
func (h *lanHost) dialNet(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	ns, err := vnetns.GetFromName(h.name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if err := vnetns.Set(ns); err != nil {
		return nil, err
	}
	defer vnetns.Set(orig)
	var d net.Dialer
	d.SetMultipathTCP(false)
	return d.DialContext(ctx, network, addr)
}

// TestMptcpdTransparentDev: A is a router with mptcpd --transparent-dev lan0 and two paths to
// B; a LAN host behind lan0 connects, as it would to any server, to B's addresses. Its
// connection to a kernel MPTCP server is terminated by mptcpd (the server sees A's address, not
// the host's) and carried over MPTCP on both paths, byte-exact both ways; to a plain TCP server
// it falls back; a refused port resets the host's connection; UDP is still forwarded, and an
// excluded prefix too. When mptcpd stops, its policy rule is gone and TCP is forwarded again.
// IPv4 and IPv6.
func TestMptcpdTransparentDev(t *testing.T) {
	for _, fam := range []netns.Family{netns.IPv4, netns.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			t.Parallel()
			testMptcpdTransparentDev(t, fam)
		})
	}
}

func testMptcpdTransparentDev(t *testing.T, fam netns.Family) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, IPv6: true, A: ourSide})
	lan := newLANHost(t, topo)
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 0)
	mpSrv, err := topo.B.ListenMPTCP(p0.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	tcpSrv, err := topo.B.ListenTCP(p0.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	excluded, err := topo.B.ListenTCP(p1.B.HostPort(fam, 0))
	if err != nil {
		t.Fatal(err)
	}
	bits := 32
	if fam == netns.IPv6 {
		bits = 128
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	d, _ := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--transparent-dev", "lan0",
		"--transparent-exclude", fmt.Sprintf("%s/%d", p1.B.Addr(fam), bits), "--endpoint", p1.A.Addr(fam).String()+",subflow")
	if err := d.WaitOutput(ctx, "transparent-dev: intercepting"); err != nil {
		t.Fatal(err)
	}

	shapeForShares(p0, p1)
	tx0, tx1 := txBytes(t, p0.A), txBytes(t, p1.A)
	const up, down = 32 << 20, 32 << 20
	served := netns.ServeOne(ctx, mpSrv, down, 2)
	c, err := lan.dial(ctx, mpSrv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := waitRelay(t, ctx, sock, mpSrv.Addr().String())
	if r.Relay.Mode != "transparent-dev" || r.Relay.From.String() != c.LocalAddr().String() {
		t.Errorf("mptcpctl show: relay %+v, want transparent-dev from %s", *r.Relay, c.LocalAddr())
	}
	s := exchangeServed(t, ctx, c, served, up, down)
	if !s.MPTCP {
		t.Error("the kernel server's connection is not MPTCP")
	}
	if peer := netip.MustParseAddrPort(s.Remote.String()).Addr(); peer == lan.addr[fam] {
		t.Errorf("the server sees the LAN host %s: the connection was forwarded, not carried", peer)
	}
	c.Close()
	if d0, d1 := txBytes(t, p0.A)-tx0, txBytes(t, p1.A)-tx1; d0 < 2<<20 || d1 < 2<<20 {
		t.Errorf("A sent %d bytes on path 0 and %d on path 1: want both paths to carry at least 2 MiB of the 32", d0, d1)
	}

	served = netns.ServeOne(ctx, tcpSrv, 1<<20, 2)
	if c, err = lan.dial(ctx, tcpSrv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if s := exchangeServed(t, ctx, c, served, 1<<20, 1<<20); s.MPTCP {
		t.Error("a plain TCP server's connection is MPTCP")
	}
	c.Close()

	start := time.Now()
	if c, err := lan.dial(ctx, netip.AddrPortFrom(p0.B.Addr(fam), 9).String()); err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if !strings.Contains(fmt.Sprint(err), "reset") {
			t.Errorf("a refused port: %v, want a reset", err)
		}
	} else if !strings.Contains(err.Error(), "reset") {
		t.Errorf("a refused port: %v, want a reset", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("the reset came after %v", el)
	}

	// Forwarded as before: an excluded destination (the server sees the LAN host) and ping.
	acc := netns.AcceptAsync(ctx, excluded)
	if c, err = lan.dial(ctx, excluded.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if sc := <-acc; sc == nil || netip.MustParseAddrPort(sc.RemoteAddr().String()).Addr().Unmap() != lan.addr[fam] {
		t.Errorf("an excluded destination: the server sees %v, want the LAN host %s", sc, lan.addr[fam])
	} else {
		sc.Close()
	}
	c.Close()
	// UDP: forwarded as before, both ways.
	var pc net.PacketConn
	if err := topo.B.Do(func() error { var err error; pc, err = net.ListenPacket("udp", p0.B.HostPort(fam, 0)); return err }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 64)
		pc.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(append([]byte(from.String()+" "), buf[:n]...), from)
		}
	}()
	uc, err := lan.dialNet(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	uc.Write([]byte("ping"))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 128)
	n, err := uc.Read(buf)
	if want := netip.AddrPortFrom(lan.addr[fam], netip.MustParseAddrPort(uc.LocalAddr().String()).Port()).String() + " ping"; err != nil || string(buf[:n]) != want {
		t.Errorf("UDP from the LAN host: %q, %v; want %q", buf[:n], err, want)
	}
	uc.Close()
	st := daemonStats(t, sock)
	icept := st["TransparentDevIntercepted4"]
	if fam == netns.IPv6 {
		icept = st["TransparentDevIntercepted6"]
	}
	if icept != 3 || st["TransparentCarried"] != 3 {
		t.Errorf("counters: %v", nonzero(st))
	}

	stopMptcpd(t, d)
	if out := topo.A.IP("rule", "show", "pref", "262"); strings.TrimSpace(out) != "" {
		t.Errorf("a rule left after mptcpd stopped: %s", out)
	}
	acc = netns.AcceptAsync(ctx, tcpSrv)
	if c, err = lan.dial(ctx, tcpSrv.Addr().String()); err != nil {
		t.Fatalf("after mptcpd stopped: %v", err)
	}
	if sc := <-acc; sc == nil || netip.MustParseAddrPort(sc.RemoteAddr().String()).Addr().Unmap() != lan.addr[fam] {
		t.Errorf("after mptcpd stopped the server sees %v, want the LAN host", sc)
	} else {
		sc.Close()
	}
	c.Close()
}
