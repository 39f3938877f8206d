package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Passive opens under load: a spoofed SYN flood must not cost our listener anything until a
// third ACK echoes the key its SYN/ACK derived, and tickets must keep up with bursts.

// spoofRange is where a flood's source addresses come from: B routes it back to A (its path
// routes default to A), A has none of it and does not forward, so the SYN/ACKs die there
// unanswered, as those of a spoofed flood do.
var spoofRange = netip.MustParsePrefix("10.200.0.0/16")

var floodSide = netns.NamespaceConfig{Sysctls: map[string]string{"net.ipv4.ip_forward": "0"}}

// served is what our server did with one accepted connection.
type served struct {
	netns.Transfer
	mptcp  bool // a *control.Conn that is MPTCP after the exchange
	remote string
	err    error
}

// serveAll accepts on ln until ctx ends; each connection exchanges down bytes (seed 2) and is
// reported on the channel.
func serveAll(ctx context.Context, ln net.Listener, down int64) <-chan served {
	ch := make(chan served, 4096)
	go func() {
		for {
			c, err := netns.Accept(ctx, ln)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tr, err := netns.Exchange(ctx, c, down, 2)
				ch <- served{Transfer: tr, mptcp: control.IsMPTCP(c), remote: c.RemoteAddr().String(), err: err}
			}()
		}
	}()
	return ch
}

// kernelClient is one kernel MPTCP client's connection to our listener.
type kernelClient struct {
	netns.Result
	local   string
	connect time.Duration
}

// dialKernel connects a kernel MPTCP client from ns and exchanges up bytes (seed 1).
func dialKernel(ctx context.Context, ns *netns.Namespace, addr string, up int64) kernelClient {
	start := time.Now()
	c, err := ns.DialMPTCP(ctx, addr)
	if err != nil {
		return kernelClient{Result: netns.Result{Err: err}}
	}
	k := kernelClient{local: c.LocalAddr().String(), connect: time.Since(start)}
	k.Result = <-netns.ExchangeAsync(ctx, c, up, 1)
	return k
}

