package netns_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

// Wi-Fi + LTE handover: Wi-Fi (path 1, the initial subflow) has a 20 ms round trip and
// 50 Mbit/s, LTE (path 2, a subflow the client opens) 60 ms and 20 Mbit/s, both directions.
// Wi-Fi is cut silently (every packet dropped, the interfaces stay up, as when a phone walks
// out of range) 5 s into a download and comes back at 15 s. With LTE as a backup subflow, it
// should carry data only while Wi-Fi is out; without, both carry data throughout.

var handoverPaths = []emu.Config{
	{Delay: 10 * time.Millisecond, Rate: 50e6},
	{Delay: 30 * time.Millisecond, Rate: 20e6},
}

var handoverEvents = []emu.Event{emu.Down(5 * time.Second), emu.Up(15 * time.Second)}

var handoverNames = []string{"Wi-Fi (50 Mbit/s, 20 ms RTT)", "LTE (20 Mbit/s, 60 ms RTT)"}

// handoverDown is the download: about 20 s for the kernel at both ends with LTE as a plain
// subflow.
const handoverDown, handoverUp = 64 << 20, 1 << 20

// handoverPairings: the kernel's MPTCP against ours at both ends (the suite must fit in 15
// minutes on two CPUs).
var handoverPairings = []pairing{{kernelImpl, kernelImpl}, {oursImpl, oursImpl}}

// handoverScenario is the download with LTE as a plain subflow or as a backup.
func handoverScenario(backup bool) scenario {
	flags := []string{"subflow"}
	if backup {
		flags = append(flags, "backup")
	}
	return scenario{
		paths: handoverPaths, flags: flags, up: handoverUp, down: handoverDown,
		events: handoverEvents, eventPath: 0, timeout: 90 * time.Second,
	}
}

// handoverVariants are both pairings with the defaults, then, with LTE a plain subflow, ours with
// the schedulers for paths of unequal delay (BLEST, ECF) and with the coupled congestion controls
// (LIA, OLIA, BALIA).
func handoverVariants(backup bool) []simultVariant {
	var vs []simultVariant
	for _, p := range handoverPairings {
		vs = append(vs, simultVariant{p: p})
	}
	if !backup {
		ours := pairing{oursImpl, oursImpl}
		for _, sched := range []string{"blest", "ecf"} {
			vs = append(vs, simultVariant{p: ours, sched: sched})
		}
		for _, cc := range []string{"lia", "olia", "balia"} {
			vs = append(vs, simultVariant{p: ours, cc: cc})
		}
	}
	return vs
}

// handoverRuns is how many times each variant runs: the table gives the median.
const handoverRuns = 3

