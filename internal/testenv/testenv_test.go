package testenv_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// helperEnv makes TestHelperSkip act: "skip" calls Skip, "root" RequireRoot.
const helperEnv = "MPTCPGO_TESTENV_HELPER"

const helperReason = "the helper's missing feature"

// TestHelperSkip is not a test: TestExpectAllFeatures runs the test binary with helperEnv set
// to use it as a test that skips.
func TestHelperSkip(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "skip":
		testenv.Skip(t, helperReason)
	case "root":
		testenv.RequireRoot(t)
	default:
		return
	}
	t.Log("HELPER RAN ON")
}

// TestExpectAllFeatures: a test that skips for lack of a feature (Skip) or of root
// (RequireRoot) skips, and fails instead when MPTCPGO_EXPECT_ALL_FEATURES=1 or CI=true.
func TestExpectAllFeatures(t *testing.T) {
	bin := os.Args[0]
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// RequireRoot's skip needs a user that is not root: nobody, running a copy of the test
		// binary it can reach.
		dir, err := os.MkdirTemp("", "testenv-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		bin = filepath.Join(dir, "testenv.test")
		if err := copyFile(bin, os.Args[0]); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	for _, tc := range []struct {
		mode, env string
		fail      bool
		want      string
	}{
		{"skip", "", false, helperReason},
		{"skip", testenv.ExpectAllFeaturesVar + "=0", false, helperReason},
		{"skip", testenv.ExpectAllFeaturesVar + "=1", true, "required but unavailable: " + helperReason + " (" + testenv.ExpectAllFeaturesVar + " is set)"},
		{"skip", "CI=true", true, "required but unavailable: " + helperReason},
		{"root", "", false, "needs root"},
		{"root", testenv.ExpectAllFeaturesVar + "=1", true, "required but unavailable: needs root"},
	} {
		cmd := exec.Command(bin, "-test.run=^TestHelperSkip$", "-test.v")
		cmd.Env = slices.DeleteFunc(os.Environ(), func(s string) bool {
			return strings.HasPrefix(s, testenv.ExpectAllFeaturesVar+"=") || strings.HasPrefix(s, "CI=")
		})
		cmd.Env = append(cmd.Env, helperEnv+"="+tc.mode)
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		if tc.mode == "root" && cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		verdict := "--- SKIP: TestHelperSkip"
		if tc.fail {
			verdict = "--- FAIL: TestHelperSkip"
		}
		if (err != nil) != tc.fail || !strings.Contains(out.String(), verdict) || !strings.Contains(out.String(), tc.want) ||
			strings.Contains(out.String(), "HELPER RAN ON") {
			t.Errorf("%s with %q: %v, want %s with %q:\n%s", tc.mode, tc.env, err, verdict, tc.want, out.String())
		}
	}
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
