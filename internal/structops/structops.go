// Package structops holds what loading a struct_ops congestion control needs beyond
// cilium/ebpf: whether the kernel has struct_ops links, the name a registration goes by, and a
// look at every struct_ops map on the host. The datapath's congestion control and the coupled
// ones for the kernel's own MPTCP sockets (internal/kcc) use it.
package structops

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// FLink is BPF_F_LINK: a struct_ops map made for a link (.struct_ops.link sections).
const FLink = 1 << 13

// HaveLink reports whether a struct_ops map can be made for a link here: it creates
// one like ms, empty (an empty struct_ops map registers nothing), and closes it. Kernels before
// Linux 6.4 refuse the flag with EINVAL.
func HaveLink(ms *ebpf.MapSpec) error {
	probe := ms.Copy()
	probe.Contents = nil
	probe.Flags |= FLink
	m, err := ebpf.NewMap(probe)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("struct_ops link: %w", ebpf.ErrNotSupported)
		}
		return err
	}
	return m.Close()
}

// SetName overwrites the name member of a struct_ops map's initial value.
func SetName(ms *ebpf.MapSpec, name string) error {
	st, ok := ms.Value.(*btf.Struct)
	if !ok || len(ms.Contents) != 1 {
		return fmt.Errorf("struct_ops map %s: unexpected layout", ms.Name)
	}
	val, ok := ms.Contents[0].Value.([]byte)
	if !ok {
		return fmt.Errorf("struct_ops map %s: value is %T", ms.Name, ms.Contents[0].Value)
	}
	for _, m := range st.Members {
		if m.Name != "name" {
			continue
		}
		off := int(m.Offset.Bytes())
		if off+16 > len(val) || len(name) > 15 {
			return fmt.Errorf("struct_ops map %s: name %q does not fit", ms.Name, name)
		}
		val = append([]byte(nil), val...)
		clear(val[off : off+16])
		copy(val[off:], name)
		ms.Contents[0].Value = val
		return nil
	}
	return fmt.Errorf("struct_ops map %s: no name member", ms.Name)
}

// ForEach calls f for each struct_ops map on the host, with its name.
func ForEach(f func(m *ebpf.Map, name string)) {
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
			f(m, info.Name)
		}
		m.Close()
	}
}
