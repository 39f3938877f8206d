// Package testbpf holds the BPF objects that only tests and the path emulator load: the wire
// observer, the packet dropper, corrupter and option stripper, the parser and HMAC test
// programs, and the emulator. Compiled from bpf/ by bpf2go; the generated Go and the objects
// are committed. The daemon and the library never import this package.
package testbpf

// The C sources include the kernel's UAPI headers, which include <asm/types.h>: the multiarch
// include directories supply it (clang ignores the one that does not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type tc_counter -type mptcp_opt -output-stem observer Observer ../../bpf/tc.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type drop_match_cfg -type drop_dss_cfg -type drop_dss_stat -output-stem dropper Dropper ../../bpf/dropper.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -output-stem stripper Stripper ../../bpf/stripper.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type hmac_args -type key_args -type synkey_args -output-stem hmactest Hmactest ../../bpf/hmactest.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type parse_args -output-stem parsetest Parsetest ../../bpf/parsetest.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type emu_counter -output-stem emu Emu ../../bpf/emu.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type sack_rw -output-stem sacktest Sacktest ../../bpf/sacktest.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type corrupt_cfg -type corrupt_done -output-stem corrupt Corrupt ../../bpf/corrupt.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -type cc_test -output-stem cctest Cctest ../../bpf/cctest.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package testbpf -no-global-types -type kwalk_stats -output-stem kwalk Kwalk ../../bpf/kwalk.bpf.c -- -O2 -g -Wall -Werror -I../../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
