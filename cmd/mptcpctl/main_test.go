package main

import (
	"slices"
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
	} {
		app := newApp()
		app.Writer, app.ErrWriter = nopWriter{}, nopWriter{}
		err := app.Run(interspersed(app, append([]string{"mptcpctl", "--ctl", "/nonexistent/sock"}, args...)))
		if _, ok := err.(usageError); !ok {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
