package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
)

// operatorSurface starts the control socket (--ctl) and the metrics endpoint (--metrics); the
// returned function closes the control socket.
func operatorSurface(ctx context.Context, cc *cli.Context, b *backend, log *slog.Logger) (func(), error) {
	closeCtl := func() {}
	if path := cc.String("ctl"); path != "" {
		srv := &ctl.Server{Backend: b, Log: log, Daemon: daemonVersion()}
		err := srv.Listen(path)
		switch {
		case errors.Is(err, ctl.ErrBusy) && !cc.IsSet("ctl"):
			// Another daemon has the default socket (one per namespace, say): this one
			// runs without, as it did before there was one.
			log.Warn("no control socket: the default one is in use; give --ctl PATH", "path", path)
		case err != nil:
			return nil, fmt.Errorf("--ctl: %w", err)
		default:
			go func() {
				if err := srv.Serve(); err != nil {
					log.Error("control socket", "err", err)
				}
			}()
			closeCtl = func() { srv.Close() }
			log.Info("control socket", "path", path)
		}
	}
	if addr := cc.String("metrics"); addr != "" {
		a, err := serveMetrics(ctx, addr, cc.Bool("pprof"), b, log)
		if err != nil {
			closeCtl()
			return nil, fmt.Errorf("--metrics: %w", err)
		}
		log.Info("metrics", "url", "http://"+a.String()+"/metrics")
	}
	return closeCtl, nil
}

func daemonVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return "mptcpd " + bi.Main.Version
	}
	return "mptcpd"
}
