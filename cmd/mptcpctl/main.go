// Command mptcpctl drives mptcpd through its control socket: endpoints, limits, subflow
// priorities, and what the daemon's connections are doing. Its verbs read like `ip mptcp`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
)

func main() {
	app := newApp()
	if err := app.Run(interspersed(app, os.Args)); err != nil {
		fmt.Fprintf(os.Stderr, "mptcpctl: %v\n", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in the command line (exit status 2; other failures give 1).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}

func newApp() *cli.App {
	endpointFlags := []cli.Flag{
		&cli.UintFlag{Name: "id", Usage: "the endpoint's address `ID` (1..255; default: the lowest free one)"},
		&cli.StringFlag{Name: "dev", Usage: "the `IF`ace the address is on"},
		&cli.UintFlag{Name: "port", Usage: "signal: announce this `PORT` rather than the connection's"},
		&cli.StringFlag{Name: "flags", Usage: "comma-separated `FLAGS`: signal (announce it with ADD_ADDR), subflow (open subflows from it), backup, fullmesh"},
	}
	app := &cli.App{
		Name:  "mptcpctl",
		Usage: "control mptcpd: endpoints, limits, subflow priorities, connections, events and counters",
		Description: `mptcpctl talks to mptcpd through its control socket (root only). The verbs follow
` + "`ip mptcp`" + `: endpoints (add-addr, del-addr, or "endpoint add|delete|change|show|flush"),
limits, set-prio, show, monitor and stats; "cc" loads coupled congestion control for the
kernel's own MPTCP sockets (no daemon needed). Errors go to stderr with a non-zero exit status
(2 for a mistake in the command line).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ctl", Value: ctl.DefaultSocket, Usage: "the daemon's control socket `PATH`", EnvVars: []string{"MPTCPCTL_SOCKET"}},
			jsonFlag,
		},
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true,
		OnUsageError:              onUsageError(""),
		CommandNotFound: func(cc *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "mptcpctl: unknown command %q (see mptcpctl --help)\n", name)
			os.Exit(2)
		},
		Action: func(cc *cli.Context) error {
			if cc.NArg() > 0 {
				return usagef("unknown command %q (see mptcpctl --help)", cc.Args().First())
			}
			return cli.ShowAppHelp(cc)
		},
		Commands: []*cli.Command{
			{
				Name:      "add-addr",
				Usage:     "add an endpoint: a local address for the path manager; it takes effect on existing and new connections",
				ArgsUsage: "ADDR",
				Description: `A signal endpoint is announced (ADD_ADDR) to the peers of every connection we accepted;
a subflow endpoint opens subflows from it on every connection we opened.

  mptcpctl add-addr 10.0.1.1 --flags signal
  mptcpctl add-addr 192.168.1.10 --id 5 --dev wlan0 --flags subflow,backup`,
				Flags:  endpointFlags,
				Action: addAddr,
			},
			{
				Name:      "del-addr",
				Usage:     "delete an endpoint by ID or address: connections that use it send REMOVE_ADDR and close its subflows",
				ArgsUsage: "ID|ADDR",
				Description: `  mptcpctl del-addr 3
  mptcpctl del-addr 10.0.1.1`,
				Action: delAddr,
			},
			{
				Name:      "set-prio",
				Usage:     "make subflows backups or not (MP_PRIO): every subflow from a local address, or one subflow",
				ArgsUsage: "[ADDR] backup|nobackup",
				Description: `A backup subflow carries data only while no other subflow works.

  mptcpctl set-prio 10.0.1.1 backup
  mptcpctl set-prio --token 1a2b3c4d --local 10.0.1.1:40001 --remote 10.0.0.2:80 nobackup

The token is the hexadecimal one "mptcpctl show" prints.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "token", Usage: "the connection's `TOKEN` (hexadecimal, as show prints it)"},
					&cli.StringFlag{Name: "local", Usage: "the subflow's local `ADDR:PORT`"},
					&cli.StringFlag{Name: "remote", Usage: "the subflow's remote `ADDR:PORT`"},
				},
				Action: setPrio,
			},
			{
				Name:  "limits",
				Usage: "show or set the path manager's limits",
				Description: `Without options, shows them. Each limit is 0..8; the kernel's defaults are 2 and 0.

  mptcpctl limits
  mptcpctl limits --subflows 2 --add-addr-accepted 2`,
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "subflows", Usage: "extra subflows per connection (`N`)"},
					&cli.IntFlag{Name: "add-addr-accepted", Aliases: []string{"add_addr_accepted"}, Usage: "ADD_ADDRs acted on per connection (`N`)"},
					jsonFlag,
				},
				Action: limits,
			},
			endpointCommand(endpointFlags),
			ccCommand(),
			{
				Name:      "show",
				Usage:     "show connections (the default), subflows, endpoints or the kernel features in use",
				ArgsUsage: "[connections|subflows|endpoints|features]",
				Description: `Per connection: the token, both addresses, the state, the bytes each way and the scheduler.
Per subflow: both addresses and address IDs, the backup flags, RTT, congestion window,
bytes each way and retransmitted segments.
Features: each kernel facility the datapath probed at start, on or off, the first Linux
release that has it, and what its absence costs.

  mptcpctl show
  mptcpctl show subflows --json
  mptcpctl show features`,
				Flags:  []cli.Flag{jsonFlag},
				Action: show,
			},
			{
				Name:  "monitor",
				Usage: "print the daemon's events as they happen, like ip mptcp monitor",
				Description: `Events: created, established, closed, announced (the peer's ADD_ADDR), removed (its
REMOVE_ADDR), sub_established, sub_closed, sub_priority (the peer's MP_PRIO). Runs until
interrupted.

  mptcpctl monitor
  mptcpctl monitor --json`,
				Flags:  []cli.Flag{jsonFlag},
				Action: monitor,
			},
			{
				Name:  "stats",
				Usage: "print the daemon's counters, named like the kernel's MPTcpExt",
				Description: `  mptcpctl stats
  mptcpctl stats --json`,
				Flags:  []cli.Flag{jsonFlag, &cli.BoolFlag{Name: "nonzero", Aliases: []string{"n"}, Usage: "only counters that are not zero"}},
				Action: stats,
			},
		},
	}
	setUsageErrors(app.Commands, "")
	return app
}

