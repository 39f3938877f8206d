package datapath

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

func TestOpenClose(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Open(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	path, name := d.CgroupPath(), d.CongestionControl()
	if !slices.Contains(availableCongestionControl(t), name) {
		t.Errorf("congestion control %s not registered", name)
	}
	// The process is in the cgroup the datapath made: the check after Close looks where it was.
	procs, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("the process is not in the datapath's cgroup %s: %q", path, procs)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s left behind: %v", path, err)
	}
	// Only ours: other processes on the machine may have stacks of their own.
	if slices.Contains(availableCongestionControl(t), name) {
		t.Errorf("congestion control %s left registered", name)
	}
}

// availableCongestionControl returns the congestion controls the kernel has registered.
func availableCongestionControl(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	cc := strings.Fields(string(b))
	if !slices.Contains(cc, "reno") {
		t.Fatalf("available congestion control %q lacks reno, which is always built in", cc)
	}
	return cc
}

// counterNamesShown are the names the datapath counters have always had: mptcpctl stats and
// mptcpd's metrics print them and other tests parse them.
var counterNamesShown = map[DatapathDpCounter]string{
	DatapathDpCounterDP_MPCapableSYNTX:          "MPCapableSYNTX",
	DatapathDpCounterDP_MPCapableSYNACKRX:       "MPCapableSYNACKRX",
	DatapathDpCounterDP_MPCapableFallbackSYNACK: "MPCapableFallbackSYNACK",
	DatapathDpCounterDP_MPCapableSYNRX:          "MPCapableSYNRX",
	DatapathDpCounterDP_MPCapableSYNACKTX:       "MPCapableSYNACKTX",
	DatapathDpCounterDP_MPCapableNoTicket:       "MPCapableNoTicket",
	DatapathDpCounterDP_MPCapableACKRX:          "MPCapableACKRX",
	DatapathDpCounterDP_MPCapableFallbackACK:    "MPCapableFallbackACK",
	DatapathDpCounterDP_MPCapableACKTX:          "MPCapableACKTX",
	DatapathDpCounterDP_MPCapableDataTX:         "MPCapableDataTX",
	DatapathDpCounterDP_DSSTx:                   "DSSTx",
	DatapathDpCounterDP_DSSTxNoMapping:          "DSSTxNoMapping",
	DatapathDpCounterDP_OptionNoSpace:           "OptionNoSpace",
	DatapathDpCounterDP_DSSRx:                   "DSSRx",
	DatapathDpCounterDP_MappingRx:               "MappingRx",
	DatapathDpCounterDP_DataAckRx:               "DataAckRx",
	DatapathDpCounterDP_DataAckInvalid:          "DataAckInvalid",
	DatapathDpCounterDP_DataFinRx:               "DataFinRx",
	DatapathDpCounterDP_DataFinTx:               "DataFinTx",
	DatapathDpCounterDP_DataAckFastPath:         "DataAckFastPath",
	DatapathDpCounterDP_AckOnDemand:             "AckOnDemand",
	DatapathDpCounterDP_MPFastcloseTx:           "MPFastcloseTx",
	DatapathDpCounterDP_MPFastcloseRx:           "MPFastcloseRx",
	DatapathDpCounterDP_MPFastcloseBadKey:       "MPFastcloseBadKey",
	DatapathDpCounterDP_MPRstTx:                 "MPRstTx",
	DatapathDpCounterDP_MPRstRx:                 "MPRstRx",
	DatapathDpCounterDP_MPFailTx:                "MPFailTx",
	DatapathDpCounterDP_MPFailRx:                "MPFailRx",
	DatapathDpCounterDP_AddAddr:                 "AddAddr",
	DatapathDpCounterDP_RmAddr:                  "RmAddr",
	DatapathDpCounterDP_MPPrioRx:                "MPPrioRx",
	DatapathDpCounterDP_MPJoinUnexpected:        "MPJoinUnexpected",
	DatapathDpCounterDP_UnmappedDataRx:          "UnmappedDataRx",
	DatapathDpCounterDP_OptionMalformed:         "OptionMalformed",
	DatapathDpCounterDP_OptionUnexpected:        "OptionUnexpected",
	DatapathDpCounterDP_TCPOptionsMalformed:     "TCPOptionsMalformed",
	DatapathDpCounterDP_EventLost:               "EventLost",
	DatapathDpCounterDP_NoState:                 "NoState",
	DatapathDpCounterDP_SackPermStripped:        "SackPermStripped",
	DatapathDpCounterDP_PassiveTicketUsed:       "PassiveTicketUsed",
	DatapathDpCounterDP_MPJoinSynTx:             "MPJoinSynTx",
	DatapathDpCounterDP_MPJoinSynAckRx:          "MPJoinSynAckRx",
	DatapathDpCounterDP_MPJoinSynAckHMacFailure: "MPJoinSynAckHMacFailure",
	DatapathDpCounterDP_MPJoinAckTx:             "MPJoinAckTx",
	DatapathDpCounterDP_MPJoinSynRx:             "MPJoinSynRx",
	DatapathDpCounterDP_MPJoinNoTokenFound:      "MPJoinNoTokenFound",
	DatapathDpCounterDP_MPJoinNoResource:        "MPJoinNoResource",
	DatapathDpCounterDP_MPJoinSynAckTx:          "MPJoinSynAckTx",
	DatapathDpCounterDP_MPJoinAckRx:             "MPJoinAckRx",
	DatapathDpCounterDP_MPJoinAckHMacFailure:    "MPJoinAckHMacFailure",
	DatapathDpCounterDP_MPJoinFullyEstablished:  "MPJoinFullyEstablished",
	DatapathDpCounterDP_SignalOptionTx:          "SignalOptionTx",
	DatapathDpCounterDP_JoinSlotUsed:            "JoinSlotUsed",
	DatapathDpCounterDP_ScratchNested:           "ScratchNested",
	DatapathDpCounterDP_DataAckNoSpace:          "DataAckNoSpace",
	DatapathDpCounterDP_DSSNoMatchTCP:           "DSSNoMatchTCP",
	DatapathDpCounterDP_MPCapableACKBadKey:      "MPCapableACKBadKey",
	DatapathDpCounterDP_TokenFallbackInit:       "TokenFallbackInit",
	DatapathDpCounterDP_MPCapableSYNNoKey:       "MPCapableSYNNoKey",
	DatapathDpCounterDP_DSSTxDeferred:           "DSSTxDeferred",
	DatapathDpCounterDP_SackRwData:              "SackRwData",
	DatapathDpCounterDP_SackRwAck:               "SackRwAck",
	DatapathDpCounterDP_SackRwGSO:               "SackRwGSO",
	DatapathDpCounterDP_SackRwFail:              "SackRwFail",
	DatapathDpCounterDP_AccEcnCleared:           "AccEcnCleared",

	DatapathDpCounterDP_CsumEnabled:    "CsumEnabled",
	DatapathDpCounterDP_DSSCsumTx:      "DSSCsumTx",
	DatapathDpCounterDP_DSSCsumMissing: "DSSCsumMissing",

	DatapathDpCounterDP_CCCubicKept: "CCCubicKept",

	DatapathDpCounterDP_TFOSynDataRx:   "TFOSynDataRx",
	DatapathDpCounterDP_TFOKeyRx:       "TFOKeyRx",
	DatapathDpCounterDP_TFOFallback:    "TFOFallback",
	DatapathDpCounterDP_SynAckRoomMade: "SynAckRoomMade",
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
}

