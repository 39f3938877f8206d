package datapath

import (
	"fmt"
)

// counterNames names the datapath counters like the kernel's MPTcpExt MIB where one exists.
var counterNames = map[DatapathDpCounter]string{
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

// Counters returns every datapath counter, summed over CPUs, by name.
func (d *Datapath) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(counterNames))
	for idx, name := range counterNames {
		v, err := d.counter(idx)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// Counter returns one datapath counter by name.
func (d *Datapath) Counter(name string) (uint64, error) {
	for idx, n := range counterNames {
		if n == name {
			return d.counter(idx)
		}
	}
	return 0, fmt.Errorf("no datapath counter %q", name)
}

func (d *Datapath) counter(idx DatapathDpCounter) (uint64, error) {
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
