package netns_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// idleEchoEnv makes the test binary an echo server instead (idleEcho): the tests that hold
// many connections run their server ends in a process of its own, whose descriptors do not
// count against the test's.
const idleEchoEnv = "MPTCPGO_IDLE_ECHO"

func TestMain(m *testing.M) {
	if addr := os.Getenv(idleEchoEnv); addr != "" {
		if err := idleEcho(addr); err != nil {
			fmt.Fprintln(os.Stderr, "idle echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// idleEcho listens with the kernel's MPTCP on addr and serves each connection: its first 4
// bytes come back followed by one byte, 1 when the connection is MPTCP (TCP_IS_MPTCP), then
// everything else comes back as it is (one descriptor a connection). It prints "listening ADDR" once ready.
func idleEcho(addr string) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var b [5]byte
			if _, err := io.ReadFull(c, b[:4]); err != nil {
				return
			}
			if m, _ := netns.IsMPTCP(c); m {
				b[4] = 1
			}
			if _, err := c.Write(b[:]); err != nil {
				return
			}
			// Through a buffer: io.Copy between TCP sockets splices, and each waiting splice
			// holds a pipe (two descriptors).
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// idleHello is the first exchange with idleEcho: i goes out, comes back, and the server says
// whether the connection reached it over MPTCP.
func idleHello(c net.Conn, i uint32) (mptcp bool, err error) {
	var out [4]byte
	var in [5]byte
	binary.BigEndian.PutUint32(out[:], i)
	if _, err := c.Write(out[:]); err != nil {
		return false, err
	}
	if _, err := io.ReadFull(c, in[:]); err != nil {
		return false, err
	}
	if [4]byte(in[:4]) != out {
		return false, fmt.Errorf("echo %x, sent %x", in[:4], out)
	}
	return in[4] == 1, nil
}
