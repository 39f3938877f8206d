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
	CounterTicketUsed  = DatapathDpCounterDP_TICKET_USED  // PassiveTicketUsed
	CounterSubslotUsed = DatapathDpCounterDP_SUBSLOT_USED // JoinSlotUsed
	CounterMPJoinSynRx = DatapathDpCounterDP_MPJ_SYN_RX   // MPJoinSynRx
)

// The counters' names follow the kernel's MPTcpExt MIB where it has the counter. They are derived
// from the enumerators of enum dp_counter (bpf/datapath_types.h), read from the object's BTF:
// DP_ comes off, and each word is spelled by counterWords or else in title case
// (DP_MPJ_SYNACK_HMAC_FAIL → MPJoin SynAck HMacFailure). In the MPCapable counters the
// handshake words stay in capitals, as the kernel spells them (DP_MPC_SYNACK_RX →
// MPCapableSYNACKRX). A counter added in C gets its name without a Go change.
var (
	// counterWords spells a word, or two joined by '_', of an enumerator.
	counterWords = map[string]string{
		"MPC":       "MPCapable",
		"MPJ":       "MPJoin",
		"MP":        "MP",
		"DSS":       "DSS",
		"TCP":       "TCP",
		"OPT":       "Option",
		"FASTCLOSE": "MPFastclose",
		"TCPRST":    "MPRst",
		"SYNACK":    "SynAck",
		"NOMAP":     "NoMapping",
		"NOSPACE":   "NoSpace",
		"BADKEY":    "BadKey",
		"NOKEY":     "NoKey",
		"HMAC_FAIL": "HMacFailure",
	}
	// mpcCapitals are the words the MPCapable counters keep in capitals.
	mpcCapitals = map[string]bool{"SYN": true, "SYNACK": true, "ACK": true, "RX": true, "TX": true}
	// counterExceptions name the counters whose names are not their enumerators' words: the
	// kernel's own names (AddAddr, RmAddr, MPJoinNoTokenFound), and names that say more than
	// the enumerator.
	counterExceptions = map[string]string{
		"DP_RX_MAP":             "MappingRx",
		"DP_FASTPATH_ACK":       "DataAckFastPath",
		"DP_ACK_SENT":           "AckOnDemand",
		"DP_ADD_ADDR_RX":        "AddAddr",
		"DP_RM_ADDR_RX":         "RmAddr",
		"DP_MPJ_RX":             "MPJoinUnexpected",
		"DP_UNMAPPED_RX":        "UnmappedDataRx",
		"DP_HDR_MALFORMED":      "TCPOptionsMalformed",
		"DP_SACK_STRIPPED":      "SackPermStripped",
		"DP_TICKET_USED":        "PassiveTicketUsed",
		"DP_MPJ_NO_TOKEN":       "MPJoinNoTokenFound",
		"DP_MPJ_FOURTH_ACK":     "MPJoinFullyEstablished",
		"DP_OPT_TX":             "SignalOptionTx",
		"DP_SUBSLOT_USED":       "JoinSlotUsed",
		"DP_ACK_NOSPACE":        "DataAckNoSpace",
		"DP_MPC_TOKEN_FALLBACK": "TokenFallbackInit",
	}
)

// counterName derives a counter's name from its enumerator.
func counterName(enumerator string) string {
	if n, ok := counterExceptions[enumerator]; ok {
		return n
	}
	words := strings.Split(strings.TrimPrefix(enumerator, "DP_"), "_")
	mpc := words[0] == "MPC"
	var b strings.Builder
	for i := 0; i < len(words); i++ {
		w := words[i]
		if i+1 < len(words) {
			if s, ok := counterWords[w+"_"+words[i+1]]; ok {
				b.WriteString(s)
				i++
				continue
			}
		}
		switch s, ok := counterWords[w]; {
		case mpc && mpcCapitals[w]:
			b.WriteString(w)
		case ok:
			b.WriteString(s)
		default:
			b.WriteString(w[:1] + strings.ToLower(w[1:]))
		}
	}
	return b.String()
}

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
