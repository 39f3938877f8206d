package transparent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// errNoCgroup2Mount: /proc/mounts lists no cgroup2 file system.
var errNoCgroup2Mount = errors.New("no cgroup2 mount in /proc/mounts")

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy, from /proc/mounts (as
// internal/datapath's Cgroup2Mount).
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
	return "", errNoCgroup2Mount
}

// cgroupRoot is where this process reaches the root of the cgroup v2 hierarchy: the cgroup2
// mount /proc/mounts lists, or else a detached mount of our own, which no other process sees
// (under `ip netns exec`, whose mount namespace has /sys without the cgroup2 mount: the same
// reasoning as internal/datapath's openCgroupRoot).
type cgroupRoot struct {
	dir     string // the root directory
	mountFD int    // our own detached mount behind dir; -1 when dir is the system's mount
}

func openCgroupRoot() (*cgroupRoot, error) {
	dir, err := cgroup2Mount()
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

// close releases our own mount, if any: what was opened through it stays valid.
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

// currentCgroup returns the directory of this process's cgroup v2 below root.
func (r *cgroupRoot) currentCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(r.dir, rest), nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// openCgroup opens a cgroup v2 directory, refusing anything else.
func openCgroup(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a cgroup v2 directory", dir)
	}
	return f, nil
}

// cgroupID returns the id of the cgroup v2 directory dir, the one bpf_get_current_cgroup_id
// returns for its processes: the kernfs node id, which its file handle carries (as libbpf's
// get_cgroup_id reads it).
func cgroupID(dir string) (uint64, error) {
	f, err := openCgroup(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h, _, err := unix.NameToHandleAt(int(f.Fd()), "", unix.AT_EMPTY_PATH)
	if err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	if b := h.Bytes(); len(b) == 8 {
		return binary.NativeEndian.Uint64(b), nil
	}
	return 0, fmt.Errorf("cgroup id of %s: a file handle of %d bytes", dir, len(h.Bytes()))
}

// netnsCookie returns the cookie of the calling thread's network namespace.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return 0, errors.New("network namespace cookie: this kernel has no SO_NETNS_COOKIE (Linux 5.14): give Config.NetnsCookie")
	}
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return c, nil
}
