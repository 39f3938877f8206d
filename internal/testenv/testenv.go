// Package testenv decides whether root and kernel-feature tests run, skip, or fail.
package testenv

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// ExpectAllFeaturesVar names the environment variable that turns every skip of a root or
// kernel-feature test into a failure. .ci/run sets it, and CI=true implies it.
const ExpectAllFeaturesVar = "MPTCPGO_EXPECT_ALL_FEATURES"

// ExpectAllFeatures reports whether a missing privilege or kernel feature is a failure.
func ExpectAllFeatures() bool {
	return os.Getenv(ExpectAllFeaturesVar) == "1" || os.Getenv("CI") == "true"
}

// Skip skips the test with the stated reason, or fails it when all features are expected.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if ExpectAllFeatures() {
		tb.Fatalf("required but unavailable: %s (%s is set)", reason, ExpectAllFeaturesVar)
	}
	tb.Skip(reason)
}

// RequireRoot skips (or fails, see Skip) a test that needs root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skip(tb, "needs root (network namespaces, BPF)")
	}
}

// VerifierBudget is the share of the kernel's limit of 1,000,000 instructions processed per
// program that our programs may take here: other kernels' verifiers explore differently, and a
// program that needs most of the limit on this one may not load on another.
const VerifierBudget = 250_000

// CheckVerifierCost logs the instructions the verifier processed for program p, named name, and
// fails the test when they exceed VerifierBudget or the kernel does not report them.
func CheckVerifierCost(tb testing.TB, name string, p *ebpf.Program) {
	tb.Helper()
	info, err := p.Info()
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	n, ok := info.VerifiedInstructions()
	if !ok {
		tb.Fatalf("%s: this kernel does not report the instructions verified", name)
	}
	tb.Logf("%s: %d instructions verified", name, n)
	if n > VerifierBudget {
		tb.Errorf("%s: %d instructions verified, over the budget of %d", name, n, VerifierBudget)
	}
}
