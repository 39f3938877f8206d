// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Router-mode interception for `mptcpd --transparent-dev IFNAME` (internal/transparentdev): the TCP
 * connections that LAN hosts make through this router, arriving on IFNAME to be forwarded, are
 * terminated by mptcpd's listener instead, as iptables' TPROXY does, and mptcpd carries them over
 * MPTCP to where they were going: the accepted socket's local address is the original destination.
 *
 *   tc ingress on IFNAME (tpd_ingress)  a SYN to be forwarded is assigned (bpf_sk_assign) to
 *                                       mptcpd's listener, as is the ACK of a SYN cookie it sent;
 *                                       every later packet of a connection so made to its socket;
 *                                       all get the mark tpd_cfg.mark
 *
 * A packet with a socket assigned is delivered to it only if the routing decision makes it local
 * (ip_forward and ip6_forward drop a packet that carries a socket): Go adds, for each intercepted
 * device, the policy rule "fwmark MARK/MARK iif IFNAME lookup TABLE" and, in TABLE, "local
 * 0.0.0.0/0 dev lo" and "local ::/0 dev lo". The listener needs IP_TRANSPARENT: its SYN/ACK comes
 * from the original destination, which is no address of this host (internal/transparentdev says
 * where the kernel checks it).
 *
 * What is left alone: anything but IPv4 and IPv6 TCP on Ethernet (IPv4 fragments and IPv6 with
 * extension headers included), frames not addressed to this host, special addresses (loopback,
 * multicast, broadcast, link-local, unspecified, IPv4-mapped), destinations in tpd_exclude, what
 * the routing tables deliver locally (the router's own addresses, whatever they are now: a
 * bpf_fib_lookup as the kernel would route the packet, which our fwmark rule cannot match since
 * the lookup carries no mark), and new connections the routing tables do not forward (no route,
 * forwarding off). A connection already intercepted keeps its packets when its destination's
 * route goes: mptcpd may still reach it by another path. A packet of a connection that has no
 * socket here (one made before the interception began) is forwarded as before. The program never
 * drops and never ends the chain: it returns TCX_NEXT on every path. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_defs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define PACKET_HOST 0
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* The debug print, compiled away unless TPD_DEBUG is defined. */
#ifdef TPD_DEBUG
#define tpd_debug(fmt, ...) bpf_printk("tpd: " fmt, ##__VA_ARGS__)
#else
#define tpd_debug(fmt, ...) \
	do {                \
	} while (0)
#endif

/* What the program did with each packet, per CPU, for mptcpd's metrics and the tests. */
enum tpd_counter {
	TPD_INTERCEPTED4 = 0,         /* IPv4 SYNs assigned to mptcpd's IPv4 listener */
	TPD_INTERCEPTED6,             /* IPv6 SYNs assigned to mptcpd's IPv6 listener */
	TPD_ASSIGNED_ESTABLISHED,     /* later packets of intercepted connections assigned to their socket */
	TPD_ASSIGNED_COOKIE,          /* ACKs of a SYN cookie of the listener's assigned to it */
	TPD_ASSIGN_FAIL,              /* bpf_sk_assign refused: the packet goes on unassigned */
	TPD_NO_SOCKET,                /* no SYN and no socket here: a connection from before, forwarded */
	TPD_NO_LISTENER,              /* a SYN of a family with no listener (IPv6 without one) */
	TPD_NOT_IP,                   /* neither IPv4 nor IPv6 (ARP, VLAN-tagged, ...) */
	TPD_NOT_TCP,                  /* IP but not TCP (UDP, ICMP, ...) */
	TPD_SKIP_NOT_HOST,            /* a frame addressed to another host's MAC address */
	TPD_SKIP_MALFORMED,           /* headers cut short, or an IP version or IHL that is wrong */
	TPD_SKIP_FRAGMENT,            /* an IPv4 fragment */
	TPD_SKIP_IPV6_EXT,            /* IPv6 with extension headers before TCP */
	TPD_SKIP_SPECIAL,             /* loopback, multicast, broadcast, link-local, unspecified, mapped */
	TPD_SKIP_EXCLUDED,            /* destination in tpd_exclude */
	TPD_SKIP_LOCAL,               /* the FIB delivers it here: to the router's own address */
	TPD_SKIP_NO_ROUTE,            /* a new connection the FIB does not forward (no route, ...) */
	TPD_FIB_FAIL,                 /* bpf_fib_lookup failed: a new connection is left alone */
	TPD_NR_COUNTERS,
};

