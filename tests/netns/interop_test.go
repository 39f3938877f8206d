package netns_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/pkg/pm"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

var stackOnce struct {
	sync.Once
	s   *control.Stack
	pm  *pm.Manager
	err error
}

// ourStack returns the test binary's MPTCP stack, the process's default one (a process has one
// stack: it owns the process's cgroup).
func ourStack(t testing.TB) *control.Stack {
	t.Helper()
	stackOnce.Do(func() {
		var log *slog.Logger
		if os.Getenv("MPTCPGO_DEBUG") != "" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
			control.SetDefaultLogger(log)
		}
		stackOnce.pm = pm.New(log)
		control.SetDefaultPathManager(stackOnce.pm)
		stackOnce.s, stackOnce.err = control.DefaultStack()
	})
	if stackOnce.err != nil {
		t.Fatal(stackOnce.err)
	}
	return stackOnce.s
}

// ourPM returns the path manager of the test binary's stack, with no endpoints and the given
// limits for this test (restored to the kernel's defaults afterwards).
func ourPM(t testing.TB, l pm.Limits) *pm.Manager {
	t.Helper()
	ourStack(t)
	m := stackOnce.pm
	m.Flush()
	if err := m.SetLimits(l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Flush()
		m.SetLimits(pm.DefaultLimits)
	})
	return m
}

// ourSide is the namespace config where our stack runs: the kernel's MPTCP is off there, which
// proves we never lean on it.
var ourSide = netns.NamespaceConfig{Sysctls: map[string]string{"net.mptcp.enabled": "0"}}

func dialOurs(t testing.TB, ctx context.Context, ns *netns.Namespace, addr string) net.Conn {
	t.Helper()
	return dialOursSched(t, ctx, ns, addr, "")
}

// dialOursSched dials with our stack and the scheduler sched ("" the stack's default); the
// connection closes with the test.
func dialOursSched(t testing.TB, ctx context.Context, ns *netns.Namespace, addr, sched string) net.Conn {
	t.Helper()
	return dialOursWith(t, ctx, ns, addr, control.Dialer{Scheduler: sched})
}

// dialOursWith dials with our stack and d's options; the connection closes with the test.
func dialOursWith(t testing.TB, ctx context.Context, ns *netns.Namespace, addr string, d control.Dialer) net.Conn {
	t.Helper()
	d.Stack = ourStack(t)
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listenOurs(t testing.TB, ns *netns.Namespace, addr string) *control.Listener {
	t.Helper()
	s := ourStack(t)
	var ln *control.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = s.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func logNonZero(t testing.TB, who string, c map[string]uint64) {
	t.Helper()
	var parts []string
	for k, v := range c {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(parts)
	t.Logf("%s counters: %s", who, strings.Join(parts, " "))
}
