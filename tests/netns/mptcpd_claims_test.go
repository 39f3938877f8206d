package netns_test

// What the README says of mptcpd and mptcpctl ("Operating mptcpd", the mptcpd bullet of
// "What works today", "Security and limits"), each claim checked against a running daemon and
// a kernel MPTCP peer.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mptcpgo/mptcpgo/internal/ctl"
	"github.com/mptcpgo/mptcpgo/internal/datapath"
	"github.com/mptcpgo/mptcpgo/pkg/control"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestMptcpdClaims: mptcpd --forward with --scheduler roundrobin, --cc lia and --metrics opens a
// connection to a kernel MPTCP server, and mptcpctl drives and reports it as the README says:
//
//   - show (text and --json) reports the roundrobin scheduler and the lia congestion control
//     for the connection;
//
//   - without --max-conns the daemon's limit is control.MaxConnsLimit (a ceiling the datapath's
//     slot arrays grow to): the metrics' limit, and the datapath's arrays of slot chunks sized
//     for it;
//
//   - monitor's text lines read "[       CREATED] token=1a2b3c4d saddr=…", the token the
//     hexadecimal of the JSON event's number;
//
//   - add-addr ADDR --flags subflow,backup opens a backup subflow from ADDR (the kernel counts
//     an MP_JOIN SYN with the backup bit), and show subflows --json lists it;
//
//   - the per-subflow gauges mptcpd_subflow_* hold the subflows' bytes, retransmits, RTT and
//     backup flag (1 after set-prio backup, 0 after nobackup);
//
//   - the kernel's MP_PRIO (ip mptcp endpoint change ID backup) reaches monitor as sub_priority;
//
//   - del-addr ADDR sends REMOVE_ADDR (kernel RmAddr) and closes the subflow;
//
//   - stats --nonzero prints every counter that is not zero and no other.
//
//     namespace A (mptcpd --forward, mptcpctl)       namespace B (kernel MPTCP server)
//     path 0 10.0.0.1 ========================== 10.0.0.2  initial subflow
//     path 1 10.1.0.1 ========================== 10.1.0.2  add-addr 10.1.0.1 --flags subflow,backup
func TestMptcpdClaims(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 2, A: ourSide})
	p0, p1 := topo.Path(0), topo.Path(1)
	topo.B.SetMPTCPLimits(2, 2)
	ln, err := topo.B.ListenMPTCP(p0.B.HostPort(netns.IPv4, 0))
	if err != nil {
		t.Fatal(err)
	}
	sock := ctlSocket(t)
	mptcpctl(t)
	d, addrs := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--scheduler", "roundrobin", "--cc", "lia", "--metrics", "127.0.0.1:0",
		"--forward", "127.0.0.1:0="+ln.Addr().String())
	// Without --max-conns, the daemon tells how many connections its descriptor limit allows
	// (two descriptors each, 128 of its own) and warns of nothing: no count was asked for (the
	// line comes before the ready file).
	lim := fdLimit(t, d.Pid())
	if out := d.Output(); regexp.MustCompile(`level=WARN.*file descriptor limit`).MatchString(out) ||
		!strings.Contains(out, fmt.Sprintf(`msg="the file descriptor limit bounds the connections" connections=%d limit=%d`, (lim-128)/2, lim)) {
		t.Errorf("descriptor limit %d: want its connections told, and no warning:\n%s", lim, out)
	}
	metricsURL := regexp.MustCompile(`msg=metrics url=(http://\S+/metrics)`).FindStringSubmatch(d.Output())
	if metricsURL == nil {
		t.Fatalf("no metrics URL in the log:\n%s", d.Output())
	}
	scrape := func() map[string]float64 { t.Helper(); return scrapeMetrics(t, ctx, topo.A, metricsURL[1]) }

	// --max-conns not given: control.MaxConnsLimit, as the metrics and the datapath's maps
	// have it.
	if got := scrape()["mptcpd_proxy_max_connections"]; got != control.MaxConnsLimit {
		t.Errorf("mptcpd_proxy_max_connections = %v, want %d (the default)", got, control.MaxConnsLimit)
	}
	checkSlotCeiling(t, d.Pid(), control.MaxConnsLimit)

	mon := startMonitor(t, ctx, sock)
	txt := startTextMonitor(t, ctx, sock)
	waitOutputCount(t, ctx, d, "monitor subscribed", 2)

	app, k := dialAccepted(t, ctx, topo.A, addrs[0], ln)
	const n = 1 << 20
	exchangeBoth(t, app, k, n)
	ours, theirs := netip.MustParseAddrPort(k.RemoteAddr().String()), netip.MustParseAddrPort(k.LocalAddr().String())
	created := mon.wait(ctx, "created", func(ev ctl.Event) bool { return ev.Local == ours && ev.Remote == theirs })
	tok := created.Token
	mon.wait(ctx, "established", func(ev ctl.Event) bool { return ev.Token == tok })

	// monitor's text form: the token in hexadecimal, then the addresses and ports.
	line := txt.wait(ctx, regexp.MustCompile(fmt.Sprintf(`CREATED\].* sport=%d dport=%d `, ours.Port(), theirs.Port())))
	if want := fmt.Sprintf("[       CREATED] token=%08x saddr=%v daddr=%v sport=%d dport=%d server_side=0",
		tok, ours.Addr(), theirs.Addr(), ours.Port(), theirs.Port()); line != want {
		t.Errorf("monitor printed %q, want %q (the JSON event's token %d in hexadecimal)", line, want, tok)
	}

	// --scheduler roundrobin and --cc lia took effect: show reports them for the connection.
	var conns []ctl.Connection
	ctlJSON(t, sock, &conns, "show")
	if c := connOf(t, conns, tok); c.Scheduler != "roundrobin" || c.CongestionControl != "lia" {
		t.Errorf("show --json: scheduler %q, congestion control %q; want roundrobin, lia", c.Scheduler, c.CongestionControl)
	}
	// The columns: TOKEN LOCAL REMOTE STATE ROLE SENT RECEIVED SUBFLOWS SCHEDULER CC RELAY.
	if f := rowOf(t, ctlCmd(t, sock, "show"), fmt.Sprintf("%08x", tok)); len(f) != 11 || f[8] != "roundrobin" || f[9] != "lia" ||
		!strings.HasPrefix(f[10], "forward:127.0.0.1:") || !strings.HasSuffix(f[10], "->"+ln.Addr().String()) {
		t.Errorf("show: row %q, want the scheduler roundrobin, the congestion control lia and the relay forward:APP->%s", f, ln.Addr())
	}

	// add-addr --flags subflow,backup: a backup subflow from the address, joined by the kernel.
	kc0 := counters(t, topo.B)
	if out := ctlCmd(t, sock, "add-addr", p1.A.V4.String(), "--flags", "subflow,backup"); !strings.Contains(out, "subflow backup") {
		t.Errorf("add-addr printed %q", out)
	}
	waitCounter(t, ctx, topo.B, "MPJoinSynRx", kc0["MPJoinSynRx"]+1)
	// The kernel counts the backup bit as it counts the SYN (subflow_check_req).
	if got := counters(t, topo.B)["MPJoinSynBackupRx"]; got != kc0["MPJoinSynBackupRx"]+1 {
		t.Errorf("kernel MPJoinSynBackupRx = %d, want %d: the join did not ask for a backup subflow", got, kc0["MPJoinSynBackupRx"]+1)
	}
	subs := waitSubflowsJSON(t, ctx, sock, tok, 2)
	initial, backup := subflowFrom(t, subs, p0.A.V4), subflowFrom(t, subs, p1.A.V4)
	if initial.Backup || !backup.Backup || !backup.Ready {
		t.Errorf("show subflows --json: %+v, want the subflow from %v a ready backup, the other not", subs, p1.A.V4)
	}
	if f := rowOf(t, ctlCmd(t, sock, "show", "subflows"), backup.Local.String()); f[4] != "ours" {
		t.Errorf("show subflows: row %q, want BACKUP ours", f)
	}

	// The per-subflow gauges.
	m := scrape()
	for _, s := range []ctl.Subflow{initial, backup} {
		for _, name := range []string{"rtt_seconds", "cwnd_segments", "sent_bytes", "received_bytes", "retransmits", "backup"} {
			if _, ok := m[subflowMetric(name, tok, s)]; !ok {
				t.Errorf("metrics lack %s", subflowMetric(name, tok, s))
			}
		}
	}
	gauge := func(m map[string]float64, name string, s ctl.Subflow) float64 { return m[subflowMetric(name, tok, s)] }
	if v := gauge(m, "sent_bytes", initial); v < n || v > 2*n {
		t.Errorf("initial subflow sent_bytes = %v, want the %d bytes sent (and not twice as many)", v, n)
	}
	if v := gauge(m, "received_bytes", initial); v < n || v > 2*n {
		t.Errorf("initial subflow received_bytes = %v, want the %d bytes received", v, n)
	}
	if v, want := gauge(m, "retransmits", initial), float64(initial.Retrans); v != want || v > n/1000 {
		t.Errorf("initial subflow retransmits = %v, show says %v; want them equal and few", v, want)
	}
	if v := gauge(m, "rtt_seconds", initial); v <= 0 || v > 1 {
		t.Errorf("initial subflow rtt_seconds = %v, want a veth's", v)
	}
	if v := gauge(m, "cwnd_segments", initial); v < 1 {
		t.Errorf("initial subflow cwnd_segments = %v", v)
	}
	if a, b := gauge(m, "backup", initial), gauge(m, "backup", backup); a != 0 || b != 1 {
		t.Errorf("backup gauges %v (initial), %v (backup subflow), want 0, 1", a, b)
	}
	// set-prio: the gauge follows.
	for i, prio := range []string{"nobackup", "backup"} {
		ctlCmd(t, sock, "set-prio", p1.A.V4.String(), prio)
		waitCounter(t, ctx, topo.B, "MPPrioRx", kc0["MPPrioRx"]+uint64(i)+1)
		if v, want := gauge(scrape(), "backup", backup), float64(i); v != want {
			t.Errorf("after set-prio %s: mptcpd_subflow_backup = %v, want %v", prio, v, want)
		}
	}

	// The kernel's MP_PRIO: its endpoint for its address of both subflows becomes a backup.
	topo.B.IP("mptcp", "endpoint", "add", p0.B.V4.String(), "id", "5")
	topo.B.IP("mptcp", "endpoint", "change", "id", "5", "backup")
	waitCounter(t, ctx, topo.B, "MPPrioTx", kc0["MPPrioTx"]+1)
	prio := mon.wait(ctx, "sub_priority", func(ev ctl.Event) bool { return ev.Token == tok && ev.Backup })
	txt.wait(ctx, regexp.MustCompile(fmt.Sprintf(`^\[  SUB_PRIORITY\] token=%08x remid=\d+ locid=\d+ saddr=%s daddr=%s sport=%d dport=%d backup=1$`,
		tok, regexp.QuoteMeta(prio.Local.Addr().String()), regexp.QuoteMeta(prio.Remote.Addr().String()), prio.Local.Port(), prio.Remote.Port())))
	if s := subflowFrom(t, subflowsJSON(t, sock, tok), prio.Local.Addr()); !s.PeerBackup {
		t.Errorf("after the kernel's MP_PRIO: %+v, want peer_backup", s)
	}

	// del-addr by address: REMOVE_ADDR, and the subflow closes.
	kc1 := counters(t, topo.B)
	if out := ctlCmd(t, sock, "del-addr", p1.A.V4.String()); !strings.HasPrefix(out, "deleted "+p1.A.V4.String()) {
		t.Errorf("del-addr printed %q", out)
	}
	waitCounter(t, ctx, topo.B, "RmAddr", kc1["RmAddr"]+1)
	if s := waitSubflowsJSON(t, ctx, sock, tok, 1); s[0].Local.Addr() != p0.A.V4 {
		t.Errorf("after del-addr: %+v, want the initial subflow alone", s)
	}
	mon.wait(ctx, "sub_closed", func(ev ctl.Event) bool { return ev.Token == tok && ev.Local.Addr() == p1.A.V4 })
	exchangeBoth(t, app, k, 64<<10)

	// stats --nonzero: the counters that are not zero, all of them, and no other. Counters only
	// grow: one not zero before the call is listed, one listed is not zero after it.
	var before, after, nonzero map[string]uint64
	ctlJSON(t, sock, &before, "stats")
	text := ctlCmd(t, sock, "stats", "--nonzero")
	ctlJSON(t, sock, &nonzero, "stats", "--nonzero")
	ctlJSON(t, sock, &after, "stats")
	if !slices.ContainsFunc(slices.Collect(maps.Values(before)), func(v uint64) bool { return v == 0 }) {
		t.Fatalf("every counter is non-zero: --nonzero has nothing to leave out\n%v", before)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Errorf("stats --nonzero line %q", l)
			continue
		}
		name := strings.TrimPrefix(f[0], "MPTcpExt")
		listed[name] = true
		if v, err := strconv.ParseUint(f[1], 10, 64); err != nil || v == 0 || after[name] == 0 {
			t.Errorf("stats --nonzero printed %q (the counter is %d)", l, after[name])
		}
	}
	for name, v := range before {
		if v != 0 && !listed[name] {
			t.Errorf("stats --nonzero left out %s = %d", name, v)
		}
		if v != 0 && nonzero[name] == 0 {
			t.Errorf("stats --nonzero --json left out %s = %d", name, v)
		}
	}
	for name, v := range nonzero {
		if v == 0 {
			t.Errorf("stats --nonzero --json has %s = 0", name)
		}
	}
	for _, name := range []string{"MPJoinSynTx", "MPPrioTx", "MPPrioRx", "RmAddrTx"} {
		if !listed[name] {
			t.Errorf("stats --nonzero lacks %s:\n%s", name, text)
		}
	}
}

