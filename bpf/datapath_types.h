/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* State shared between the sock_ops/struct_ops datapath and Go (bpf2go -type). Padding is
 * explicit and Go checks the sizes at load.
 *
 * Ownership: the *_ctl halves are written by Go (through mmap) and only read by BPF; the *_st
 * halves and struct sk_sub are written by BPF and only read by Go. Go writes struct sk_sub once,
 * when it registers a socket before connect() or listen(). One exception: the connection slot of
 * a passive-open ticket, which Go clears before queueing it, is filled in by BPF when a third ACK
 * takes the ticket (the key is known only then), and Go takes it over at accept.
 */
#ifndef MPTCPGO_DATAPATH_TYPES_H
#define MPTCPGO_DATAPATH_TYPES_H

#include <linux/types.h>

#define TXMAP_RING 256 /* mappings per subflow in flight; a power of two */
#define TXMAP_MASK (TXMAP_RING - 1)

#define CC_MAX_SUBS 8

/* The algorithms, conn_ctl.cc. */
enum cc_algo {
	CC_CUBIC = 0, /* the kernel's CUBIC through its kfuncs, per subflow (uncoupled) */
	CC_RENO = 1,  /* Reno per subflow (uncoupled) */
	CC_LIA = 2,   /* Linked Increases, RFC 6356 */
	CC_OLIA = 3,  /* Opportunistic Linked Increases */
	CC_BALIA = 4, /* Balanced Linked Adaptation */
	CC_NUM,
};

/* What one subflow publishes for the other subflows of its connection (one writer: its
 * congestion control); coupled.h computes on these. */
struct cc_path {
	__u32 cwnd;     /* packets; the slow-start threshold while in fast recovery (the window is inflated there) */
	__u32 srtt_us;  /* 0: no RTT sample yet, the subflow does not count */
	__u32 loss_int; /* OLIA: max of the last two inter-loss distances, in 64-byte units */
	__u32 _pad;
};

/* struct txmap flags */
enum txmap_flag {
	TXMAP_DATA_FIN = 0x1, /* the mapping ends with our DATA_FIN (one more DSN) */
	/* The connection's first data (DSN = our IDSN + 1) at the subflow's first byte: the only
	 * mapping the implicit one of an MP_CAPABLE carrying data can stand for (RFC 8684 §3.1). A
	 * join can carry the first data, and the initial subflow's first mapping then starts
	 * further on: it needs a DSS. */
	TXMAP_MPC_DATA = 0x2,
};

/* One outgoing mapping: DSNs [dsn, dsn+len) on relative subflow sequence [ssn, ssn+len). On a
 * connection with DSS checksums, csum is Go's 16-bit ones'-complement sum (folded, not
 * complemented) of the pseudo-header's DSN and SSN and of the mapped bytes: the datapath adds
 * the length the DSS carries (one more with a DATA_FIN) and complements it (RFC 8684 §3.3.1). */
struct txmap {
	__u64 dsn;
	__u32 ssn;
	__u16 len;
	__u16 flags;
	__u16 csum;
	__u16 _pad[3];
};

/* struct sk_sub.role */
enum sub_role {
	ROLE_NONE = 0,
	ROLE_ACTIVE = 1,   /* our connect(): MP_CAPABLE initiator */
	ROLE_LISTENER = 2, /* our listen() socket */
	ROLE_PASSIVE = 3,  /* a child of our listener */
	ROLE_JOIN_ACTIVE = 4,  /* our connect() of an MP_JOIN subflow */
	ROLE_JOIN_PASSIVE = 5, /* an MP_JOIN subflow our listener accepted */
};

/* struct sk_sub.state */
enum sub_state {
	SUB_INIT = 0,
	SUB_SYN_SENT = 1,     /* MP_CAPABLE SYN sent */
	SUB_MPTCP = 2,        /* MP_CAPABLE completed; options flow */
	SUB_FALLBACK = 3,     /* plain TCP: no MPTCP options are written */
	SUB_JOIN_FAILED = 4,  /* MP_JOIN refused (bad HMAC, unknown token): Go resets it */
	SUB_TFO_WAIT = 5,     /* passive TCP Fast Open: the SYN's data is queued, the client's key
			       * not seen yet (tfo.h) */
};

