package netns_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mptcpgo/mptcpgo"
	"github.com/mptcpgo/mptcpgo/tests/netns"
)

// TestLibrary uses the public package (the process's default stack): Listen in B, Dial from A,
// both with the kernel's MPTCP off.
func TestLibrary(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	topo := netns.New(t, netns.Config{Paths: 1, A: ourSide, B: ourSide})
	p := topo.Path(0)
	var ln net.Listener
	if err := topo.B.Do(func() error {
		var err error
		ln, err = mptcpgo.Listen("tcp", p.B.HostPort(netns.IPv4, 0))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		tr    netns.Transfer
		mptcp bool
		err   error
	}
	done := make(chan res, 1)
	go func() {
		c, err := netns.Accept(ctx, ln)
		if err != nil {
			done <- res{err: err}
			return
		}
		defer c.Close()
		tr, err := netns.Exchange(ctx, c, 8<<20, 2)
		done <- res{tr, mptcpgo.IsMPTCP(c), err}
	}()
	var c net.Conn
	if err := topo.A.Do(func() error {
		var err error
		c, err = mptcpgo.Dial(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr, err := netns.Exchange(ctx, c, 16<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	checkDigests(t, tr, s.tr, 16<<20, 8<<20)
	if !mptcpgo.IsMPTCP(c) || !s.mptcp {
		t.Errorf("MPTCP: client %t, server %t", mptcpgo.IsMPTCP(c), s.mptcp)
	}
}
