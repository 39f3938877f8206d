package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// Fairness of the congestion controls (RFC 6356's goals; the E0–E5). A sends to B over
// three paths; paths 0 and 1 carry the multipath connection (or path 0 alone), path 2 one TCP
// Reno flow. The A-to-B direction of each path crosses a bottleneck of the emulator
// (emu.Bottleneck, a FIFO of 25 ms at its rate), then a delay with 2 ms of jitter; paths in the
// same group share one bottleneck. Each experiment runs its flows for fairnessWarmup, then
// measures what each sink received (and what each of paths 0 and 1 carried) over
// fairnessWindow; it runs three times at once, on separate topologies, and reports the median.
// The competing flow runs Reno (this host's default is BBR), and so do the kernel's MPTCP
// sockets of the uncoupled reference; the kernel's coupled runs select our controls for its
// sockets (internal/kcc) on the client's MPTCP socket.
//
// Why 25 ms and jitter. The emulator's bottleneck is exact: it serves packets at exactly its
// rate and every path's delay is constant, so ACK-clocked flows arrive at the full queue in a
// fixed phase, and the same flows keep finding it full (the phase effects of drop-tail gateways,
// Floyd and Jacobson 1992). Without jitter, two uncoupled Reno subflows took 1.05–1.18× one Reno
// flow (kernel and ours) where they should take about 2×. Jitter after the bottleneck breaks the
// phase, as the variable delays of a real network do. With a FIFO of 100 ms (2.5 round trips),
// each Reno sawtooth lasts seconds, a 40 s window holds a handful of losses, and which flow each
// one hits decides the shares: runs of one case spread from 0.4× to 1.9×. With 25 ms (0.6 of the
// round trip's bandwidth-delay product) the cycles are short and the runs agree.

const (
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

// fairnessQueue is how long the bottleneck's FIFO holds at its rate: 25 ms, or
// MPTCPGO_FAIRNESS_QUEUE for a look at another size.
func fairnessQueue() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MPTCPGO_FAIRNESS_QUEUE")); err == nil && d > 0 {
		return d
	}
	return 25 * time.Millisecond
}

// fairnessJitter is the jitter each path's A-to-B direction adds after the bottleneck: 2 ms, or
// MPTCPGO_FAIRNESS_JITTER ("0s" for none).
func fairnessJitter() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MPTCPGO_FAIRNESS_JITTER")); err == nil && d >= 0 {
		return d
	}
	return 2 * time.Millisecond
}

// fairPath is one path: the bottleneck group its A-to-B direction crosses, and its one-way delay
// (both directions).
type fairPath struct {
	group int
	delay time.Duration
}

