package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/structops"
	"github.com/mptcpgo/mptcpgo/internal/tcattach"
)

// Features are the kernel facilities the datapath found at Open, each probed by trying it
// (never by kernel version). Where one is missing the datapath works without it, at the cost
// FeatureList states.
type Features struct {
	// StructOpsLink: the congestion control is registered through a BPF link (Linux 6.4), which
	// goes when the process does. Without it the registration is made by storing the struct_ops
	// map's value and undone at Close; a process killed before Close leaves it registered until
	// the next datapath's Open removes it.
	StructOpsLink bool
	// TCX: TC programs attach as tcx links (Linux 6.6), which go when the process does.
	// Without it they are direct-action cls_bpf filters on a clsact qdisc (created where none
	// is, removed with our last filter); a process killed before Close leaves its filters on
	// the interfaces until the next datapath attaches there and removes them.
	TCX bool
	// RTOMax: TCP_RTO_MAX_MS (Linux 6.15) caps a stale subflow's retransmission timeout.
	RTOMax bool
}

// Feature is one line of the datapath's feature report.
type Feature struct {
	Name   string // stable identifier
	Active bool
	Kernel string // the first Linux release that has it
	// Without is what the user loses while it is missing (empty when Active).
	Without string
}

// Features returns what Open found.
func (d *Datapath) Features() Features { return d.features }

// FeatureList returns the feature report: every probed feature, active or not, with what its
// absence costs.
func (f Features) FeatureList() []Feature {
	list := []Feature{
		{Name: "struct_ops_link", Active: f.StructOpsLink, Kernel: "6.4",
			Without: "the congestion control is registered without a link: if mptcpd is killed it stays registered until the next mptcpd starts and removes it"},
		{Name: "tcx", Active: f.TCX, Kernel: "6.6",
			Without: "TC programs are cls_bpf filters on a clsact qdisc: if mptcpd is killed they stay on the interfaces (its SYN option rewriter still acting there) until the next mptcpd attaches to them and removes them"},
		{Name: "tcp_rto_max_ms", Active: f.RTOMax, Kernel: "6.15",
			Without: "a stale subflow's retransmission timeout is not capped at 1 s: a path that comes back is noticed at the next exponential-backoff retransmission, up to 120 s later, instead of within about a second"},
	}
	for i := range list {
		if list[i].Active {
			list[i].Without = ""
		}
	}
	return list
}

// Missing returns the features that are not active.
func (f Features) Missing() []Feature {
	var out []Feature
	for _, x := range f.FeatureList() {
		if !x.Active {
			out = append(out, x)
		}
	}
	return out
}

// parseWithout checks Config.Without's names.
func parseWithout(names []string) (map[string]bool, error) {
	known := map[string]bool{}
	for _, f := range (Features{}).FeatureList() {
		known[f.Name] = true
	}
	out := map[string]bool{}
	for _, n := range names {
		if !known[n] {
			return nil, fmt.Errorf("unknown datapath feature %q", n)
		}
		out[n] = true
	}
	return out, nil
}

// caMaps are the struct_ops maps of our two congestion-control twins.
var caMaps = [2]string{"ca_a", "ca_b"}

// ccPrefix starts the names of our congestion controls and of their struct_ops maps:
// mpg<pid>a and mpg<pid>b.
const ccPrefix = "mpg"

var ccMapName = regexp.MustCompile(`^` + ccPrefix + `([0-9]+)[ab]$`)

// haveRTOMax reports whether TCP sockets have TCP_RTO_MAX_MS here (ENOPROTOOPT where not).
func haveRTOMax() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS); err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) {
			err = fmt.Errorf("%w: %w", err, ebpf.ErrNotSupported)
		}
		return fmt.Errorf("TCP_RTO_MAX_MS: %w", err)
	}
	return nil
}

