// Package bpfenum names the counters of a BPF object from the C enum that indexes them, as the
// object's BTF carries it: KCC_SUBS_SEEN is SubsSeen.
package bpfenum

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Names returns the names of the n counters of enum name in spec, by value: each enumerator
// without prefix, in CamelCase. The enumerator prefix+"NR_COUNTERS" (the count) is skipped; a
// value n or above means the Go side is older than the object: regenerate.
func Names(spec *ebpf.CollectionSpec, name, prefix string, n int) ([]string, error) {
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		return nil, err
	}
	return fromEnum(e, prefix, n)
}

func fromEnum(e *btf.Enum, prefix string, n int) ([]string, error) {
	names := make([]string, n)
	for _, v := range e.Values {
		if v.Name == prefix+"NR_COUNTERS" {
			continue
		}
		if v.Value >= uint64(n) {
			return nil, fmt.Errorf("%s = %d is out of place: regenerate", v.Name, v.Value)
		}
		var b strings.Builder
		for _, w := range strings.Split(strings.TrimPrefix(v.Name, prefix), "_") {
			if w != "" {
				b.WriteString(w[:1] + strings.ToLower(w[1:]))
			}
		}
		names[v.Value] = b.String()
	}
	return names, nil
}