func TestScenarioHandover(t *testing.T) {
	requireScenarios(t)
	var b strings.Builder
	b.WriteString("## Wi-Fi + LTE handover\n\n")
	b.WriteString("Wi-Fi (path 1, initial subflow): 50 Mbit/s, 20 ms RTT; LTE (path 2, opened by the client): 20 Mbit/s, 60 ms RTT. ")
	fmt.Fprintf(&b, "The client downloads %d MiB (and sends %d MiB); Wi-Fi drops every packet from 5 s to 15 s (no link event). ", handoverDown>>20, handoverUp>>20)
	b.WriteString("Throughput per path and phase is what the emulator delivered downward (IP bytes, Mbit/s); ")
	b.WriteString("the gap is the longest wait between two reads that returned data at the client; ")
	b.WriteString("Wi-Fi back is when Wi-Fi first carried more than 1 Mbit/s again (in 250 ms samples). ")
	b.WriteString("A pairing followed by blest or ecf ran that scheduler of ours in mptcpd, which sends the download; the others ran `default`. ")
	b.WriteString("One followed by lia, olia or balia ran that congestion control on our subflows at both ends; the others CUBIC, as the kernel's sockets. ")
	fmt.Fprintf(&b, "Each ran %d times: the first table gives the medians, the second every run.\n\n", handoverRuns)
	var rows strings.Builder
	rows.WriteString("| LTE | pairing | time (s) | goodput (Mbit/s) | longest gap (ms) | Wi-Fi 0–5 / 5–15 / 15– s | LTE 0–5 / 5–15 / 15– s | Wi-Fi back at | checks |\n")
	rows.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	b.WriteString("| LTE | pairing | median time (s) | median goodput (Mbit/s) | median longest gap (ms) | runs failed |\n|---|---|---|---|---|---|\n")
	for _, backup := range []bool{false, true} {
		name := "subflow"
		if backup {
			name = "backup"
		}
		var runs []scenarioResult
		t.Run(name, func(t *testing.T) {
			for _, v := range handoverVariants(backup) {
				s := handoverScenario(backup)
				s.scheduler, s.cc = v.sched, v.cc
				p := v.p
				var done []scenarioResult
				failed := 0
				for k := range handoverRuns {
					t.Run(fmt.Sprintf("%s/%d", v.name(), k+1), func(t *testing.T) {
						res := runScenario(t, p, s)
						if v.sched == "" && v.cc == "" && k == 0 {
							runs = append(runs, res) // the plot compares the stacks
						}
						if res.err != nil {
							failed++
							fmt.Fprintf(&rows, "| %s | %s | failed: %v | | | | | | |\n", name, res.label(), res.err)
							return
						}
						done = append(done, res)
						wifi, lte := phaseMbps(res, 0), phaseMbps(res, 1)
						back := "never"
						if at, ok := resumedAt(res, 0, 15*time.Second); ok {
							back = fmt.Sprintf("%.2f s", at.Seconds())
						}
						row := fmt.Sprintf("| %s | %s | %.2f | %.2f | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %s | %s |\n",
							name, res.label(), res.downTime.Seconds(), res.downMbps(s), res.downGap.Milliseconds(),
							wifi[0], wifi[1], wifi[2], lte[0], lte[1], lte[2], back, res.checks(t.Failed()))
						t.Log(strings.TrimSpace(row))
						rows.WriteString(row)
					})
				}
				label := scenarioResult{p: p, sched: v.sched, cc: v.cc}.label()
				if len(done) == 0 {
					if failed > 0 {
						fmt.Fprintf(&b, "| %s | %s | | | | %d |\n", name, label, failed)
					}
					continue
				}
				med := func(f func(scenarioResult) float64) float64 { return medianOf(done, f) }
				fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.0f | %d |\n", name, label,
					med(func(r scenarioResult) float64 { return r.downTime.Seconds() }),
					med(func(r scenarioResult) float64 { return r.downMbps(s) }),
					med(func(r scenarioResult) float64 { return float64(r.downGap.Milliseconds()) }), failed)
			}
		})
		file := "scenario-handover-" + name + ".png"
		title := "Wi-Fi lost at 5 s, back at 15 s; LTE as a plain subflow: download per path"
		if backup {
			title = "Wi-Fi lost at 5 s, back at 15 s; LTE as backup: download per path"
		}
		if err := plotScenario(file, title, runs, handoverNames, false, handoverEvents); err != nil {
			t.Errorf("plot: %v", err)
		}
	}
	b.WriteString("\n")
	b.WriteString(rows.String())
	b.WriteString("\n![handover, LTE as backup](scenario-handover-backup.png)\n")
	b.WriteString("\n![handover, LTE as a plain subflow](scenario-handover-subflow.png)\n")
	writeScenarioSection(t, "2-handover", b.String())
}

// phaseMbps returns the mean downward throughput of path i before 5 s, from 5 to 15 s and
// after 15 s, in Mbit/s.
func phaseMbps(r scenarioResult, i int) [3]float64 {
	var out [3]float64
	bounds := []time.Duration{0, 5 * time.Second, 15 * time.Second, r.at[len(r.at)-1]}
	for k := range 3 {
		from, to := bytesAt(r, i, bounds[k]), bytesAt(r, i, bounds[k+1])
		if d := (bounds[k+1] - bounds[k]).Seconds(); d > 0 && to >= from {
			out[k] = float64(to-from) * 8 / d / 1e6
		}
	}
	return out
}

// bytesAt returns what path i delivered downward by the last sample at or before at.
func bytesAt(r scenarioResult, i int, at time.Duration) uint64 {
	var n uint64
	for j, t := range r.at {
		if t > at {
			break
		}
		n = r.ba[j][i]
	}
	return n
}

// resumedAt returns when path i first carried more than 1 Mbit/s downward in a sample after
// from.
func resumedAt(r scenarioResult, i int, from time.Duration) (time.Duration, bool) {
	for j := 1; j < len(r.at); j++ {
		if r.at[j-1] < from {
			continue
		}
		dt := (r.at[j] - r.at[j-1]).Seconds()
		if dt > 0 && float64(r.ba[j][i]-r.ba[j-1][i])*8/dt > 1e6 {
			return r.at[j], true
		}
	}
	return 0, false
}
