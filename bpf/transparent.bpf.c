// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Transparent interception for `mptcpd --transparent` (internal/transparent): every outgoing TCP
 * connection made in one network namespace is sent to mptcpd's listener on loopback, which carries
 * it over MPTCP to the destination the application asked for.
 *
 *   cgroup/connect4, cgroup/connect6    record the original destination in the socket's local
 *                                       storage and rewrite the destination to the listener
 *   sockops (BPF_SOCK_OPS_TCP_CONNECT_CB) copy it into tp_peers under the socket's local address
 *                                       and port: what mptcpd's accepted connection has as its
 *                                       peer, so that mptcpd can look it up
 *   cgroup/getpeername4, getpeername6   give the application back the address it connected to
 *
 * The programs are attached to a cgroup (the cgroup2 root by default) through BPF links, so that
 * nothing stays attached once the loader is gone. Cgroups are host-wide and network namespaces
 * are not: connect only touches sockets of the configured namespace (tp_cfg.netns_cookie), and
 * the other programs only act on sockets connect marked. Every program returns 1 (allow) on
 * every path, and the sock_ops program never writes reply or the socket's callback flags: it runs
 * beside other sock_ops programs (mptcpd's own datapath) whose replies must stand. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

/* What the programs did, per CPU, for mptcpd's metrics and the tests. */
enum tp_counter {
	TP_INTERCEPTED4 = 0,  /* connections to IPv4 (also IPv4-mapped) sent to the listener */
	TP_INTERCEPTED6,      /* connections to IPv6 sent to the listener */
	TP_SKIP_NOT_TCP,      /* connect on a socket that is no TCP stream (UDP) */
	TP_SKIP_OTHER_NETNS,  /* TCP connect in another network namespace: never touched */
	TP_SKIP_MPTCP,        /* a subflow of the kernel's own MPTCP (an IPPROTO_MPTCP socket) */
	TP_SKIP_KERNEL,       /* a socket the kernel made for itself (NFS, iSCSI, ...) */
	TP_SKIP_OWN_CGROUP,   /* connect by a process of the excluded cgroup (mptcpd's own) */
	TP_SKIP_OUR_STACK,    /* a subflow of an mptcpgo stack (a program using the library) */
	TP_SKIP_BOUND_DEV,    /* the socket is bound to a device: loopback is out of its reach */
	TP_SKIP_UNSPEC,       /* destination 0.0.0.0 or :: */
	TP_SKIP_LOOPBACK,     /* destination 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104 */
	TP_SKIP_LINK_LOCAL,   /* destination fe80::/10: its zone cannot be carried to mptcpd */
	TP_SKIP_NO_IPV6,      /* IPv6 destination, and no IPv6 listener is configured */
	TP_SKIP_EXCLUDED,     /* destination in the exclusion list */
	TP_STORAGE_FAIL,      /* no socket storage for the original destination: not intercepted */
	TP_RECORDED,          /* TCP_CONNECT_CB put an original destination into tp_peers */
	TP_RECORD_FAIL,       /* ... and the update of tp_peers failed */
	TP_PEER_RESTORED,     /* getpeername gave the application its original destination */
	TP_NR_COUNTERS,
};

/* An address and port, in network byte order; an IPv4 address is in addr[0], the rest zero. */
struct tp_addr {
	__u32 addr[4];
	__u16 port;
	__u16 family; /* AF_INET, AF_INET6 */
};

/* An exclusion rule, keyed for the LPM trie: family, port and address are matched as one bit
 * string, family and port always in full (prefixlen = 32 + the address prefix's length). A rule
 * for every port has port 0; connect looks up with the destination's port, then with 0. */
struct tp_excl_key {
	__u32 prefixlen;
	__u8 family; /* AF_INET, AF_INET6 */
	__u8 pad;
	__u16 port;    /* network byte order; 0: every port */
	__u32 addr[4]; /* network byte order; IPv4 in addr[0] */
};

/* Configuration Go sets before load. */
struct tp_config {
	__u64 netns_cookie; /* the network namespace whose connections are intercepted */
	__u64 own_cgroup;   /* cgroup id whose processes' connections are never intercepted */
	__u32 listen4_addr; /* mptcpd's IPv4 listener, network byte order */
	__u32 listen6_addr[4];
	__u16 listen4_port; /* network byte order */
	__u16 listen6_port; /* network byte order; 0: IPv6 destinations are left alone */
};

const volatile struct tp_config tp_cfg = {};

/* Keeps the enum in BTF for bpf2go. */
const enum tp_counter *tp_counter_btf __attribute__((unused));

/* The original destination of an intercepted socket, for its sock_ops and getpeername. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tp_addr);
} tp_orig SEC(".maps");

/* Peer address of mptcpd's accepted connection (the client's local address and port) -> the
 * original destination; mptcpd deletes what it reads, the LRU what it never reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tp_addr);
	__type(value, struct tp_addr);
} tp_peers SEC(".maps");

/* Destinations never intercepted (CIDR[:PORT] rules). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct tp_excl_key);
	__type(value, __u32);
} tp_exclude SEC(".maps");

/* Counters by enum tp_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TP_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tp_stats SEC(".maps");

/* The bit of struct sock that tells a socket the kernel made for itself (CO-RE). */
struct sock___tp {
	__u8 sk_kern_sock : 1;
} __attribute__((preserve_access_index));

static __always_inline void tp_count(enum tp_counter c)
{
	__u32 k = c;
	__u64 *v = bpf_map_lookup_elem(&tp_stats, &k);

	if (v)
		*v += 1;
}

/* tp_excluded looks the destination up in the exclusion list: with its port, then as any port. */
static __always_inline int tp_excluded(__u8 family, const __u32 addr[4], __u16 port)
{
	struct tp_excl_key k = {
		.prefixlen = 32 + (family == AF_INET ? 32 : 128),
		.family = family,
		.port = port,
		.addr = {addr[0], addr[1], addr[2], addr[3]},
	};

	if (bpf_map_lookup_elem(&tp_exclude, &k))
		return 1;
	k.port = 0;
	return bpf_map_lookup_elem(&tp_exclude, &k) != NULL;
}

/* tp_forget drops what an earlier connect of the socket recorded (a connect that failed and is
 * tried again elsewhere), so that getpeername and sock_ops do not act on a stale destination. */
static __always_inline void tp_forget(struct bpf_sock *sk)
{
	if (bpf_sk_storage_get(&tp_orig, sk, 0, 0))
		bpf_sk_storage_delete(&tp_orig, sk);
}

/* tp_skip counts why a TCP socket of our namespace is not intercepted. */
static __always_inline int tp_skip(struct bpf_sock *sk, enum tp_counter c)
{
	tp_forget(sk);
	tp_count(c);
	return 1;
}

#ifndef SOL_TCP
#define SOL_TCP 6
#endif
#ifndef TCP_CONGESTION
#define TCP_CONGESTION 13
#endif

/* tp_our_stack reports whether the socket is a subflow of an mptcpgo stack, mptcpd's or that of
 * any program using the library: those get our congestion control, named mpg<pid><a|b>
 * (internal/datapath), before they connect. Sent to mptcpd's plain TCP listener, such a subflow
 * would lose its MPTCP options on the way. */
static __always_inline int tp_our_stack(struct bpf_sock_addr *ctx)
{
	char cc[8] = {};

	if (bpf_getsockopt(ctx, SOL_TCP, TCP_CONGESTION, cc, sizeof(cc)))
		return 0;
	return cc[0] == 'm' && cc[1] == 'p' && cc[2] == 'g' && cc[3] >= '0' && cc[3] <= '9';
}

/* tp_socket_skip decides on what connect4 and connect6 share, the socket and its caller: it
 * returns the counter to increment when the connection is left alone, or TP_NR_COUNTERS. */
static __always_inline enum tp_counter tp_socket_skip(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct sock___tp *s;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return TP_SKIP_NOT_TCP;
	if (bpf_get_netns_cookie(ctx) != tp_cfg.netns_cookie)
		return TP_SKIP_OTHER_NETNS;
	/* An IPPROTO_MPTCP socket never gets here itself (its proto has no pre_connect), but its
	 * first subflow does, a TCP socket the kernel made (mptcp_connect calls the subflow's
	 * pre_connect): protocol is IPPROTO_TCP, and the MPTCP socket's getpeername would not find
	 * what we stored on the subflow. Joins the path manager makes come here as well. */
	if (bpf_skc_to_mptcp_sock(sk))
		return TP_SKIP_MPTCP;
	s = (struct sock___tp *)bpf_skc_to_tcp_sock(sk);
	if (!s)
		return TP_SKIP_NOT_TCP;
	if (BPF_CORE_READ_BITFIELD(s, sk_kern_sock))
		return TP_SKIP_KERNEL;
	if (bpf_get_current_cgroup_id() == tp_cfg.own_cgroup)
		return TP_SKIP_OWN_CGROUP;
	if (tp_our_stack(ctx))
		return TP_SKIP_OUR_STACK;
	if (sk->bound_dev_if)
		return TP_SKIP_BOUND_DEV;
	return TP_NR_COUNTERS;
}

/* tp_record keeps the original destination in the socket's storage. */
static __always_inline int tp_record(struct bpf_sock *sk, __u16 family, const __u32 addr[4], __u16 port)
{
	struct tp_addr *o = bpf_sk_storage_get(&tp_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!o)
		return 0;
	o->addr[0] = addr[0];
	o->addr[1] = addr[1];
	o->addr[2] = addr[2];
	o->addr[3] = addr[3];
	o->port = port;
	o->family = family;
	return 1;
}

/* tp_check4 returns the counter of an IPv4 destination that is left alone, or TP_NR_COUNTERS. */
static __always_inline enum tp_counter tp_check4(__u32 ip4, __u16 port)
{
	__u32 a[4] = {ip4, 0, 0, 0};

	if (ip4 == 0)
		return TP_SKIP_UNSPEC;
	if ((bpf_ntohl(ip4) >> 24) == 127)
		return TP_SKIP_LOOPBACK;
	if (tp_excluded(AF_INET, a, port))
		return TP_SKIP_EXCLUDED;
	return TP_NR_COUNTERS;
}

SEC("cgroup/connect4")
int tp_connect4(struct bpf_sock_addr *ctx)
{
	enum tp_counter c = tp_socket_skip(ctx);
	__u32 a[4] = {ctx->user_ip4, 0, 0, 0};
	__u16 port = ctx->user_port;

	if (c == TP_SKIP_NOT_TCP || c == TP_SKIP_OTHER_NETNS) {
		tp_count(c); /* nothing of ours can be on such a socket */
		return 1;
	}
	if (c != TP_NR_COUNTERS)
		return tp_skip(ctx->sk, c);
	if ((c = tp_check4(a[0], port)) != TP_NR_COUNTERS)
		return tp_skip(ctx->sk, c);
	if (!tp_record(ctx->sk, AF_INET, a, port))
		return tp_skip(ctx->sk, TP_STORAGE_FAIL);
	ctx->user_ip4 = tp_cfg.listen4_addr;
	ctx->user_port = tp_cfg.listen4_port;
	tp_count(TP_INTERCEPTED4);
	return 1;
}

SEC("cgroup/connect6")
int tp_connect6(struct bpf_sock_addr *ctx)
{
	enum tp_counter c = tp_socket_skip(ctx);
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u16 port = ctx->user_port;

	if (c == TP_SKIP_NOT_TCP || c == TP_SKIP_OTHER_NETNS) {
		tp_count(c);
		return 1;
	}
	if (c != TP_NR_COUNTERS)
		return tp_skip(ctx->sk, c);
	if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
		/* IPv4-mapped, on a dual-stack socket: IPv4, to the IPv4 listener in mapped form. */
		if ((c = tp_check4(a[3], port)) != TP_NR_COUNTERS)
			return tp_skip(ctx->sk, c);
		if (!tp_record(ctx->sk, AF_INET6, a, port))
			return tp_skip(ctx->sk, TP_STORAGE_FAIL);
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = tp_cfg.listen4_addr;
		ctx->user_port = tp_cfg.listen4_port;
		tp_count(TP_INTERCEPTED4);
		return 1;
	}
	if ((a[0] | a[1] | a[2] | a[3]) == 0)
		return tp_skip(ctx->sk, TP_SKIP_UNSPEC);
	if (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1))
		return tp_skip(ctx->sk, TP_SKIP_LOOPBACK);
	if ((bpf_ntohl(a[0]) & 0xffc00000) == 0xfe800000)
		return tp_skip(ctx->sk, TP_SKIP_LINK_LOCAL);
	if (tp_cfg.listen6_port == 0)
		return tp_skip(ctx->sk, TP_SKIP_NO_IPV6);
	if (tp_excluded(AF_INET6, a, port))
		return tp_skip(ctx->sk, TP_SKIP_EXCLUDED);
	if (!tp_record(ctx->sk, AF_INET6, a, port))
		return tp_skip(ctx->sk, TP_STORAGE_FAIL);
	ctx->user_ip6[0] = tp_cfg.listen6_addr[0];
	ctx->user_ip6[1] = tp_cfg.listen6_addr[1];
	ctx->user_ip6[2] = tp_cfg.listen6_addr[2];
	ctx->user_ip6[3] = tp_cfg.listen6_addr[3];
	ctx->user_port = tp_cfg.listen6_port;
	tp_count(TP_INTERCEPTED6);
	return 1;
}

