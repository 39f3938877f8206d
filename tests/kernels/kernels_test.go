// Package kernels boots older kernels in qemu (internal/vm) and runs the datapath's and the
// netns suite's tests inside them: the kernels of the README's table are checked here.
//
// TestKernelSmoke (part of make test) boots Debian 12's Linux 6.1 and runs the smoke list;
// make test-kernels (MPTCPGO_KERNEL_MATRIX=1) boots every kernel of vm.Kernels with the longer
// list. MPTCPGO_KERNELS (comma-separated names) picks kernels, MPTCPGO_KERNEL_TESTS the tests.
package kernels_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
	"github.com/mptcpgo/mptcpgo/internal/vm"
)

// smokeTests run in make test: the datapath loads and unloads (internal/datapath's tests), a
// transfer both ways with the kernel's MPTCP, byte-exact with its counters checked, a join, an
// ADD_ADDR and a path failure (TestDemo), the daemon's forward and accept proxies against the
// kernel, a stop that leaves nothing attached (TestMptcpdStopSignals), SACK segments
// rewritten by TC in both roles with the retransmissions of dropped segments carrying their
// mappings (TestSackDrops), and the coupled congestion controls for the kernel's own MPTCP
// sockets loaded, used and unloaded by mptcpctl (TestMptcpctlCC; internal/kcc's tests run too).
var smokeTests = []string{
	"TestDemo",
	"TestMptcpdForwardToKernel",
	"TestMptcpdAcceptFromKernel",
	"TestMptcpdStopSignals",
	"TestSackDrops",
	"TestMptcpctlCC",
}

// matrixTests run in make test-kernels, on every kernel, after the smoke list.
var matrixTests = []string{
	"TestJoinOurClientKernelServer",
	"TestJoinKernelClientOurServer",
	"TestAddAddrFromKernel",
	"TestAddAddrToKernel",
	"TestMultipathFailover",
	"TestMultipathBackup",
	"TestMultipathPrio",
	"TestMultipathRemoveAddr",
	"TestFallbackToPlainServer",
	"TestFallbackFromPlainClient",
	"TestFastclose",
	"TestJoinUnknownToken",
	"TestLibrary",
	"TestWireFormat",
	"TestMptcpctlEndpoint",
	"TestPassiveSynCookies",
	"TestRawAddAddrHMAC",
	"TestRawJoinAckHMAC",
	"TestChecksums",
	"TestCoupledToKernel",
	"TestKernelCoupledCC",
}

// matrixVar turns on TestKernelMatrix (make test-kernels).
const matrixVar = "MPTCPGO_KERNEL_MATRIX"

// TestKernelSmoke boots Linux 6.1 and runs the smoke list there.
func TestKernelSmoke(t *testing.T) {
	k, _ := vm.Lookup("6.1")
	runKernel(t, k, smokeTests)
}

// TestKernelMatrix boots every kernel of vm.Kernels (or those named in MPTCPGO_KERNELS,
// comma-separated) and runs the smoke and matrix lists. It runs with make test-kernels.
func TestKernelMatrix(t *testing.T) {
	if os.Getenv(matrixVar) == "" {
		t.Skipf("the kernel matrix runs with make test-kernels (%s=1)", matrixVar)
	}
	names := os.Getenv("MPTCPGO_KERNELS")
	for _, k := range vm.Kernels {
		if names != "" && !strings.Contains(","+names+",", ","+k.Name+",") {
			continue
		}
		t.Run(k.Name, func(t *testing.T) {
			if k.Unsupported != "" {
				checkUnsupported(t, k)
				return
			}
			runKernel(t, k, append(append([]string(nil), smokeTests...), matrixTests...))
		})
	}
}

// built holds the binaries the guests run, built once on the host (the guest has no build
// cache, and building under emulation would take minutes).
var built struct {
	sync.Once
	dir string
	err error
}

