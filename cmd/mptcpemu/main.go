// Command mptcpemu emulates network paths between namespaces (delay, jitter, loss, rate and
// queue, link cuts, scheduled changes) on this kernel, which has no netem. It runs until
// SIGINT or SIGTERM and removes itself then.
//
//	mptcpemu --dev mpg-a:veth0 --dev mpg-b:veth0 --delay 20ms --rate 50mbit --at 5s:down --at 15s:up
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

func main() {
	app := &cli.App{
		Name:  "mptcpemu",
		Usage: "emulate path delay, jitter, loss, rate and events on veths (what each named end sends)",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "dev", Required: true, Usage: "NETNS:DEV, an end whose sending is emulated; NETNS is a name in /run/netns or a path (repeatable; both ends for both directions)"},
			&cli.DurationFlag{Name: "delay", Usage: "one-way delay"},
			&cli.DurationFlag{Name: "jitter", Usage: "uniform jitter added to the delay (±)"},
			&cli.StringFlag{Name: "loss", Value: "0", Usage: "random loss, \"1%\" or \"0.01\""},
			&cli.StringFlag{Name: "rate", Value: "0", Usage: "rate limit, as tc writes it: 50mbit, 1gbit (0: none)"},
			&cli.StringFlag{Name: "queue", Value: "0", Usage: "bytes that may wait for the rate limit: 100kB, 1MiB (0: 100 ms at the rate)"},
			&cli.StringSliceFlag{Name: "at", Usage: "TIME:WHAT, a scheduled change: 5s:down, 15s:up, 8s:rate=10mbit, 9s:delay=50ms, 10s:loss=2% (repeatable)"},
			&cli.DurationFlag{Name: "stats", Usage: "print each link's counters this often (0: at exit only)"},
			&cli.BoolFlag{Name: "json", Usage: "counters as JSON lines"},
			&cli.StringFlag{Name: "ready-file", Usage: "write this file once every link is emulated"},
		},
		HideHelpCommand: true,
		Action:          run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "mptcpemu: %v\n", err)
		os.Exit(2)
	}
}

func run(cc *cli.Context) error {
	cfg, events, err := parse(cc)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var links []*emu.Link
	defer func() {
		for _, l := range links {
			if err := l.Close(); err != nil {
				slog.Error("close", "dev", l.Dev(), "err", err)
			}
		}
	}()
	var names []string
	for _, d := range cc.StringSlice("dev") {
		ns, dev, ok := strings.Cut(d, ":")
		if !ok {
			return fmt.Errorf("--dev %q: want NETNS:DEV", d)
		}
		if !strings.ContainsRune(ns, '/') {
			ns = filepath.Join("/run/netns", ns)
		}
		l, err := emu.Open(ns, dev, cfg)
		if err != nil {
			return err
		}
		links = append(links, l)
		names = append(names, d)
	}
	slog.Info("emulating", "links", strings.Join(names, " "), "config", cfg.String(), "events", len(events))
	if f := cc.String("ready-file"); f != "" {
		if err := os.WriteFile(f, []byte("ready\n"), 0o644); err != nil {
			return err
		}
	}

	start := time.Now()
	played := make(chan error, 1)
	go func() { played <- emu.Play(ctx, start, events, links...) }()
	var tick <-chan time.Time
	if every := cc.Duration("stats"); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			printStats(cc.Bool("json"), start, names, links)
			return nil
		case err := <-played:
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			played = nil
		case <-tick:
			printStats(cc.Bool("json"), start, names, links)
		}
	}
}

func parse(cc *cli.Context) (emu.Config, []emu.Event, error) {
	c := emu.Config{Delay: cc.Duration("delay"), Jitter: cc.Duration("jitter")}
	for _, name := range []string{"delay", "jitter"} {
		if d := cc.Duration(name); d < 0 {
			return c, nil, fmt.Errorf("--%s %v: negative", name, d)
		}
	}
	for _, name := range []string{"loss", "rate", "queue"} {
		if err := c.Apply(name + "=" + cc.String(name)); err != nil {
			return c, nil, fmt.Errorf("--%s %q: %w", name, cc.String(name), err)
		}
	}
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	var evs []emu.Event
	for _, s := range cc.StringSlice("at") {
		ev, err := emu.ParseEvent(s)
		if err != nil {
			return c, nil, err
		}
		evs = append(evs, ev)
	}
	return c, evs, nil
}

func printStats(asJSON bool, start time.Time, names []string, links []*emu.Link) {
	for i, l := range links {
		s := l.Stats()
		if asJSON {
			b, _ := json.Marshal(struct {
				T   float64 `json:"t"`
				Dev string  `json:"dev"`
				emu.Stats
			}{time.Since(start).Seconds(), names[i], s})
			fmt.Println(string(b))
			continue
		}
		fmt.Printf("%7.2fs %-24s %s: delivered %d packets %d bytes; dropped loss %d queue %d down %d overflow %d\n",
			time.Since(start).Seconds(), names[i], l.Config(), s.Packets, s.Bytes, s.LossDrops, s.QueueDrops, s.DownDrops, s.Overflow)
	}
}
