package netns_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

// Lossy paths: two paths of 20 Mbit/s and a 20 ms round trip that each drop 1 % or 5 % of
// the packets in both directions (data and ACKs alike). Both stacks repair losses with SACK and
// run CUBIC (the rig sets it on the kernel's sockets).

var lossRates = []float64{0.01, 0.05}

const lossySize = 8 << 20

// lossyScenario: two 20 Mbit/s paths, 20 ms RTT, that drop loss of the packets both ways.
func lossyScenario(loss float64) scenario {
	return scenario{
		paths: []emu.Config{
			{Rate: 20e6, Delay: 10 * time.Millisecond, Loss: loss},
			{Rate: 20e6, Delay: 10 * time.Millisecond, Loss: loss},
		},
		flags: []string{"subflow"}, up: lossySize, down: lossySize, timeout: 120 * time.Second,
	}
}

func TestScenarioLossy(t *testing.T) {
	requireScenarios(t)
	var b strings.Builder
	b.WriteString("## Lossy paths\n\n")
	fmt.Fprintf(&b, "Two paths of 20 Mbit/s and 20 ms RTT, random loss on both in both directions; %d MiB each way at once. ", lossySize>>20)
	b.WriteString("Loss measured is what the emulator dropped of all it was given. CUBIC at both ends, SACK on every subflow.\n\n")
	b.WriteString("| loss | pairing | time up / down (s) | goodput up / down (Mbit/s) | share path 1 / 2 | dropped | checks |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, loss := range lossRates {
		name := fmt.Sprintf("%g%%", loss*100)
		s := lossyScenario(loss)
		t.Run(name, func(t *testing.T) {
			for _, p := range scenarioPairings {
				t.Run(p.String(), func(t *testing.T) {
					res := runScenario(t, p, s)
					if res.err != nil {
						fmt.Fprintf(&b, "| %s | %s | failed: %v | | | | no |\n", name, pairingLabel(p), res.err)
						return
					}
					sh := res.shares()
					row := fmt.Sprintf("| %s | %s | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.2f %% | %s |\n",
						name, pairingLabel(p), res.upTime.Seconds(), res.downTime.Seconds(), res.upMbps(s), res.downMbps(s),
						sh[0], sh[1], 100*res.dropped, res.checks(t.Failed()))
					t.Log(strings.TrimSpace(row))
					b.WriteString(row)
				})
			}
		})
	}
	writeScenarioSection(t, "3-lossy", b.String())
}