/* An excluded destination prefix, keyed for the LPM trie: the family is matched in full
 * (prefixlen = 32 + the address prefix's length). */
struct tpd_excl_key {
	__u32 prefixlen;
	__u32 family;  /* AF_INET, AF_INET6 */
	__u32 addr[4]; /* network byte order; IPv4 in addr[0] */
};

/* Configuration Go sets before load. */
struct tpd_config {
	__u32 mark; /* the skb mark bit(s) of assigned packets, which the policy rules match */
};

const volatile struct tpd_config tpd_cfg = {};

/* Keeps the enum in BTF for bpf2go. */
const enum tpd_counter *tpd_counter_btf __attribute__((unused));

/* The index of each listener in tpd_listeners. */
#define TPD_LISTEN4 0
#define TPD_LISTEN6 1

/* mptcpd's listeners, which Go puts in: TPD_LISTEN4 and TPD_LISTEN6. A listener that closes
 * leaves the map by itself. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} tpd_listeners SEC(".maps");

/* Destinations never intercepted. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct tpd_excl_key);
	__type(value, __u32);
} tpd_exclude SEC(".maps");

/* Counters by enum tpd_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TPD_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tpd_stats SEC(".maps");

/* A parsed TCP packet: its headers (for the SYN cookie check), and its tuple as the socket
 * lookup wants it. */
struct tpd_pkt {
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} ip;
	struct tcphdr th;
	struct bpf_sock_tuple t;
	__u8 family; /* AF_INET, AF_INET6 */
};

static __always_inline void tpd_count(enum tpd_counter c)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&tpd_stats, &k);

	if (v)
		*v += 1;
}

/* tpd_parse reads the Ethernet, IP and TCP headers into p: it returns the counter of a packet
 * that is left alone, or TPD_NR_COUNTERS. Every read goes through bpf_skb_load_bytes, which
 * fails on a packet too short for it. */
static __always_inline enum tpd_counter tpd_parse(struct __sk_buff *skb, struct tpd_pkt *p)
{
	__u32 l4 = sizeof(struct ethhdr);
	__be16 proto;

	if (skb->vlan_present)
		return TPD_NOT_IP; /* the VLAN device's business, not its parent's */
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return TPD_SKIP_MALFORMED;
	if (proto == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, l4, &p->ip.v4, sizeof(p->ip.v4)) < 0)
			return TPD_SKIP_MALFORMED;
		if (p->ip.v4.version != 4 || p->ip.v4.ihl < 5)
			return TPD_SKIP_MALFORMED;
		if (p->ip.v4.protocol != IPPROTO_TCP)
			return TPD_NOT_TCP;
		if (p->ip.v4.frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return TPD_SKIP_FRAGMENT;
		l4 += p->ip.v4.ihl * 4;
		p->family = AF_INET;
		p->t.ipv4.saddr = p->ip.v4.saddr;
		p->t.ipv4.daddr = p->ip.v4.daddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, l4, &p->ip.v6, sizeof(p->ip.v6)) < 0)
			return TPD_SKIP_MALFORMED;
		if (p->ip.v6.version != 6)
			return TPD_SKIP_MALFORMED;
		switch (p->ip.v6.nexthdr) {
		case IPPROTO_TCP:
			break;
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_FRAGMENT:
		case IPPROTO_DSTOPTS:
		case IPPROTO_AH:
			return TPD_SKIP_IPV6_EXT; /* maybe TCP further on: not looked for */
		default:
			return TPD_NOT_TCP;
		}
		l4 += sizeof(struct ipv6hdr);
		p->family = AF_INET6;
		__builtin_memcpy(p->t.ipv6.saddr, &p->ip.v6.saddr, sizeof(p->t.ipv6.saddr));
		__builtin_memcpy(p->t.ipv6.daddr, &p->ip.v6.daddr, sizeof(p->t.ipv6.daddr));
	} else {
		return TPD_NOT_IP;
	}
	if (bpf_skb_load_bytes(skb, l4, &p->th, sizeof(p->th)) < 0)
		return TPD_SKIP_MALFORMED;
	if (p->family == AF_INET) {
		p->t.ipv4.sport = p->th.source;
		p->t.ipv4.dport = p->th.dest;
	} else {
		p->t.ipv6.sport = p->th.source;
		p->t.ipv6.dport = p->th.dest;
	}
	return TPD_NR_COUNTERS;
}

