package transparent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

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