// checkPassiveOpens matches the clients with what our server served: every connection must be
// MPTCP on both sides with intact bytes. It reports the first failures and returns how many
// connections failed.
func checkPassiveOpens(t *testing.T, ctx context.Context, clients []kernelClient, srv <-chan served, up, down int64) int {
	t.Helper()
	want := 0
	for _, k := range clients {
		if k.local != "" {
			want++
		}
	}
	// By the client's address; a port may come back once its connection is gone.
	byRemote := map[string][]served{}
	wait := time.After(10 * time.Second)
collect:
	for got := 0; got < want; got++ {
		select {
		case s := <-srv:
			byRemote[s.remote] = append(byRemote[s.remote], s)
		case <-wait:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
	bad := 0
	for i, k := range clients {
		var s served
		ok := false
		if ss := byRemote[k.local]; len(ss) > 0 {
			s, byRemote[k.local], ok = ss[0], ss[1:], true
		}
		var why string
		switch {
		case k.Err != nil || !ok || s.err != nil:
			why = fmt.Sprintf("client %v, server %v (served %t)", k.Err, s.err, ok)
		case !k.MPTCP || !s.mptcp:
			why = fmt.Sprintf("MPTCP on the kernel client %t, on our server %t; want both", k.MPTCP, s.mptcp)
		case k.Sent != netns.StreamDigest(up, 1) || s.Received != k.Sent || s.Sent != netns.StreamDigest(down, 2) || k.Received != s.Sent:
			why = fmt.Sprintf("bytes differ: client %+v, server %+v", k.Transfer, s.Transfer)
		default:
			continue
		}
		if bad++; bad <= 10 {
			t.Errorf("connection %d (%s): %s", i, k.local, why)
		}
	}
	return bad
}

// TestPassiveSynFlood: 2,000 spoofed MP_CAPABLE SYNs per second for 10 s at our listener,
// while 20 kernel MPTCP clients connect, one every 500 ms. Every client must get MPTCP with
// intact bytes, and the spoofed SYNs must take no ticket: the SYN/ACKs' keys are derived, and
// only the 20 completed handshakes take one.
func TestPassiveSynFlood(t *testing.T) {
	const (
		rate     = 2000
		duration = 10 * time.Second
		clients  = 20
		spacing  = duration / clients
		up, down = 64 << 10, 64 << 10
	)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: floodSide, B: ourSide})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	srv := serveAll(ctx, ln, down)
	tcp0, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	var sent uint64
	var floodErr error
	res := make([]kernelClient, clients)
	d := ourCounterDeltas(t, func() {
		var wg sync.WaitGroup
		wg.Go(func() {
			sent, floodErr = p.A.SYNFlood(ctx, port, netns.SYNFlood{Rate: rate, Duration: duration, Spoof: spoofRange, MPCapable: true})
		})
		start := time.Now()
		for i := range clients {
			time.Sleep(time.Until(start.Add(spacing/2 + time.Duration(i)*spacing)))
			wg.Go(func() { res[i] = dialKernel(ctx, topo.A, ln.Addr().String(), up) })
		}
		wg.Wait()
	})
	if floodErr != nil {
		t.Fatal(floodErr)
	}
	tcp1, err := topo.B.TCPCounters()
	if err != nil {
		t.Fatal(err)
	}
	var connects []time.Duration
	for _, k := range res {
		connects = append(connects, k.connect)
	}
	slices.Sort(connects)
	t.Logf("flood: %d spoofed SYNs in %v (%.0f/s); server: SYN cookies sent %d, listen drops %d; our SYN/ACKs with MP_CAPABLE %d, third ACKs %d, tickets taken %d; client connect time median %v, max %v",
		sent, duration, float64(sent)/duration.Seconds(), tcp1["SyncookiesSent"]-tcp0["SyncookiesSent"], tcp1["ListenDrops"]-tcp0["ListenDrops"],
		d["MPCapableSYNACKTX"], d["MPCapableACKRX"], d["PassiveTicketUsed"], connects[len(connects)/2], connects[len(connects)-1])
	if sent < rate*uint64(duration/time.Second)*9/10 {
		t.Errorf("the flood sent %d SYNs, want about %d", sent, rate*uint64(duration/time.Second))
	}
	if bad := checkPassiveOpens(t, ctx, res, srv, up, down); bad > 0 {
		t.Errorf("%d of %d legitimate clients failed during the flood", bad, clients)
	}
	// The spoofed SYNs were answered with MP_CAPABLE, yet took nothing.
	if d["MPCapableSYNACKTX"] < sent/2 {
		t.Errorf("our MPCapableSYNACKTX moved by %d for %d spoofed SYNs, want most of them answered", d["MPCapableSYNACKTX"], sent)
	}
	for name, want := range map[string]uint64{"PassiveTicketUsed": clients, "MPCapableACKRX": clients, "PassiveOpens": clients,
		"FallbackPassive": 0, "MPCapableNoTicket": 0, "MPCapableACKBadKey": 0, "MPCapableFallbackACK": 0, "TokenFallbackInit": 0} {
		if d[name] != want {
			t.Errorf("our %s moved by %d, want %d", name, d[name], want)
		}
	}
	checkOurs(t, d)
	checkNoFallback(t, counters(t, topo.A))
	if t.Failed() {
		logNonZero(t, "ours (delta)", d)
	}
}

// TestPassiveBurst: 2,000 kernel MPTCP clients connect to our listener as fast as they can (256
// at a time); every connection must be MPTCP with intact bytes: tickets are refilled as fast as
// connections are accepted.
func TestPassiveBurst(t *testing.T) {
	const (
		conns    = 2000
		parallel = 256
		up, down = 1 << 10, 1 << 10
	)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, B: ourSide})
	p := topo.Path(0)
	ln := listenOurs(t, topo.B, p.B.HostPort(netns.IPv4, 0))
	srv := serveAll(ctx, ln, down)
	res := make([]kernelClient, conns)
	var el time.Duration
	d := ourCounterDeltas(t, func() {
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		for range parallel {
			wg.Go(func() {
				for i := range next {
					res[i] = dialKernel(ctx, topo.A, ln.Addr().String(), up)
				}
			})
		}
		for i := range conns {
			next <- i
		}
		close(next)
		wg.Wait()
		el = time.Since(start)
	})
	t.Logf("%d connections in %v (%.0f/s); tickets taken %d, reclaimed %d", conns, el.Round(time.Millisecond),
		float64(conns)/el.Seconds(), d["PassiveTicketUsed"], d["TicketsReclaimed"])
	if bad := checkPassiveOpens(t, ctx, res, srv, up, down); bad > 0 {
		t.Errorf("%d of %d connections of the burst failed", bad, conns)
	}
	for name, want := range map[string]uint64{"PassiveTicketUsed": conns, "PassiveOpens": conns, "FallbackPassive": 0,
		"MPCapableNoTicket": 0, "MPCapableACKBadKey": 0, "TokenFallbackInit": 0, "TokenCollision": 0} {
		if d[name] != want {
			t.Errorf("our %s moved by %d, want %d", name, d[name], want)
		}
	}
	checkOurs(t, d)
	checkNoFallback(t, counters(t, topo.A))
	if t.Failed() {
		logNonZero(t, "ours (delta)", d)
	}
}
