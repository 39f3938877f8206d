package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestCtlInterspersed(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"mptcpctl", "add-addr", "10.0.0.1", "--flags", "signal", "--id", "3"},
			[]string{"mptcpctl", "add-addr", "--flags", "signal", "--id", "3", "--", "10.0.0.1"}},
		{[]string{"mptcpctl", "--ctl", "/s", "show", "subflows", "--json"},
			[]string{"mptcpctl", "--ctl", "/s", "show", "--json", "--", "subflows"}},
		{[]string{"mptcpctl", "endpoint", "add", "10.0.0.1", "id", "3", "signal", "--dev=eth0"},
			[]string{"mptcpctl", "endpoint", "add", "--dev=eth0", "--", "10.0.0.1", "id", "3", "signal"}},
		{[]string{"mptcpctl", "stats"}, []string{"mptcpctl", "stats"}},
		{[]string{"mptcpctl", "nosuch", "x"}, []string{"mptcpctl", "nosuch", "x"}},
	} {
		if got := interspersed(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCtlUsageErrors: mistakes in the command line fail before any connection, with status 2.
func TestCtlUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"add-addr"},
		{"add-addr", "10.0.0.300"},
		{"add-addr", "10.0.0.1", "--flags", "loud"},
		{"add-addr", "10.0.0.1", "--id", "0"},
		{"endpoint", "add", "10.0.0.1", "id"},
		{"endpoint", "add", "10.0.0.1", "port", "70000"},
		{"del-addr"},
		{"del-addr", "nothing"},
		{"endpoint", "change", "id", "3", "maybe"},
		{"set-prio", "10.0.0.1"},
		{"set-prio", "10.0.0.1", "sometimes"},
		{"set-prio", "--token", "zz", "--local", "1.1.1.1:1", "--remote", "2.2.2.2:2", "backup"},
		{"set-prio", "--token", "1a", "backup"},
		{"set-prio", "--token", "1a", "--local", "1.1.1.1", "--remote", "2.2.2.2:2", "backup"},
		{"limits", "--subflows", "9"},
		{"show", "everything"},
		{"stats", "extra"},
		{"monitor", "extra"},
		// Options that do not parse, in every verb: one line, no help text.
		{"limits", "--subflows", "abc"},
		{"limits", "--add-addr-accepted", "1.5"},
		{"limits", "--bogus"},
		{"add-addr", "10.0.0.1", "--id", "x"},
		{"add-addr", "10.0.0.1", "--port", "-1"},
		{"endpoint", "add", "10.0.0.1", "--id", "x"},
		{"endpoint", "show", "--json=maybe"},
		{"endpoint", "delete", "--id", "3"},
		{"endpoint", "change", "--bogus", "id", "3", "backup"},
		{"endpoint", "flush", "--all"},
		{"del-addr", "--id", "3"},
		{"set-prio", "--token"},
		{"show", "--json=maybe"},
		{"stats", "--nonzero=perhaps"},
		{"monitor", "-x"},
		{"--bogus", "stats"},
	} {
		app := newApp()
		var out, errOut bytes.Buffer
		app.Writer, app.ErrWriter = &out, &errOut
		err := app.Run(interspersed(app, append([]string{"mptcpctl", "--ctl", "/nonexistent/sock"}, args...)))
		if _, ok := err.(usageError); !ok {
			t.Errorf("%q: %v, want a usage error", args, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: an error of more than one line: %q", args, err)
		}
		if out.Len()+errOut.Len() > 0 {
			t.Errorf("%q: printed %q%q, want only the error", args, out.String(), errOut.String())
		}
	}
}

// TestMain runs the command itself when the test binary is started as mptcpctl by runCtl.
func TestMain(m *testing.M) {
	if os.Getenv("MPTCPCTL_TEST_MAIN") == "1" {
		os.Args = append([]string{"mptcpctl"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runCtl runs mptcpctl with args and returns its exit status, standard output and error.
func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MPTCPCTL_TEST_MAIN=1", "MPTCPCTL_SOCKET=/nonexistent/sock")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// TestCtlExitStatus: a mistake in the command line exits 2 with one line on stderr, as the
// README says, whatever the verb; a daemon that cannot be reached exits 1.
func TestCtlExitStatus(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"limits", "--subflows", "abc"}, `mptcpctl: limits: invalid value "abc" for flag --subflows: parse error`},
		{[]string{"endpoint", "add", "10.0.0.1", "--port", "x"}, `mptcpctl: endpoint add: invalid value "x" for flag --port`},
		{[]string{"stats", "--bogus"}, `mptcpctl: stats: flag provided but not defined: --bogus`},
		{[]string{"set-prio", "--token"}, `mptcpctl: set-prio: flag needs an argument: --token`},
		{[]string{"limits", "--subflows", "9"}, `mptcpctl: --subflows 9: want 0..8`},
		{[]string{"nosuch"}, `mptcpctl: unknown command "nosuch"`},
	} {
		code, out, errOut := runCtl(t, tc.args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, tc.want) {
			t.Errorf("%q: status %d, stdout %q, stderr %q; want 2, nothing, one line %q", tc.args, code, out, errOut, tc.want)
		}
	}
	code, _, errOut := runCtl(t, "stats")
	if code != 1 || !strings.HasPrefix(errOut, "mptcpctl: ") {
		t.Errorf("stats without a daemon: status %d, %q; want 1", code, errOut)
	}
}
