// Command mptcpd is the mptcpgo daemon: it owns the MPTCP datapath and carries applications'
// TCP connections over MPTCP (forward proxies) and MPTCP connections to TCP services (accept
// proxies).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

func main() {
	app := &cli.App{
		Name:  "mptcpd",
		Usage: "Multipath TCP daemon: carries TCP connections over MPTCP",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "forward", Usage: "accept plain TCP on LISTEN and carry each connection over MPTCP to REMOTE (LISTEN=REMOTE, repeatable)"},
			&cli.StringSliceFlag{Name: "accept", Usage: "accept MPTCP and plain TCP on LISTEN and relay each connection to TARGET over TCP (LISTEN=TARGET, repeatable)"},
			&cli.BoolFlag{Name: "transparent", Usage: "carry every outgoing TCP connection of this network namespace's processes (but mptcpd's) over MPTCP to its original destination (eBPF: cgroup connect and getpeername programs)"},
			&cli.StringSliceFlag{Name: "transparent-dev", Usage: "terminate the TCP connections this router forwards from the hosts behind `IFNAME` and carry them over MPTCP to where they were going (eBPF: TC ingress with socket assignment, and a policy rule; repeatable)"},
			&cli.StringSliceFlag{Name: "transparent-exclude", Usage: "with --transparent, leave connections to `CIDR[:PORT]` alone (repeatable; an IPv6 prefix with a port as [2001:db8::/32]:443)"},
			&cli.StringFlag{Name: "transparent-cgroup", Usage: "with --transparent, intercept only the processes of this cgroup v2 `PATH` and below (default: every process)"},
			&cli.StringSliceFlag{Name: "convert", Usage: "be an RFC 8803 Transport Converter on LISTEN: accept MPTCP and plain TCP, and relay each connection to the destination its Convert message's Connect TLV names (repeatable)"},
			&cli.StringSliceFlag{Name: "convert-allow", Usage: "with --convert, allow destinations in this `CIDR` that the defaults refuse (loopback, unspecified, multicast, link-local, broadcast, the host's own addresses) (repeatable)"},
			&cli.StringSliceFlag{Name: "convert-clients", Usage: "with --convert, serve only clients in this `CIDR` (repeatable; default: every client)"},
			&cli.StringFlag{Name: "convert-cookie", Usage: "with --convert, require this `VALUE` in each Connect's Cookie TLV; with --convert-via, send it"},
			&cli.StringFlag{Name: "convert-via", Usage: "with --forward or --transparent, reach each connection's destination through the RFC 8803 Transport Converter at `HOST:PORT` (a Connect TLV over MPTCP)"},
			&cli.StringSliceFlag{Name: "endpoint", Usage: "a local address for the path manager: ADDR[,subflow|signal|backup|fullmesh][,port=N][,id=N][,dev=IF] (repeatable), as `ip mptcp endpoint add`"},
			&cli.StringFlag{Name: "limits", Usage: "subflows=N,add-addr-accepted=N (0..8 each; the kernel's defaults are 2 and 0)"},
			&cli.BoolFlag{Name: "checksum", Usage: "require DSS checksums (RFC 8684 §3.3.1) on every connection, as the kernel's net.mptcp.checksum_enabled=1 does; a peer that requires them gets them either way"},
			&cli.StringFlag{Name: "scheduler", Value: "default", Usage: "packet scheduler of new connections: " + strings.Join(control.SchedulerNames(), ", ")},
			&cli.StringFlag{Name: "cc", Value: "cubic", Usage: "congestion control of new connections' subflows: " + strings.Join(control.CongestionControlNames(), ", ") + " (lia, olia and balia couple the subflows, RFC 6356)"},
			&cli.StringFlag{Name: "ready-file", Usage: "write this file once every listener is up"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.IntFlag{Name: "max-conns", Value: control.MaxConnsLimit, Usage: fmt.Sprintf("connections carried at once, over all rules (1 to %d); beyond it new ones are reset. The datapath grows with the connections (about 6.7 KB of kernel memory each, taken %d at a time); --memory-limit and the file descriptor limit bound them too", control.MaxConnsLimit, datapath.SlotChunk)},
			&cli.StringFlag{Name: "memory-limit", Usage: "a memory limit for the daemon, such as 512MiB or 2GiB: Go's soft limit (as GOMEMLIMIT), and while the Go heap and goroutine stacks are above 90% of it new connections are refused (reset, or their dial fails); off unless given"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, Usage: "how long a graceful shutdown waits for connections to close"},
			&cli.StringFlag{Name: "ctl", Value: ctl.DefaultSocket, Usage: "the control socket for mptcpctl (root only; \"\" for none)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://`ADDR`/metrics (off unless given)"},
			&cli.StringFlag{Name: "config", Usage: "read options from this YAML `FILE` (keys are the long flag names); flags given here override it"},
			&cli.StringFlag{Name: "cpuprofile", Hidden: true, Usage: "write a CPU profile to this file until shutdown"},
			&cli.BoolFlag{Name: "pprof", Hidden: true, Usage: "with --metrics, serve Go's runtime profiles at /debug/pprof/ too"},
		},
		HideHelpCommand: true,
		// --endpoint values hold commas; every slice flag is repeated instead.
		DisableSliceFlagSeparator: true,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return err
		},
		Action: run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "mptcpd: %v\n", err)
		os.Exit(2)
	}
}

