// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Runs the datapath's MP_JOIN HMAC (sha256.h) and passive key derivation (synkey.h) through
 * BPF_PROG_TEST_RUN, for their tests. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sha256.h"
#include "synkey.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct hmac_args {
	__u64 key1;
	__u64 key2;
	__u32 n1;
	__u32 n2;
	__u32 out[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hmac_scratch);
} hmac_scratch_map SEC(".maps");

SEC("syscall")
int run_hmac(struct hmac_args *a)
{
	__u32 zero = 0;
	struct hmac_scratch *x = bpf_map_lookup_elem(&hmac_scratch_map, &zero);

	if (!x)
		return 1;
	if (mptcp_hmac(x, a->key1, a->key2, a->n1, a->n2))
		return 2;
	for (int i = 0; i < 8; i++)
		a->out[i] = x->outer.h[i];
	return 0;
}

struct key_args {
	__u64 key;
	__u32 out[8];
};

SEC("syscall")
int run_key_sha(struct key_args *a)
{
	__u32 zero = 0;
	struct hmac_scratch *x = bpf_map_lookup_elem(&hmac_scratch_map, &zero);

	if (!x)
		return 1;
	if (mptcp_key_sha(x, a->key))
		return 2;
	for (int i = 0; i < 8; i++)
		a->out[i] = x->inner.h[i];
	return 0;
}

/* The derivation of our listeners' MP_CAPABLE keys (synkey.h), with the secret given. */
struct synkey_args {
	__u32 secret[8];
	struct synkey_in in;
	__u32 _pad;
	__u64 key;
};

SEC("syscall")
int run_synkey(struct synkey_args *a)
{
	__u32 zero = 0;
	struct hmac_scratch *x = bpf_map_lookup_elem(&hmac_scratch_map, &zero);
	struct synkey_in in;

	if (!x)
		return 1;
	__builtin_memcpy(&in, &a->in, sizeof(in));
	a->key = synkey_derive(x, a->secret, &in);
	return 0;
}
