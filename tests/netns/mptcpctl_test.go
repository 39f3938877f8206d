package netns_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

var mptcpctlBin builtBin

// mptcpctl builds the CLI once per test binary.
func mptcpctl(t testing.TB) string { return mptcpctlBin.get(t, "mptcpctl") }

// ctlSocket returns a socket path in a directory any user may enter.
func ctlSocket(t testing.TB) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "mptcpd.sock")
}

// ctlCmd runs mptcpctl against sock; it fails the test unless the command succeeds.
func ctlCmd(t testing.TB, sock string, args ...string) string {
	t.Helper()
	out, errOut, err := ctlTry(sock, nil, args...)
	if err != nil {
		t.Fatalf("mptcpctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// ctlTry runs mptcpctl against sock, as cred's user when cred is not nil.
func ctlTry(sock string, cred *syscall.Credential, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mptcpctlBin.path, append([]string{"--ctl", sock}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func ctlJSON(t testing.TB, sock string, v any, args ...string) {
	t.Helper()
	out := ctlCmd(t, sock, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("mptcpctl %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// monitorProc is a running `mptcpctl monitor --json`.
type monitorProc struct {
	t      *testing.T
	mu     sync.Mutex
	events []ctl.Event
	wake   chan struct{}
}

// waitSubscribed waits until the daemon logs a monitor's subscription (it runs with
// --log-level debug): events from then on reach the monitor. A request from another process
// after starting the monitor does not order them: the monitor may connect later.
func waitSubscribed(t *testing.T, ctx context.Context, d *netns.Process) {
	t.Helper()
	for !strings.Contains(d.Output(), "monitor subscribed") {
		select {
		case <-ctx.Done():
			t.Fatalf("the monitor never subscribed: %v", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func startMonitor(t *testing.T, ctx context.Context, sock string) *monitorProc {
	m := &monitorProc{t: t, wake: make(chan struct{}, 1)}
	cmd := exec.CommandContext(ctx, mptcpctl(t), "--ctl", sock, "monitor", "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev ctl.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("monitor line %q: %v", sc.Text(), err)
				continue
			}
			m.mu.Lock()
			m.events = append(m.events, ev)
			m.mu.Unlock()
			select {
			case m.wake <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("monitor stderr: %s", stderr.String())
		}
	})
	return m
}

// wait waits for an event of this kind that f accepts.
func (m *monitorProc) wait(ctx context.Context, kind string, f func(ctl.Event) bool) ctl.Event {
	m.t.Helper()
	for {
		m.mu.Lock()
		for _, ev := range m.events {
			if ev.Kind == kind && (f == nil || f(ev)) {
				m.mu.Unlock()
				return ev
			}
		}
		m.mu.Unlock()
		select {
		case <-m.wake:
		case <-ctx.Done():
			m.mu.Lock()
			defer m.mu.Unlock()
			m.t.Fatalf("no %s event; got %+v", kind, m.events)
		}
	}
}

func subflowsOf(t *testing.T, sock string, token uint32) []ctl.Subflow {
	t.Helper()
	var conns []ctl.Connection
	ctlJSON(t, sock, &conns, "show", "connections")
	for _, c := range conns {
		if c.Token == token {
			return c.Subflows
		}
	}
	t.Fatalf("no connection %08x in show: %+v", token, conns)
	return nil
}

// waitSubflowCount waits until the connection has n subflows.
func waitSubflowCount(t *testing.T, ctx context.Context, sock string, token uint32, n int) []ctl.Subflow {
	t.Helper()
	for {
		s := subflowsOf(t, sock, token)
		if len(s) == n {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("connection %08x has %d subflows, waiting for %d: %+v", token, len(s), n, s)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitCounter(t *testing.T, ctx context.Context, ns *netns.Namespace, name string, atLeast uint64) {
	t.Helper()
	if err := ns.WaitMPTCPCounter(ctx, name, atLeast); err != nil {
		t.Fatal(err)
	}
}

// TestMptcpctlSignal: mptcpd --accept serves a kernel MPTCP client. Through mptcpctl, a signal
// endpoint is announced (the kernel counts AddAddr and joins it) and deleted (RmAddr, the
// subflow closes); show and monitor report the connection and subflows as the kernel has them;
// stats reports our counters; a non-root client is refused.
//
//	namespace A (kernel MPTCP client)      namespace B (mptcpd --accept, mptcpctl)
//	        path 0 10.0.0.1 ====== 10.0.0.2  initial subflow
//	        path 1 10.1.0.1 ====== 10.1.0.2  announced with add-addr --flags signal
func TestMptcpctlSignal(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, B: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.A.SetMPTCPLimits(2, 2)
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	daemon, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--accept", "0.0.0.0:0="+target.Addr().String())
	mon := startMonitor(t, ctx, sock)
	waitSubscribed(t, ctx, daemon)

	_, port, _ := net.SplitHostPort(addrs[0])
	accepted := netns.AcceptAsync(ctx, target)
	kc, err := topo.A.DialMPTCP(ctx, net.JoinHostPort(p0.B.V4.String(), port))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	app := <-accepted
	if app == nil {
		t.Fatal("relay not accepted")
	}
	defer app.Close()
	ctlRoundTrip(t, kc, app)

	created := mon.wait(ctx, "created", nil)
	mon.wait(ctx, "established", func(ev ctl.Event) bool { return ev.Token == created.Token })
	var conns []ctl.Connection
	ctlJSON(t, sock, &conns, "show")
	if len(conns) != 1 {
		t.Fatalf("show: %d connections, want 1: %+v", len(conns), conns)
	}
	c := conns[0]
	// What the kernel sees, from its side: our address is its remote, its address our remote.
	if c.Token != created.Token || !c.Server || c.State != "established" || c.Scheduler == "" ||
		c.Local.String() != kc.RemoteAddr().String() || c.Remote.String() != kc.LocalAddr().String() {
		t.Errorf("show: %+v; kernel socket %v -> %v, created event %+v", c, kc.LocalAddr(), kc.RemoteAddr(), created)
	}
	if c.BytesRecv < 5 || c.BytesSent < 5 {
		t.Errorf("show: bytes %d sent, %d received, want the round trip's", c.BytesSent, c.BytesRecv)
	}
	if len(c.Subflows) != 1 || c.Subflows[0].RTT <= 0 || c.Subflows[0].Cwnd == 0 {
		t.Errorf("show: subflows %+v, want one with an RTT and a cwnd", c.Subflows)
	}

	// add-addr with the signal flag: ADD_ADDR, which the kernel accepts and joins.
	kc0 := counters(t, topo.A)
	out := ctlCmd(t, sock, "add-addr", p1.B.V4.String(), "--flags", "signal", "--id", "7")
	if !strings.Contains(out, "id 7 signal") {
		t.Errorf("add-addr printed %q", out)
	}
	waitCounter(t, ctx, topo.A, "AddAddr", kc0["AddAddr"]+1)
	subs := waitSubflowCount(t, ctx, sock, c.Token, 2)
	joined := mon.wait(ctx, "sub_established", func(ev ctl.Event) bool { return ev.Token == c.Token })
	if joined.Local.Addr() != p1.B.V4 || joined.LocalID != 7 {
		t.Errorf("sub_established %+v, want from %v with local ID 7", joined, p1.B.V4)
	}
	var txt string
	for _, s := range subs {
		if s.Local.Addr() == p1.B.V4 && s.LocalID != 7 {
			t.Errorf("subflow %+v: local ID %d, want 7", s, s.LocalID)
		}
	}
	txt = ctlCmd(t, sock, "show", "subflows")
	if !strings.Contains(txt, p1.B.V4.String()) || !strings.Contains(txt, "RTT") {
		t.Errorf("show subflows:\n%s", txt)
	}
	var eps []ctl.Endpoint
	ctlJSON(t, sock, &eps, "endpoint", "show")
	if len(eps) != 1 || eps[0].ID != 7 || eps[0].Addr != p1.B.V4 {
		t.Errorf("endpoint show: %+v", eps)
	}

	// del-addr: REMOVE_ADDR; the kernel counts it and the subflow closes.
	ctlCmd(t, sock, "del-addr", "7")
	waitCounter(t, ctx, topo.A, "RmAddr", kc0["RmAddr"]+1)
	waitSubflowCount(t, ctx, sock, c.Token, 1)
	mon.wait(ctx, "sub_closed", func(ev ctl.Event) bool { return ev.Token == c.Token && ev.LocalID == 7 })
	ctlRoundTrip(t, kc, app)

	var st map[string]uint64
	ctlJSON(t, sock, &st, "stats")
	for _, name := range []string{"AddAddrTx", "RmAddrTx", "EchoAdd", "PassiveOpens"} {
		if st[name] < 1 {
			t.Errorf("stats %s = %d, want >= 1", name, st[name])
		}
	}
	if txt := ctlCmd(t, sock, "stats"); !strings.Contains(txt, "MPTcpExtAddAddrTx") {
		t.Errorf("stats text:\n%s", txt)
	}

	// The connection closes: a closed event.
	kc.Close()
	app.Close()
	mon.wait(ctx, "closed", func(ev ctl.Event) bool { return ev.Token == c.Token })

	// A non-root client: the socket's mode refuses it, and so does the daemon's peer
	// credentials check when the mode would let it in.
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	_, errOut, err := ctlTry(sock, nobody, "stats")
	if err == nil || !strings.Contains(errOut, "permission denied") {
		t.Errorf("as nobody: %v, stderr %q; want refused", err, errOut)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = ctlTry(sock, nobody, "add-addr", "10.9.9.9")
	if err == nil || !strings.Contains(errOut, "root-only") {
		t.Errorf("as nobody on an open socket: %v, stderr %q; want refused as not root", err, errOut)
	}
	ctlJSON(t, sock, &eps, "endpoint", "show")
	if len(eps) != 0 {
		t.Errorf("endpoints after the refused request: %+v", eps)
	}
}

// roundTrip sends a few bytes each way between the kernel's socket and the application's.
func ctlRoundTrip(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, d := range [][2]net.Conn{{a, b}, {b, a}} {
		msg := []byte("hello")
		if _, err := d[0].Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		d[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(d[1], got); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMptcpctlPrioLimits: mptcpd --forward (configured from a file) opens connections to a
// kernel MPTCP server. The subflows limit is honoured (0: no join; raised with `limits`, the
// next connection joins from the endpoint); set-prio makes the kernel count MPPrioRx and the
// backup subflow stops carrying data; the kernel's ADD_ADDR and REMOVE_ADDR reach monitor as
// announced and removed.
func TestMptcpctlPrioLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 2)
	ln, err := topo.B.ListenMPTCP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, kport, _ := net.SplitHostPort(ln.Addr().String())
	sock := ctlSocket(t)
	mptcpctl(t)
	cfgDir := t.TempDir()
	cfg, fileSock := filepath.Join(cfgDir, "mptcpd.yaml"), filepath.Join(cfgDir, "overridden.sock")
	conf := fmt.Sprintf("forward: [\"127.0.0.1:0=%s\"]\nendpoint:\n  - {addr: %s, flags: [subflow], id: 3}\nlimits: {subflows: 0}\nctl: %s\n",
		net.JoinHostPort(p0.B.V4.String(), kport), p1.A.V4, fileSock)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon, addrs := startMptcpd(t, ctx, topo.A, "--config", cfg, "--ctl", sock, "--metrics", "127.0.0.1:9465")
	mon := startMonitor(t, ctx, sock)
	waitSubscribed(t, ctx, daemon)
	if _, err := os.Stat(fileSock); err == nil {
		t.Errorf("--ctl did not override the file's ctl: %s exists", fileSock)
	}

	var l ctl.Limits
	ctlJSON(t, sock, &l, "limits")
	if l.Subflows != 0 {
		t.Fatalf("limits from the file: %+v", l)
	}
	// dial opens a forwarded connection and returns both ends and its token.
	dial := func() (net.Conn, net.Conn, uint32) {
		t.Helper()
		app, k := dialAccepted(t, ctx, topo.A, addrs[0], ln)
		ctlRoundTrip(t, app, k)
		ev := mon.wait(ctx, "established", func(ev ctl.Event) bool {
			return ev.Remote.String() == k.LocalAddr().String() && ev.Local.String() == k.RemoteAddr().String()
		})
		return app, k, ev.Token
	}
	kc0 := counters(t, topo.B)
	_, _, tok1 := dial()
	if n := len(subflowsOf(t, sock, tok1)); n != 1 {
		t.Errorf("with subflows 0: %d subflows, want 1", n)
	}
	if d := counters(t, topo.B)["MPJoinSynRx"] - kc0["MPJoinSynRx"]; d != 0 {
		t.Errorf("with subflows 0 the kernel got %d MP_JOIN SYNs", d)
	}

	if out := ctlCmd(t, sock, "limits", "--subflows", "2"); !strings.Contains(out, "subflows 2") {
		t.Errorf("limits: %q", out)
	}
	app, k, tok2 := dial()
	waitSubflowCount(t, ctx, sock, tok2, 2)
	waitCounter(t, ctx, topo.B, "MPJoinAckRx", kc0["MPJoinAckRx"]+1)

	// Data on both subflows, then the endpoint's subflow becomes a backup.
	transfer := func(n int64) {
		t.Helper()
		errc := make(chan error, 1)
		go func() {
			_, err := io.CopyN(app, zeroReader{}, n)
			errc <- err
		}()
		k.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.CopyN(io.Discard, k, n); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	sentFrom := func(a netip.Addr) uint64 {
		for _, s := range subflowsOf(t, sock, tok2) {
			if s.Local.Addr() == a {
				return s.BytesSent
			}
		}
		t.Fatalf("no subflow from %v", a)
		return 0
	}
	transfer(32 << 20)
	t.Logf("before set-prio: %d of 32 MiB from %v", sentFrom(p1.A.V4), p1.A.V4)
	ctlCmd(t, sock, "set-prio", p1.A.V4.String(), "backup")
	waitCounter(t, ctx, topo.B, "MPPrioRx", kc0["MPPrioRx"]+1)
	var s1 ctl.Subflow
	for _, s := range subflowsOf(t, sock, tok2) {
		if s.Local.Addr() == p1.A.V4 {
			s1 = s
		}
	}
	if !s1.Backup {
		t.Errorf("after set-prio backup: %+v", s1)
	}
	transfer(1 << 20) // what was queued on it before MP_PRIO drains
	base := sentFrom(p1.A.V4)
	const n = 64 << 20
	transfer(n)
	d := sentFrom(p1.A.V4) - base
	t.Logf("backup: %d of %d bytes from %v", d, n, p1.A.V4)
	if d > 256<<10 {
		t.Errorf("the backup subflow carried %d of %d bytes, want none", d, n)
	}

	// One subflow by token and addresses: back to a regular subflow, and it carries data again.
	ctlCmd(t, sock, "set-prio", "--token", fmt.Sprintf("%08x", tok2), "--local", s1.Local.String(), "--remote", s1.Remote.String(), "nobackup")
	waitCounter(t, ctx, topo.B, "MPPrioRx", kc0["MPPrioRx"]+2)
	base = sentFrom(p1.A.V4)
	transfer(n)
	d = sentFrom(p1.A.V4) - base
	t.Logf("after nobackup: %d of %d bytes from %v", d, n, p1.A.V4)
	if d == 0 {
		t.Errorf("after nobackup the subflow carried nothing of %d bytes", n)
	}

	// The kernel announces and removes an address: our monitor reports both.
	topo.B.IP("mptcp", "endpoint", "add", p1.B.V4.String(), "dev", p1.B.Name, "id", "9", "signal")
	mon.wait(ctx, "announced", func(ev ctl.Event) bool { return ev.Token == tok2 && ev.AddrID == 9 && ev.Addr.Addr() == p1.B.V4 })
	topo.B.IP("mptcp", "endpoint", "delete", "id", "9")
	mon.wait(ctx, "removed", func(ev ctl.Event) bool { return ev.Token == tok2 && ev.AddrID == 9 })

	// The metrics endpoint exports the counters and per-subflow gauges.
	hc, err := topo.A.DialTCP(ctx, "127.0.0.1:9465")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	fmt.Fprintf(hc, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := io.ReadAll(hc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`mptcpd_mptcpext_total{counter="MPPrioTx"} 2`,
		fmt.Sprintf(`mptcpd_subflow_cwnd_segments{local="%s"`, s1.Local),
		`mptcpd_subflow_rtt_seconds{`,
		`mptcpd_connections 2`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// kernelSubflowFlags returns the tcp-ulp-mptcp flags ss prints for the kernel's established
// subflow to dst in ns (M, J: MP_CAPABLE, MP_JOIN from the peer; B: the peer made it a backup),
// and whether there is one.
func kernelSubflowFlags(ns *netns.Namespace, dst netip.Addr) (string, bool) {
	out := ns.Run("ss", "-Htni", "state", "established", "dst", dst.String())
	if strings.TrimSpace(out) == "" {
		return "", false
	}
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "flags:"); ok {
			return v, true
		}
	}
	return "", true
}

// waitKernelSubflow waits until the kernel in ns has an established subflow to dst (want) or
// none, and, with one, until cond accepts its flags.
func waitKernelSubflow(t *testing.T, ctx context.Context, ns *netns.Namespace, dst netip.Addr, want bool, cond func(flags string) bool) {
	t.Helper()
	for {
		flags, ok := kernelSubflowFlags(ns, dst)
		if ok == want && (!want || cond == nil || cond(flags)) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kernel subflow to %v: present %t flags %q, want present %t\n%s", dst, ok, flags, want, ns.Run("ss", "-tniM"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitKernelSubflows waits until the kernel's MPTCP socket c has n subflows (MPTCP_INFO).
func waitKernelSubflows(t *testing.T, ctx context.Context, c net.Conn, n int) {
	t.Helper()
	for {
		got, err := kernelSubflows(c)
		if err == nil && got == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the kernel's connection has %d subflows (%v), want %d", got, err, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMptcpctlEndpoint drives `mptcpctl endpoint add|change|delete|flush` and `show endpoints`
// against a kernel MPTCP client of mptcpd --accept, and checks each verb's effect in the
// kernel: add signal → the kernel counts AddAddr and joins the address (its MPTCP_INFO subflow
// count, its socket in ss); change backup → MPPrioRx and ss's B flag on that subflow (nobackup
// takes it away); delete → RmAddr and the kernel's subflow closes; flush → every endpoint's ID
// in one REMOVE_ADDR (the kernel drops a second that comes while it handles the first, and
// counts RmAddrDrop), the kernel back to one subflow, show endpoints empty. Bad arguments fail with a
// message and a non-zero status, and change nothing.
//
//	namespace A (kernel MPTCP client)      namespace B (mptcpd --accept, mptcpctl)
//	        path 0 10.0.0.1 ====== 10.0.0.2  initial subflow
//	        path 1 10.1.0.1 ====== 10.1.0.2  endpoint id 7
//	        path 2 10.2.0.1 ====== 10.2.0.2  endpoint id 8
func TestMptcpctlEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 3, B: ourSide})
	p0, p1, p2 := topo.Path(0), topo.Path(1), topo.Path(2)
	topo.A.SetMPTCPLimits(4, 4)
	target, err := topo.B.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	_, addrs := startMptcpd(t, ctx, topo.B, "--ctl", sock, "--accept", "0.0.0.0:0="+target.Addr().String())
	_, port, _ := net.SplitHostPort(addrs[0])
	accepted := netns.AcceptAsync(ctx, target)
	kc, err := topo.A.DialMPTCP(ctx, net.JoinHostPort(p0.B.V4.String(), port))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	app := <-accepted
	if app == nil {
		t.Fatal("relay not accepted")
	}
	defer app.Close()
	ctlRoundTrip(t, kc, app)
	kc0 := counters(t, topo.A)
	delta := func(name string) uint64 { return counters(t, topo.A)[name] - kc0[name] }

	// showEndpoints parses `show endpoints`: one `ADDR id N FLAGS... dev IF` line each.
	showEndpoints := func() map[uint8]string {
		t.Helper()
		eps := map[uint8]string{}
		for _, line := range strings.Split(strings.TrimSpace(ctlCmd(t, sock, "show", "endpoints")), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			var id uint8
			if len(f) < 3 || f[1] != "id" {
				t.Fatalf("show endpoints line %q", line)
			}
			if _, err := fmt.Sscan(f[2], &id); err != nil {
				t.Fatalf("show endpoints line %q: %v", line, err)
			}
			eps[id] = line
		}
		return eps
	}

	// add: ADD_ADDR, the kernel joins the address.
	out := ctlCmd(t, sock, "endpoint", "add", p1.B.V4.String(), "id", "7", "dev", p1.B.Name, "signal")
	if !strings.Contains(out, "id 7 signal") {
		t.Errorf("endpoint add printed %q", out)
	}
	waitCounter(t, ctx, topo.A, "AddAddr", kc0["AddAddr"]+1)
	waitKernelSubflows(t, ctx, kc, 2)
	waitKernelSubflow(t, ctx, topo.A, p1.B.V4, true, func(f string) bool { return strings.Contains(f, "j") })
	if eps := showEndpoints(); len(eps) != 1 || eps[7] != fmt.Sprintf("%s id 7 signal dev %s", p1.B.V4, p1.B.Name) {
		t.Errorf("show endpoints after add: %q", eps)
	}

	// change backup: MP_PRIO, the kernel marks its subflow backup; nobackup clears it.
	ctlCmd(t, sock, "endpoint", "change", "id", "7", "backup")
	waitCounter(t, ctx, topo.A, "MPPrioRx", kc0["MPPrioRx"]+1)
	waitKernelSubflow(t, ctx, topo.A, p1.B.V4, true, func(f string) bool { return strings.Contains(f, "B") })
	if eps := showEndpoints(); !strings.Contains(eps[7], " backup") {
		t.Errorf("show endpoints after change backup: %q", eps)
	}
	ctlCmd(t, sock, "endpoint", "change", p1.B.V4.String(), "nobackup")
	waitCounter(t, ctx, topo.A, "MPPrioRx", kc0["MPPrioRx"]+2)
	waitKernelSubflow(t, ctx, topo.A, p1.B.V4, true, func(f string) bool { return !strings.Contains(f, "B") })

	// delete: REMOVE_ADDR, the kernel's subflow closes.
	ctlCmd(t, sock, "endpoint", "delete", "id", "7")
	waitCounter(t, ctx, topo.A, "RmAddr", kc0["RmAddr"]+1)
	waitKernelSubflows(t, ctx, kc, 1)
	waitKernelSubflow(t, ctx, topo.A, p1.B.V4, false, nil)
	if eps := showEndpoints(); len(eps) != 0 {
		t.Errorf("show endpoints after delete: %q", eps)
	}

	// flush: two endpoints, both joined, both removed.
	ctlCmd(t, sock, "endpoint", "add", p1.B.V4.String(), "id", "7", "signal")
	ctlCmd(t, sock, "endpoint", "add", p2.B.V4.String(), "id", "8", "signal")
	waitCounter(t, ctx, topo.A, "AddAddr", kc0["AddAddr"]+3)
	waitKernelSubflows(t, ctx, kc, 3)
	if eps := showEndpoints(); len(eps) != 2 || !strings.HasPrefix(eps[7], p1.B.V4.String()+" ") || !strings.HasPrefix(eps[8], p2.B.V4.String()+" ") {
		t.Errorf("show endpoints before flush: %q", eps)
	}
	if out := ctlCmd(t, sock, "endpoint", "flush"); !strings.Contains(out, "deleted 2 endpoints") {
		t.Errorf("endpoint flush printed %q", out)
	}
	waitCounter(t, ctx, topo.A, "RmAddr", kc0["RmAddr"]+3)
	waitKernelSubflows(t, ctx, kc, 1)
	waitKernelSubflow(t, ctx, topo.A, p1.B.V4, false, nil)
	waitKernelSubflow(t, ctx, topo.A, p2.B.V4, false, nil)
	if eps := showEndpoints(); len(eps) != 0 {
		t.Errorf("show endpoints after flush: %q", eps)
	}
	ctlRoundTrip(t, kc, app)

	// Bad arguments: a message naming the mistake, a non-zero status, and no change (no
	// endpoint, and no ADD_ADDR on the data that flows after them).
	addAddrs := counters(t, topo.A)["AddAddr"]
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"endpoint", "add", "10.1.0.300", "signal"}, "is not an IP address"},
		{[]string{"endpoint", "add", p1.B.V4.String(), "id", "0", "signal"}, "want 1..255"},
		{[]string{"endpoint", "add", p1.B.V4.String(), "id"}, "id needs a value"},
		{[]string{"endpoint", "add", p1.B.V4.String(), "sideways"}, "sideways"},
		{[]string{"endpoint", "change", "id", "7", "maybe"}, "want backup or nobackup"},
		{[]string{"endpoint", "delete", "id", "9"}, "9"},
		{[]string{"endpoint", "change", "id", "9", "backup"}, "9"},
		{[]string{"endpoint", "show", "extra"}, "unexpected argument"},
		{[]string{"show", "endpoints", "extra"}, "extra"},
		{[]string{"limits", "--add-addr-accepted", "many"}, "many"},
		{[]string{"limits", "--add-addr-accepted", "-1"}, "-1"},
	} {
		out, errOut, err := ctlTry(sock, nil, c.args...)
		if err == nil || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("mptcpctl %s: %v, stdout %q, stderr %q; want a one-line error naming %q and a non-zero status",
				strings.Join(c.args, " "), err, out, errOut, c.want)
		}
	}
	if eps := showEndpoints(); len(eps) != 0 {
		t.Errorf("show endpoints after the bad commands: %q", eps)
	}
	if d := delta("RmAddrDrop"); d != 0 {
		t.Errorf("the kernel dropped %d REMOVE_ADDRs", d)
	}
	ctlRoundTrip(t, kc, app)
	if n := counters(t, topo.A)["AddAddr"]; n != addAddrs {
		t.Errorf("the kernel counted %d ADD_ADDRs after the bad commands", n-addAddrs)
	}
}

// TestMptcpctlAddAddrAccepted: `mptcpctl limits --add-addr-accepted N` bounds the kernel's
// ADD_ADDRs our client acts on. The kernel server announces two addresses; with N = 1 ours
// echoes both and joins one; after `limits --add-addr-accepted 2` the next connection joins
// both.
//
//	namespace A (mptcpd --forward, mptcpctl)   namespace B (kernel MPTCP server)
//	        path 0 10.0.0.1 ====== 10.0.0.2  initial subflow
//	        path 1 10.1.0.1 ====== 10.1.0.2  announced (signal, id 1)
//	        path 2 10.2.0.1 ====== 10.2.0.2  announced (signal, id 2)
func TestMptcpctlAddAddrAccepted(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 3, A: ourSide})
	p0 := topo.Path(0)
	topo.B.SetMPTCPLimits(4, 4)
	for i := 1; i <= 2; i++ {
		topo.Path(i).B.AddMPTCPEndpoint(netns.IPv4, "signal", "id", fmt.Sprint(i))
	}
	ln, err := topo.B.ListenMPTCP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, kport, _ := net.SplitHostPort(ln.Addr().String())
	sock := ctlSocket(t)
	mptcpctl(t)
	_, addrs := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--forward", "127.0.0.1:0="+net.JoinHostPort(p0.B.V4.String(), kport))
	if out := ctlCmd(t, sock, "limits", "--subflows", "4", "--add-addr-accepted", "1"); !strings.Contains(out, "add_addr_accepted 1") {
		t.Errorf("limits printed %q", out)
	}
	var l ctl.Limits
	ctlJSON(t, sock, &l, "limits")
	if l.AddAddrAccepted != 1 || l.Subflows != 4 {
		t.Fatalf("limits: %+v", l)
	}

	// conn opens a forwarded connection, waits until both ADD_ADDRs reached us (the kernel
	// counts our echoes) and want joins are through, and returns how many joins the kernel saw
	// and has. Our path manager acts on an ADD_ADDR as it arrives, so a join beyond want would
	// be under way by the time a few round trips after the echoes are done: its socket in ss,
	// its SYN counted by the kernel.
	conn := func(want uint64) (synRx uint64, subflows int) {
		t.Helper()
		kc0 := counters(t, topo.B)
		app, k := dialAccepted(t, ctx, topo.A, addrs[0], ln)
		defer app.Close() // before the next connection: its joins are counted alone
		defer k.Close()
		ctlRoundTrip(t, app, k)
		waitCounter(t, ctx, topo.B, "EchoAdd", kc0["EchoAdd"]+2)
		waitCounter(t, ctx, topo.B, "MPJoinAckRx", kc0["MPJoinAckRx"]+want)
		for range 3 {
			ctlRoundTrip(t, app, k)
		}
		joins := 0
		for _, line := range strings.Split(topo.A.Run("ss", "-Htan", "dport", "= :"+kport), "\n") {
			if strings.Contains(line, "10.1.0.2:") || strings.Contains(line, "10.2.0.2:") {
				joins++
			}
		}
		n, err := kernelSubflows(k)
		if err != nil {
			t.Fatal(err)
		}
		if joins != int(want) {
			t.Errorf("our side has %d sockets to the announced addresses, want %d:\n%s", joins, want, topo.A.Run("ss", "-tan"))
		}
		return counters(t, topo.B)["MPJoinSynRx"] - kc0["MPJoinSynRx"], n
	}
	if syn, n := conn(1); syn != 1 || n != 2 {
		t.Errorf("with add_addr_accepted 1: the kernel got %d MP_JOIN SYNs and has %d subflows, want 1 and 2", syn, n)
	}
	ctlCmd(t, sock, "limits", "--add-addr-accepted", "2")
	if syn, n := conn(2); syn != 2 || n != 3 {
		t.Errorf("with add_addr_accepted 2: the kernel got %d MP_JOIN SYNs and has %d subflows, want 2 and 3", syn, n)
	}
}
