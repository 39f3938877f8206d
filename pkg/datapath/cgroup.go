package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy, read from /proc/mounts.
func cgroup2Mount() (string, error) {
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
	return "", errors.New("no cgroup2 mount in /proc/mounts (a network namespace entered with 'ip netns exec' hides it; use nsenter --net)")
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

// ownCgroup is the cgroup the datapath creates for its process, and where the process was before.
type ownCgroup struct {
	path     string // absolute directory of our cgroup
	previous string // absolute directory the process came from
	created  bool
}

// enterOwnCgroup creates (if needed) the cgroup dir under the cgroup2 mount and moves this process
// into it: sockets created afterwards belong to it, and the sock_ops program sees them.
func enterOwnCgroup(name string) (*ownCgroup, error) {
	mount, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	cur, err := currentCgroup()
	if err != nil {
		return nil, err
	}
	cg := &ownCgroup{path: filepath.Join(mount, name), previous: filepath.Join(mount, cur)}
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

// leave moves the process back and removes the cgroup if we created it.
func (cg *ownCgroup) leave() error {
	err := writeProcs(cg.previous)
	if rerr := cg.remove(); err == nil {
		err = rerr
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
