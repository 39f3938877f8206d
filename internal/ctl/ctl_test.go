package ctl

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// fakeBackend is an in-memory Backend.
type fakeBackend struct {
	mu     sync.Mutex
	eps    []Endpoint
	limits Limits
	prio   []PrioArgs
	events chan Event
}

func (f *fakeBackend) AddEndpoint(e Endpoint) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.eps {
		if x.Addr == e.Addr {
			return e, fmt.Errorf("%v: endpoint exists", e.Addr)
		}
	}
	if e.ID == 0 {
		e.ID = uint8(len(f.eps) + 1)
	}
	f.eps = append(f.eps, e)
	return e, nil
}

func (f *fakeBackend) find(r EndpointRef) int {
	for i, x := range f.eps {
		if (r.ID != 0 && x.ID == r.ID) || (r.ID == 0 && x.Addr == r.Addr) {
			return i
		}
	}
	return -1
}

func (f *fakeBackend) DeleteEndpoint(r EndpointRef) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(r)
	if i < 0 {
		return Endpoint{}, fmt.Errorf("no endpoint %v", r)
	}
	e := f.eps[i]
	f.eps = append(f.eps[:i], f.eps[i+1:]...)
	return e, nil
}

func (f *fakeBackend) SetEndpointBackup(r EndpointRef, backup bool) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(r)
	if i < 0 {
		return Endpoint{}, fmt.Errorf("no endpoint %v", r)
	}
	f.eps[i].Flags = append(f.eps[i].Flags, "backup")
	return f.eps[i], nil
}

func (f *fakeBackend) Endpoints() []Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Endpoint(nil), f.eps...)
}

func (f *fakeBackend) FlushEndpoints() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.eps)
	f.eps = nil
	return n
}

func (f *fakeBackend) Limits() Limits { f.mu.Lock(); defer f.mu.Unlock(); return f.limits }