// memoryLimit reads --memory-limit (given, or from --config) and sets Go's soft memory limit to
// it, as GOMEMLIMIT would; without one ("off" or none) the runtime's limit is left as it is. It
// returns the limit in bytes, 0 for none.
func memoryLimit(cc *cli.Context) (int64, error) {
	v := cc.String("memory-limit")
	if v == "" {
		return 0, nil
	}
	n, err := parseMemoryLimit(v)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit %w", err)
	}
	if n > 0 {
		debug.SetMemoryLimit(n)
	}
	return n, nil
}

func run(cc *cli.Context) error {
	if cc.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", cc.Args().First())
	}
	if err := applyConfig(cc); err != nil {
		return err
	}
	if err := checkListenAddr(cc.String("metrics")); err != nil {
		return fmt.Errorf("--metrics %w", err)
	}
	maxConns := cc.Int("max-conns")
	if err := checkMaxConns(maxConns); err != nil {
		return fmt.Errorf("--max-conns %w", err)
	}
	memLimit, err := memoryLimit(cc)
	if err != nil {
		return err
	}
	limit := proxy.NewLimit(maxConns)
	var level slog.Level
	if err := level.UnmarshalText([]byte(cc.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", cc.String("log-level"))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var servers []*proxy.Server
	for _, flag := range []string{"forward", "accept"} {
		for _, spec := range cc.StringSlice(flag) {
			r, err := proxy.ParseRule(spec)
			if err != nil {
				return fmt.Errorf("--%s %w", flag, err)
			}
			servers = append(servers, &proxy.Server{Rule: r, Forward: flag == "forward", Log: log, Limit: limit})
		}
	}
	conv, err := converterPolicy(cc)
	if err != nil {
		return err
	}
	for _, spec := range cc.StringSlice("convert") {
		r, err := proxy.ParseListen(spec)
		if err != nil {
			return fmt.Errorf("--convert %w", err)
		}
		servers = append(servers, &proxy.Server{Rule: r, Convert: conv, Log: log, Limit: limit})
	}
	tp, err := transparentServers(cc, log, limit)
	if err != nil {
		return err
	}
	servers = append(servers, tp.servers...)
	dm, err := devServers(cc, log, limit)
	if err != nil {
		return err
	}
	servers = append(servers, dm.servers...)
	if err := convertVia(cc, servers); err != nil {
		return err
	}
	if len(servers) == 0 {
		return errors.New("nothing to do: give at least one --forward, --accept, --convert, --transparent or --transparent-dev")
	}
	mgr, err := pathManager(cc, log)
	if err != nil {
		return err
	}
	if _, err := control.NewScheduler(cc.String("scheduler")); err != nil {
		return fmt.Errorf("--scheduler: %w", err)
	}
	if err := control.CheckCongestionControl(cc.String("cc")); err != nil {
		return fmt.Errorf("--cc: %w", err)
	}
	if f := cc.String("cpuprofile"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	if memLimit > 0 {
		log.Info("memory limit: new connections are refused while the Go heap and goroutine stacks are above 90% of it", "bytes", memLimit)
	}
	checkFDBudget(log, maxConns, cc.IsSet("max-conns"))
	dpcfg := control.DatapathConfig(maxConns)
	dpcfg.Logger = log
	dpcfg.Checksum = cc.Bool("checksum")
	stack, err := control.NewStack(control.StackConfig{
		Datapath: dpcfg, Logger: log, PathManager: mgr, Scheduler: cc.String("scheduler"), CongestionControl: cc.String("cc"), MemoryLimit: memLimit,
	})
	if err != nil {
		return fmt.Errorf("start datapath: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The path manager's watch and the operator surface end before the stack closes, after a
	// signal or a failure of the proxies alike (the signal handler stays: a second SIGTERM
	// does not cut the shutdown short).
	uctx, stopUsers := context.WithCancel(ctx)
	defer stopUsers()
	if err := mgr.Watch(uctx, vnetns.None()); err != nil {
		stack.Close()
		return fmt.Errorf("follow addresses and links: %w", err)
	}
	be := &backend{mgr: mgr, stack: stack, servers: servers, limit: limit, heap: newHeapReleaser(log)}
	go be.heap.run(uctx)
	for _, s := range servers {
		s.OnRelay = be.relayStarted
	}
	closeCtl, err := operatorSurface(uctx, cc, be, log)
	if err != nil {
		stack.Close()
		return err
	}
	closeCtl = sync.OnceFunc(closeCtl)
	defer closeCtl()
	for _, s := range servers {
		s.Stack = stack
		if err := s.Listen(ctx); err != nil {
			stack.Close()
			return err
		}
		if !s.Listening() {
			continue
		}
		args := []any{"mode", s.Mode(), "listen", s.Addr().String()}
		if s.Convert == nil && s.Original == nil {
			args = append(args, "remote", s.Rule.Remote)
		}
		if s.Via != "" {
			args = append(args, "via", s.Via)
		}
		log.Info("listening", args...)
	}
	if err := tp.start(be); err != nil {
		stack.Close()
		return err
	}
	defer tp.stop()
	if err := dm.start(be); err != nil {
		tp.stop()
		stack.Close()
		return err
	}
	defer dm.stop()
	if f := cc.String("ready-file"); f != "" {
		if err := writeReady(f, servers); err != nil {
			stack.Close()
			return err
		}
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.Serve(ctx) }()
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("serve", "err", err)
	}
	// Shutdown, users of the stack first: the proxies (their relays end or are aborted at the
	// timeout), the path manager's watch and the metrics endpoint (uctx), the control socket;
	// then the stack, which waits for its own goroutines before it unloads the datapath.
	sctx, cancel := context.WithTimeout(context.Background(), cc.Duration("shutdown-timeout"))
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	stopUsers()
	closeCtl()
	if cerr := stack.Close(); cerr != nil {
		log.Error("detach datapath", "err", cerr)
	}
	log.Info("stopped")
	return err
}

// File descriptors: each relayed connection holds two (the application's socket and the one
// to the remote; each further subflow adds one), the daemon about a hundred of its own (the
// datapath's maps, programs and links, listeners, control socket).
const (
	fdsPerConn  = 2
	fdsOfDaemon = 128
)

// checkFDBudget warns when the --max-conns given need more file descriptors than the process
// may open (Go raises the soft limit to the hard one at start); without the flag it tells how
// many connections the descriptors allow.
func checkFDBudget(log *slog.Logger, maxConns int, given bool) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	need := uint64(fdsPerConn*maxConns + fdsOfDaemon)
	if need <= rl.Cur {
		return
	}
	allowed := uint64(0)
	if rl.Cur > fdsOfDaemon {
		allowed = (rl.Cur - fdsOfDaemon) / fdsPerConn
	}
	if given {
		log.Warn("the file descriptor limit is below what --max-conns connections need: past it, accepts wait (EMFILE) until descriptors are released",
			"max_conns", maxConns, "needed", need, "limit", rl.Cur)
		return
	}
	log.Info("the file descriptor limit bounds the connections", "connections", allowed, "limit", rl.Cur)
}

// pathManager builds the path manager from --endpoint and --limits.
func pathManager(cc *cli.Context, log *slog.Logger) (*pm.Manager, error) {
	mgr := pm.New(log)
	if spec := cc.String("limits"); spec != "" {
		l, err := pm.ParseLimits(spec, pm.DefaultLimits)
		if err != nil {
			return nil, fmt.Errorf("--limits: %w", err)
		}
		if err := mgr.SetLimits(l); err != nil {
			return nil, fmt.Errorf("--limits: %w", err)
		}
	}
	for _, spec := range cc.StringSlice("endpoint") {
		e, err := pmapi.ParseEndpoint(spec)
		if err != nil {
			return nil, fmt.Errorf("--endpoint: %w", err)
		}
		e, err = mgr.AddEndpoint(e)
		if err != nil {
			return nil, fmt.Errorf("--endpoint: %w", err)
		}
		log.Info("endpoint", "endpoint", e.String())
	}
	return mgr, nil
}

// writeReady writes the listening addresses, one per line, atomically.
func writeReady(path string, servers []*proxy.Server) error {
	var b []byte
	for _, s := range servers {
		if !s.Listening() {
			continue
		}
		b = append(b, s.Addr().String()...)
		b = append(b, '\n')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mptcpd-ready-*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// converterPolicy reads --convert-allow, --convert-clients and --convert-cookie into the policy
// the --convert servers share; the first two need --convert.
func converterPolicy(cc *cli.Context) (*proxy.Converter, error) {
	conv := &proxy.Converter{}
	for _, f := range []struct {
		name string
		dst  *[]netip.Prefix
	}{{"convert-allow", &conv.Allow}, {"convert-clients", &conv.Clients}} {
		for _, v := range cc.StringSlice(f.name) {
			p, err := proxy.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("--%s %w", f.name, err)
			}
			*f.dst = append(*f.dst, p)
		}
		if len(*f.dst) > 0 && len(cc.StringSlice("convert")) == 0 {
			return nil, fmt.Errorf("--%s needs --convert", f.name)
		}
	}
	if v := cc.String("convert-cookie"); v != "" {
		if len(v) > maxCookie {
			return nil, fmt.Errorf("--convert-cookie: %d bytes, at most %d", len(v), maxCookie)
		}
		conv.Cookie = []byte(v)
	} else if cc.IsSet("convert-cookie") {
		return nil, errors.New("--convert-cookie: empty (a Cookie TLV cannot be empty)")
	}
	return conv, nil
}

// maxCookie bounds --convert-cookie: a Convert message holds at most 1020 bytes, a Connect
// TLV takes 20 and the fixed header 4, a Cookie TLV's own header 2.
const maxCookie = 256

// convertVia applies --convert-via to the --forward and --transparent servers; it needs one. The
// converter must be named by address and port, or a name that resolves when the daemon starts.
func convertVia(cc *cli.Context, servers []*proxy.Server) error {
	via := cc.String("convert-via")
	if via == "" {
		return nil
	}
	if _, err := proxy.ParseRule("0.0.0.0:0=" + via); err != nil {
		return fmt.Errorf("--convert-via %q: want HOST:PORT", via)
	}
	n := 0
	for _, s := range servers {
		if s.Forward {
			s.Via = via
			if v := cc.String("convert-cookie"); v != "" {
				s.ViaCookie = []byte(v)
			}
			n++
		}
	}
	if n == 0 {
		return errors.New("--convert-via needs --forward, --transparent or --transparent-dev")
	}
	return nil
}
