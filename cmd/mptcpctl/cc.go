package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/kcc"
)

// ccCommand loads the coupled congestion controls for the kernel's own MPTCP sockets: it needs
// no daemon, and what it loads stays until unloaded.
func ccCommand() *cli.Command {
	pinDir := &cli.StringFlag{Name: "pin-dir", Value: kcc.DefaultPinDir, Usage: "where the registrations are pinned (`DIR`, on a BPF file system)"}
	return &cli.Command{
		Name:  "cc",
		Usage: "coupled congestion control (LIA, OLIA, BALIA) for the Linux kernel's own MPTCP sockets: load, unload, show",
		Description: `The kernel's MPTCP runs each subflow's congestion control on its own: two subflows through
one bottleneck take twice what a TCP flow does there. "cc load" registers lia, olia and balia,
which couple the subflows of a connection (RFC 6356's goal: no more of a shared bottleneck than
one TCP flow), as BPF congestion controls that any socket may select. An application selects
one with TCP_CONGESTION on its MPTCP socket (IPPROTO_MPTCP); every subflow of the connection
then runs it. The registration is pinned: it stays after mptcpctl exits, with or without
mptcpd, until "cc unload". This needs no daemon, and root.

  mptcpctl cc load
  mptcpctl cc show
  mptcpctl cc unload`,
		Subcommands: []*cli.Command{
			{
				Name:  "load",
				Usage: "register lia, olia and balia, pinned",
				Flags: []cli.Flag{pinDir},
				Action: func(cc *cli.Context) error {
					if cc.NArg() > 0 {
						return usagef("unexpected argument %q", cc.Args().First())
					}
					l, err := kcc.Load(kcc.Options{PinDir: cc.String("pin-dir")})
					if err != nil {
						return err
					}
					how := "through struct_ops links"
					if !l.Linked {
						how = "by struct_ops map values (this kernel has no struct_ops links)"
					}
					names := l.Names
					if err := l.Close(); err != nil {
						return err
					}
					fmt.Printf("registered %s %s, pinned in %s\n", strings.Join(names, " "), how, cc.String("pin-dir"))
					return nil
				},
			},
			{
				Name:  "unload",
				Usage: "unregister what cc load registered; sockets that use one keep it until they close",
				Flags: []cli.Flag{pinDir},
				Action: func(cc *cli.Context) error {
					if cc.NArg() > 0 {
						return usagef("unexpected argument %q", cc.Args().First())
					}
					names, err := kcc.Unload(cc.String("pin-dir"))
					if err != nil {
						return err
					}
					if len(names) == 0 {
						fmt.Println("nothing loaded")
						return nil
					}
					fmt.Printf("unregistered %s\n", strings.Join(names, " "))
					return nil
				},
			},
			{
				Name:  "show",
				Usage: "what is loaded, and the programs' counters",
				Flags: []cli.Flag{pinDir, jsonFlag},
				Action: func(cc *cli.Context) error {
					if cc.NArg() > 0 {
						return usagef("unexpected argument %q", cc.Args().First())
					}
					p, err := kcc.Show(cc.String("pin-dir"))
					if err != nil {
						return err
					}
					if cc.Bool("json") {
						return printJSON(p)
					}
					if len(p.Names) == 0 {
						fmt.Println("nothing loaded")
						return nil
					}
					fmt.Printf("loaded: %s (pinned in %s)\n", strings.Join(p.Names, " "), cc.String("pin-dir"))
					keys := make([]string, 0, len(p.Counters))
					for k := range p.Counters {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					for _, k := range keys {
						fmt.Fprintf(os.Stdout, "%-12s %d\n", k, p.Counters[k])
					}
					return nil
				},
			},
		},
	}
}