// fairnessCase is one experiment: the multipath flow (mp: "ours" or "kernel", or "" for a
// second Reno TCP flow on path 0), its congestion control and number of subflows, whether a Reno
// flow runs on path 2 (and stops, for E5), the bottlenecks and paths, and the goal.
type fairnessCase struct {
	name     string
	mp       string
	cc       string
	subflows int
	tcp      bool
	stopTCP  bool      // E5: the TCP flow stops half-way through the window
	rates    []float64 // bottleneck rate of each group, bits/s
	paths    [3]fairPath
	goal     func(r fairnessResult) (string, bool)
	kernelCC string // the name cc is registered under for the kernel's sockets (internal/kcc)
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

// fairnessResult is one run, or the median of several: goodputs in bits/s over the window, what
// paths 0 and 1 carried (IP bytes, bits/s), and for E5 how long the multipath flow took after
// the TCP flow stopped to reach 90 % of the bottleneck in a one-second sample (-1: never).
type fairnessResult struct {
	mp, tcp float64
	sub     [2]float64
	reach   time.Duration
	err     error
}

func (r fairnessResult) ratio() float64 { return r.mp / max(r.tcp, 1) }

func mbps(v float64) string { return fmt.Sprintf("%.2f", v/1e6) }

// Path layouts.
var (
	shared20    = []float64{20e6}
	sharedPaths = [3]fairPath{{0, 20 * time.Millisecond}, {0, 20 * time.Millisecond}, {0, 20 * time.Millisecond}}
	disjoint10  = []float64{10e6, 10e6, 10e6}
	disjointEq  = [3]fairPath{{0, 20 * time.Millisecond}, {1, 20 * time.Millisecond}, {2, 20 * time.Millisecond}}
	disjointRTT = [3]fairPath{{0, 5 * time.Millisecond}, {1, 30 * time.Millisecond}, {2, 20 * time.Millisecond}}
	// E4: path 0 shares its bottleneck with the TCP flow's path 2; path 1 has one of its own.
	balance10    = []float64{10e6, 10e6}
	balancePaths = [3]fairPath{{0, 20 * time.Millisecond}, {1, 20 * time.Millisecond}, {0, 20 * time.Millisecond}}
)

func ratioGoal(lo, hi, minUse float64) func(r fairnessResult) (string, bool) {
	return func(r fairnessResult) (string, bool) {
		g := fmt.Sprintf("ratio %.2f–%.2f", lo, hi)
		if hi >= 100 {
			g = fmt.Sprintf("ratio ≥ %.2f", lo)
		}
		use := (r.mp + r.tcp) / 20e6
		if minUse > 0 {
			g += fmt.Sprintf(", link use ≥ %.0f %%", minUse*100)
		}
		return g, r.ratio() >= lo && r.ratio() <= hi && use >= minUse
	}
}

func fairnessCases() []fairnessCase {
	cs := []fairnessCase{
		{name: "E0", cc: "reno", subflows: 1, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(0.8, 1.25, 0)},
		{name: "E1", mp: "kernel", cc: "reno", subflows: 2, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(1.6, 100, 0)},
		{name: "E1", mp: "ours", cc: "reno", subflows: 2, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(1.6, 100, 0)},
	}
	for _, cc := range []string{"lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E1", mp: "ours", cc: cc, subflows: 2, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(0.8, 1.25, 0.9)})
	}
	// The kernel's MPTCP with our coupled controls for its sockets (internal/kcc).
	for _, cc := range []string{"lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E1", mp: "kernel", cc: cc, subflows: 2, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(0.8, 1.25, 0.9)})
	}
	for _, cc := range []string{"lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E2", mp: "ours", cc: cc, subflows: 1, tcp: true, rates: shared20, paths: sharedPaths, goal: ratioGoal(0.8, 1.25, 0)})
	}
	for _, cc := range []string{"reno", "lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E3", mp: "ours", cc: cc, subflows: 2, rates: disjoint10, paths: disjointEq,
			goal: func(r fairnessResult) (string, bool) { return "≥ 17 Mbit/s", r.mp >= 17e6 }})
		cs = append(cs, fairnessCase{name: "E3 (10/60 ms)", mp: "ours", cc: cc, subflows: 2, rates: disjoint10, paths: disjointRTT,
			goal: func(r fairnessResult) (string, bool) {
				return "each path ≥ 70 % of its link", r.sub[0] >= 7e6 && r.sub[1] >= 7e6
			}})
	}
	for _, cc := range []string{"reno", "lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E4", mp: "ours", cc: cc, subflows: 2, tcp: true, rates: balance10, paths: balancePaths,
			goal: func(r fairnessResult) (string, bool) {
				// The comparison with the uncoupled run is made in TestScenarioFairness.
				if cc == "reno" {
					return "(the uncoupled reference)", true
				}
				return "TCP ≥ 6 Mbit/s, MPTCP ≥ 9 Mbit/s", r.tcp >= 6e6 && r.mp >= 9e6
			}})
	}
	for _, cc := range []string{"lia", "olia", "balia"} {
		cs = append(cs, fairnessCase{name: "E5", mp: "ours", cc: cc, subflows: 2, tcp: true, stopTCP: true, rates: shared20, paths: sharedPaths,
			goal: func(r fairnessResult) (string, bool) {
				return "90 % of the link within 10 s of the TCP flow's end", r.reach >= 0 && r.reach <= 10*time.Second
			}})
	}
	return cs
}

