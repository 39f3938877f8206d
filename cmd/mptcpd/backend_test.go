package main

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
)

// startCtl serves the daemon's backend (a path manager, no stack) on a control socket.
func startCtl(t *testing.T) *ctl.Client {
	t.Helper()
	mgr := pm.New(slog.New(slog.DiscardHandler))
	s := &ctl.Server{Backend: &backend{mgr: mgr}, Daemon: "test",
		Authorize: func(*unix.Ucred) error { return nil }}
	if err := s.Listen(filepath.Join(t.TempDir(), "ctl.sock")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c, err := ctl.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCtlEndpointDev: an endpoint added through the control socket gets the checks of
// --endpoint: its dev must be a Linux interface name.
func TestCtlEndpointDev(t *testing.T) {
	c := startCtl(t)
	a := netip.MustParseAddr("10.0.0.1")
	for _, dev := range []string{strings.Repeat("x", 5000), "wwan0-backup-123", ".", "..", "../eth0", "eth0/1", "eth0:1", "eth 0", "eth\n0", "eth\x000"} {
		err := c.Call(ctl.OpEndpointAdd, ctl.Endpoint{Addr: a, Flags: []string{"subflow"}, Dev: dev}, nil)
		if err == nil || !strings.Contains(err.Error(), "dev ") {
			t.Errorf("dev %.20q: %v, want an error about dev", dev, err)
		} else if len(err.Error()) > 200 {
			t.Errorf("dev %.20q: an error of %d bytes: %.200s", dev, len(err.Error()), err)
		}
	}
	var eps []ctl.Endpoint
	if err := c.Call(ctl.OpEndpointShow, nil, &eps); err != nil || len(eps) != 0 {
		t.Fatalf("%d endpoints after refused adds (%.200v), %v", len(eps), eps, err)
	}
	var e ctl.Endpoint
	if err := c.Call(ctl.OpEndpointAdd, ctl.Endpoint{Addr: a, Flags: []string{"subflow"}, Dev: "wwan0-backup-12"}, &e); err != nil || e.Dev != "wwan0-backup-12" {
		t.Errorf("dev of 15 bytes: %+v, %v", e, err)
	}
}
