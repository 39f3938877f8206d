package netns_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

// The Linux kernel's own multipath acceptance cases (tools/testing/selftests/net/mptcp/
// simult_flows.sh): two paths shaped with netem rate and delay in both directions, the client
// opens the second subflow (a subflow endpoint), 16 MiB must cross within a budget.
//
// The script sends 16 MiB one way and 80 KiB the other, then the reverse; here 16 MiB go each
// way at once (the paths are full duplex, so each direction has the same budget). Its budget,
// in milliseconds with integer arithmetic:
//
//	time = 1000 * size * 8 * 10 / ((rate1 + rate2) * 1000 * 1000 * 9)   # size at 90 % of the summed rate
//	time = time + 400 + slack                                           # mptcp_connect's two 200 ms sleeps; slack = 50
//
// 7906 ms for 16 MiB over 10 + 10 or 15 + 5 Mbit/s. Here the clock starts once both subflows
// are up, so the 400 ms for the joins are slack too; it stops at the last byte received.

type simultCase struct {
	rate1, rate2   uint64 // Mbit/s
	delay1, delay2 int    // ms, one way
}

func (c simultCase) String() string {
	return fmt.Sprintf("%d/%d Mbit/s, %d/%d ms", c.rate1, c.rate2, c.delay1, c.delay2)
}

// budget is simult_flows.sh's time limit for size bytes.
func (c simultCase) budget(size int64) time.Duration {
	ms := 1000*size*8*10/(int64(c.rate1+c.rate2)*1000*1000*9) + 400 + 50
	return time.Duration(ms) * time.Millisecond
}

var simultCases = []simultCase{
	{10, 10, 0, 0}, {10, 10, 1, 25}, {10, 10, 25, 1},
	{15, 5, 0, 0}, {15, 5, 1, 25}, {15, 5, 25, 1},
}

const simultSize = 16 << 20

// scenario is the case's transfer: two paths, 16 MiB each way at once.
func (c simultCase) scenario() scenario {
	return scenario{
		paths: []emu.Config{
			{Rate: c.rate1 * 1e6, Delay: time.Duration(c.delay1) * time.Millisecond},
			{Rate: c.rate2 * 1e6, Delay: time.Duration(c.delay2) * time.Millisecond},
		},
		flags:   []string{"subflow"},
		up:      simultSize,
		down:    simultSize,
		timeout: 60 * time.Second,
	}
}

// simultVariant is one run of a case: a pairing, and our scheduler and congestion control
// where ours sends.
type simultVariant struct {
	p     pairing
	sched string
	cc    string
}

// name is the variant's subtest name.
func (v simultVariant) name() string {
	n := v.p.String()
	for _, x := range []string{v.sched, v.cc} {
		if x != "" {
			n += "/" + x
		}
	}
	return n
}

// ourSenders are the pairings where ours opens the connection: ours → kernel (ours sends the
// upload) and ours ↔ ours (mptcpd, the server, runs the same scheduler and congestion control).
var ourSenders = []pairing{{oursImpl, kernelImpl}, {oursImpl, oursImpl}}

// simultVariants are every pairing with the defaults (scheduler `default`, CUBIC), then where
// ours sends the schedulers for paths of unequal delay (BLEST and ECF), then the coupled
// congestion controls (LIA, OLIA, BALIA) with the default scheduler.
func simultVariants() []simultVariant {
	var vs []simultVariant
	for _, p := range scenarioPairings {
		vs = append(vs, simultVariant{p: p})
	}
	for _, sched := range []string{"blest", "ecf"} {
		for _, p := range ourSenders {
			vs = append(vs, simultVariant{p: p, sched: sched})
		}
	}
	for _, cc := range []string{"lia", "olia", "balia"} {
		for _, p := range ourSenders {
			vs = append(vs, simultVariant{p: p, cc: cc})
		}
	}
	return vs
}

