package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/pkg/pmapi"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// rigDaemon is the server side of a rig with ours at both ends: mptcpd in namespace B, with
// its own stack, path manager and counters (a process has one stack), relaying each MPTCP
// connection to the test's plain TCP listener on B's loopback. The rig drives it through its
// control socket as mptcpctl does.
//
//	namespace A                          namespace B
//	test binary's stack ── paths ──▶ mptcpd --accept [::]:P=127.0.0.1:Q ──▶ test's listener (Q)
type rigDaemon struct {
	p    *netns.Process
	sock string
	port uint16 // the MPTCP listener's
}

// startRigDaemon starts mptcpd in ns with the rig's limits, listening on wild and relaying to
// target.
func startRigDaemon(t testing.TB, ctx context.Context, ns *netns.Namespace, wild, target string, extra ...string) *rigDaemon {
	t.Helper()
	// A short directory: a Unix socket's path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "rigd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &rigDaemon{sock: filepath.Join(dir, "ctl.sock")}
	var addrs []string
	d.p, addrs = startMptcpdB(t, ctx, ns, append([]string{"--ctl", d.sock, "--accept", wild + "=" + target,
		"--limits", "subflows=8,add-addr-accepted=8", "--max-conns", "64"}, extra...)...)
	if len(addrs) != 1 {
		t.Fatalf("mptcpd listens on %q, want one address", addrs)
	}
	ap, err := netip.ParseAddrPort(addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	d.port = ap.Port()
	return d
}

// call makes one request on a connection of its own (the rig calls from several goroutines).
func (d *rigDaemon) call(op string, args, out any) error {
	c, err := ctl.Dial(d.sock)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Call(op, args, out)
}

func (d *rigDaemon) counters() (map[string]uint64, error) {
	var c map[string]uint64
	if err := d.call(ctl.OpStats, nil, &c); err != nil {
		return nil, fmt.Errorf("mptcpd stats: %w", err)
	}
	return c, nil
}

func (d *rigDaemon) addEndpoint(e pmapi.Endpoint) (ctl.Endpoint, error) {
	var got ctl.Endpoint
	err := d.call(ctl.OpEndpointAdd, ctl.Endpoint{Addr: e.Addr, ID: e.ID, Flags: pmapi.FlagNames(e.Flags), Port: e.Port, Dev: e.Dev}, &got)
	return got, err
}

func (d *rigDaemon) deleteEndpoint(id uint8) error {
	return d.call(ctl.OpEndpointDelete, ctl.EndpointRef{ID: id}, nil)
}

func (d *rigDaemon) setBackup(id uint8, backup bool) error {
	return d.call(ctl.OpEndpointChange, ctl.ChangeArgs{EndpointRef: ctl.EndpointRef{ID: id}, Backup: backup}, nil)
}

// conn returns the daemon's connection from the peer's address from (the initial subflow's).
func (d *rigDaemon) conn(from net.Addr) (ctl.Connection, error) {
	ap, err := netip.ParseAddrPort(from.String())
	if err != nil {
		return ctl.Connection{}, err
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	var conns []ctl.Connection
	if err := d.call(ctl.OpShow, nil, &conns); err != nil {
		return ctl.Connection{}, fmt.Errorf("mptcpd show: %w", err)
	}
	for _, c := range conns {
		if c.Remote == ap {
			return c, nil
		}
	}
	return ctl.Connection{}, fmt.Errorf("mptcpd has no connection from %v (it has %d)", ap, len(conns))
}
