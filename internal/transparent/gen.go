package transparent

// The interception programs (bpf/transparent.bpf.c) compiled by bpf2go; the generated Go and the
// object are committed. The C source includes the kernel's UAPI headers, which include
// <asm/types.h>: the multiarch include directories supply it (clang ignores the one that does
// not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package transparent -no-global-types -type tp_counter -type tp_addr -type tp_excl_key -type tp_config -output-stem transparent Transparent ../../bpf/transparent.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
