package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/tcattach"
	"golang.org/x/sys/unix"
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

// bpfFLink is BPF_F_LINK: a struct_ops map made for a link (.struct_ops.link sections).
const bpfFLink = 1 << 13

// caMaps are the struct_ops maps of our two congestion-control twins.
var caMaps = [2]string{"ca_a", "ca_b"}

// ccPrefix starts the names of our congestion controls and of their struct_ops maps:
// mpg<pid>a and mpg<pid>b.
const ccPrefix = "mpg"

var ccMapName = regexp.MustCompile(`^` + ccPrefix + `([0-9]+)[ab]$`)

// haveStructOpsLink reports whether a struct_ops map can be made for a link here: it creates
// one like ms, empty (an empty struct_ops map registers nothing), and closes it. Kernels before
// Linux 6.4 refuse the flag with EINVAL.
func haveStructOpsLink(ms *ebpf.MapSpec) error {
	probe := ms.Copy()
	probe.Contents = nil
	probe.Flags |= bpfFLink
	m, err := ebpf.NewMap(probe)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("struct_ops link: %w", ebpf.ErrNotSupported)
		}
		return err
	}
	return m.Close()
}

// haveRTOMax reports whether TCP sockets have TCP_RTO_MAX_MS here.
func haveRTOMax() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS); err != nil {
		return fmt.Errorf("TCP_RTO_MAX_MS: %w", err)
	}
	return nil
}

// removeStaleStructOps unregisters the congestion controls that datapaths of dead processes
// registered without a link (they outlive their process): struct_ops maps named mpg<pid>a or
// mpg<pid>b whose process is gone and whose cgroup mptcpgo-<pid> under cgroupRoot is gone too
// (removeStaleCgroups removed it, or it never existed). The cgroup keeps a datapath of another
// PID namespace, whose pid means nothing here, from being taken for dead.
func removeStaleStructOps(cgroupRoot string, log *slog.Logger) {
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return // ErrNotExist: the end
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := m.Info(); err == nil && info.Type == ebpf.StructOpsMap {
			if sm := ccMapName.FindStringSubmatch(info.Name); sm != nil {
				pid, _ := strconv.Atoi(sm[1])
				if pid > 0 && !processAlive(pid) && !exists(filepath.Join(cgroupRoot, cgroupPrefix+sm[1])) {
					if err := m.Delete(uint32(0)); err == nil {
						log.Info("removed the congestion control a dead process left registered", "name", info.Name)
					} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
						log.Warn("could not remove a dead process's congestion control", "name", info.Name, "err", err)
					}
				}
			}
		}
		m.Close()
	}
}

// filterName names our cls_bpf filters (where there is no tcx): mpg<pid>_syn_in and
// mpg<pid>_syn_out, so that a later datapath can tell a dead process's from a live one's.
func filterName(pid int, dir string) string { return fmt.Sprintf("%s%d_syn_%s", ccPrefix, pid, dir) }

var filterNameRE = regexp.MustCompile(`^` + ccPrefix + `([0-9]+)_syn_(in|out)$`)

// removeStaleFilters deletes from an interface the SYN option rewriter filters of datapaths
// whose process is gone (and its cgroup with it, as for removeStaleStructOps). It runs on a
// thread in the interface's namespace.
func (d *Datapath) removeStaleFilters(ifindex int) {
	removed, err := tcattach.RemoveStale(ifindex, func(name string) bool {
		m := filterNameRE.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid > 0 && pid != os.Getpid() && !processAlive(pid) && !exists(filepath.Join(d.cg.root.dir, cgroupPrefix+m[1]))
	})
	if len(removed) > 0 {
		d.log.Info("removed the TC filters a dead process left on an interface", "ifindex", ifindex, "filters", removed)
	}
	if err != nil {
		d.log.Warn("look for stale TC filters", "ifindex", ifindex, "err", err)
	}
}

// processAlive reports whether a process with this pid exists here.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// exists reports whether path exists (or cannot be told not to).
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}