/* struct sk_sub.flags */
enum sub_flag {
	SUBF_MPC_ACKED = 0x1,      /* the peer's DSS data ACK arrived: stop repeating MP_CAPABLE or
				    * the MP_JOIN third ACK (for a join, the fourth ACK) */
	SUBF_PEER_FIN = 0x2,       /* the peer's DATA_FIN was seen */
	SUBF_RX_MAP_VALID = 0x4,   /* rx_map holds the peer's current mapping */
	SUBF_FASTCLOSE_RX = 0x8,   /* a valid MP_FASTCLOSE arrived */
	SUBF_RST_RX = 0x10,        /* MP_TCPRST arrived */
	SUBF_UNMAPPED_RX = 0x20,   /* data arrived that no mapping covers */
	SUBF_PEER_IDSN = 0x80,     /* peer_idsn is valid */
	SUBF_PEER_BACKUP = 0x40,   /* the peer asked for this subflow to be a backup (MP_JOIN B, MP_PRIO) */
};

/* struct sk_sub.join_flags (set by Go for an active join) */
enum join_flag {
	JOINF_BACKUP = 0x1,        /* ask the peer to treat this subflow as a backup (MP_JOIN B) */
};

/* struct sk_sub.tc_flags (written by the TC programs) */
enum sub_tc_flag {
	SUBTC_SYN_OUT = 0x1, /* our SYN passed our TC egress program, which will rewrite the segments
			      * whose SACK blocks crowd out the DSS (sack_rw.h): SACK is kept */
	SUBTC_TFO_KEY = 0x2,  /* passive TCP Fast Open: TC ingress saw the client's MP_CAPABLE echo
			       * our key; remote_key holds the client's (tfo.h) */
	SUBTC_TFO_CSUM = 0x4, /* ... and its A flag (DSS checksums) */
	SUBTC_TFO_DATA = 0x8, /* ... on a data segment: the implicit first mapping, rx_map_len
			       * bytes (with the checksum in remote_nonce when the option has one) */
};

/* Per-socket state, SK_STORAGE. Go creates it for its active and listening sockets; BPF creates
 * it for the children of our listeners. */
struct sk_sub {
	__u32 conn;       /* index into the conns array */
	__u32 sub;        /* index into the subs array */
	__u8 role;        /* enum sub_role */
	__u8 state;       /* enum sub_state */
	__u8 flags;       /* SUBF_* */
	__u8 fallback_reason;
	__u32 snd_isn;    /* our ISN: relative SSN = seq - snd_isn */
	__u32 rcv_isn;    /* the peer's ISN, plus the data of its SYN (TCP Fast Open), which lies
			   * before the data sequence space: relative SSN = seq - rcv_isn */
	__u8 tx_room;     /* option room the length callback reserved for the segment being sent */
	__u8 _pad0;
	__u16 syn_data;   /* TCP Fast Open: bytes of data the SYN carried (passive, tfo.h); that the
			   * SYN/ACK acknowledged (active, on_active_established) */
	__u64 local_key;
	__u64 remote_key;
	__u64 rx_map_dsn; /* the peer's current mapping */
	__u32 rx_map_ssn;
	__u16 rx_map_len;
	__u8 rx_map_fin;
	__u8 rst_reason;
	__u32 remote_token; /* MP_JOIN: the peer's token */
	__u32 local_nonce;  /* MP_JOIN */
	__u32 remote_nonce; /* MP_JOIN */
	__u8 local_id;      /* MP_JOIN: address IDs */
	__u8 remote_id;
	__u8 join_flags;    /* JOINF_* */
	__u8 tc_flags;      /* SUBTC_*, written by TC */
	__u32 hmac_a[5];    /* MP_JOIN initiator: the third ACK's HMAC */
	__u32 _pad2;
	__u64 peer_idsn;    /* passive MP_CAPABLE: the client's IDSN, for DATA_ACKs before Go took over */
};

