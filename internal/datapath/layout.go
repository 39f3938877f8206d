package datapath

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/mptcpgo/mptcpgo/gen"
)

// sharedStructs pairs the C structs shared with Go with the Go types that mirror them.
var sharedStructs = map[string]uintptr{
	"mptcp_opt": unsafe.Sizeof(gen.ObserverMptcpOpt{}),
	"capture":   unsafe.Sizeof(gen.ObserverCapture{}),
	"conn":      unsafe.Sizeof(gen.DatapathConn{}),
	"sub":       unsafe.Sizeof(gen.DatapathSub{}),
	"sk_sub":    unsafe.Sizeof(gen.DatapathSkSub{}),
	"event":     unsafe.Sizeof(gen.DatapathEvent{}),
	"ticket":    unsafe.Sizeof(gen.DatapathTicket{}),
	"txmap":     unsafe.Sizeof(gen.DatapathTxmap{}),
}

// checkStructSizes compares the sizes of the shared structs in the object's BTF with the Go
// types, so that a C change without a regenerate fails at load rather than corrupting maps.
func checkStructSizes(spec *ebpf.CollectionSpec) error {
	for name, goSize := range sharedStructs {
		var s *btf.Struct
		if err := spec.Types.TypeByName(name, &s); err != nil {
			continue // not part of this object
		}
		if uintptr(s.Size) != goSize {
			return fmt.Errorf("struct %s: C size %d, Go size %d: regenerate gen/", name, s.Size, goSize)
		}
	}
	return nil
}
