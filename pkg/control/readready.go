package control

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// readReady reads once from a socket into a buffer from take, held only while there is
// something to read: a read that finds nothing gives the buffer back to drop and waits for
// data without one. Idle sockets, however busy they were before, then hold no buffer; the
// system calls are those of a net.Conn's Read (a read, and on EAGAIN a wait and a read again).
//
// It returns the buffer and how many bytes it holds; at the end of the data, io.EOF and no
// buffer. A closed socket or a passed deadline gives the error a Read would.
func readReady(rc syscall.RawConn, take func() []byte, drop func([]byte)) ([]byte, int, error) {
	buf, n, err, _ := readSocket(rc, take, drop, true)
	return buf, n, err
}

// readSocket is readReady; without wait, a socket with nothing to read returns at once with
// empty set (no buffer, no error).
func readSocket(rc syscall.RawConn, take func() []byte, drop func([]byte), wait bool) (buf []byte, n int, err error, empty bool) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = take()
		}
		for {
			n, rerr = unix.Read(int(fd), buf)
			if !errors.Is(rerr, unix.EINTR) {
				break
			}
		}
		if errors.Is(rerr, unix.EAGAIN) {
			drop(buf)
			buf = nil
			empty = !wait
			return !wait
		}
		return true
	})
	switch {
	case err != nil:
	case empty:
		return nil, 0, nil, true
	case rerr != nil:
		err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		err = io.EOF
	default:
		return buf, n, nil, false
	}
	if buf != nil {
		drop(buf)
	}
	return nil, 0, err, false
}