// setUsageErrors makes a bad option of every command a usage error (status 2, one line): left
// unset, urfave/cli prints the command's whole help and the status is 1.
func setUsageErrors(cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		path := strings.TrimSpace(parent + " " + c.Name)
		c.OnUsageError = onUsageError(path)
		setUsageErrors(c.Subcommands, path)
	}
}

// flagName matches the Go flag package's "-name" in its errors.
var flagName = regexp.MustCompile(`(flag|for|:) -([a-z][a-z0-9_-]+)`)

func onUsageError(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		msg := flagName.ReplaceAllString(err.Error(), "$1 --$2") // our options are --long ones
		if cmd != "" {
			msg = cmd + ": " + msg
		}
		return usageError{errors.New(msg)}
	}
}

func endpointCommand(flags []cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "endpoint",
		Usage: "endpoints in ip mptcp's words: add, delete, change, show, flush",
		Description: `  mptcpctl endpoint add 10.0.1.1 id 3 dev eth1 signal
  mptcpctl endpoint delete id 3
  mptcpctl endpoint change 10.0.1.1 backup
  mptcpctl endpoint show
  mptcpctl endpoint flush`,
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add an endpoint (as add-addr)",
				ArgsUsage: "ADDR [id N] [dev IF] [port N] [signal] [subflow] [backup] [fullmesh]",
				Flags:     flags,
				Action:    addAddr,
			},
			{
				Name:      "delete",
				Aliases:   []string{"del"},
				Usage:     "delete an endpoint (as del-addr)",
				ArgsUsage: "id N | ADDR",
				Action:    delAddr,
			},
			{
				Name:      "change",
				Usage:     "change an endpoint's backup flag; its subflows send MP_PRIO",
				ArgsUsage: "id N | ADDR  backup|nobackup",
				Action:    changeEndpoint,
			},
			{
				Name:  "show",
				Usage: "show the endpoints",
				Flags: []cli.Flag{jsonFlag},
				Action: func(cc *cli.Context) error {
					if cc.NArg() > 0 {
						return usagef("unexpected argument %q", cc.Args().First())
					}
					return showEndpoints(cc)
				},
			},
			{
				Name:   "flush",
				Usage:  "delete every endpoint",
				Action: flush,
			},
		},
	}
}