// TestMptcpdStopSignals: SIGINT, as SIGTERM, ends the daemon's connections with a DATA_FIN
// (the kernel peer reads EOF, no MP_FASTCLOSE) and detaches everything: exit status 0, its
// cgroup and congestion control gone, its control socket removed. The daemon, started without
// --metrics, listens on nothing but its rule's address.
func TestMptcpdStopSignals(t *testing.T) {
	for name, sig := range map[string]syscall.Signal{"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
			ln, err := topo.B.ListenMPTCP(topo.Path(0).B.HostPort(netns.IPv4, 0))
			if err != nil {
				t.Fatal(err)
			}
			sock := ctlSocket(t)
			d, addrs := startMptcpd(t, ctx, topo.A, "--ctl", sock, "--forward", "127.0.0.1:0="+ln.Addr().String())
			// --metrics is off unless given: the daemon's listening sockets are its rule's.
			var rules []netip.AddrPort
			for _, a := range addrs {
				rules = append(rules, netip.MustParseAddrPort(a))
			}
			if got := tcpListeners(t, d.Pid()); !slices.Equal(got, rules) {
				t.Errorf("the daemon listens on %v, want %v alone", got, rules)
			}
			stopWithSignal(t, ctx, topo, d, ln, addrs[0], sock, sig, func() {
				// The daemon's SYN option rewriter is on its namespace's interfaces while it
				// carries a connection (tcx links, or cls_bpf filters on clsact)...
				at, err := topo.A.TCAttached()
				own := fmt.Sprintf("cls_bpf mpg%d_syn_", d.Pid())
				if err != nil || !slices.ContainsFunc(at, func(s string) bool { return strings.Contains(s, own) || strings.Contains(s, " tcx ") }) {
					t.Errorf("TC programs in the daemon's namespace while it runs: %v (%v), want its rewriter (tcx, or %s*)", at, err, own)
				}
				checkFeatures(t, sock)
			})
			// ...and nothing once it has stopped.
			if at, err := topo.A.TCAttached(); err != nil || len(at) != 0 {
				t.Errorf("TC programs in the daemon's namespace after it stopped: %v (%v), want none", at, err)
			}
		})
	}
}