/* tpd_special4 reports an IPv4 address no connection to be intercepted has at either end:
 * 0.0.0.0/8, loopback, link-local, multicast and 240.0.0.0/4 with the broadcast address. */
static __always_inline int tpd_special4(__be32 a)
{
	__u32 h = bpf_ntohl(a);

	return (h >> 24) == 0 || (h >> 24) == 127 || (h >> 16) == 0xa9fe || (h >> 28) >= 0xe;
}

/* tpd_special6 is tpd_special4 for IPv6: ::, ::1, IPv4-mapped, link-local and multicast. */
static __always_inline int tpd_special6(const __u32 a[4])
{
	__u32 w0 = bpf_ntohl(a[0]);

	if (a[0] == 0 && a[1] == 0 && (a[2] == 0 || a[2] == bpf_htonl(0xffff)))
		return 1; /* ::, ::1, the IPv4-compatible and IPv4-mapped ranges */
	return (w0 & 0xffc00000) == 0xfe800000 || (w0 >> 24) == 0xff;
}

/* tpd_excluded looks the destination up in tpd_exclude. */
static __always_inline int tpd_excluded(const struct tpd_pkt *p)
{
	struct tpd_excl_key k = {.family = p->family};

	if (p->family == AF_INET) {
		k.prefixlen = 32 + 32;
		k.addr[0] = p->t.ipv4.daddr;
	} else {
		k.prefixlen = 32 + 128;
		__builtin_memcpy(k.addr, p->t.ipv6.daddr, sizeof(k.addr));
	}
	return bpf_map_lookup_elem(&tpd_exclude, &k) != NULL;
}

/* What the FIB does with a packet. */
enum tpd_route {
	TPD_ROUTE_FORWARD, /* forwards it */
	TPD_ROUTE_LOCAL,   /* delivers it here (or broadcasts it) */
	TPD_ROUTE_NONE,    /* drops it: no route, blackhole, prohibited, forwarding off */
	TPD_ROUTE_FAIL,    /* bpf_fib_lookup failed */
};

/* tpd_route asks the FIB what the kernel will do with the packet as it arrived (no mark: our
 * policy rule does not match). */