// TestMapSizes: Config sizes the arrays of slot chunks (SlotChunk slots each, rounded up), and
// the tokens map holds a token for every connection slot (never fewer than its default).
func TestMapSizes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ maxConns, maxSubs, conns, subs, tokens int }{
		{16, 4, 1, 1, 65536},
		{70000, 4, 69, 1, 70000},
		{SlotChunk, SlotChunk + 1, 1, 2, 65536},
	} {
		d, err := Open(Config{MaxConns: tc.maxConns, MaxSubs: tc.maxSubs})
		if err != nil {
			t.Fatal(err)
		}
		got := []int{int(d.objs.Conns.MaxEntries()), int(d.objs.Subs.MaxEntries()), int(d.objs.Tokens.MaxEntries())}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if want := []int{tc.conns, tc.subs, tc.tokens}; !slices.Equal(got, want) {
			t.Errorf("MaxConns %d, MaxSubs %d: conns, subs, tokens maps of %v entries, want %v", tc.maxConns, tc.maxSubs, got, want)
		}
	}
}

// TestSlotGrowth: the slot arrays take memory only for the chunks Go grows them to; a slot Go
// writes is what the datapath reads through its array of maps; a slot beyond the ceiling is
// refused, and one of a chunk not created panics rather than touch memory it does not own.
func TestSlotGrowth(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Open(Config{MaxConns: 3 * SlotChunk, MaxSubs: SlotChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if c, s, b := d.SlotMemory(); c != 0 || s != 0 || b != 0 {
		t.Fatalf("before any growth: %d connection and %d subflow chunks, %d bytes", c, s, b)
	}
	const slot = 2*SlotChunk + 5
	for range 2 { // the second is a no-op
		if err := d.GrowConn(slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.GrowSub(3); err != nil {
		t.Fatal(err)
	}
	c, s, b := d.SlotMemory()
	if c != 1 || s != 1 || b < int64(SlotChunk)*int64(unsafe.Sizeof(Conn{})+unsafe.Sizeof(Sub{})) {
		t.Fatalf("after one chunk each: %d connection and %d subflow chunks, %d bytes", c, s, b)
	}
	d.Conn(slot).Ctl.LocalKey = 0x1122334455667788
	*d.Sub(3) = Sub{}
	var id ebpf.MapID
	if err := d.objs.Conns.Lookup(uint32(slot/SlotChunk), &id); err != nil {
		t.Fatalf("the datapath's array has no chunk %d: %v", slot/SlotChunk, err)
	}
	chunk, err := ebpf.NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	defer chunk.Close()
	var got Conn
	if err := chunk.Lookup(uint32(slot%SlotChunk), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ctl.LocalKey != 0x1122334455667788 {
		t.Errorf("the datapath reads key %#x in slot %d, want what Go wrote", got.Ctl.LocalKey, slot)
	}
	if err := d.objs.Conns.Lookup(uint32(0), &id); err == nil {
		t.Error("chunk 0 exists though no slot of it was grown")
	}
	if err := d.GrowConn(3 * SlotChunk); err == nil {
		t.Error("a slot beyond the ceiling was grown")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Conn of a slot whose chunk does not exist did not panic")
			}
		}()
		d.Conn(1)
	}()
}

// TestVerifierCost reports the instructions the verifier processed for each of the datapath's
// programs on this kernel and holds them within testenv.VerifierBudget.
func TestVerifierCost(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Open(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	v := reflect.ValueOf(d.objs.DatapathPrograms)
	for i := range v.NumField() {
		p, ok := v.Field(i).Interface().(*ebpf.Program)
		if !ok || p == nil {
			continue
		}
		testenv.CheckVerifierCost(t, v.Type().Field(i).Tag.Get("ebpf"), p)
	}
}