// checkFeatures asks the daemon for its feature report (mptcpctl show features) and checks it
// against the kernel under test: every feature on, but those MPTCPGO_EXPECT_MISSING lists
// (tests/kernels sets it in its guests), each off one with its cost in the text form too.
func checkFeatures(t *testing.T, sock string) {
	t.Helper()
	mptcpctl(t)
	missing := map[string]bool{}
	if v := os.Getenv("MPTCPGO_EXPECT_MISSING"); v != "" {
		for _, n := range strings.Split(v, ",") {
			missing[n] = true
		}
	}
	var fs []ctl.Feature
	ctlJSON(t, sock, &fs, "show", "features")
	want := []string{"struct_ops_link", "tcx", "tcp_rto_max_ms"}
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
		if f.Active == missing[f.Name] || f.Active != (f.Cost == "") {
			t.Errorf("feature %+v: want active %v, a cost only when off", f, !missing[f.Name])
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("features reported: %v, want %v", names, want)
	}
	text := ctlCmd(t, sock, "show", "features")
	for n := range missing {
		if !regexp.MustCompile(`(?m)^` + n + ` +off \(Linux [0-9.]+\): \S`).MatchString(text) {
			t.Errorf("mptcpctl show features does not say %s is off, with its cost:\n%s", n, text)
		}
	}
}