static __always_inline enum tpd_route tpd_route(struct __sk_buff *skb, const struct tpd_pkt *p)
{
	struct bpf_fib_lookup f = {};
	long rc;

	f.family = p->family;
	f.l4_protocol = IPPROTO_TCP;
	f.sport = p->th.source;
	f.dport = p->th.dest;
	f.ifindex = skb->ingress_ifindex;
	if (p->family == AF_INET) {
		f.tos = p->ip.v4.tos;
		f.ipv4_src = p->t.ipv4.saddr;
		f.ipv4_dst = p->t.ipv4.daddr;
	} else {
		__u32 w0;

		/* Traffic class and flow label, as ip6_route_input takes them. */
		__builtin_memcpy(&w0, &p->ip.v6, sizeof(w0));
		f.flowinfo = w0 & bpf_htonl(0x0fffffff);
		__builtin_memcpy(f.ipv6_src, p->t.ipv6.saddr, sizeof(f.ipv6_src));
		__builtin_memcpy(f.ipv6_dst, p->t.ipv6.daddr, sizeof(f.ipv6_dst));
	}
	/* tot_len 0: the kernel compares the skb with the egress device's MTU instead. */
	rc = bpf_fib_lookup(skb, &f, sizeof(f), 0);
	if (rc < 0)
		return TPD_ROUTE_FAIL;
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:    /* a route, the neighbour not resolved yet */
	case BPF_FIB_LKUP_RET_FRAG_NEEDED: /* a route, the packet too big for it */
	case BPF_FIB_LKUP_RET_UNSUPP_LWT:  /* a route through a tunnel encapsulation */
		return TPD_ROUTE_FORWARD;
	case BPF_FIB_LKUP_RET_NOT_FWDED: /* a route of another type than unicast: local */
		return TPD_ROUTE_LOCAL;
	}
	return TPD_ROUTE_NONE;
}

/* tpd_check returns the counter of a parsed TCP packet that is left alone whatever the routing,
 * or TPD_NR_COUNTERS. */
static __always_inline enum tpd_counter tpd_check(struct __sk_buff *skb, const struct tpd_pkt *p)
{
	if (skb->pkt_type != PACKET_HOST)
		return TPD_SKIP_NOT_HOST;
	if (p->family == AF_INET) {
		if (tpd_special4(p->t.ipv4.saddr) || tpd_special4(p->t.ipv4.daddr))
			return TPD_SKIP_SPECIAL;
	} else if (tpd_special6(p->t.ipv6.saddr) || tpd_special6(p->t.ipv6.daddr)) {
		return TPD_SKIP_SPECIAL;
	}
	if (tpd_excluded(p))
		return TPD_SKIP_EXCLUDED;
	return TPD_NR_COUNTERS;
}

/* tpd_lookup returns the socket the packet's tuple finds (a listener, a request, an established
 * or a time-wait socket), with a reference, or NULL. */
static __always_inline struct bpf_sock *tpd_lookup(struct __sk_buff *skb, struct tpd_pkt *p)
{
	if (p->family == AF_INET)
		return bpf_skc_lookup_tcp(skb, &p->t, sizeof(p->t.ipv4), BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, &p->t, sizeof(p->t.ipv6), BPF_F_CURRENT_NETNS, 0);
}

/* tpd_listener returns mptcpd's listener for the packet's family, with a reference, or NULL. */
static __always_inline struct bpf_sock *tpd_listener(const struct tpd_pkt *p)
{
	__u32 k = p->family == AF_INET ? TPD_LISTEN4 : TPD_LISTEN6;
	struct bpf_sock *sk = bpf_map_lookup_elem(&tpd_listeners, &k);

	if (sk && sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return NULL;
	}
	return sk;
}

/* tpd_assign assigns sk (whose reference it releases) to the packet and marks the packet for our
 * policy rule, counting ok, or TPD_ASSIGN_FAIL. */
static __always_inline void tpd_assign(struct __sk_buff *skb, struct bpf_sock *sk, enum tpd_counter ok)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (err) {
		tpd_debug("sk_assign: %ld", err);
		tpd_count(TPD_ASSIGN_FAIL);
		return;
	}
	skb->mark |= tpd_cfg.mark;
	tpd_count(ok);
}

/* tpd_cookie reports whether a packet without a socket is the ACK of a SYN cookie that the
 * listener sent: a connection of ours whose SYN left no request socket. When it says yes, *lsk
 * is the listener, with a reference for the caller; when it says no, it holds none. */
