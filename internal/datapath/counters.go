package datapath

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Counter is a datapath counter: an index into the per-CPU counter array (enum dp_counter).
type Counter = DatapathDpCounter

// The counters the connection layer reads to follow the datapath's queues.
const (
	CounterTicketUsed  = DatapathDpCounterDP_PassiveTicketUsed // PassiveTicketUsed
	CounterSubslotUsed = DatapathDpCounterDP_JoinSlotUsed      // JoinSlotUsed
	CounterMPJoinSynRx = DatapathDpCounterDP_MPJoinSynRx       // MPJoinSynRx
	CounterEventLost   = DatapathDpCounterDP_EventLost         // EventLost
)

// The counters' names are their enumerators in enum dp_counter (bpf/datapath_types.h) without
// DP_: the C source spells them as the kernel's MPTcpExt MIB does where it has the counter
// (DP_MPCapableSYNRX → MPCapableSYNRX), so a counter added in C gets its name without a Go change.
func counterName(enumerator string) string { return strings.TrimPrefix(enumerator, "DP_") }

// counterNames names the counters of enum dp_counter in the object's BTF, by index. The
// enumerators must be 0..DP_COUNTER_MAX-1 as bpf2go generated them, with names that differ.
func counterNames(spec *ebpf.CollectionSpec) ([]string, error) {
	var e *btf.Enum
	if err := spec.Types.TypeByName("dp_counter", &e); err != nil {
		return nil, fmt.Errorf("datapath counters: %w", err)
	}
	names := make([]string, DatapathDpCounterDP_COUNTER_MAX)
	index := map[string]string{}
	for _, v := range e.Values {
		if v.Name == "DP_COUNTER_MAX" {
			if v.Value != uint64(len(names)) {
				return nil, fmt.Errorf("datapath counters: DP_COUNTER_MAX is %d in C, %d in Go: regenerate gen/", v.Value, len(names))
			}
			continue
		}
		if v.Value >= uint64(len(names)) || names[v.Value] != "" {
			return nil, fmt.Errorf("datapath counters: %s = %d is out of place: regenerate gen/", v.Name, v.Value)
		}
		n := counterName(v.Name)
		if other, dup := index[n]; dup {
			return nil, fmt.Errorf("datapath counters: %s and %s are both named %s", other, v.Name, n)
		}
		names[v.Value], index[n] = n, v.Name
	}
	for i, n := range names {
		if n == "" {
			return nil, fmt.Errorf("datapath counters: no enumerator for %d", i)
		}
	}
	return names, nil
}

// Counters returns every datapath counter, summed over CPUs, by name.
func (d *Datapath) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(d.counterNames))
	for idx, name := range d.counterNames {
		v, err := d.Counter(Counter(idx))
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// Counter returns one datapath counter, summed over CPUs.
func (d *Datapath) Counter(idx Counter) (uint64, error) {
	var per []uint64
	if err := d.objs.DpCounters.Lookup(uint32(idx), &per); err != nil {
		return 0, fmt.Errorf("read counter %d: %w", idx, err)
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum, nil
}
