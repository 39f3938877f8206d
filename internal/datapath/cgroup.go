package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mptcpgo/mptcpgo/internal/cgroup2"
)

// cgroupPrefix starts the name of the cgroup a datapath creates by default: mptcpgo-<pid>.
const cgroupPrefix = "mptcpgo-"

// Cgroup2Mount returns the mount point of the cgroup v2 hierarchy, read from /proc/mounts: where
// a datapath creates its cgroup when this process's mount table shows one.
func Cgroup2Mount() (string, error) { return cgroup2.Mount() }

// removeStaleCgroups removes the cgroups mptcpgo-<pid> below root that processes killed before
// they could close their datapath (kill -9, a crash) left behind, and returns their names. A
// cgroup is stale when no process <pid> exists and no process is in it; it is removed with
// rmdir, which the kernel refuses for a cgroup that holds processes or other cgroups.
//
// A process of another PID namespace has no /proc/<pid> here: its cgroup is kept once the
// process is in it (cgroup.procs), so only the moment between its mkdir and its move into the
// cgroup is exposed, and that Open then fails with a clear error rather than misbehaving.
func removeStaleCgroups(root string, log *slog.Logger) []string {
	ents, err := os.ReadDir(root)
	if err != nil {
		log.Warn("look for stale cgroups", "dir", root, "err", err)
		return nil
	}
	var removed []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		pid, err := strconv.Atoi(rest)
		if !ok || !e.IsDir() || err != nil || pid <= 0 || strconv.Itoa(pid) != rest {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
			continue // the process lives (or we cannot tell)
		}
		dir := filepath.Join(root, e.Name())
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(procs)) > 0 {
			continue // not a cgroup, or one with processes in it
		}
		if err := os.Remove(dir); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("remove stale cgroup", "dir", dir, "err", err)
			}
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(removed) > 0 {
		log.Info("removed stale cgroups of processes that no longer exist", "dir", root, "count", len(removed), "cgroups", removed)
	}
	return removed
}

// ownCgroup is the cgroup the datapath creates for its process, and where the process was before.
type ownCgroup struct {
	root     *cgroup2.Root
	path     string   // absolute directory of our cgroup
	previous string   // absolute directory the process came from
	created  bool     // we made path: Close removes it
	stale    []string // stale cgroups removed on the way in
}

// enterOwnCgroup removes stale cgroups, creates (if needed) the cgroup dir under the cgroup2
// mount and moves this process into it: sockets created afterwards belong to it, and the
// sock_ops program sees them.
func enterOwnCgroup(name string, log *slog.Logger) (_ *ownCgroup, err error) {
	root, err := cgroup2.OpenRoot()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			root.Close()
		}
	}()
	previous, err := root.CurrentDir()
	if err != nil {
		return nil, err
	}
	cg := &ownCgroup{root: root, path: filepath.Join(root.Dir, name), previous: previous}
	cg.stale = removeStaleCgroups(root.Dir, log)
	if err := os.Mkdir(cg.path, 0o755); err == nil {
		cg.created = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", cg.path, err)
	}
	if err := writeProcs(cg.path); err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

func writeProcs(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	if err != nil {
		return fmt.Errorf("move process into cgroup %s: %w", dir, err)
	}
	return nil
}

// leave moves the process back, removes the cgroup if we created it and releases our mount.
func (cg *ownCgroup) leave() error {
	err := writeProcs(cg.previous)
	if rerr := cg.remove(); err == nil {
		err = rerr
	}
	if cerr := cg.root.Close(); err == nil {
		err = cerr
	}
	return err
}

func (cg *ownCgroup) remove() error {
	if !cg.created {
		return nil
	}
	if err := os.Remove(cg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup %s: %w", cg.path, err)
	}
	return nil
}
