package control

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestFastProbe: a stale subflow's socket gets the short maximum RTO and the long user timeout,
// and gets its own settings back when it recovers.
func TestFastProbe(t *testing.T) {
	c, _ := tcpPair(t)
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	raw.Control(func(f uintptr) { fd = int(f) })
	get := func(opt int) int {
		t.Helper()
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, opt)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS, 60000); err != nil {
		t.Fatal(err) // Linux 6.15 or later is required here, as everywhere the tests run
	}
	sf := &subflow{fd: fd}
	if err := sf.setFastProbe(true); err != nil {
		t.Fatal(err)
	}
	if rto, ut := get(unix.TCP_RTO_MAX_MS), get(unix.TCP_USER_TIMEOUT); rto != 1000 || ut != 925000 {
		t.Errorf("stale: TCP_RTO_MAX_MS %d, TCP_USER_TIMEOUT %d; want 1000, 925000", rto, ut)
	}
	if err := sf.setFastProbe(true); err != nil { // again: no change, nothing saved twice
		t.Fatal(err)
	}
	if err := sf.setFastProbe(false); err != nil {
		t.Fatal(err)
	}
	if rto, ut := get(unix.TCP_RTO_MAX_MS), get(unix.TCP_USER_TIMEOUT); rto != 60000 || ut != 0 {
		t.Errorf("recovered: TCP_RTO_MAX_MS %d, TCP_USER_TIMEOUT %d; want the socket's own 60000, 0", rto, ut)
	}
}
