package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Fairness at a shared bottleneck (RFC 6356's goals, issue E0–E2): A sends to B through three
// paths whose A-to-B directions all cross one 20 Mbit/s bottleneck (emu.Bottleneck, a FIFO of
// 100 ms), 20 ms each way (40 ms RTT before queueing). Path 2 carries one TCP Reno flow; the
// multipath connection uses paths 0 and 1 (or path 0 alone). Each experiment runs its flows for
// fairnessWarmup, then measures what each sink received over fairnessWindow; it runs three
// times at once (on separate topologies) and reports the median. The competing flow runs Reno
// (this host's default is BBR), and so do the kernel's MPTCP sockets of the uncoupled reference.
//
// Goals: E0, Reno against Reno, 0.8–1.25 (else the rig is not fair and nothing else counts);
// E1, two subflows against one Reno flow: uncoupled ≥ 1.6× the TCP flow, coupled 0.8–1.25× with
// the link ≥ 90 % used; E2, one coupled subflow against Reno: 0.8–1.25.

const (
	fairnessRate   = 20e6
	fairnessDelay  = 20 * time.Millisecond
	fairnessWarmup = 10 * time.Second
	fairnessRuns   = 3
)

// fairnessWindow is the measured window: 40 s, or MPTCPGO_FAIRNESS_WINDOW for a quicker look.
func fairnessWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MPTCPGO_FAIRNESS_WINDOW")); err == nil && d > 0 {
		return d
	}
	return 40 * time.Second
}

// fairnessCase is one experiment: the multipath flow (mp: "ours" or "kernel", or "" for a
// second Reno TCP flow on path 0), its congestion control and number of subflows.
type fairnessCase struct {
	name     string
	mp       string
	cc       string
	subflows int
	lo, hi   float64 // the goal for MPTCP/TCP goodput
	minUse   float64 // the least share of the link both flows must use together
}

func (fc fairnessCase) label() string {
	switch fc.mp {
	case "":
		return "TCP Reno"
	case "kernel":
		return fmt.Sprintf("kernel MPTCP, %s, %d subflow(s)", fc.cc, fc.subflows)
	}
	return fmt.Sprintf("ours, %s, %d subflow(s)", fc.cc, fc.subflows)
}

var fairnessCases = []fairnessCase{
	{name: "E0", cc: "reno", subflows: 1, lo: 0.8, hi: 1.25},
	{name: "E1", mp: "kernel", cc: "reno", subflows: 2, lo: 1.6, hi: 100},
	{name: "E1", mp: "ours", cc: "reno", subflows: 2, lo: 1.6, hi: 100},
	{name: "E1", mp: "ours", cc: "lia", subflows: 2, lo: 0.8, hi: 1.25, minUse: 0.9},
	{name: "E1", mp: "ours", cc: "olia", subflows: 2, lo: 0.8, hi: 1.25, minUse: 0.9},
	{name: "E1", mp: "ours", cc: "balia", subflows: 2, lo: 0.8, hi: 1.25, minUse: 0.9},
	{name: "E2", mp: "ours", cc: "lia", subflows: 1, lo: 0.8, hi: 1.25},
	{name: "E2", mp: "ours", cc: "olia", subflows: 1, lo: 0.8, hi: 1.25},
	{name: "E2", mp: "ours", cc: "balia", subflows: 1, lo: 0.8, hi: 1.25},
}

// fairnessResult is one run: the goodputs in bits/s over the window.
type fairnessResult struct {
	mp, tcp float64
	err     error
}