/* conn_ctl.flags, written by Go */
enum conn_flag {
	CONNF_CAN_ACK = 0x1,        /* the data ACK fields are valid: write a data ACK */
	CONNF_DATA_FIN = 0x2,       /* our DATA_FIN is at snd_fin_dsn */
	CONNF_FASTCLOSE = 0x4,      /* write MP_FASTCLOSE on resets */
	CONNF_FALLBACK = 0x8,       /* plain TCP now: write no options */
	CONNF_MP_FAIL = 0x10,       /* write MP_FAIL at mp_fail_dsn, then an infinite mapping */
};

/* The per-connection half Go writes. */
struct conn_ctl {
	__u64 local_key;
	__u64 remote_key;
	__u64 rcv_nxt;     /* data level: next DSN Go expects (reassembled) */
	__u64 peer_idsn;   /* the peer's IDSN: implicit MP_CAPABLE mappings start at peer_idsn+1 */
	__u64 snd_nxt;     /* data level: one past the highest DSN sent (bounds the peer's DATA_ACK) */
	__u64 snd_fin_dsn; /* DSN of our DATA_FIN when CONNF_DATA_FIN */
	__u64 mp_fail_dsn;
	__u32 flags;       /* CONNF_* */
	__u32 ack_wakeup;  /* doorbell: Go wants an event when the peer's DATA_ACK advances */
	__u32 cc;          /* enum cc_algo: the subflows' congestion control */
	__u32 cc_n;        /* how many of cc_subs are set: the subflows coupled */
	__u32 cc_subs[CC_MAX_SUBS]; /* their slots in the subs array */
	__u8 _pad[64];     /* keep the BPF half on its own cache line */
};

/* The per-connection half BPF writes. */
struct conn_st {
	__u64 rx_ack;        /* data level: next DSN received in order, as the datapath saw it */
	__u64 peer_data_ack; /* the peer's latest DATA_ACK, expanded to 64 bits */
	__u64 peer_fin_dsn;  /* DSN of the peer's DATA_FIN when seen */
	__u32 ack_wakeup;    /* last doorbell generation answered */
	__u32 peer_fin;      /* nonzero once the peer's DATA_FIN was seen */
	__u64 peer_wnd_end;  /* the peer's receive window end: DATA_ACK + window (§3.3.4) */
	__u64 ack_sent;      /* the DATA_ACK we last wrote */
	__u32 peer_dss;      /* nonzero once a DSS came from the peer: fully established (RFC 8684 3.1) */
	__u32 peer_wnd_set;  /* nonzero once peer_wnd_end is the peer's own, not our first guess */
	__u32 ev_lost;       /* nonzero once an event of this connection was lost (ring buffer full) */
	__u32 csum;          /* nonzero: DSS checksums negotiated (either side set MP_CAPABLE's A flag, §3.1) */
	__u8 _pad[64];
};

struct conn {
	struct conn_ctl ctl;
	struct conn_st st;
};

/* sub_ctl.flags, written by Go */
enum sub_ctl_flag {
	SUBC_DRAIN = 0x1, /* being closed: a lone DATA_FIN on it is not acknowledged here */
};

/* sub_ctl.rst_flags: the option's flag bits (T = transient), and: */
enum sub_rst_flag {
	SUB_RST_REQUEST = 0x80, /* write MP_TCPRST on this subflow's resets */
};

