// Package kcc loads the coupled congestion controls for the Linux kernel's own MPTCP sockets
// (bpf/kcc.bpf.c): LIA, OLIA and BALIA as BPF congestion controls, which an application selects
// with TCP_CONGESTION on an IPPROTO_MPTCP socket. `mptcpctl cc load` pins them, so that they stay
// registered after it exits (and whether mptcpd runs or not) until `mptcpctl cc unload`.
//
// Kernels with struct_ops links (Linux 6.4) register each algorithm through a link, pinned;
// older ones register it when its struct_ops map's value is stored, and the map is pinned so that
// Unload can find it and delete the value.
package kcc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/bpfenum"
	"github.com/mptcpgo/mptcpgo/internal/structops"
)

// Algorithms are the names the controls register under (with Options.Suffix appended).
var Algorithms = []string{"lia", "olia", "balia"}

// DefaultPinDir is where `mptcpctl cc load` pins them.
const DefaultPinDir = "/sys/fs/bpf/mptcpgo/cc"

// statsPin is the counters' pin in a pin directory; every other entry is a registration.
const statsPin = "stats"

// Options say how to load.
type Options struct {
	// PinDir, when set, is where the registrations and the counters are pinned (on a BPF file
	// system, mounted at /sys/fs/bpf if it is not): they outlive the process until Unload. Unset,
	// Close unregisters them.
	PinDir string
	// Suffix is appended to each algorithm's name, so that a test can register its own beside
	// the ones an operator loaded ("lia" + "_t42"); names have at most 15 bytes.
	Suffix string
	// NoLink registers the way kernels without struct_ops links need, on any kernel (tests).
	NoLink bool
}

// Loaded is a loaded set of the controls.
type Loaded struct {
	// Names are the registered names, in the order of Algorithms.
	Names []string
	// Linked: registered through struct_ops links (else by storing the maps' values).
	Linked bool

	objs       KccObjects
	links      []link.Link
	registered []*ebpf.Map
	pinned     bool
}

// Load registers the three controls.
func Load(o Options) (_ *Loaded, err error) {
	spec, err := LoadKcc()
	if err != nil {
		return nil, fmt.Errorf("kcc: %w", err)
	}
	l := &Loaded{}
	for _, a := range Algorithms {
		name := a + o.Suffix
		if err := structops.SetName(spec.Maps[a], name); err != nil {
			return nil, fmt.Errorf("kcc: %w", err)
		}
		l.Names = append(l.Names, name)
	}
	if o.PinDir != "" {
		if err := preparePinDir(o.PinDir); err != nil {
			return nil, err
		}
	}
	if !o.NoLink {
		switch err := structops.HaveLink(spec.Maps[Algorithms[0]]); {
		case err == nil:
			l.Linked = true
		case !errors.Is(err, ebpf.ErrNotSupported):
			return nil, fmt.Errorf("kcc: probe struct_ops links: %w", err)
		}
	}
	if !l.Linked {
		for _, a := range Algorithms {
			spec.Maps[a].Flags &^= structops.FLink
		}
	}
	defer func() {
		if err != nil {
			l.unregister()
			l.objs.Close()
		}
	}()
	if err := spec.LoadAndAssign(&l.objs, nil); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("kcc: a congestion control named %s is registered already", strings.Join(l.Names, ", "))
		}
		return nil, fmt.Errorf("kcc: load: %w", err)
	}
	for i, m := range l.maps() {
		if !l.Linked {
			l.registered = append(l.registered, m)
			continue
		}
		lk, err := link.AttachStructOps(link.StructOpsOptions{Map: m})
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("kcc: a congestion control named %s is registered already", l.Names[i])
			}
			return nil, fmt.Errorf("kcc: register %s: %w", l.Names[i], err)
		}
		l.links = append(l.links, lk)
	}
	if o.PinDir != "" {
		for i, m := range l.maps() {
			p := filepath.Join(o.PinDir, l.Names[i])
			if l.Linked {
				err = l.links[i].Pin(p)
			} else {
				err = m.Pin(p)
			}
			if err != nil {
				Unload(o.PinDir) // what this load pinned so far
				return nil, fmt.Errorf("kcc: pin %s: %w", l.Names[i], err)
			}
		}
		if err := l.objs.KccStats.Pin(filepath.Join(o.PinDir, statsPin)); err != nil {
			Unload(o.PinDir) // what this load pinned so far
			return nil, fmt.Errorf("kcc: pin counters: %w", err)
		}
		l.pinned = true
	}
	return l, nil
}