func TestScenarioFairness(t *testing.T) {
	requireScenarios(t)
	window := fairnessWindow()
	var b strings.Builder
	b.WriteString("## Fairness at a shared bottleneck\n\n")
	fmt.Fprintf(&b, "Three paths from A to B cross one %s Mbit/s bottleneck (a shared FIFO of 100 ms in the emulator), %v each way. ",
		mbit(fairnessRate), fairnessDelay)
	b.WriteString("Path 2 carries one TCP Reno flow; the multipath connection uses paths 0 and 1 (or path 0 alone); both send as fast as they can. ")
	fmt.Fprintf(&b, "Goodput is what the sinks received over %v after %v of warm-up; median of %d runs. ", window, fairnessWarmup, fairnessRuns)
	b.WriteString("Ratio is the multipath flow's goodput over the TCP flow's (E0: a second Reno flow on path 0 instead); link use is both together over the bottleneck's rate.\n\n")
	b.WriteString("| experiment | multipath flow | goodput (Mbit/s) | TCP Reno (Mbit/s) | ratio | link use | goal | runs (ratio) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, fc := range fairnessCases {
		name := fc.name + "/" + strings.ReplaceAll(fc.label(), " ", "_")
		t.Run(name, func(t *testing.T) {
			if fc.mp == "ours" {
				// Our path manager is the process's: every run's path 1 has the same address.
				m := ourPM(t, pm.Limits{Subflows: 8, AddAddrAccepted: 8})
				if fc.subflows > 1 {
					addEndpoint(t, m, pmapi.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), Flags: pmapi.FlagSubflow})
				}
			}
			res := make([]fairnessResult, fairnessRuns)
			var wg sync.WaitGroup
			for i := range res {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res[i] = runFairness(t, fc, window)
				}()
			}
			wg.Wait()
			var ratios []float64
			var mps, tcps []float64
			for _, r := range res {
				if r.err != nil {
					t.Errorf("run: %v", r.err)
					continue
				}
				ratios = append(ratios, r.mp/max(r.tcp, 1))
				mps = append(mps, r.mp)
				tcps = append(tcps, r.tcp)
			}
			if len(ratios) == 0 {
				fmt.Fprintf(&b, "| %s | %s | failed | | | | | |\n", fc.name, fc.label())
				return
			}
			ratio, mp, tcp := medianF(ratios), medianF(mps), medianF(tcps)
			use := (mp + tcp) / fairnessRate
			goal := fmt.Sprintf("%.2f–%.2f", fc.lo, fc.hi)
			if fc.hi >= 100 {
				goal = fmt.Sprintf("≥ %.2f", fc.lo)
			}
			if fc.minUse > 0 {
				goal += fmt.Sprintf(", use ≥ %.0f %%", fc.minUse*100)
			}
			var runs []string
			for _, r := range ratios {
				runs = append(runs, fmt.Sprintf("%.2f", r))
			}
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.2f | %.0f %% | %s | %s |\n", fc.name, fc.label(), mp/1e6, tcp/1e6, ratio, use*100, goal, strings.Join(runs, ", "))
			t.Logf("%s: %.2f vs %.2f Mbit/s, ratio %.2f (runs %s), link use %.0f %%", fc.label(), mp/1e6, tcp/1e6, ratio, strings.Join(runs, ", "), use*100)
			if ratio < fc.lo || ratio > fc.hi || use < fc.minUse {
				t.Errorf("%s: ratio %.2f, link use %.0f %%: goal %s", fc.label(), ratio, use*100, goal)
			}
		})
	}
	writeScenarioSection(t, "fairness", b.String())
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// runFairness runs one experiment on a topology of its own.
func runFairness(t *testing.T, fc fairnessCase, window time.Duration) (res fairnessResult) {
	defer func() {
		if r := recover(); r != nil {
			res.err = fmt.Errorf("%v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), fairnessWarmup+window+60*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 3, A: ourSide})
	bn, err := emu.NewBottleneck(fairnessRate, 0)
	if err != nil {
		return fairnessResult{err: err}
	}
	for i := range 3 {
		p := topo.Path(i)
		p.A.Emulate(emu.Config{Delay: fairnessDelay, Shared: bn})
		p.B.Emulate(emu.Config{Delay: fairnessDelay})
	}
	p0, p1, p2 := topo.Path(0), topo.Path(1), topo.Path(2)
	var mpBytes, tcpBytes atomic.Int64
	sink := func(ln net.Listener, n *atomic.Int64) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					buf := make([]byte, 256<<10)
					for {
						k, err := c.Read(buf)
						n.Add(int64(k))
						if err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	tcpLn, err := topo.B.ListenTCP(p2.B.HostPort(netns.IPv4, 0))
	if err != nil {
		return fairnessResult{err: err}
	}
	sink(tcpLn, &tcpBytes)
	var mpLn net.Listener
	if fc.mp == "" {
		mpLn, err = topo.B.ListenTCP(p0.B.HostPort(netns.IPv4, 0))
	} else {
		topo.B.SetMPTCPLimits(2, 0)
		mpLn, err = topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	}
	if err != nil {
		return fairnessResult{err: err}
	}
	sink(mpLn, &mpBytes)

	reno := func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, "reno")
		}); err != nil {
			return err
		}
		return serr
	}
	var mpConn net.Conn
	switch fc.mp {
	case "":
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: p0.A.Addr(netns.IPv4).AsSlice()}, Control: reno}
		d.SetMultipathTCP(false)
		mpConn, err = topo.A.Dial(ctx, d, "tcp", mpLn.Addr().String())
	case "kernel":
		if fc.subflows > 1 {
			topo.A.SetMPTCPLimits(2, 0)
			topo.A.AddMPTCPEndpoint(p1.A.Addr(netns.IPv4), p1.A.Name, "subflow")
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: p0.A.Addr(netns.IPv4).AsSlice()}, Control: reno}
		d.SetMultipathTCP(true)
		mpConn, err = topo.A.Dial(ctx, d, "tcp", mpLn.Addr().String())
	default:
		if a := p1.A.Addr(netns.IPv4).String(); a != "10.1.0.1" {
			return fairnessResult{err: fmt.Errorf("path 1's address is %s, not the endpoint's", a)}
		}
		err = topo.A.Do(func() error {
			var err error
			d := control.Dialer{Stack: ourStack(t), CongestionControl: fc.cc,
				LocalAddr: &net.TCPAddr{IP: p0.A.Addr(netns.IPv4).AsSlice()}}
			mpConn, err = d.DialContext(ctx, "tcp", mpLn.Addr().String())
			return err
		})
	}
	if err != nil {
		return fairnessResult{err: err}
	}
	defer mpConn.Close()
	td := &net.Dialer{LocalAddr: &net.TCPAddr{IP: p2.A.Addr(netns.IPv4).AsSlice()}, Control: reno}
	td.SetMultipathTCP(false)
	tcpConn, err := topo.A.Dial(ctx, td, "tcp", tcpLn.Addr().String())
	if err != nil {
		return fairnessResult{err: err}
	}
	defer tcpConn.Close()
	for _, c := range []net.Conn{mpConn, tcpConn} {
		go func() {
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	select {
	case <-time.After(fairnessWarmup):
	case <-ctx.Done():
		return fairnessResult{err: ctx.Err()}
	}
	m0, t0 := mpBytes.Load(), tcpBytes.Load()
	start := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return fairnessResult{err: ctx.Err()}
	}
	el := time.Since(start).Seconds()
	res = fairnessResult{mp: float64(mpBytes.Load()-m0) * 8 / el, tcp: float64(tcpBytes.Load()-t0) * 8 / el}
	if fc.mp == "ours" {
		if in, ok := mpConn.(*control.Conn).Info(); ok {
			if len(in.Subflows) != fc.subflows {
				res.err = fmt.Errorf("%d subflows, want %d", len(in.Subflows), fc.subflows)
			}
		}
	}
	return res
}