// call runs one request against the daemon.
func call(cc *cli.Context, op string, args, out any) error {
	c, err := ctl.Dial(cc.String("ctl"))
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Call(op, args, out)
}

// parseEndpointArgs reads ADDR and ip-mptcp words (id N, dev IF, port N, flags) after it, and
// the --id/--dev/--port/--flags options.
func parseEndpointArgs(cc *cli.Context) (ctl.Endpoint, error) {
	var e ctl.Endpoint
	args := cc.Args().Slice()
	if len(args) == 0 {
		return e, usagef("missing ADDR")
	}
	a, err := parseAddr(args[0])
	if err != nil {
		return e, err
	}
	e.Addr = a
	if cc.IsSet("id") {
		if cc.Uint("id") < 1 || cc.Uint("id") > 255 {
			return e, usagef("--id %d: want 1..255", cc.Uint("id"))
		}
		e.ID = uint8(cc.Uint("id"))
	}
	if cc.IsSet("port") {
		if cc.Uint("port") < 1 || cc.Uint("port") > 65535 {
			return e, usagef("--port %d: want 1..65535", cc.Uint("port"))
		}
		e.Port = uint16(cc.Uint("port"))
	}
	e.Dev = cc.String("dev")
	if f := cc.String("flags"); f != "" {
		for _, x := range strings.Split(f, ",") {
			if err := checkFlag(x); err != nil {
				return e, err
			}
			e.Flags = append(e.Flags, x)
		}
	}
	rest := args[1:]
	for len(rest) > 0 {
		w := rest[0]
		switch w {
		case "id", "port", "dev":
			if len(rest) < 2 {
				return e, usagef("%s needs a value", w)
			}
			v := rest[1]
			rest = rest[2:]
			switch w {
			case "id":
				n, err := strconv.ParseUint(v, 10, 8)
				if err != nil || n == 0 {
					return e, usagef("id %q: want 1..255", v)
				}
				e.ID = uint8(n)
			case "port":
				n, err := strconv.ParseUint(v, 10, 16)
				if err != nil || n == 0 {
					return e, usagef("port %q: want 1..65535", v)
				}
				e.Port = uint16(n)
			case "dev":
				e.Dev = v
			}
		default:
			if err := checkFlag(w); err != nil {
				return e, err
			}
			e.Flags = append(e.Flags, w)
			rest = rest[1:]
		}
	}
	return e, nil
}

func checkFlag(f string) error {
	if err := pmapi.CheckFlag(f); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func parseAddr(s string) (a addr, err error) {
	a, err = parseIP(s)
	if err != nil {
		return a, usagef("%q is not an IP address", s)
	}
	return a, nil
}

func addAddr(cc *cli.Context) error {
	e, err := parseEndpointArgs(cc)
	if err != nil {
		return err
	}
	var got ctl.Endpoint
	if err := call(cc, ctl.OpEndpointAdd, e, &got); err != nil {
		return err
	}
	fmt.Println(endpointString(got))
	return nil
}

// parseRef reads "ID", "id N" or "ADDR"; it returns the words after it.
func parseRef(args []string) (ctl.EndpointRef, []string, error) {
	var r ctl.EndpointRef
	if len(args) == 0 {
		return r, nil, usagef("missing ID or ADDR")
	}
	if args[0] == "id" {
		if len(args) < 2 {
			return r, nil, usagef("id needs a value")
		}
		args = args[1:]
		n, err := strconv.ParseUint(args[0], 10, 8)
		if err != nil || n == 0 {
			return r, nil, usagef("id %q: want 1..255", args[0])
		}
		r.ID = uint8(n)
		return r, args[1:], nil
	}
	if n, err := strconv.ParseUint(args[0], 10, 8); err == nil && n > 0 {
		r.ID = uint8(n)
		return r, args[1:], nil
	}
	a, err := parseAddr(args[0])
	if err != nil {
		return r, nil, usagef("%q is neither an endpoint ID (1..255) nor an IP address", args[0])
	}
	r.Addr = a
	return r, args[1:], nil
}

func delAddr(cc *cli.Context) error {
	r, rest, err := parseRef(cc.Args().Slice())
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected argument %q", rest[0])
	}
	var e ctl.Endpoint
	if err := call(cc, ctl.OpEndpointDelete, r, &e); err != nil {
		return err
	}
	fmt.Println("deleted", endpointString(e))
	return nil
}