/* TCP_CONNECT_CB runs in tcp_connect for every connecting TCP socket of the cgroup, whatever its
 * callback flags, once the local address and port are chosen and before the SYN is sent: before
 * mptcpd can accept the connection. */
SEC("sockops")
int tp_sockops(struct bpf_sock_ops *skops)
{
	struct tp_addr peer = {};
	__u32 family, ip4, a0, a1, a2, a3;
	struct bpf_sock *sk;
	struct tp_addr *o;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&tp_orig, sk, 0, 0);
	if (!o)
		return 1;
	/* The client's local address as mptcpd's listener sees it: IPv4 for a dual-stack socket
	 * connected to the mapped listener address. Every field is read up front: a load chosen by
	 * a condition becomes a load through a computed context pointer, which the verifier
	 * refuses. */
	family = skops->family;
	ip4 = skops->local_ip4;
	a0 = skops->local_ip6[0];
	a1 = skops->local_ip6[1];
	a2 = skops->local_ip6[2];
	a3 = skops->local_ip6[3];

	if (family == AF_INET6 && !(a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff))) {
		peer.family = AF_INET6;
		peer.addr[0] = a0;
		peer.addr[1] = a1;
		peer.addr[2] = a2;
		peer.addr[3] = a3;
	} else {
		peer.family = AF_INET;
		peer.addr[0] = family == AF_INET6 ? a3 : ip4;
	}
	peer.port = bpf_htons((__u16)skops->local_port);
	if (bpf_map_update_elem(&tp_peers, &peer, o, BPF_ANY))
		tp_count(TP_RECORD_FAIL);
	else
		tp_count(TP_RECORDED);
	return 1;
}

SEC("cgroup/getpeername4")
int tp_getpeername4(struct bpf_sock_addr *ctx)
{
	struct tp_addr *o = bpf_sk_storage_get(&tp_orig, ctx->sk, 0, 0);

	if (!o || o->family != AF_INET)
		return 1;
	ctx->user_ip4 = o->addr[0];
	ctx->user_port = o->port;
	tp_count(TP_PEER_RESTORED);
	return 1;
}

SEC("cgroup/getpeername6")
int tp_getpeername6(struct bpf_sock_addr *ctx)
{
	struct tp_addr *o = bpf_sk_storage_get(&tp_orig, ctx->sk, 0, 0);

	if (!o || o->family != AF_INET6)
		return 1;
	ctx->user_ip6[0] = o->addr[0];
	ctx->user_ip6[1] = o->addr[1];
	ctx->user_ip6[2] = o->addr[2];
	ctx->user_ip6[3] = o->addr[3];
	ctx->user_port = o->port;
	tp_count(TP_PEER_RESTORED);
	return 1;
}
