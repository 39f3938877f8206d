package datapath

// The datapath object (bpf/datapath.bpf.c) compiled by bpf2go; the generated Go and the object
// are committed (make generate rebuilds them, make check-generate fails on a difference).
// The C sources include the kernel's UAPI headers, which include <asm/types.h>: the multiarch
// include directories supply it (clang ignores the one that does not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package datapath -no-global-types -type dp_counter -type event_type -type event -type sk_sub -type conn -type sub -type ticket -type dp_config -type txmap -type token_val -type addr_key -type sub_role -type sub_state -type sub_flag -type join_flag -type conn_flag -type sub_ctl_flag -type sub_rst_flag -type txmap_flag -type rx_map_flag -output-stem datapath Datapath ../../bpf/datapath.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