/* The per-subflow half Go writes. */
struct sub_ctl {
	__u64 txmap_head;   /* txmap entries written so far; entry i sits at txmap[i & TXMAP_MASK] */
	__u32 ack_req;      /* doorbell: Go asks for a pure ACK (answered by the congestion control) */
	__u8 rst_reason;    /* MP_TCPRST reason on our resets */
	__u8 rst_flags;     /* SUB_RST_REQUEST | the option's flag bits (T = transient) */
	__u8 opt_len;       /* an option for the next pure ACK: ADD_ADDR, RM_ADDR, MP_PRIO */
	__u8 snd_wscale;    /* the peer's window scale on this subflow (from TCP_INFO) */
	__u32 opt_gen;      /* doorbell: bumped when opt holds a new option */
	__u32 flags;        /* SUBC_* */
	__u8 opt[32];
	__u8 _pad2[8];
	struct txmap txmap[TXMAP_RING];
};

/* sub_cc.flags */
enum sub_cc_flag {
	SUBCC_INITED = 0x1,    /* the coupled algorithms' state is set up */
	SUBCC_CA_SAVED = 0x2,  /* ca_save holds CUBIC's state across the switch that rings the ACK doorbell */
};

/* What a coupled algorithm keeps per subflow (coupled_ca.h), written by that subflow's congestion
 * control only; path is what the connection's other subflows read. Our subflows keep it in their
 * slot (sub_cc), the kernel's MPTCP subflows in icsk_ca_priv (kcc.bpf.c). */
struct cc_state {
	struct cc_path path;
	__s64 cnt;          /* OLIA: window change accumulated, in 2^-CC_INC_SHIFT packets */
	__u32 loss1;        /* OLIA: snd_una at the loss before last, */
	__u32 loss2;        /* at the last loss, */
	__u32 loss3;        /* and now */
	__u8 ca_state;      /* the TCP congestion state last set (TCP_CA_*) */
	__u8 flags;         /* SUBCC_* */
	__u8 _pad[2];
};

/* A subflow's congestion control state that must outlive a re-initialisation of the kernel's
 * (the ACK doorbell switches algorithms, which clears icsk_ca_priv), written by the congestion
 * control only. */
struct sub_cc {
	struct cc_state cs;
	__u64 ca_save[13];  /* CUBIC's icsk_ca_priv while the algorithms switch */
};

/* The per-subflow half BPF writes. */
struct sub_st {
	__u64 txmap_hint;   /* last txmap index found, where the next lookup starts */
	__u32 snd_una_rel;  /* subflow level: relative SSN acknowledged by the peer */
	__u32 ack_done;     /* last ack_req generation answered */
	__u64 tx_dss;       /* DSS options written */
	__u64 tx_nomap;     /* data segments for which no mapping was found */
	__u32 ack_pending;  /* the datapath wants a pure ACK sent (e.g. for the peer's DATA_FIN) */
	__u32 opt_done;     /* last opt_gen written */
	__u32 srtt_us;      /* subflow TCP state, refreshed on every segment */
	__u32 snd_cwnd;
	__u32 mss;
	__u32 packets_out;
	__u32 total_retrans;
	__u32 nomap_rel;    /* relative SSN of the last data segment without a mapping */
	/* The smoothed RTT of acknowledged data alone (the kernel's 7/8 + 1/8 rule over the ACK
	 * samples congestion control sees), 0 before the first: the scheduler's RTT. The
	 * handshake's sample is left out: a SYN held for a second (a neighbour not yet resolved on
	 * a link just up) makes TCP's own estimate a second for many round trips, and a subflow
	 * whose RTT looks that bad would never be given the data that measures it anew. */
	__u32 data_srtt_us;
	__u64 ack_sent;     /* the DATA_ACK this subflow last wrote (a dead path's count for nothing) */
	struct sub_cc cc;   /* its congestion control's state (congestion.h) */
};

struct sub {
	struct sub_ctl ctl;
	struct sub_st st;
};

/* A passive-open ticket Go feeds: the slots of one connection our listener completed. The
 * datapath takes one only when a third ACK echoes the key our SYN/ACK derived (see synkey.h):
 * SYNs that never complete cost no ticket. */
struct ticket {
	__u32 conn;
	__u32 sub;
};

/* The data-level send window a passive connection assumes until the peer's first DATA_ACK tells
 * its own (Go's initialWindow, which does the same for active opens). */
