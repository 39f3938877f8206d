// Package testenv decides whether root and kernel-feature tests run, skip, or fail.
package testenv

import (
	"os"
	"testing"
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