// probe runs a feature's probe unless the feature is turned off: true when it is there, false
// when the probe says it is not (an error matching ErrNotSupported), and an error when the
// probe failed for another reason.
func probe(off bool, f func() error) (bool, error) {
	if off {
		return false, nil
	}
	err := f()
	if err == nil {
		return true, nil
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	return false, fmt.Errorf("probe kernel features: %w", err)
}

// lockDir holds one lock file per datapath, mpg<pid>.lock, which its process holds (flock) while
// the datapath is open. It is how a later datapath tells what a dead one left behind (struct_ops
// registrations without a link, cls_bpf filters: both outlive their process) from what a live
// one holds: a pid alone cannot say, in another PID namespace it names another process.
const lockDir = "/run/lock/mptcpgo"

// ownerLock is this datapath's lock file.
type ownerLock struct {
	f *os.File
	// inherited: the file was there before we took it, so a datapath of this same pid (an
	// earlier process) died without closing: what is named after our pid is its leftovers.
	inherited bool
}

// takeOwnerLock creates (or takes over) and locks mpg<pid>.lock for this process.
func takeOwnerLock() (*ownerLock, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	path := filepath.Join(lockDir, fmt.Sprintf("%s%d.lock", ccPrefix, os.Getpid()))
	inherited := false
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		inherited = true
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w (a datapath of another PID namespace with our pid shares this /run)", path, err)
	}
	return &ownerLock{f: f, inherited: inherited}, nil
}

// release removes and unlocks the lock file.
func (l *ownerLock) release() error {
	err := os.Remove(l.f.Name())
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ownerGone reports whether the datapath of that pid is known to be gone: its lock file is here
// and nobody holds it (for our own pid: the file was there before we took it). Without a lock
// file (a datapath that sees another /run, as in another container) nothing is known: false.
func (l *ownerLock) ownerGone(pid int) bool {
	if pid == os.Getpid() {
		return l.inherited
	}
	f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("%s%d.lock", ccPrefix, pid)), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	// A lock taken here is dropped with the descriptor, at the Close above.
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}

// removeStaleStructOps unregisters the congestion controls that datapaths of dead processes
// registered without a link (they outlive their process): struct_ops maps named mpg<pid>a or
// mpg<pid>b whose owner is gone (ownerGone). It runs before our own maps are loaded, so a
// leftover of an earlier process with our pid cannot collide with ours.
func removeStaleStructOps(lock *ownerLock, log *slog.Logger) {
	structops.ForEach(func(m *ebpf.Map, name string) {
		sm := ccMapName.FindStringSubmatch(name)
		if sm == nil {
			return
		}
		if pid, _ := strconv.Atoi(sm[1]); pid <= 0 || !lock.ownerGone(pid) {
			return
		}
		switch err := m.Delete(uint32(0)); {
		case err == nil:
			log.Info("removed the congestion control a dead process left registered", "name", name)
		case errors.Is(err, ebpf.ErrKeyNotExist), errors.Is(err, unix.EINPROGRESS):
			// Unregistered already; EINPROGRESS: and still in use by sockets that outlive it.
		default:
			log.Warn("could not remove a dead process's congestion control", "name", name, "err", err)
		}
	})
}

// unregisterByName deletes the value of the struct_ops maps with these names: the registrations
// a failed load may have made before it failed.
func unregisterByName(names ...string) {
	structops.ForEach(func(m *ebpf.Map, name string) {
		if slices.Contains(names, name) {
			m.Delete(uint32(0))
		}
	})
}

// filterName names our cls_bpf filters (where there is no tcx): mpg<pid>_syn_in and
// mpg<pid>_syn_out, so that a later datapath can tell a dead process's from a live one's.
func filterName(pid int, dir string) string { return fmt.Sprintf("%s%d_syn_%s", ccPrefix, pid, dir) }

var filterNameRE = regexp.MustCompile(`^` + ccPrefix + `([0-9]+)_syn_(in|out)$`)

// removeStaleFilters deletes from an interface the SYN option rewriter filters of datapaths
// whose owner is gone (ownerGone). It runs on a thread in the interface's namespace, before our
// own filters are added there.
func (d *Datapath) removeStaleFilters(ifindex int) {
	removed, err := tcattach.RemoveStale(ifindex, func(name string) bool {
		m := filterNameRE.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid > 0 && d.lock.ownerGone(pid)
	})
	if len(removed) > 0 {
		d.log.Info("removed the TC filters a dead process left on an interface", "ifindex", ifindex, "filters", removed)
	}
	if err != nil {
		d.log.Warn("look for stale TC filters", "ifindex", ifindex, "err", err)
	}
}
