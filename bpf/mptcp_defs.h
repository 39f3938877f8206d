/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* MPTCP v1 wire constants (RFC 8684 §3), named after the kernel's TCPOLEN_ and MPTCPOPT_ macros. */
#ifndef MPTCPGO_MPTCP_DEFS_H
#define MPTCPGO_MPTCP_DEFS_H

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MPTCP 30

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_PSH 0x08
#define TCP_FLAG_ACK 0x10

/* Subtypes (high nibble of the third byte). */
#define MPTCPOPT_MP_CAPABLE 0
#define MPTCPOPT_MP_JOIN 1
#define MPTCPOPT_DSS 2
#define MPTCPOPT_ADD_ADDR 3
#define MPTCPOPT_RM_ADDR 4
#define MPTCPOPT_MP_PRIO 5
#define MPTCPOPT_MP_FAIL 6
#define MPTCPOPT_MP_FASTCLOSE 7
#define MPTCPOPT_RST 8
#define MPTCPOPT_NR_SUBTYPES 9

#define MPTCP_SUPPORTED_VERSION 1
#define MPTCP_VERSION_MASK 0x0f

/* MP_CAPABLE lengths and flags (§3.1). */
#define LEN_MPC_SYN 4
#define LEN_MPC_SYNACK 12
#define LEN_MPC_ACK 20
#define LEN_MPC_ACK_DATA 22
#define LEN_MPC_ACK_DATA_CSUM 24
#define MPC_FLAG_CHECKSUM 0x80
#define MPC_FLAG_EXTENSIBILITY 0x40
#define MPC_FLAG_DENY_JOIN_ID0 0x20
#define MPC_FLAG_HMAC_SHA256 0x01
#define MPC_FLAG_ALGO_MASK 0x1f

/* MP_JOIN (§3.2). */
#define LEN_MPJ_SYN 12
#define LEN_MPJ_SYNACK 16
#define LEN_MPJ_ACK 24
#define MPJ_FLAG_BACKUP 0x01
#define MPJ_HMAC_LEN 20

/* DSS (§3.3). */
#define LEN_DSS_BASE 4
#define LEN_DSS_ACK32 4
#define LEN_DSS_ACK64 8
#define LEN_DSS_MAP32 10
#define LEN_DSS_MAP64 14
#define LEN_DSS_CHECKSUM 2
#define LEN_DSS_MAX 28
#define DSS_FLAG_DATA_FIN 0x10
#define DSS_FLAG_DSN64 0x08
#define DSS_FLAG_HAS_MAP 0x04
#define DSS_FLAG_ACK64 0x02
#define DSS_FLAG_HAS_ACK 0x01
#define DSS_FLAG_MASK 0x1f

/* ADD_ADDR (§3.4.1): lengths with the 8-byte HMAC, and the echo ("BASE") forms without it. */
#define LEN_ADD_ADDR 16
#define LEN_ADD_ADDR_PORT 18
#define LEN_ADD_ADDR6 28
#define LEN_ADD_ADDR6_PORT 30
#define LEN_ADD_ADDR_BASE 8
#define LEN_ADD_ADDR_BASE_PORT 10
#define LEN_ADD_ADDR6_BASE 20
#define LEN_ADD_ADDR6_BASE_PORT 22
#define ADD_ADDR_FLAG_ECHO 0x01

/* REMOVE_ADDR (§3.4.2). */
#define LEN_RM_ADDR_BASE 3
#define RM_ADDR_IDS_MAX 8

/* MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST (§3.3.8, §3.7, §3.5, §3.6). */
#define LEN_MP_PRIO 3
#define MP_PRIO_FLAG_BACKUP 0x01
#define LEN_MP_FAIL 12
#define LEN_MP_FASTCLOSE 12
#define LEN_MP_TCPRST 4
#define MP_TCPRST_FLAG_TRANSIENT 0x01

#define MAX_TCP_OPTION_SPACE 40

/* TCX verdict that lets the next program of the chain run (linux/pkt_cls.h since 6.6); the
 * legacy TC hook reads it as TC_ACT_UNSPEC, which also continues. */
#define TCX_NEXT -1

#endif