func buildAll(t *testing.T) string {
	t.Helper()
	built.Do(func() {
		// Binaries of test processes that did not get to remove them (killed) go first.
		old, _ := filepath.Glob(filepath.Join(vm.Cache(), "bin-*"))
		for _, d := range old {
			pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "bin-"))
			if err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(d)
			}
		}
		dir := filepath.Join(vm.Cache(), fmt.Sprintf("bin-%d", os.Getpid()))
		if built.err = os.MkdirAll(dir, 0o755); built.err != nil {
			return
		}
		for _, args := range [][]string{
			{"build", "-o", dir + "/", "github.com/mptcpgo/mptcpgo/cmd/..."},
			{"test", "-c", "-o", filepath.Join(dir, "netns.test"), "github.com/mptcpgo/mptcpgo/tests/netns"},
			{"test", "-c", "-o", filepath.Join(dir, "datapath.test"), "github.com/mptcpgo/mptcpgo/internal/datapath"},
			{"test", "-c", "-o", filepath.Join(dir, "kcc.test"), "github.com/mptcpgo/mptcpgo/internal/kcc"},
		} {
			if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
				built.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
		built.dir = dir
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// boot fetches k and runs script in it, returning the console output and the script's status.
func boot(t *testing.T, ctx context.Context, k vm.Kernel, script string) (*vm.Image, string, int) {
	t.Helper()
	testenv.RequireRoot(t)
	if m := vm.Missing(); len(m) > 0 {
		testenv.Skip(t, "missing Debian packages (make deps installs them): "+strings.Join(m, " "))
	}
	img, err := vm.Fetch(ctx, k)
	if err != nil {
		testenv.Skip(t, fmt.Sprintf("Linux %s (Debian %s) cannot be fetched here: %v", k.Name, k.Suite, err))
	}
	// The console also goes to a file as it comes, to follow a long run (tail -f).
	console, err := os.Create(filepath.Join(vm.Cache(), "console-"+k.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	t.Logf("booting %s (%s, Debian %s) in qemu; console in %s", img.Release, img.Version, k.Suite, console.Name())
	start := time.Now()
	// Below make test's go test -timeout (30 m): the guest is stopped and reported, not
	// abandoned by a panicking test binary.
	out, status, err := vm.Run(ctx, img, script, vm.RunOptions{Limit: 25 * time.Minute, Console: console})
	t.Logf("guest ran %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("Linux %s: %v\n%s", img.Release, err, lastLines(out, 200))
	}
	if !strings.Contains(out, "guest: "+img.Release) {
		t.Fatalf("the guest did not run %s:\n%s", img.Release, lastLines(out, 50))
	}
	return img, out, status
}

// checkUnsupported boots a kernel the README says mptcpgo does not run on and checks that the
// datapath's load fails there for the reason it gives.
func checkUnsupported(t *testing.T, k vm.Kernel) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	bin := buildAll(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`echo "guest: $(uname -r)"
cd %[2]s/internal/datapath && %[1]s/datapath.test -test.count=1 -test.v -test.run '^TestOpenClose$'
`, bin, root)
	img, out, status := boot(t, ctx, k, script)
	if status == 0 || !strings.Contains(out, k.Unsupported) {
		t.Errorf("Linux %s: the datapath's load exited %d; want a failure with %q:\n%s", img.Release, status, k.Unsupported, lastLines(out, 60))
	}
}

// runKernel boots k and runs internal/datapath's and internal/kcc's tests and the named tests of tests/netns in
// it; every one must pass (a skip fails: the guest runs with every feature expected, or with the
// missing ones stated in the test).
func runKernel(t *testing.T, k vm.Kernel, tests []string) {
	if v := os.Getenv("MPTCPGO_KERNEL_TESTS"); v != "" {
		tests = strings.Split(v, ",") // a developer's choice of tests (comma-separated names)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 28*time.Minute)
	defer cancel()
	bin := buildAll(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`set -u
export MPTCPGO_PREBUILT=%[1]s MPTCPGO_TEST_SCALE=16 MPTCPGO_EXPECT_ALL_FEATURES=1 MPTCPGO_EXPECT_MISSING=%[4]s GOTRACEBACK=all
echo "guest: $(uname -r)"
rc=0
cd %[2]s/internal/datapath && %[1]s/datapath.test -test.count=1 -test.timeout=5m || rc=1
cd %[2]s/internal/kcc && %[1]s/kcc.test -test.count=1 -test.timeout=5m || rc=1
cd %[2]s/tests/netns && %[1]s/netns.test -test.count=1 -test.v -test.timeout=30m -test.run '^(%[3]s)$' || rc=1
exit $rc
`, bin, root, strings.Join(tests, "|"), strings.Join(k.Missing, ","))
	img, out, status := boot(t, ctx, k, script)
	summary := testSummary(out)
	if status != 0 {
		t.Errorf("Linux %s: status %d\n%s", img.Release, status, lastLines(out, 200))
		return
	}
	for _, name := range tests {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			t.Errorf("Linux %s: %s did not pass (not run?)", img.Release, name)
		}
	}
	t.Logf("Linux %s:\n%s", img.Release, summary)
}

// testSummary returns the top-level PASS/FAIL/SKIP lines of go test -v output.
func testSummary(out string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "ok ") || line == "PASS" || line == "FAIL" {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