#define PASSIVE_INITIAL_WINDOW (64 << 10)

/* Configuration Go sets before load (a const volatile in .rodata). */
struct dp_config {
	__u32 synkey_secret[8]; /* HMAC key of our listeners' MP_CAPABLE keys, from crypto/rand */
};

/* The 4-tuple of a request socket; the SYN/ACK callbacks have no full socket. */
struct req_key {
	__u32 local_ip[4];
	__u32 remote_ip[4];
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u32 family;
};

/* A passive MP_JOIN between its SYN/ACK and its third ACK (MP_CAPABLE keeps no such state). */
struct req_val {
	struct ticket t;   /* the connection joined and the subflow slot taken */
	__u32 client_isn;
	__u8 join;         /* an MP_JOIN request */
	__u8 peer_id;      /* MP_JOIN: the initiator's address ID */
	__u8 peer_backup;  /* MP_JOIN: the initiator's B flag */
	__u8 local_id;     /* MP_JOIN: our address ID */
	__u32 nonce_a;     /* MP_JOIN: the initiator's nonce */
	__u32 nonce_b;     /* MP_JOIN: ours */
	__u32 token;       /* MP_JOIN: our token the initiator named */
	__u32 _pad;
};

/* A connection our listeners can be joined to, by our token. */
struct token_val {
	__u32 conn;
	__u32 _pad;
	__u64 local_key;
	__u64 remote_key;
};

/* A local address, for its MP_JOIN address ID. */
struct addr_key {
	__u32 family;
	__u32 addr[4];
};

/* Event types sent to Go through the ring buffer. */
enum event_type {
	EV_ESTABLISHED = 1, /* unused: an active open's outcome is in the socket's storage */
	EV_RX_MAP = 2,      /* a new peer mapping: a = DSN, b = relative SSN, c = len | fin << 16 | mpc << 17 */
	EV_DATA_FIN = 3,    /* the peer's DATA_FIN: a = DSN */
	EV_DATA_ACK = 4,    /* the peer's DATA_ACK advanced past a doorbell: a = DATA_ACK */
	EV_FASTCLOSE = 5,   /* a valid MP_FASTCLOSE */
	EV_TCPRST = 6,      /* MP_TCPRST: a = reason, b = flags */
	EV_MP_FAIL = 7,     /* MP_FAIL: a = DSN */
	EV_UNMAPPED = 8,    /* data no mapping covers: a = relative SSN, b = length */
	EV_OPTION = 9,      /* ADD_ADDR, REMOVE_ADDR, MP_PRIO: raw holds the option's bytes */
	EV_JOIN = 10,       /* an MP_JOIN subflow: flags 1 = HMAC verified, 0 = refused; a = local id | remote id << 8 | peer backup << 16 */
	EV_JOIN_ACKED = 11, /* our joined subflow got its fourth ACK: it may carry data */
	EV_TFO_DONE = 12,   /* a TCP Fast Open child left SYN_RECV (tfo.h): cookie = its socket's */
};

/* EV_RX_MAP: flags in event.c above the mapping's 16-bit length */
enum rx_map_flag {
	RXMAP_FIN = 1 << 16,      /* the mapping ends with the peer's DATA_FIN */
	RXMAP_MPC = 1 << 17,      /* implicit MP_CAPABLE mapping: the DSN is the peer's IDSN+1 */
	RXMAP_INFINITE = 1 << 18, /* an infinite mapping: the peer fell back */
	RXMAP_CSUM = 1 << 19,     /* the mapping carries a DSS checksum, in bits 32..47 of c */
};

struct event {
	__u32 type;
	__u32 conn;
	__u32 sub;
	__u32 flags;
	__u64 a;
	__u64 b;
	__u64 c;
	__u64 cookie; /* socket cookie of the subflow */
	__u8 raw[32]; /* EV_OPTION: the option as received */
	__u32 raw_len;
	__u32 _pad;
};

