// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Runs the coupled congestion controls' arithmetic (coupled.h) on the paths in a map, through
 * BPF_PROG_TEST_RUN, for the tests that compare it with a Go reference. Test-only: not loaded
 * by the daemon. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "coupled.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct cc_test {
	struct cc_path p[CC_MAX_SUBS]; /* in: the published paths; out: compacted */
	__u32 np;                      /* in: how many of p are members */
	__u32 me;                      /* in: the path asking */
	__u32 n;                       /* out: usable paths */
	__u32 self;                    /* out: the path asking among them, CC_MAX_SUBS if not usable */
	__u32 lia;                     /* out: lia_window */
	__u32 ai;                      /* out: balia_params */
	__u32 md;
	__u32 _pad;
	__s64 olia;                    /* out: olia_increase */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cc_test);
} cctest_io SEC(".maps");

SEC("tc")
int cctest(struct __sk_buff *skb)
{
	struct cc_test *t;
	__u32 zero = 0, n, self, r;
	__u64 b;

	t = bpf_map_lookup_elem(&cctest_io, &zero);
	if (!t)
		return TC_ACT_SHOT;
	r = cc_compact((struct cc_paths *)t->p, t->np, t->me);
	n = r & 0xff;
	self = r >> 8;
	t->n = n;
	t->self = self;
	t->lia = 0;
	t->olia = 0;
	t->ai = 0;
	t->md = 0;
	if (self >= CC_MAX_SUBS)
		return TC_ACT_OK;
	t->lia = lia_window((struct cc_paths *)t->p, n, self);
	t->olia = olia_increase((struct cc_paths *)t->p, n, self);
	b = balia_params((struct cc_paths *)t->p, n, self);
	t->ai = (__u32)b;
	t->md = b >> 32;
	return TC_ACT_OK;
}