func TestScenarioFairness(t *testing.T) {
	requireScenarios(t)
	window := fairnessWindow()
	var b strings.Builder
	b.WriteString("## Fairness of the congestion controls\n\n")
	b.WriteString("A sends to B over three paths: the multipath connection on paths 0 and 1 (or path 0 alone), one TCP Reno flow on path 2, both as fast as they can. ")
	fmt.Fprintf(&b, "Each path's A-to-B direction crosses a bottleneck of the emulator (a FIFO of %v at its rate), then its delay with %v of jitter; paths of one group share a bottleneck. ", fairnessQueue(), fairnessJitter())
	fmt.Fprintf(&b, "Goodput is what the sinks received over %v after %v of warm-up; paths 0/1 is what each carried (IP bytes); median of %d runs. ", window, fairnessWarmup, fairnessRuns)
	b.WriteString("E0–E2: one 20 Mbit/s bottleneck shared by all three paths, 20 ms each way (E0: a second Reno flow on path 0 instead of the multipath one; E2: one subflow). ")
	b.WriteString("E3: two 10 Mbit/s paths alone, 20 ms each way, or 5 and 30 ms. ")
	b.WriteString("E4: path 0 shares a 10 Mbit/s bottleneck with the TCP flow, path 1 has 10 Mbit/s of its own. ")
	b.WriteString("E5: as E1, the TCP flow stops half-way; time until a one-second sample of the multipath flow reaches 90 % of the link.\n\n")
	b.WriteString("| experiment | multipath flow | goodput (Mbit/s) | TCP Reno (Mbit/s) | ratio | paths 0 / 1 (Mbit/s) | goal | holds | runs (goodput / TCP) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	uncoupledTCP := map[string]float64{} // E4: the TCP flow's share beside uncoupled Reno subflows
	kernelCC := loadKernelCC(t, fmt.Sprintf("_s%d", os.Getpid()))
	for _, fc := range fairnessCases() {
		if fc.mp == "kernel" && fc.cc != "reno" {
			fc.kernelCC = kernelCCName(t, kernelCC, fc.cc)
		}
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
			var ok []fairnessResult
			var runs []string
			for _, r := range res {
				if r.err != nil {
					t.Errorf("run: %v", r.err)
					continue
				}
				ok = append(ok, r)
				runs = append(runs, mbps(r.mp)+" / "+mbps(r.tcp))
			}
			if len(ok) == 0 {
				fmt.Fprintf(&b, "| %s | %s | failed | | | | | | |\n", fc.name, fc.label())
				return
			}
			m := fairnessMedian(ok)
			goal, holds := fc.goal(m)
			if fc.name == "E4" {
				if fc.cc == "reno" {
					uncoupledTCP["E4"] = m.tcp
				} else if u := uncoupledTCP["E4"]; u > 0 {
					goal += ", TCP ≥ 1.2× its share beside uncoupled Reno"
					holds = holds && m.tcp >= 1.2*u
				}
			}
			tcp, ratio, reach := "", "", ""
			if fc.tcp {
				tcp, ratio = mbps(m.tcp), fmt.Sprintf("%.2f", m.ratio())
			}
			if fc.stopTCP {
				reach = "never"
				if m.reach >= 0 {
					reach = fmt.Sprintf("%.1f s", m.reach.Seconds())
				}
				ratio += " (reached 90 %: " + reach + ")"
			}
			check := "yes"
			if !holds {
				check = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s |\n", fc.name, fc.label(), mbps(m.mp), tcp, ratio,
				mbps(m.sub[0]), mbps(m.sub[1]), goal, check, strings.Join(runs, ", "))
			t.Logf("%s %s: %s vs %s Mbit/s, ratio %s, paths %s / %s; runs %s; goal %s: %s", fc.name, fc.label(), mbps(m.mp), tcp, ratio,
				mbps(m.sub[0]), mbps(m.sub[1]), strings.Join(runs, ", "), goal, check)
			if !holds {
				t.Errorf("%s %s: goal %s does not hold", fc.name, fc.label(), goal)
			}
		})
	}
	writeScenarioSection(t, "fairness", b.String())
}

