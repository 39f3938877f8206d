package main

import (
	"flag"
	"runtime/debug"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestMemoryLimitSetsGoLimit: --memory-limit, given or from --config (the flag wins), sets Go's
// soft memory limit (debug.SetMemoryLimit) to its value; "off" or none leave it as it was.
func TestMemoryLimitSetsGoLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	cfg := writeConfig(t, "memory-limit: 96MiB\n")
	const before = 1 << 40 // what the runtime had before mptcpd's options
	for _, tc := range []struct {
		args []string
		want int64 // the runtime's limit after
		ret  int64 // memoryLimit's result
	}{
		{[]string{"--memory-limit", "64MiB"}, 64 << 20, 64 << 20},
		{[]string{"--memory-limit", "2GiB"}, 2 << 30, 2 << 30},
		{[]string{"--config", cfg}, 96 << 20, 96 << 20},
		{[]string{"--config", cfg, "--memory-limit", "48MiB"}, 48 << 20, 48 << 20},
		{[]string{"--memory-limit", "off"}, before, 0},
		{nil, before, 0},
	} {
		debug.SetMemoryLimit(before)
		set := flag.NewFlagSet("mptcpd", flag.ContinueOnError)
		set.String("memory-limit", "", "")
		set.String("config", "", "")
		if err := set.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cc := cli.NewContext(cli.NewApp(), set, nil)
		if err := applyConfig(cc); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		ret, err := memoryLimit(cc)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got := debug.SetMemoryLimit(-1); got != tc.want || ret != tc.ret {
			t.Errorf("%q: Go's memory limit %d (returned %d), want %d (%d)", tc.args, got, ret, tc.want, tc.ret)
		}
	}
	// A bad value is an error, and changes nothing.
	debug.SetMemoryLimit(before)
	set := flag.NewFlagSet("mptcpd", flag.ContinueOnError)
	set.String("memory-limit", "1MiB", "")
	if _, err := memoryLimit(cli.NewContext(cli.NewApp(), set, nil)); err == nil || debug.SetMemoryLimit(-1) != before {
		t.Errorf("--memory-limit 1MiB: %v, Go's limit %d", err, debug.SetMemoryLimit(-1))
	}
}
