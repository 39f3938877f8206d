package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// emfile is a dial failing for want of file descriptors, as net.Dialer reports it.
var emfile = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}

// TestDialWaitsOutResourceErrors: opening a connection's other side fails with EMFILE four
// times: each failure is counted (ProxyDialWaits) and waited out, 5 ms doubling, and the fifth
// attempt's connection is relayed both ways.
func TestDialWaitsOutResourceErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{Rule: Rule{Listen: "x", Remote: "y"}}
		s.init()
		in, client := net.Pipe()
		remote, far := net.Pipe()
		var at []time.Time
		s.dialRemote = func(context.Context, string) (net.Conn, error) {
			at = append(at, time.Now())
			if len(at) <= 4 {
				return nil, emfile
			}
			return remote, nil
		}
		done := make(chan struct{})
		go s.handle(context.Background(), in, func() { close(done) })
		time.Sleep(time.Second) // well past 5+10+20+40 ms
		synctest.Wait()
		if len(at) != 5 {
			t.Fatalf("%d dial attempts, want 5", len(at))
		}
		for i, want := range []time.Duration{5, 10, 20, 40} {
			if d := at[i+1].Sub(at[i]); d != want*time.Millisecond {
				t.Errorf("wait %d after EMFILE: %v, want %v", i+1, d, want*time.Millisecond)
			}
		}
		if w, f := s.Stats.DialWaits.Load(), s.Stats.Failed.Load(); w != 4 || f != 0 {
			t.Fatalf("DialWaits %d, Failed %d: want 4 and 0", w, f)
		}
		relayOne(t, client, far, "hello")
		relayOne(t, far, client, "back")
		client.Close()
		far.Close()
		<-done
		if in, out := s.Stats.BytesIn.Load(), s.Stats.BytesOut.Load(); in != 5 || out != 4 {
			t.Fatalf("bytes in %d, out %d: want 5 and 4", in, out)
		}
	})
}

// TestDialGivesUp: a dial that keeps failing with EMFILE is retried, waits capped at 1 s, until
// the dial timeout (30 s); then the connection is counted failed and reset, and its relay ends.
func TestDialGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{Rule: Rule{Listen: "x", Remote: "y"}}
		s.init()
		in, client := net.Pipe()
		var at []time.Time
		s.dialRemote = func(context.Context, string) (net.Conn, error) {
			at = append(at, time.Now())
			return nil, emfile
		}
		start := time.Now()
		var ended bool
		s.handle(context.Background(), in, func() { ended = true })
		if !ended {
			t.Error("the handling of a connection whose dial failed did not end")
		}
		if d := time.Since(start); d != dialTimeout {
			t.Errorf("gave up after %v, want %v", d, dialTimeout)
		}
		// 5 ms doubling to 640 ms (1.275 s in all), then 1 s waits: the 37th is cut short.
		if w := s.Stats.DialWaits.Load(); w != 37 || len(at) != 37 {
			t.Errorf("DialWaits %d after %d attempts, want 37", w, len(at))
		}
		if d := at[len(at)-1].Sub(at[len(at)-2]); d != time.Second {
			t.Errorf("the last wait: %v, want 1 s", d)
		}
		if f := s.Stats.Failed.Load(); f != 1 {
			t.Errorf("Failed %d, want 1", f)
		}
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("the accepted side reads %v, want the end (closed)", err)
		}
	})
}

// relayOne writes msg on from and reads it on to.
func relayOne(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	go from.Write([]byte(msg))
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(to, b); err != nil || string(b) != msg {
		t.Fatalf("relayed %q (%v), want %q", b, err, msg)
	}
}