// stopWithSignal opens an idle connection through the daemon d (--forward to the kernel's
// listener ln), runs the running checks, sends sig, and checks that the kernel reads EOF on it (a DATA_FIN, not an
// MP_FASTCLOSE or a reset) and that the daemon stops cleanly.
func stopWithSignal(t *testing.T, ctx context.Context, topo *netns.Topology, d *netns.Process, ln net.Listener, listen, sock string, sig syscall.Signal, running ...func()) {
	t.Helper()
	app, k := dialAccepted(t, ctx, topo.A, listen, ln)
	ctlRoundTrip(t, app, k)
	for _, f := range running {
		f()
	}
	kc0 := counters(t, topo.B)
	eof := make(chan error, 1)
	go func() {
		k.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err := k.Read(make([]byte, 1))
		eof <- err
		k.Close() // the kernel's DATA_FIN back, so that the daemon's relay completes
	}()
	if err := d.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if err := <-eof; !errors.Is(err, io.EOF) {
		t.Errorf("kernel read on an idle connection after %v: %v, want EOF (a DATA_FIN)", sig, err)
	}
	app.Close()
	waitStopped(t, d, sock)
	kc := counters(t, topo.B)
	for _, name := range []string{"MPFastcloseRx", "MPRstRx"} {
		if kc[name] != kc0[name] {
			t.Errorf("kernel %s went from %d to %d after %v", name, kc0[name], kc[name], sig)
		}
	}
}

