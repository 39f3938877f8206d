package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"github.com/mptcpgo/mptcpgo/internal/transparent"
	"github.com/mptcpgo/mptcpgo/internal/transparentdev"
	"github.com/mptcpgo/mptcpgo/pkg/proxy"
)

// devMode is --transparent-dev: forward servers on loopback (127.0.0.1, and [::1] where the
// namespace has IPv6) to which a TC ingress program on each device assigns the TCP connections
// this router forwards from the hosts behind it (bpf_sk_assign, as TPROXY); an accepted
// connection's local address is where it was going.
type devMode struct {
	servers []*proxy.Server
	devs    []string
	exclude []netip.Prefix
	log     *slog.Logger
	icp     atomic.Pointer[transparentdev.Interceptor]
}

// devServers reads --transparent-dev. --transparent-exclude's prefixes without a port apply to
// it too; those with a port only to --transparent.
func devServers(cc *cli.Context, log *slog.Logger, limit *proxy.Limit) (*devMode, error) {
	dm := &devMode{devs: cc.StringSlice("transparent-dev"), log: log}
	if len(dm.devs) == 0 {
		return dm, nil
	}
	for _, d := range dm.devs {
		if len(d) == 0 || len(d) > 15 {
			return nil, fmt.Errorf("--transparent-dev %q: want an interface name", d)
		}
	}
	for _, v := range cc.StringSlice("transparent-exclude") {
		e, err := transparent.ParseExclusion(v)
		if err != nil {
			return nil, fmt.Errorf("--transparent-exclude %w", err)
		}
		if e.Port == 0 {
			dm.exclude = append(dm.exclude, e.Prefix)
		}
	}
	original := func(c net.Conn) (netip.AddrPort, bool) {
		a := proxy.AddrPortOf(c.LocalAddr())
		return a, a.IsValid()
	}
	for _, l := range []string{"127.0.0.1:0", "[::1]:0"} {
		dm.servers = append(dm.servers, &proxy.Server{Rule: proxy.Rule{Listen: l}, Forward: true, Original: original,
			Label: "transparent-dev", Log: log, Limit: limit, Optional: l[0] == '['})
	}
	return dm, nil
}

// start attaches the programs once the servers listen.
func (dm *devMode) start(be *backend) error {
	if len(dm.servers) == 0 {
		return nil
	}
	cfg := transparentdev.Config{Devs: dm.devs, Listen4: dm.servers[0].TCPListener(), Exclude: dm.exclude}
	if dm.servers[1].Listening() {
		cfg.Listen6 = dm.servers[1].TCPListener()
	}
	icp, err := transparentdev.Start(cfg)
	if err != nil {
		return fmt.Errorf("--transparent-dev: %w", err)
	}
	dm.icp.Store(icp)
	be.transparentDev.Store(icp)
	dm.log.Info("transparent-dev: intercepting the TCP connections forwarded from", "devices", dm.devs, "ipv6", cfg.Listen6 != nil)
	return nil
}

// stop detaches the programs and removes the policy routing.
func (dm *devMode) stop() {
	if icp := dm.icp.Swap(nil); icp != nil {
		if err := icp.Close(); err != nil {
			dm.log.Warn("transparent-dev: detach", "err", err)
		}
	}
}
