package acceptpace

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p Pacer
		ctx := context.Background()
		var got []time.Duration
		for range 10 {
			start := time.Now()
			d := p.Fail(ctx, syscall.EMFILE)
			if waited := time.Since(start); waited != d {
				t.Errorf("waited %v, reported %v", waited, d)
			}
			got = append(got, d)
		}
		want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
		for i := range want {
			if got[i] != want[i]*time.Millisecond {
				t.Fatalf("delays %v, want %v ms", got, want)
			}
		}
		p.OK()
		if d := p.Fail(ctx, syscall.EMFILE); d != MinDelay {
			t.Errorf("delay after a success %v, want %v", d, MinDelay)
		}
	})
}

// TestLogRate: a loop failing for 10 s writes about one line a second, each with the number of
// failures it did not log, and those numbers add up.
func TestLogRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		p := Pacer{Log: slog.New(slog.NewTextHandler(&buf, nil)), Msg: "accept"}
		ctx := context.Background()
		n := 0
		for start := time.Now(); time.Since(start) < 10*time.Second; n++ {
			p.Fail(ctx, syscall.EMFILE, "listen", "x")
			if n == 3 {
				p.OK() // short delays again: many failures within a second
			}
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) < 5 || len(lines) > 11 {
			t.Fatalf("%d failures over 10 s gave %d lines:\n%s", n, len(lines), buf.String())
		}
		total := len(lines)
		for _, l := range lines {
			if !strings.Contains(l, "too many open files") || !strings.Contains(l, "listen=x") {
				t.Errorf("line %q lacks the error or the caller's attributes", l)
			}
			var k int
			if i := strings.Index(l, "suppressed="); i >= 0 {
				for _, c := range l[i+len("suppressed="):] {
					if c < '0' || c > '9' {
						break
					}
					k = 10*k + int(c-'0')
				}
			}
			total += k
		}
		if total+int(p.unlogged) != n {
			t.Errorf("lines and suppressed counts add up to %d (+%d pending), want %d failures", total, p.unlogged, n)
		}
	})
}

// TestFailEndsWithContext: a cancelled context cuts the wait short.
func TestFailEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := Pacer{delay: MaxDelay}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		p.Fail(ctx, errors.New("x"))
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("waited %v, want 100ms", d)
		}
	})
}
