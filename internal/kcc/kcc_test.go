package kcc

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/structops"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// available lists the host's registered congestion controls.
func available(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// haveLinks reports whether this kernel has struct_ops links (Linux 6.4).
func haveLinks(t *testing.T) bool {
	spec, err := LoadKcc()
	if err != nil {
		t.Fatal(err)
	}
	switch err := structops.HaveLink(spec.Maps["lia"]); {
	case err == nil:
		return true
	case errors.Is(err, ebpf.ErrNotSupported):
		return false
	default:
		t.Fatal(err)
		return false
	}
}

func checkRegistered(t *testing.T, names []string, want bool) {
	t.Helper()
	have := available(t)
	for _, n := range names {
		if slices.Contains(have, n) != want {
			t.Errorf("%s registered: %t, want %t (available: %v)", n, !want, want, have)
		}
	}
}

// TestLoadClose: the three controls register under their names (with a suffix of the test's
// own), through links or by storing the maps' values (the way of kernels before 6.4), and Close
// unregisters them. A second load of the same names is refused with a clear error.
func TestLoadClose(t *testing.T) {
	testenv.RequireRoot(t)
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("nolink=%t", noLink), func(t *testing.T) {
			suffix := fmt.Sprintf("_t%d", os.Getpid())
			l, err := Load(Options{Suffix: suffix, NoLink: noLink})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"lia" + suffix, "olia" + suffix, "balia" + suffix}
			if wantLinked := !noLink && haveLinks(t); !slices.Equal(l.Names, want) || l.Linked != wantLinked {
				t.Errorf("names %v linked %t, want %v linked %t", l.Names, l.Linked, want, wantLinked)
			}
			checkRegistered(t, want, true)
			if l2, err := Load(Options{Suffix: suffix, NoLink: noLink}); err == nil {
				l2.Close()
				t.Errorf("a second load of the same names succeeded")
			} else if !strings.Contains(err.Error(), "registered already") {
				t.Errorf("second load: %v, want 'registered already'", err)
			}
			checkRegistered(t, want, true)
			c, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c["SubsSeen"]; !ok || len(c) != int(KccKccCounterKCC_NR_COUNTERS) {
				t.Errorf("counters %v", c)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			checkRegistered(t, want, false)
		})
	}
}

// TestPinned: pinned, the controls outlive Close (the process) until Unload, which removes the
// registrations and the pin directory; Show lists them and their counters meanwhile.
func TestPinned(t *testing.T) {
	testenv.RequireRoot(t)
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("nolink=%t", noLink), func(t *testing.T) {
			suffix := fmt.Sprintf("_p%d", os.Getpid())
			dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("mptcpgo-test-%d", os.Getpid()), "cc")
			t.Cleanup(func() {
				Unload(dir)
				os.Remove(filepath.Dir(dir))
			})
			l, err := Load(Options{Suffix: suffix, NoLink: noLink, PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			checkRegistered(t, l.Names, true)
			if _, err := Load(Options{Suffix: "_x", PinDir: dir}); err == nil || !strings.Contains(err.Error(), "holds pins already") {
				t.Errorf("load into a used pin directory: %v", err)
			}
			p, err := Show(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(slices.Values(l.Names))
			if !slices.Equal(p.Names, want) || p.Counters == nil {
				t.Errorf("show: %+v, want names %v and counters", p, want)
			}
			names, err := Unload(dir)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Sort(names); !slices.Equal(names, want) {
				t.Errorf("unloaded %v, want %v", names, want)
			}
			checkRegistered(t, l.Names, false)
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("pin directory left: %v", err)
			}
			if p, err := Show(dir); err != nil || len(p.Names) != 0 {
				t.Errorf("show after unload: %+v, %v", p, err)
			}
		})
	}
}

// TestVerifierCost reports the instructions the verifier processed for each program on this
// kernel (E6 of the coupled congestion control's issue) and holds them within
// testenv.VerifierBudget.
func TestVerifierCost(t *testing.T) {
	testenv.RequireRoot(t)
	// Loaded as for use (by map value where the kernel has no struct_ops links, which registers
	// them), under names of the test's own.
	l, err := Load(Options{Suffix: fmt.Sprintf("_v%d", os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	objs := &l.objs
	progs := map[string]*ebpf.Program{
		"lia_cong_avoid": objs.LiaCongAvoid, "olia_cong_avoid": objs.OliaCongAvoid, "balia_cong_avoid": objs.BaliaCongAvoid,
		"balia_ssthresh": objs.BaliaSsthresh, "lia_set_state": objs.LiaSetState, "lia_init": objs.LiaInit,
	}
	for _, name := range slices.Sorted(maps.Keys(progs)) {
		testenv.CheckVerifierCost(t, name, progs[name])
	}
}