func (l *Loaded) maps() []*ebpf.Map { return []*ebpf.Map{l.objs.Lia, l.objs.Olia, l.objs.Balia} }

// unregister undoes the registrations made so far.
func (l *Loaded) unregister() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	l.links = nil
	for _, m := range l.registered {
		if err := m.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("kcc: unregister %s: %w", m, err))
		}
	}
	l.registered = nil
	return errors.Join(errs...)
}

// Close lets the controls go: unregistered, unless they are pinned, which keeps them until
// Unload.
func (l *Loaded) Close() error {
	var errs []error
	if l.pinned {
		for _, lk := range l.links {
			errs = append(errs, lk.Close()) // the pin holds the link
		}
		l.links, l.registered = nil, nil
	} else {
		errs = append(errs, l.unregister())
	}
	errs = append(errs, l.objs.Close())
	return errors.Join(errs...)
}

// Counters reads the programs' counters, summed over the CPUs.
func (l *Loaded) Counters() (map[string]uint64, error) { return readCounters(l.objs.KccStats) }

// Pinned describes what a pin directory holds.
type Pinned struct {
	Names    []string          // the registrations pinned
	Counters map[string]uint64 // nil if the counters are not pinned
}

// Show reads a pin directory; it is empty (no error) when nothing is loaded there.
func Show(dir string) (Pinned, error) {
	var p Pinned
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("kcc: %w", err)
	}
	for _, e := range ents {
		if e.Name() == statsPin {
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, statsPin), &ebpf.LoadPinOptions{ReadOnly: true})
			if err != nil {
				return p, fmt.Errorf("kcc: counters: %w", err)
			}
			p.Counters, err = readCounters(m)
			m.Close()
			if err != nil {
				return p, err
			}
			continue
		}
		p.Names = append(p.Names, e.Name())
	}
	slices.Sort(p.Names)
	return p, nil
}

// Unload unregisters what a pin directory holds and removes the pins; it returns the names
// unregistered. A socket that uses one keeps it until it closes.
func Unload(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kcc: %w", err)
	}
	var names []string
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.Name() == statsPin {
			errs = append(errs, os.Remove(p))
			continue
		}
		if err := unpinRegistration(p); err != nil {
			errs = append(errs, fmt.Errorf("kcc: unload %s: %w", e.Name(), err))
			continue
		}
		names = append(names, e.Name())
	}
	if err := errors.Join(errs...); err != nil {
		return names, err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return names, fmt.Errorf("kcc: %w", err)
	}
	return names, nil
}

// unpinRegistration ends one pinned registration: a link is unpinned and closed (the last
// reference: it unregisters), a struct_ops map has its value deleted and is unpinned.
func unpinRegistration(p string) error {
	if lk, err := link.LoadPinnedLink(p, nil); err == nil {
		defer lk.Close()
		return lk.Unpin()
	}
	m, err := ebpf.LoadPinnedMap(p, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return m.Unpin()
}

func readCounters(m *ebpf.Map) (map[string]uint64, error) {
	names, err := counterNames()
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for c, name := range names {
		var per []uint64
		if err := m.Lookup(uint32(c), &per); err != nil {
			return nil, fmt.Errorf("kcc: counters: %w", err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// counterNames names the counters by index, from enum kcc_counter in the object's BTF:
// KCC_SUBS_SEEN is SubsSeen.
func counterNames() ([]string, error) {
	spec, err := LoadKcc()
	if err != nil {
		return nil, fmt.Errorf("kcc: %w", err)
	}
	names, err := bpfenum.Names(spec, "kcc_counter", "KCC_", int(KccKccCounterKCC_NR_COUNTERS))
	if err != nil {
		return nil, fmt.Errorf("kcc counters: %w", err)
	}
	return names, nil
}

// bpfFSMagic is BPF_FS_MAGIC.
const bpfFSMagic = 0xcafe4a11

// preparePinDir makes dir, on a BPF file system: /sys/fs/bpf is mounted when it is not one. A
// pin directory that holds pins already is refused (loaded already).
func preparePinDir(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("kcc: %s holds pins already: loaded (unload first)", dir)
	}
	root := "/sys/fs/bpf"
	if strings.HasPrefix(filepath.Clean(dir)+"/", root+"/") {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return fmt.Errorf("kcc: %s: %w", root, err)
		}
		if uint32(st.Type) != bpfFSMagic {
			if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("kcc: mount the BPF file system on %s: %w", root, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kcc: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("kcc: %s: %w", dir, err)
	}
	if uint32(st.Type) != bpfFSMagic {
		return fmt.Errorf("kcc: %s is not on a BPF file system", dir)
	}
	return nil
}