// waitStopped waits for the daemon to exit after a signal sent elsewhere and checks what
// stopMptcpd checks after its SIGTERM: status 0, no congestion control or cgroup of the daemon
// left, a clean stop logged; and that its control socket is gone.
func waitStopped(t *testing.T, p *netns.Process, sock string) {
	t.Helper()
	pid := p.Pid()
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("mptcpd did not stop")
	}
	if err := p.Err(); err != nil {
		t.Errorf("mptcpd exit: %v, want status 0\n%s", err, p.Output())
	}
	cc, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"a", "b"} {
		if name := fmt.Sprintf("mpg%d%s", pid, suffix); slices.Contains(strings.Fields(string(cc)), name) {
			t.Errorf("congestion control %s still registered after the daemon stopped", name)
		}
	}
	if _, err := os.Stat(filepath.Join(cgroup2Mount(t), fmt.Sprintf("mptcpgo-%d", pid))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon's cgroup after it stopped: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket %s after the daemon stopped: %v", sock, err)
	}
	out := p.Output()
	if !strings.Contains(out, "msg=stopped") || strings.Contains(out, "detach datapath") {
		t.Errorf("mptcpd did not log a clean stop:\n%s", out)
	}
}

// TestMptcpdFDLimitWarning: started under a descriptor limit of 1024, below the 8320 that
// --max-conns 4096 needs (two each and 128 of the daemon's), mptcpd warns at start, and runs.
func TestMptcpdFDLimitWarning(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide})
	d, _ := startMptcpdVia(t, ctx, topo.A, []string{"prlimit", "--nofile=1024:1024", "--"},
		"--ctl", "", "--max-conns", "4096", "--forward", "127.0.0.1:0=127.0.0.1:9")
	if got := fdLimit(t, d.Pid()); got != 1024 {
		t.Fatalf("the daemon's descriptor limit is %d, want 1024: the test does not test what it says", got)
	}
	warn := regexp.MustCompile(`level=WARN msg="the file descriptor limit is below what --max-conns connections need[^"]*" max_conns=4096 needed=8320 limit=1024`)
	if !warn.MatchString(d.Output()) {
		t.Errorf("no warning matching %s:\n%s", warn, d.Output())
	}
	stopMptcpd(t, d)
}