static __always_inline int tpd_cookie(struct tpd_pkt *p, struct bpf_sock **lsk)
{
	struct bpf_sock *sk;
	long err;

	if (!p->th.ack || p->th.syn || p->th.rst)
		return 0;
	sk = tpd_listener(p);
	if (!sk)
		return 0;
	/* Cheap unless the listener sent cookies lately (tcp_synq_no_recent_overflow). */
	if (p->family == AF_INET)
		err = bpf_tcp_check_syncookie(sk, &p->ip.v4, sizeof(p->ip.v4), &p->th, sizeof(p->th));
	else
		err = bpf_tcp_check_syncookie(sk, &p->ip.v6, sizeof(p->ip.v6), &p->th, sizeof(p->th));
	if (err) {
		bpf_sk_release(sk);
		return 0;
	}
	*lsk = sk;
	return 1;
}

/* tpd_new_ok returns TPD_NR_COUNTERS if a new connection may be intercepted on route r, else the
 * counter of why not. */
static __always_inline enum tpd_counter tpd_new_ok(enum tpd_route r)
{
	switch (r) {
	case TPD_ROUTE_FORWARD:
		return TPD_NR_COUNTERS;
	case TPD_ROUTE_FAIL:
		return TPD_FIB_FAIL;
	default:
		return TPD_SKIP_NO_ROUTE;
	}
}

static __always_inline void tpd_run(struct __sk_buff *skb)
{
	struct tpd_pkt p = {};
	enum tpd_counter c;
	enum tpd_route r;
	struct bpf_sock *sk;

	c = tpd_parse(skb, &p);
	if (c == TPD_NR_COUNTERS)
		c = tpd_check(skb, &p);
	if (c != TPD_NR_COUNTERS) {
		tpd_count(c);
		return;
	}
	/* The router's own sockets are found by the tuple as well: their packets are left to
	 * the kernel's own lookup. */
	r = tpd_route(skb, &p);
	if (r == TPD_ROUTE_LOCAL) {
		tpd_count(TPD_SKIP_LOCAL);
		return;
	}
	sk = tpd_lookup(skb, &p);
	if (sk) {
		/* A listener found by the tuple is another program's (one on the destination port
		 * of the router itself). Everything else, request and time-wait sockets included, is
		 * an intercepted connection's socket, whatever the route of its destination has
		 * become. A new SYN for the tuple of a time-wait socket goes to that socket too: our
		 * listener could not take it while the time-wait socket is in the established hash
		 * (reqsk_queue_hash_req refuses a request whose tuple is there), and BPF cannot end
		 * it as xt_TPROXY's tproxy_handle_time_wait4 does. The kernel answers the SYN with an
		 * ACK (TCP_TW_SYN finds no listener on the original port), the client's reset ends
		 * the time-wait socket, and the client's next SYN reaches our listener: Linux sends
		 * it at once for this very case (tcp_rcv_synsent_state_process, "Previous FIN/ACK or
		 * RST/ACK might be ignored"), other clients after their retransmission timeout. */
		if (sk->state != BPF_TCP_LISTEN) {
			tpd_assign(skb, sk, TPD_ASSIGNED_ESTABLISHED);
			return;
		}
		bpf_sk_release(sk);
	}
	if (!p.th.syn || p.th.ack) {
		if (tpd_cookie(&p, &sk)) {
			/* The SYN was forwardable when the cookie was sent: no route check. */
			tpd_assign(skb, sk, TPD_ASSIGNED_COOKIE);
			return;
		}
		tpd_count(TPD_NO_SOCKET);
		return;
	}
	c = tpd_new_ok(r);
	if (c != TPD_NR_COUNTERS) {
		tpd_count(c);
		return;
	}
	sk = tpd_listener(&p);
	if (!sk) {
		tpd_count(TPD_NO_LISTENER);
		return;
	}
	tpd_assign(skb, sk, p.family == AF_INET ? TPD_INTERCEPTED4 : TPD_INTERCEPTED6);
}

SEC("tc")
int tpd_ingress(struct __sk_buff *skb)
{
	tpd_run(skb);
	return TCX_NEXT;
}