// fairnessMedian takes the median of each figure of the runs.
func fairnessMedian(rs []fairnessResult) fairnessResult {
	med := func(f func(fairnessResult) float64) float64 { return medianOf(rs, f) }
	return fairnessResult{
		mp:  med(func(r fairnessResult) float64 { return r.mp }),
		tcp: med(func(r fairnessResult) float64 { return r.tcp }),
		sub: [2]float64{med(func(r fairnessResult) float64 { return r.sub[0] }), med(func(r fairnessResult) float64 { return r.sub[1] })},
		reach: time.Duration(med(func(r fairnessResult) float64 {
			if r.reach < 0 {
				return 1e18 // never sorts last
			}
			return float64(r.reach)
		})),
	}
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
	cfg := netns.Config{Paths: 3, A: ourSide}
	if fc.mp != "ours" {
		// ourSide turns the kernel's MPTCP off: a kernel MPTCP socket would silently be TCP.
		cfg.A = netns.NamespaceConfig{}
	}
	topo := netns.New(t, cfg)
	bns := make([]*emu.Bottleneck, len(fc.rates))
	for i, rate := range fc.rates {
		var err error
		if bns[i], err = emu.NewBottleneck(uint64(rate), int(rate/8*fairnessQueue().Seconds())); err != nil {
			return fairnessResult{err: err}
		}
	}
	var links [3]*emu.Link
	for i, fp := range fc.paths {
		p := topo.Path(i)
		links[i] = p.A.Emulate(emu.Config{Delay: fp.delay, Jitter: fairnessJitter(), Shared: bns[fp.group]})
		p.B.Emulate(emu.Config{Delay: fp.delay})
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
	var err error
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
		return netns.SetCongestionOn(c, "reno")
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
		ctl := reno
		if fc.kernelCC != "" {
			ctl = func(network, address string, c syscall.RawConn) error {
				return netns.SetCongestionOn(c, fc.kernelCC)
			}
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: p0.A.Addr(netns.IPv4).AsSlice()}, Control: ctl}
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
	conns := []net.Conn{mpConn}
	var tcpConn net.Conn
	if fc.tcp {
		tcpLn, err := topo.B.ListenTCP(p2.B.HostPort(netns.IPv4, 0))
		if err != nil {
			return fairnessResult{err: err}
		}
		sink(tcpLn, &tcpBytes)
		td := &net.Dialer{LocalAddr: &net.TCPAddr{IP: p2.A.Addr(netns.IPv4).AsSlice()}, Control: reno}
		td.SetMultipathTCP(false)
		if tcpConn, err = topo.A.Dial(ctx, td, "tcp", tcpLn.Addr().String()); err != nil {
			return fairnessResult{err: err}
		}
		defer tcpConn.Close()
		conns = append(conns, tcpConn)
	}
	for _, c := range conns {
		go func() {
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if os.Getenv("MPTCPGO_FAIRNESS_TRACE") != "" {
		go traceFairness(ctx, t, fc, mpConn, links)
	}
	if err := wait(fairnessWarmup); err != nil {
		return fairnessResult{err: err}
	}
	linkBytes := func(i int) uint64 { return links[i].Stats().Bytes }
	m0, t0, l0, l1 := mpBytes.Load(), tcpBytes.Load(), linkBytes(0), linkBytes(1)
	start := time.Now()
	res.reach = -1
	if fc.stopTCP {
		// Half the window with the TCP flow, then one-second samples of the multipath flow
		// alone; the goodputs cover the first half.
		if err := wait(window / 2); err != nil {
			return fairnessResult{err: err}
		}
		el := time.Since(start).Seconds()
		res.mp, res.tcp = float64(mpBytes.Load()-m0)*8/el, float64(tcpBytes.Load()-t0)*8/el
		tcpConn.Close()
		stop := time.Now()
		prev, at := mpBytes.Load(), stop
		for time.Since(stop) < window/2 {
			if err := wait(time.Second); err != nil {
				return fairnessResult{err: err}
			}
			now, n := time.Now(), mpBytes.Load()
			if float64(n-prev)*8/now.Sub(at).Seconds() >= 0.9*fc.rates[0] {
				res.reach = now.Sub(stop)
				break
			}
			prev, at = n, now
		}
	} else {
		if err := wait(window); err != nil {
			return fairnessResult{err: err}
		}
		el := time.Since(start).Seconds()
		res.mp, res.tcp = float64(mpBytes.Load()-m0)*8/el, float64(tcpBytes.Load()-t0)*8/el
	}
	el := time.Since(start).Seconds()
	res.sub = [2]float64{float64(linkBytes(0)-l0) * 8 / el, float64(linkBytes(1)-l1) * 8 / el}
	switch fc.mp {
	case "ours":
		if in, ok := mpConn.(*control.Conn).Info(); ok && len(in.Subflows) != fc.subflows {
			res.err = fmt.Errorf("%d subflows, want %d", len(in.Subflows), fc.subflows)
		}
	case "kernel":
		if m, err := netns.IsMPTCP(mpConn); err != nil || !m {
			res.err = fmt.Errorf("the kernel's connection is not MPTCP (%v)", err)
		} else if n, err := kernelSubflows(mpConn); err != nil || n != fc.subflows {
			res.err = fmt.Errorf("the kernel's connection has %d subflows (%v), want %d", n, err, fc.subflows)
		} else if fc.subflows > 1 && fc.kernelCC == "" && res.sub[1] < 1e6 {
			// Uncoupled, each subflow takes its own share; coupled, OLIA may leave one nearly
			// idle on equal paths, as it is meant to.
			res.err = fmt.Errorf("the kernel's second subflow carried %.2f Mbit/s", res.sub[1]/1e6)
		}
	}
	return res
}

// traceFairness logs, every second, what each of our subflows published for the coupled
// control (window, RTT, loss distance): MPTCPGO_FAIRNESS_TRACE=1, for looking into a case.
func traceFairness(ctx context.Context, t *testing.T, fc fairnessCase, c net.Conn, links [3]*emu.Link) {
	cc, ok := c.(*control.Conn)
	if !ok {
		return
	}
	var prev [2]uint64
	var waits uint64
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		in, ok := cc.Info()
		if !ok {
			return
		}
		var b strings.Builder
		for i := range prev {
			n := links[i].Stats().Bytes
			fmt.Fprintf(&b, " path%d %.1f", i, float64(n-prev[i])*8/1e6)
			prev[i] = n
		}
		fmt.Fprintf(&b, " Mbit/s; in flight %d KiB, window %d KiB, window waits +%d", (in.SndNxt-in.SndUna)>>10,
			(in.PeerWndEnd-in.SndUna)>>10, in.WindowWaits-waits)
		waits = in.WindowWaits
		for _, sf := range in.Subflows {
			fmt.Fprintf(&b, " | %s cwnd %d (cc %d) srtt %v loss-int %d KiB retrans %d", sf.Local, sf.Cwnd, sf.CCWindow,
				sf.CCSRTT.Round(100*time.Microsecond), sf.CCLossInt>>10, sf.Retrans)
		}
		t.Logf("%s %s%s", fc.name, fc.cc, b.String())
	}
}
