package netns_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/pkg/wire"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// echoServer serves every connection of ln until the test ends: it sends back what it reads,
// then half-closes.
func echoServer(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
}

// victims runs n kernel MPTCP clients from ns, each echoing size bytes through addr, and
// checks every byte and that each connection was MPTCP.
func victims(t *testing.T, ctx context.Context, ns *netns.Namespace, addr string, n int, size int64) <-chan error {
	errc := make(chan error, n)
	for i := range n {
		go func() {
			c, err := ns.DialMPTCP(ctx, addr)
			if err != nil {
				errc <- err
				return
			}
			r := <-netns.ExchangeAsync(ctx, c, size, uint64(100+i))
			want := netns.StreamDigest(size, uint64(100+i))
			switch {
			case r.Err != nil:
				errc <- fmt.Errorf("victim %d: %w", i, r.Err)
			case r.Received != want || r.Sent != want:
				errc <- fmt.Errorf("victim %d: sent %v, got back %v", i, r.Sent, r.Received)
			case !r.MPTCP:
				errc <- fmt.Errorf("victim %d fell back to TCP", i)
			default:
				errc <- nil
			}
		}()
	}
	return errc
}

// rssBytes is this process's resident set size.
func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestHostilePeers attacks our server with crafted MPTCP clients (userspace TCP behind a TUN
// device) while kernel MPTCP clients echo data through it: mappings on pure ACKs for ever-new
// subflow bytes, data mapped far beyond the receive window, a mapping whose SSN is off by
// 100,000, and a first data whose MP_CAPABLE maps no bytes. The victims must get every byte
// back, over MPTCP; the attacks must cost bounded memory and be counted.
func TestHostilePeers(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	ln := listenOurs(t, topo.B, "0.0.0.0:0")
	echoServer(t, ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	tun := topo.B.AddTUN(t, "atk0", netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("10.250.0.2"))
	dst := netip.AddrPortFrom(tun.Local, port)
	dial := func(sport uint16) *netns.RawMPTCP {
		c, err := tun.DialMPTCP(ctx, sport, dst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	ourCounters := func() map[string]uint64 {
		c, err := ourStack(t).Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before := ourCounters()
	rss0 := rssBytes(t)

	const nVictims, size = 4, 8 << 20
	victimErrs := victims(t, ctx, topo.A, topo.Path(0).B.HostPort(netns.IPv4, port), nVictims, size)

	var wg sync.WaitGroup
	attack := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	// Mappings on pure ACKs, each for new subflow bytes never sent.
	const nMapFlood = 200_000
	flood := dial(40001)
	attack("mapping flood", func() error {
		for i := range nMapFlood {
			if err := flood.SendAck(flood.DSS(flood.IDSN()+1+uint64(i)*1000, 1+uint32(i)*1000, 1000)); err != nil {
				return err
			}
		}
		return nil
	})
	// Data mapped at DSN + 2^40: far beyond any window.
	const farBytes = 384 << 20
	far := dial(40002)
	attack("out-of-window data", func() error {
		payload := bytes.Repeat([]byte{0xa5}, 1400)
		for far.SSN() < farBytes {
			ssn := far.SSN()
			if err := far.SendData(ctx, payload, far.DSS(far.IDSN()+1+1<<40+uint64(ssn), ssn, uint16(len(payload)))); err != nil {
				return err
			}
		}
		return nil
	})
	// A mapping whose SSN is off by 100,000: its data has no mapping.
	off := dial(40003)
	attack("SSN off by 100,000", func() error {
		payload := bytes.Repeat([]byte{0x5a}, 1000)
		for range 4 {
			ssn := off.SSN()
			if err := off.SendData(ctx, payload, off.DSS(off.IDSN()+1+uint64(ssn-1), ssn+100_000, 1000)); err != nil {
				return err
			}
		}
		return nil
	})
	// A first data whose MP_CAPABLE maps no bytes: an infinite mapping.
	zero := dial(40004)
	attack("data-level length 0", func() error {
		opt := wire.MPCapable{Form: wire.MPCData, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256, SenderKey: zero.Key, ReceiverKey: zero.PeerKey}.Append(nil)
		return zero.SendData(ctx, []byte("zero-length mapping"), opt)
	})
	wg.Wait()
	if t.Failed() {
		logNonZero(t, "kernel clients", counters(t, topo.A))
		for _, c := range ourStack(t).Conns() {
			if in, ok := c.Info(); ok {
				t.Logf("our connection: %+v", in)
			}
		}
		t.Logf("raw far: acked %v", far.Reset())
	}
	rss1 := rssBytes(t)
	for range nVictims {
		if err := <-victimErrs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		logNonZero(t, "kernel clients", counters(t, topo.A))
	}
	t.Logf("RSS %d MiB before the attacks, %d MiB after %d MiB mapped beyond the window", rss0>>20, rss1>>20, farBytes>>20)
	if grew := rss1 - rss0; grew > 160<<20 {
		t.Errorf("RSS grew by %d MiB during the attacks", grew>>20)
	}
	// The counters the attacks must show.
	var after map[string]uint64
	delta := func(name string) uint64 { return after[name] - before[name] }
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = ourCounters()
		if (delta("InfiniteMapRx") >= 1 && (delta("MPFailFallback") >= 1 || delta("UnmappedDataRx") >= 1)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		name string
		min  uint64
	}{
		{"DSSNoMatchTCP", nMapFlood * 9 / 10}, // the pure-ACK mappings (a few may be lost on the way)
		{"NoDSSInWindow", 1},
		{"InfiniteMapRx", 1},
		{"UnmappedDataRx", 1},
	} {
		if d := delta(c.name); d < c.min {
			t.Errorf("%s rose by %d, want at least %d", c.name, d, c.min)
		}
	}
	if d := delta("EventLost"); d != 0 {
		t.Errorf("EventLost rose by %d", d)
	}
	t.Logf("counters: DSSNoMatchTCP +%d, NoDSSInWindow +%d, InfiniteMapRx +%d, UnmappedDataRx +%d, MPFailFallback +%d, EventsRefused +%d",
		delta("DSSNoMatchTCP"), delta("NoDSSInWindow"), delta("InfiniteMapRx"), delta("UnmappedDataRx"), delta("MPFailFallback"), delta("EventsRefused"))
}
