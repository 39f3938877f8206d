package transparentdev

// The interception program (bpf/transparent_dev.bpf.c) compiled by bpf2go; the generated Go and
// the object are committed. The C source includes the kernel's UAPI headers, which include
// <asm/types.h>: the multiarch include directories supply it (clang ignores the one that does
// not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package transparentdev -no-global-types -type tpd_counter -type tpd_excl_key -type tpd_config -output-stem transparentdev Transparentdev ../../bpf/transparent_dev.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
