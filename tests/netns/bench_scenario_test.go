package netns_test

import (
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// BenchmarkScenarios runs one case of each scenario of the suite (make scenarios runs them all
// and writes docs/scenarios.md) with the kernel's MPTCP at both ends and ours at both ends, one
// after the other in the same run, and reports ours against the kernel's:
//
//   - simult_flows 10/10 Mbit/s, 1/25 ms: 16 MiB each way; the summed goodput of both
//     directions (Mbit/s) and ours as a fraction of the kernel's;
//   - lossy paths at 1 % and 5 %: 8 MiB each way over two 20 Mbit/s paths; the same figures,
//     and each direction's ratio (ours sends both ways here);
//   - the Wi-Fi + LTE handover with LTE as a plain subflow: the download's goodput, the ratio,
//     and the longest gap at the client (ms) for each.
//
// The data is checked byte-exact and the health counters as in the suite; timings are only
// reported.
func BenchmarkScenarios(b *testing.B) {
	testenv.RequireRoot(b)
	kernel, ours := pairing{kernelImpl, kernelImpl}, pairing{oursImpl, oursImpl}
	both := func(b *testing.B, s scenario) (k, o scenarioResult) {
		k = runScenario(b, kernel, s)
		o = runScenario(b, ours, s)
		if k.err != nil || o.err != nil {
			b.Fatalf("kernel: %v; ours: %v", k.err, o.err)
		}
		return k, o
	}
	twoWay := func(b *testing.B, s scenario) {
		for range b.N {
			k, o := both(b, s)
			km, om := k.upMbps(s)+k.downMbps(s), o.upMbps(s)+o.downMbps(s)
			b.ReportMetric(km, "kernel-Mbit/s")
			b.ReportMetric(om, "ours-Mbit/s")
			b.ReportMetric(om/km, "ours/kernel")
			b.ReportMetric(o.upMbps(s)/k.upMbps(s), "up-ours/kernel")
			b.ReportMetric(o.downMbps(s)/k.downMbps(s), "down-ours/kernel")
		}
	}
	b.Run("simult-10-10-1-25ms", func(b *testing.B) { twoWay(b, simultCase{10, 10, 1, 25}.scenario()) })
	b.Run("lossy-1pct", func(b *testing.B) { twoWay(b, lossyScenario(0.01)) })
	b.Run("lossy-5pct", func(b *testing.B) { twoWay(b, lossyScenario(0.05)) })
	b.Run("handover-subflow", func(b *testing.B) {
		s := handoverScenario(false)
		for range b.N {
			k, o := both(b, s)
			b.ReportMetric(k.downMbps(s), "kernel-Mbit/s")
			b.ReportMetric(o.downMbps(s), "ours-Mbit/s")
			b.ReportMetric(o.downMbps(s)/k.downMbps(s), "ours/kernel")
			b.ReportMetric(float64(k.downGap.Milliseconds()), "kernel-gap-ms")
			b.ReportMetric(float64(o.downGap.Milliseconds()), "ours-gap-ms")
		}
	})
}
