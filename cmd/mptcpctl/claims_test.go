package main

import (
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestCtlHelpDescribesEveryOption: `mptcpctl --help` and `mptcpctl VERB --help`, for every
// verb and sub-verb, exit 0 and print a line for each of the verb's options with all its names
// and its description.
func TestCtlHelpDescribesEveryOption(t *testing.T) {
	app := newApp()
	checkHelp(t, nil, app.Flags)
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), path...), c.Name)
			checkHelp(t, p, c.Flags)
			walk(p, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
}

func checkHelp(t *testing.T, verb []string, flags []cli.Flag) {
	t.Helper()
	code, out, errOut := runCtl(t, append(verb, "--help")...)
	if code != 0 || errOut != "" {
		t.Errorf("mptcpctl %s --help: status %d, stderr %q", strings.Join(verb, " "), code, errOut)
		return
	}
	i := strings.LastIndex(out, "OPTIONS:\n")
	if i < 0 {
		t.Errorf("mptcpctl %s --help has no OPTIONS:\n%s", strings.Join(verb, " "), out)
		return
	}
	opts := out[i+len("OPTIONS:\n"):]
	for _, f := range flags {
		names := f.Names()
		usage := strings.ReplaceAll(f.(cli.DocGenerationFlag).GetUsage(), "`", "")
		var line string
		for _, l := range strings.Split(opts, "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.TrimSuffix(f[0], ",") == "--"+names[0] {
				line = l
			}
		}
		for _, n := range names {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			if !strings.Contains(line, dash+n) {
				t.Errorf("mptcpctl %s --help: no %s%s in %q", strings.Join(verb, " "), dash, n, line)
			}
		}
		if usage == "" || !strings.Contains(line, usage) {
			t.Errorf("mptcpctl %s --help: --%s is not described as %q:\n%s", strings.Join(verb, " "), names[0], usage, out)
		}
	}
}
