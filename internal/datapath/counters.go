package datapath

import (
	"fmt"

	"github.com/mptcpgo/mptcpgo/gen"
)

// counterNames names the datapath counters like the kernel's MPTcpExt MIB where one exists.
var counterNames = map[gen.DatapathDpCounter]string{
	gen.DatapathDpCounterDP_MPC_SYN_TX:           "MPCapableSYNTX",
	gen.DatapathDpCounterDP_MPC_SYNACK_RX:        "MPCapableSYNACKRX",
	gen.DatapathDpCounterDP_MPC_FALLBACK_SYNACK:  "MPCapableFallbackSYNACK",
	gen.DatapathDpCounterDP_MPC_SYN_RX:           "MPCapableSYNRX",
	gen.DatapathDpCounterDP_MPC_SYNACK_TX:        "MPCapableSYNACKTX",
	gen.DatapathDpCounterDP_MPC_NO_TICKET:        "MPCapableNoTicket",
	gen.DatapathDpCounterDP_MPC_ACK_RX:           "MPCapableACKRX",
	gen.DatapathDpCounterDP_MPC_FALLBACK_ACK:     "MPCapableFallbackACK",
	gen.DatapathDpCounterDP_MPC_ACK_TX:           "MPCapableACKTX",
	gen.DatapathDpCounterDP_MPC_DATA_TX:          "MPCapableDataTX",
	gen.DatapathDpCounterDP_DSS_TX:               "DSSTx",
	gen.DatapathDpCounterDP_DSS_TX_NOMAP:         "DSSTxNoMapping",
	gen.DatapathDpCounterDP_OPT_NOSPACE:          "OptionNoSpace",
	gen.DatapathDpCounterDP_DSS_RX:               "DSSRx",
	gen.DatapathDpCounterDP_RX_MAP:               "MappingRx",
	gen.DatapathDpCounterDP_DATA_ACK_RX:          "DataAckRx",
	gen.DatapathDpCounterDP_DATA_ACK_INVALID:     "DataAckInvalid",
	gen.DatapathDpCounterDP_DATA_FIN_RX:          "DataFinRx",
	gen.DatapathDpCounterDP_DATA_FIN_TX:          "DataFinTx",
	gen.DatapathDpCounterDP_FASTPATH_ACK:         "DataAckFastPath",
	gen.DatapathDpCounterDP_ACK_SENT:             "AckOnDemand",
	gen.DatapathDpCounterDP_FASTCLOSE_TX:         "MPFastcloseTx",
	gen.DatapathDpCounterDP_FASTCLOSE_RX:         "MPFastcloseRx",
	gen.DatapathDpCounterDP_FASTCLOSE_BADKEY:     "MPFastcloseBadKey",
	gen.DatapathDpCounterDP_TCPRST_TX:            "MPRstTx",
	gen.DatapathDpCounterDP_TCPRST_RX:            "MPRstRx",
	gen.DatapathDpCounterDP_MP_FAIL_TX:           "MPFailTx",
	gen.DatapathDpCounterDP_MP_FAIL_RX:           "MPFailRx",
	gen.DatapathDpCounterDP_ADD_ADDR_RX:          "AddAddr",
	gen.DatapathDpCounterDP_RM_ADDR_RX:           "RmAddr",
	gen.DatapathDpCounterDP_MP_PRIO_RX:           "MPPrioRx",
	gen.DatapathDpCounterDP_MPJ_RX:               "MPJoinUnexpected",
	gen.DatapathDpCounterDP_UNMAPPED_RX:          "UnmappedDataRx",
	gen.DatapathDpCounterDP_OPT_MALFORMED:        "OptionMalformed",
	gen.DatapathDpCounterDP_OPT_UNEXPECTED:       "OptionUnexpected",
	gen.DatapathDpCounterDP_HDR_MALFORMED:        "TCPOptionsMalformed",
	gen.DatapathDpCounterDP_EVENT_LOST:           "EventLost",
	gen.DatapathDpCounterDP_NO_STATE:             "NoState",
	gen.DatapathDpCounterDP_SACK_STRIPPED:        "SackPermStripped",
	gen.DatapathDpCounterDP_TICKET_USED:          "PassiveTicketUsed",
	gen.DatapathDpCounterDP_MPJ_SYN_TX:           "MPJoinSynTx",
	gen.DatapathDpCounterDP_MPJ_SYNACK_RX:        "MPJoinSynAckRx",
	gen.DatapathDpCounterDP_MPJ_SYNACK_HMAC_FAIL: "MPJoinSynAckHMacFailure",
	gen.DatapathDpCounterDP_MPJ_ACK_TX:           "MPJoinAckTx",
	gen.DatapathDpCounterDP_MPJ_SYN_RX:           "MPJoinSynRx",
	gen.DatapathDpCounterDP_MPJ_NO_TOKEN:         "MPJoinNoTokenFound",
	gen.DatapathDpCounterDP_MPJ_NO_RESOURCE:      "MPJoinNoResource",
	gen.DatapathDpCounterDP_MPJ_SYNACK_TX:        "MPJoinSynAckTx",
	gen.DatapathDpCounterDP_MPJ_ACK_RX:           "MPJoinAckRx",
	gen.DatapathDpCounterDP_MPJ_ACK_HMAC_FAIL:    "MPJoinAckHMacFailure",
	gen.DatapathDpCounterDP_MPJ_FOURTH_ACK:       "MPJoinFullyEstablished",
	gen.DatapathDpCounterDP_OPT_TX:               "SignalOptionTx",
	gen.DatapathDpCounterDP_SUBSLOT_USED:         "JoinSlotUsed",
	gen.DatapathDpCounterDP_SCRATCH_NESTED:       "ScratchNested",
	gen.DatapathDpCounterDP_ACK_NOSPACE:          "DataAckNoSpace",
	gen.DatapathDpCounterDP_DSS_NO_MATCH_TCP:     "DSSNoMatchTCP",
	gen.DatapathDpCounterDP_MPC_ACK_BADKEY:       "MPCapableACKBadKey",
	gen.DatapathDpCounterDP_MPC_TOKEN_FALLBACK:   "TokenFallbackInit",
	gen.DatapathDpCounterDP_MPC_SYN_NOKEY:        "MPCapableSYNNoKey",
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

func (d *Datapath) counter(idx gen.DatapathDpCounter) (uint64, error) {
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
