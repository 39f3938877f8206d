package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/transparent"
	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

// transparentMode is --transparent: forward servers on loopback (127.0.0.1, and [::1] where
// the namespace has IPv6) that the interceptor's eBPF programs send every outgoing TCP
// connection of the namespace to, and the interceptor, started once they listen.
type transparentMode struct {
	servers []*proxy.Server
	cfg     transparent.Config
	log     *slog.Logger
	icp     atomic.Pointer[transparent.Interceptor]
}

// transparentServers reads --transparent and its options; without --transparent they are an
// error.
func transparentServers(cc *cli.Context, log *slog.Logger, limit *proxy.Limit) (*transparentMode, error) {
	tp := &transparentMode{log: log}
	for _, v := range cc.StringSlice("transparent-exclude") {
		e, err := transparent.ParseExclusion(v)
		if err != nil {
			return nil, fmt.Errorf("--transparent-exclude %w", err)
		}
		tp.cfg.Exclude = append(tp.cfg.Exclude, e)
	}
	tp.cfg.Cgroup = cc.String("transparent-cgroup")
	if !cc.Bool("transparent") {
		if tp.cfg.Cgroup != "" {
			return nil, errors.New("--transparent-cgroup needs --transparent")
		}
		if len(tp.cfg.Exclude) > 0 && len(cc.StringSlice("transparent-dev")) == 0 {
			return nil, errors.New("--transparent-exclude needs --transparent or --transparent-dev")
		}
		return tp, nil
	}
	original := func(c net.Conn) (netip.AddrPort, bool) {
		if icp := tp.icp.Load(); icp != nil {
			return icp.Original(proxy.AddrPortOf(c.RemoteAddr()))
		}
		return netip.AddrPort{}, false
	}
	for _, l := range []string{"127.0.0.1:0", "[::1]:0"} {
		tp.servers = append(tp.servers, &proxy.Server{Rule: proxy.Rule{Listen: l}, Forward: true, Original: original, Log: log, Limit: limit,
			Optional: l[0] == '['})
	}
	return tp, nil
}

// start starts the interception, once the servers listen. A namespace without IPv6 loopback
// has no [::1] server: its IPv6 connections are left alone.
func (tp *transparentMode) start(be *backend) error {
	if len(tp.servers) == 0 {
		return nil
	}
	tp.cfg.Listen4 = tp.servers[0].Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	if tp.servers[1].Listening() {
		tp.cfg.Listen6 = tp.servers[1].Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	}
	icp, err := transparent.Start(tp.cfg)
	if err != nil {
		return fmt.Errorf("--transparent: %w", err)
	}
	tp.icp.Store(icp)
	be.transparent.Store(icp)
	args := []any{"ipv4", tp.cfg.Listen4}
	if tp.cfg.Listen6.IsValid() {
		args = append(args, "ipv6", tp.cfg.Listen6)
	} else {
		args = append(args, "ipv6", "not intercepted (no IPv6 loopback)")
	}
	if tp.cfg.Cgroup != "" {
		args = append(args, "cgroup", tp.cfg.Cgroup)
	}
	for _, e := range tp.cfg.Exclude {
		args = append(args, "exclude", e.String())
	}
	tp.log.Info("transparent: intercepting the namespace's outgoing TCP connections", args...)
	return nil
}

// stop detaches the programs: new connections are no longer intercepted.
func (tp *transparentMode) stop() {
	if icp := tp.icp.Swap(nil); icp != nil {
		if err := icp.Close(); err != nil {
			tp.log.Warn("transparent: detach", "err", err)
		}
	}
}
