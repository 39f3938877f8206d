// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Runs the TCP options walker and the strict MPTCP option parser (mptcp_parse.h) over one options
 * area through BPF_PROG_TEST_RUN, reporting every MPTCP option with its verdict, for the tests
 * that compare them with the Go codec (pkg/wire). Test-only: not loaded by the daemon. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "mptcp_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* An MPTCP option takes at least two bytes of the 40-byte options area. */
#define PARSETEST_MAX_OPTS (MAX_TCP_OPTION_SPACE / 2)

/* One MPTCP option the walker found: where, its length byte, and the parser's verdict. The
 * parsed fields are meaningful only when result is PARSE_OK. */
struct parse_result_opt {
	__u8 off;
	__u8 len;
	__u8 result; /* enum parse_result */
	__u8 _pad[5];
	struct mptcp_opt opt;
};

struct parse_results {
	__u32 nr_opts; /* MPTCP options found (capped at PARSETEST_MAX_OPTS) */
	__s32 walk;    /* 0, or -1 when a bad option length stopped the walk */
	struct parse_result_opt opts[PARSETEST_MAX_OPTS];
};

/* The program's context, in and out. */
struct parse_args {
	__u8 area[MAX_TCP_OPTION_SPACE]; /* in: the TCP options area */
	__u32 len;                       /* in: its length, at most MAX_TCP_OPTION_SPACE */
	__u32 seg;                       /* in: TCP flags | SEG_HAS_PAYLOAD */
	struct parse_results out;        /* out */
};

/* The walker and parser take pointers into a map value, as in the datapath; the context is read
 * and written only at constant offsets (the verifier allows nothing else). */
struct parse_scratch {
	struct optbuf ob;
	struct mptcp_opt opt;
	struct parse_results res;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct parse_scratch);
} parse_scratch_map SEC(".maps");

SEC("syscall")
int run_parse(struct parse_args *a)
{
	struct opt_walk w = {};
	struct parse_scratch *s;
	__u32 zero = 0, nr = 0;

	s = bpf_map_lookup_elem(&parse_scratch_map, &zero);
	if (!s)
		return 1;
	if (a->len > MAX_TCP_OPTION_SPACE)
		return 2;
	__builtin_memset(&s->ob, 0, sizeof(s->ob));
	s->res.walk = 0;
	__builtin_memcpy(s->ob.b, a->area, MAX_TCP_OPTION_SPACE);
	w.len = a->len;
	for (int i = 0; i < PARSETEST_MAX_OPTS; i++) {
		int n = mptcp_next_opt(&s->ob, &w), r;
		struct parse_result_opt *out = &s->res.opts[i];

		if (n == 0)
			break;
		if (n < 0) {
			s->res.walk = -1;
			break;
		}
		r = mptcp_parse_opt(&s->ob, w.pos, n, a->seg, &s->opt);
		out->off = w.pos;
		out->len = n;
		out->result = r;
		out->opt = s->opt;
		w.pos += n;
		nr++;
	}
	s->res.nr_opts = nr;
	/* Too large for one __builtin_memcpy: copy in words, unrolled to constant offsets. */
#pragma unroll
	for (__u32 k = 0; k < sizeof(a->out) / 8; k++)
		((__u64 *)&a->out)[k] = ((__u64 *)&s->res)[k];
	return 0;
}
