package datapath

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

func TestOpenClose(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Open(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if !strings.Contains(string(cc), d.CongestionControl()) {
		t.Errorf("congestion control %s not registered: %s", d.CongestionControl(), cc)
	}
	path, name := d.CgroupPath(), d.CongestionControl()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left behind: %v", path, err)
	}
	cc, _ = os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	// Only ours: other processes on the machine may have stacks of their own.
	if slices.Contains(strings.Fields(string(cc)), name) {
		t.Errorf("congestion control %s left registered: %s", name, cc)
	}
}

// counterNamesShown are the names the datapath counters have always had: mptcpctl stats and
// mptcpd's metrics print them and other tests parse them.
var counterNamesShown = map[DatapathDpCounter]string{
	DatapathDpCounterDP_MPC_SYN_TX:           "MPCapableSYNTX",
	DatapathDpCounterDP_MPC_SYNACK_RX:        "MPCapableSYNACKRX",
	DatapathDpCounterDP_MPC_FALLBACK_SYNACK:  "MPCapableFallbackSYNACK",
	DatapathDpCounterDP_MPC_SYN_RX:           "MPCapableSYNRX",
	DatapathDpCounterDP_MPC_SYNACK_TX:        "MPCapableSYNACKTX",
	DatapathDpCounterDP_MPC_NO_TICKET:        "MPCapableNoTicket",
	DatapathDpCounterDP_MPC_ACK_RX:           "MPCapableACKRX",
	DatapathDpCounterDP_MPC_FALLBACK_ACK:     "MPCapableFallbackACK",
	DatapathDpCounterDP_MPC_ACK_TX:           "MPCapableACKTX",
	DatapathDpCounterDP_MPC_DATA_TX:          "MPCapableDataTX",
	DatapathDpCounterDP_DSS_TX:               "DSSTx",
	DatapathDpCounterDP_DSS_TX_NOMAP:         "DSSTxNoMapping",
	DatapathDpCounterDP_OPT_NOSPACE:          "OptionNoSpace",
	DatapathDpCounterDP_DSS_RX:               "DSSRx",
	DatapathDpCounterDP_RX_MAP:               "MappingRx",
	DatapathDpCounterDP_DATA_ACK_RX:          "DataAckRx",
	DatapathDpCounterDP_DATA_ACK_INVALID:     "DataAckInvalid",
	DatapathDpCounterDP_DATA_FIN_RX:          "DataFinRx",
	DatapathDpCounterDP_DATA_FIN_TX:          "DataFinTx",
	DatapathDpCounterDP_FASTPATH_ACK:         "DataAckFastPath",
	DatapathDpCounterDP_ACK_SENT:             "AckOnDemand",
	DatapathDpCounterDP_FASTCLOSE_TX:         "MPFastcloseTx",
	DatapathDpCounterDP_FASTCLOSE_RX:         "MPFastcloseRx",
	DatapathDpCounterDP_FASTCLOSE_BADKEY:     "MPFastcloseBadKey",
	DatapathDpCounterDP_TCPRST_TX:            "MPRstTx",
	DatapathDpCounterDP_TCPRST_RX:            "MPRstRx",
	DatapathDpCounterDP_MP_FAIL_TX:           "MPFailTx",
	DatapathDpCounterDP_MP_FAIL_RX:           "MPFailRx",
	DatapathDpCounterDP_ADD_ADDR_RX:          "AddAddr",
	DatapathDpCounterDP_RM_ADDR_RX:           "RmAddr",
	DatapathDpCounterDP_MP_PRIO_RX:           "MPPrioRx",
	DatapathDpCounterDP_MPJ_RX:               "MPJoinUnexpected",
	DatapathDpCounterDP_UNMAPPED_RX:          "UnmappedDataRx",
	DatapathDpCounterDP_OPT_MALFORMED:        "OptionMalformed",
	DatapathDpCounterDP_OPT_UNEXPECTED:       "OptionUnexpected",
	DatapathDpCounterDP_HDR_MALFORMED:        "TCPOptionsMalformed",
	DatapathDpCounterDP_EVENT_LOST:           "EventLost",
	DatapathDpCounterDP_NO_STATE:             "NoState",
	DatapathDpCounterDP_SACK_STRIPPED:        "SackPermStripped",
	DatapathDpCounterDP_TICKET_USED:          "PassiveTicketUsed",
	DatapathDpCounterDP_MPJ_SYN_TX:           "MPJoinSynTx",
	DatapathDpCounterDP_MPJ_SYNACK_RX:        "MPJoinSynAckRx",
	DatapathDpCounterDP_MPJ_SYNACK_HMAC_FAIL: "MPJoinSynAckHMacFailure",
	DatapathDpCounterDP_MPJ_ACK_TX:           "MPJoinAckTx",
	DatapathDpCounterDP_MPJ_SYN_RX:           "MPJoinSynRx",
	DatapathDpCounterDP_MPJ_NO_TOKEN:         "MPJoinNoTokenFound",
	DatapathDpCounterDP_MPJ_NO_RESOURCE:      "MPJoinNoResource",
	DatapathDpCounterDP_MPJ_SYNACK_TX:        "MPJoinSynAckTx",
	DatapathDpCounterDP_MPJ_ACK_RX:           "MPJoinAckRx",
	DatapathDpCounterDP_MPJ_ACK_HMAC_FAIL:    "MPJoinAckHMacFailure",
	DatapathDpCounterDP_MPJ_FOURTH_ACK:       "MPJoinFullyEstablished",
	DatapathDpCounterDP_OPT_TX:               "SignalOptionTx",
	DatapathDpCounterDP_SUBSLOT_USED:         "JoinSlotUsed",
	DatapathDpCounterDP_SCRATCH_NESTED:       "ScratchNested",
	DatapathDpCounterDP_ACK_NOSPACE:          "DataAckNoSpace",
	DatapathDpCounterDP_DSS_NO_MATCH_TCP:     "DSSNoMatchTCP",
	DatapathDpCounterDP_MPC_ACK_BADKEY:       "MPCapableACKBadKey",
	DatapathDpCounterDP_MPC_TOKEN_FALLBACK:   "TokenFallbackInit",
	DatapathDpCounterDP_MPC_SYN_NOKEY:        "MPCapableSYNNoKey",
}

