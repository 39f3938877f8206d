package datapath

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// sharedStructs pairs the C structs shared with Go with the Go types that mirror them.
var sharedStructs = map[string]uintptr{
	"conn":   unsafe.Sizeof(DatapathConn{}),
	"sub":    unsafe.Sizeof(DatapathSub{}),
	"sk_sub": unsafe.Sizeof(DatapathSkSub{}),
	"event":  unsafe.Sizeof(DatapathEvent{}),
	"ticket": unsafe.Sizeof(DatapathTicket{}),
	"txmap":  unsafe.Sizeof(DatapathTxmap{}),
}

// CheckStructSizes compares the sizes of the structs an object shares with Go (name in the
// object's BTF → size of the Go type) with its BTF, so that a C change without a regenerate
// fails at load rather than corrupting maps.
func CheckStructSizes(spec *ebpf.CollectionSpec, sizes map[string]uintptr) error {
	for name, goSize := range sizes {
		var s *btf.Struct
		if err := spec.Types.TypeByName(name, &s); err != nil {
			continue // not part of this object
		}
		if uintptr(s.Size) != goSize {
			return fmt.Errorf("struct %s: C size %d, Go size %d: run make generate", name, s.Size, goSize)
		}
	}
	return nil
}

// VerifierError adds the verifier log's tail to a load error.
func VerifierError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w\n%+v", err, ve)
	}
	return err
}
