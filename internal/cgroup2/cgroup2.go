// Package cgroup2 finds the root of the cgroup v2 hierarchy for a process that may not see its
// mount, and this process's cgroup in it: what the datapath needs to create its own cgroup,
// and the transparent interception to attach its programs.
package cgroup2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoMount: /proc/mounts lists no cgroup2 file system.
var ErrNoMount = errors.New("no cgroup2 mount in /proc/mounts")

// Mount returns the mount point of the cgroup v2 hierarchy, read from /proc/mounts.
func Mount() (string, error) {
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
	return "", ErrNoMount
}

// Root is where this process reaches the root of the cgroup v2 hierarchy: the cgroup2 mount
// /proc/mounts lists, or else a mount of our own that no other process sees.
type Root struct {
	Dir     string // the root directory
	mountFD int    // our own detached mount behind Dir; -1 when Dir is the system's mount
}

// OpenRoot finds the cgroup2 mount, or mounts a view of our own when there is none.
//
// `ip netns exec` runs its command in a mount namespace of its own where /sys is mounted
// afresh for the new network namespace, without the cgroup2 mount below it. The hierarchy is
// still there, the same for every mount of it (a mount is only a view of the one cgroup v2
// tree), so we mount one with fsopen/fsmount and keep it detached: it has no mount point,
// never shows in any mount table, and goes when its descriptor is closed (at Close, or when the
// process dies however it dies). No namespace check is needed: nothing is mounted anywhere.
func OpenRoot() (*Root, error) {
	dir, err := Mount()
	if err == nil {
		return &Root{Dir: dir, mountFD: -1}, nil
	}
	if !errors.Is(err, ErrNoMount) {
		return nil, fmt.Errorf("find the cgroup2 mount: %w", err)
	}
	fd, merr := MountDetached()
	if merr != nil {
		return nil, fmt.Errorf("%w, and mounting a view of our own failed: %w", err, merr)
	}
	return DetachedRoot(fd), nil
}

// DetachedRoot is the Root behind the detached mount fd (MountDetached), which it takes over:
// the process's own view of the descriptor, where paths below it resolve in the mount.
func DetachedRoot(fd int) *Root {
	return &Root{Dir: fmt.Sprintf("/proc/self/fd/%d", fd), mountFD: fd}
}

// MountDetached returns the descriptor of a new, detached mount of the cgroup2 file system.
func MountDetached() (int, error) {
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

// Close releases our own mount, if any: what was opened through it stays valid.
func (r *Root) Close() error {
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

// Current returns this process's cgroup v2 path relative to the root.
func Current() (string, error) {
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

// CurrentDir returns the directory of this process's cgroup v2 below r.
func (r *Root) CurrentDir() (string, error) {
	cur, err := Current()
	if err != nil {
		return "", err
	}
	return filepath.Join(r.Dir, cur), nil
}
