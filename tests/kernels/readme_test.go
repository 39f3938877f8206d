package kernels_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/internal/vm"
)

// TestReadmeKernelTable: the README's table of kernels says what the kernel tests check: for
// each kernel the tests boot, the features its guests expect off (and nothing else), or that
// it does not run; and every feature the datapath probes has a row in the feature table, with
// the Linux release the report names.
func TestReadmeKernelTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	row := func(first string) string {
		for line := range strings.SplitSeq(readme, "\n") {
			if strings.HasPrefix(line, "| "+first+" |") {
				return line
			}
		}
		return ""
	}
	ticked := regexp.MustCompile("`([a-z0-9_]+)`")
	for _, k := range vm.Kernels {
		r := row(k.Name)
		if r == "" {
			t.Errorf("README: no row for Linux %s in the kernel table", k.Name)
			continue
		}
		cells := strings.Split(strings.Trim(r, "| "), " | ")
		if k.Unsupported != "" {
			if !strings.Contains(r, "does not run") {
				t.Errorf("README: Linux %s's row does not say it does not run: %s", k.Name, r)
			}
			continue
		}
		var off []string
		for _, m := range ticked.FindAllStringSubmatch(cells[len(cells)-1], -1) {
			off = append(off, m[1])
		}
		want := slices.Clone(k.Missing)
		slices.Sort(off)
		slices.Sort(want)
		if !slices.Equal(off, want) {
			t.Errorf("README: Linux %s's features off: %v, the tests expect %v", k.Name, off, want)
		}
	}
	for _, f := range (datapath.Features{}).FeatureList() {
		r := row("`" + f.Name + "`")
		if r == "" || !strings.Contains(r, "| "+f.Kernel+" |") {
			t.Errorf("README: feature table row for %s (Linux %s): %q", f.Name, f.Kernel, r)
		}
	}
}
