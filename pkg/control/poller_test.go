package control

import (
	"testing"
	"time"
)

// TestPoller checks the poller's contract: a parked socket's reader is resumed once when data
// arrives (and at once when data is there already), not before; an unparked one is not; a
// socket parked again after a resume is watched again; close ends run.
func TestPoller(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { p.run(); close(ran) }()

	a, b := tcpPair(t)
	rc, err := b.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	resumed := make(chan int, 10)
	var pk parking
	if err := p.park(rc, &pk, func() { resumed <- 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resumed:
		t.Fatal("resumed with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	if p.parked() != 1 {
		t.Fatalf("%d parked, want 1", p.parked())
	}
	a.Write([]byte{1})
	select {
	case <-resumed:
	case <-time.After(5 * time.Second):
		t.Fatal("not resumed when data arrived")
	}
	if p.parked() != 0 {
		t.Fatal("a resumed park is still waiting")
	}
	// Parked again with the byte unread: it fires at once (level-triggered).
	if err := p.park(rc, &pk, func() { resumed <- 2 }); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-resumed:
		if v != 2 {
			t.Fatalf("resumed %d, want the second park's", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a socket parked with data waiting was not resumed")
	}
	var one [1]byte
	b.Read(one[:])

	// Unparked before data: never resumed, and never parked again.
	if err := p.park(rc, &pk, func() { resumed <- 3 }); err != nil {
		t.Fatal(err)
	}
	if !p.unpark(&pk) {
		t.Fatal("unpark of a waiting park reported false")
	}
	a.Write([]byte{2})
	select {
	case v := <-resumed:
		t.Fatalf("an unparked socket was resumed (%d)", v)
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.park(rc, &pk, func() { resumed <- 4 }); err == nil {
		t.Fatal("a socket parked again after unpark")
	}
	// A closed socket is refused (its number is not looked at).
	c, d := tcpPair(t)
	_ = c
	drc, err := d.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	var dpk parking
	if err := p.park(drc, &dpk, func() { resumed <- 5 }); err == nil {
		t.Fatal("a closed socket was parked")
	}

	// Close resumes what is parked, once.
	_, e := tcpPair(t)
	erc, err := e.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var epk0 parking
	if err := p.park(erc, &epk0, func() { resumed <- 6 }); err != nil {
		t.Fatal(err)
	}
	p.close()
	select {
	case v := <-resumed:
		if v != 6 {
			t.Fatalf("close resumed %d, want the parked socket's", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not resume a parked socket")
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not end after close")
	}
	var epk parking
	if err := p.park(rc, &epk, func() {}); err == nil {
		t.Fatal("park after close succeeded")
	}
}
