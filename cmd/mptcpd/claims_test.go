package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/pkg/control"
)

// mainEnv makes TestMptcpdMain run the daemon's main with the arguments after "--".
const mainEnv = "MPTCPD_TEST_MAIN"

// TestMptcpdMain is not a test: runMptcpd starts the test binary with mainEnv set to run
// mptcpd itself.
func TestMptcpdMain(t *testing.T) {
	if os.Getenv(mainEnv) != "1" {
		return
	}
	os.Args = append([]string{"mptcpd"}, flag.Args()...)
	main()
	os.Exit(0)
}

// runMptcpd runs mptcpd with args and returns its exit status, standard output and error. A
// daemon still running after 20 seconds is killed (status -1).
func runMptcpd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestMptcpdMain$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// TestMptcpdConfigMistakeAtStart: a mistake in the --config file stops the daemon at start
// with status 2 and one line, "mptcpd: FILE:LINE: reason", the line the mistake's.
func TestMptcpdConfigMistakeAtStart(t *testing.T) {
	const rule = "forward: [\"127.0.0.1:0=127.0.0.1:9\"]\nctl: \"\"\n"
	for _, tc := range []struct {
		file   string
		line   string
		reason string
	}{
		{rule + "colour: red\n", "3", `unknown option "colour" (want one of forward, accept, `},
		{rule + "max-conns: 0\n", "3", "max-conns: 0: want a number from 1 to 1048576"},
		{"scheduler: fastest\n" + rule, "1", `scheduler: unknown scheduler "fastest"`},
		{rule + "endpoint:\n  - 10.0.0.1,subflow\n  - {addr: 10.0.0.2, colour: red}\n", "5", `endpoint: unknown key "colour"`},
		// YAML's own mistakes, the parser's (go-yaml counts their lines from 0) and the scanner's.
		{rule + "accept: [\n  a\n", "3", "did not find expected ',' or ']'"},
		{"accept: [a]]\n" + rule, "1", "did not find expected key"},
		{rule + "  ready-file: /x\n", "3", "did not find expected key"},
		{rule + "x: y: z\n", "3", "mapping values are not allowed in this context"},
		// What go-yaml's reader refuses, which it gives no line for.
		{rule + "ready-file: /run/\x01\n", "3", "control characters are not allowed"},
		{"ready-file: /run/x\n\n# caf\xe9\n" + rule, "3", "invalid "},
	} {
		path := filepath.Join(t.TempDir(), "mptcpd.yaml")
		if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		ready := filepath.Join(t.TempDir(), "ready")
		code, out, errOut := runMptcpd(t, "--config", path, "--ready-file", ready)
		re := regexp.MustCompile(`^mptcpd: ` + regexp.QuoteMeta(path) + `:(\d+): (.+)\n$`)
		m := re.FindStringSubmatch(errOut)
		if code != 2 || out != "" || m == nil || m[1] != tc.line || !strings.HasPrefix(m[2], tc.reason) {
			t.Errorf("config %q: status %d, stdout %q, stderr %q; want 2 and one line %s:%s: %s…",
				tc.file, code, out, errOut, path, tc.line, tc.reason)
		}
		if _, err := os.Stat(ready); err == nil {
			t.Errorf("config %q: the daemon became ready", tc.file)
		}
	}
}

// TestMptcpdBadScheduler: --scheduler with a name that is not a scheduler stops the daemon at
// start with status 2 and one line naming the schedulers there are.
func TestMptcpdBadScheduler(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	code, out, errOut := runMptcpd(t, "--ctl", "", "--ready-file", ready, "--forward", "127.0.0.1:0=127.0.0.1:9", "--scheduler", "fastest")
	want := `mptcpd: --scheduler: unknown scheduler "fastest" (have [` + strings.Join(control.SchedulerNames(), " ") + "])\n"
	if code != 2 || out != "" || errOut != want {
		t.Errorf("status %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, want)
	}
	if _, err := os.Stat(ready); err == nil {
		t.Errorf("the daemon became ready")
	}
	if !slices.Contains(control.SchedulerNames(), "roundrobin") {
		t.Errorf("no roundrobin scheduler: %v", control.SchedulerNames())
	}
}

// TestSystemdUnitCapabilities: the systemd unit gives the daemon exactly the capabilities the
// README names (CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_DAC_OVERRIDE), as its bounding and
// ambient sets.
func TestSystemdUnitCapabilities(t *testing.T) {
	want := []string{"CAP_BPF", "CAP_DAC_OVERRIDE", "CAP_NET_ADMIN", "CAP_PERFMON"}
	// The README's sentence: "packaging/systemd/ has a unit with the least capabilities that
	// work (`CAP_…`, …)".
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := regexp.MustCompile("(?s)`packaging/systemd/` has a unit with the least capabilities that work\\s*\\(([^)]*)\\)").FindSubmatch(readme)
	if s == nil {
		t.Fatal("the README no longer names the unit's capabilities where this test looks")
	}
	var named []string
	for _, m := range regexp.MustCompile("`(CAP_[A-Z_]+)`").FindAllSubmatch(s[1], -1) {
		named = append(named, string(m[1]))
	}
	slices.Sort(named)
	if !slices.Equal(named, want) {
		t.Errorf("the README names %v, want %v", named, want)
	}
	sets := unitCapabilities(t, "../../packaging/systemd/mptcpd.service")
	for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got, ok := sets[key]; !ok || !slices.Equal(got, want) {
			t.Errorf("the unit's %s: %v (set %t), want %v", key, got, ok, want)
		}
	}
}

// unitCapabilities reads the [Service] section's CapabilityBoundingSet and AmbientCapabilities
// as systemd does: assignments add up, an empty one resets. An inverted set (~) fails the test.
func unitCapabilities(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sets := map[string][]string{}
	section, cont := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := cont + strings.TrimSpace(sc.Text())
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cont = l + " "
			continue
		}
		cont = ""
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || section != "[Service]" || (k != "CapabilityBoundingSet" && k != "AmbientCapabilities") {
			continue
		}
		if v == "" {
			sets[k] = []string{}
			continue
		}
		if strings.HasPrefix(v, "~") {
			t.Fatalf("%s=%s: an inverted set, not the capabilities listed", k, v)
		}
		sets[k] = append(sets[k], strings.Fields(v)...)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for k, v := range sets {
		slices.Sort(v)
		sets[k] = slices.Compact(v)
	}
	return sets
}