// TestMptcpdCtlInUse: a daemon started without --ctl whose default socket
// (/run/mptcpd/mptcpd.sock) another daemon serves runs without a control socket and warns; one
// given that socket with --ctl fails with status 2 and the reason, leaving the first daemon
// served. The daemons share a mount namespace of their own with a tmpfs on /run/mptcpd, so
// that the default socket is theirs alone.
func TestMptcpdCtlInUse(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, B: ourSide})
	mptcpctl(t)
	const def = ctl.DefaultSocket
	first, _ := startMptcpdVia(t, ctx, topo.A, []string{"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mkdir -p "$0" && mount -t tmpfs -o mode=0755 mptcpd-test "$0" && exec "$@"`, filepath.Dir(def)},
		"--forward", "127.0.0.1:0=127.0.0.1:9")
	mnt := fmt.Sprintf("--mount=/proc/%d/ns/mnt", first.Pid())
	if !strings.Contains(first.Output(), `msg="control socket" path=`+def) {
		t.Fatalf("the first daemon does not serve %s:\n%s", def, first.Output())
	}
	// mptcpctl's default reaches it, in its mount namespace.
	stats := func() {
		t.Helper()
		cmd := exec.CommandContext(ctx, "nsenter", mnt, "--", mptcpctlBin.path, "stats", "--json")
		cmd.Env = slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, "MPTCPCTL_SOCKET=") })
		out, err := cmd.Output()
		var c map[string]uint64
		if err == nil {
			err = json.Unmarshal(out, &c)
		}
		if err != nil || len(c) == 0 {
			t.Fatalf("mptcpctl stats through the default socket: %v\n%s", err, out)
		}
	}
	stats()

	second, _ := startMptcpdVia(t, ctx, topo.B, []string{"nsenter", mnt, "--"}, "--forward", "127.0.0.1:0=127.0.0.1:9")
	out := second.Output()
	if !strings.Contains(out, `level=WARN msg="no control socket: the default one is in use; give --ctl PATH" path=`+def) ||
		strings.Contains(out, `msg="control socket"`) {
		t.Errorf("the second daemon, the default socket in use, did not run without one with a warning:\n%s", out)
	}

	ready := filepath.Join(t.TempDir(), "ready")
	third := topo.B.StartCmd(topo.B.Command(ctx, "nsenter", mnt, "--", mptcpd(t), "--ready-file", ready,
		"--ctl", def, "--forward", "127.0.0.1:0=127.0.0.1:9"))
	for ended := false; !ended; {
		if _, err := os.Stat(ready); err == nil {
			t.Fatalf("mptcpd with --ctl %s in use became ready:\n%s", def, third.Output())
		}
		select {
		case <-third.Done():
			ended = true
		case <-ctx.Done():
			t.Fatalf("mptcpd with --ctl %s in use still runs:\n%s", def, third.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	var ee *exec.ExitError
	if err := third.Err(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("mptcpd with --ctl in use: %v, want exit status 2", err)
	}
	if want := "mptcpd: --ctl: " + def + ": control socket in use by a running daemon\n"; !strings.HasSuffix(third.Output(), want) {
		t.Errorf("mptcpd with --ctl in use printed\n%s\nwant it to end with %q", third.Output(), want)
	}
	if _, err := os.Stat(filepath.Join(cgroup2Mount(t), fmt.Sprintf("mptcpgo-%d", third.Pid()))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed daemon's cgroup: %v", err)
	}
	stats() // the first daemon's socket survived the third's attempt
	stopMptcpd(t, second)
	stopMptcpd(t, first)
}

// startMptcpdVia is startMptcpd with the daemon run through a wrapper command that execs it
// (prlimit, unshare, nsenter), so that the process is the daemon.
func startMptcpdVia(t *testing.T, ctx context.Context, ns *netns.Namespace, wrapper []string, args ...string) (*netns.Process, []string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	argv := append(append(slices.Clone(wrapper[1:]), mptcpd(t), "--ready-file", ready, "--log-level", "debug"), args...)
	p := ns.StartCmd(ns.Command(context.Background(), wrapper[0], argv...))
	return p, awaitReady(t, ctx, p, ready)
}

// waitOutputCount waits until the process has printed s n times.
func waitOutputCount(t *testing.T, ctx context.Context, p *netns.Process, s string, n int) {
	t.Helper()
	if err := p.WaitOutputCount(ctx, s, n); err != nil {
		t.Fatal(err)
	}
}

// exchangeBoth sends n bytes each way between a and b at once and checks them byte for byte.
func exchangeBoth(t *testing.T, a, b net.Conn, n int64) {
	t.Helper()
	type res struct {
		got, want netns.Digest
		err       error
	}
	done := make(chan res, 4)
	for i, pair := range [][2]net.Conn{{a, b}, {b, a}} {
		seed := uint64(i + 1)
		go func() {
			_, err := netns.Send(pair[0], n, seed)
			if err != nil {
				done <- res{err: err}
			}
		}()
		go func() {
			pair[1].SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := netns.Receive(io.LimitReader(pair[1], n))
			pair[1].SetReadDeadline(time.Time{})
			done <- res{got, netns.StreamDigest(n, seed), err}
		}()
	}
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.got != r.want {
			t.Fatalf("received %v, want %v", r.got, r.want)
		}
	}
}

// textMonitor is a running `mptcpctl monitor` (text).
type textMonitor struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
	wake  chan struct{}
}