func (f *fakeBackend) SetLimits(l Limits) error {
	if l.Subflows > 8 || l.AddAddrAccepted > 8 || l.Subflows < 0 || l.AddAddrAccepted < 0 {
		return errors.New("limits out of range 0..8")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits = l
	return nil
}

func (f *fakeBackend) SetPrio(addr netip.Addr, backup bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prio = append(f.prio, PrioArgs{Addr: addr, Backup: backup})
	return 2, nil
}

func (f *fakeBackend) SetSubflowPrio(token uint32, local, remote netip.AddrPort, backup bool) error {
	if token != 7 {
		return fmt.Errorf("no connection with token %d", token)
	}
	return nil
}

func (f *fakeBackend) Connections(ctx context.Context) []Connection {
	return []Connection{{Token: 7, Local: netip.MustParseAddrPort("10.0.0.1:1000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
		State: "established", Scheduler: "default", Subflows: []Subflow{{RTT: time.Millisecond, Cwnd: 10}}}}
}

func (f *fakeBackend) Features() []Feature {
	return []Feature{{Name: "struct_ops_link", Active: false, Kernel: "6.4", Cost: "registered without a link"}}
}

func (f *fakeBackend) Counters() (map[string]uint64, error) {
	return map[string]uint64{"MPCapableSYNTX": 3}, nil
}

func (f *fakeBackend) Subscribe() (<-chan Event, func() uint64, func()) {
	return f.events, func() uint64 { return 0 }, func() {}
}

func startServer(t *testing.T) (*Server, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{limits: Limits{Subflows: 2}, events: make(chan Event, 8)}
	s := &Server{Backend: b, Daemon: "test"}
	serve(t, s, filepath.Join(t.TempDir(), "sub", "ctl.sock"))
	return s, b
}

// serve listens on path and serves until the end of the test.
func serve(t *testing.T, s *Server, path string) {
	t.Helper()
	if err := s.Listen(path); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func dial(t *testing.T, s *Server) *Client {
	t.Helper()
	c, err := Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCtlSocketMode(t *testing.T) {
	s, _ := startServer(t)
	fi, err := os.Stat(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

func TestCtlRequests(t *testing.T) {
	s, b := startServer(t)
	c := dial(t, s)
	var v VersionInfo
	if err := c.Call(OpVersion, nil, &v); err != nil || v.Protocol != Version || v.Daemon != "test" {
		t.Fatalf("version: %+v %v", v, err)
	}
	var e Endpoint
	if err := c.Call(OpEndpointAdd, Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Flags: []string{"signal"}}, &e); err != nil {
		t.Fatal(err)
	}
	if e.ID != 1 {
		t.Errorf("endpoint id %d, want 1", e.ID)
	}
	err := c.Call(OpEndpointAdd, Endpoint{Addr: netip.MustParseAddr("10.0.0.1")}, nil)
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second add: %v, want a daemon error saying exists", err)
	}
	var eps []Endpoint
	if err := c.Call(OpEndpointShow, nil, &eps); err != nil || len(eps) != 1 {
		t.Fatalf("show: %v %v", eps, err)
	}
	n := 5
	var l Limits
	if err := c.Call(OpLimitsSet, LimitsArgs{AddAddrAccepted: &n}, &l); err != nil || l != (Limits{Subflows: 2, AddAddrAccepted: 5}) {
		t.Fatalf("limits: %+v %v", l, err)
	}
	n = 9
	if err := c.Call(OpLimitsSet, LimitsArgs{Subflows: &n}, nil); err == nil || !strings.Contains(err.Error(), "range") {
		t.Errorf("limits 9: %v, want out of range", err)
	}
	var pr PrioResult
	if err := c.Call(OpSetPrio, PrioArgs{Addr: netip.MustParseAddr("10.0.0.1"), Backup: true}, &pr); err != nil || pr.Subflows != 2 {
		t.Fatalf("set-prio: %+v %v", pr, err)
	}
	if len(b.prio) != 1 || !b.prio[0].Backup {
		t.Errorf("backend saw %+v", b.prio)
	}
	if err := c.Call(OpSetPrio, PrioArgs{Token: 8, Local: netip.MustParseAddrPort("1.1.1.1:1"), Remote: netip.MustParseAddrPort("2.2.2.2:2")}, nil); err == nil || !strings.Contains(err.Error(), "token 8") {
		t.Errorf("set-prio unknown token: %v", err)
	}
	if err := c.Call(OpSetPrio, PrioArgs{Token: 7}, nil); err == nil || !strings.Contains(err.Error(), "give an address") {
		t.Errorf("set-prio without addresses: %v", err)
	}
	var conns []Connection
	if err := c.Call(OpShow, nil, &conns); err != nil || len(conns) != 1 || conns[0].Subflows[0].RTT != time.Millisecond {
		t.Fatalf("show: %+v %v", conns, err)
	}
	var st map[string]uint64
	if err := c.Call(OpStats, nil, &st); err != nil || st["MPCapableSYNTX"] != 3 {
		t.Fatalf("stats: %v %v", st, err)
	}
	var fr FlushResult
	if err := c.Call(OpEndpointFlush, nil, &fr); err != nil || fr.Removed != 1 {
		t.Fatalf("flush: %+v %v", fr, err)
	}
	if err := c.Call(OpEndpointDelete, EndpointRef{ID: 1}, nil); err == nil || !strings.Contains(err.Error(), "no endpoint") {
		t.Errorf("delete after flush: %v", err)
	}
}

// TestCtlBadRequests: each bad request gets a clear error on the same connection, which keeps
// working, and the server keeps serving others.
func TestCtlBadRequests(t *testing.T) {
	s, _ := startServer(t)
	raw, err := net.Dial("unix", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sc := bufio.NewScanner(raw)
	for _, tc := range []struct{ req, want string }{
		{`not json`, "bad request"},
		{`{"v":2,"op":"stats"}`, "unsupported protocol version 2"},
		{`{"v":1}`, "missing op"},
		{`{"v":1,"op":"reboot"}`, `unknown op \"reboot\"`},
		{`{"v":1,"op":"endpoint.add"}`, "missing args"},
		{`{"v":1,"op":"endpoint.add","args":{"addr":"10.0.0.300"}}`, "bad args"},
		{`{"v":1,"op":"endpoint.add","args":{"addr":"10.0.0.3","colour":"red"}}`, "unknown field"},
		{`{"v":1,"op":"endpoint.add","args":{"id":3}}`, "missing address"},
		{`{"v":1,"op":"endpoint.delete","args":{}}`, "give an ID or an address"},
		{`{"v":1,"op":"limits.set","args":{"subflows":"many"}}`, "bad args"},
		{`{"v":1,"op":"prio.set","args":{"addr":"10.0.0.1","token":4}}`, "give an address"},
		{`{"v":1,"op":"stats"}`, `"ok":true`},
	} {
		if _, err := raw.Write([]byte(tc.req + "\n")); err != nil {
			t.Fatal(err)
		}
		if !sc.Scan() {
			t.Fatalf("%s: no reply: %v", tc.req, sc.Err())
		}
		if got := sc.Text(); !strings.Contains(got, tc.want) {
			t.Errorf("%s: reply %s, want %q", tc.req, got, tc.want)
		}
	}
	// A line past the limit ends that connection with an error; others are served.
	long := `{"v":1,"op":"` + strings.Repeat("x", MaxLine) + `"}` + "\n"
	raw.Write([]byte(long))
	if !sc.Scan() || !strings.Contains(sc.Text(), "longer than") {
		t.Errorf("long line: %q %v", sc.Text(), sc.Err())
	}
	c := dial(t, s)
	if err := c.Call(OpVersion, nil, nil); err != nil {
		t.Errorf("after bad requests: %v", err)
	}
}

// TestCtlRefused: a client that is not root is refused twice over, by the socket's mode and,
// behind it, by the daemon's check of the credentials SO_PEERCRED gives; root is served on the
// same socket. The client not root is this test binary started again as nobody (TestMain).
func TestCtlRefused(t *testing.T) {
	testenv.RequireRoot(t)
	dir := nobodyDir(t)
	bin := filepath.Join(dir, "ctl.test")
	copyExecutable(t, bin)
	s := &Server{Backend: &fakeBackend{}, Daemon: "test"} // Authorize nil: RootOnly
	serve(t, s, filepath.Join(dir, "ctl.sock"))

	// Mode 0600: nobody's connect fails in the kernel, before the daemon sees anything.
	want := fmt.Sprintf("error: connect to %s: permission denied (the control socket is root-only)", s.Addr())
	if got := clientAs(t, bin, s.Addr(), nobody); got != want {
		t.Errorf("nobody on the socket of mode 0600: %q, want %q", got, want)
	}
	// Opened to everyone, the socket lets nobody connect: the daemon reads its uid with
	// SO_PEERCRED and answers with the refusal.
	if err := os.Chmod(s.Addr(), 0o666); err != nil {
		t.Fatal(err)
	}
	want = "daemon error: permission denied: uid 65534 is not root (the control socket is root-only)"
	if got := clientAs(t, bin, s.Addr(), nobody); got != want {
		t.Errorf("nobody on the socket of mode 0666: %q, want %q", got, want)
	}
	// Root, this process, is served.
	var v VersionInfo
	if err := dial(t, s).Call(OpVersion, nil, &v); err != nil || v.Daemon != "test" {
		t.Errorf("root: %+v, %v; want served", v, err)
	}
}

// nobody is the user the refused client runs as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// clientEnv, set to a socket's path, makes the test binary a control client of that socket
// (TestMain): it asks for the version and prints how it was answered.
const clientEnv = "MPTCPGO_CTL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(clientEnv); path != "" {
		fmt.Println(versionOutcome(path))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// versionOutcome asks the daemon at path for its version: "served", "daemon error: <its
// message>", or "error: <what failed before an answer>".
func versionOutcome(path string) string {
	c, err := Dial(path)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	var ce *Error
	switch err := c.Call(OpVersion, nil, nil); {
	case err == nil:
		return "served"
	case errors.As(err, &ce):
		return "daemon error: " + ce.Msg
	default:
		return "error: " + err.Error()
	}
}

// clientAs runs bin, a copy of the test binary, as a control client of the socket at path
// with the credentials cred, and returns the line it printed.
func clientAs(t *testing.T, bin, path string, cred *syscall.Credential) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), clientEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid %d: %v\n%s", cred.Uid, err, errOut.Bytes())
	}
	return strings.TrimSuffix(string(out), "\n")
}

// nobodyDir returns a new directory that every user may enter, removed at the end of the test.
func nobodyDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mptcpgo-ctl-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyExecutable copies the test binary to dst, executable by every user (the build directory
// is root's only).
func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestCtlMonitor(t *testing.T) {
	s, b := startServer(t)
	c := dial(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan Event, 4)
	done := make(chan error, 1)
	go func() {
		done <- c.Monitor(ctx, func(ev Event, _ uint64) error { got <- ev; return nil })
	}()
	b.events <- Event{Kind: "created", Token: 42}
	select {
	case ev := <-got:
		if ev.Kind != "created" || ev.Token != 42 {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("monitor: %v", err)
	}
}

func TestCtlBusyAndStale(t *testing.T) {
	s, _ := startServer(t)
	other := &Server{Backend: &fakeBackend{}}
	if err := other.Listen(s.Addr()); !errors.Is(err, ErrBusy) {
		t.Errorf("second daemon on a live socket: %v, want ErrBusy", err)
	}
	// A stale socket (no one listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := other.Listen(stale); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Errorf("close the daemon on the stale socket's path: %v", err)
	}
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "is mptcpd running") {
		t.Errorf("dial missing socket: %v", err)
	}
}