/* Datapath counters, indexes into the per-CPU counter array. An enumerator is DP_ and the
 * counter's name as mptcpctl and the metrics print it, spelled like the kernel's MPTcpExt MIB
 * where the kernel has the counter: Go takes the names from here (internal/datapath). */
enum dp_counter {
	DP_MPCapableSYNTX = 0,          /* MP_CAPABLE SYNs sent */
	DP_MPCapableSYNACKRX,           /* valid MP_CAPABLE SYN/ACKs received */
	DP_MPCapableFallbackSYNACK,     /* SYN/ACKs without a valid MP_CAPABLE: fallback */
	DP_MPCapableSYNRX,              /* MP_CAPABLE SYNs our listeners answered (a retransmitted SYN/ACK counts again) */
	DP_MPCapableSYNACKTX,           /* MP_CAPABLE SYN/ACKs sent */
	DP_MPCapableNoTicket,           /* completed MP_CAPABLE handshakes that found no ticket: fallback */
	DP_MPCapableACKRX,              /* third ACKs completing MP_CAPABLE on our listeners */
	DP_MPCapableFallbackACK,        /* third ACKs without a valid MP_CAPABLE: fallback */
	DP_MPCapableACKTX,              /* MP_CAPABLE ACKs sent (third ACK and repeats) */
	DP_MPCapableDataTX,             /* MP_CAPABLE with data-level length sent */
	DP_DSSTx,                       /* DSS options written */
	DP_DSSTxNoMapping,              /* data segments for which no mapping was found */
	DP_OptionNoSpace,               /* options that did not fit the header */
	DP_DSSRx,                       /* DSS options received */
	DP_MappingRx,                   /* new peer mappings passed to Go */
	DP_DataAckRx,                   /* DATA_ACKs that advanced */
	DP_DataAckInvalid,              /* DATA_ACKs beyond what we sent, ignored */
	DP_DataFinRx,                   /* the peer's DATA_FINs */
	DP_DataFinTx,                   /* DSS with our DATA_FIN written */
	DP_DataAckFastPath,             /* a lone DATA_FIN acknowledged at once by the datapath */
	DP_AckOnDemand,                 /* pure ACKs sent on demand by the congestion control */
	DP_MPFastcloseTx,
	DP_MPFastcloseRx,
	DP_MPFastcloseBadKey,           /* MP_FASTCLOSE with a wrong key: ignored */
	DP_MPRstTx,
	DP_MPRstRx,
	DP_MPFailTx,
	DP_MPFailRx,
	DP_AddAddr,
	DP_RmAddr,
	DP_MPPrioRx,
	DP_MPJoinUnexpected,            /* MP_JOIN seen (handled in a later stage): counted */
	DP_UnmappedDataRx,              /* data segments no mapping covers */
	DP_OptionMalformed,             /* MPTCP options the strict parser rejected */
	DP_OptionUnexpected,            /* well-formed options out of place (e.g. MP_CAPABLE mid-stream) */
	DP_TCPOptionsMalformed,         /* TCP option areas with a bad length */
	DP_EventLost,                   /* events dropped: the ring buffer was full */
	DP_NoState,                     /* a registered socket whose state slot was out of range */
	DP_SackPermStripped,            /* SACK-permitted removed from a SYN/ACK for a connecting socket whose SYN our TC egress did not see */
	DP_PassiveTicketUsed,           /* passive-open tickets taken by completed MP_CAPABLE handshakes */
	DP_MPJoinSynTx,                 /* MP_JOIN SYNs sent */
	DP_MPJoinSynAckRx,              /* MP_JOIN SYN/ACKs with a valid HMAC */
	DP_MPJoinSynAckHMacFailure,     /* MP_JOIN SYN/ACKs with a wrong HMAC: the subflow is reset */
	DP_MPJoinAckTx,                 /* MP_JOIN third ACKs sent */
	DP_MPJoinSynRx,                 /* MP_JOIN SYNs for a known token */
	DP_MPJoinNoTokenFound,          /* MP_JOIN SYNs for an unknown token */
	DP_MPJoinNoResource,            /* MP_JOIN SYNs refused: no subflow slot or nonce ready */
	DP_MPJoinSynAckTx,              /* MP_JOIN SYN/ACKs sent */
	DP_MPJoinAckRx,                 /* MP_JOIN third ACKs with a valid HMAC */
	DP_MPJoinAckHMacFailure,        /* MP_JOIN third ACKs with a wrong or missing HMAC */
	DP_MPJoinFullyEstablished,      /* our joins the peer fully established */
	DP_SignalOptionTx,              /* options Go queued (ADD_ADDR, RM_ADDR, MP_PRIO) written */
	DP_JoinSlotUsed,                /* subflow slots taken from the queue by passive joins */
	DP_ScratchNested,               /* programs skipped: nested deeper than the scratch levels */
	DP_DataAckNoSpace,              /* pure ACKs without a data ACK: SACK blocks took the room */
	DP_DSSNoMatchTCP,               /* mappings not covering the segment they came on: dropped */
	DP_MPCapableACKBadKey,          /* third ACKs whose echoed key is not the one our SYN/ACK derived: fallback */
	DP_TokenFallbackInit,           /* third ACKs whose derived key's token is in use: fallback */
	DP_MPCapableSYNNoKey,           /* MP_CAPABLE SYNs answered without MPTCP: the SYN's headers were gone */
	DP_DSSTxDeferred,               /* data segments sock_ops left without a mapping for TC: SACK blocks took the room */
	DP_SackRwData,                  /* segments with data or a DATA_FIN whose SACK blocks TC cut for a DSS mapping */
	DP_SackRwAck,                   /* segments without data whose SACK blocks TC cut for a data ACK */
	DP_SackRwGSO,                   /* of the rewritten segments, GSO packets (the header goes on every segment) */
	DP_SackRwFail,                  /* segments that needed a rewrite TC could not make (counted, sent as they were) */
	DP_AccEcnCleared,               /* AccECN requests (the AE flag) cleared from our subflows' SYNs */