func startTextMonitor(t *testing.T, ctx context.Context, sock string) *textMonitor {
	m := &textMonitor{t: t, wake: make(chan struct{}, 1)}
	cmd := exec.CommandContext(ctx, mptcpctl(t), "--ctl", sock, "monitor")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
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
	})
	return m
}

// wait waits for a line that re matches and returns it.
func (m *textMonitor) wait(ctx context.Context, re *regexp.Regexp) string {
	m.t.Helper()
	for {
		m.mu.Lock()
		for _, l := range m.lines {
			if re.MatchString(l) {
				m.mu.Unlock()
				return l
			}
		}
		m.mu.Unlock()
		select {
		case <-m.wake:
		case <-ctx.Done():
			m.mu.Lock()
			defer m.mu.Unlock()
			m.t.Fatalf("no monitor line matching %s; got\n%s", re, strings.Join(m.lines, "\n"))
		}
	}
}

// subflowEntry is one element of `show subflows --json`.
type subflowEntry struct {
	Token uint32 `json:"token"`
	ctl.Subflow
}

// subflowsJSON returns the connection's subflows as `show subflows --json` lists them.
func subflowsJSON(t *testing.T, sock string, token uint32) []ctl.Subflow {
	t.Helper()
	var all []subflowEntry
	ctlJSON(t, sock, &all, "show", "subflows")
	var out []ctl.Subflow
	for _, e := range all {
		if e.Token == token {
			out = append(out, e.Subflow)
		}
	}
	return out
}

