// Package gen holds the BPF objects compiled from bpf/ by bpf2go, and the generated Go that loads them.
package gen

// The C sources include the kernel's UAPI headers, which include <asm/types.h>: the multiarch
// include directories supply it (clang ignores the one that does not exist).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -type tc_counter -type mptcp_opt -output-stem observer Observer ../bpf/tc.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -no-global-types -type dp_counter -type event_type -type event -type sk_sub -type conn -type sub -type ticket -type dp_config -type txmap -type token_val -type addr_key -output-stem datapath Datapath ../bpf/datapath.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -type drop_match_cfg -output-stem dropper Dropper ../bpf/dropper.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -output-stem stripper Stripper ../bpf/stripper.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -type hmac_args -type key_args -type synkey_args -output-stem hmactest Hmactest ../bpf/hmactest.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -type parse_args -output-stem parsetest Parsetest ../bpf/parsetest.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package gen -type emu_counter -output-stem emu Emu ../bpf/emu.bpf.c -- -O2 -g -Wall -Werror -I../bpf -idirafter/usr/include/x86_64-linux-gnu -idirafter/usr/include/aarch64-linux-gnu