	/* DSS checksums (RFC 8684 §3.3.1) */
	DP_CsumEnabled,                 /* MP_CAPABLE handshakes completed with DSS checksums, both roles */
	DP_DSSCsumTx,                   /* DSS mappings (and MP_CAPABLE first data) written with a checksum */
	DP_DSSCsumMissing,              /* peer mappings whose checksum presence differs from the negotiated one */

	/* Congestion control (congestion.h) */
	DP_CCCubicKept,                 /* CUBIC states put back after the ACK doorbell's algorithm switch */

	/* TCP Fast Open at our listeners (tfo.h) */
	DP_TFOSynDataRx,                /* MP_CAPABLE SYNs with data and a valid cookie: the child waits for the key */
	DP_TFOKeyRx,                    /* their clients' MP_CAPABLE with both keys, read on ingress */
	DP_TFOFallback,                 /* of those children, ones that continued as plain TCP */
	DP_SynAckRoomMade,              /* SYN/ACKs with a Fast Open cookie whose timestamps and SACK-permitted TC gave to our MP_CAPABLE */
	DP_COUNTER_MAX,
};

/* Emit the enums Go takes its constants from into BTF for bpf2go (-type). */
const enum sub_role *sub_role_btf __attribute__((unused));
const enum sub_state *sub_state_btf __attribute__((unused));
const enum sub_flag *sub_flag_btf __attribute__((unused));
const enum join_flag *join_flag_btf __attribute__((unused));
const enum conn_flag *conn_flag_btf __attribute__((unused));
const enum sub_ctl_flag *sub_ctl_flag_btf __attribute__((unused));
const enum sub_rst_flag *sub_rst_flag_btf __attribute__((unused));
const enum txmap_flag *txmap_flag_btf __attribute__((unused));
const enum rx_map_flag *rx_map_flag_btf __attribute__((unused));

#endif