func parseBackup(w string) (bool, error) {
	switch w {
	case "backup":
		return true, nil
	case "nobackup":
		return false, nil
	}
	return false, usagef("%q: want backup or nobackup", w)
}

func changeEndpoint(cc *cli.Context) error {
	r, rest, err := parseRef(cc.Args().Slice())
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("want backup or nobackup after the endpoint")
	}
	b, err := parseBackup(rest[0])
	if err != nil {
		return err
	}
	var e ctl.Endpoint
	if err := call(cc, ctl.OpEndpointChange, ctl.ChangeArgs{EndpointRef: r, Backup: b}, &e); err != nil {
		return err
	}
	fmt.Println(endpointString(e))
	return nil
}

func flush(cc *cli.Context) error {
	if cc.NArg() > 0 {
		return usagef("unexpected argument %q", cc.Args().First())
	}
	var r ctl.FlushResult
	if err := call(cc, ctl.OpEndpointFlush, nil, &r); err != nil {
		return err
	}
	fmt.Printf("deleted %d endpoints\n", r.Removed)
	return nil
}

func setPrio(cc *cli.Context) error {
	args := cc.Args().Slice()
	var a ctl.PrioArgs
	one := cc.IsSet("token") || cc.IsSet("local") || cc.IsSet("remote")
	switch {
	case one && len(args) == 1:
		if !cc.IsSet("token") || !cc.IsSet("local") || !cc.IsSet("remote") {
			return usagef("one subflow needs --token, --local and --remote")
		}
		t, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(cc.String("token")), "0x"), 16, 32)
		if err != nil || t == 0 {
			return usagef("--token %q: want the hexadecimal token show prints", cc.String("token"))
		}
		a.Token = uint32(t)
		if a.Local, err = parseAddrPort(cc.String("local")); err != nil {
			return usagef("--local: %v", err)
		}
		if a.Remote, err = parseAddrPort(cc.String("remote")); err != nil {
			return usagef("--remote: %v", err)
		}
	case !one && len(args) == 2:
		var err error
		if a.Addr, err = parseAddr(args[0]); err != nil {
			return err
		}
		args = args[1:]
	default:
		return usagef("want ADDR backup|nobackup, or --token T --local A:P --remote A:P backup|nobackup")
	}
	b, err := parseBackup(args[0])
	if err != nil {
		return err
	}
	a.Backup = b
	var r ctl.PrioResult
	if err := call(cc, ctl.OpSetPrio, a, &r); err != nil {
		return err
	}
	fmt.Printf("MP_PRIO %s sent on %d subflows\n", args[0], r.Subflows)
	return nil
}

func limits(cc *cli.Context) error {
	if cc.NArg() > 0 {
		return usagef("unexpected argument %q", cc.Args().First())
	}
	var l ctl.Limits
	if cc.IsSet("subflows") || cc.IsSet("add-addr-accepted") {
		var a ctl.LimitsArgs
		for _, x := range []struct {
			name string
			p    **int
		}{{"subflows", &a.Subflows}, {"add-addr-accepted", &a.AddAddrAccepted}} {
			if cc.IsSet(x.name) {
				n := cc.Int(x.name)
				if n < 0 || n > 8 {
					return usagef("--%s %d: want 0..8", x.name, n)
				}
				*x.p = &n
			}
		}
		if err := call(cc, ctl.OpLimitsSet, a, &l); err != nil {
			return err
		}
	} else if err := call(cc, ctl.OpLimitsGet, nil, &l); err != nil {
		return err
	}
	if cc.Bool("json") {
		return printJSON(l)
	}
	fmt.Printf("add_addr_accepted %d subflows %d\n", l.AddAddrAccepted, l.Subflows)
	return nil
}