// TestCounterNames checks that every datapath counter has a name, derived from its enumerator,
// unique, and the one it has always had.
func TestCounterNames(t *testing.T) {
	spec, err := LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	names, err := counterNames(spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != int(DatapathDpCounterDP_COUNTER_MAX) || len(counterNamesShown) != len(names) {
		t.Fatalf("%d names for %d counters (%d expected)", len(names), DatapathDpCounterDP_COUNTER_MAX, len(counterNamesShown))
	}
	seen := map[string]bool{}
	for i := 0; i < int(DatapathDpCounterDP_COUNTER_MAX); i++ {
		n := names[i]
		if n == "" {
			t.Errorf("counter %d has no name", i)
		}
		if seen[n] {
			t.Errorf("counter %d: name %s taken", i, n)
		}
		seen[n] = true
		if want := counterNamesShown[DatapathDpCounter(i)]; n != want {
			t.Errorf("counter %d is named %s, want %s", i, n, want)
		}
	}
	// Every exception is used: an enumerator renamed in C does not leave one behind.
	var e *btf.Enum
	if err := spec.Types.TypeByName("dp_counter", &e); err != nil {
		t.Fatal(err)
	}
	in := map[string]bool{}
	for _, v := range e.Values {
		in[v.Name] = true
	}
	for x := range counterExceptions {
		if !in[x] {
			t.Errorf("exception for %s, which enum dp_counter does not have", x)
		}
	}
}

// TestMapSizes: Config sizes the slot maps, and the tokens map holds a token for every
// connection slot (never fewer than its default).
func TestMapSizes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ conns, subs, tokens int }{
		{16, 4, 65536},
		{70000, 4, 70000},
	} {
		d, err := Open(Config{MaxConns: tc.conns, MaxSubs: tc.subs})
		if err != nil {
			t.Fatal(err)
		}
		got := []int{int(d.objs.Conns.MaxEntries()), int(d.objs.Subs.MaxEntries()), int(d.objs.Tokens.MaxEntries())}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if want := []int{tc.conns, tc.subs, tc.tokens}; !slices.Equal(got, want) {
			t.Errorf("MaxConns %d, MaxSubs %d: conns, subs, tokens maps of %v entries, want %v", tc.conns, tc.subs, got, want)
		}
	}
}
