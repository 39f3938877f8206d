package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Namespace is one named network namespace of a topology, pinned at RunDir/Name() so
// that `ip -n NAME` and `nsenter --net=/run/netns/NAME` reach it.
//
// Methods without an error result report failures with the test's Fatal and must be
// called from the test goroutine; the others may be called from any goroutine.
type Namespace struct {
	name string
	side Side
	topo *Topology
	fd   vnetns.NsHandle
	nl   *netlink.Handle

	mu      sync.Mutex
	sockets []io.Closer // listeners and connections to close at cleanup
	cc      string      // congestion control of the sockets Listen and Dial open ("": the default)
}

func newNamespace(t *Topology, name string, side Side) (*Namespace, error) {
	if err := createNamed(name); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	ns := &Namespace{name: name, side: side, topo: t}
	fd, err := vnetns.GetFromPath(ns.NsPath())
	if err != nil {
		removeNamed(name)
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	ns.fd = fd
	if ns.nl, err = netlink.NewHandleAt(fd); err != nil {
		fd.Close()
		removeNamed(name)
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return ns, nil
}

// Name returns the namespace's name, as `ip netns list` shows it.
func (ns *Namespace) Name() string { return ns.name }

// NsPath returns the file that pins the namespace: RunDir/Name().
func (ns *Namespace) NsPath() string { return filepath.Join(RunDir, ns.name) }

// Netlink returns a netlink handle that works inside the namespace. Do not close it.
func (ns *Namespace) Netlink() *netlink.Handle { return ns.nl }

func (ns *Namespace) String() string { return ns.name }

// Side reports whether this is A or B.
func (ns *Namespace) Side() Side { return ns.side }

func (ns *Namespace) cfg() NamespaceConfig {
	if ns.side == SideB {
		return ns.topo.cfg.B
	}
	return ns.topo.cfg.A
}

// Do runs f on an OS thread that has entered the namespace, and waits for it. Sockets
// created by f belong to the namespace and stay usable from any goroutine afterwards.
// The thread returns to its original namespace afterwards; if that fails it is not
// unlocked, so the Go runtime terminates it. A panic in f is re-raised in the caller.
//
// f must not call runtime.LockOSThread or start goroutines that expect to be in the
// namespace (new goroutines run on other threads).
func (ns *Namespace) Do(f func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(ns.fd); err != nil {
			// Leave the thread locked: it terminates with this goroutine.
			done <- result{err: fmt.Errorf("enter netns %s: %w", ns.name, err)}
			return
		}
		var r result
		func() {
			defer func() {
				if v := recover(); v != nil {
					r.panicked, r.panicVal = true, v
				}
			}()
			r.err = f()
		}()
		if err := vnetns.Set(orig); err != nil {
			// Leave the thread locked: it terminates with this goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("restore original netns: %w (terminating OS thread)", err))
			done <- r
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// Command returns a command that runs name inside the namespace through
// `nsenter --net=RunDir/NAME` (unlike `ip netns exec` it keeps the caller's mounts,
// /sys and the cgroup2 hierarchy included). The process runs in its own process group,
// and cancelling ctx kills the whole group. The process is also killed if the test
// binary dies (PR_SET_PDEATHSIG), and whatever still runs in the namespace at cleanup.
// Start it with StartCmd, Run, Output or Start, never cmd.Start or cmd.Run: see Start.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + ns.NsPath(), "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func killGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// Run runs name inside the namespace, waits for it and returns its standard output. A
// failure (with standard error in the message) fails the test.
func (ns *Namespace) Run(name string, args ...string) string {
	ns.topo.tb.Helper()
	out, err := ns.Output(context.Background(), name, args...)
	if err != nil {
		ns.topo.tb.Fatal(err)
	}
	return out
}

// Output is Run returning an error instead of failing the test.
func (ns *Namespace) Output(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := ns.Command(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %s %s: %w: %s", ns.name, name, strings.Join(args, " "),
			err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// IP runs `ip ARGS...` inside the namespace and returns its output; failure fails the test.
func (ns *Namespace) IP(args ...string) string {
	ns.topo.tb.Helper()
	return ns.Run("ip", args...)
}

// AddMPTCPEndpoint runs `ip mptcp endpoint add ADDR [dev DEV] FLAGS...`.
func (ns *Namespace) AddMPTCPEndpoint(addr netip.Addr, dev string, flags ...string) {
	ns.topo.tb.Helper()
	args := []string{"mptcp", "endpoint", "add", addr.String()}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	ns.IP(append(args, flags...)...)
}

// SetMPTCPLimits runs `ip mptcp limits set subflows N add_addr_accepted M`.
func (ns *Namespace) SetMPTCPLimits(subflows, addAddrAccepted int) {
	ns.topo.tb.Helper()
	ns.IP("mptcp", "limits", "set", "subflows", strconv.Itoa(subflows),
		"add_addr_accepted", strconv.Itoa(addAddrAccepted))
}

// SetSysctl writes a sysctl of the namespace ("net.mptcp.enabled" or
// "net/mptcp/enabled"); failure fails the test.
func (ns *Namespace) SetSysctl(key, value string) {
	ns.topo.tb.Helper()
	if err := ns.writeSysctl(key, value); err != nil {
		ns.topo.tb.Fatal(err)
	}
}

// Sysctl reads a sysctl of the namespace, without the trailing newline; failure fails
// the test.
func (ns *Namespace) Sysctl(key string) string {
	ns.topo.tb.Helper()
	var v []byte
	err := ns.Do(func() (err error) {
		v, err = os.ReadFile(sysctlPath(key))
		return err
	})
	if err != nil {
		ns.topo.tb.Fatalf("netns: %s: read sysctl %s: %v", ns.name, key, err)
	}
	return strings.TrimSpace(string(v))
}

func (ns *Namespace) writeSysctl(key, value string) error {
	err := ns.Do(func() error {
		// Opened on the namespace's thread: /proc/sys/net follows the opener's namespace.
		return os.WriteFile(sysctlPath(key), []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("%s: sysctl %s=%s: %w", ns.name, key, value, err)
	}
	return nil
}

func sysctlPath(key string) string {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", key)
}

// MPTCPCounters returns the namespace's MPTcpExt counters keyed by their names without
// the "MPTcpExt" prefix, e.g. "MPCapableSYNRX", "MPJoinAckRx" (all of them, zeros included).
func (ns *Namespace) MPTCPCounters() (map[string]uint64, error) {
	return ns.Counters("MPTcpExt")
}

// TCPCounters returns the namespace's TcpExt counters without the prefix, e.g.
// "TCPSackRecovery".
func (ns *Namespace) TCPCounters() (map[string]uint64, error) {
	return ns.Counters("TcpExt")
}

// Counters returns one group of the namespace's /proc/net/netstat and /proc/net/snmp
// ("MPTcpExt", "TcpExt", "IpExt", "Tcp", "Ip", "Udp", ...), keyed by counter name without
// the group prefix. Negative values (Tcp MaxConn) are left out.
func (ns *Namespace) Counters(group string) (map[string]uint64, error) {
	out := map[string]uint64{}
	found := false
	err := ns.Do(func() error {
		// /proc/self/net would show the main thread's namespace; thread-self is this one.
		for _, file := range []string{"/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp"} {
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			ok, err := parseNetstat(b, group, out)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			found = found || ok
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: counters: %w", ns.name, err)
	}
	if !found {
		return nil, fmt.Errorf("%s: no %q counters", ns.name, group)
	}
	return out, nil
}

// parseNetstat reads the "Group: name name ...\nGroup: value value ..." line pairs of
// /proc/net/netstat or /proc/net/snmp, adding group's counters to out.
func parseNetstat(b []byte, group string, out map[string]uint64) (bool, error) {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	found := false
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" {
			continue
		}
		if len(values) != len(names) || values[0] != names[0] {
			return found, fmt.Errorf("malformed %s lines", group)
		}
		found = true
		for j := 1; j < len(names); j++ {
			if v, err := strconv.ParseUint(values[j], 10, 64); err == nil {
				out[names[j]] = v
			}
		}
	}
	return found, nil
}

// WaitMPTCPCounter waits until the MPTcpExt counter name reaches atLeast.
func (ns *Namespace) WaitMPTCPCounter(ctx context.Context, name string, atLeast uint64) error {
	var last uint64
	err := poll(ctx, func() (bool, error) {
		c, err := ns.MPTCPCounters()
		if err != nil {
			return false, err
		}
		v, ok := c[name]
		if !ok {
			return false, fmt.Errorf("no MPTcpExt counter %q", name)
		}
		last = v
		return v >= atLeast, nil
	})
	if err != nil {
		return fmt.Errorf("%s: wait for %s >= %d (last %d): %w", ns.name, name, atLeast, last, err)
	}
	return nil
}

// WaitListening waits until a TCP socket of the namespace (MPTCP listeners included)
// listens on port, e.g. after Start of a server.
func (ns *Namespace) WaitListening(ctx context.Context, port uint16) error {
	err := poll(ctx, func() (ok bool, err error) {
		err = ns.Do(func() error {
			ok, err = listening(port)
			return err
		})
		return ok, err
	})
	if err != nil {
		return fmt.Errorf("%s: wait for a listener on port %d: %w", ns.name, port, err)
	}
	return nil
}

// listening scans /proc/thread-self/net/tcp{,6} for a socket in state LISTEN (0A).
func listening(port uint16) (bool, error) {
	for _, file := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		f, err := os.Open(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 || fs[3] != "0A" {
				continue
			}
			_, p, ok := strings.Cut(fs[1], ":")
			if v, err := strconv.ParseUint(p, 16, 16); ok && err == nil && uint16(v) == port {
				f.Close()
				return true, nil
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return false, err
		}
	}
	return false, nil
}

// poll calls cond until it reports true, fails, or ctx ends, backing off from 1 ms to
// 20 ms between calls. It is for waiting on kernel state that has no event to wait on.
func poll(ctx context.Context, cond func() (bool, error)) error {
	d := time.Millisecond
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		d = min(2*d, 20*time.Millisecond)
	}
}

func (ns *Namespace) track(c io.Closer) {
	ns.mu.Lock()
	ns.sockets = append(ns.sockets, c)
	ns.mu.Unlock()
}

func (ns *Namespace) closeSockets() {
	ns.mu.Lock()
	s := ns.sockets
	ns.sockets = nil
	ns.mu.Unlock()
	for _, c := range s {
		c.Close()
	}
}

// Process is a long-running process started in a namespace with Start. It is stopped at
// the test's cleanup; its combined output is logged if the test failed.
type Process struct {
	Cmd  *exec.Cmd
	out  *notifyBuffer
	done chan struct{}
	err  error // set before done is closed
}

// Start starts name in the background inside the namespace (see StartCmd).
func (ns *Namespace) Start(name string, args ...string) *Process {
	ns.topo.tb.Helper()
	return ns.StartCmd(ns.Command(context.Background(), name, args...))
}

// StartCmd starts a command made by Command (set its Env, Dir, ... first) in the
// background and registers a cleanup that stops it (Stop) and logs its output if the
// test failed. Failure to start fails the test. Wait for readiness with WaitListening,
// WaitOutput or a ready file, never with a sleep.
func (ns *Namespace) StartCmd(cmd *exec.Cmd) *Process {
	tb := ns.topo.tb
	tb.Helper()
	p := &Process{Cmd: cmd, out: newNotifyBuffer(), done: make(chan struct{})}
	for _, w := range []*io.Writer{&cmd.Stdout, &cmd.Stderr} {
		if *w == nil {
			*w = p.out
		} else {
			*w = io.MultiWriter(*w, p.out)
		}
	}
	if err := Start(cmd); err != nil {
		tb.Fatalf("netns: %s: start %s: %v", ns.name, p.name(), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("netns: %s: output of %s:\n%s", ns.name, strings.Join(cmd.Args, " "), p.Output())
		}
	})
	return p
}

// name is the command's name, after nsenter's own arguments.
func (p *Process) name() string {
	if len(p.Cmd.Args) > 3 && p.Cmd.Args[0] == "nsenter" {
		return p.Cmd.Args[3]
	}
	return p.Cmd.Path
}

// Pid returns the process id (the process group id too).
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the result of Wait once Done is closed, nil before.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// WaitOutput waits until the output contains s. It fails if the process exits first.
func (p *Process) WaitOutput(ctx context.Context, s string) error {
	return p.WaitOutputCount(ctx, s, 1)
}

// WaitOutputCount waits until the output contains s at least n times. It fails if the process
// exits first. The output reaches the buffer through a pipe, after the process wrote it: a
// file the process writes after a log line can be seen before the line is.
func (p *Process) WaitOutputCount(ctx context.Context, s string, n int) error {
	for {
		ch := p.out.changed()
		if strings.Count(p.out.String(), s) >= n {
			return nil
		}
		select {
		case <-ch:
		case <-p.done:
			if got := strings.Count(p.out.String(), s); got >= n {
				return nil
			} else {
				return fmt.Errorf("%s exited (%v) having printed %q %d of %d times", p.name(), p.err, s, got, n)
			}
		case <-ctx.Done():
			return fmt.Errorf("wait for %q %d times from %s (%d so far): %w", s, n, p.name(), strings.Count(p.out.String(), s), ctx.Err())
		}
	}
}

// Stop sends SIGTERM to the process group, SIGKILL after 5 seconds, and waits for the
// process. It returns the process's exit error (a signal, usually). Stop may be called
// more than once.
func (p *Process) Stop() error {
	select {
	case <-p.done:
	default:
		killGroup(p.Pid(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	killGroup(p.Pid(), syscall.SIGKILL) // also whatever the process left in its group
	<-p.done
	return p.err
}

// notifyBuffer is a concurrency-safe buffer that signals every write.
type notifyBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{}
}

func newNotifyBuffer() *notifyBuffer { return &notifyBuffer{ch: make(chan struct{})} }

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
	return b.buf.Write(p)
}

func (b *notifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// changed returns a channel closed by the next write.
func (b *notifyBuffer) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

var _ io.Writer = (*notifyBuffer)(nil)

// TCPInfos returns the namespace's TCP sockets (IPv4 and IPv6) with their TCP_INFO, from
// sock_diag: the kernel's MPTCP subflows as well as plain sockets.
func (ns *Namespace) TCPInfos() ([]*netlink.InetDiagTCPInfoResp, error) {
	var all []*netlink.InetDiagTCPInfoResp
	// The package's sock_diag request opens its own netlink socket, in the calling thread's
	// namespace: call it from inside.
	err := ns.Do(func() error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			r, err := netlink.SocketDiagTCPInfo(fam)
			if err != nil {
				return err
			}
			all = append(all, r...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: sock_diag: %w", ns.name, err)
	}
	return all, nil
}