func waitSubflowsJSON(t *testing.T, ctx context.Context, sock string, token uint32, n int) []ctl.Subflow {
	t.Helper()
	for {
		s := subflowsJSON(t, sock, token)
		if len(s) == n {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("show subflows --json: connection %08x has %d subflows, waiting for %d: %+v", token, len(s), n, s)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func subflowFrom(t *testing.T, subs []ctl.Subflow, local netip.Addr) ctl.Subflow {
	t.Helper()
	for _, s := range subs {
		if s.Local.Addr() == local {
			return s
		}
	}
	t.Fatalf("no subflow from %v in %+v", local, subs)
	return ctl.Subflow{}
}

func connOf(t *testing.T, conns []ctl.Connection, token uint32) ctl.Connection {
	t.Helper()
	for _, c := range conns {
		if c.Token == token {
			return c
		}
	}
	t.Fatalf("no connection %08x in %+v", token, conns)
	return ctl.Connection{}
}

// rowOf returns the fields of the one line of a table that has a field equal to key.
func rowOf(t *testing.T, table, key string) []string {
	t.Helper()
	var rows [][]string
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); slices.Contains(f, key) {
			rows = append(rows, f)
		}
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows with %s in\n%s", len(rows), key, table)
	}
	return rows[0]
}

func subflowMetric(name string, token uint32, s ctl.Subflow) string {
	return fmt.Sprintf(`mptcpd_subflow_%s{local=%q,remote=%q,token="%d"}`, name, s.Local, s.Remote, token)
}

// scrapeMetrics fetches a Prometheus text page from inside ns: the value of each series, keyed
// by its name and labels as printed.
func scrapeMetrics(t testing.TB, ctx context.Context, ns *netns.Namespace, url string) map[string]float64 {
	t.Helper()
	body := nsGet(t, ctx, ns, url)
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(l, ' ')
		if l == "" || l[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// nsGet returns the body of an HTTP GET of url from inside ns, which must answer 200.
func nsGet(t testing.TB, ctx context.Context, ns *netns.Namespace, url string) []byte {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return ns.DialTCP(ctx, addr) },
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v, %s", url, err, resp.Status)
	}
	return body
}

// checkSlotCeiling checks that the daemon's datapath can grow to the slots
// control.DatapathConfig(maxConns) gives: its arrays of slot chunks have room for them.
func checkSlotCeiling(t *testing.T, pid, maxConns int) {
	t.Helper()
	want := control.DatapathConfig(maxConns)
	chunks := func(n int) uint32 { return uint32((n + datapath.SlotChunk - 1) / datapath.SlotChunk) }
	dm := daemonMaps(t, pid)
	if dm["conns"] != chunks(want.MaxConns) || dm["subs"] != chunks(want.MaxSubs) {
		t.Errorf("datapath slot arrays: conns %d, subs %d chunks; want %d, %d (%d and %d slots, for %d connections)",
			dm["conns"], dm["subs"], chunks(want.MaxConns), chunks(want.MaxSubs), want.MaxConns, want.MaxSubs, maxConns)
	}
}

// daemonMaps returns the max_entries of the BPF maps process pid holds, by name.
func daemonMaps(t *testing.T, pid int) map[string]uint32 {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l != "anon_inode:bpf-map" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		id := regexp.MustCompile(`(?m)^map_id:\s*(\d+)$`).FindSubmatch(info)
		if id == nil {
			t.Fatalf("no map_id in fdinfo:\n%s", info)
		}
		n, _ := strconv.ParseUint(string(id[1]), 10, 32)
		m, err := ebpf.NewMapFromID(ebpf.MapID(n))
		if err != nil {
			t.Fatal(err)
		}
		mi, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[mi.Name] = mi.MaxEntries
	}
	return out
}

// fdLimit returns the soft limit of open files of process pid.
func fdLimit(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Max open files\s+(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no open files limit in\n%s", b)
	}
	n, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return n
}

// tcpListeners returns the addresses of the TCP sockets in LISTEN that process pid holds, as its
// network namespace's /proc/PID/net/tcp{,6} shows them, sorted.
func tcpListeners(t *testing.T, pid int) []netip.AddrPort {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []netip.AddrPort
	for _, file := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, procNetAddr(t, f[1]))
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

// procNetAddr parses /proc/net/tcp's ADDR:PORT, the address in host-order 32-bit words.
func procNetAddr(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	h, p, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(h)
	port, perr := strconv.ParseUint(p, 16, 16)
	if err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		t.Fatalf("address %q in /proc/net/tcp", s)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