func show(cc *cli.Context) error {
	what := "connections"
	if cc.NArg() > 1 {
		return usagef("unexpected argument %q", cc.Args().Get(1))
	}
	if cc.NArg() == 1 {
		what = cc.Args().First()
	}
	switch what {
	case "connections", "conn", "c":
		return showConns(cc, false)
	case "subflows", "sub", "s":
		return showConns(cc, true)
	case "endpoints", "endpoint", "e":
		return showEndpoints(cc)
	case "features", "feature", "f":
		return showFeatures(cc)
	}
	return usagef("show %q: want connections, subflows, endpoints or features", what)
}

func showFeatures(cc *cli.Context) error {
	var fs []ctl.Feature
	if err := call(cc, ctl.OpFeatures, nil, &fs); err != nil {
		return err
	}
	if cc.Bool("json") {
		return printJSON(fs)
	}
	printFeatures(os.Stdout, fs)
	return nil
}

func showEndpoints(cc *cli.Context) error {
	var eps []ctl.Endpoint
	if err := call(cc, ctl.OpEndpointShow, nil, &eps); err != nil {
		return err
	}
	if cc.Bool("json") {
		return printJSON(eps)
	}
	for _, e := range eps {
		fmt.Println(endpointString(e))
	}
	return nil
}

func showConns(cc *cli.Context, subflows bool) error {
	var conns []ctl.Connection
	if err := call(cc, ctl.OpShow, nil, &conns); err != nil {
		return err
	}
	if cc.Bool("json") {
		if subflows {
			type sub struct {
				Token uint32 `json:"token"`
				ctl.Subflow
			}
			out := []sub{}
			for _, c := range conns {
				for _, s := range c.Subflows {
					out = append(out, sub{c.Token, s})
				}
			}
			return printJSON(out)
		}
		return printJSON(conns)
	}
	if subflows {
		printSubflows(os.Stdout, conns)
	} else {
		printConns(os.Stdout, conns)
	}
	return nil
}

func monitor(cc *cli.Context) error {
	if cc.NArg() > 0 {
		return usagef("unexpected argument %q", cc.Args().First())
	}
	c, err := ctl.Dial(cc.String("ctl"))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	asJSON := cc.Bool("json")
	return c.Monitor(ctx, func(ev ctl.Event, lost uint64) error {
		if lost > 0 && !asJSON {
			fmt.Printf("[%14s] %d events lost\n", "LOST", lost)
		}
		if asJSON {
			return printJSONLine(ev)
		}
		fmt.Println(eventString(ev))
		return nil
	})
}

func stats(cc *cli.Context) error {
	if cc.NArg() > 0 {
		return usagef("unexpected argument %q", cc.Args().First())
	}
	var c map[string]uint64
	if err := call(cc, ctl.OpStats, nil, &c); err != nil {
		return err
	}
	if cc.Bool("nonzero") {
		for k, v := range c {
			if v == 0 {
				delete(c, k)
			}
		}
	}
	if cc.Bool("json") {
		return printJSON(c)
	}
	printStats(os.Stdout, c)
	return nil
}

// interspersed moves a command's options that follow its arguments in front of them, so that
// `add-addr 10.0.0.1 --flags signal` works as it reads (urfave/cli stops at the first argument).
func interspersed(app *cli.App, args []string) []string {
	out := []string{args[0]}
	i := 1
	// Global options, up to the command.
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		out = append(out, args[i])
		if takesValue(app.Flags, args[i]) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
		i++
	}
	cmds := app.Commands
	var cmd *cli.Command
	for i < len(args) {
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(args[i]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd = next
		out = append(out, args[i])
		i++
		cmds = cmd.Subcommands
	}
	if cmd == nil {
		return append(out, args[i:]...)
	}
	var flags, pos []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if takesValue(cmd.Flags, a) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		pos = append(pos, a)
	}
	out = append(out, flags...)
	if len(pos) > 0 {
		out = append(append(out, "--"), pos...)
	}
	return out
}

// takesValue reports whether an option (-x, --x, not --x=v) is one that takes a value.
func takesValue(flags []cli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}
