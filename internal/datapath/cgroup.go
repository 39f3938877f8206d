package datapath

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupPrefix starts the name of the cgroup a datapath creates by default: mptcpgo-<pid>.
const cgroupPrefix = "mptcpgo-"

// errNoCgroup2Mount: /proc/mounts lists no cgroup2 file system.
var errNoCgroup2Mount = errors.New("no cgroup2 mount in /proc/mounts")

// Cgroup2Mount returns the mount point of the cgroup v2 hierarchy, read from /proc/mounts: where
// a datapath creates its cgroup when this process's mount table shows one.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errNoCgroup2Mount
}

// cgroupRoot is where this process reaches the root of the cgroup v2 hierarchy: the cgroup2
// mount /proc/mounts lists, or else a mount of our own that no other process sees.
type cgroupRoot struct {
	dir     string // the root directory
	mountFD int    // our own detached mount behind dir; -1 when dir is the system's mount
}

// openCgroupRoot finds the cgroup2 mount, or mounts a view of our own when there is none.
//
// `ip netns exec` runs its command in a mount namespace of its own where /sys is mounted
// afresh for the new network namespace, without the cgroup2 mount below it. The hierarchy is
// still there, the same for every mount of it (a mount is only a view of the one cgroup v2
// tree), so we mount one with fsopen/fsmount and keep it detached: it has no mount point,
// never shows in any mount table, and goes when its descriptor is closed (at Close, or when the
// process dies however it dies). No namespace check is needed: nothing is mounted anywhere.
func openCgroupRoot() (*cgroupRoot, error) {
	dir, err := Cgroup2Mount()
	if err == nil {
		return &cgroupRoot{dir: dir, mountFD: -1}, nil
	}
	if !errors.Is(err, errNoCgroup2Mount) {
		return nil, fmt.Errorf("find the cgroup2 mount: %w", err)
	}
	fd, merr := mountCgroup2()
	if merr != nil {
		return nil, fmt.Errorf("%w, and mounting a view of our own failed: %w", err, merr)
	}
	// The process's own view of the descriptor: paths below it resolve in the mount.
	return &cgroupRoot{dir: fmt.Sprintf("/proc/self/fd/%d", fd), mountFD: fd}, nil
}

// mountCgroup2 returns the descriptor of a new, detached mount of the cgroup2 file system.
func mountCgroup2() (int, error) {
	fs, err := unix.Fsopen("cgroup2", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen cgroup2: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fmt.Errorf("create cgroup2 superblock: %w", err)
	}
	fd, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsmount cgroup2: %w", err)
	}
	return fd, nil
}

// close releases our own mount, if any.
func (r *cgroupRoot) close() error {
	if r.mountFD < 0 {
		return nil
	}
	err := unix.Close(r.mountFD)
	r.mountFD = -1
	if err != nil {
		return fmt.Errorf("release cgroup2 mount: %w", err)
	}
	return nil
}

// currentCgroup returns this process's cgroup v2 path relative to the mount.
func currentCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

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
	root     *cgroupRoot
	path     string   // absolute directory of our cgroup
	previous string   // absolute directory the process came from
	created  bool     // we made path: Close removes it
	stale    []string // stale cgroups removed on the way in
}

// enterOwnCgroup removes stale cgroups, creates (if needed) the cgroup dir under the cgroup2
// mount and moves this process into it: sockets created afterwards belong to it, and the
// sock_ops program sees them.
func enterOwnCgroup(name string, log *slog.Logger) (_ *ownCgroup, err error) {
	root, err := openCgroupRoot()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			root.close()
		}
	}()
	cur, err := currentCgroup()
	if err != nil {
		return nil, err
	}
	cg := &ownCgroup{root: root, path: filepath.Join(root.dir, name), previous: filepath.Join(root.dir, cur)}
	cg.stale = removeStaleCgroups(root.dir, log)
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
	if cerr := cg.root.close(); err == nil {
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
