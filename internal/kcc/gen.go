package kcc

// The C sources include the kernel's UAPI headers, which include <asm/types.h>: the multiarch
// include directories supply it (clang ignores the one that does not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package kcc -no-global-types -type kcc_counter -output-stem kcc Kcc ../../bpf/kcc.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
