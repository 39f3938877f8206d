package netns_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
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
				if _, err := io.Copy(c, c); err != nil && !errors.Is(err, net.ErrClosed) {
					t.Logf("echo to %v: %v", c.RemoteAddr(), err)
				}
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

// rssBytes is this process's resident set size once garbage is collected and returned to the
// system: what stays is what something holds.
func rssBytes(t *testing.T) int64 {
	debug.FreeOSMemory()
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

// hostileRig is our server in namespace B, echoing what it reads, reached by kernel MPTCP
// clients in A and by userspace hostile clients behind a TUN device in B.
type hostileRig struct {
	t    *testing.T
	topo *netns.Topology
	tun  *netns.TUN
	port uint16
}

func newHostileRig(t *testing.T) *hostileRig {
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	ln := listenOurs(t, topo.B, "0.0.0.0:0")
	echoServer(t, ln)
	tun := topo.B.AddTUN(t, "atk0", netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("10.250.0.2"))
	return &hostileRig{t: t, topo: topo, tun: tun, port: uint16(ln.Addr().(*net.TCPAddr).Port)}
}

// Attack sizes of one round.
const (
	nMapFlood    = 200_000   // pure ACKs, each mapping subflow bytes never sent
	farBytes     = 384 << 20 // data mapped at DSN + 2^40
	nSmallSegs   = 50_000    // one-byte segments, each with its own mapping
	nVictims     = 4
	victimBytes  = 8 << 20
	hostilePorts = 10 // source ports one round uses
)

// round runs the attacks while nVictims kernel clients echo victimBytes each, and returns the
// errors: a victim's bytes differ, it fell back, or an attack could not be carried out.
func (h *hostileRig) round(ctx context.Context, sportBase uint16) []error {
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	victimErrs := victims(h.t, ctx, h.topo.A, h.topo.Path(0).B.HostPort(netns.IPv4, h.port), nVictims, victimBytes)
	dst := netip.AddrPortFrom(h.tun.Local, h.port)
	var wg sync.WaitGroup
	attack := func(name string, sport uint16, f func(c *netns.RawMPTCP) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			defer func() {
				if d := time.Since(start); d > 10*time.Second {
					h.t.Logf("%s took %v", name, d.Round(time.Millisecond))
				}
			}()
			c, err := h.tun.DialMPTCP(ctx, sportBase+sport, dst)
			if err != nil {
				fail(fmt.Errorf("%s: %w", name, err))
				return
			}
			defer c.Close()
			if err := f(c); err != nil {
				fail(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	attack("mapping flood", 1, func(c *netns.RawMPTCP) error {
		for i := range nMapFlood {
			if err := c.SendAck(c.DSS(c.IDSN()+1+uint64(i)*1000, 1+uint32(i)*1000, 1000)); err != nil {
				return err
			}
		}
		return nil
	})
	attack("out-of-window data", 2, func(c *netns.RawMPTCP) error {
		payload := bytes.Repeat([]byte{0xa5}, 1400)
		for c.SSN() < farBytes {
			ssn := c.SSN()
			if err := c.SendData(ctx, payload, c.DSS(c.IDSN()+1+1<<40+uint64(ssn), ssn, uint16(len(payload)))); err != nil {
				return err
			}
		}
		return nil
	})
	attack("small segments", 3, func(c *netns.RawMPTCP) error {
		for c.SSN() <= nSmallSegs {
			ssn := c.SSN()
			if err := c.SendData(ctx, []byte{byte(ssn)}, c.DSS(c.IDSN()+uint64(ssn), ssn, 1)); err != nil {
				return err
			}
		}
		return nil
	})
	// waitCounter waits until our counter name rises above before: a reset of the attacker's
	// connection before the server handled its segments would end the connection before it
	// is accepted.
	waitCounter := func(name string, before uint64) error {
		for h.counters()[name] == before && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		return ctx.Err()
	}
	attack("SSN off by 100,000", 4, func(c *netns.RawMPTCP) error {
		before := h.counters()["MPFailFallback"]
		payload := bytes.Repeat([]byte{0x5a}, 1000)
		for range 4 {
			ssn := c.SSN()
			if err := c.SendData(ctx, payload, c.DSS(c.IDSN()+1+uint64(ssn-1), ssn+100_000, 1000)); err != nil {
				return err
			}
		}
		return waitCounter("MPFailFallback", before)
	})
	attack("data-level length 0", 5, func(c *netns.RawMPTCP) error {
		before := h.counters()["InfiniteMapRx"]
		opt := wire.MPCapable{Form: wire.MPCData, Version: wire.SupportedVersion, Flags: wire.FlagHMACSHA256, SenderKey: c.Key, ReceiverKey: c.PeerKey}.Append(nil)
		if err := c.SendData(ctx, []byte("zero-length mapping"), opt); err != nil {
			return err
		}
		return waitCounter("InfiniteMapRx", before)
	})
	wg.Wait()
	for range nVictims {
		if err := <-victimErrs; err != nil {
			fail(err)
		}
	}
	return errs
}

func (h *hostileRig) counters() map[string]uint64 {
	c, err := ourStack(h.t).Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *hostileRig) logState() {
	logNonZero(h.t, "kernel clients", counters(h.t, h.topo.A))
	logNonZero(h.t, "ours", h.counters())
	for _, c := range ourStack(h.t).Conns() {
		if in, ok := c.Info(); ok {
			h.t.Logf("our connection: %+v", in)
		}
	}
}

// TestHostilePeers attacks our server with crafted MPTCP clients (userspace TCP behind a TUN
// device) while kernel MPTCP clients echo data through it: mappings on pure ACKs for ever-new
// subflow bytes, data mapped far beyond the receive window, one-byte segments each with its own
// mapping (an event each), a mapping whose SSN is off by 100,000, and a first data whose
// MP_CAPABLE maps no bytes. The victims must get every byte back, over MPTCP; the attacks must
// cost bounded memory and be counted.
func TestHostilePeers(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	h := newHostileRig(t)
	before := h.counters()
	rss0 := rssBytes(t)
	for _, err := range h.round(ctx, 40000) {
		t.Error(err)
	}
	rss1 := rssBytes(t)
	if t.Failed() {
		h.logState()
	}
	t.Logf("RSS %d MiB before the attacks, %d MiB after %d MiB mapped beyond the window", rss0>>20, rss1>>20, farBytes>>20)
	if grew := rss1 - rss0; grew > 160<<20 {
		t.Errorf("RSS grew by %d MiB during the attacks", grew>>20)
	}
	// The counters the attacks must show; the fallbacks may be handled just after the round.
	var after map[string]uint64
	delta := func(name string) uint64 { return after[name] - before[name] }
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = h.counters()
		if (delta("InfiniteMapRx") >= 1 && delta("MPFailFallback") >= 1) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		name string
		min  uint64
	}{
		{"DSSNoMatchTCP", nMapFlood * 9 / 10},   // the pure-ACK mappings (a few may be lost on the way)
		{"NoDSSInWindow", farBytes / 65535 / 2}, // per mapping after coalescing (or per segment)
		{"MappingRx", nSmallSegs / 2},
		{"InfiniteMapRx", 1},
		{"UnmappedDataRx", 1},
		{"MPFailFallback", 1},
	} {
		if d := delta(c.name); d < c.min {
			t.Errorf("%s rose by %d, want at least %d", c.name, d, c.min)
		}
	}
	if t.Failed() {
		d := map[string]uint64{}
		for k := range after {
			d[k] = delta(k)
		}
		logNonZero(t, "ours (deltas)", d)
	}
	for _, name := range []string{"EventLost", "EventLostReset"} {
		if d := delta(name); d != 0 {
			t.Errorf("%s rose by %d", name, d)
		}
	}
	t.Logf("counters: DSSNoMatchTCP +%d, NoDSSInWindow +%d, MappingRx +%d, InfiniteMapRx +%d, UnmappedDataRx +%d, MPFailFallback +%d, EventsRefused +%d, EventOverflowReset +%d",
		delta("DSSNoMatchTCP"), delta("NoDSSInWindow"), delta("MappingRx"), delta("InfiniteMapRx"), delta("UnmappedDataRx"), delta("MPFailFallback"), delta("EventsRefused"), delta("EventOverflowReset"))
}

var soakFlag = flag.Duration("soak", 0, "run TestSoak for this long (make soak)")

// TestSoak repeats the hostile round (the attacks while kernel clients echo data) for the
// -soak duration: every victim's bytes exact in every round, and memory flat: after the first
// round, the process's RSS never exceeds what it was then by more than 64 MiB.
func TestSoak(t *testing.T) {
	if *soakFlag == 0 {
		t.Skip("the soak runs with -soak DURATION (make soak)")
	}
	testenv.RequireRoot(t)
	h := newHostileRig(t)
	end := time.Now().Add(*soakFlag)
	var base int64
	for r := 0; time.Now().Before(end); r++ {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		start := time.Now()
		errs := h.round(ctx, uint16(20000+(r%4000)*hostilePorts))
		cancel()
		rss := rssBytes(t)
		t.Logf("round %d: %v, RSS %d MiB, %d errors, %d connections open", r, time.Since(start).Round(time.Millisecond), rss>>20, len(errs), len(ourStack(t).Conns()))
		for _, err := range errs {
			t.Errorf("round %d: %v", r, err)
		}
		if r == 0 {
			base = rss
		} else if rss > base+64<<20 {
			t.Errorf("round %d: RSS %d MiB, %d MiB after the first round", r, rss>>20, base>>20)
		}
		if t.Failed() {
			h.logState()
			return
		}
	}
	if base == 0 {
		t.Fatal(errors.New("no round ran"))
	}
}
