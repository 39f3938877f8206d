package netns_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo/internal/kcc"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// loadKernelCC registers the coupled controls for the kernel's MPTCP sockets under names of the
// test's own (lia+suffix, ...), unregistered at the end of the test.
func loadKernelCC(t testing.TB, suffix string) *kcc.Loaded {
	t.Helper()
	l, err := kcc.Load(kcc.Options{Suffix: suffix})
	if err != nil {
		t.Fatalf("load the coupled controls: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("unload the coupled controls: %v", err)
		}
	})
	return l
}

// kernelCCName is the name the loaded set registered algorithm algo (lia, olia, balia) under.
func kernelCCName(t testing.TB, l *kcc.Loaded, algo string) string {
	t.Helper()
	for i, a := range kcc.Algorithms {
		if a == algo {
			return l.Names[i]
		}
	}
	t.Fatalf("no coupled control %q", algo)
	return ""
}

func rawConn(t testing.TB, c net.Conn) syscall.RawConn {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestKernelCoupledCC: LIA, OLIA and BALIA selected with TCP_CONGESTION on the kernel's own MPTCP
// sockets (both ends; bpf/kcc.bpf.c). Kernel at both ends, two subflows, 16 MiB each way: the
// sockets report the algorithm, ss shows it on the subflows of both ends, and its programs ran
// coupled on them, every coupled call counting both subflows, none on a socket that is no MPTCP
// subflow; the transfer is exact and the kernel sees nothing wrong. The same algorithm on a
// plain TCP socket is Reno: its calls are counted as not MPTCP.
func TestKernelCoupledCC(t *testing.T) {
	for i, algo := range kcc.Algorithms {
		t.Run(algo, func(t *testing.T) {
			t.Parallel()
			l := loadKernelCC(t, fmt.Sprintf("_t%d%d", os.Getpid(), i))
			name := kernelCCName(t, l, algo)
			before, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			r := newRig(t, caseCtx(t, 60*time.Second), pairing{kernelImpl, kernelImpl}, rigConfig{paths: 2})
			// 100 Mbit/s and loss both ways on both paths: the windows leave slow start and
			// stay the limit, where the coupled increase runs.
			for i := range 2 {
				r.topo.Path(i).SetTBF(netns.TBF{Rate: 100e6, Latency: 20 * time.Millisecond})
				for _, e := range []*netns.Iface{r.topo.Path(i).A, r.topo.Path(i).B} {
					e.SetLoss(0.005)
				}
			}
			r.endpoint(netns.SideA, 1, netns.IPv4, "subflow")
			r.connect()
			for _, c := range []net.Conn{r.cli, r.srv} {
				setCongestion(t, c, name)
				if got, err := netns.CongestionOf(rawConn(t, c)); err != nil || got != name {
					t.Errorf("TCP_CONGESTION of the MPTCP socket: %q (%v), want %q", got, err, name)
				}
			}
			r.waitSubflows(netns.SideA, 2)
			r.waitSubflows(netns.SideB, 2)
			for _, ns := range []*netns.Namespace{r.topo.A, r.topo.B} {
				out := ns.Run("ss", "-tinH", "state", "established")
				if n := strings.Count(out, " "+name+" "); n != 2 {
					t.Errorf("%s: %d TCP sockets run %s, want the 2 subflows:\n%s", ns, n, name, out)
				}
			}
			r.start(16<<20, 16<<20).wait()
			after, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			d := map[string]uint64{}
			for k, v := range after {
				d[k] = v - before[k]
			}
			t.Logf("%s counters (delta): %v", name, d)
			if d["Coupled"] == 0 || d["SubsSeen"] != 2*d["Coupled"] {
				t.Errorf("coupled calls %d counting %d subflows, want some, each counting 2", d["Coupled"], d["SubsSeen"])
			}
			if d["NotMptcp"] != 0 || d["Truncated"] != 0 || d["BackupLeft"] != 0 {
				t.Errorf("calls on no MPTCP subflow %d, walks cut short %d, backups left out %d: want 0", d["NotMptcp"], d["Truncated"], d["BackupLeft"])
			}
			r.checkHealthy()
		})
	}
	t.Run("plain-TCP", func(t *testing.T) {
		t.Parallel()
		l := loadKernelCC(t, fmt.Sprintf("_t%d9", os.Getpid()))
		name := kernelCCName(t, l, "lia")
		before, err := l.Counters()
		if err != nil {
			t.Fatal(err)
		}
		topo := netns.New(t, netns.Config{Paths: 1})
		path := topo.Path(0)
		// Loss makes the window leave slow start, where cong_avoid's coupled part runs.
		path.A.SetLoss(0.01)
		ln, err := topo.B.ListenTCP(path.B.HostPort(netns.IPv4, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx := caseCtx(t, 60*time.Second)
		served := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			for {
				if _, err := c.Read(buf); err != nil {
					served <- nil
					return
				}
			}
		}()
		d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error { return netns.SetCongestionOn(c, name) }}
		d.SetMultipathTCP(false)
		c, err := topo.A.Dial(ctx, d, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for range 32 {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		after, err := l.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if n, k := after["NotMptcp"]-before["NotMptcp"], after["Coupled"]-before["Coupled"]; n == 0 || k != 0 {
			t.Errorf("on plain TCP: %d calls counted as not MPTCP, %d coupled; want some and 0", n, k)
		}
	})
}

// TestMptcpctlCC: `mptcpctl cc load` registers lia, olia and balia, and they stay registered
// after it exits; a kernel MPTCP socket selects one and runs it (show counts its calls);
// `mptcpctl cc unload` unregisters them, while the socket that uses one keeps it and goes on
// working; a second unload finds nothing, and a stray argument is a usage error.
func TestMptcpctlCC(t *testing.T) {
	mptcpctl(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("mptcpgo-test-%d", os.Getpid()), "cc")
	t.Cleanup(func() {
		kcc.Unload(dir)
		os.Remove(filepath.Dir(dir))
	})
	sock := ctlSocket(t) // no daemon: cc needs none
	out := ctlCmd(t, sock, "cc", "load", "--pin-dir", dir)
	if !strings.HasPrefix(out, "registered lia olia balia ") {
		t.Fatalf("cc load: %q", out)
	}
	avail := func() []string {
		b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(b))
	}
	for _, n := range kcc.Algorithms {
		if !slices.Contains(avail(), n) {
			t.Fatalf("%s not registered after cc load exited: %v", n, avail())
		}
	}

	r := newRig(t, caseCtx(t, 60*time.Second), pairing{kernelImpl, kernelImpl}, rigConfig{paths: 1})
	r.topo.Path(0).SetTBF(netns.TBF{Rate: 50e6, Latency: 20 * time.Millisecond}) // about 1.5 s
	r.connect()
	setCongestion(t, r.cli, "olia")
	x := r.start(8<<20, 8<<20)
	time.Sleep(500 * time.Millisecond)
	var p kcc.Pinned
	ctlJSON(t, sock, &p, "cc", "show", "--pin-dir", dir)
	if !slices.Equal(p.Names, []string{"balia", "lia", "olia"}) || p.Counters["CongAvoid"] == 0 {
		t.Errorf("cc show: %+v, want balia lia olia and calls counted", p)
	}
	// Unloaded mid-transfer: the socket keeps its algorithm.
	if out := ctlCmd(t, sock, "cc", "unload", "--pin-dir", dir); out != "unregistered balia lia olia\n" {
		t.Errorf("cc unload: %q", out)
	}
	for _, n := range kcc.Algorithms {
		if slices.Contains(avail(), n) {
			t.Errorf("%s still registered after cc unload: %v", n, avail())
		}
	}
	if got, err := netns.CongestionOf(rawConn(t, r.cli)); err != nil || got != "olia" {
		t.Errorf("after unload the socket runs %q (%v), want olia still", got, err)
	}
	x.wait()
	if out := ctlCmd(t, sock, "cc", "unload", "--pin-dir", dir); out != "nothing loaded\n" {
		t.Errorf("second cc unload: %q", out)
	}
	var ee *exec.ExitError
	if _, errOut, err := ctlTry(sock, nil, "cc", "load", "--pin-dir", dir, "extra"); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("cc load extra: %v (%s), want exit status 2", err, errOut)
	}
	r.checkHealthy()
}