func TestScenarioSimultFlows(t *testing.T) {
	requireScenarios(t)
	var rows []simultRow
	var plotted []scenarioResult
	for _, c := range simultCases {
		t.Run(strings.NewReplacer(" ", "", "/", "-", ",", "_").Replace(c.String()), func(t *testing.T) {
			for _, v := range simultVariants() {
				s := c.scenario()
				s.scheduler, s.cc = v.sched, v.cc
				p := v.p
				t.Run(v.name(), func(t *testing.T) {
					res := runScenario(t, p, s)
					rows = append(rows, simultRow{c, res, t.Failed()})
					if res.err == nil {
						t.Logf("%v %v: up %v (%.2f Mbit/s), down %v (%.2f Mbit/s), shares %.2f, budget %v",
							c, res.label(), res.upTime.Round(time.Millisecond), res.upMbps(s),
							res.downTime.Round(time.Millisecond), res.downMbps(s), res.shares(), c.budget(simultSize))
					}
					if c == (simultCase{15, 5, 25, 1}) && v.sched == "" && v.cc == "" {
						plotted = append(plotted, res)
					}
				})
			}
		})
	}

	var b strings.Builder
	b.WriteString("## simult_flows: two paths, 16 MiB each way at once\n\n")
	b.WriteString("The kernel selftest's cases (`simult_flows.sh`): rates and one-way delays of path 1 / path 2, in both directions; ")
	b.WriteString("the client opens the second subflow. Budget = the script's: 16 MiB at 90 % of the summed rate + 450 ms ")
	fmt.Fprintf(&b, "(%.3f s for every case). Time is from the start of the transfer (both subflows up) to the last byte received; ", simultCases[0].budget(simultSize).Seconds())
	b.WriteString("share is each path's part of all bytes both directions put on the paths. ")
	b.WriteString("A pairing followed by blest or ecf ran that scheduler of ours where ours sends: the upload with ours → kernel, both directions with ours ↔ ours (mptcpd serves with it); the others ran `default`. ")
	b.WriteString("A pairing followed by lia, olia or balia ran that congestion control on our subflows (the others CUBIC, the kernel's sockets CUBIC).\n\n")
	b.WriteString(simultSummary(rows))
	b.WriteString("| rates, delays | pairing | time up / down (s) | goodput up / down (Mbit/s) | of summed rate | share path 1 / 2 | within budget | checks |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.res.err != nil {
			fmt.Fprintf(&b, "| %v | %s | failed: %v | | | | no | |\n", r.c, r.res.label(), r.res.err)
			continue
		}
		s := scenario{up: simultSize, down: simultSize}
		sh := r.res.shares()
		worst := max(r.res.upTime, r.res.downTime)
		ok := "yes"
		if worst > r.c.budget(simultSize) {
			ok = fmt.Sprintf("**no** (+%.2f s)", (worst - r.c.budget(simultSize)).Seconds())
		}
		sum := float64(r.c.rate1 + r.c.rate2)
		fmt.Fprintf(&b, "| %v | %s | %.2f / %.2f | %.2f / %.2f | %.0f %% / %.0f %% | %.2f / %.2f | %s | %s |\n",
			r.c, r.res.label(), r.res.upTime.Seconds(), r.res.downTime.Seconds(),
			r.res.upMbps(s), r.res.downMbps(s), 100*r.res.upMbps(s)/sum, 100*r.res.downMbps(s)/sum,
			sh[0], sh[1], ok, r.res.checks(r.failed))
	}
	if len(plotted) > 0 {
		file := "scenario-simult-15-5-25-1.png"
		if err := plotScenario(file, "simult_flows 15/5 Mbit/s, 25/1 ms: download (server → client) per path",
			plotted, []string{"path 1 (15 Mbit/s, 25 ms)", "path 2 (5 Mbit/s, 1 ms)"}, false, nil); err != nil {
			t.Errorf("plot: %v", err)
		} else {
			fmt.Fprintf(&b, "\n![per-path goodput, 15/5 Mbit/s, 25/1 ms](%s)\n", file)
		}
	}
	writeScenarioSection(t, "1-simult", b.String())
}

// simultRow is one run of TestScenarioSimultFlows.
type simultRow struct {
	c      simultCase
	res    scenarioResult
	failed bool
}

// simultSummary is the table of each variant's mean over the cases: the share of the summed
// rate each direction reached, and how many cases were within budget.
func simultSummary(rows []simultRow) string {
	type acc struct {
		up, down  float64
		n, within int
		failed    int
	}
	var order []string
	m := map[string]*acc{}
	s := scenario{up: simultSize, down: simultSize}
	for _, r := range rows {
		l := r.res.label()
		a := m[l]
		if a == nil {
			a = &acc{}
			m[l] = a
			order = append(order, l)
		}
		if r.res.err != nil {
			a.failed++
			continue
		}
		sum := float64(r.c.rate1 + r.c.rate2)
		a.up += r.res.upMbps(s) / sum
		a.down += r.res.downMbps(s) / sum
		a.n++
		if max(r.res.upTime, r.res.downTime) <= r.c.budget(simultSize) {
			a.within++
		}
	}
	var b strings.Builder
	b.WriteString("Mean over the cases (one run each):\n\n")
	b.WriteString("| pairing | of summed rate, up / down | cases within budget |\n|---|---|---|\n")
	for _, l := range order {
		a := m[l]
		if a.n == 0 {
			fmt.Fprintf(&b, "| %s | failed | 0 of %d |\n", l, a.failed)
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f %% / %.0f %% | %d of %d |\n", l, 100*a.up/float64(a.n), 100*a.down/float64(a.n), a.within, a.n+a.failed)
	}
	b.WriteString("\n")
	return b.String()
}
