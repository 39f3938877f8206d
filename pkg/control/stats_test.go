package control

import (
	"maps"
	"slices"
	"testing"
)

// statsShown are the names Counters has always reported for Stats (mptcpctl stats and mptcpd's
// metrics print them; other tests parse them): renaming a field must not change them by accident.
var statsShown = []string{
	"ActiveOpens", "PassiveOpens", "FallbackActive", "FallbackPassive", "Fastclose", "MPFailFallback", "MPJoinAckRexmit",
	"EventsOrphaned", "TicketsReclaimed", "TokenCollision", "Joins", "JoinRefused", "ReinjectedBytes", "OpportunisticRetransmit", "PassiveFastOpen", "ActiveFastOpen", "FastOpenDataRefused",
	"SubflowStale", "TFOKeyTimeout", "SubflowLossy", "SubflowCloseReset", "DataRetransmit", "AddAddrAccepted", "AddAddrHMacFailure",
	"RmAddrAccepted", "MPPrioAccepted", "EchoAdd", "AddAddrTx", "EchoAddTx", "RmAddrTx", "MPPrioTx",
	"RmSubflow", "EventsRefused", "EventOverflowReset", "EventLostReset", "NoDSSInWindow",
	"DSSNoMatchTCP", "RxMapOverflow", "InfiniteMapRx", "DssFallback", "DSSNotMatching",
	"DataCsumVerified", "DataCsumErr", "DSSCorruptionFallback", "DSSCorruptionReset", "DSSCsumMismatch",
	"MPCapableEndpAttempt", "MemoryPressureRefused",
}

// TestStatsNames: every Stats field is reported once, under its name, with its value.
func TestStatsNames(t *testing.T) {
	var st Stats
	st.TicketsReclaimed.Add(3)
	st.MemoryPressureRefused.Add(5)
	got := map[string]uint64{}
	for name, v := range st.all() {
		if _, dup := got[name]; dup {
			t.Errorf("%s reported twice", name)
		}
		got[name] = v
	}
	if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, slices.Sorted(slices.Values(statsShown))) {
		t.Errorf("names %v\nwant %v", names, slices.Sorted(slices.Values(statsShown)))
	}
	if got["TicketsReclaimed"] != 3 || got["MemoryPressureRefused"] != 5 || got["ActiveOpens"] != 0 {
		t.Errorf("values %v", got)
	}
}
