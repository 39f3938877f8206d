package netns_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Hybrid access (issue 17's scenario): a LAN host behind a home router with DSL and LTE
// downloads from a server on the far side. Ours: the router runs mptcpd --transparent-dev on its
// LAN interface with --convert-via, the concentrator mptcpd --convert, so the host's plain TCP
// connection to the server's address is carried over MPTCP on both links to the converter, which
// connects to the server (RFC 8803). The kernel's MPTCP at both ends, side by side: the host
// connects to a plain relay on the router (a socket pair, no interception: the kernel has no
// transparent mode), which relays over a kernel MPTCP connection to a relay on the concentrator,
// which connects to the server. Path 0 is the DSL (20 Mbit/s, 20 ms RTT), path 1 the LTE (30
// Mbit/s, 50 ms RTT), both directions shaped by the emulator; the router opens the LTE subflow.

var hybridPaths = []emu.Config{
	{Rate: 20e6, Delay: 10 * time.Millisecond},
	{Rate: 30e6, Delay: 25 * time.Millisecond},
}

var hybridNames = []string{"DSL (20 Mbit/s, 20 ms RTT)", "LTE (30 Mbit/s, 50 ms RTT)"}

// hybridLoss is the DSL outage: down from 3 s to 13 s of the download.
var hybridLoss = []emu.Event{emu.Down(3 * time.Second), emu.Up(13 * time.Second)}

const hybridDown, hybridUp = 64 << 20, 1 << 20

// hybridGoal is the share of the summed rate the download reaches with both links up.
const hybridGoal = 0.9

func TestScenarioHybridAccess(t *testing.T) {
	requireScenarios(t)
	var b strings.Builder
	b.WriteString("## Hybrid access: DSL + LTE through a Transport Converter\n\n")
	b.WriteString("A LAN host behind the router downloads 64 MiB (and sends 1 MiB) from a server beyond the concentrator. ")
	b.WriteString("Ours: the router runs `mptcpd --transparent-dev lan0 --convert-via CONVERTER`, the concentrator `mptcpd --convert`; the host connects to the server's address with plain TCP. ")
	b.WriteString("Kernel: the host connects to a plain relay on the router, which relays over the kernel's MPTCP to a relay on the concentrator (no interception, no Convert protocol: the kernel has neither). ")
	b.WriteString("DSL (path 1, initial subflow): 20 Mbit/s, 20 ms RTT; LTE (path 2, opened by the router): 30 Mbit/s, 50 ms RTT; CUBIC everywhere. ")
	fmt.Fprintf(&b, "Goal: with both links up the download reaches %.0f %% of the summed 50 Mbit/s; with the DSL down from 3 s to 13 s it completes, byte-exact. ", 100*hybridGoal)
	b.WriteString("Time is from the connect to the last byte at the host.\n\n")
	b.WriteString("| DSL | stacks | time (s) | goodput (Mbit/s) | of summed rate | longest gap (ms) | DSL / LTE share | goal |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, loss := range []bool{false, true} {
		name := "up"
		if loss {
			name = "lost 3–13 s"
		}
		var runs []scenarioResult
		for _, impl := range []impl{oursImpl, kernelImpl} {
			t.Run(fmt.Sprintf("%s/%v", map[bool]string{false: "both-up", true: "dsl-lost"}[loss], impl), func(t *testing.T) {
				res := runHybrid(t, impl, loss)
				runs = append(runs, res)
				if res.err != nil {
					fmt.Fprintf(&b, "| %s | %s | failed: %v | | | | | no |\n", name, pairingLabel(res.p), res.err)
					t.Error(res.err)
					return
				}
				s := scenario{up: hybridUp, down: hybridDown}
				of := res.downMbps(s) / 50
				goal, ok := "completes", true
				if !loss {
					goal = fmt.Sprintf("≥ %.0f %%", 100*hybridGoal)
					ok = of >= hybridGoal
				}
				mark := "yes"
				if !ok {
					mark = "**no**"
					if impl == oursImpl {
						t.Errorf("download at %.0f %% of the summed rate, goal %.0f %%", 100*of, 100*hybridGoal)
					}
				}
				sh := downShares(res)
				row := fmt.Sprintf("| %s | %s | %.2f | %.2f | %.0f %% | %d | %.2f / %.2f | %s: %s |\n", name, pairingLabel(res.p),
					res.downTime.Seconds(), res.downMbps(s), 100*of, res.downGap.Milliseconds(), sh[0], sh[1], goal, mark)
				t.Log(strings.TrimSpace(row))
				b.WriteString(row)
			})
		}
		file, title := "scenario-hybrid.png", "DSL + LTE, both up: download per link"
		var events []emu.Event
		if loss {
			file, title, events = "scenario-hybrid-dsl-lost.png", "DSL lost from 3 s to 13 s: download per link", hybridLoss
		}
		if err := plotScenario(file, title, runs, hybridNames, false, events); err != nil {
			t.Errorf("plot: %v", err)
		}
	}
	b.WriteString("\n![hybrid access, both links up](scenario-hybrid.png)\n")
	b.WriteString("\n![hybrid access, DSL lost for 10 s](scenario-hybrid-dsl-lost.png)\n")
	writeScenarioSection(t, "4-hybrid", b.String())
}

// downShares is each path's part of the bytes carried downward.
func downShares(r scenarioResult) []float64 {
	if len(r.at) == 0 {
		return []float64{0, 0}
	}
	last := r.ba[len(r.at)-1]
	var total uint64
	for _, n := range last {
		total += n
	}
	out := make([]float64, len(last))
	for i, n := range last {
		if total > 0 {
			out[i] = float64(n) / float64(total)
		}
	}
	return out
}

// runHybrid runs the download once, with ours or the kernel's MPTCP between router (A) and
// concentrator (B), the DSL lost for 10 s when loss is set.
func runHybrid(t *testing.T, im impl, loss bool) scenarioResult {
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	res := scenarioResult{p: pairing{im, im}}
	cfg := netns.Config{Paths: 2, IPv6: true} // the LAN host has IPv6 too
	if im == oursImpl {
		cfg.A, cfg.B = ourSide, ourSide
	}
	topo := netns.New(t, cfg)
	for _, ns := range []*netns.Namespace{topo.A, topo.B} {
		ns.SetCongestion("cubic")
	}
	lan := newLANHost(t, topo)
	p0, p1 := topo.Path(0), topo.Path(1)
	server, err := topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	target := server.Addr().String() // what the host connects to
	if im == oursImpl {
		_, conv := startMptcpd(t, ctx, topo.B, "--ctl", ctlSocket(t), "--convert", p0.B.HostPort(netns.IPv4, 0),
			"--convert-allow", p0.B.Addr(netns.IPv4).String()+"/32")
		d, _ := startMptcpd(t, ctx, topo.A, "--ctl", ctlSocket(t), "--transparent-dev", "lan0",
			"--convert-via", conv[0], "--endpoint", p1.A.Addr(netns.IPv4).String()+",subflow")
		if err := d.WaitOutput(ctx, "transparent-dev: intercepting"); err != nil {
			t.Fatal(err)
		}
	} else {
		topo.A.SetMPTCPLimits(2, 0)
		topo.B.SetMPTCPLimits(2, 0)
		topo.A.AddMPTCPEndpoint(p1.A.Addr(netns.IPv4), p1.A.Name, "subflow")
		far, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
		if err != nil {
			t.Fatal(err)
		}
		relay(t, ctx, far, func(ctx context.Context) (net.Conn, error) { return topo.B.DialTCP(ctx, server.Addr().String()) })
		near, err := topo.A.ListenTCP("192.168.77.1:0")
		if err != nil {
			t.Fatal(err)
		}
		relay(t, ctx, near, func(ctx context.Context) (net.Conn, error) { return topo.A.DialMPTCP(ctx, far.Addr().String()) })
		target = near.Addr().String()
	}
	var pes []*netns.PathEmu
	for i, c := range hybridPaths {
		pes = append(pes, topo.Path(i).Emulate(c))
	}
	sample := pathSampler(pes, &res)

	served := netns.ServeOne(ctx, server, hybridDown, 2)
	start := time.Now()
	if loss {
		go func() {
			if err := pes[0].Play(ctx, start, hybridLoss...); err != nil && ctx.Err() == nil {
				t.Errorf("events: %v", err)
			}
		}()
	}
	c, err := lan.dial(ctx, target)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Close()
	g := &gapConn{Conn: c}
	done := make(chan netns.Result, 1)
	go func() {
		tr, err := netns.Exchange(ctx, g, hybridUp, 1)
		done <- netns.Result{Transfer: tr, Err: err}
	}()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var r netns.Result
	for wait := true; wait; {
		select {
		case r = <-done:
			wait = false
		case now := <-tick.C:
			sample(now.Sub(start))
		}
	}
	res.downTime = time.Since(start)
	sample(res.downTime)
	res.downGap = g.maxGap
	if r.Err != nil {
		res.err = r.Err
		return res
	}
	s := <-served
	if s.Err != nil {
		res.err = s.Err
		return res
	}
	checkDigests(t, r.Transfer, s.Transfer, hybridUp, hybridDown)
	for i, sh := range downShares(res) {
		if !loss && sh < 0.1 {
			t.Errorf("%s carried %.0f %% of the download: want both links used", hybridNames[i], 100*sh)
		}
	}
	return res
}

// relay accepts connections on ln for the test's lifetime and relays each to a connection
// dial makes, both ways, passing on each direction's end (a half-close).
func relay(t testing.TB, ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer a.Close()
				z, err := dial(ctx)
				if err != nil {
					t.Errorf("relay: %v", err)
					return
				}
				defer z.Close()
				var wg sync.WaitGroup
				pipe := func(dst, src net.Conn) {
					defer wg.Done()
					io.Copy(dst, src)
					if cw, ok := dst.(interface{ CloseWrite() error }); ok {
						cw.CloseWrite()
					}
				}
				wg.Add(2)
				go pipe(z, a)
				go pipe(a, z)
				wg.Wait()
			}()
		}
	}()
}
