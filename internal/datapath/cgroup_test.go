package datapath

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mptcpgo/mptcpgo/internal/cgroup2"
	"github.com/mptcpgo/mptcpgo/internal/testenv"
)

// deadPid returns the pid of a process that ran and was reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	for range 10 {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.ProcessState.Pid()
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no dead pid found")
	return 0
}

// syncBuffer is a log destination written by one goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOpenRemovesStaleCgroups: Open removes the cgroup mptcpgo-<pid> of a process that no
// longer exists (killed with SIGKILL before Close), and keeps that of a live process and one
// with a process in it.
func TestOpenRemovesStaleCgroups(t *testing.T) {
	testenv.RequireRoot(t)
	root, err := cgroup2.OpenRoot()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cur, err := cgroup2.Current()
	if err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(root.Dir, cgroupPrefix+strconv.Itoa(deadPid(t)))
	live := filepath.Join(root.Dir, cgroupPrefix+strconv.Itoa(sleep.Process.Pid))
	busy := filepath.Join(root.Dir, cgroupPrefix+strconv.Itoa(deadPid(t))) // dead pid, live process in it
	other := filepath.Join(root.Dir, "mptcpgo-x"+strconv.Itoa(deadPid(t))) // not our pattern
	for _, dir := range []string{dead, live, busy, other} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(root.Dir, cur, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0)
		sleep.Process.Kill()
		sleep.Wait()
		for _, dir := range []string{dead, live, busy, other} {
			os.Remove(dir)
		}
	})
	if err := os.WriteFile(filepath.Join(busy, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	d, err := Open(Config{MaxConns: 16, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stale := d.cg.stale
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("stale cgroup %s not removed: %v", dead, err)
	}
	// Another test process opening a datapath at the same moment (go test runs packages in
	// parallel) may have removed it first: then this one neither removed nor logged it.
	if slices.Contains(stale, filepath.Base(dead)) {
		if !strings.Contains(logs.String(), "removed stale cgroups") || !strings.Contains(logs.String(), filepath.Base(dead)) {
			t.Errorf("removal not logged: %s", logs.String())
		}
	} else {
		t.Logf("%s was removed by another process (removed here: %q)", filepath.Base(dead), stale)
	}
	for _, dir := range []string{live, busy, other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("cgroup %s removed: %v", dir, err)
		}
		if slices.Contains(stale, filepath.Base(dir)) {
			t.Errorf("%s counted as removed", filepath.Base(dir))
		}
	}
}

// TestCgroup2View: the cgroup2 mount of our own (the one Open makes when /proc/mounts shows
// none, under ip netns exec) reaches the same hierarchy, and shows in no mount table.
func TestCgroup2View(t *testing.T) {
	testenv.RequireRoot(t)
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := cgroup2.MountDetached()
	if err != nil {
		t.Fatal(err)
	}
	r := cgroup2.DetachedRoot(fd)
	cur, err := cgroup2.Current()
	if err != nil {
		t.Fatal(err)
	}
	procs, err := os.ReadFile(filepath.Join(r.Dir, cur, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("our cgroup %s through the view does not list us: %q", cur, procs)
	}
	during, _ := os.ReadFile("/proc/self/mountinfo")
	if !bytes.Equal(before, during) {
		t.Errorf("a mount table changed:\n%s\nthen\n%s", before, during)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}
