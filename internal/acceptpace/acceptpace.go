// Package acceptpace paces an accept loop (or a dial retried) through errors such as running
// out of file descriptors (EMFILE, ENFILE), memory or buffers: it waits 5 ms after a failure,
// doubling up to 1 s, back to 5 ms after a success (as net/http's Server does), and logs at most
// one line a second with the number of failures it did not log.
package acceptpace

import (
	"context"
	"log/slog"
	"time"
)

// Delays after a failed accept.
const (
	MinDelay = 5 * time.Millisecond
	MaxDelay = time.Second
)

// LogEvery is the shortest interval between two logged failures.
const LogEvery = time.Second

// Pacer paces one accept loop; it is used by that loop's goroutine only.
type Pacer struct {
	Log *slog.Logger // nil: failures are not logged
	Msg string       // the log line's message

	delay    time.Duration
	logged   time.Time // when the last line was written
	unlogged uint64    // failures since that line
}

// Fail records a failed accept: it logs err (with args) unless a line was written less than
// LogEvery ago, then waits the current delay, or until ctx ends. It returns the delay waited.
func (p *Pacer) Fail(ctx context.Context, err error, args ...any) time.Duration {
	if p.delay == 0 {
		p.delay = MinDelay
	} else {
		p.delay = min(2*p.delay, MaxDelay)
	}
	p.note(err, args)
	t := time.NewTimer(p.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return p.delay
}

// Note logs err (with args) at the same bounded rate, without waiting: for failures that need
// no pause, such as connections refused.
func (p *Pacer) Note(err error, args ...any) { p.note(err, args) }

func (p *Pacer) note(err error, args []any) {
	if p.Log == nil {
		return
	}
	now := time.Now()
	if !p.logged.IsZero() && now.Sub(p.logged) < LogEvery {
		p.unlogged++
		return
	}
	args = append(args, "err", err)
	if p.delay > 0 {
		args = append(args, "retry_in", p.delay)
	}
	if p.unlogged > 0 {
		args = append(args, "suppressed", p.unlogged)
	}
	p.Log.Warn(p.Msg, args...)
	p.logged, p.unlogged = now, 0
}

// OK records a successful accept: the next failure waits MinDelay again.
func (p *Pacer) OK() { p.delay = 0 }
